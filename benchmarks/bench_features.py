"""Feature-pipeline throughput against raw `model.encode` throughput on the same chunks, same run.

    .venv/bin/python -m benchmarks.bench_features [--documents 90]

The pipeline run reads cleaned documents from a MongoDB-protocol server, chunks them with the
model's tokenizer, checks the chunks with the GX suite, embeds them and writes them to an
embedded LanceDB index. The baseline embeds exactly the chunks the pipeline wrote with one
`model.encode` call. Embedding is the floor: the target is a ratio of at least 0.8. Model loading
and the one-time GX project setup are warmed up first (a long-lived worker pays them once).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.report import record
from benchmarks.servers import local_mongo

WORDS = [
    "pipeline", "data", "model", "index", "vector", "query", "author", "chunk", "token", "embedding", "search",
    "result", "batch", "schema", "table", "column", "partition", "backfill", "replay", "stream", "event",
    "window", "latency", "throughput", "cache", "retry", "failure", "alert", "metric", "dashboard", "owner",
    "contract", "version", "release", "deploy", "rollback", "test", "quality", "drift", "sample", "label",
    "training", "evaluation", "recall", "precision", "ranking", "fusion",
]


def _sentence(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(8, 22))
    return " ".join(words).capitalize() + "."


def _article(rng: random.Random) -> str:
    return "\n\n".join(" ".join(_sentence(rng) for _ in range(rng.randint(4, 8))) for _ in range(rng.randint(4, 8)))


def _code(rng: random.Random) -> str:
    return "\n\n".join(f'def step_{i}(batch):\n    """{_sentence(rng)}"""\n    return [row * {i} for row in batch]\n'
                       for i in range(rng.randint(5, 25)))


def documents(count: int, seed: int = 7) -> list:
    from twin.models import CleanedDocument, DocumentKind, content_hash

    rng = random.Random(seed)
    kinds = [DocumentKind.ARTICLE, DocumentKind.ARTICLE, DocumentKind.POST, DocumentKind.CODE]
    docs, start = [], datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(count):
        kind = kinds[n % len(kinds)]
        text = {DocumentKind.CODE: _code, DocumentKind.POST: lambda r: " ".join(_sentence(r) for _ in range(5))}.get(
            kind, _article)(rng)
        docs.append(CleanedDocument(
            id=f"doc-{n}", raw_id=f"doc-{n}", kind=kind, url=f"https://bench.local/a{n % 3}/doc-{n}",
            author_id=f"a{n % 3}", author_name=f"Author {n % 3}", title=f"Document {n}", content=text,
            content_hash=content_hash(text), raw_content_hash=content_hash(text),
            cleaned_at=start + timedelta(seconds=n), etl_run_id="bench"))
    return docs


def _pipeline(mongo_uri: str, database: str, workdir: Path, settings):
    from twin.features.embedding import get_embedder
    from twin.features.pipeline import FeaturePipeline, chunk_sizes
    from twin.search.lancedb_index import LanceDBSearchIndex
    from twin.storage.documents import DocumentStore

    embedder = get_embedder(settings)
    store = DocumentStore(mongo_uri, database)
    index = LanceDBSearchIndex(workdir / "lancedb", database.replace("_", "-"))
    return FeaturePipeline(store, index, embedder, chunk_sizes(settings, embedder), settings)


def _measure(mongo_uri: str, workdir: Path, count: int) -> list[tuple[str, int, float]]:
    from twin.settings import load_settings

    settings = load_settings(data_dir=workdir / "data")
    warm = _pipeline(mongo_uri, "bench_warmup", workdir, settings)
    warm.store.upsert_cleaned(documents(4, seed=1))
    warm.run()  # loads the model, sets up the GX project, opens LanceDB

    pipeline = _pipeline(mongo_uri, "bench_features", workdir, settings)
    docs = documents(count)
    pipeline.store.upsert_cleaned(docs)
    texts = [c.text for d in docs for c in pipeline.chunker.chunk(d)]
    model = pipeline.embedder.model

    def raw_encode() -> float:
        started = time.perf_counter()
        model.encode(texts, batch_size=settings.embedding_batch_size, normalize_embeddings=True,
                     show_progress_bar=False)
        return time.perf_counter() - started

    # The baseline runs before and after the pipeline and is averaged, so that a neighbour's load
    # on the shared CPUs does not land on one side only.
    before = raw_encode()
    started = time.perf_counter()
    report = pipeline.run()
    full = time.perf_counter() - started
    raw = (before + raw_encode()) / 2
    assert report.chunks_written == len(texts) and not report.failures, report.failures

    started = time.perf_counter()
    rerun = pipeline.run()
    again = time.perf_counter() - started
    assert rerun.indexed == 0
    return [("raw model.encode (baseline)", len(texts), raw), ("feature pipeline, first run", len(texts), full),
            ("feature pipeline, rerun (nothing changed)", 0, again)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=90)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    workdir = Path(tempfile.mkdtemp(prefix="twin-bench-features-"))
    try:
        with local_mongo(workdir) as mongo_uri:
            results = _measure(mongo_uri, workdir, args.documents)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    _, chunks, raw_seconds = results[0]
    baseline = chunks / raw_seconds
    print(f"features benchmark: {args.documents} documents, {chunks} chunks (articles, posts, code)")
    for label, count, seconds in results:
        if count:
            rate = count / seconds
            print(f"  {label:<44} {rate:8.1f} chunks/s   ratio to raw encode {rate / baseline:6.3f}")
            if label != results[0][0]:
                record("features", label, rate, "raw model.encode", baseline, "chunks/s", goal=">= 0.8")
        else:
            print(f"  {label:<44} {seconds:8.2f} s         (ratio to the first run's time "
                  f"{seconds / results[1][2]:6.3f})")
    print("  target: pipeline ratio >= 0.8 (embedding is the floor)")


if __name__ == "__main__":
    main()
