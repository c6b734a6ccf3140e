"""Retrieval evaluation on a labelled query set: recall@5, recall@10, MRR and nDCG@10 per retriever.

Query file (JSONL, one object per line; blank lines are ignored):
    {"id": "q1", "query": "how do I size chunks?", "relevant": ["/blog/chunking", "https://x.org/a"],
     "author": "ada"}
`query` and `relevant` are required; `relevant` lists the documents that answer the query, as URL
paths or full URLs (only the path is compared). For a file inside a repository, the repository's
URL path followed by `/` and the file's path names that one file. `id` (default: the line number)
and `author` are optional. Relevance is judged per document: chunks are reduced to their documents
(first occurrence) before the metrics are computed.

Optional fields for harder sets: `kind` (keyword, paraphrase, author, unanswerable, ...: metrics are
also reported per kind) and `split` (e.g. tuning / untuned: `--split` evaluates one). A question of
kind `unanswerable` has an empty `relevant` list; it counts only in the false-positive rate: the
share of unanswerable questions whose result the relevance threshold still calls answerable. The
false-negative rate is the share of answerable questions it calls unanswerable.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from twin.models import SearchHit
from twin.retrieval.retriever import Mode, Retriever

METRICS = ("hit@1", "recall@5", "recall@10", "mrr", "ndcg@10")
UNANSWERABLE = "unanswerable"
FETCH_CHUNKS = 30  # chunks fetched per query, so that at least 10 distinct documents remain


class EvalFileError(ValueError):
    """The query file cannot be used at all (missing, or no valid line)."""


@dataclass
class EvalQuery:
    id: str
    query: str
    relevant: list[str]
    author: str | None = None
    kind: str | None = None
    split: str | None = None

    @property
    def answerable(self) -> bool:
        return bool(self.relevant)


@dataclass
class EvalConfig:
    name: str
    mode: Mode
    expand: bool = False
    rerank: bool = False
    self_query: bool = False
    aggregate: bool = False


@dataclass
class EvalReport:
    queries: int
    results: dict[str, dict[str, float]] = field(default_factory=dict)  # config → metric → mean
    per_query: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # config → query id → ...
    per_kind: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # config → kind → metric
    notes: list[str] = field(default_factory=list)
    skipped_lines: list[str] = field(default_factory=list)


def load_queries(path: Path) -> tuple[list[EvalQuery], list[str]]:
    """Valid queries, plus a message for each line that was skipped and why."""
    if not path.exists():
        raise EvalFileError(f"query file {path} does not exist")
    queries, problems = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            queries.append(_parse_line(line, number))
        except ValueError as exc:
            problems.append(f"{path.name}:{number}: {exc}")
    if not queries:
        raise EvalFileError(f"no usable query in {path}" + ("".join(f"\n  {p}" for p in problems)))
    return queries, problems


def _parse_line(line: str, number: int) -> EvalQuery:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    query, relevant = data.get("query"), data.get("relevant")
    if not isinstance(query, str) or not query.strip():
        raise ValueError('"query" must be a non-empty string')
    kind = str(data["kind"]) if data.get("kind") else None
    if kind == UNANSWERABLE:
        if relevant not in (None, []):
            raise ValueError('an unanswerable question has an empty "relevant" list')
        relevant = []
    elif not isinstance(relevant, list) or not relevant or not all(isinstance(r, str) and r for r in relevant):
        raise ValueError('"relevant" must be a non-empty list of URL paths or URLs')
    author = data.get("author")
    return EvalQuery(id=str(data.get("id") or f"line{number}"), query=query, relevant=relevant,
                     author=str(author) if author else None, kind=kind,
                     split=str(data["split"]) if data.get("split") else None)


def url_path(url_or_path: str) -> str:
    """The path part, with one leading and no trailing slash ("https://x.org/a/" → "/a")."""
    parsed = urlparse(url_or_path.strip())
    path = parsed.path if parsed.scheme or parsed.netloc else url_or_path.strip().split("?")[0].split("#")[0]
    return "/" + path.strip("/")


def document_keys(hit: SearchHit) -> tuple[str, ...]:
    """The names a relevant item may use for the hit's document: its URL path, and for a file in a
    repository also that path joined with the file's path."""
    base = url_path(hit.chunk.url)
    if hit.chunk.path:
        return (url_path(f"{base}/{hit.chunk.path}"), base)
    return (base,)


