"""`twin search` and `twin eval retrieval`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from twin.models import Author, DocumentKind, SearchFilters, SearchHit

eval_app = typer.Typer(help="Evaluate the platform's parts.", no_args_is_help=True)
# The sample corpus's labelled queries, in the project's tests/data (see the module docs for the format).
SAMPLE_QUERIES = Path(__file__).resolve().parents[3] / "tests" / "data" / "retrieval_eval.jsonl"
SAMPLE_UNANSWERABLE = SAMPLE_QUERIES.with_name("retrieval_eval_unanswerable.jsonl")  # questions it cannot answer


def register(app: typer.Typer) -> None:
    app.command("search")(search)
    app.add_typer(eval_app, name="eval")


def search(
    query: str = typer.Argument(..., help="The question or keywords."),
    author: list[str] = typer.Option(None, "--author", help="Author name or id (repeatable)."),
    kind: list[DocumentKind] = typer.Option(None, "--kind", help="article, code or post (repeatable)."),
    since: datetime | None = typer.Option(None, "--since", help="Only documents published on or after (UTC)."),
    until: datetime | None = typer.Option(None, "--until", help="Only documents published before (UTC)."),
    k: int = typer.Option(10, "-k", min=1, max=200, help="How many results."),
    mode: str = typer.Option("hybrid", "--mode", help="bm25, vector or hybrid."),
    expand: bool = typer.Option(False, "--expand", help="Also search LLM-written rephrasings (needs an LLM)."),
    rerank: bool = typer.Option(False, "--rerank", help="Rerank with TWIN_RERANKER_MODEL."),
    self_query: bool = typer.Option(True, "--self-query/--no-self-query",
                                    help="Turn an author or kind named in the query into a filter."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per result, one per line."),
    context: bool = typer.Option(False, "--context",
                                 help="Print the RAG context of the hits, with citations (TWIN_CONTEXT_MAX_TOKENS)."),
) -> None:
    """Search the index and print the ranked results with the retriever that found each."""
    from twin.retrieval.retriever import MODES, build_retriever

    if mode not in MODES:
        raise typer.BadParameter(f"use one of {', '.join(MODES)}", param_hint="--mode")
    retriever = build_retriever(expand=expand)
    author_ids = [_author_id(a, retriever.self_query.authors) for a in author or []]
    filters = SearchFilters(author_ids=author_ids or None, kinds=list(kind or []) or None,
                            published_after=_utc(since), published_before=_utc(until))
    result = retriever.retrieve(query, k=k, filters=filters, mode=mode,  # type: ignore[arg-type]
                                self_query=self_query, expand=expand, rerank=rerank)
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    if context:
        _print_context(result.hits)
        return
    if as_json:
        for rank, hit in enumerate(result.hits, start=1):
            typer.echo(json.dumps(hit_record(rank, hit), default=str))
        return
    if not result.hits:
        typer.echo("no results")
    for rank, hit in enumerate(result.hits, start=1):
        typer.echo(_hit_text(rank, hit))


def _print_context(hits: list[SearchHit]) -> None:
    from twin.features.embedding import get_embedder
    from twin.retrieval.context import assemble_context
    from twin.settings import get_settings

    built = assemble_context(hits, get_settings().context_max_tokens, get_embedder().count_tokens)
    typer.echo(built.text)
    typer.echo(f"\n{built.citations()}")
    typer.echo(f"\n({built.tokens} tokens; {built.skipped} chunks did not fit the budget)", err=True)


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _author_id(value: str, authors: list[Author]) -> str:
    """An author given by id or name (case-insensitive); unknown ones are an error when authors are known."""
    for a in authors:
        if value == a.id or value.lower() == a.name.lower():
            return a.id
    if authors:
        known = ", ".join(f"{a.name} ({a.id})" for a in authors)
        raise typer.BadParameter(f"unknown author {value!r}; known: {known}", param_hint="--author")
    return value


def hit_record(rank: int, hit: SearchHit) -> dict[str, Any]:
    chunk = hit.chunk
    return {"rank": rank, "score": hit.score, "retriever": hit.retriever, "ranks": hit.ranks,
            "url": chunk.url, "path": chunk.path, "title": chunk.title, "author_id": chunk.author_id,
            "author_name": chunk.author_name, "kind": str(chunk.kind), "published_at": chunk.published_at,
            "document_id": chunk.document_id, "chunk_id": chunk.id, "chunk_index": chunk.chunk_index,
            "text": chunk.text}


def _hit_text(rank: int, hit: SearchHit) -> str:
    chunk = hit.chunk
    found_by = ", ".join(f"{name}#{r}" for name, r in hit.ranks.items())
    snippet = " ".join(chunk.text.split())
    snippet = snippet if len(snippet) <= 160 else snippet[:157] + "..."
    location = chunk.url + (f" :: {chunk.path}" if chunk.path else "")
    return (f"{rank:>2}. {chunk.title or '(untitled)'} — {chunk.author_name} [{chunk.kind}]\n"
            f"    {location}\n"
            f"    score {hit.score:.4f} via {hit.retriever} ({found_by})\n"
            f"    {snippet}")


@eval_app.command("retrieval")
def eval_retrieval(
    queries: list[Path] = typer.Option([SAMPLE_QUERIES, SAMPLE_UNANSWERABLE], "--queries",
                                       help="Labelled queries (JSONL, see README; repeatable)."),
    corpus: Path | None = typer.Option(None, "--corpus",
                                       help="Index this labelled corpus folder (<author>/<slug>.md) on its own "
                                            "and evaluate on it, beside the plain baseline, instead of the "
                                            "configured index."),
    sample_site: bool = typer.Option(False, "--sample-site",
                                     help="Index the bundled sample site's articles on their own and evaluate "
                                          "on them, beside the plain baseline, instead of the configured index."),
    split: str | None = typer.Option(None, "--split", help="Only the questions of this split (e.g. untuned)."),
    mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Log the metrics to MLflow."),
    expand: bool = typer.Option(False, "--expand",
                                help="Also score hybrid with query expansion and with self-query by the LLM "
                                     "client (TWIN_LLM_*; slow on a CPU)."),
) -> None:
    """Print hit@1, recall@5, recall@10, MRR and nDCG@10 (overall and per question kind) for BM25,
    vectors, hybrid and hybrid with each optional step, and the relevance threshold's false-positive
    (unanswerable) and false-negative (answerable) rates; log them to MLflow."""
    from twin.retrieval.evaluation import EvalFileError, evaluate, format_table, load_queries, log_to_mlflow
    from twin.retrieval.retriever import build_retriever
    from twin.settings import get_settings

    loaded, skipped = [], []
    for path in queries:
        try:
            file_queries, file_skipped = load_queries(path)
        except EvalFileError as exc:
            typer.echo(f"twin: {exc}", err=True)
            raise typer.Exit(2) from None
        loaded += file_queries
        skipped += file_skipped
    for problem in skipped:
        typer.echo(f"skipped {problem}", err=True)
    tuning = [q for q in loaded if q.split == "tuning"]  # where the baseline's threshold is chosen
    if split is not None:
        loaded = [q for q in loaded if q.split == split]
        if not loaded:
            typer.echo(f"twin: no question of split {split!r} in {', '.join(map(str, queries))}", err=True)
            raise typer.Exit(2)
    settings = get_settings()
    if corpus is not None or sample_site:
        report = _evaluate_corpus(corpus, loaded, settings, expand, tuning)
    else:
        report = evaluate(build_retriever(settings, expand=expand), loaded)
    report.skipped_lines = skipped
    typer.echo(format_table(report))
    for note in report.notes:
        typer.echo(f"note: {note}")
    if not mlflow:
        return
    params = {"queries_file": ",".join(p.name for p in queries), "queries": len(loaded), "index": settings.index_name,
              "search_backend": settings.search_backend, "embedding_model": settings.embedding_model,
              "fusion": settings.hybrid_fusion, "bm25_weight": settings.hybrid_bm25_weight,
              "vector_weight": settings.hybrid_vector_weight, "chunk_tokens": settings.chunk_tokens,
              "reranker": settings.reranker_model or "none", "split": split or "all",
              "corpus": corpus.name if corpus else "sample-site" if sample_site else "index",
              "min_relevance": "model" if settings.retrieval_min_relevance is None
              else settings.retrieval_min_relevance,
              "aggregate_weight": settings.retrieval_aggregate_weight, "expand": expand,
              "llm": f"{settings.llm_backend}:{settings.llm_model}" if expand or settings.self_query_llm else "none"}
    try:
        run_id = log_to_mlflow(report, settings, params)
    except Exception as exc:  # the table is printed already; say clearly what did not happen
        typer.echo(f"twin: could not log to MLflow at {settings.resolved_mlflow_uri}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"logged to MLflow run {run_id} at {settings.resolved_mlflow_uri}")


def _evaluate_corpus(folder: Path | None, queries: list[Any], settings: Any, expand: bool = False,
                     tuning: list[Any] | None = None) -> Any:
    """A labelled corpus folder, or (None) the bundled sample site's articles, indexed on its own;
    with `expand` also hybrid with LLM query expansion and with LLM self-query (TWIN_LLM_*). The baseline's
    cosine threshold is chosen on the `tuning` questions when there are any."""
    from twin.features.embedding import get_embedder
    from twin.features.pipeline import chunk_sizes
    from twin.retrieval.labelled import CorpusError, evaluate_corpus, load_corpus, load_site
    from twin.retrieval.relevance import load_model
    from twin.retrieval.retriever import weights_from_settings

    try:
        corpus = load_corpus(folder) if folder is not None else load_site()
    except CorpusError as exc:
        typer.echo(f"twin: {exc}", err=True)
        raise typer.Exit(2) from None
    embedder = get_embedder(settings)
    return evaluate_corpus(corpus, queries, embedder, sizes=chunk_sizes(settings, embedder),
                           weights=weights_from_settings(settings), min_relevance=settings.retrieval_min_relevance,
                           relevance_model=load_model(), llm=_llm(settings) if expand else None,
                           baseline_tuning=tuning or ())


def _llm(settings: Any) -> Any:
    from twin.llm import get_llm_client

    return get_llm_client(settings)
