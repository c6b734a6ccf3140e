"""Search index speed and quality: indexing throughput, query latency (p50/p95) of BM25, exact and
approximate vector search and hybrid search, and approximate recall@10 against exact ground truth,
for each adapter that can run here, all measured in the same run.

    .venv/bin/python -m benchmarks.bench_search [--sizes 10000,100000] [--backends lancedb,opensearch]
                                                [--queries 200] [--exact-queries 50]

Corpus: N synthetic chunks with random 384-d unit vectors and 40-word texts drawn from a Zipf-like
vocabulary. Query vectors are corpus vectors plus noise (so each has real near neighbours);
ground truth is numpy brute force over the same vectors. Ratios are against exact search in the
same run. OpenSearch runs on OPENSEARCH_URL when set, else on the node installed by
scripts/install_opensearch.sh (skipped when neither is there).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from benchmarks.report import record
from twin.models import DocumentKind, EmbeddedChunk
from twin.search.base import SearchIndex

DIM = 384
K = 10
BATCH = 5_000
KINDS = list(DocumentKind)


def synthetic_corpus(n: int, seed: int = 0) -> tuple[np.ndarray, list[str], list[str]]:
    """Unit vectors, chunk texts and the vocabulary they were drawn from."""
    rng = np.random.default_rng(seed)
    # Topics: random centroids with points scattered around them, as sentence embeddings cluster.
    # (Uniform random vectors have no neighbourhoods: their top-10 is a near tie, recall meaningless.)
    centroids = rng.standard_normal((max(10, n // 100), DIM)).astype(np.float32)
    vectors = centroids[rng.integers(0, len(centroids), size=n)]
    vectors += 0.8 * rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vocabulary = [f"w{i}{'abcdefghij'[i % 10]}" for i in range(5_000)]
    weights = 1.0 / np.arange(1, len(vocabulary) + 1)  # Zipf-like: a few words everywhere, most rare
    words = rng.choice(len(vocabulary), size=(n, 40), p=weights / weights.sum())
    texts = [" ".join(vocabulary[w] for w in row) for row in words]
    return vectors, texts, vocabulary


def to_chunks(vectors: np.ndarray, texts: list[str], start: int, stop: int) -> list[EmbeddedChunk]:
    epoch = datetime(2024, 1, 1, tzinfo=UTC)
    return [
        EmbeddedChunk(id=f"c{i}", document_id=f"d{i // 4}", chunk_index=i % 4, kind=KINDS[i % len(KINDS)],
                      author_id=f"author{i % 10}", author_name=f"Author {i % 10}", url=f"https://bench.test/{i}",
                      text=texts[i], token_count=40, published_at=epoch + timedelta(hours=i),
                      document_hash="bench", embedding=vectors[i].tolist())
        for i in range(start, stop)
    ]


def query_set(vectors: np.ndarray, vocabulary: list[str], count: int, seed: int = 1
              ) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(vectors), size=count)
    queries = vectors[picks] + 0.5 * rng.standard_normal((count, DIM)).astype(np.float32) / np.sqrt(DIM)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    texts = [" ".join(vocabulary[j] for j in rng.integers(10, 2_000, size=3)) for _ in range(count)]
    return queries, texts


def ground_truth(vectors: np.ndarray, queries: np.ndarray, k: int = K) -> list[set[str]]:
    scores = queries @ vectors.T
    top = np.argsort(-scores, axis=1)[:, :k]
    return [{f"c{i}" for i in row} for row in top]


def timed(calls: Sequence[Callable[[], list]]) -> tuple[list[float], list[list]]:
    """Latencies in ms (after one warm-up call) and each call's result."""
    calls[0]()
    latencies, results = [], []
    for call in calls:
        started = time.perf_counter()
        results.append(call())
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies, results


def recall(results: list[list], truth: list[set[str]]) -> float:
    found = [{h.chunk.id for h in hits} for hits in results]
    return float(np.mean([len(ids & t) / len(t) for ids, t in zip(found, truth, strict=True)]))


def ingest(index: SearchIndex, vectors: np.ndarray, texts: list[str]) -> float:
    """Chunks per second through a full rebuild: `upsert` batches into a staged index, then commit."""
    started = time.perf_counter()
    staged = index.begin_rebuild(DIM)
    for start in range(0, len(vectors), BATCH):
        result = staged.upsert(to_chunks(vectors, texts, start, min(start + BATCH, len(vectors))))
        if not result.ok:
            raise RuntimeError(f"indexing failed: {result.failures[:3]}")
    index.commit_rebuild(staged)
    return len(vectors) / (time.perf_counter() - started)


