"""Names shared by the DAGs, the local stack and the library: Assets, pools, DAG ids.

Kept free of Airflow imports so that the library and CLI load without it.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

# Asset names: a producer DAG updates one, a consumer DAG is scheduled on it.
RAW_DOCUMENTS_ASSET = "raw_documents"
CLEANED_DOCUMENTS_ASSET = "cleaned_documents"
CHUNKS_ASSET = "chunks"
DATASETS_ASSET = "datasets"  # a new fine-tuning dataset version (extra: author, version)
MODELS_ASSET = "models"  # a twin version became champion (extra: author, version)

# Airflow pool that caps concurrent fetches of the crawl DAG; `twin stack up` creates it.
CRAWL_POOL = "crawl_fetch"

DEFAULT_OWNER = "twin"

# --- operator experience: what every DAG shares ---------------------------------------------------
# Kept here (not in each DAG file) so that every DAG gets the same owner, retries, timeout, failure
# summary and links; dags/*.py only state what differs.

QUALITY_REPORT_PATH = "/twin-quality/index.html"  # served by plugins/twin_quality.py inside the Airflow UI
DEFAULT_TASK_TIMEOUT = timedelta(hours=1)

log = logging.getLogger("twin.orchestration")


def operator_links(settings: Any = None) -> dict[str, str]:
    """Where an operator looks next: MLflow, the data-quality report, the served endpoint (from settings)."""
    if settings is None:
        from twin.settings import get_settings

        settings = get_settings()
    airflow = f"http://{settings.host}:{settings.airflow_port}"
    return {
        "MLflow (runs, registry, traces)": settings.resolved_mlflow_uri,
        "Data-quality report": f"{airflow}{QUALITY_REPORT_PATH}",
        "Served endpoint (Ray Serve)": f"http://{settings.host}:{settings.serve_port}/",
    }


def dag_doc(doc: str, settings: Any = None) -> str:
    """A DAG's doc_md followed by the operator links, so each DAG page in the UI links to the rest."""
    links = "\n".join(f"- **{name}:** <{url}>" for name, url in operator_links(settings).items())
    return f"{doc.rstrip()}\n\n#### Where to look\n\n{links}\n\nFailures log one summary line per task " \
           "(`twin.orchestration`: DAG, task, try, error, log URL).\n"


def failure_summary(context: dict[str, Any]) -> str:
    """One readable paragraph for a failed task or DAG run: what failed, which try, why, where to look."""
    ti = context.get("ti") or context.get("task_instance")
    run = context.get("dag_run")
    dag_id = getattr(ti, "dag_id", None) or getattr(run, "dag_id", None) or "?"
    run_id = getattr(ti, "run_id", None) or getattr(run, "run_id", None) or context.get("run_id", "?")
    error = context.get("exception") or context.get("reason") or "no exception recorded"
    if isinstance(error, BaseException):
        error = f"{type(error).__name__}: {error}"
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else "no message"
    if ti is not None:
        what = f"task {dag_id}.{ti.task_id}"
        if getattr(ti, "map_index", -1) not in (-1, None):
            what += f"[{ti.map_index}]"
        tries = f"try {ti.try_number} of {(ti.max_tries or 0) + 1}"
        where = getattr(ti, "log_url", None) or "the task log"
    else:
        what, tries, where = f"DAG run {dag_id}", "run failed", "the DAG run's grid view"
    links = "; ".join(f"{name}: {url}" for name, url in operator_links().items())
    return f"FAILED {what} (run {run_id}, {tries}): {first_line[:500]} | log: {where} | {links}"


def log_failure(context: dict[str, Any]) -> str:
    """on_failure_callback of every task and DAG: logs the summary (never raises: it must not mask the error)."""
    try:
        summary = failure_summary(context)
    except Exception as exc:  # a broken summary must not hide the task's own failure
        summary = f"FAILED (summary unavailable: {exc!r})"
    log.error(summary)
    return summary


def authors_in_dataset_events(extras: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """(author, dataset version) of every author the `datasets` Asset events name, in the order first named;
    a later event's version wins. An event names its changed "author/version" pairs, or one author."""
    found: dict[str, str | None] = {}
    for extra in extras:
        named = extra.get("changed") or ([f"{extra['author']}/{extra.get('version') or ''}"] if extra.get("author")
                                         else [])
        for entry in named:
            author, _, version = str(entry).partition("/")
            if author:
                found[author] = version or None
    return list(found.items())


def task_defaults(*, retries: int = 2, retry_delay: timedelta = timedelta(minutes=1),
                 execution_timeout: timedelta = DEFAULT_TASK_TIMEOUT, **extra: Any) -> dict[str, Any]:
    """Default task arguments of every DAG: owner, retries, a timeout and the failure summary."""
    return {"owner": DEFAULT_OWNER, "retries": retries, "retry_delay": retry_delay,
            "execution_timeout": execution_timeout, "on_failure_callback": log_failure, **extra}
