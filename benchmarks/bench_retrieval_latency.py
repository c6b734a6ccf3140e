"""Query latency of each retrieval step at 100k chunks on the embedded index (LanceDB), beside plain
hybrid search in the same run.

    .venv/bin/python -m benchmarks.bench_retrieval_latency [--chunks 100000] [--queries 200]

The corpus is realistic text at scale: the labelled hard set's and the sample site's chunks (cut by
the platform's chunker, embedded with the packaged MiniLM), plus variants of them up to `--chunks`:
each variant mixes the sentences of two real chunks by the same author and gets the first one's
vector with noise (embedding 100k chunks on 2 cores would take most of an hour, and the queries need
neighbourhoods, not exact vectors). The queries are the labelled questions, embedded for real once;
the embedding time is its own row. Rows are written straight into the table (one bulk add, then the
ANN and full-text indexes): the benchmark measures queries, not the write path.

Steps, each timed on every query in turn (the order rotates per query, so load on a shared machine
falls on all of them alike):
- bm25, ANN: the two searches on their own (k=10);
- hybrid: `search_hybrid` on the index, BM25 and ANN fused by RRF (the baseline every ratio is against);
- retriever: `Retriever.retrieve` without optional steps: hybrid, dedupe and the relevance signal;
- + self-query, + document aggregation: that step added.
Query expansion needs an LLM call per question (seconds on CPU): it is left out here and measured
with the LLM by `benchmarks/bench_llm.py`. On a machine with more cores, `taskset -c 0,1` gives the
2-core figure.
"""

from __future__ import annotations

import argparse
import random
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from benchmarks.report import record
from twin.features.embedding import Embedder
from twin.models import Chunk
from twin.retrieval.evaluation import load_queries
from twin.retrieval.labelled import LabelledCorpus, chunk_corpus, load_corpus, load_site, platform_sizes
from twin.retrieval.relevance import load_model
from twin.retrieval.retriever import Retriever
from twin.search.lancedb_index import VECTOR, LanceDBSearchIndex

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
K = 10
NOISE = 0.35  # norm of the noise added to a variant's vector (unit vectors): neighbours stay neighbours
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def base_chunks(embedder: Embedder) -> tuple[list[Chunk], np.ndarray, LabelledCorpus]:
    hard, site = load_corpus(DATA / "retrieval_hard"), load_site()
    corpus = LabelledCorpus(hard.authors + site.authors, hard.documents + site.documents)
    chunks = chunk_corpus(corpus, embedder, platform_sizes(embedder))
    return chunks, np.asarray(embedder.encode([c.text for c in chunks]), dtype=np.float32), corpus


