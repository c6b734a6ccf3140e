"""A small client of Airflow 3's REST API (v2): unpause, trigger and wait for DAG runs.

Used by the demo and by anyone who drives the platform's DAGs from outside the UI.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

FINISHED = {"success", "failed"}
REQUEST_SETTLE_S = 10.0  # how long a human-in-the-loop request waits before it is answered by code


class AirflowError(RuntimeError):
    pass


@dataclass(frozen=True)
class DagRun:
    dag_id: str
    run_id: str
    state: str
    queued_at: datetime | None  # when the run was created: scheduled runs carry an older run_after
    run_type: str
    conf: dict[str, Any] | None = None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> DagRun:
        queued = data.get("queued_at") or data.get("run_after")
        return cls(data["dag_id"], data["dag_run_id"], data["state"],
                   datetime.fromisoformat(queued) if queued else None, data.get("run_type", ""), data.get("conf"))


class AirflowClient:
    def __init__(self, base_url: str, username: str, password: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        response = self._http.post("/auth/token", json={"username": username, "password": password})
        if response.status_code not in (200, 201):
            raise AirflowError(f"Airflow login as {username!r} failed: HTTP {response.status_code} {response.text}")
        self._http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        # A busy API server (a loaded scheduler on 2 cores) can miss one read timeout: reads are retried.
        send = self._http.request if method != "GET" else self._get_with_retries
        response = send(method, f"/api/v2{path}", **kwargs)
        if response.status_code >= 400:
            raise AirflowError(f"{method} {path}: HTTP {response.status_code} {response.text[:500]}")
        return response.json()

    @retry(retry=retry_if_exception_type(httpx.TransportError), stop=stop_after_attempt(4),
           wait=wait_exponential(multiplier=1, max=10), reraise=True)
    def _get_with_retries(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._http.request(method, url, **kwargs)

    def wait_for_dag(self, dag_id: str, timeout: float) -> None:
        """Wait until the DAG processor has parsed the DAG into the metadata DB."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._http.get(f"/api/v2/dags/{dag_id}").status_code == 200:
                return
            time.sleep(1)
        errors = self._call("GET", "/importErrors").get("import_errors", [])
        raise AirflowError(f"DAG {dag_id!r} was not parsed within {timeout:.0f}s; import errors: {errors}")

    def unpause(self, dag_id: str) -> None:
        self._call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> DagRun:
        data = self._call("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return DagRun.from_api(data)

    def get_run(self, dag_id: str, run_id: str) -> DagRun:
        return DagRun.from_api(self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}"))

    def latest_runs(self, dag_id: str, limit: int = 5) -> list[DagRun]:
        data = self._call("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after", "limit": limit})
        return [DagRun.from_api(r) for r in data.get("dag_runs", [])]

    def runs_queued_since(self, dag_id: str, since: datetime) -> list[DagRun]:
        return [r for r in self.latest_runs(dag_id, limit=20) if r.queued_at and r.queued_at >= since]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float, poll_s: float = 2.0) -> DagRun:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.get_run(dag_id, run_id)
            if run.state in FINISHED:
                return run
            time.sleep(poll_s)
        raise AirflowError(f"{dag_id} run {run_id} did not finish within {timeout:.0f}s")

    def wait_for_triggered_run(self, dag_id: str, after: datetime, timeout: float, poll_s: float = 2.0) -> DagRun:
        """Wait for a run of an Asset-scheduled DAG that was queued after `after`, and for it to finish."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.runs_queued_since(dag_id, after)
            if runs:
                return self.wait_for_run(dag_id, runs[0].run_id, max(1.0, deadline - time.monotonic()), poll_s)
            time.sleep(poll_s)
        raise AirflowError(f"no {dag_id} run was triggered within {timeout:.0f}s after {after.isoformat()}")

    def create_asset_event(self, asset_name: str, extra: dict[str, Any]) -> dict[str, Any]:
        """An Asset event, as a producer outside Airflow would send it; DAGs scheduled on the Asset run."""
        assets = self._call("GET", "/assets", params={"name_pattern": asset_name, "limit": 100})["assets"]
        [asset] = [a for a in assets if a["name"] == asset_name]
        return self._call("POST", "/assets/events", json={"asset_id": asset["id"], "extra": extra})

    def task_state(self, dag_id: str, run_id: str, task_id: str) -> str | None:
        return self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}").get("state")

    def hitl_detail(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        """A human-in-the-loop request (subject, options, response_received, chosen_options, ...)."""
        return self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails")

    def wait_until_request_settled(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1,
                                   timeout: float = 120) -> None:
        """Until the request has waited REQUEST_SETTLE_S: an answer within seconds of the task parking can race
        the scheduler's handling of the parked worker's exit, which then fails the task (seen here under load)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            created = self.hitl_detail(dag_id, run_id, task_id, map_index).get("created_at")
            if created:
                waited = (datetime.now(UTC) - datetime.fromisoformat(created)).total_seconds()
                if waited >= REQUEST_SETTLE_S:
                    return
                time.sleep(REQUEST_SETTLE_S - waited)
            else:
                time.sleep(1)
        raise AirflowError(f"{dag_id}.{task_id} of run {run_id}: no request within {timeout:.0f}s")

    def respond(self, dag_id: str, run_id: str, task_id: str, chosen_options: list[str],
                params_input: dict[str, Any] | None = None, map_index: int = -1) -> dict[str, Any]:
        """Answer a human-in-the-loop request as the logged-in user (what Required Actions does)."""
        return self._call("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails",
                          json={"chosen_options": chosen_options, "params_input": params_input or {}})

    def failed_task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        data = self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 500})
        return [t for t in data.get("task_instances", []) if t.get("state") in ("failed", "upstream_failed")]

    def failed_tasks(self, dag_id: str, run_id: str) -> list[str]:
        return [t["task_id"] for t in self.failed_task_instances(dag_id, run_id)]

    def failed_task_logs(self, dag_id: str, run_id: str, lines: int = 30) -> dict[str, list[str]]:
        """The end of each failed task's log, keyed "task (state)"; tasks that never ran
        (upstream_failed) have no log and are listed with an empty one."""
        tails: dict[str, list[str]] = {}
        for task in self.failed_task_instances(dag_id, run_id):
            key = f"{task['task_id']} ({task.get('state')})"
            if task.get("state") != "failed":
                tails[key] = []
                continue
            try:
                tails[key] = self.task_log_tail(dag_id, run_id, task, lines)
            except AirflowError as error:
                tails[key] = [f"(its log could not be read: {error})"]
        return tails

    def task_log_tail(self, dag_id: str, run_id: str, task: dict[str, Any], lines: int = 30) -> list[str]:
        """The last lines of a task instance's log (its latest try), as the UI shows them."""
        try_number = max(1, task.get("try_number") or 1)
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task['task_id']}/logs/{try_number}"
        data = self._call("GET", path, params={"full_content": "true", "map_index": task.get("map_index", -1)},
                          headers={"Accept": "application/json"})
        return [_log_line(entry) for entry in data.get("content", [])][-lines:]


