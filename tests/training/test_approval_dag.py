"""The training DAG's approval step end to end through the real scheduler of a private local stack
(PostgreSQL, MLflow, Airflow's API server, scheduler and DAG processor).

Each run decides on a version registered here with its gate already recorded (param model_version:
no training, and the evaluate task reuses the recorded figures; training and the gate have their own
tests). The four ways a request ends: approved through Airflow's HITL REST API, rejected through it,
approved in the MLflow UI (the tag), and nobody answering until it expires, which approves nothing.
Then a dataset event naming two authors: one run each, each with its own approval step.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest

from tests.training.test_registry import new_version
from twin.airflow_client import AirflowClient
from twin.orchestration import DATASETS_ASSET
from twin.registry import CHALLENGER, CHAMPION, PREVIOUS, ModelRegistry
from twin.stack import Stack

TIMEOUT_S = 90  # the approval request's lifetime in these runs: longer than an MLflow decision takes to land
COMPONENTS = ["mlflow", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor"]


@pytest.fixture
def approval_stack(stack_env: Stack, monkeypatch: pytest.MonkeyPatch):
    from twin.settings import get_settings

    monkeypatch.setenv("TWIN_APPROVAL_TIMEOUT_S", str(TIMEOUT_S))
    monkeypatch.setenv("TWIN_APPROVAL_POLL_S", "3")
    # The scheduler's sweep of expired human-in-the-loop requests: every 5 s instead of 15 s.
    monkeypatch.setenv("AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL", "5")
    get_settings.cache_clear()
    stack = Stack(get_settings())
    stack.up(COMPONENTS, progress=print)
    user, password = stack.airflow_credentials()
    client = AirflowClient(f"http://127.0.0.1:{stack.settings.airflow_port}", user, password or "")
    client.wait_for_dag("training", timeout=180)
    client.unpause("training")
    try:
        yield stack, client
    finally:
        client.close()
        stack.down()


def wait_for_request(client: AirflowClient, run_id: str, timeout: float = 240) -> dict:
    """The approval task's request once it is waiting for a person."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.task_state("training", run_id, "approval") == "awaiting_input":
            client.wait_until_request_settled("training", run_id, "approval")  # a person reads it first
            return client.hitl_detail("training", run_id, "approval")
        if client.get_run("training", run_id).state == "failed":
            break
        time.sleep(2)
    raise AssertionError(f"run {run_id}: no approval request; failed tasks: {client.failed_tasks('training', run_id)}")


def finish(client: AirflowClient, run_id: str, expected: str, timeout: float = 180) -> None:
    """Wait for the run; if it ends otherwise than expected, fail with its failed tasks' log tails."""
    state = client.wait_for_run("training", run_id, timeout=timeout).state
    if state != expected:
        tails = client.failed_task_logs("training", run_id, 40)
        raise AssertionError(f"run {run_id} {state}, expected {expected}:\n" + "\n".join(
            f"--- {task}\n" + "\n".join(lines) for task, lines in tails.items()))


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(2)
    raise AssertionError(f"not within {timeout:.0f}s: {what}")


@pytest.mark.e2e
def test_approval_through_rest_api_mlflow_tag_reject_and_timeout(approval_stack) -> None:
    stack, client = approval_stack
    registry = ModelRegistry(stack.settings)
    author = f"hitl-{uuid.uuid4().hex[:8]}"
    v1, v2, v3, v4 = (new_version(registry, author, "passed") for _ in range(4))

    def trigger(version: str) -> str:
        return client.trigger("training", {"author": author, "model_version": version}).run_id

    # 1. Approved in Airflow (what Browse -> Required Actions sends): v1 becomes champion.
    run = trigger(v1)
    request = wait_for_request(client, run)
    assert request["options"] == ["Approve", "Reject"] and not request["response_received"]
    assert request["defaults"] in (None, [])  # no default: a timeout can never approve
    assert f"version {v1}" in request["subject"]
    client.respond("training", run, "approval", ["Approve"], {"comment": "reads like her"})
    finish(client, run, "success")
    info = registry.get(author, v1)
    assert info.aliases == [CHAMPION] and info.approval == "approved"
    assert info.tags["approval_source"] == "airflow" and info.tags["reason"] == "reads like her"
    assert info.tags["approved_by"] == stack.settings.airflow_admin_user

    # 2. Rejected in Airflow with a comment: the champion stays, the challenger alias goes.
    run = trigger(v2)
    wait_for_request(client, run)
    client.respond("training", run, "approval", ["Reject"], {"comment": "too generic"})
    finish(client, run, "success")
    assert client.task_state("training", run, "record_decision") == "skipped"
    info = registry.get(author, v2)
    assert info.approval == "rejected" and info.tags["reason"] == "too generic" and CHALLENGER not in info.aliases
    assert registry.alias_version(author, CHAMPION) == v1

    # 3. Approved in the MLflow UI (the documented tag): the waiting sensor notices and the aliases move.
    run = trigger(v3)
    wait_for_request(client, run)
    registry.client.set_model_version_tag(f"twin-{author}", v3, "approval", "approved")
    registry.client.set_model_version_tag(f"twin-{author}", v3, "approved_by", "lena")
    wait_until(lambda: registry.alias_version(author, CHAMPION) == v3, 120, "v3 champion after the MLflow tag")
    assert registry.alias_version(author, PREVIOUS) == v1
    assert registry.get(author, v3).tags["approval_source"] == "mlflow-ui"
    assert registry.get(author, v3).tags["approved_by"] == "lena"
    # The decision also answers the Airflow request, so the run ends now (an expiry would fail `approval`).
    assert client.wait_for_run("training", run, timeout=120).state == "success"
    assert client.task_state("training", run, "approval") == "success"
    answered = client.hitl_detail("training", run, "approval")
    assert answered["chosen_options"] == ["Approve"] and "mlflow-ui by lena" in answered["params_input"]["comment"]

    # 4. Nobody answers: the request expires, the task fails, and nothing is approved.
    run = trigger(v4)
    wait_for_request(client, run)
    finished = client.wait_for_run("training", run, timeout=TIMEOUT_S + 180)
    assert finished.state == "failed"
    assert client.task_state("training", run, "approval") == "failed"
    assert not client.hitl_detail("training", run, "approval")["response_received"]
    assert client.task_state("training", run, "record_decision") in ("upstream_failed", "skipped")
    info = registry.get(author, v4)
    assert info.approval == "pending" and CHAMPION not in info.aliases
    assert registry.alias_version(author, CHAMPION) == v3

    # 5. A dataset event naming two authors (as the datasets DAG emits it): the run it triggers takes the first,
    #    and queues a run of its own for the second. Neither has a dataset here: both skip training and say so.
    first, second = f"{author}-a", f"{author}-b"
    since = datetime.now(UTC)
    client.create_asset_event(DATASETS_ASSET, {"author": first, "version": "v1",
                                               "changed": [f"{first}/v1", f"{second}/v1"]})
    [by_event] = wait_until(lambda: [r for r in client.runs_queued_since("training", since)
                                     if r.run_type == "asset_triggered"], 120, "a run triggered by the event")
    triggered = client.wait_for_run("training", by_event.run_id, timeout=240)
    assert triggered.state == "success" and client.task_state("training", triggered.run_id, "train") == "skipped"
    queued = client.wait_for_run("training", f"{triggered.run_id}__{second}", timeout=240)
    assert queued.state == "success" and queued.conf == {"author": second, "dataset_version": "v1"}
    assert client.task_state("training", queued.run_id, "train") == "skipped"