def ranked_documents(hits: Sequence[SearchHit]) -> list[tuple[str, ...]]:
    """Documents in order of their best chunk."""
    seen, docs = set(), []
    for hit in hits:
        if hit.chunk.document_id not in seen:
            seen.add(hit.chunk.document_id)
            docs.append(document_keys(hit))
    return docs


def score_ranking(docs: Sequence[tuple[str, ...]], relevant: Sequence[str]) -> dict[str, float]:
    wanted = {url_path(r) for r in relevant}
    found_at: dict[str, int] = {}  # relevant item → first rank (1-based) of a document matching it
    gains: list[float] = []
    for rank, keys in enumerate(docs, start=1):
        new = [key for key in keys if key in wanted and key not in found_at]
        for key in new:
            found_at[key] = rank
        gains.append(1.0 if new else 0.0)  # a second document of an already found item gains nothing
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains[:10]))
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(wanted), 10)))
    first = min(found_at.values(), default=0)
    return {
        "hit@1": 1.0 if first == 1 else 0.0,
        "recall@5": sum(1 for r in found_at.values() if r <= 5) / len(wanted),
        "recall@10": sum(1 for r in found_at.values() if r <= 10) / len(wanted),
        "mrr": 1.0 / first if first else 0.0,
        "ndcg@10": dcg / ideal if ideal else 0.0,
    }


def configurations(retriever: Retriever) -> tuple[list[EvalConfig], list[str]]:
    """BM25, vectors and hybrid, then hybrid with each optional step that can run, and all of them."""
    configs = [EvalConfig("bm25", "bm25"), EvalConfig("vector", "vector"), EvalConfig("hybrid", "hybrid"),
               EvalConfig("hybrid_selfquery", "hybrid", self_query=True),
               EvalConfig("hybrid_docagg", "hybrid", aggregate=True),
               EvalConfig("hybrid_selfquery_docagg", "hybrid", self_query=True, aggregate=True)]
    notes = []
    expand, rerank = retriever.llm is not None, retriever.reranker is not None
    if not expand:
        notes.append("hybrid with query expansion not evaluated: no LLM is configured")
    if not rerank:
        notes.append("hybrid with reranking not evaluated: no reranker is configured (TWIN_RERANKER_MODEL)")
    if expand or rerank:
        name = "hybrid" + ("_expansion" if expand else "") + ("_rerank" if rerank else "")
        configs.append(EvalConfig(name, "hybrid", expand=expand, rerank=rerank))
    return configs, notes


def evaluate(retriever: Retriever, queries: Sequence[EvalQuery], configs: Sequence[EvalConfig] | None = None,
             min_relevance: float | None = None) -> EvalReport:
    """Metrics over the answerable questions, per kind, and the relevance threshold's error rates
    (`min_relevance`, default the retriever's own)."""
    notes: list[str] = []
    if configs is None:
        configs, notes = configurations(retriever)
    threshold = retriever.min_relevance if min_relevance is None else min_relevance
    report = EvalReport(queries=len(queries), notes=notes)
    for config in configs:
        per_query = {}
        for q in queries:
            result = retriever.retrieve(q.query, k=FETCH_CHUNKS, mode=config.mode, self_query=config.self_query,
                                        expand=config.expand, rerank=config.rerank, aggregate=config.aggregate)
            scores = score_ranking(ranked_documents(result.hits), q.relevant) if q.answerable else {}
            if result.relevance is not None:
                scores["relevance"] = result.relevance
                scores["passes"] = 1.0 if result.hits and result.relevance >= threshold else 0.0
                scores.update({f"feature.{name}": value for name, value in result.features.items()})
            per_query[q.id] = scores
        report.per_query[config.name] = per_query
        report.results[config.name] = summarise(queries, per_query)
        kinds = sorted({q.kind or "all" for q in queries if q.answerable})
        report.per_kind[config.name] = {
            kind: summarise([q for q in queries if (q.kind or "all") == kind], per_query) for kind in kinds}
    return report


