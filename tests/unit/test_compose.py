"""The production compose stack and its image, checked as data (no Docker engine runs here).

`docker compose config` runs too when the docker CLI with its compose plugin is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from twin.orchestration import CRAWL_POOL
from twin.settings import documented_variables, load_settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
SECRETS_TEMPLATE = REPO / "docker" / "compose.env.example"

REQUIRED_SERVICES = {
    "postgres", "mongodb", "opensearch", "s3", "mlflow", "airflow-apiserver", "airflow-scheduler",
    "airflow-dag-processor", "airflow-triggerer", "ray-head", "ray-gpu-worker",
}
# Names that belong to the platform's settings namespace; anything else (AIRFLOW__*, AWS_*, ...)
# is another tool's own variable.
PLATFORM_VARIABLE = re.compile(r"^(TWIN_\w+|MONGODB_\w+|OPENSEARCH_\w+|MLFLOW_TRACKING_URI)$")
INTERPOLATION = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}")
URL_HOST_PORT = re.compile(r"\b[a-z][a-z0-9+.-]*://(?:[^@/\s]+@)?([A-Za-z0-9_.-]+):(\d+)")


# --- helpers ------------------------------------------------------------------------------------------

def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} rules, enough to resolve this file."""
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1), match.group(2), match.group(3)
        value = env.get(name, "")
        if op in (":?", "?") and not value:
            raise KeyError(f"required variable {name} is empty: {arg}")
        if op in (":-", "-") and not value:
            return arg
        return value
    return INTERPOLATION.sub(replace, text)


def filled_secrets() -> dict[str, str]:
    """The template with a dummy value in every empty slot, as an operator would fill it."""
    return {name: value or f"dummy-{name.lower()}" for name, value in read_env_file(SECRETS_TEMPLATE).items()}


def resolve(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve(item, env) for item in node]
    if isinstance(node, dict):
        return {key: resolve(value, env) for key, value in node.items()}
    return node


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return resolve(yaml.safe_load(COMPOSE_FILE.read_text()), filled_secrets())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def is_job(service: dict[str, Any]) -> bool:
    """One-shot jobs run to completion; everything else is a long-running server."""
    return service.get("restart") == "no"


def servers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in services.items() if not is_job(svc)}


