"""`twin stack up|status|down`: the local stack on 127.0.0.1."""

from __future__ import annotations

import typer

from twin.settings import get_settings
from twin.stack.process import StackError
from twin.stack.stack import ComponentStatus, Stack

stack_app = typer.Typer(help="Start, check and stop the local stack (PostgreSQL, Mongo, MLflow, Airflow, Ray).",
                        no_args_is_help=True)

ONLY_HELP = "Comma-separated components (postgres, mongo, mlflow, airflow, ray, ...); what they need comes too."


def _only(value: str | None) -> list[str] | None:
    return [part for part in value.split(",") if part.strip()] if value else None


def _fail(exc: StackError) -> typer.Exit:
    typer.echo(f"twin stack: {exc}", err=True)
    return typer.Exit(1)


def format_table(rows: list[ComponentStatus]) -> str:
    header = ("component", "pid", "url / port", "healthy")
    lines = [header, *[(r.name, str(r.pid or "-"), r.url, r.state) for r in rows]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def _print_status(stack: Stack, rows: list[ComponentStatus]) -> None:
    typer.echo(format_table(rows))
    api = next((r for r in rows if r.name == "airflow-api-server" and r.pid), None)
    if api is not None:
        user, password = stack.airflow_credentials()
        typer.echo(f"\nAirflow UI: {api.url}  user: {user}  password: {password or '(not generated yet)'}")


@stack_app.command("up")
def up(only: str | None = typer.Option(None, "--only", help=ONLY_HELP)) -> None:
    """Start what is not running (in dependency order) and wait until it is healthy."""
    stack = Stack(get_settings())
    try:
        results = stack.up(_only(only), progress=typer.echo)
    except StackError as exc:
        raise _fail(exc) from None
    typer.echo("")
    _print_status(stack, stack.status([r.name for r in results]))


@stack_app.command("status")
def status(only: str | None = typer.Option(None, "--only", help=ONLY_HELP)) -> None:
    """Print each component's PID, address and health; exit 1 if an expected one is not healthy."""
    stack = Stack(get_settings())
    try:
        names = _only(only) or stack.expected() or stack.names()
        rows = stack.status(names)
    except StackError as exc:
        raise _fail(exc) from None
    _print_status(stack, rows)
    if not all(r.healthy for r in rows):
        raise typer.Exit(1)


@stack_app.command("down")
def down(only: str | None = typer.Option(None, "--only", help=ONLY_HELP)) -> None:
    """Stop in reverse order (with whatever depends on it), SIGTERM then SIGKILL; remove PID files."""
    stack = Stack(get_settings())
    try:
        stopped = stack.down(_only(only), progress=typer.echo)
    except StackError as exc:
        raise _fail(exc) from None
    typer.echo(f"stopped {len(stopped)} component(s)" if stopped else "nothing was running")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    app.add_typer(stack_app, name="stack")
