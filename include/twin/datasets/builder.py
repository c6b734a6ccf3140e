"""Building one author's fine-tuning datasets.

1. Passages: the author's cleaned, non-duplicate documents cut by the feature pipeline's chunker
   (no contextual headers, no overlap: an answer is the author's own words, once).
2. Instructions: the generator writes the question each passage answers; the answer is the passage
   verbatim. Rejected answers: the base model answers the instruction itself.
3. Filters, each counted; a seeded split by document, stratified by kind; a GX gate.
4. A content-addressed version (records + generator settings) in the artifact store, logged to MLflow.

Generator replies are cached (see cache.py): a rebuild of an unchanged corpus generates nothing and
gives the same version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pymongo import ASCENDING

from twin.datasets import filters as F
from twin.datasets.cache import CacheKey, GenerationCache
from twin.datasets.prompts import PromptTemplate, load_prompt
from twin.datasets.versions import DATASETS, SPLITS, DatasetVersions, file_name, to_jsonl
from twin.llm.base import GenerationResult
from twin.llm.client import LLMClient
from twin.models import CleanedDocument, DocumentKind, content_hash, stable_id, utcnow
from twin.storage.documents import Collections, DocumentStore

log = logging.getLogger(__name__)

KIND_WORDS = {DocumentKind.ARTICLE: "an excerpt of an article", DocumentKind.POST: "a short post",
              DocumentKind.CODE: "a source code file"}
# stage name, done, total
Progress = Callable[[str, int, int], None]


class DatasetError(RuntimeError):
    """The build cannot start (no documents for the author, unknown author, ...)."""


@dataclass(frozen=True)
class Passage:
    id: str
    document_id: str
    document_hash: str
    chunk_index: int
    kind: str
    url: str
    title: str | None
    text: str

    @property
    def hash(self) -> str:
        return content_hash(self.text)


@dataclass
class BuildReport:
    author_id: str
    version: str = ""
    parent_version: str | None = None
    changed: bool = False  # a new version became the latest
    location: str = ""
    passages: int = 0
    generated: dict[str, int] = field(default_factory=lambda: {"instruction": 0, "answer": 0})
    cached: dict[str, int] = field(default_factory=lambda: {"instruction": 0, "answer": 0})
    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    filters: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped_replies: list[dict[str, Any]] = field(default_factory=list)
    instruction_sources: dict[str, int] = field(default_factory=dict)  # generator / title: rows kept of each
    mlflow_run_id: str | None = None

    def summary(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SplitSettings:
    seed: int = 42
    test_share: float = 0.2


class DatasetBuilder:
    def __init__(self, store: DocumentStore, versions: DatasetVersions, generator: LLMClient, base_model: LLMClient,
                 chunker: Any, *, filter_settings: F.FilterSettings | None = None,
                 split: SplitSettings | None = None, instruction_max_new_tokens: int = 48,
                 answer_max_new_tokens: int = 160, title_fallback: bool = False, settings: Any = None) -> None:
        self.store = store
        self.versions = versions
        self.generator = generator
        self.base_model = base_model
        self.chunker = chunker
        self.filter_settings = filter_settings or F.FilterSettings()
        self.split = split or SplitSettings()
        self.title_fallback = title_fallback
        self.instruction_sampling = generator.settings_for(max_new_tokens=instruction_max_new_tokens)
        self.answer_sampling = base_model.settings_for(max_new_tokens=answer_max_new_tokens)
        self.cache = GenerationCache(store)
        self.prompts: dict[str, PromptTemplate] = {"instruction": load_prompt("instruction"),
                                                   "answer": load_prompt("answer")}
        self.settings = settings  # where the GX suites and their stores live

    # --- the build --------------------------------------------------------------------------------
    def build(self, author_id: str, *, limit: int | None = None, progress: Progress | None = None,
              track: bool = True) -> BuildReport:
        report = BuildReport(author_id=author_id, parent_version=self.versions.latest(author_id))
        documents = self._documents(author_id)
        counts = {"instruction": Counter({name: 0 for name in F.INSTRUCTION_FILTERS}),
                  "preference": Counter({name: 0 for name in F.PREFERENCE_FILTERS})}
        passages = []
        for passage in self._passages(documents):
            if F.answer_length_ok(passage.text, self.filter_settings):
                passages.append(passage)
            else:
                counts["instruction"][F.ANSWER_LENGTH] += 1
        passages = passages[:limit] if limit else passages
        report.passages = len(passages)

        instructions = self._generate("instruction", passages, lambda p: p.hash,
                                      lambda p: self.prompts["instruction"].render(kind=KIND_WORDS[DocumentKind(
                                          p.kind)], passage=p.text), self.generator, self.instruction_sampling,
                                      report, progress)
        kept: list[tuple[Passage, str]] = []
        source_of: dict[str, str] = {}
        duplicates = F.NearDuplicates(self.filter_settings.duplicate_threshold)
        for passage in passages:
            reply = instructions[passage.id]
            instruction, problem = F.parse_instruction(reply)
            if problem:  # recorded and skipped: the build goes on
                report.skipped_replies.append({"passage_id": passage.id, "task": "instruction", "reason": problem,
                                               "reply": (reply.text if reply else "")[:200]})
            else:
                problem = self._instruction_problem(instruction, passage, duplicates)
            if problem:
                counts["instruction"][problem] += 1  # the generator's question is counted as filtered either way
                instruction = self._title_instruction(passage, duplicates)
                if instruction is None:
                    continue
            source_of[passage.id] = "title" if problem else "generator"
            kept.append((passage, instruction))
        report.instruction_sources = dict(Counter(source_of.values()))

        answers = self._generate("answer", [p for p, _ in kept], None, None, self.base_model, self.answer_sampling,
                                 report, progress, inputs={p.id: i for p, i in kept})
        split_of = self._split({p.document_id: p.kind for p, _ in kept})
        rows: dict[str, list[dict[str, Any]]] = {"instruction": [], "preference": []}
        for passage, instruction in kept:
            base = {"author_id": author_id, "passage_id": passage.id, "document_id": passage.document_id,
                    "kind": passage.kind, "split": split_of[passage.document_id], "instruction": instruction,
                    "instruction_source": source_of[passage.id]}
            rows["instruction"].append({**base, "id": stable_id("instruction", passage.id, instruction),
                                        "output": passage.text, "messages": [
                                            {"role": "user", "content": instruction},
                                            {"role": "assistant", "content": passage.text}]})
            rejected = answers.get(passage.id)
            problem = F.rejected_problem(rejected, passage.text)
            if problem:
                counts["preference"][problem] += 1
                if problem == F.REJECTED_EMPTY:
                    report.skipped_replies.append({"passage_id": passage.id, "task": "answer", "reason": problem,
                                                   "reply": (rejected.text if rejected else "")[:200]})
                continue
            assert rejected is not None
            rows["preference"].append({**base, "id": stable_id("preference", passage.id, instruction, rejected.text),
                                       "prompt": [{"role": "user", "content": instruction}],
                                       "chosen": [{"role": "assistant", "content": passage.text}],
                                       "rejected": [{"role": "assistant", "content": rejected.text}]})
        self._validate(rows, counts)
        report.filters = {d: dict(c) for d, c in counts.items()}
        report.rows = {d: {s: sum(r["split"] == s for r in rows[d]) for s in SPLITS} for d in DATASETS}
        self._publish(report, documents, passages, rows, track)
        return report

    # --- steps ------------------------------------------------------------------------------------
    def _instruction_problem(self, instruction: str, passage: Passage, duplicates: F.NearDuplicates) -> str | None:
        problem = F.instruction_problem(instruction, passage.text, self.filter_settings)
        if problem is None and duplicates.seen(instruction):
            problem = F.NEAR_DUPLICATE
        return problem

    def _title_instruction(self, passage: Passage, duplicates: F.NearDuplicates) -> str | None:
        """With TWIN_DATASET_TITLE_FALLBACK, a question about the passage's document title in place of an
        unusable generated one, held to the same filters."""
        if not self.title_fallback:
            return None
        instruction = F.title_instruction(passage.title, passage.chunk_index)
        if instruction is None or self._instruction_problem(instruction, passage, duplicates):
            return None
        return instruction

    def _documents(self, author_id: str) -> list[CleanedDocument]:
        documents = list(self.store.find(Collections.CLEANED_DOCUMENTS, CleanedDocument,
                                         {"author_id": author_id, "duplicate_of": None}, sort=[("_id", ASCENDING)]))
        if not documents:
            raise DatasetError(f"author {author_id!r} has no cleaned documents: run the crawl and ETL first")
        return documents

    def _passages(self, documents: Sequence[CleanedDocument]) -> list[Passage]:
        passages = []
        for doc in documents:
            for chunk in self.chunker.chunk(doc):
                passages.append(Passage(id=stable_id(doc.id, str(chunk.chunk_index), content_hash(chunk.text)),
                                        document_id=doc.id, document_hash=doc.content_hash,
                                        chunk_index=chunk.chunk_index, kind=str(doc.kind), url=doc.url,
                                        title=doc.title, text=chunk.text.strip()))
        # Spread over documents (first passages of every document first), so a limit samples them all.
        return sorted(passages, key=lambda p: (p.chunk_index, _digest(p.document_id)))

    def _generate(self, task: str, passages: Sequence[Passage], input_hash: Callable[[Passage], str] | None,
                  render: Callable[[Passage], list[dict[str, str]]] | None, client: LLMClient, sampling: Any,
                  report: BuildReport, progress: Progress | None,
                  inputs: dict[str, str] | None = None) -> dict[str, GenerationResult | None]:
        """Cached replies where there are, generated (and cached batch by batch) where not."""
        prompt = self.prompts[task]
        if inputs is not None:  # the answer task: the input is the instruction
            input_hash = lambda p: content_hash(inputs[p.id])  # noqa: E731
            render = lambda p: prompt.render(instruction=inputs[p.id])  # noqa: E731
        assert input_hash is not None and render is not None
        fingerprint = client.fingerprint(sampling)
        keys = {p.id: CacheKey(task, input_hash(p), fingerprint.key, prompt.sha256) for p in passages}
        cached = self.cache.get_many(list(keys.values()), fingerprint)
        replies: dict[str, GenerationResult | None] = {p.id: cached.get(keys[p.id].id) for p in passages}
        missing = [p for p in passages if replies[p.id] is None]
        report.cached[task] += len(passages) - len(missing)
        done = 0
        if progress:
            progress(task, 0, len(missing))
        for start in range(0, len(missing), client.batch_size):
            batch = missing[start:start + client.batch_size]
            results = client.chat([render(p) for p in batch], sampling=sampling)
            self.cache.put_many((keys[p.id], r) for p, r in zip(batch, results, strict=True))
            replies.update({p.id: r for p, r in zip(batch, results, strict=True)})
            done += len(batch)
            report.generated[task] += len(batch)
            if progress:
                progress(task, done, len(missing))
        return replies

    def _split(self, kinds_of_documents: dict[str, str]) -> dict[str, str]:
        """Seeded, stratified by kind, whole documents to one side: train and test share no passage."""
        by_kind: dict[str, list[str]] = defaultdict(list)
        for doc_id, kind in kinds_of_documents.items():
            by_kind[kind].append(doc_id)
        split = {}
        for doc_ids in by_kind.values():
            # Ordered by a seeded hash, not shuffled: adding a document moves no other one.
            ordered = sorted(doc_ids, key=lambda d: _digest(f"{self.split.seed}:{d}"))
            n_test = math.floor(len(ordered) * self.split.test_share + 0.5) if len(ordered) > 1 else 0
            n_test = max(n_test, 1) if len(ordered) > 1 and self.split.test_share > 0 else n_test
            for i, doc_id in enumerate(ordered):
                split[doc_id] = "test" if i < n_test else "train"
        if self.split.test_share > 0 and len(split) > 1 and "test" not in split.values():
            # Every kind had one document (a small set): hold one out anyway, or nothing could be evaluated.
            split[min(split, key=lambda d: _digest(f"{self.split.seed}:{d}"))] = "test"
        return split

    def _validate(self, rows: dict[str, list[dict[str, Any]]], counts: dict[str, Counter]) -> None:
        """The GX gate per dataset; rows that fail are dropped and counted, with why, in the log."""
        import pandas as pd

        from twin.etl.validation import validate_records

        fs = self.filter_settings
        params = {"min_instruction_chars": fs.min_instruction_chars, "max_instruction_chars": fs.max_instruction_chars,
                  "min_answer_chars": fs.min_answer_chars, "max_answer_chars": fs.max_answer_chars}
        for dataset in DATASETS:
            if not rows[dataset]:
                continue
            frame = pd.DataFrame([_flat(dataset, r) for r in rows[dataset]])
            splits_per = frame.groupby("passage_id")["split"].transform("nunique")
            frame["passage_splits"] = splits_per
            frame["document_splits"] = frame.groupby("document_id")["split"].transform("nunique")
            outcome = validate_records(f"datasets_{dataset}", frame, parameters=params, settings=self.settings)
            if outcome.batch_failures:
                raise DatasetError(f"dataset {dataset} failed its GX suite: {outcome.batch_failures}")
            if outcome.failed_ids:
                for row_id, labels in outcome.row_failures.items():
                    log.warning("%s row %s failed validation: %s", dataset, row_id, ", ".join(labels))
                rows[dataset][:] = [r for r in rows[dataset] if r["id"] not in outcome.failed_ids]
                counts[dataset][F.FAILED_VALIDATION] += len(outcome.failed_ids)

    def _publish(self, report: BuildReport, documents: Sequence[CleanedDocument], passages: Sequence[Passage],
                 rows: dict[str, list[dict[str, Any]]], track: bool) -> None:
        files = {file_name(d, s): to_jsonl(sorted((r for r in rows[d] if r["split"] == s), key=lambda r: r["id"]))
                 for d in DATASETS for s in SPLITS}
        described = {
            "generator": self.generator.fingerprint(self.instruction_sampling).as_dict(),
            "base_model": self.base_model.fingerprint(self.answer_sampling).as_dict(),
            "prompts": {name: p.sha256 for name, p in self.prompts.items()},
            "filter_settings": asdict(self.filter_settings),
            "title_fallback": self.title_fallback,
            "split": {**asdict(self.split), "by": "document, stratified by kind"},
        }
        # The passages read count too: a changed source is a new version even where its row was filtered out.
        read = sorted((p.id, p.document_hash) for p in passages)
        digest = hashlib.sha256(json.dumps({**described, "passages": read}, sort_keys=True).encode())
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + files[name])
        report.version = digest.hexdigest()[:16]
        used = {p.document_id for p in passages}
        manifest = {
            "version": report.version, "author_id": report.author_id, "created_at": utcnow().isoformat(),
            "parent_version": report.parent_version, **described,
            "sources": [{"document_id": d.id, "content_hash": d.content_hash, "url": d.url, "title": d.title}
                        for d in documents if d.id in used],
            "counts": {"passages": report.passages, "rows": report.rows, "generated": report.generated,
                       "cached": report.cached, "instruction_sources": report.instruction_sources},
            "filters": report.filters, "skipped_replies": report.skipped_replies,
            "files": {name: {"rows": data.count(b"\n"), "sha256": hashlib.sha256(data).hexdigest()}
                      for name, data in files.items()},
        }
        if self.versions.exists(report.author_id, report.version):
            report.location = self.versions.artifacts.location(self.versions.prefix(report.author_id, report.version))
            if report.parent_version != report.version:  # back to an older content: it is the latest again
                self.versions.set_latest(report.author_id, report.version)
                report.changed = True
        else:
            report.location = self.versions.write(report.author_id, report.version, files, manifest)
            report.changed = True
        if track:
            report.mlflow_run_id = self._track(report, rows)
        log.info("dataset %s/%s: %s", report.author_id, report.version, report.rows)

    def _track(self, report: BuildReport, rows: dict[str, list[dict[str, Any]]]) -> str:
        """Log the version as MLflow dataset inputs, once per version (its run id is kept beside it)."""
        import mlflow
        import pandas as pd

        from twin.storage.artifacts import ArtifactNotFoundError
        from twin.tracking import tracked_run

        prefix = self.versions.prefix(report.author_id, report.version)
        try:
            return json.loads(self.versions.artifacts.get_bytes(f"{prefix}/mlflow.json"))["run_id"]
        except ArtifactNotFoundError:
            pass
        generator = self.generator.fingerprint(self.instruction_sampling)
        params = {"author_id": report.author_id, "dataset_version": report.version,
                  "parent_version": report.parent_version or "", "generator_backend": generator.backend,
                  "generator_model": generator.model, "generator_revision": generator.revision[:250],
                  "base_model": self.base_model.backend.model, "split_seed": self.split.seed,
                  "test_share": self.split.test_share,
                  **{f"prompt_{k}": v.sha256 for k, v in self.prompts.items()}}
        with tracked_run(f"datasets-{report.author_id}", params=params, settings=self.settings,
                         tags={"twin.kind": "dataset", "twin.author": report.author_id,
                               "twin.dataset_version": report.version}) as run:
            for dataset in DATASETS:
                for split in SPLITS:
                    part = [_flat(dataset, r) for r in rows[dataset] if r["split"] == split]
                    frame = pd.DataFrame(part, columns=list(_flat(dataset, _EMPTY_ROW).keys()))
                    source = self.versions.artifacts.location(f"{prefix}/{file_name(dataset, split)}")
                    data = mlflow.data.from_pandas(frame, source=source,
                                                   name=f"{report.author_id}-{dataset}-{split}@{report.version}")
                    mlflow.log_input(data, context=split)
                    mlflow.log_metric(f"{dataset}.{split}.rows", len(part))
            for dataset, counts in report.filters.items():
                mlflow.log_metrics({f"filtered.{dataset}.{name}": n for name, n in counts.items()})
            mlflow.log_dict(self.versions.manifest(report.author_id, report.version), "manifest.json")
            run_id = run.info.run_id
        self.versions.put_json(report.author_id, report.version, "mlflow.json", {"run_id": run_id})
        return run_id


_EMPTY_ROW: dict[str, Any] = {"id": "", "passage_id": "", "document_id": "", "kind": "", "split": "",
                              "instruction": "", "output": "", "chosen": [{"content": ""}],
                              "rejected": [{"content": ""}]}


def _flat(dataset: str, row: dict[str, Any]) -> dict[str, Any]:
    """A row as flat text columns (for GX and MLflow)."""
    flat = {k: row[k] for k in ("id", "passage_id", "document_id", "kind", "split", "instruction")}
    if dataset == "instruction":
        flat["output"] = row["output"]
    else:
        flat["chosen"] = row["chosen"][0]["content"]
        flat["rejected"] = row["rejected"][0]["content"]
    return flat


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- one call per DAG task / CLI command -----------------------------------------------------------
def passage_chunker(settings: Any) -> Any:
    """The feature pipeline's chunker, without contextual headers or overlap: answers are the author's
    own words, each once."""
    from dataclasses import replace

    from twin.features.chunking import Chunker, ModelTokenizer
    from twin.features.embedding import get_embedder
    from twin.features.pipeline import chunk_sizes

    embedder = get_embedder(settings)
    sizes = replace(chunk_sizes(settings, embedder), overlap_tokens=0, contextual_headers=False)
    return Chunker(ModelTokenizer(embedder.tokenizer), sizes)


def build_builder(settings: Any = None, store: DocumentStore | None = None, *, generator: LLMClient | None = None,
                  base_model: LLMClient | None = None) -> DatasetBuilder:
    from twin.llm.client import get_llm_client, local_client
    from twin.settings import get_settings
    from twin.storage.artifacts import get_artifact_store

    settings = settings or get_settings()
    generator = generator or get_llm_client(settings)
    return DatasetBuilder(
        store or DocumentStore.from_settings(settings), DatasetVersions(get_artifact_store(settings)), generator,
        base_model or local_client(settings.base_model, settings), passage_chunker(settings),
        filter_settings=F.FilterSettings.from_settings(settings),
        split=SplitSettings(seed=settings.dataset_seed, test_share=settings.dataset_test_share),
        instruction_max_new_tokens=settings.dataset_instruction_max_new_tokens,
        answer_max_new_tokens=settings.dataset_answer_max_new_tokens,
        title_fallback=settings.dataset_title_fallback, settings=settings)


def authors_to_build(author: str | None = None, settings: Any = None) -> list[str]:
    """The named author (or TWIN_AUTHOR); unset: every author with cleaned documents."""
    from twin.settings import get_settings

    settings = settings or get_settings()
    with DocumentStore.from_settings(settings) as store:
        known = sorted(a for a in store.collection(Collections.CLEANED_DOCUMENTS).distinct("author_id") if a)
    wanted = author or settings.author
    if wanted is None:
        return known
    if wanted not in known:
        listing = ", ".join(known) or "none"
        raise DatasetError(f"unknown author {wanted!r}: authors with cleaned documents are {listing}")
    return [wanted]


def build_dataset(author: str, *, limit: int | None = None, progress: Progress | None = None, track: bool = True,
                  settings: Any = None) -> dict[str, Any]:
    """Build (or find unchanged) the datasets of one author; returns the report as plain data."""
    from twin.settings import get_settings

    settings = settings or get_settings()
    builder = build_builder(settings)
    try:
        return builder.build(author, limit=limit or settings.dataset_max_passages, progress=progress,
                             track=track).summary()
    finally:
        builder.store.close()
