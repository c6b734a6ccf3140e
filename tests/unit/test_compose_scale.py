"""The `scale` compose profile (docker-compose.scale.yaml over docker-compose.yaml), checked as data:
Airflow on Celery, a Ray cluster with several GPU workers, a three-node OpenSearch cluster; ports on
127.0.0.1 only; each secret only where it is used. `docker compose config` runs too where installed.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_compose import (
    COMPOSE_FILE,
    INTERPOLATION,
    REPO,
    command_text,
    docker_compose_or_skip,
    environment,
    filled_secrets,
    read_env_file,
    resolve,
)

SCALE_FILE = REPO / "docker-compose.scale.yaml"
SCALE_TEMPLATE = REPO / "docker" / "compose.scale.env.example"
AIRFLOW = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker")
OPENSEARCH_NODES = ("opensearch", "opensearch-2", "opensearch-3")


class Reset:
    """Compose's `!reset` tag: the key is removed from the merged file."""


class ComposeLoader(yaml.SafeLoader):
    pass


ComposeLoader.add_constructor("!reset", lambda loader, node: Reset())


def merge(base: Any, override: Any) -> Any:
    """Compose's merge rules, enough for these files: mappings merge, `!reset` removes, the rest replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            if isinstance(value, Reset):
                merged.pop(key, None)
            else:
                merged[key] = merge(base.get(key), value)
        return merged
    if isinstance(base, list) and isinstance(override, list) and all(isinstance(x, str) for x in base + override):
        return base + [item for item in override if item not in base]  # ports, expose: appended
    return override


def scale_env() -> dict[str, str]:
    return {**filled_secrets(), **{k: v or f"dummy-{k.lower()}" for k, v in read_env_file(SCALE_TEMPLATE).items()}}


@pytest.fixture(scope="module")
def merged() -> dict[str, Any]:
    base = yaml.load(COMPOSE_FILE.read_text(), Loader=ComposeLoader)
    overlay = yaml.load(SCALE_FILE.read_text(), Loader=ComposeLoader)
    return resolve(merge(base, overlay), scale_env())


@pytest.fixture(scope="module")
def services(merged: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return merged["services"]


def test_profile_adds_broker_workers_and_search_nodes() -> None:
    overlay = yaml.load(SCALE_FILE.read_text(), Loader=ComposeLoader)
    base = yaml.safe_load(COMPOSE_FILE.read_text())
    added = set(overlay["services"]) - set(base["services"])
    assert added == {"redis", "airflow-worker", "opensearch-2", "opensearch-3"}
    for name in added:
        assert overlay["services"][name]["profiles"] == ["scale"], name


def test_airflow_runs_on_celery_with_an_authenticated_broker(services: dict[str, dict[str, Any]]) -> None:
    secrets = scale_env()
    for name in AIRFLOW:
        env = environment(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://:{secrets['REDIS_PASSWORD']}@redis:6379/0", name
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://airflow:"), name
        assert services[name]["build"]["dockerfile"] == "docker/Dockerfile.celery", name
    assert "--requirepass" in command_text(services["redis"])
    worker = services["airflow-worker"]
    assert command_text(worker) == "airflow celery worker"
    assert int(worker["deploy"]["replicas"]) >= 2
    assert {"redis", "mongodb", "opensearch", "mlflow"} <= set(worker["depends_on"])
    # The worker runs the tasks: it gets the settings and data secrets the scheduler has.
    scheduler, worker_env = environment(services["airflow-scheduler"]), environment(worker)
    for variable in ("MONGODB_URI", "AWS_SECRET_ACCESS_KEY", "AIRFLOW__API_AUTH__JWT_SECRET",
                     "AIRFLOW__CORE__FERNET_KEY", "TWIN_SEARCH_BACKEND", "OPENSEARCH_URL", "MLFLOW_TRACKING_URI",
                     "TWIN_DATA_DIR"):
        assert worker_env[variable] == scheduler[variable], variable
    celery = (REPO / "docker" / "Dockerfile.celery").read_text()
    assert re.search(r"apache-airflow-providers-celery==\d", celery)


def test_ray_cluster_has_several_gpu_workers(services: dict[str, dict[str, Any]]) -> None:
    worker = services["ray-gpu-worker"]
    assert "--address=ray-head:6379" in command_text(worker)
    assert int(worker["deploy"]["replicas"]) >= 2
    device = worker["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["capabilities"] == ["gpu"] and int(device["count"]) >= 1
    assert f"--num-gpus={device['count']}" in command_text(worker)
    assert "--num-gpus=0" in command_text(services["ray-head"])


def test_opensearch_is_a_three_node_cluster(services: dict[str, dict[str, Any]]) -> None:
    names = set()
    for name in OPENSEARCH_NODES:
        env = environment(services[name])
        assert "discovery.type" not in env, f"{name} would start as a single-node cluster"
        assert env["cluster.name"] == "twin-search"
        assert env["discovery.seed_hosts"].split(",") == list(OPENSEARCH_NODES)
        assert env["cluster.initial_cluster_manager_nodes"].split(",") == list(OPENSEARCH_NODES)
        names.add(env["node.name"])
        assert "9300" in services[name]["expose"] or name == "opensearch"
    assert names == set(OPENSEARCH_NODES)
    data = [str(v).split(":")[0] for name in OPENSEARCH_NODES for v in services[name]["volumes"]]
    assert len(set(data)) == 3, "each node needs its own data volume"


def test_every_published_port_is_on_loopback(services: dict[str, dict[str, Any]]) -> None:
    published = 0
    for name, svc in services.items():
        for port in svc.get("ports", []):
            published += 1
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"
    assert published >= 5
    for name in ("redis", "airflow-worker", "opensearch-2", "opensearch-3"):
        assert "ports" not in services[name], f"{name} must stay inside the compose network"


def test_scale_secrets_are_required_templated_empty_and_only_where_used(merged: dict[str, Any]) -> None:
    text = SCALE_FILE.read_text()
    required = {m.group(1) for m in INTERPOLATION.finditer(text) if m.group(2) in (":?", "?")}
    base_template = read_env_file(REPO / "docker" / "compose.env.example")
    scale_template = read_env_file(SCALE_TEMPLATE)
    assert required <= set(base_template) | set(scale_template), required - set(base_template) - set(scale_template)
    assert scale_template["REDIS_PASSWORD"] == ""
    assert "compose.scale.env" in (REPO / "docker" / ".gitignore").read_text().split()
    assert "docker/compose.scale.env" in (REPO / ".dockerignore").read_text().split()
    password = scale_env()["REDIS_PASSWORD"]
    holders = {name for name, svc in merged["services"].items()
               if password in " ".join([*environment(svc).values(), command_text(svc)])}
    assert holders == {"redis", *AIRFLOW}


def test_docker_compose_config_parses_the_profile(tmp_path: Path) -> None:
    docker = docker_compose_or_skip()
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in scale_env().items()))
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "-f", str(SCALE_FILE), "--project-directory", str(REPO),
         "--env-file", str(env_file), "--profile", "scale", "config", "-q"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_deepspeed_hostfile_example_is_well_formed() -> None:
    text = (REPO / "training" / "hostfile.example").read_text()
    nodes = [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert len(nodes) >= 2 and all(len(n) == 2 and re.fullmatch(r"slots=[1-9]\d*", n[1]) for n in nodes), nodes
    launch = re.search(r"deepspeed --hostfile (\S+) .*?(training/train\.py) .*?--deepspeed (\S+)", text, re.S)
    assert launch, "the example shows the launch command"
    assert (REPO / launch.group(2)).is_file() and (REPO / launch.group(3)).is_file()
