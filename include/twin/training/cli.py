"""`twin model list|approve|reject|rollback|evaluate` and `twin train`: the registry from the command line."""

from __future__ import annotations

import json

import typer

model_app = typer.Typer(help="Registered twin versions: list, approve, reject, roll back.", no_args_is_help=True)

AUTHOR = typer.Option(None, "--author", help="whose twin (default TWIN_AUTHOR)")


def register(app: typer.Typer) -> None:
    from twin.canary.cli import canary_app

    model_app.add_typer(canary_app, name="canary")
    app.add_typer(model_app, name="model")
    app.command("train")(train)


def _author(author: str | None) -> str:
    from twin.settings import get_settings

    name = author or get_settings().author
    if not name:
        typer.echo("twin model: name an author with --author or TWIN_AUTHOR", err=True)
        raise typer.Exit(2)
    return name


def _registry():
    from twin.registry import ModelRegistry
    from twin.settings import get_settings

    return ModelRegistry(get_settings())


def _fail(exc: Exception) -> None:
    typer.echo(f"twin model: {exc}", err=True)
    raise typer.Exit(1)


@model_app.command("list")
def list_versions(author: str | None = AUTHOR, as_json: bool = typer.Option(False, "--json")) -> None:
    """Every version: aliases, approval state, gate and evaluation figures."""
    name = _author(author)
    versions = _registry().list(name)
    if as_json:
        typer.echo(json.dumps([v.__dict__ for v in versions], default=str))
        return
    if not versions:
        typer.echo(f"twin-{name} has no versions yet")
        return
    typer.echo(f"{'version':>7}  {'aliases':<28} {'approval':<9} {'gate':<7} {'style':>7} {'base':>7} "
               f"{'author%':>7} {'ppl':>7}  dataset")
    for v in versions:
        m = v.metrics
        typer.echo(f"{v.version:>7}  {','.join(v.aliases) or '-':<28} {v.approval or '-':<9} "
                   f"{v.tags.get('gate', '-'):<7} {m.get('style', '-'):>7} {m.get('style_base', '-'):>7} "
                   f"{m.get('authorship', '-'):>7} {m.get('perplexity', '-'):>7}  {v.tags.get('dataset_version', '-')}")


@model_app.command("approve")
def approve(version: str, author: str | None = AUTHOR, reason: str = typer.Option("", "--reason"),
            by: str | None = typer.Option(None, "--by", help="who approves (default: the login name)")) -> None:
    """Make VERSION the champion (the current one becomes previous-champion)."""
    from twin.registry import RegistryError

    try:
        info = _registry().approve(_author(author), version, by=by, source="cli", reason=reason)
    except RegistryError as exc:
        _fail(exc)
    typer.echo(f"version {info.version} approved by {info.tags['approved_by']}: now {', '.join(info.aliases)}")


@model_app.command("reject")
def reject(version: str, reason: str = typer.Option(..., "--reason", help="why (kept on the version)"),
           author: str | None = AUTHOR, by: str | None = typer.Option(None, "--by")) -> None:
    """Reject VERSION: it loses the challenger alias and can never be approved."""
    from twin.registry import RegistryError

    try:
        info = _registry().reject(_author(author), version, reason=reason, by=by, source="cli")
    except RegistryError as exc:
        _fail(exc)
    typer.echo(f"version {info.version} rejected by {info.tags['rejected_by']}: {reason}")


@model_app.command("rollback")
def rollback(author: str | None = AUTHOR, reason: str = typer.Option("", "--reason"),
             by: str | None = typer.Option(None, "--by")) -> None:
    """Make the previous champion the champion again."""
    from twin.registry import RegistryError

    try:
        info = _registry().rollback(_author(author), by=by, reason=reason, source="cli")
    except RegistryError as exc:
        _fail(exc)
    typer.echo(f"champion is version {info.version} again")


@model_app.command("evaluate")
def evaluate(version: str, author: str | None = AUTHOR) -> None:
    """Evaluate VERSION on the held-out set beside the base model (and champion), and gate it."""
    from twin.evaluation.gate import evaluate_and_gate
    from twin.settings import get_settings

    report = evaluate_and_gate(get_settings(), _author(author), version)
    typer.echo(json.dumps({k: report[k] for k in ("version", "gate", "reasons", "perplexity", "style",
                                                  "style_gain_over_base", "authorship")}, indent=2))


def train(config: str = typer.Option("training/config.yaml", "--config"), author: str | None = AUTHOR,
          run_name: str | None = typer.Option(None, "--run-name")) -> None:
    """Train in this process (no launcher): SFT (+DPO), register, evaluate and gate."""
    from pathlib import Path

    from twin.settings import get_settings
    from twin.training.config import TrainingConfig
    from twin.training.trainer import run_training

    path = Path(config)
    overrides = {"author": _author(author), "run_name": run_name}
    cfg = TrainingConfig.from_yaml(path, **overrides) if path.is_file() else TrainingConfig(**overrides)
    result = run_training(cfg, get_settings())
    typer.echo(json.dumps(result.as_dict(), default=str, indent=2))
