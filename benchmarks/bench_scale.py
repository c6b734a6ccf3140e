"""Crawl-free ETL → features at scale: time per stage, and the batched index/signature calls against
the per-document/per-batch calls they replaced, measured in the same run on the same data.

    .venv/bin/python -m benchmarks.bench_scale [--documents 10000]

Raw documents (articles, posts and code by five authors, with near copies across sites) are written
to a MongoDB-protocol server as a crawl writes them; then the ETL and the feature pipeline (packaged
embedding model, embedded LanceDB index) run as the DAGs run them, then both run again with nothing
new. Baselines: `chunk_ids` once per document vs one `chunk_ids_many` per batch of 128 documents
(what the feature pipeline does), and reading every near-duplicate signature per ETL batch vs once
per run (the ETL's in-memory index).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.report import record
from benchmarks.servers import local_mongo

AUTHORS = [("mara", "Mara Okafor"), ("ines", "Inês Duarte"), ("tomas", "Tomás Lindqvist"),
           ("yuki", "Yuki Tanaka"), ("sam", "Sam Whitfield")]
SUBJECTS = ["the ingestion pipeline", "our feature store", "the nightly backfill", "a flaky integration test",
            "schema migrations", "the search index", "vector recall", "query latency", "the on-call rotation",
            "data contracts", "late-arriving events", "the retry policy", "cost per query", "the staging cluster"]
VERBS = ["broke", "slowed down", "taught us", "needed", "surprised", "outgrew", "depended on", "simplified",
         "hid", "exposed", "doubled", "replaced"]
OBJECTS = ["every partition we had", "a single missing index", "the watermark logic", "three hours of replays",
           "an honest dashboard", "a smaller batch size", "idempotent writes", "the old deployment script",
           "the quarterly report", "a careful rollback", "two competing caches", "the review checklist"]
CLOSERS = ["We wrote it down so the next person does not have to guess.", "Measure before you tune.",
           "The fix was boring, which is the best kind.", "Nobody noticed until the numbers drifted.",
           "It took a week to find and a line to fix."]


def _sentence(rng: random.Random) -> str:
    return (f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)} "
            f"after {rng.randint(2, 90)} {rng.choice(['days', 'runs', 'deploys', 'tickets'])}.")


def _article(rng: random.Random) -> str:
    paragraphs = [" ".join(_sentence(rng) for _ in range(rng.randint(3, 6))) + " " + rng.choice(CLOSERS)
                  for _ in range(rng.randint(2, 5))]
    return "\n\n".join(paragraphs)


def _code(rng: random.Random) -> str:
    return "\n\n".join(f'def step_{i}(rows):\n    """{_sentence(rng)}"""\n'
                       f'    return [r for r in rows if r.get("v{i}")]\n' for i in range(rng.randint(3, 10)))


def raw_documents(count: int, seed: int = 11) -> list:
    """Articles, posts and code by several authors; about one in twenty is a near copy on another site."""
    from twin.models import DocumentKind, RawDocument, SourceKind, content_hash, stable_id

    rng = random.Random(seed)
    docs: list[RawDocument] = []
    for n in range(count):
        author_id, author_name = AUTHORS[n % len(AUTHORS)]
        roll = rng.random()
        if docs and roll < 0.05:  # syndicated elsewhere with a small edit: a near duplicate
            original = rng.choice(docs)
            kind, source, text = original.kind, original.source_kind, original.content + " Cross-posted."
            author_id, author_name = original.author_id, original.author_name
        elif roll < 0.55:
            kind, source, text = DocumentKind.ARTICLE, SourceKind.FEED, _article(rng)
        elif roll < 0.85:
            kind, source, text = DocumentKind.POST, SourceKind.EXPORT, " ".join(_sentence(rng) for _ in range(2))
        else:
            kind, source, text = DocumentKind.CODE, SourceKind.REPOSITORY, _code(rng)
        url = f"https://{author_id}.example.org/{kind}/{n}"
        path = f"src/mod_{n}.py" if kind is DocumentKind.CODE else None
        docs.append(RawDocument(
            id=stable_id(url, path or ""), kind=kind, source_kind=source, url=url, path=path, author_id=author_id,
            author_name=author_name, title=f"Note {n}", content=text, content_hash=content_hash(text),
            crawl_run_id="bench-scale"))
    return docs


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def _measure(mongo_uri: str, workdir: Path, count: int) -> tuple[list[tuple[str, float, str]], list[tuple]]:
    from twin.etl.pipeline import SIGNATURES, load_canonical_index, run_etl
    from twin.features.embedding import get_embedder
    from twin.features.pipeline import FeaturePipeline, chunk_sizes
    from twin.search.lancedb_index import LanceDBSearchIndex
    from twin.settings import load_settings
    from twin.storage.documents import Collections, DocumentStore

    settings = load_settings(data_dir=workdir / "data", mongodb_uri=mongo_uri, mongodb_database="bench_scale")
    store = DocumentStore(mongo_uri, "bench_scale")
    store.ensure_indexes()
    embedder = get_embedder(settings)
    index = LanceDBSearchIndex(workdir / "lancedb", "bench-scale")
    pipeline = FeaturePipeline(store, index, embedder, chunk_sizes(settings, embedder), settings)
    embedder.encode(["warm up the model"])

    stages: list[tuple[str, float, str]] = []
    docs = raw_documents(count)
    _, seconds = _timed(lambda: [store.upsert_raw_documents(docs[i:i + 1000]) for i in range(0, len(docs), 1000)])
    stages.append(("write raw documents (as a crawl does)", seconds, f"{count} documents"))
    etl, seconds = _timed(lambda: run_etl("bench-etl-1", settings=settings, store=store))
    stages.append(("ETL: clean, validate, de-duplicate", seconds,
                   f"{etl.cleaned} cleaned, {etl.exact_duplicates + etl.near_duplicates} duplicates, "
                   f"{etl.quarantined} quarantined"))
    features, seconds = _timed(pipeline.run)
    stages.append(("features: chunk, validate, embed, index", seconds,
                   f"{features.indexed} documents, {features.chunks_written} chunks"))
    etl_again, seconds = _timed(lambda: run_etl("bench-etl-2", settings=settings, store=store))
    stages.append(("ETL rerun, nothing new", seconds, f"{etl_again.processed} processed"))
    features_again, seconds = _timed(pipeline.run)
    stages.append(("features rerun, nothing new", seconds, f"{features_again.considered} considered"))

    # Baselines, on the index and signatures just built.
    doc_ids = [d["_id"] for d in store.collection(Collections.CLEANED_DOCUMENTS).find({}, {"_id": 1})]
    per_doc, per_doc_s = _timed(lambda: {d: index.chunk_ids(d) for d in doc_ids})
    batched: dict[str, set[str]] = {}
    _, batched_s = _timed(lambda: [batched.update(index.chunk_ids_many(doc_ids[i:i + 128]))
                                   for i in range(0, len(doc_ids), 128)])
    assert per_doc == batched
    batches = -(-count // settings.etl_batch_size)
    threshold = settings.near_duplicate_threshold
    _, reload_s = _timed(lambda: [load_canonical_index(store, threshold, exclude=set()) for _ in range(batches)])
    _, once_s = _timed(lambda: load_canonical_index(store, threshold, exclude=set()))
    signatures = store.count(SIGNATURES)  # type: ignore[arg-type]
    comparisons = [
        (f"chunk ids of {len(doc_ids)} documents", "chunk_ids per document", per_doc_s, "chunk_ids_many per 128",
         batched_s),
        (f"{signatures} signatures, {batches} ETL batches", "reload per batch", reload_s, "load once per run", once_s),
    ]
    index.drop()
    store.close()
    return stages, comparisons


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=10_000)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    workdir = Path(tempfile.mkdtemp(prefix="twin-bench-scale-"))
    try:
        with local_mongo(workdir) as mongo_uri:
            stages, comparisons = _measure(mongo_uri, workdir, args.documents)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"scale benchmark: {args.documents} generated raw documents, {len(AUTHORS)} authors, crawl-free")
    total = sum(seconds for _, seconds, _ in stages)
    for label, seconds, note in stages:
        print(f"  {label:<42} {seconds:8.1f} s  {seconds / total:5.1%}   {note}")
    print(f"  {'total':<42} {total:8.1f} s")
    for what, old_label, old_s, new_label, new_s in comparisons:
        print(f"  {what}: {old_label} {old_s:.2f} s, {new_label} {new_s:.2f} s, speed-up x{old_s / new_s:.1f}")
        record("scale", f"{what}: {new_label}", new_s, old_label, old_s, "s", higher_is_better=False)


if __name__ == "__main__":
    main()
