"""MLflow tracking: one place that points the client at the configured server."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from twin.settings import Settings, get_settings


def configure_mlflow(settings: Settings | None = None, experiment: str | None = None) -> str:
    """Point MLflow at the tracking server and select the experiment; returns the tracking URI."""
    import mlflow

    settings = settings or get_settings()
    uri = settings.resolved_mlflow_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment or settings.mlflow_experiment)
    return uri


@contextmanager
def tracked_run(
    run_name: str,
    *,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    experiment: str | None = None,
    settings: Settings | None = None,
) -> Iterator[Any]:
    """An MLflow run with params and tags logged up front; yields the active run."""
    import mlflow

    configure_mlflow(settings, experiment)
    with mlflow.start_run(run_name=run_name, tags=dict(tags or {})) as run:
        if params:
            mlflow.log_params(dict(params))
        yield run
