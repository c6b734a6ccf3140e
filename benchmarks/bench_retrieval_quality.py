"""Retrieval quality on the labelled hard set (tests/data/retrieval_hard/, two authors on overlapping
topics) and on the sample corpus: the platform's retrieval against the plain baseline (RRF over
BM25 and MiniLM vectors on 120-word windows), measured in the same run.

    .venv/bin/python -m benchmarks.bench_retrieval_quality [--no-sweeps]

Every choice is made on the tuning split and reported on both splits: the sweeps (chunk size ×
overlap, fusion method and weights, BM25 title weight) print one row per setting; the relevance
signal is the fitted model of twin.retrieval.relevance (fitted on the tuning split by
`python -m twin.retrieval.fit_relevance`), the baseline's is its plain cosine with a threshold
chosen on the tuning split. The sample corpus (the bundled site's articles, with
tests/data/retrieval_eval_unanswerable.jsonl added) is never tuned on.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks.report import record
from twin.features.chunking import ChunkSizes
from twin.features.embedding import Embedder
from twin.retrieval.evaluation import EvalConfig, EvalQuery, choose_threshold, evaluate, format_table, load_queries
from twin.retrieval.labelled import (
    BASELINE_WORDS,
    LabelledCorpus,
    chunk_corpus,
    index_chunks,
    load_corpus,
    load_site,
    platform_sizes,
    word_windows,
)
from twin.retrieval.relevance import load_model
from twin.retrieval.retriever import Retriever, weights_from_settings
from twin.search.base import HybridWeights
from twin.settings import load_settings

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
CONFIGS = [EvalConfig("bm25", "bm25"), EvalConfig("vector", "vector"), EvalConfig("hybrid", "hybrid"),
           EvalConfig("hybrid_selfquery", "hybrid", self_query=True),
           EvalConfig("hybrid_docagg", "hybrid", aggregate=True)]
CHOSEN = EvalConfig("hybrid_selfquery", "hybrid", self_query=True)
CHUNK_SWEEP = [(size, overlap) for size in (128, 192, 256) for overlap in (0, 32, 64)]
FUSION_SWEEP = [HybridWeights(b, v, "rrf", k) for b, v in ((1, 1), (1, 1.5), (1.5, 1), (1, 2), (2, 1))
                for k in (60, 20)] + [HybridWeights(b, v, "score") for b, v in ((1, 1), (1, 1.5), (1.5, 1), (1, 2))]
TITLE_SWEEP = (0.0, 0.5, 1.0, 2.0)
ROW = ("hit@1", "recall@5", "mrr")


class Bench:
    def __init__(self, corpus: LabelledCorpus, embedder: Embedder, folder: Path) -> None:
        self.corpus, self.embedder, self.folder = corpus, embedder, folder
        self.vectors: dict[str, list[float]] = {}  # queries are embedded once for every retriever
        self._indexes: dict[tuple[int, int, float], object] = {}
        self.baseline_threshold = 0.0  # the baseline's cosine threshold, chosen on a tuning split

    def sizes(self, tokens: int = 256, overlap: int = 32) -> ChunkSizes:
        return platform_sizes(self.embedder, chunk_tokens=tokens, chunk_overlap_tokens=overlap)

    def retriever(self, sizes: ChunkSizes, weights: HybridWeights | None = None, title_boost: float = 0.0,
                  **kwargs: object) -> Retriever:
        key = (sizes.max_tokens, sizes.overlap_tokens, title_boost)
        if key not in self._indexes:
            name = f"p{len(self._indexes)}"
            self._indexes[key] = index_chunks(chunk_corpus(self.corpus, self.embedder, sizes), self.embedder,
                                              self.folder, name, title_boost)
        return Retriever(self._indexes[key], self.embedder, authors=self.corpus.authors,  # type: ignore[arg-type]
                         weights=weights or weights_from_settings(load_settings()),
                         query_vectors=self.vectors, **kwargs)  # type: ignore[arg-type]

    def baseline(self) -> Retriever:
        chunks = [c for d in self.corpus.documents for c in word_windows(d, BASELINE_WORDS)]
        return Retriever(index_chunks(chunks, self.embedder, self.folder, "baseline"), self.embedder,
                         query_vectors=self.vectors)


def _split(queries: Sequence[EvalQuery], name: str) -> list[EvalQuery]:
    return [q for q in queries if q.split == name]


def _row(label: str, retriever: Retriever, tuning: list[EvalQuery], untuned: list[EvalQuery]) -> str:
    cells = []
    for split in (tuning, untuned):
        values = evaluate(retriever, split, [CHOSEN]).results[CHOSEN.name]
        cells.append(" ".join(f"{values[m]:.3f}" for m in ROW))
    return f"| {label} | {cells[0]} | {cells[1]} |"


def _header(what: str) -> list[str]:
    metrics = " ".join(ROW)
    return [f"| {what} | tuning: {metrics} | untuned: {metrics} |", "| --- | --- | --- |"]


def sweeps(bench: Bench, tuning: list[EvalQuery], untuned: list[EvalQuery]) -> None:
    print("\nchunk size x overlap (hybrid + self-query, default fusion):")
    print("\n".join(_header("tokens / overlap")))
    for size, overlap in CHUNK_SWEEP:
        sizes = bench.sizes(size, overlap)
        print(_row(f"{sizes.max_tokens} / {overlap}", bench.retriever(sizes), tuning, untuned), flush=True)
    print("\nfusion (default chunks):")
    print("\n".join(_header("method bm25:vector (rrf_k)")))
    for w in FUSION_SWEEP:
        label = f"{w.method} {w.bm25:g}:{w.vector:g}" + (f" (k={w.rrf_k})" if w.method == "rrf" else "")
        print(_row(label, bench.retriever(bench.sizes(), w), tuning, untuned), flush=True)
    print("\nBM25 title weight (default chunks and fusion):")
    print("\n".join(_header("title boost")))
    for boost in TITLE_SWEEP:
        print(_row(f"{boost:g}", bench.retriever(bench.sizes(), title_boost=boost), tuning, untuned), flush=True)


def relevance_report(bench: Bench, queries: list[EvalQuery], tuning: list[EvalQuery] | None, title: str) -> None:
    """The platform (all configurations, fitted relevance model) beside the baseline, whose cosine
    threshold is chosen on `tuning` (or kept from the hard set's tuning split)."""
    model = load_model()
    platform = bench.retriever(bench.sizes(), relevance_model=model)
    report = evaluate(platform, queries, CONFIGS)
    baseline = bench.baseline()
    threshold = bench.baseline_threshold
    if tuning is not None:
        tuned = evaluate(baseline, tuning, [EvalConfig("baseline", "hybrid")])
        threshold = bench.baseline_threshold = choose_threshold(tuned.per_query["baseline"], tuning)
    base = evaluate(baseline, queries, [EvalConfig("baseline", "hybrid")], min_relevance=threshold)
    for part in ("results", "per_query", "per_kind"):
        getattr(report, part).update(getattr(base, part))
    print(f"\n{title}: {len(queries)} questions ({sum(q.answerable for q in queries)} answerable); relevance "
          f"probability threshold {platform.min_relevance:.3f} (baseline cosine {threshold:.3f})")
    print(format_table(report))
    base_values = report.results["baseline"]
    print("ratio vs baseline: " + "; ".join(
        f"{name} hit@1 x{v['hit@1'] / base_values['hit@1']:.3f} mrr x{v['mrr'] / base_values['mrr']:.3f}"
        for name, v in report.results.items() if name != "baseline"))
    for name, v in report.results.items():
        if name != "baseline":
            record("retrieval_quality", f"{title}: {name} MRR", v["mrr"], "RRF + cosine threshold", base_values["mrr"],
                   "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-sweeps", action="store_true", help="only the default configuration")
    args = parser.parse_args(argv)
    embedder = Embedder("packaged", batch_size=32)
    queries, _ = load_queries(DATA / "retrieval_hard.jsonl")
    tuning, untuned = _split(queries, "tuning"), _split(queries, "untuned")
    with tempfile.TemporaryDirectory(prefix="twin-bench-quality-") as folder:
        bench = Bench(load_corpus(DATA / "retrieval_hard"), embedder, Path(folder) / "hard")
        if not args.no_sweeps:
            sweeps(bench, tuning, untuned)
        relevance_report(bench, tuning, tuning, "hard set, tuning split")
        relevance_report(bench, untuned, None, "hard set, untuned split")
        sample, _ = load_queries(DATA / "retrieval_eval.jsonl")
        unanswerable, _ = load_queries(DATA / "retrieval_eval_unanswerable.jsonl")
        site = Bench(load_site(), embedder, Path(folder) / "sample")
        site.baseline_threshold = bench.baseline_threshold  # the sample set is never tuned on
        relevance_report(site, sample + unanswerable, None, "sample corpus (articles), never tuned on")


if __name__ == "__main__":
    main()