def summarise(queries: Sequence[EvalQuery], per_query: dict[str, dict[str, float]]) -> dict[str, float]:
    """Means of the metrics over the answerable questions; fp_rate / fn_rate of the threshold."""
    answerable = [per_query[q.id] for q in queries if q.answerable]
    summary = {m: sum(s[m] for s in answerable) / len(answerable) for m in METRICS} if answerable else {}
    unanswerable = [per_query[q.id] for q in queries if not q.answerable]
    if answerable and all("passes" in s for s in answerable):
        summary["fn_rate"] = sum(1 - s["passes"] for s in answerable) / len(answerable)
    if unanswerable and all("passes" in s for s in unanswerable):
        summary["fp_rate"] = sum(s["passes"] for s in unanswerable) / len(unanswerable)
    return summary


def choose_threshold(per_query: dict[str, dict[str, float]], queries: Sequence[EvalQuery]) -> float:
    """The relevance threshold that minimises false positives + false negatives (equal cost) on
    these questions; ties go to the lower threshold, which refuses less."""
    scored = [(per_query[q.id]["relevance"], q.answerable) for q in queries if "relevance" in per_query[q.id]]
    candidates = sorted({round(r, 4) for r, _ in scored})
    if not candidates or all(a for _, a in scored) or not any(a for _, a in scored):
        return 0.0
    def errors(t: float) -> float:
        fp = sum(1 for r, a in scored if not a and r >= t) / sum(1 for _, a in scored if not a)
        fn = sum(1 for r, a in scored if a and r < t) / sum(1 for _, a in scored if a)
        return fp + fn
    return min(candidates, key=lambda t: (errors(t), t))


TABLE_METRICS = (*METRICS, "fp_rate", "fn_rate")


def format_table(report: EvalReport, *, per_kind: bool = True) -> str:
    header = f"{'retriever':<30}" + "".join(f"{m:>11}" for m in TABLE_METRICS)
    lines = [f"retrieval evaluation on {report.queries} queries", header, "-" * len(header)]
    for name, values in report.results.items():
        lines.append(f"{name:<30}" + "".join(_cell(values, m) for m in TABLE_METRICS))
    kinds = {kind for by_kind in report.per_kind.values() for kind in by_kind}
    if per_kind and len(kinds) > 1:
        for name, by_kind in report.per_kind.items():
            for kind, values in by_kind.items():
                lines.append(f"{'  ' + name + ' / ' + kind:<30}" + "".join(_cell(values, m) for m in METRICS))
    return "\n".join(lines)


def _cell(values: dict[str, float], metric: str) -> str:
    return f"{values[metric]:>11.3f}" if metric in values else f"{'-':>11}"


def log_to_mlflow(report: EvalReport, settings: Any, params: dict[str, Any]) -> str:
    """One MLflow run holding every configuration's metrics and the per-query scores; returns its id."""
    import mlflow

    from twin.tracking import tracked_run

    with tracked_run("retrieval-eval", params=params, tags={"twin.task": "retrieval-eval"},
                     settings=settings) as run:
        mlflow.log_metrics({f"{name}.{metric.replace('@', '_at_')}": value
                            for name, values in report.results.items() for metric, value in values.items()})
        mlflow.log_metrics({f"{name}.{kind}.{metric.replace('@', '_at_')}": value
                            for name, by_kind in report.per_kind.items() for kind, values in by_kind.items()
                            for metric, value in values.items()})
        mlflow.log_dict({"results": report.results, "per_kind": report.per_kind, "per_query": report.per_query,
                         "notes": report.notes,
                         "skipped_lines": report.skipped_lines}, "retrieval_eval.json")
        return str(run.info.run_id)
