"""The `datasets` DAG through dag.test() and the `twin dataset` commands, on the configured stack."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.fixtures.airflow import load_dag


def _twin(*args: str):
    from twin.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.mark.slow
def test_dag_builds_once_then_skips_and_the_commands_read_its_versions(airflow_db, corpus_env, monkeypatch) -> None:
    from twin.settings import get_settings

    monkeypatch.setenv("TWIN_AUTHOR", "mara")
    monkeypatch.setenv("TWIN_DATASET_MAX_PASSAGES", "2")
    get_settings.cache_clear()
    dag = load_dag("datasets")
    assert "chunks" in str(dag.timetable.asset_condition)  # scheduled on the features DAG's Asset
    first = dag.test()
    assert str(first.state) == "success"
    states = {ti.task_id: str(ti.state) for ti in first.get_task_instances()}
    assert states == {"authors": "success", "build": "success", "announce_datasets": "success"}
    announce = next(ti for ti in first.get_task_instances() if ti.task_id == "announce_datasets")
    [changed] = announce.xcom_pull(task_ids="announce_datasets")
    author, version = changed.split("/")
    assert author == "mara"
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:  # the event tells the training DAG whose twin to train
        event = session.query(AssetEvent).filter_by(source_dag_id="datasets", source_run_id=first.run_id).one()
        assert event.extra["author"] == "mara" and event.extra["version"] == version

    second = dag.test()
    assert {ti.task_id: str(ti.state) for ti in second.get_task_instances()}["announce_datasets"] == "skipped"

    built = _twin("dataset", "build", "--limit", "2", "--no-mlflow", "--json")
    assert built.exit_code == 0, built.output
    report = json.loads(built.stdout.splitlines()[-1])
    assert report["version"] == version and not report["changed"] and report["generated"]["instruction"] == 0

    listed = [json.loads(line) for line in _twin("dataset", "list", "--json").stdout.splitlines()]
    assert [(v["author_id"], v["version"], v["latest"]) for v in listed] == [("mara", version, True)]
    shown = _twin("dataset", "show", version[:6])
    assert shown.exit_code == 0 and f"dataset {version} of mara" in shown.stdout
    assert "instruction: train" in shown.stdout and "prompts: answer" in shown.stdout
    same = json.loads(_twin("dataset", "diff", version, version, "--json").stdout)
    assert all(not d["added"] and not d["removed"] and not d["changed"] for d in same["datasets"].values())
    missing = _twin("dataset", "show", "ffffffff")
    assert missing.exit_code == 2 and "no dataset version" in missing.output
    unknown = _twin("dataset", "build", "--author", "nobody")
    assert unknown.exit_code == 2 and "unknown author" in unknown.output
