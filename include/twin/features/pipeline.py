"""The feature pipeline: cleaned documents → chunks → GX check → embeddings → search index.

Incremental: a watermark on `cleaned_at` picks the documents cleaned since the last run (plus the
ones that failed last time); a document whose freshly cut chunk ids equal the ids the index holds
for it is left alone (chunk ids hash the chunk text, so equal ids mean equal content and equal
chunking settings). Changed documents lose their old chunks and get the new ones; documents that
were removed or became duplicates lose their chunks. A rerun with nothing new indexes nothing.

`rebuild` fills a fresh physical index beside the live one and swaps the alias at the end.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, ReplaceOne

from twin.features.chunking import Chunker, ChunkSizes, ModelTokenizer
from twin.features.embedding import Embedder
from twin.features.validation import invalid_chunks, publish_report
from twin.models import Chunk, CleanedDocument, EmbeddedChunk, utcnow
from twin.search.base import SearchIndex
from twin.settings import Settings
from twin.storage.documents import Collections, DocumentStore

log = logging.getLogger(__name__)

PIPELINE = "features"
# What the index holds per document; lets a run notice documents removed from cleaned_documents.
MANIFEST = "feature_manifest"


@dataclass
class FeatureReport:
    run_id: str
    mode: str  # "incremental" or "rebuild"
    started_at: datetime = field(default_factory=utcnow)
    finished_at: datetime | None = None
    considered: int = 0  # documents looked at
    indexed: int = 0  # documents (re)written
    unchanged: int = 0
    removed: int = 0  # documents whose chunks were deleted (removed or now duplicates)
    chunks_written: int = 0
    chunks_deleted: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # document id → reason
    watermark: datetime | None = None

    @property
    def changed(self) -> bool:
        return bool(self.indexed or self.removed or self.chunks_deleted)

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data["changed"] = self.changed
        for key in ("started_at", "finished_at", "watermark"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


def chunk_sizes(settings: Any, embedder: Embedder) -> ChunkSizes:
    """Chunk sizes from the settings, never longer than what the model embeds without truncating."""
    max_tokens = min(settings.chunk_tokens, embedder.max_tokens)
    return ChunkSizes(max_tokens=max_tokens, overlap_tokens=settings.chunk_overlap_tokens,
                      post_max_tokens=max(16, max_tokens // 2))


class FeaturePipeline:
    def __init__(self, store: DocumentStore, index: SearchIndex, embedder: Embedder, sizes: ChunkSizes,
                 settings: Settings, *, batch_documents: int = 128) -> None:
        self.store = store
        self.index = index
        self.embedder = embedder
        self.sizes = sizes
        self.chunker = Chunker(ModelTokenizer(embedder.tokenizer), sizes)
        self.batch_documents = batch_documents
        self.settings = settings  # where the GX suite and its stores live
        self._validated = False
        self._chunk_cache: dict[tuple[str, str], list[Chunk]] = {}  # chunked once per run, used twice
        self._staged_written: dict[str, list[Chunk]] = {}

    # --- public entry points --------------------------------------------------------------------
    def run(self) -> FeatureReport:
        """Index what changed since the last run; delete chunks of removed and duplicate documents."""
        report = FeatureReport(run_id=uuid.uuid4().hex, mode="incremental")
        self.index.ensure(self.embedder.dimension)
        state = self.store.collection(Collections.PIPELINE_STATE).find_one({"_id": PIPELINE}) or {}
        watermark, retry = state.get("watermark"), list(state.get("retry", []))
        report.watermark = watermark
        self._remove_vanished(report)
        for batch in _batched(self._candidates(watermark, retry), self.batch_documents):
            report.considered += len(batch)
            live = [d for d in batch if d.duplicate_of is None]
            self._remove([d.id for d in batch if d.duplicate_of is not None], report)
            self._write(self.index, self._changed(live, report), report, replace=True)
            report.watermark = max([report.watermark, *(d.cleaned_at for d in batch)], key=_sort_key)
        return self._finish(report)

    def rebuild(self) -> FeatureReport:
        """Re-index every live document into a staged index, then swap it in (blue/green)."""
        report = FeatureReport(run_id=uuid.uuid4().hex, mode="rebuild")
        staged = self.index.begin_rebuild(self.embedder.dimension)
        self._staged_written = {}
        try:
            for batch in _batched(self._all_documents(), self.batch_documents):
                report.considered += len(batch)
                live = [d for d in batch if d.duplicate_of is None]
                self._write(staged, live, report, replace=False, record=False)
                report.watermark = max([report.watermark, *(d.cleaned_at for d in batch)], key=_sort_key)
            self.index.commit_rebuild(staged)
        except BaseException:
            staged.drop()  # the live index is untouched; leave no half-built copy behind
            raise
        # The manifest now describes the new index: rewrite it from what the staged build wrote.
        self.store.collection(MANIFEST).delete_many({})
        self._record(self._staged_written, report.run_id)
        return self._finish(report)

    # --- steps ----------------------------------------------------------------------------------
    def _candidates(self, watermark: datetime | None, retry: Sequence[str]) -> Iterator[CleanedDocument]:
        query: dict[str, Any] = {"cleaned_at": {"$gt": watermark}} if watermark else {}
        seen = set()
        for doc in self.store.find(Collections.CLEANED_DOCUMENTS, CleanedDocument, query,
                                   sort=[("cleaned_at", ASCENDING)]):
            seen.add(doc.id)
            yield doc
        retry = [doc_id for doc_id in retry if doc_id not in seen]
        if retry:
            yield from self.store.find(Collections.CLEANED_DOCUMENTS, CleanedDocument, {"_id": {"$in": retry}})

    def _all_documents(self) -> Iterator[CleanedDocument]:
        return self.store.find(Collections.CLEANED_DOCUMENTS, CleanedDocument, sort=[("_id", ASCENDING)])

    def _remove_vanished(self, report: FeatureReport) -> None:
        """Chunks of documents that left cleaned_documents must leave the index too."""
        indexed = {d["_id"] for d in self.store.collection(MANIFEST).find({}, {"_id": 1})}
        if not indexed:
            return
        present = {d["_id"] for d in self.store.collection(Collections.CLEANED_DOCUMENTS).find(
            {"_id": {"$in": list(indexed)}}, {"_id": 1})}
        self._remove(sorted(indexed - present), report)

    def _remove(self, document_ids: Sequence[str], report: FeatureReport) -> None:
        if not document_ids:
            return
        report.chunks_deleted += self.index.delete_documents(document_ids)
        # Count documents that were indexed; a duplicate that never was is no removal.
        forgotten = self.store.collection(MANIFEST).delete_many({"_id": {"$in": list(document_ids)}})
        report.removed += forgotten.deleted_count

    def _changed(self, docs: Sequence[CleanedDocument], report: FeatureReport) -> list[CleanedDocument]:
        """Documents whose chunking differs from what the index holds for them."""
        known = {d["_id"] for d in self.store.collection(MANIFEST).find({"_id": {"$in": [d.id for d in docs]}})}
        changed, unchanged = [], []
        for doc in docs:
            if doc.id in known and {c.id for c in self._chunks(doc)} == self.index.chunk_ids(doc.id):
                unchanged.append(doc)
            else:
                changed.append(doc)
        report.unchanged += len(unchanged)
        return changed

    def _chunks(self, doc: CleanedDocument) -> list[Chunk]:
        key = (doc.id, doc.content_hash)
        if key not in self._chunk_cache:
            if len(self._chunk_cache) > 4 * self.batch_documents:
                self._chunk_cache.clear()  # bounded: only the current batch is needed again
            self._chunk_cache[key] = self.chunker.chunk(doc)
        return self._chunk_cache[key]

    def _write(self, target: SearchIndex, docs: Sequence[CleanedDocument], report: FeatureReport,
               *, replace: bool, record: bool = True) -> None:
        """Chunk, validate, embed and write documents; a failing document keeps its old chunks."""
        chunks_by_doc: dict[str, list[Chunk]] = {}
        for doc in docs:
            chunks = self._chunks(doc)
            if chunks:
                chunks_by_doc[doc.id] = chunks
            else:
                report.failures[doc.id] = "document has no text to chunk"
        candidates = [c for cs in chunks_by_doc.values() for c in cs]
        self._validated = self._validated or bool(candidates)
        for doc_id, labels in invalid_chunks(candidates, max_tokens=self.sizes.max_tokens,
                                             settings=self.settings).items():
            chunks_by_doc.pop(doc_id, None)
            report.failures[doc_id] = "chunks failed validation: " + ", ".join(labels)
        chunks = [c for cs in chunks_by_doc.values() for c in cs]
        if not chunks:
            return
        vectors = self.embedder.encode([c.text for c in chunks])
        embedded = [EmbeddedChunk(**c.model_dump(), embedding=v) for c, v in zip(chunks, vectors, strict=True)]
        if replace:
            report.chunks_deleted += target.delete_documents(list(chunks_by_doc))
        result = target.upsert(embedded)
        failed_docs = {next(c.document_id for c in chunks if c.id == chunk_id): reason
                       for chunk_id, reason in result.failures}
        report.failures.update({d: f"index write failed: {reason}" for d, reason in failed_docs.items()})
        written = {d: cs for d, cs in chunks_by_doc.items() if d not in failed_docs}
        report.indexed += len(written)
        report.chunks_written += sum(len(cs) for cs in written.values())
        if record:
            self._record(written, report.run_id)
        else:
            self._staged_written.update(written)

    def _record(self, written: dict[str, list[Chunk]], run_id: str) -> None:
        ops = [ReplaceOne({"_id": doc_id}, {"_id": doc_id, "document_hash": cs[0].document_hash,
                                            "chunks": len(cs), "run_id": run_id, "indexed_at": utcnow()},
                          upsert=True)
               for doc_id, cs in written.items()]
        if ops:
            self.store.collection(MANIFEST).bulk_write(ops, ordered=False)

    def _finish(self, report: FeatureReport) -> FeatureReport:
        if self._validated:
            publish_report(self.settings)
            self._validated = False
        report.finished_at = utcnow()
        update: dict[str, Any] = {"retry": sorted(report.failures), "last_run": report.summary()}
        if report.watermark is not None:
            self.store.set_watermark(PIPELINE, report.watermark, **update)
        else:
            self.store.collection(Collections.PIPELINE_STATE).update_one(
                {"_id": PIPELINE}, {"$set": update}, upsert=True)
        level = logging.WARNING if report.failures else logging.INFO
        log.log(level, "features %s: %s", report.mode, {k: v for k, v in report.summary().items() if k != "failures"})
        for doc_id, reason in report.failures.items():
            log.warning("document %s not indexed: %s", doc_id, reason)
        return report


def _sort_key(value: datetime | None) -> tuple[int, datetime | None]:
    return (0, None) if value is None else (1, value)  # type: ignore[return-value]


def _batched(items: Iterable[CleanedDocument], size: int) -> Iterator[list[CleanedDocument]]:
    batch: list[CleanedDocument] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- one call per DAG task / CLI command -----------------------------------------------------------
def build_pipeline(settings: Any = None, store: DocumentStore | None = None) -> FeaturePipeline:
    from twin.features.embedding import get_embedder
    from twin.search.factory import get_search_index
    from twin.settings import get_settings

    settings = settings or get_settings()
    embedder = get_embedder(settings)
    return FeaturePipeline(store or DocumentStore.from_settings(settings), get_search_index(settings), embedder,
                           chunk_sizes(settings, embedder), settings)


def run_features(settings: Any = None) -> dict[str, Any]:
    """Incremental feature run with the configured stores; returns the report as plain data."""
    pipeline = build_pipeline(settings)
    try:
        return pipeline.run().summary()
    finally:
        pipeline.store.close()


def rebuild_index(settings: Any = None) -> dict[str, Any]:
    """Full blue/green rebuild of the search index from cleaned_documents."""
    pipeline = build_pipeline(settings)
    try:
        return pipeline.rebuild().summary()
    finally:
        pipeline.store.close()
