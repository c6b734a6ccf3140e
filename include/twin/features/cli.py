"""`twin features run`, `twin index rebuild`, plus the retrieval commands (`twin search`, `twin eval retrieval`)."""

from __future__ import annotations

import json
from typing import Any

import typer

features_app = typer.Typer(help="Chunk, embed and index cleaned documents.", no_args_is_help=True)
index_app = typer.Typer(help="Manage the search index.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    from twin.retrieval.cli import register as register_retrieval

    app.add_typer(features_app, name="features")
    app.add_typer(index_app, name="index")
    register_retrieval(app)


def _print_report(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary, default=str))
        return
    keys = ("considered", "indexed", "unchanged", "removed", "chunks_written", "chunks_deleted")
    typer.echo(f"features {summary['mode']}: " + ", ".join(f"{k}={summary[k]}" for k in keys))
    for doc_id, reason in summary["failures"].items():
        typer.echo(f"  not indexed {doc_id}: {reason}", err=True)


@features_app.command("run")
def run(as_json: bool = typer.Option(False, "--json", help="Print the run report as JSON.")) -> None:
    """Index the documents cleaned since the last run (incremental). Exits 1 if a document failed."""
    from twin.features.pipeline import run_features

    summary = run_features()
    _print_report(summary, as_json)
    if summary["failures"]:
        raise typer.Exit(1)


@index_app.command("rebuild")
def rebuild(as_json: bool = typer.Option(False, "--json", help="Print the run report as JSON.")) -> None:
    """Rebuild the whole index beside the live one, then swap the alias (readers never see a partial index)."""
    from twin.features.pipeline import rebuild_index

    summary = rebuild_index()
    _print_report(summary, as_json)
    if summary["failures"]:
        raise typer.Exit(1)