def platform_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Services that run the platform image built from the Dockerfile."""
    return {name: svc for name, svc in services.items() if "build" in svc}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in service.get("env_file", []):
        path = entry["path"] if isinstance(entry, dict) else entry
        env.update(read_env_file(REPO / path))
    declared = service.get("environment", {})
    if isinstance(declared, list):
        declared = dict(item.partition("=")[::2] for item in declared)
    env.update({key: str(value) for key, value in declared.items()})
    return env


def container_ports(service: dict[str, Any]) -> set[int]:
    ports = {int(p) for p in service.get("expose", [])}
    for published in service.get("ports", []):
        target = published["target"] if isinstance(published, dict) else str(published).rsplit(":", 1)[-1]
        ports.add(int(str(target).split("/")[0]))
    return ports


def command_text(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else command


# --- services and health -------------------------------------------------------------------------------

def test_required_services_exist(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) >= REQUIRED_SERVICES, REQUIRED_SERVICES - set(services)


def test_every_server_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    missing = [name for name, svc in servers(services).items()
               if not svc.get("healthcheck", {}).get("test") or svc["healthcheck"].get("disable")]
    assert missing == []


def test_healthchecks_probe_ports_the_service_exposes(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in servers(services).items():
        test = svc["healthcheck"]["test"]
        text = " ".join(test) if isinstance(test, list) else test
        for host, port in URL_HOST_PORT.findall(text):
            assert host in ("localhost", "127.0.0.1"), f"{name} health check probes another host {host}"
            assert int(port) in container_ports(svc), f"{name} probes port {port} it does not expose"


def test_images_are_pinned_and_opensearch_has_knn(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        image = svc["image"]
        assert (":" in image and not image.endswith(":latest")) or "build" in svc, f"{name}: unpinned {image}"
    assert services["opensearch"]["image"] == "opensearchproject/opensearch:2.19.1"
    assert services["mongodb"]["image"].startswith("mongo:")


def test_opensearch_is_single_node_without_security_plugin_for_local_use(
        services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["opensearch"])
    assert env["discovery.type"] == "single-node"
    assert env["DISABLE_SECURITY_PLUGIN"] == "true"
    # Without the security plugin nobody may reach it from outside the host.
    assert all(str(p).startswith("127.0.0.1:") for p in services["opensearch"].get("ports", []))


def test_airflow_runs_local_executor_on_postgres(services: dict[str, dict[str, Any]]) -> None:
    airflow = {name: svc for name, svc in services.items() if name.startswith("airflow-")}
    commands = {command_text(svc).split(" ")[1] for name, svc in airflow.items() if not is_job(svc)}
    assert commands == {"api-server", "scheduler", "dag-processor", "triggerer"}
    for name, svc in airflow.items():
        env = environment(svc)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://"), name
    # Every long-running component must sign and check task tokens with the same secret.
    assert len({environment(svc)["AIRFLOW__API_AUTH__JWT_SECRET"] for svc in servers(airflow).values()}) == 1


def test_airflow_init_creates_the_crawl_pool(services: dict[str, dict[str, Any]]) -> None:
    script = command_text(services["airflow-init"])
    assert "airflow db migrate" in script
    assert f"airflow pools set {CRAWL_POOL} " in script


def test_ray_gpu_worker_reserves_the_gpus_it_announces(services: dict[str, dict[str, Any]]) -> None:
    worker = services["ray-gpu-worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    gpu = next(d for d in devices if d.get("driver") == "nvidia")
    assert "gpu" in gpu["capabilities"]
    announced = re.search(r"--num-gpus[= ](\d+)", command_text(worker))
    assert announced and int(announced.group(1)) == int(gpu["count"]) >= 1
    head = services["ray-head"]
    assert "--head" in command_text(head)
    assert "--num-gpus=0" in command_text(head)  # GPU work goes to the worker
    assert not head.get("deploy", {}).get("resources", {}).get("reservations")


def test_ray_worker_joins_the_head_on_its_gcs_port(services: dict[str, dict[str, Any]]) -> None:
    address = re.search(r"--address[= ]([\w.-]+):(\d+)", command_text(services["ray-gpu-worker"]))
    head_port = re.search(r"--port[= ](\d+)", command_text(services["ray-head"]))
    assert address and head_port
    assert address.group(1) == "ray-head"
    assert address.group(2) == head_port.group(1)
    assert int(head_port.group(1)) in container_ports(services["ray-head"])


# --- network exposure -----------------------------------------------------------------------------------

def binds_loopback(published: Any) -> bool:
    if isinstance(published, dict):
        return published.get("host_ip") == "127.0.0.1"
    return str(published).startswith("127.0.0.1:")


def test_every_published_port_binds_loopback(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        assert svc.get("network_mode") != "host", name
        for published in svc.get("ports", []):
            assert binds_loopback(published), f"{name} publishes {published} beyond 127.0.0.1"


@pytest.mark.parametrize("published", ["8080:8080", "0.0.0.0:8080:8080", "8080", {"target": 8080},
                                       {"target": 8080, "published": 8080, "host_ip": "0.0.0.0"}])
def test_loopback_check_rejects_ports_on_all_interfaces(published: Any) -> None:
    assert not binds_loopback(published)


def test_published_ports_are_ports_the_service_listens_on(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        for published in svc.get("ports", []):
            target = int(str(published).rsplit(":", 1)[-1].split("/")[0])
            assert target in {int(p) for p in svc.get("expose", [])}, f"{name}: {published}"


# --- the platform's settings --------------------------------------------------------------------------

def test_platform_variables_are_real_settings(services: dict[str, dict[str, Any]]) -> None:
    known = documented_variables()
    for name, svc in platform_services(services).items():
        unknown = sorted(v for v in environment(svc) if PLATFORM_VARIABLE.match(v) and v not in known)
        assert unknown == [], f"{name} sets variables the platform does not read: {unknown}"


def test_platform_services_point_the_library_at_the_stack(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in platform_services(services).items():
        env = environment(svc)
        assert env["TWIN_SEARCH_BACKEND"] == "opensearch", name
        assert env["OPENSEARCH_URL"] == "http://opensearch:9200", name
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        assert env["TWIN_ARTIFACTS_S3_BUCKET"] and env["TWIN_S3_ENDPOINT_URL"] == "http://s3:8333", name


def test_platform_environment_is_valid_settings(
        services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    env = environment(services["airflow-scheduler"])
    for variable in documented_variables():
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    settings = load_settings(_env_file=None)
    assert settings.search_backend == "opensearch"
    assert settings.resolved_mongodb_uri == env["MONGODB_URI"]
    assert settings.artifacts_s3_bucket == env["TWIN_ARTIFACTS_S3_BUCKET"]
    assert str(settings.data_dir) == "/opt/twin/data"


def test_urls_name_ports_their_services_listen_on(services: dict[str, dict[str, Any]]) -> None:
    checked = 0
    for name, svc in services.items():
        for variable, value in environment(svc).items():
            for host, port in URL_HOST_PORT.findall(value):
                if host not in services:
                    continue
                checked += 1
                assert int(port) in container_ports(services[host]), (
                    f"{name}: {variable} points at {host}:{port}, but {host} listens on "
                    f"{sorted(container_ports(services[host]))}")
    assert checked >= 6  # Mongo, OpenSearch, MLflow, S3, PostgreSQL, the execution API at least


def test_url_port_check_catches_a_wrong_port(services: dict[str, dict[str, Any]]) -> None:
    assert URL_HOST_PORT.findall("http://user:pw@opensearch:9201/x") == [("opensearch", "9201")]
    assert 9201 not in container_ports(services["opensearch"])


# --- startup order ------------------------------------------------------------------------------------

def test_depends_on_waits_for_health_or_completion(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        depends = svc.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions, not a bare list"
        for target, rule in depends.items():
            assert target in services, f"{name} depends on undefined {target}"
            expected = "service_completed_successfully" if is_job(services[target]) else "service_healthy"
            assert rule.get("condition") == expected, f"{name} -> {target}: {rule}"


def test_startup_order_has_no_cycle(services: dict[str, dict[str, Any]]) -> None:
    done: set[str] = set()
    remaining = set(services)
    while remaining:
        ready = {n for n in remaining if set(services[n].get("depends_on", {})) <= done}
        assert ready, f"dependency cycle among {sorted(remaining)}"
        done |= ready
        remaining -= ready


# --- volumes, files, secrets ------------------------------------------------------------------------------

def test_named_volumes_are_declared_and_bind_mounts_exist(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes", {}))
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
    assert {"postgres-data", "mongodb-data", "opensearch-data"} <= declared


def test_every_required_secret_is_in_the_template_and_left_empty() -> None:
    text = COMPOSE_FILE.read_text()
    required = {m.group(1) for m in INTERPOLATION.finditer(text) if m.group(2) in (":?", "?")}
    template = read_env_file(SECRETS_TEMPLATE)
    assert required and required <= set(template), required - set(template)
    secrets = {n for n in template if re.search(r"PASSWORD|SECRET|_KEY$", n)}
    assert secrets and all(template[n] == "" for n in secrets), "the template must hold no secret"
    with pytest.raises(KeyError, match="AIRFLOW_JWT_SECRET"):
        interpolate(text, {**filled_secrets(), "AIRFLOW_JWT_SECRET": ""})


AIRFLOW_SERVERS = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"}
# Who may hold each secret: the server it protects, and the services that use it.
SECRET_HOLDERS = {
    "POSTGRES_PASSWORD": {"postgres"},
    "AIRFLOW_DB_PASSWORD": {"postgres", "airflow-init", *AIRFLOW_SERVERS},
    "MLFLOW_DB_PASSWORD": {"postgres", "mlflow"},
    "AIRFLOW_FERNET_KEY": AIRFLOW_SERVERS,
    "AIRFLOW_JWT_SECRET": AIRFLOW_SERVERS,
    "MONGO_ROOT_PASSWORD": {"mongodb"},
    # Tasks run in the scheduler (LocalExecutor); RAG serving retrieves documents on Ray.
    "MONGO_APP_PASSWORD": {"mongodb", "airflow-scheduler", "ray-head", "ray-gpu-worker"},
    "S3_SECRET_KEY": {"s3", "s3-init", "mlflow", "airflow-apiserver", "airflow-scheduler", "ray-head",
                      "ray-gpu-worker"},
}


def secrets_seen_by(compose: dict[str, Any], name: str) -> set[str]:
    """The template's secrets whose (dummy) value reaches service `name`: environment, command, configs."""
    svc = compose["services"][name]
    text = " ".join([*environment(svc).values(), command_text(svc), str(svc.get("healthcheck", ""))])
    for config in svc.get("configs", []):
        text += compose["configs"][config["source"] if isinstance(config, dict) else config]["content"]
    return {secret for secret, value in filled_secrets().items() if secret in SECRET_HOLDERS and value in text}


