"""The feature pipeline: cleaned documents → chunks → GX check → embeddings → search index.

Incremental and race-free: a run reconciles content hashes instead of trusting a timestamp
watermark. The manifest records, per indexed document, the cleaned content hash it was cut from
and the fingerprint of the index's meaning (embedding model weights + chunk sizes); every cleaned
document whose hash or fingerprint differs from its manifest entry is (re)indexed, every manifest
entry whose document left cleaned_documents (removed, tombstoned) or became a duplicate loses its
chunks. A document committed late, whatever its `cleaned_at`, is picked up by the next run; a
document whose write failed has no up-to-date manifest entry and is retried; switching to another
model of the same dimension re-embeds everything. A rerun with nothing new indexes nothing.

A changed document's new chunks are written first; only then are its leftovers (old chunk ids it
no longer produces) deleted, so a failed write leaves it with its old chunks, never with none.

`rebuild` fills a fresh physical index beside the live one and swaps the alias at the end. Runs
and rebuilds of one index take turns through a lock in the document store (with a stale-lock
timeout), so an incremental run never writes into an index that a rebuild is about to replace.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from pymongo import ASCENDING, ReplaceOne

from twin.features.chunking import Chunker, ChunkSizes, ModelTokenizer
from twin.features.embedding import Embedder
from twin.features.validation import invalid_chunks, publish_report
from twin.models import Chunk, CleanedDocument, EmbeddedChunk, utcnow
from twin.search.base import SearchIndex
from twin.settings import Settings
from twin.storage.documents import Collections, DocumentStore
from twin.storage.locks import StoreLock

log = logging.getLogger(__name__)

PIPELINE = "features"
# What the index holds per document: the cleaned hash it was cut from and the index fingerprint.
MANIFEST = "feature_manifest"
T = TypeVar("T")


@dataclass
class FeatureReport:
    run_id: str
    mode: str  # "incremental" or "rebuild"
    started_at: datetime = field(default_factory=utcnow)
    finished_at: datetime | None = None
    considered: int = 0  # documents looked at (new, changed, or indexed by another model)
    indexed: int = 0  # documents (re)written
    unchanged: int = 0  # looked at, same chunks and model as indexed: nothing written
    removed: int = 0  # documents whose chunks were deleted (removed, tombstoned or now duplicates)
    chunks_written: int = 0
    chunks_deleted: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # document id → reason
    watermark: datetime | None = None  # newest cleaned_at looked at (informational only)
    fingerprint: str = ""  # embedding model + chunk sizes the index now holds
    lock_wait_s: float = 0.0  # time spent waiting for another run or rebuild of the index

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


@dataclass
class Reconciliation:
    """What a run has to do, from comparing cleaned_documents with the manifest."""

    to_index: list[str] = field(default_factory=list)
    to_remove: list[str] = field(default_factory=list)


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

    @property
    def fingerprint(self) -> str:
        """What the vectors and chunks mean: another model or other chunk sizes re-index everything."""
        sizes = f"{self.sizes.max_tokens}/{self.sizes.overlap_tokens}/{self.sizes.post_max_tokens}"
        return hashlib.sha256(f"{self.embedder.fingerprint}|{sizes}".encode()).hexdigest()[:16]

    def lock(self, purpose: str) -> StoreLock:
        return StoreLock(self.store, f"index:{self.index.name}", ttl_s=self.settings.index_lock_ttl_s,
                         purpose=purpose)

    # --- public entry points --------------------------------------------------------------------
    def run(self) -> FeatureReport:
        """Index what differs from the manifest; delete chunks of removed and duplicate documents."""
        report = FeatureReport(run_id=uuid.uuid4().hex, mode="incremental", fingerprint=self.fingerprint)
        lock = self.lock(f"features run {report.run_id}")
        with lock.held(self.settings.index_lock_wait_s):
            report.lock_wait_s = round(lock.waited_s, 3)
            self.index.ensure(self.embedder.dimension)
            self._ensure_lookup_indexes()
            todo = self.reconcile()
            self._remove(todo.to_remove, report)
            for ids in _batched(todo.to_index, self.batch_documents):
                batch = list(self.store.find(Collections.CLEANED_DOCUMENTS, CleanedDocument, {"_id": {"$in": ids}}))
                report.considered += len(batch)
                live = [d for d in batch if d.duplicate_of is None]
                self._remove([d.id for d in batch if d.duplicate_of is not None], report)
                changed, indexed = self._changed(live, report)
                self._write(self.index, changed, report, replace=True, indexed=indexed)
                report.watermark = max([report.watermark, *(d.cleaned_at for d in batch)], key=_sort_key)
                lock.renew()
            return self._finish(report)

    def rebuild(self) -> FeatureReport:
        """Re-index every live document into a staged index, then swap it in (blue/green)."""
        report = FeatureReport(run_id=uuid.uuid4().hex, mode="rebuild", fingerprint=self.fingerprint)
        lock = self.lock(f"index rebuild {report.run_id}")
        with lock.held(self.settings.index_lock_wait_s):
            report.lock_wait_s = round(lock.waited_s, 3)
            self._ensure_lookup_indexes()
            staged = self.index.begin_rebuild(self.embedder.dimension)
            self._staged_written = {}
            try:
                for batch in _batched(self._all_documents(), self.batch_documents):
                    report.considered += len(batch)
                    live = [d for d in batch if d.duplicate_of is None]
                    self._write(staged, live, report, replace=False, record=False)
                    report.watermark = max([report.watermark, *(d.cleaned_at for d in batch)], key=_sort_key)
                    lock.renew()
                self.index.commit_rebuild(staged)
            except BaseException:
                staged.drop()  # the live index is untouched; leave no half-built copy behind
                raise
            # The manifest now describes the new index: rewrite it from what the staged build wrote.
            # A document cleaned while the rebuild ran is missing from it, so the next run indexes it.
            self.store.collection(MANIFEST).delete_many({})
            self._record(self._staged_written, report.run_id)
            return self._finish(report)

    # --- steps ----------------------------------------------------------------------------------
    def _ensure_lookup_indexes(self) -> None:
        # Compound indexes hold every field the reconciliation reads (see storage COVERING_KEYS).
        self.store.ensure_indexes()  # cleaned_documents' covering index among them
        self.store.collection(MANIFEST).create_index(
            [("_id", ASCENDING), ("document_hash", ASCENDING), ("fingerprint", ASCENDING)], name="by_id_hash_fp")

    def reconcile(self) -> Reconciliation:
        """One ordered pass over cleaned_documents and the manifest (a merge join on `_id`)."""
        fingerprint, todo = self.fingerprint, Reconciliation()
        cleaned = self.store.collection(Collections.CLEANED_DOCUMENTS).find(
            {}, {"content_hash": 1, "duplicate_of": 1}).sort("_id", ASCENDING)
        manifest = self.store.collection(MANIFEST).find({}, {"document_hash": 1, "fingerprint": 1}).sort(
            "_id", ASCENDING)
        for doc_id, doc, entry in merge_by_id(cleaned, manifest):
            if doc is None or doc.get("duplicate_of") is not None:
                if entry is not None:
                    todo.to_remove.append(doc_id)
            elif entry is None or (entry.get("document_hash"), entry.get("fingerprint")) != (
                    doc.get("content_hash"), fingerprint):
                todo.to_index.append(doc_id)
        return todo

    def _all_documents(self) -> Iterator[CleanedDocument]:
        return self.store.find(Collections.CLEANED_DOCUMENTS, CleanedDocument, sort=[("_id", ASCENDING)])

    def _remove(self, document_ids: Sequence[str], report: FeatureReport) -> None:
        if not document_ids:
            return
        report.chunks_deleted += self.index.delete_documents(document_ids)
        # Count documents that were indexed; a duplicate that never was is no removal.
        forgotten = self.store.collection(MANIFEST).delete_many({"_id": {"$in": list(document_ids)}})
        report.removed += forgotten.deleted_count

    def _changed(self, docs: Sequence[CleanedDocument], report: FeatureReport
                 ) -> tuple[list[CleanedDocument], dict[str, set[str]]]:
        """Documents whose chunks or model differ from what the index holds, and the chunk ids it holds
        for each (one index query for the whole batch)."""
        if not docs:
            return [], {}
        fingerprint = self.fingerprint
        known = {d["_id"] for d in self.store.collection(MANIFEST).find(
            {"_id": {"$in": [d.id for d in docs]}, "fingerprint": fingerprint}, {"_id": 1})}
        indexed = self.index.chunk_ids_many([d.id for d in docs])
        changed, unchanged = [], {}
        for doc in docs:
            chunks = self._chunks(doc)
            if doc.id in known and chunks and {c.id for c in chunks} == indexed[doc.id]:
                unchanged[doc.id] = chunks
            else:
                changed.append(doc)
        report.unchanged += len(unchanged)
        self._record(unchanged, report.run_id)  # same chunks: only the manifest's hash moves on
        return changed, indexed

    def _chunks(self, doc: CleanedDocument) -> list[Chunk]:
        key = (doc.id, doc.content_hash)
        if key not in self._chunk_cache:
            if len(self._chunk_cache) > 4 * self.batch_documents:
                self._chunk_cache.clear()  # bounded: only the current batch is needed again
            self._chunk_cache[key] = self.chunker.chunk(doc)
        return self._chunk_cache[key]

    def _write(self, target: SearchIndex, docs: Sequence[CleanedDocument], report: FeatureReport,
               *, replace: bool, record: bool = True, indexed: dict[str, set[str]] | None = None) -> None:
        """Chunk, validate, embed and write documents. With `replace`, a document's leftovers (chunk ids
        it no longer produces) are deleted only after its new chunks were all written; a document whose
        write failed is put back as it was (its new chunks deleted), so it keeps its old chunks."""
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
        result = target.upsert(embedded)
        owner = {c.id: c.document_id for c in chunks}
        failed_ids = {chunk_id for chunk_id, _ in result.failures}
        failed_docs: dict[str, str] = {}
        for chunk_id, reason in result.failures:
            failed_docs.setdefault(owner.get(chunk_id, chunk_id), reason)
        report.failures.update({d: f"index write failed: {reason}" for d, reason in failed_docs.items()})
        written = {d: cs for d, cs in chunks_by_doc.items() if d not in failed_docs}
        if replace:
            old = indexed if indexed is not None else target.chunk_ids_many(list(chunks_by_doc))
            leftovers = [i for d, cs in written.items() for i in old.get(d, set()) - {c.id for c in cs}]
            report.chunks_deleted += target.delete_chunks(leftovers)
            # Undo a failed document's partial write: what it had before stays, nothing new lingers.
            partial = [c.id for d in failed_docs for c in chunks_by_doc.get(d, [])
                       if c.id not in failed_ids and c.id not in old.get(d, set())]
            target.delete_chunks(partial)
        report.indexed += len(written)
        report.chunks_written += sum(len(cs) for cs in written.values())
        if record:
            self._record(written, report.run_id)
        else:
            self._staged_written.update(written)

    def _record(self, written: dict[str, list[Chunk]], run_id: str) -> None:
        fingerprint = self.fingerprint
        ops = [ReplaceOne({"_id": doc_id}, {"_id": doc_id, "document_hash": cs[0].document_hash,
                                            "fingerprint": fingerprint, "chunks": len(cs), "run_id": run_id,
                                            "indexed_at": utcnow()},
                          upsert=True)
               for doc_id, cs in written.items()]
        if ops:
            self.store.collection(MANIFEST).bulk_write(ops, ordered=False)

    def _finish(self, report: FeatureReport) -> FeatureReport:
        if self._validated:
            publish_report(self.settings)
            self._validated = False
        report.finished_at = utcnow()
        # Failed documents need no list of their own: their manifest entry is missing or stale, so
        # the next reconciliation retries them. "retry" says which, for people.
        update: dict[str, Any] = {"retry": sorted(report.failures), "last_run": report.summary()}
        self.store.collection(Collections.PIPELINE_STATE).update_one({"_id": PIPELINE}, {"$set": update}, upsert=True)
        level = logging.WARNING if report.failures else logging.INFO
        log.log(level, "features %s: %s", report.mode, {k: v for k, v in report.summary().items() if k != "failures"})
        for doc_id, reason in report.failures.items():
            log.warning("document %s not indexed: %s", doc_id, reason)
        return report


def merge_by_id(left: Iterable[dict[str, Any]], right: Iterable[dict[str, Any]]
                ) -> Iterator[tuple[Any, dict[str, Any] | None, dict[str, Any] | None]]:
    """Walk two `_id`-ascending streams together: (id, left record or None, right record or None)."""
    lefts, rights = iter(left), iter(right)
    a, b = next(lefts, None), next(rights, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a["_id"] < b["_id"]):
            yield a["_id"], a, None  # type: ignore[index]
            a = next(lefts, None)
        elif a is None or b["_id"] < a["_id"]:
            yield b["_id"], None, b
            b = next(rights, None)
        else:
            yield a["_id"], a, b
            a, b = next(lefts, None), next(rights, None)


def _sort_key(value: datetime | None) -> tuple[int, datetime | None]:
    return (0, None) if value is None else (1, value)  # type: ignore[return-value]


def _batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
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
