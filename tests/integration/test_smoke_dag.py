"""The smoke DAG end to end through Airflow's dag.test(): MongoDB-protocol server, index, MLflow."""

from __future__ import annotations

import mlflow
import pytest

from tests.fixtures.airflow import load_dag
from twin.models import Chunk, DocumentKind, EmbeddedChunk, stable_id
from twin.smoke import SMOKE_COLLECTION, SMOKE_TEXT, index_smoke_document, write_smoke_document
from twin.storage.documents import DocumentStore


@pytest.mark.slow
def test_smoke_dag_writes_indexes_and_logs(airflow_db, twin_env, mlflow_uri, monkeypatch) -> None:
    from twin.settings import get_settings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    get_settings.cache_clear()
    dag = load_dag("smoke")
    run = dag.test()
    assert run.state == "success"

    with DocumentStore.from_settings() as store:
        assert store.collection(SMOKE_COLLECTION).count_documents({"run_id": run.run_id}) == 1
    results = {ti.task_id: ti.xcom_pull(task_ids=ti.task_id) for ti in run.get_task_instances()}
    mlflow.set_tracking_uri(mlflow_uri)
    logged = mlflow.get_run(results["log_run"]["mlflow_run_id"])
    assert logged.data.params["document_id"] == results["write_document"]["document_id"]
    assert logged.data.metrics["hybrid_top_score"] == pytest.approx(results["index_document"]["score"])


@pytest.mark.slow
def test_repeated_smoke_runs_each_find_their_own_document(airflow_db, twin_env, mlflow_uri, monkeypatch) -> None:
    """Every run writes the same text under a new id: each must still find its own, never an older copy."""
    from twin.features.embedding import get_embedder
    from twin.search.factory import get_search_index
    from twin.settings import get_settings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    get_settings.cache_clear()
    # An index written before the fix: one chunk per earlier run, all with the same text.
    earlier = [write_smoke_document(f"earlier-{n}")["document_id"] for n in range(3)]
    legacy = get_search_index(name=f"{get_settings().index_name}-smoke")
    embedder = get_embedder()
    legacy.ensure(embedder.dimension)
    legacy.upsert([EmbeddedChunk(**Chunk(
        id=stable_id(doc_id, "0"), document_id=doc_id, chunk_index=0, kind=DocumentKind.ARTICLE, author_id="smoke",
        author_name="Smoke Test", url=f"smoke://{doc_id}", text=SMOKE_TEXT, token_count=20, document_hash="h",
    ).model_dump(), embedding=embedder.encode_query(SMOKE_TEXT)) for doc_id in earlier])

    dag = load_dag("smoke")
    runs = [dag.test() for _ in range(2)]
    assert [run.state for run in runs] == ["success", "success"]
    latest = write_smoke_document("latest")["document_id"]
    assert index_smoke_document(latest)["chunk_id"]
    assert legacy.count() == 1