def _log_line(entry: dict[str, Any] | str) -> str:
    """One structured log record as text; an exception record keeps its type and message."""
    if isinstance(entry, str):
        return entry
    line = " ".join(str(entry[key]) for key in ("timestamp", "level", "event") if entry.get(key))
    for error in entry.get("error_detail") or []:
        line += f"\n    {error.get('exc_type', '')}: {error.get('exc_value', '')}"
    return line


def answer_request_as_admin(settings: Any, dag_id: str, run_id: str, task_id: str, option: str,
                            comment: str) -> str | None:
    """Answer a waiting human-in-the-loop request as the local stack's admin, so that its task resumes now
    rather than when the request expires; None when answered, else why not (it then expires by itself)."""
    from twin.stack.components import StackPaths

    user = settings.airflow_admin_user
    try:
        password = json.loads(StackPaths(settings.data_dir).airflow_passwords_file.read_text()).get(user)
    except (OSError, ValueError) as exc:
        return f"no password of {user!r} to log in with ({exc})"
    try:
        client = AirflowClient(f"http://{settings.host}:{settings.airflow_port}", user, password or "")
    except (AirflowError, httpx.HTTPError) as exc:
        return str(exc)
    try:
        client.wait_until_request_settled(dag_id, run_id, task_id)
        client.respond(dag_id, run_id, task_id, [option], {"comment": comment})
    except (AirflowError, httpx.HTTPError) as exc:
        return str(exc)  # e.g. 409: a person answered it in Airflow meanwhile
    finally:
        client.close()
    return None