def measure(index: SearchIndex, vectors: np.ndarray, texts: list[str], vocabulary: list[str],
            queries: int, exact_queries: int, prepare_ann: Callable[[], float]) -> list[dict]:
    qv, qt = query_set(vectors, vocabulary, queries)
    truth = ground_truth(vectors, qv)
    rows = [{"op": "ingest", "note": f"{ingest(index, vectors, texts):,.0f} chunks/s"}]
    ann_build_s = prepare_ann()
    exact_lat, exact_res = timed([lambda v=v: index.search_vector(v.tolist(), K, exact=True)
                                  for v in qv[:exact_queries]])
    ann_lat, ann_res = timed([lambda v=v: index.search_vector(v.tolist(), K) for v in qv])
    bm25_lat, _ = timed([lambda t=t: index.search_bm25(t, K) for t in qt])
    hybrid_lat, _ = timed([lambda t=t, v=v: index.search_hybrid(t, v.tolist(), K) for t, v in zip(qt, qv, strict=True)])
    exact_p50 = float(np.percentile(exact_lat, 50))
    for op, lat, rec, note in [
        ("vector exact", exact_lat, recall(exact_res, truth[:exact_queries]), ""),
        ("vector ANN", ann_lat, recall(ann_res, truth), f"index build {ann_build_s:.1f}s"),
        ("bm25", bm25_lat, None, ""),
        ("hybrid (rrf)", hybrid_lat, None, "bm25 + ANN, fused"),
    ]:
        p50 = float(np.percentile(lat, 50))
        rows.append({"op": op, "p50": p50, "p95": float(np.percentile(lat, 95)), "recall": rec,
                     "ratio": p50 / exact_p50, "note": note})
    return rows


@contextmanager
def lancedb_index() -> Iterator[tuple[SearchIndex, Callable[[], float]]]:
    from twin.search.lancedb_index import LanceDBSearchIndex

    root = Path(tempfile.mkdtemp(prefix="bench-lancedb-"))
    # Build the ANN index explicitly (timed) rather than on the write path.
    index = LanceDBSearchIndex(root, "bench", ann_min_rows=10**12)
    index.ensure(DIM)

    def build() -> float:
        started = time.perf_counter()
        index.build_vector_index()
        index.optimize()
        return time.perf_counter() - started

    try:
        yield index, build
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def opensearch_index() -> Iterator[tuple[SearchIndex, Callable[[], float]]]:
    from opensearchpy import OpenSearch

    from twin.search.opensearch_index import OpenSearchSearchIndex

    url, server, run = os.environ.get("OPENSEARCH_URL"), None, None
    if not url:
        from tests.fixtures.opensearch import node_installed, start_local_node

        if not node_installed():
            raise RuntimeError("no OpenSearch node: set OPENSEARCH_URL or run scripts/install_opensearch.sh")
        run = Path(tempfile.mkdtemp(prefix="bench-opensearch-"))
        server, url = start_local_node(run, heap="1g")
    index = OpenSearchSearchIndex(OpenSearch(hosts=[url], timeout=300), f"bench-{os.getpid()}")
    index.ensure(DIM)

    def merge() -> float:
        # HNSW graphs are built on write; merging to one segment makes one graph to search.
        started = time.perf_counter()
        index.client.indices.forcemerge(index=index.name, params={"max_num_segments": "1"}, request_timeout=1800)
        index.client.indices.refresh(index=index.name)
        return time.perf_counter() - started

    try:
        yield index, merge
    finally:
        index.drop()
        if server:
            server.stop(30)
            shutil.rmtree(run, ignore_errors=True)


BACKENDS = {"lancedb": lancedb_index, "opensearch": opensearch_index}


def print_table(rows: list[dict]) -> None:
    print(f"{'backend':<11}{'N':>8}  {'operation':<14}{'p50 ms':>9}{'p95 ms':>9}{'recall@10':>11}"
          f"{'p50/exact':>11}  note")
    for r in rows:
        p50 = f"{r['p50']:.2f}" if "p50" in r else ""
        p95 = f"{r['p95']:.2f}" if "p95" in r else ""
        rec = f"{r['recall']:.3f}" if r.get("recall") is not None else ""
        ratio = f"{r['ratio']:.3f}" if "ratio" in r else ""
        print(f"{r['backend']:<11}{r['n']:>8,}  {r['op']:<14}{p50:>9}{p95:>9}{rec:>11}{ratio:>11}  {r.get('note', '')}")
        if r.get("ratio") and r.get("p50"):
            record("search", f"{r['backend']} {r['op']} p50, N={r['n']:,}", r["p50"], "exact vector search p50",
                   r["p50"] / r["ratio"], "ms", higher_is_better=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000", help="comma-separated corpus sizes, e.g. 10000,100000")
    parser.add_argument("--backends", default="lancedb,opensearch")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--exact-queries", type=int, default=50, help="exact search is slow: fewer queries")
    args = parser.parse_args(argv)
    rows: list[dict] = []
    for size in (int(s) for s in args.sizes.split(",")):
        vectors, texts, vocabulary = synthetic_corpus(size)
        for backend in args.backends.split(","):
            started = time.perf_counter()
            try:
                with BACKENDS[backend]() as (index, prepare_ann):
                    measured = measure(index, vectors, texts, vocabulary, args.queries,
                                       min(args.exact_queries, args.queries), prepare_ann)
            except RuntimeError as exc:
                print(f"{backend}: skipped ({exc})", flush=True)
                continue
            rows.extend({"backend": backend, "n": size, **row} for row in measured)
            print(f"{backend} N={size:,}: measured in {time.perf_counter() - started:.0f}s", flush=True)
    print_table(rows)


if __name__ == "__main__":
    main()