def test_each_secret_reaches_only_the_services_that_use_it(compose: dict[str, Any]) -> None:
    template = read_env_file(SECRETS_TEMPLATE)
    assert {n for n in template if re.search(r"PASSWORD|SECRET", n)} <= set(SECRET_HOLDERS)
    holders: dict[str, set[str]] = {secret: set() for secret in SECRET_HOLDERS}
    for name in compose["services"]:
        for secret in secrets_seen_by(compose, name):
            holders[secret].add(name)
    assert holders == SECRET_HOLDERS


def test_secret_check_sees_a_secret_given_to_one_service_too_many(compose: dict[str, Any]) -> None:
    leaky = {**compose, "services": {**compose["services"]}}
    triggerer = dict(leaky["services"]["airflow-triggerer"])
    triggerer["environment"] = {**triggerer["environment"], "MONGODB_URI":
                                environment(compose["services"]["airflow-scheduler"])["MONGODB_URI"]}
    leaky["services"]["airflow-triggerer"] = triggerer
    assert "MONGO_APP_PASSWORD" in secrets_seen_by(leaky, "airflow-triggerer")
    assert "MONGO_APP_PASSWORD" not in secrets_seen_by(compose, "airflow-triggerer")


def test_platform_connects_to_mongodb_as_its_own_user_not_root(compose: dict[str, Any]) -> None:
    from urllib.parse import parse_qs, urlsplit

    services, secrets = compose["services"], filled_secrets()
    database = read_env_file(REPO / "docker" / "twin.env")["MONGODB_DATABASE"]
    users = set()
    for name, svc in platform_services(services).items():
        uri = environment(svc).get("MONGODB_URI")
        if uri is None:
            continue
        parts = urlsplit(uri)
        users.add(parts.username)
        assert (parts.username, parts.password) == (secrets["MONGO_APP_USER"], secrets["MONGO_APP_PASSWORD"]), name
        assert parts.hostname == "mongodb" and parts.path == f"/{database}", name
        assert parse_qs(parts.query).get("authSource") == [database], name  # the user lives in its database
    assert users == {secrets["MONGO_APP_USER"]} and secrets["MONGO_APP_USER"] != secrets["MONGO_ROOT_USER"]
    # The init script that creates that user runs on the volume's first start, as root, with readWrite only.
    mongodb = services["mongodb"]
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in mongodb["volumes"] if str(v).startswith(".")}
    script = next(REPO / src for target, src in mounts.items() if target.startswith("/docker-entrypoint-initdb.d/"))
    body = script.read_text()
    assert "createUser" in body and 'role: "readWrite", db: database' in body
    assert "roles: [{ role: \"readWrite\", db: database }]" in body  # no other role
    env = environment(mongodb)
    assert env["MONGO_APP_DATABASE"] == database
    assert env["MONGO_APP_USER"] == secrets["MONGO_APP_USER"]
    assert env["MONGO_APP_PASSWORD"] == secrets["MONGO_APP_PASSWORD"]


