"""The continuous-training loop as the DAGs declare it: crawl on a timetable, then each stage scheduled
on the Asset the one before it updates, up to training; the approval is the only task that waits for a
person, and the canary DAG runs on its own timetable."""

from __future__ import annotations

from itertools import pairwise

import pytest

from twin.orchestration import CHUNKS_ASSET, CLEANED_DOCUMENTS_ASSET, DATASETS_ASSET, RAW_DOCUMENTS_ASSET

CHAIN = [("crawl", RAW_DOCUMENTS_ASSET), ("etl", CLEANED_DOCUMENTS_ASSET), ("features", CHUNKS_ASSET),
         ("datasets", DATASETS_ASSET), ("training", None)]


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    from tests.fixtures.airflow import DAGS_DIR

    bag = DagBag(dag_folder=str(DAGS_DIR))
    assert not bag.import_errors, bag.import_errors
    return bag.dags


def outlets(dag) -> set[str]:
    return {getattr(o, "name", "") for task in dag.tasks for o in task.outlets}


def scheduled_on(dag) -> set[str]:
    condition = getattr(dag.timetable, "asset_condition", None)
    return {a.name for a in condition.objects} if condition is not None else set()


def test_new_content_flows_by_assets_from_crawl_to_training(dags) -> None:
    assert not scheduled_on(dags["crawl"]) and dags["crawl"].schedule == "@daily"
    for (producer, asset), (consumer, _) in pairwise(CHAIN):
        assert asset in outlets(dags[producer]), f"{producer} does not update {asset}"
        assert scheduled_on(dags[consumer]) == {asset}, f"{consumer} is not scheduled on {asset}"


def test_the_approval_is_the_only_step_that_waits_for_a_person(dags) -> None:
    from airflow.providers.standard.operators.hitl import HITLOperator

    asking = {(dag_id, t.task_id) for dag_id, dag in dags.items() for t in dag.tasks if isinstance(t, HITLOperator)}
    assert asking == {("training", "approval")}
    assert dags["canary"].schedule == "@hourly" and not scheduled_on(dags["canary"])


def test_a_dataset_event_naming_several_authors_trains_each_in_a_run_of_its_own(dags) -> None:
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    from twin.orchestration import authors_in_dataset_events

    events = [{"author": "mara", "version": "v2", "changed": ["mara/v2", "tomas/v1"]},
              {"author": "tomas", "version": "v3", "changed": ["tomas/v3", "ines/v1"]},
              {"author": "ada"}, {}]
    assert authors_in_dataset_events(events) == [("mara", "v2"), ("tomas", "v3"), ("ines", "v1"), ("ada", None)]
    fan_out = dags["training"].get_task("train_other_authors")
    assert isinstance(fan_out, TriggerDagRunOperator) or fan_out.operator_class is TriggerDagRunOperator
    assert fan_out.partial_kwargs["trigger_dag_id"] == "training" and fan_out.partial_kwargs["skip_when_already_exists"]
