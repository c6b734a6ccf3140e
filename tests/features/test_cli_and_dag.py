"""The `features` DAG and the `twin features / index / search / eval` commands, end to end on the
configured stack: the MongoDB-protocol server, embedded LanceDB under the data folder, MLflow."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from tests.fixtures.airflow import load_dag
from tests.fixtures.features import AUTHORS, corpus_documents
from twin.storage.documents import Collections, DocumentStore


@pytest.fixture
def seeded_env(twin_env):
    with DocumentStore.from_settings(twin_env) as store:
        store.replace_many(Collections.AUTHORS, AUTHORS)
        store.upsert_cleaned(corpus_documents())
        yield twin_env
        store.client.drop_database(twin_env.mongodb_database)


def _twin(*args: str):
    from twin.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.mark.slow
def test_features_dag_indexes_then_announces_chunks_only_when_something_changed(airflow_db, seeded_env) -> None:
    dag = load_dag("features")
    first = dag.test()
    assert str(first.state) == "success"
    states = {ti.task_id: str(ti.state) for ti in first.get_task_instances()}
    assert states == {"chunk_embed_index": "success", "announce_chunks": "success"}
    report = next(ti for ti in first.get_task_instances() if ti.task_id == "chunk_embed_index").xcom_pull(
        task_ids="chunk_embed_index")
    assert report["indexed"] == len(corpus_documents()) and not report["failures"]

    second = dag.test()
    assert {ti.task_id: str(ti.state) for ti in second.get_task_instances()}["announce_chunks"] == "skipped"


@pytest.mark.slow
def test_commands_index_search_rebuild_and_evaluate(seeded_env, mlflow_uri, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    from twin.settings import get_settings

    get_settings.cache_clear()
    run = _twin("features", "run", "--json")
    assert run.exit_code == 0, run.output
    assert json.loads(run.output)["indexed"] == len(corpus_documents())
    assert json.loads(_twin("features", "run", "--json").output)["indexed"] == 0

    found = _twin("search", "moth taped into the log book", "-k", "3", "--json")
    assert found.exit_code == 0, found.output
    results = [json.loads(line) for line in found.stdout.splitlines()]
    assert len(results) == 3 and [r["rank"] for r in results] == [1, 2, 3]
    assert results[0]["url"].endswith("/grace/grace-bug") and results[0]["author_name"] == "Grace Hopper"
    assert results[0]["retriever"] == "hybrid" and {"score", "title", "ranks", "text"} <= set(results[0])

    filtered = _twin("search", "engine compiler kernel", "--author", "grace hopper", "--kind", "article", "--json")
    assert {(r["author_id"], r["kind"]) for r in map(json.loads, filtered.stdout.splitlines())} == {
        ("grace", "article")}
    text = _twin("search", "red-black tree", "--mode", "bm25", "-k", "1")
    assert "Kernel scheduling — Linus Torvalds" in text.stdout and "via bm25" in text.stdout
    recent = _twin("search", "engine compiler kernel moth poetry", "--since", "2025-02-05", "--json")
    recent_ids = {json.loads(line)["document_id"] for line in recent.stdout.splitlines()}
    assert recent_ids and recent_ids <= {"ada-poetry", "grace-bug", "linus-code"}  # published 40+ days in
    unknown = _twin("search", "x", "--author", "nobody")
    assert unknown.exit_code == 2 and "unknown author" in unknown.output

    rebuilt = _twin("index", "rebuild", "--json")
    assert rebuilt.exit_code == 0 and json.loads(rebuilt.output)["indexed"] == len(corpus_documents())

    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"id": "q1", "query": "Bernoulli numbers on punched cards",
                                   "relevant": ["/ada/ada-engine"]}) + "\n")
    evaluated = _twin("eval", "retrieval", "--queries", str(queries))
    assert evaluated.exit_code == 0, evaluated.output
    assert re.search(r"^hybrid\s+[01]\.\d{3}", evaluated.stdout, re.MULTILINE)
    run_id = re.search(r"logged to MLflow run (\w+)", evaluated.stdout).group(1)
    import mlflow

    mlflow.set_tracking_uri(mlflow_uri)
    metrics = mlflow.get_run(run_id).data.metrics
    assert {"bm25.recall_at_5", "vector.mrr", "hybrid.ndcg_at_10", "hybrid.recall_at_10"} <= set(metrics)
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
