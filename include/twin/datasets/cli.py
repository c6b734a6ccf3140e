"""`twin dataset build | list | show | diff`."""

from __future__ import annotations

import json
from typing import Any

import typer

dataset_app = typer.Typer(help="Build and inspect the fine-tuning datasets (instruction and preference).",
                          no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(dataset_app, name="dataset")


def _versions() -> Any:
    from twin.datasets.versions import DatasetVersions
    from twin.storage.artifacts import get_artifact_store

    return DatasetVersions(get_artifact_store())


def _find(version: str, author: str | None) -> dict[str, Any]:
    from twin.datasets.versions import VersionNotFoundError

    try:
        return _versions().find(version, author)
    except VersionNotFoundError as exc:
        typer.echo(f"twin dataset: {exc}", err=True)
        raise typer.Exit(2) from None


@dataset_app.command("build")
def build(
    author: str | None = typer.Option(None, "--author", help="Author id (default TWIN_AUTHOR; unset: every author)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Most passages per author."),
    mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Log the version to MLflow as dataset inputs."),
    as_json: bool = typer.Option(False, "--json", help="Print each build report as JSON."),
) -> None:
    """Build the datasets of an author: only passages whose replies are not cached are generated."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from twin.datasets.builder import DatasetError, authors_to_build, build_dataset

    try:
        authors = authors_to_build(author)
    except DatasetError as exc:
        typer.echo(f"twin dataset: {exc}", err=True)
        raise typer.Exit(2) from None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    for name in authors:
        with Progress(*columns, transient=True, disable=as_json) as bar:
            tasks: dict[str, Any] = {}

            def progress(stage: str, done: int, total: int, bar: Progress = bar, tasks: dict = tasks,
                         name: str = name) -> None:
                if stage not in tasks:
                    label = "questions" if stage == "instruction" else "rejected answers"
                    tasks[stage] = bar.add_task(f"{name}: generating {label}", total=total)
                bar.update(tasks[stage], completed=done, total=total)

            report = build_dataset(name, limit=limit, progress=progress, track=mlflow)
        _print_report(report, as_json)


def _print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report, default=str))
        return
    state = "new version" if report["changed"] else "unchanged"
    typer.echo(f"{report['author_id']}: dataset {report['version']} ({state}; parent {report['parent_version']})")
    typer.echo(f"  passages {report['passages']}; generated {report['generated']}; cached {report['cached']}")
    for dataset, splits in report["rows"].items():
        typer.echo(f"  {dataset}: train {splits['train']}, test {splits['test']}")
    for dataset, counts in report["filters"].items():
        dropped = {k: v for k, v in counts.items() if v}
        typer.echo(f"  filtered from {dataset}: " + (", ".join(f"{k}={v}" for k, v in dropped.items()) or "none"))
    typer.echo(f"  at {report['location']}" + (f"; MLflow run {report['mlflow_run_id']}"
                                               if report["mlflow_run_id"] else ""))


@dataset_app.command("list")
def list_versions(
    author: str | None = typer.Option(None, "--author", help="Only this author's versions."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per version."),
) -> None:
    """Every dataset version, oldest first; the latest of each author is marked."""
    versions = _versions()
    for manifest in versions.list(author):
        rows = manifest["counts"]["rows"]
        latest = versions.latest(manifest["author_id"]) == manifest["version"]
        summary = {"author_id": manifest["author_id"], "version": manifest["version"],
                   "created_at": manifest["created_at"], "parent_version": manifest["parent_version"],
                   "latest": latest, "rows": rows, "generator": manifest["generator"]["model"]}
        if as_json:
            typer.echo(json.dumps(summary))
            continue
        counts = " ".join(f"{d}={r['train']}/{r['test']}" for d, r in rows.items())
        typer.echo(f"{manifest['author_id']:<20} {manifest['version']}{' *' if latest else '  '} "
                   f"{manifest['created_at'][:19]}  {counts}  (train/test; generator {summary['generator']})")


@dataset_app.command("show")
def show(
    version: str = typer.Argument(..., help="Version (or a unique prefix of it)."),
    author: str | None = typer.Option(None, "--author"),
    samples: int = typer.Option(2, "--samples", min=0, help="Rows shown per dataset."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """A version's counts, filters, lineage and a few sample rows."""
    manifest = _find(version, author)
    if as_json:
        typer.echo(json.dumps(manifest, indent=2))
        return
    typer.echo(f"dataset {manifest['version']} of {manifest['author_id']} (parent {manifest['parent_version']}), "
               f"created {manifest['created_at']}")
    gen, base = manifest["generator"], manifest["base_model"]
    typer.echo(f"  generator: {gen['backend']}:{gen['model']} {gen['revision'][:24]} {gen['sampling']}")
    typer.echo(f"  base model (rejected answers): {base['backend']}:{base['model']}")
    typer.echo("  prompts: " + ", ".join(f"{k} {v[:12]}" for k, v in manifest["prompts"].items()))
    typer.echo(f"  sources: {len(manifest['sources'])} documents, {manifest['counts']['passages']} passages")
    for dataset, splits in manifest["counts"]["rows"].items():
        typer.echo(f"  {dataset}: train {splits['train']}, test {splits['test']}")
    for dataset, counts in manifest["filters"].items():
        typer.echo(f"  filtered from {dataset}: " + (", ".join(f"{k}={v}" for k, v in counts.items() if v) or "none"))
    versions = _versions()
    for dataset, rows in versions.all_rows(manifest["author_id"], manifest["version"]).items():
        for row in rows[:samples]:
            answer = row.get("output") or row["chosen"][0]["content"]
            typer.echo(f"\n  [{dataset}/{row['split']}] Q: {row['instruction']}\n    A: {answer[:160]!r}")
            if dataset == "preference":
                typer.echo(f"    rejected: {row['rejected'][0]['content'][:160]!r}")


@dataset_app.command("diff")
def diff(
    old: str = typer.Argument(..., help="The older version."),
    new: str = typer.Argument(..., help="The newer version."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """What changed between two versions: rows by source passage, filter counts, settings."""
    from twin.datasets.versions import diff_versions

    result = diff_versions(_versions(), _find(old, None), _find(new, None))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"{result['old']} -> {result['new']}")
    for dataset, change in result["datasets"].items():
        typer.echo(f"  {dataset}: rows {change['rows']['old']} -> {change['rows']['new']}; "
                   f"passages added {len(change['added'])}, removed {len(change['removed'])}, "
                   f"changed {len(change['changed'])}")
    for dataset, counts in result["filters"].items():
        for name, n in counts.items():
            typer.echo(f"  filter {dataset}.{name}: {n['old']} -> {n['new']}")
    for key in result["settings"]:
        typer.echo(f"  {key} changed")
