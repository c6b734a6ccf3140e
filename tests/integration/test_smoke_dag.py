"""The smoke DAG end to end through Airflow's dag.test(): MongoDB-protocol server, index, MLflow."""

from __future__ import annotations

import mlflow
import pytest

from tests.fixtures.airflow import load_dag
from twin.smoke import SMOKE_COLLECTION
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
