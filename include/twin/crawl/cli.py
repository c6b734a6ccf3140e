"""`twin crawl`: crawl one link (or every link of the sources file) with a progress display."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    app.command("crawl")(crawl)


def crawl(
    target: str | None = typer.Argument(None, help="URL or local path; omit to crawl the sources file."),
    author: str | None = typer.Option(None, "--author", help="Author's name (required with a target)."),
    author_id: str | None = typer.Option(None, "--author-id", help="Author id (default: from the name)."),
    kind: str | None = typer.Option(None, "--kind", help="article, feed, repository, export, or a custom crawler."),
    sources: Path | None = typer.Option(None, "--sources", help="Sources YAML (default: TWIN_SOURCES_FILE)."),
) -> None:
    """Crawl a link into the document store, then print a summary. Exits 1 if any link failed."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from twin.crawl.errors import SourcesError
    from twin.crawl.pipeline import crawl_links, load_links, new_run_id
    from twin.crawl.sources import Link, link_for

    console = Console()
    run_id = new_run_id()
    if target is not None:
        if not author:
            raise typer.BadParameter("--author is required when crawling one link", param_hint="--author")
        links = [link_for(target, author, author_id=author_id, kind=kind)]
    else:
        try:
            links = [Link.model_validate(d) for d in load_links(run_id, sources)]
        except SourcesError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True) as progress:
        task = progress.add_task(f"crawling {len(links)} link(s)", total=len(links))

        def advance(outcome: dict[str, Any]) -> None:
            progress.update(task, advance=1, description=f"done {outcome['link']}")

        run = crawl_links(links, run_id, on_outcome=advance)
    console.print(_summary(run))
    for outcome in run.outcomes:
        if outcome.reason:
            console.print(f"[red]failed[/red] {outcome.link}: {outcome.reason}", soft_wrap=True)
        for failure in outcome.failures:
            console.print(f"[yellow]item failed[/yellow] {failure['item']}: {failure['reason']}", soft_wrap=True)
    if any(o.status == "failed" for o in run.outcomes):
        raise typer.Exit(1)


def _summary(run: Any) -> Any:
    from rich.table import Table

    table = Table(title=f"crawl run {run.id}")
    table.add_column("link", overflow="fold")
    for column in ("status", "new", "updated", "unchanged", "failed items"):
        table.add_column(column, no_wrap=True)
    for o in run.outcomes:
        colour = {"stored": "green", "unchanged": "blue", "failed": "red"}[o.status]
        table.add_row(o.link, f"[{colour}]{o.status}[/{colour}]", str(o.inserted), str(o.updated), str(o.unchanged),
                      str(o.failed))
    return table