def scaled_rows(chunks: list[Chunk], vectors: np.ndarray, total: int, seed: int = 0) -> list[dict]:
    """The real chunks, then variants of them up to `total` rows (4 chunks per synthetic document)."""
    rng, pick = np.random.default_rng(seed), random.Random(seed)
    by_author: dict[str, list[int]] = {}
    for i, chunk in enumerate(chunks):
        by_author.setdefault(chunk.author_id, []).append(i)
    rows = [{**c.model_dump(mode="python"), "kind": str(c.kind), VECTOR: vectors[i].tolist()}
            for i, c in enumerate(chunks)]
    for n in range(total - len(chunks)):
        first = n % len(chunks)
        other = chunks[pick.choice(by_author[chunks[first].author_id])]
        sentences = _SENTENCE.split(chunks[first].text) + _SENTENCE.split(other.text)
        pick.shuffle(sentences)
        text = " ".join(sentences[: max(3, len(sentences) // 2)])
        noise = rng.standard_normal(vectors.shape[1]).astype(np.float32)
        vector = vectors[first] + NOISE * noise / np.linalg.norm(noise)
        base = chunks[first]
        rows.append({**base.model_dump(mode="python"), "kind": str(base.kind), "id": f"syn-{n}",
                     "document_id": f"syn-doc-{n // 4}", "chunk_index": n % 4, "url": f"{base.url}/v{n // 4}",
                     "text": text, "token_count": len(text.split()),
                     VECTOR: (vector / np.linalg.norm(vector)).tolist()})
    return rows


def build_index(rows: list[dict], folder: Path, dimension: int) -> LanceDBSearchIndex:
    index = LanceDBSearchIndex(folder, "latency", ann_min_rows=10**12)  # the ANN index is built below
    index.ensure(dimension)
    table = index._table()  # one bulk add: upsert's merge by id is the write path, not measured here
    for start in range(0, len(rows), 20_000):
        table.add(pa.Table.from_pylist(rows[start:start + 20_000], schema=table.schema))
    index.build_vector_index()
    index.optimize()
    return index


def measure(steps: dict[str, Callable[[int], object]], queries: int) -> dict[str, list[float]]:
    names = list(steps)
    for name in names:  # warm-up: caches, lazily opened files
        steps[name](0)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    for i in range(queries):
        for name in names[i % len(names):] + names[: i % len(names)]:
            started = time.perf_counter()
            steps[name](i)
            latencies[name].append((time.perf_counter() - started) * 1000)
    return latencies


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    embedder = Embedder("packaged", batch_size=32)
    chunks, vectors, corpus = base_chunks(embedder)
    questions = [q.query for name in ("retrieval_hard.jsonl", "retrieval_eval.jsonl")
                 for q in load_queries(DATA / name)[0]]
    questions = (questions * (args.queries // len(questions) + 1))[: args.queries]
    embed_ms = []
    query_vectors: dict[str, list[float]] = {}
    for q in questions:
        t = time.perf_counter()
        query_vectors[q] = embedder.encode_query(q)
        embed_ms.append((time.perf_counter() - t) * 1000)
    rows = scaled_rows(chunks, vectors, max(args.chunks, len(chunks)))
    print(f"{len(chunks)} real chunks, {len(rows):,} in all; corpus and queries in "
          f"{time.perf_counter() - started:.0f}s", flush=True)
    with tempfile.TemporaryDirectory(prefix="twin-bench-latency-") as folder:
        t = time.perf_counter()
        index = build_index(rows, Path(folder), vectors.shape[1])
        del rows
        print(f"index of {index.count():,} chunks built in {time.perf_counter() - t:.0f}s", flush=True)
        retriever = Retriever(index, embedder, authors=corpus.authors, relevance_model=load_model(),
                              query_vectors=query_vectors)
        t = time.perf_counter()
        unique = list(dict.fromkeys(questions))
        for q in unique:  # the first sight of a word costs a term-statistics query; then it is cached
            retriever.retrieve(q, k=K, self_query=False)
        print(f"first retrieval of each question (term statistics not cached yet): "
              f"{(time.perf_counter() - t) * 1000 / len(unique):.1f} ms mean", flush=True)
        vec = [query_vectors[q] for q in questions]
        steps: dict[str, Callable[[int], object]] = {
            "bm25": lambda i: index.search_bm25(questions[i], K),
            "ANN": lambda i: index.search_vector(vec[i], K),
            "hybrid": lambda i: index.search_hybrid(questions[i], vec[i], K),
            "retriever": lambda i: retriever.retrieve(questions[i], k=K, self_query=False),
            "+ self-query": lambda i: retriever.retrieve(questions[i], k=K),
            "+ doc aggregation": lambda i: retriever.retrieve(questions[i], k=K, self_query=False, aggregate=True),
        }
        t = time.perf_counter()
        latencies = measure(steps, len(questions))
        print(f"{len(questions)} queries per step in {time.perf_counter() - t:.0f}s", flush=True)
    base = float(np.percentile(latencies["hybrid"], 50))
    print(f"\n{'step':<20}{'p50 ms':>9}{'p95 ms':>9}{'p50/hybrid':>12}")
    print(f"{'query embedding':<20}{np.percentile(embed_ms, 50):>9.2f}{np.percentile(embed_ms, 95):>9.2f}"
          f"{np.percentile(embed_ms, 50) / base:>12.2f}")
    for name, values in latencies.items():
        p50, p95 = np.percentile(values, 50), np.percentile(values, 95)
        print(f"{name:<20}{p50:>9.2f}{p95:>9.2f}{p50 / base:>12.2f}")
    print(f"(total {time.perf_counter() - started:.0f}s)")
    parts = float(np.percentile(latencies["bm25"], 50) + np.percentile(latencies["ANN"], 50))
    record("retrieval_latency", f"hybrid p50 at {args.chunks:,} chunks", base, "bm25 p50 + ANN p50", parts, "ms",
           higher_is_better=False, goal="hybrid p95 <= 20 ms")
    for name in ("retriever", "+ self-query", "+ doc aggregation"):
        record("retrieval_latency", f"{name} p50", float(np.percentile(latencies[name], 50)), "hybrid p50", base,
               "ms", higher_is_better=False)


if __name__ == "__main__":
    main()
