"""`twin stack`: real servers in a throwaway data dir on free ports, and no process left behind."""

from __future__ import annotations

import socket

import httpx
import psutil
import pytest
from pymongo import MongoClient
from typer.testing import CliRunner

from tests.fixtures.stack import stack_process_tree
from twin.cli import app
from twin.settings import get_settings
from twin.stack import Stack, StackError


def all_pids(stack: Stack) -> dict[int, float]:
    """Every process of every running component (with its start time, to tell a reused PID apart)."""
    return {pid: started for pid, (_, _, started) in stack_process_tree(stack).items()}


def survivors(pids: dict[int, float]) -> list[str]:
    left = []
    for pid, created in pids.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{pid} {proc.name()}")
        except psutil.NoSuchProcess:
            pass
    return left


def run_cli(*args: str) -> tuple[int, str]:
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["stack", *args])
    return result.exit_code, result.output


@pytest.mark.slow
@pytest.mark.e2e  # 192 s measured on 2 busy cores: a subset up and down, then the whole stack up and down
def test_subset_then_full_stack_lifecycle(stack_env: Stack) -> None:
    """One data dir through its life: a subset up and down, then everything up (Airflow, Ray) and down.

    One test rather than two, so that PostgreSQL's init and MLflow's migrations are paid once.
    """
    stack = stack_env
    settings = stack.settings
    started = stack.up(["mongo", "mlflow"], progress=print)
    assert [r.name for r in started] == ["postgres", "mongo", "mlflow"]  # postgres comes with mlflow

    code, output = run_cli("status")
    assert code == 0, output
    rows = [line.split() for line in output.splitlines()[1:]]
    assert [(row[0], row[-1]) for row in rows] == [("postgres", "healthy"), ("mongo", "healthy"),
                                                   ("mlflow", "healthy")]

    with MongoClient(settings.resolved_mongodb_uri, serverSelectionTimeoutMS=5000) as client:
        assert client.admin.command("ping")["ok"] == 1
        client.twin_stack_test.docs.insert_one({"_id": "kept", "x": 1})
    assert httpx.get(f"{settings.resolved_mlflow_uri}/health", timeout=5).status_code == 200

    again = stack.up(["mongo", "mlflow"])  # idempotent: nothing restarted
    assert not any(r.started for r in again)

    pids = all_pids(stack)
    assert len(pids) >= 3
    stopped = stack.down(progress=print)
    assert [r.name for r in stopped] == ["mlflow", "mongo", "postgres"]
    assert survivors(pids) == []
    assert list((settings.data_dir / "stack").glob("*.pid")) == []
    code, output = run_cli("status")
    assert code == 1 and "down" in output

    check_full_stack(stack)


def test_taken_port_names_component_port_and_variable(stack_env: Stack) -> None:
    port = stack_env.settings.mongo_port
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        with pytest.raises(StackError) as err:
            stack_env.up(["mongo"])
    message = str(err.value)
    assert message.startswith("mongo:") and str(port) in message and "TWIN_MONGO_PORT" in message
    assert stack_env.status(["mongo"])[0].pid is None


@pytest.mark.slow
def test_server_that_does_not_come_up_names_its_log(stack_env: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_cli("up", "--only", "postgres")[0] == 0
    # MLflow needs seconds to answer, and its health check fails fast (connection refused), so no
    # machine is quick enough to pass within this timeout.
    monkeypatch.setenv("TWIN_STACK_START_TIMEOUT_S", "0.01")
    code, output = run_cli("up", "--only", "mlflow")
    assert code == 1
    assert "mlflow did not become healthy" in output and "mlflow.log" in output
    assert not (stack_env.settings.data_dir / "stack" / "mlflow.pid").exists()  # stopped, not left half-up


def test_unknown_component_is_a_clear_error(stack_env: Stack) -> None:
    with pytest.raises(StackError, match="unknown stack component 'mongodb'"):
        stack_env.up(["mongodb"])


def test_selection_adds_requirements_for_up_and_dependents_for_down(stack_env: Stack) -> None:
    up = [c.name for c in stack_env.select(["airflow-scheduler", "ray"])]
    assert up == ["postgres", "airflow-api-server", "airflow-scheduler", "ray"]
    down = [c.name for c in stack_env.select(["postgres"], closure="dependents")]
    assert down == ["postgres", "mlflow", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer"]
    assert [c.stage for c in stack_env.select(None)] == ["postgres", "mongo", "mlflow", *["airflow"] * 4, "ray"]


def test_airflow_and_ray_get_the_platform_settings_and_loopback_only(stack_env: Stack) -> None:
    settings = stack_env.settings
    scheduler_env = stack_env.by_name["airflow-scheduler"].env()
    assert scheduler_env["TWIN_DATA_DIR"] == str(settings.data_dir)
    assert scheduler_env["MONGODB_URI"] == f"mongodb://127.0.0.1:{settings.mongo_port}/"
    assert scheduler_env["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{settings.mlflow_port}"
    assert scheduler_env["HF_HUB_OFFLINE"] == "1"
    assert scheduler_env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert "--skip-serve-logs" in stack_env.by_name["airflow-scheduler"].command()
    ray = stack_env.by_name["ray"]
    assert ray.env()["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert ray.command()[ray.command().index("--dashboard-host") + 1] == "127.0.0.1"


def check_full_stack(stack: Stack) -> None:
    """Everything up on a data dir that already holds PostgreSQL and Mongo data, then down."""
    code, output = run_cli("up")
    print(output)
    assert code == 0, output
    settings = stack.settings
    with MongoClient(settings.resolved_mongodb_uri, serverSelectionTimeoutMS=5000) as client:
        assert client.twin_stack_test.docs.find_one({"_id": "kept"}) == {"_id": "kept", "x": 1}  # survived
    assert all(row.healthy for row in stack.status()), output

    base = f"http://127.0.0.1:{settings.airflow_port}"
    health = httpx.get(f"{base}/api/v2/monitor/health", timeout=10).json()
    assert {k: health[k]["status"] for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")} == {
        "metadatabase": "healthy", "scheduler": "healthy", "triggerer": "healthy", "dag_processor": "healthy"}

    user, password = stack.airflow_credentials()
    assert password and f"user: {user}  password: {password}" in output  # what `up` printed works
    token = httpx.post(f"{base}/auth/token", json={"username": user, "password": password}, timeout=10)
    assert token.status_code in (200, 201), token.text
    pools = httpx.get(f"{base}/api/v2/pools", headers={"Authorization": f"Bearer {token.json()['access_token']}"},
                      timeout=10).json()
    assert {"name": "crawl_fetch", "slots": settings.crawl_pool_slots} in [
        {"name": p["name"], "slots": p["slots"]} for p in pools["pools"]]
    bad = httpx.post(f"{base}/auth/token", json={"username": user, "password": password + "x"}, timeout=10)
    assert bad.status_code == 401

    ray = httpx.get(f"http://127.0.0.1:{settings.ray_dashboard_port}/api/gcs_healthz", timeout=10)
    assert ray.status_code == 200

    pids = all_pids(stack)
    code, output = run_cli("down")
    print(output)
    assert code == 0, output
    assert survivors(pids) == []
    assert list((settings.data_dir / "stack").glob("*.pid")) == []