def test_filled_in_secrets_stay_out_of_git_and_the_image() -> None:
    assert "compose.env" in (REPO / "docker" / ".gitignore").read_text().split()
    dockerignore = (REPO / ".dockerignore").read_text().split()
    assert {"docker/compose.env", ".env", ".git", ".venv"} <= set(dockerignore)


def test_twin_env_file_holds_only_settings_and_no_secret() -> None:
    values = read_env_file(REPO / "docker" / "twin.env")
    known = documented_variables()
    assert [n for n in values if PLATFORM_VARIABLE.match(n) and n not in known] == []
    assert not [n for n in values if re.search(r"PASSWORD|SECRET|ACCESS_KEY", n)]


# --- the image ----------------------------------------------------------------------------------------

def test_dockerfile_installs_exactly_the_lock() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert "grep -E '^torch==' requirements.lock" in dockerfile
    assert re.search(r"pip install -r requirements\.lock", dockerfile)
    assert re.search(r"pip install --no-deps \.", dockerfile)
    assert re.search(r"^torch==\d", (REPO / "requirements.lock").read_text(), re.M)
    # torch before the rest, the lock before the project.
    assert dockerfile.index("'^torch=='") < dockerfile.index("-r requirements.lock") < dockerfile.index("--no-deps .")


