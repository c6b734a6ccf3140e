"""`twin model canary status|set|clear`: the canary of one author's twin from the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

canary_app = typer.Typer(help="Canary: a challenger beside the champion on a share of live traffic.",
                         no_args_is_help=True)

AUTHOR = typer.Option(None, "--author", help="whose twin (default TWIN_AUTHOR)")


def _author(author: str | None) -> str:
    from twin.settings import get_settings

    name = author or get_settings().author
    if not name:
        typer.echo("twin model canary: name an author with --author or TWIN_AUTHOR", err=True)
        raise typer.Exit(2)
    return name


def _fail(exc: Exception) -> None:
    typer.echo(f"twin model canary: {exc}", err=True)
    raise typer.Exit(1)


def _parts():
    from twin.canary.store import CanaryStore
    from twin.registry import ModelRegistry
    from twin.settings import get_settings

    settings = get_settings()
    return settings, CanaryStore.from_settings(settings), ModelRegistry(settings)


def _cell(value: object, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


@canary_app.command("status")
def status(author: str | None = AUTHOR,
           plot: Path | None = typer.Option(None, "--plot", help="PNG to write (default: the artifacts folder)"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Champion and challenger side by side, the tests' p-values, the decision the DAG would take, a plot."""
    from twin.canary.apply import evaluate
    from twin.canary.plot import plot_canary
    from twin.registry import RegistryError

    name = _author(author)
    settings, store, registry = _parts()
    try:
        canary = evaluate(store, registry, settings, name)
    except RegistryError as exc:
        _fail(exc)
    config = store.config(name)
    if canary is None:
        last = f" (last challenger: version {config.challenger_version})" if config.challenger_version else ""
        typer.echo(json.dumps({"author": name, "active": False}) if as_json else f"{name}: no active canary{last}")
        return
    d = canary.decision
    since = min((r.at for r in store.requests(name) if r.version == d.challenger.version), default=None)
    requests = store.requests(name, since=since)
    out = plot or settings.artifacts_dir / "canary" / f"{name}-v{d.challenger.version}.png"
    plot_canary(requests, store.feedback(name, since=since), out,
                title=f"twin-{name}: champion v{d.champion.version} vs challenger v{d.challenger.version}")
    if as_json:
        typer.echo(json.dumps({"author": name, "active": True, "share": config.share, "sticky": config.sticky,
                               "champion": d.champion.summary(), "challenger": d.challenger.summary(),
                               "p_values": d.p_values, "decision": d.action.value, "reason": d.reason,
                               "plot": str(out)}))
        return
    typer.echo(f"canary of twin-{name}: challenger v{d.challenger.version} on {config.share:.0%} of traffic "
               f"({'sticky' if config.sticky else 'not sticky'}; set by {config.updated_by or '-'})")
    typer.echo(f"{'':<14}{'champion v' + d.champion.version:>18}{'challenger v' + d.challenger.version:>18}")
    rows = [("requests", "requests", "d"), ("error rate", "error_rate", ".2%"), ("p50 ms", "p50_ms", ".0f"),
            ("p95 ms", "p95_ms", ".0f"), ("ratings", "ratings", "d"), ("feedback", "feedback_mean", "+.2f")]
    champion, challenger = d.champion.summary(), d.challenger.summary()
    for label, key, fmt in rows:
        typer.echo(f"{label:<14}{_cell(champion[key], fmt):>18}{_cell(challenger[key], fmt):>18}")
    typer.echo("p-values (one-sided): " + (", ".join(f"{k}={v:.3g}" for k, v in d.p_values.items()) or "-"))
    if "feedback_noninferior" not in d.p_values:
        typer.echo(f"feedback not compared yet: {len(d.champion.ratings)} and {len(d.challenger.ratings)} ratings, "
                   f"{settings.canary_min_feedback} needed each (TWIN_CANARY_MIN_FEEDBACK)")
    typer.echo(f"decision now: {d.action.value}: {d.reason}")
    typer.echo(f"plot: {out}")


@canary_app.command("set")
def set_canary(version: str = typer.Option(..., "--version", help="the challenger version"),
               share: float = typer.Option(..., "--share", min=0.0, max=1.0, help="share of traffic, 0..1"),
               author: str | None = AUTHOR,
               sticky: bool = typer.Option(True, "--sticky/--no-sticky", help="same client key -> same version"),
               by: str | None = typer.Option(None, "--by", help="who sets it (default: the login name)")) -> None:
    """Send SHARE of the author's traffic to VERSION (approved, or at least passed the gate)."""
    from twin.canary.apply import CanaryError, start
    from twin.registry import RegistryError, default_user

    name = _author(author)
    _, store, registry = _parts()
    try:
        config = start(store, registry, name, version, share=share, sticky=sticky, by=by or default_user())
    except (CanaryError, RegistryError) as exc:
        _fail(exc)
    approval = registry.get(name, version).approval or "unset"
    typer.echo(f"canary of twin-{name}: version {config.challenger_version} on {config.share:.0%} of traffic "
               f"(sticky={config.sticky}); approval={approval}"
               + ("" if approval == "approved" else ": promotion waits for `twin model approve`"))


@canary_app.command("clear")
def clear_canary(author: str | None = AUTHOR, by: str | None = typer.Option(None, "--by")) -> None:
    """Stop the canary: every request goes to the champion."""
    from twin.canary.apply import clear
    from twin.registry import default_user

    name = _author(author)
    _, store, _ = _parts()
    config = clear(store, name, by=by or default_user())
    typer.echo(f"canary of twin-{name} cleared (was version {config.challenger_version or '-'}): "
               "all traffic goes to the champion")
