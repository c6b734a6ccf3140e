"""DAG integrity: every DAG file imports cleanly and quickly, and every DAG is well-formed."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))
IMPORT_BUDGET_S = 2.0


@pytest.fixture(scope="module")
def dag_bag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_there_are_dag_files() -> None:
    assert DAG_FILES, "no DAG files found"


def test_no_import_errors(dag_bag) -> None:
    assert not dag_bag.import_errors, dag_bag.import_errors


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_fast_and_does_no_top_level_work(path: Path) -> None:
    import airflow.sdk  # noqa: F401  (Airflow's own import cost is not the DAG file's)

    spec = importlib.util.spec_from_file_location(f"dagfile_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    started = time.perf_counter()
    spec.loader.exec_module(module)
    elapsed = time.perf_counter() - started
    assert elapsed < IMPORT_BUDGET_S, f"{path.name} took {elapsed:.2f}s to import"


def test_every_dag_has_owner_retries_and_tags(dag_bag) -> None:
    assert dag_bag.dags
    for dag_id, dag in dag_bag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} has no owner"
            if _asks_a_person(task):  # a retry would ask again and double the wait: a timeout stays a timeout
                assert task.retries == 0, f"{dag_id}.{task.task_id} asks a person and must not be retried"
                continue
            assert task.retries is not None and task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"


def _asks_a_person(task) -> bool:
    from airflow.providers.standard.operators.hitl import HITLOperator

    return isinstance(task, HITLOperator)


def test_no_cycles(dag_bag) -> None:
    for dag in dag_bag.dags.values():
        dag.check_cycle()  # raises AirflowDagCycleException on a cycle
