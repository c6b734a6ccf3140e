"""`twin demo` end to end: the local stack, the sample corpus, and every DAG run by the real
scheduler (crawl -> Asset -> etl -> Asset -> features); a second run changes nothing."""

from __future__ import annotations

import io
import os

import pytest
from rich.console import Console

from twin.airflow_client import AirflowClient
from twin.datasets.versions import DatasetVersions
from twin.demo import article_paths
from twin.demo.runner import DEMO_AUTHOR, DEMO_DATASET_PASSAGES, DemoPaths, run_demo
from twin.features.pipeline import MANIFEST
from twin.models import DocumentKind
from twin.search.factory import get_search_index
from twin.settings import get_settings
from twin.stack import Stack
from twin.storage.artifacts import get_artifact_store
from twin.storage.documents import Collections, DocumentStore


def counts(store: DocumentStore) -> dict[str, int]:
    return {name: store.count(name) for name in Collections}


@pytest.mark.slow
@pytest.mark.e2e
def test_demo_runs_every_pipeline_through_the_scheduler_and_a_rerun_changes_nothing(
    stack_env: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWIN_SOURCES_FILE", str(DemoPaths(stack_env.settings.data_dir / "demo").sources))
    # run_demo sets these for the stack it starts; set here, they are restored after the test.
    monkeypatch.setenv("TWIN_AUTHOR", DEMO_AUTHOR)
    monkeypatch.setenv("TWIN_DATASET_MAX_PASSAGES", str(DEMO_DATASET_PASSAGES))
    for name in ("TWIN_FETCH_ALLOWED_NETWORKS", "TWIN_CRAWL_SOURCES_DIRS"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
    get_settings.cache_clear()
    settings = get_settings()
    first_output = io.StringIO()
    # The model stages (training on the CPU, serving) take longer than this test's budget on 2 cores; the
    # training DAG's approval test and the serving tests run them against real servers.
    run_demo(settings, console=Console(file=first_output, width=200), timeout_s=600, model_stages=False)

    with DocumentStore.from_settings(settings) as store:
        first = counts(store)
        articles = store.count(Collections.RAW_DOCUMENTS, {"kind": DocumentKind.ARTICLE.value})
        live = store.count(Collections.CLEANED_DOCUMENTS, {"duplicate_of": None})
        indexed_documents = {doc["_id"] for doc in store.collection(MANIFEST).find({}, {"_id": 1})}
    assert articles == len(article_paths())
    assert first[Collections.RAW_DOCUMENTS] == first[Collections.CLEANED_DOCUMENTS] + first[Collections.QUARANTINE]
    assert len(indexed_documents) == live and get_search_index(settings).count() >= live
    assert "features: run" in first_output.getvalue()
    assert "datasets: run" in first_output.getvalue()
    versions = DatasetVersions(get_artifact_store(settings))
    demo_version = versions.latest(DEMO_AUTHOR)
    assert demo_version, "the demo built no dataset version"
    manifest = versions.manifest(DEMO_AUTHOR, demo_version)
    assert manifest["author_id"] == DEMO_AUTHOR
    assert 0 < len({doc["document_id"] for doc in manifest["sources"]}) <= DEMO_DATASET_PASSAGES

    second_output = io.StringIO()
    run_demo(settings, console=Console(file=second_output, width=200), timeout_s=600, model_stages=False)
    with DocumentStore.from_settings(settings) as store:
        second = counts(store)
    assert second[Collections.CRAWL_RUNS] > first[Collections.CRAWL_RUNS]
    unchanged = [Collections.RAW_DOCUMENTS, Collections.CLEANED_DOCUMENTS, Collections.QUARANTINE]
    assert {c: second[c] for c in unchanged} == {c: first[c] for c in unchanged}
    assert "nothing changed, so etl was not triggered" in second_output.getvalue()

    # What a failed demo run prints: the end of a task's log, read through the REST API.
    user, password = stack_env.airflow_credentials()
    airflow = AirflowClient(f"http://{settings.host}:{settings.airflow_port}", user, password)
    try:
        smoke = airflow.latest_runs("smoke", limit=1)[0]
        tail = airflow.task_log_tail("smoke", smoke.run_id, {"task_id": "index_document", "try_number": 1})
    finally:
        airflow.close()
    assert tail and any("index_document" in line or "Returned value" in line for line in tail), tail
