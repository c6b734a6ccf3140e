"""Retrieval quality on the labelled hard set (tests/data/retrieval_hard/, two authors on overlapping
topics): the platform's retrieval against the plain baseline (RRF over BM25 and MiniLM vectors on
120-word windows), measured in the same run, with ratios.

    .venv/bin/python -m benchmarks.bench_retrieval_quality [--chunk-tokens 256] [--overlap 32]

The relevance threshold is chosen on the tuning split (the platform's hybrid with self-query) and
then applied, unchanged, to the untuned split, which is what the table reports.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from twin.features.chunking import ChunkSizes
from twin.features.embedding import Embedder
from twin.retrieval.evaluation import EvalConfig, choose_threshold, format_table, load_queries, summarise
from twin.retrieval.labelled import evaluate_corpus, load_corpus

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
CONFIGS = [EvalConfig("bm25", "bm25"), EvalConfig("vector", "vector"), EvalConfig("hybrid", "hybrid"),
           EvalConfig("hybrid_selfquery", "hybrid", self_query=True),
           EvalConfig("hybrid_docagg", "hybrid", aggregate=True)]
CHOSEN = "hybrid_selfquery"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk-tokens", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--headers", action="store_true", help="contextual chunk headers")
    args = parser.parse_args(argv)
    corpus = load_corpus(DATA / "retrieval_hard")
    queries, _ = load_queries(DATA / "retrieval_hard.jsonl")
    embedder = Embedder("packaged", batch_size=32)
    sizes = ChunkSizes(args.chunk_tokens, args.overlap, max(16, args.chunk_tokens // 2), args.headers)
    tuning = [q for q in queries if q.split == "tuning"]
    untuned = [q for q in queries if q.split == "untuned"]
    tuned = evaluate_corpus(corpus, tuning, embedder, sizes=sizes, configs=[c for c in CONFIGS if c.name == CHOSEN])
    threshold = choose_threshold(tuned.per_query[CHOSEN], tuning)
    report = evaluate_corpus(corpus, untuned, embedder, sizes=sizes, configs=CONFIGS, min_relevance=threshold)
    # The baseline's error rates at its own threshold, chosen on the tuning split in the same way.
    base_threshold = choose_threshold(tuned.per_query["baseline"], tuning)
    report.results["baseline"] = summarise(untuned, {
        qid: {**s, "passes": float(s.get("relevance", 0.0) >= base_threshold)}
        for qid, s in report.per_query["baseline"].items()})
    print(f"untuned split: {len(untuned)} questions ({sum(q.answerable for q in untuned)} answerable); "
          f"{sizes}; relevance threshold {threshold:.3f} (baseline {base_threshold:.3f}), chosen on the tuning split")
    print(format_table(report))
    base = report.results["baseline"]
    print("\nratio vs baseline (hit@1, mrr):")
    for name, values in report.results.items():
        if name != "baseline":
            print(f"  {name:<22} hit@1 x{values['hit@1'] / base['hit@1']:.3f}   mrr x{values['mrr'] / base['mrr']:.3f}")


if __name__ == "__main__":
    main()
