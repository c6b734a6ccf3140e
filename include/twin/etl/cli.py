"""`twin etl run` and `twin quality report` (mounted by twin.cli)."""

from __future__ import annotations

import typer

quality_app = typer.Typer(help="Data-quality reports (Great Expectations Data Docs).", no_args_is_help=True)
etl_app = typer.Typer(help="Clean and validate raw documents.", no_args_is_help=True)


@quality_app.command("report")
def quality_report() -> None:
    """Print where the latest published data-quality report is."""
    from twin.etl.report import NoReportError, etl_run_summary, latest_quality_report

    try:
        report = latest_quality_report()
    except NoReportError as exc:
        typer.echo(f"twin: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(report.location)
    typer.echo(f"(run {report.run_id}, published {report.published_at:%Y-%m-%d %H:%M:%S} UTC)", err=True)
    for line in etl_run_summary(report.etl_run) if report.etl_run else []:
        typer.echo(line, err=True)


@etl_app.command("run")
def etl_run() -> None:
    """Run the ETL once outside Airflow (same library call as the `etl` DAG) and publish the report."""
    from twin.etl.pipeline import QualityGateError, run_etl
    from twin.etl.report import publish_quality_report
    from twin.models import utcnow

    run_id = f"cli-{utcnow():%Y%m%dT%H%M%S}"
    try:
        report = run_etl(run_id)
    except QualityGateError as exc:
        typer.echo(f"twin: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        publish_quality_report(run_id)
    typer.echo(report.model_dump_json(indent=2))


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    app.add_typer(etl_app, name="etl")
    app.add_typer(quality_app, name="quality")
