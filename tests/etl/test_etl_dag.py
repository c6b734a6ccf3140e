"""The `etl` DAG run with `dag.test()` on the real MongoDB-protocol server: documents, report, Asset, gate."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.etl.conftest import raw_doc, seed_fixture_documents
from twin.etl.report import LATEST_KEY, SITE_PREFIX, latest_quality_report
from twin.settings import get_settings
from twin.storage.artifacts import get_artifact_store
from twin.storage.documents import Collections, DocumentStore

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "etl.py"


@pytest.fixture(scope="module")
def etl_dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag("etl")


def task_states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def report_pages() -> str:
    store = get_artifact_store()
    return "\n".join(store.get_bytes(k).decode() for k in store.list(SITE_PREFIX) if k.endswith(".html"))


def test_dag_cleans_quarantines_publishes_and_announces_once(etl_dag, etl_settings) -> None:
    with DocumentStore.from_settings(etl_settings) as store:
        seeded = seed_fixture_documents(store)
        first = etl_dag.test()
        assert str(first.state) == "success"
        assert task_states(first) == {"clean_and_validate": "success", "publish_quality_report": "success",
                                      "announce_cleaned_documents": "success"}
        assert store.count(Collections.CLEANED_DOCUMENTS) == len(seeded.good) == 6
        assert store.count(Collections.QUARANTINE) == len(seeded.bad) == 7

        # The published report exists and names the expectations that failed.
        latest = latest_quality_report()
        assert latest.run_id == first.run_id and Path(latest.location).is_file()
        pages = report_pages()
        failed = {label for q in store.collection(Collections.QUARANTINE).find() for label in q["failed_expectations"]}
        assert len(failed) == 6
        for label in failed:
            assert label in pages, f"the report does not name {label}"

        # A second run finds nothing new: no document written, no Asset event for downstream DAGs.
        before = {c: list(store.collection(c).find()) for c in (Collections.CLEANED_DOCUMENTS, Collections.QUARANTINE)}
        second = etl_dag.test()
        assert str(second.state) == "success"
        assert task_states(second)["announce_cleaned_documents"] == "skipped"
        assert {c: list(store.collection(c).find()) for c in before} == before
        store.client.drop_database(etl_settings.mongodb_database)


def test_a_gate_breach_fails_the_run_but_still_publishes_the_report(etl_dag, twin_env, monkeypatch) -> None:
    monkeypatch.setenv("TWIN_QUARANTINE_MIN_BATCH", "2")  # judge even this small batch by its share
    get_settings.cache_clear()
    with DocumentStore.from_settings(twin_env) as store:
        store.upsert_raw_documents([raw_doc("https://blog.test/ok", "Good text."), raw_doc("https://blog.test/e", "")])
        run = etl_dag.test()
        assert str(run.state) == "failed"
        assert task_states(run) == {"clean_and_validate": "failed", "publish_quality_report": "success",
                                    "announce_cleaned_documents": "upstream_failed"}
        assert store.count(Collections.QUARANTINE) == 1 and store.count(Collections.CLEANED_DOCUMENTS) == 0
        assert get_artifact_store(get_settings()).exists(LATEST_KEY)
        store.client.drop_database(twin_env.mongodb_database)
