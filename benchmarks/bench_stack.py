"""How long `twin stack up` takes until every component is healthy: cold (fresh data dir: initdb,
MLflow and Airflow migrations) and warm (second `up` after `down`, same data dir).

Run: python -m benchmarks.bench_stack [--only mongo,mlflow]
Uses its own temp data dir and free ports, and stops everything it started.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
import time
from pathlib import Path

from benchmarks.report import record
from twin.settings import Settings, load_settings
from twin.stack import Stack, StartResult

PORT_FIELDS = ("mongo_port", "mlflow_port", "airflow_port", "ray_port", "ray_dashboard_port", "ray_client_port",
               "ray_agent_port")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed_up(stack: Stack, only: list[str] | None) -> tuple[dict[str, float], float]:
    begun = time.monotonic()
    results: list[StartResult] = stack.up(only)
    total = time.monotonic() - begun
    assert all(r.started for r in results), "benchmark expects nothing running beforehand"
    return {r.name: r.seconds for r in results}, total


def run(settings: Settings, only: list[str] | None) -> tuple[dict[str, float], float, dict[str, float], float]:
    stack = Stack(settings)
    try:
        cold, cold_total = timed_up(stack, only)
        stack.down()
        warm, warm_total = timed_up(stack, only)
    finally:
        stack.down()
    return cold, cold_total, warm, warm_total


def table(cold: dict[str, float], cold_total: float, warm: dict[str, float], warm_total: float) -> str:
    rows = [(name, cold[name], warm[name]) for name in cold] + [("total (wall)", cold_total, warm_total)]
    lines = [f"{'component':<24}{'cold s':>9}{'warm s':>9}{'warm/cold':>11}"]
    lines += [f"{name:<24}{c:>9.1f}{w:>9.1f}{w / c:>11.2f}" for name, c, w in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated components (default: the whole stack)")
    args = parser.parse_args(argv)
    only = args.only.split(",") if args.only else None
    # Outside any 0700 folder: PostgreSQL runs as its own user and must reach its data dir.
    root = Path(tempfile.mkdtemp(prefix="twin-bench-stack-"))
    try:
        settings = load_settings(data_dir=root / "data", stack_start_timeout_s=600,
                                 **{field: free_port() for field in PORT_FIELDS})
        results = run(settings, only)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("seconds from the start of each component's stage until it answered healthy")
    print(table(*results))
    _, cold_total, _, warm_total = results
    record("stack", "warm start to healthy (second up)", warm_total, "cold start", cold_total, "s",
           higher_is_better=False)


if __name__ == "__main__":
    main()