def test_dockerfile_copies_the_platform_and_runs_unprivileged() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (?!--from)(?:--\S+ )*(\S+)/ ", dockerfile, re.M))
    assert {"include", "dags", "plugins", "serving", "training", "expectations"} <= copied
    for folder in copied:
        assert (REPO / folder).is_dir(), f"Dockerfile copies missing {folder}/"
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^ENV AIRFLOW_HOME=", dockerfile, re.M)
    assert re.search(r"^ENTRYPOINT ", dockerfile, re.M)


def test_dockerfile_points_the_installed_library_at_the_copied_folders() -> None:
    # Installed into site-packages, the library cannot find project folders relative to itself.
    dockerfile = (REPO / "Dockerfile").read_text()
    env = dict(re.findall(r"^\s*(?:ENV\s+)?([A-Z][A-Z0-9_]*)=(\S+?)\s*\\?$", dockerfile, re.M))
    platform = {name for name in env if PLATFORM_VARIABLE.match(name)}
    assert platform <= set(documented_variables()), platform - set(documented_variables())
    copied = dict(re.findall(r"^COPY (\S+)/ (\S+)/$", dockerfile, re.M))
    workdir = re.findall(r"^WORKDIR (\S+)", dockerfile, re.M)[-1]
    assert env["TWIN_EXPECTATIONS_DIR"] == f"{workdir}/{copied['expectations']}"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == f"{workdir}/{copied['dags']}"
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == f"{workdir}/{copied['plugins']}"
    # The report's scripts and styles come from the npm build stage, so the image's report works offline.
    staged = re.search(r"^COPY --from=report-assets (\S+)/ (\S+)/$", dockerfile, re.M)
    assert staged and env["TWIN_REPORT_ASSETS_DIR"] == f"{workdir}/{staged.group(2)}"
    assert "scripts/install_report_assets.sh" in dockerfile


# --- Docker's own parser, where installed ---------------------------------------------------------------

def docker_compose_or_skip() -> str:
    """The docker CLI's path; skips the test where the CLI or its compose plugin is missing."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker CLI with the compose plugin is not installed")
    return docker


def test_docker_compose_config_parses(tmp_path: Path) -> None:
    docker = docker_compose_or_skip()
    secrets = tmp_path / "compose.env"
    secrets.write_text("".join(f"{k}={v}\n" for k, v in filled_secrets().items()))
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "--project-directory", str(REPO),
         "--env-file", str(secrets), "config", "-q"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
