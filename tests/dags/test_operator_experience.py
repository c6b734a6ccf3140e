"""Operator experience of every DAG: docs with links, tags, owner, retries, timeouts, a failure summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from twin.orchestration import log_failure, operator_links

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
# Every DAG the project ships; a new DAG file must be listed here (and so gets checked).
EXPECTED_DAGS = {"crawl", "etl", "features", "datasets", "training", "canary", "smoke"}


@pytest.fixture(scope="module")
def dags() -> dict:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_DIR))
    assert not bag.import_errors, bag.import_errors
    return bag.dags


def _asks_a_person(task) -> bool:
    from airflow.providers.standard.operators.hitl import HITLOperator

    return isinstance(task, HITLOperator)


def test_every_shipped_dag_is_checked(dags: dict) -> None:
    present = {path.stem for path in DAGS_DIR.glob("*.py") if not path.name.startswith("_")}
    assert EXPECTED_DAGS & present <= set(dags), f"DAGs that failed to load: {(EXPECTED_DAGS & present) - set(dags)}"
    assert set(dags) <= EXPECTED_DAGS, f"unlisted DAGs: {set(dags) - EXPECTED_DAGS}"


def test_every_dag_documents_itself_and_links_to_mlflow_report_and_endpoint(dags: dict) -> None:
    links = operator_links()
    assert len(links) == 3
    for dag_id, dag in dags.items():
        assert dag.doc_md and len(dag.doc_md.strip()) > 80, f"{dag_id} has no real doc_md"
        for name, url in links.items():
            assert url in dag.doc_md, f"{dag_id}: doc_md does not link to {name} ({url})"
        assert dag.tags, f"{dag_id} has no tags"


def test_every_task_has_owner_retries_timeout_and_the_failure_summary(dags: dict) -> None:
    for dag_id, dag in dags.items():
        assert log_failure in _callbacks(dag.on_failure_callback), f"{dag_id}: DAG has no failure summary"
        for task in dag.tasks:
            where = f"{dag_id}.{task.task_id}"
            assert task.owner and task.owner != "airflow", f"{where} has no owner"
            assert task.execution_timeout is not None or _asks_a_person(task), f"{where} has no execution_timeout"
            if not _asks_a_person(task):
                assert task.retries >= 1, f"{where} has no retries"
            assert log_failure in _callbacks(task.on_failure_callback), f"{where} has no failure summary"


def _callbacks(value) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


PROBE_DAG = """
from datetime import datetime

from airflow.sdk import dag, task

from twin.orchestration import task_defaults


@dag(dag_id="operator_failure_probe", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
     default_args=task_defaults(retries=0))
def probe():
    @task
    def broken():
        raise ValueError("the sources file names no link\\nsecond line stays out of the summary")

    broken()


probe()
"""


def test_failed_task_logs_one_clear_summary(airflow_db, tmp_path: Path, capfd: pytest.CaptureFixture,
                                            caplog: pytest.LogCaptureFixture) -> None:
    """A real dag.test() run whose task fails: the shared callback names DAG, task, try, error and links."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    (tmp_path / "probe.py").write_text(PROBE_DAG)
    bag = DagBag(dag_folder=str(tmp_path / "probe.py"))
    assert not bag.import_errors, bag.import_errors
    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(bag, "dags-folder", None)  # dag.test() runs serialized DAGs only
    run = bag.get_dag("operator_failure_probe").test()
    assert str(run.state) == "failed"
    # The record reaches Python logging, or, once Airflow's structlog has taken over, the terminal.
    summaries = [r.getMessage() for r in caplog.records if r.name == "twin.orchestration"]
    if not summaries:
        out, err = capfd.readouterr()
        summaries = [line[line.index("FAILED"):] for line in (out + err).splitlines() if "FAILED task" in line]
    assert len(summaries) == 1, summaries
    summary = summaries[0]
    assert summary.startswith("FAILED task operator_failure_probe.broken (run ")
    assert "try 1 of 1" in summary and "ValueError: the sources file names no link" in summary
    assert "second line" not in summary
    for url in operator_links().values():
        assert url in summary


def test_summary_survives_a_context_without_a_task() -> None:
    assert log_failure({"reason": "task_failure", "run_id": "manual__1"}).startswith("FAILED DAG run ? ")
