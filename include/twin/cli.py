"""The `twin` command. Each area owns its sub-commands in its own module; this file only mounts them."""

from __future__ import annotations

import contextlib
import os

import typer

from twin.crawl.cli import register as register_crawl
from twin.datasets.cli import register as register_datasets
from twin.etl.cli import register as register_etl
from twin.features.cli import register as register_features
from twin.lineage import register as register_lineage
from twin.serving.cli import register as register_serving
from twin.settings import SettingsError
from twin.stack.cli import register as register_stack
from twin.training.cli import register as register_training

app = typer.Typer(help="LLM twin platform: crawl, clean, index and serve one person's writing.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

@app.callback()
def root() -> None:
    """LLM twin platform. Settings come from the environment and `.env` (see README)."""


@app.command("config")
def show_config(
    output: str = typer.Option("values", "--format", help="values (resolved), env (.env.example) or markdown"),
) -> None:
    """Print the resolved settings (secrets masked), or every variable documented as .env or markdown."""
    from twin.settings import documented_variables, get_settings, render_env_example, render_markdown_table

    if output == "env":
        typer.echo(render_env_example(), nl=False)
        return
    if output == "markdown":
        typer.echo(render_markdown_table(), nl=False)
        return
    from twin.masking import masked_value

    settings = get_settings()
    for variable, field in sorted(documented_variables().items()):
        typer.echo(f"{variable}={masked_value(field, getattr(settings, field))}")


@app.command("demo")
def demo() -> None:
    """Run the whole platform end to end on the bundled sample corpus (starts the local stack)."""
    from twin.demo.runner import DemoError, run_demo

    try:
        run_demo()
    except DemoError as exc:
        typer.echo(f"twin demo: {exc}", err=True)
        raise typer.Exit(1) from None


for register in (register_stack, register_crawl, register_etl, register_features, register_datasets,
                 register_training, register_serving, register_lineage):
    register(app)


def main() -> None:
    # Model-loading progress bars would drown the command's own output.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from pymongo.errors import ConnectionFailure

    from twin import masking
    from twin.settings import get_settings

    # Secrets of the environment are masked in every log line and traceback from here on.
    masking.install()
    with contextlib.suppress(SettingsError):  # commands that need settings report the problem themselves
        masking.SECRETS.add_from_settings(get_settings())
    try:
        app()
    except SettingsError as exc:
        typer.echo(f"twin: {masking.mask(str(exc))}", err=True)
        raise SystemExit(2) from None
    except ConnectionFailure as exc:
        typer.echo(f"twin: {document_store_unreachable(get_settings().resolved_mongodb_uri, exc)}", err=True)
        raise SystemExit(3) from None


def document_store_unreachable(uri: str, exc: Exception) -> str:
    """The message for an unreachable document store: where it was looked for, password masked."""
    from twin.masking import mask

    return (f"cannot reach the document store at {mask(uri)} (MONGODB_URI): {exc.__class__.__name__}.\n"
            "Start the local stack with `twin stack up`, or set MONGODB_URI.")
