"""`twin demo`: the whole platform end to end on the embedded defaults, through the real scheduler.

It starts the local stack, serves the bundled sample corpus on 127.0.0.1, triggers the `smoke` and
`crawl` DAGs through Airflow's REST API, waits for the Asset-triggered `etl` and `features` runs, and
prints where to look. The stack stays up afterwards; `twin stack down` stops it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from twin.airflow_client import FINISHED, AirflowClient, DagRun
from twin.settings import Settings, documented_variables, get_settings

PIPELINE_DAGS = ["smoke", "crawl", "etl", "features", "datasets", "training"]
# The demo builds one author's datasets from a few passages: the packaged model writes about one
# instruction and one answer per passage and second on 2 cores, so a full corpus would take long.
DEMO_AUTHOR = "mara-lindqvist"
DEMO_DATASET_PASSAGES = 8
# The demo's datasets and evaluation settings, each unless the user set it. The packaged 135M generator
# writes a usable question for about one passage in four: the others are asked about their document's
# title, so the set has rows to train on and to hold out. The evaluation is sized for 2 cores: fewer
# held-out examples, shorter answers and fewer grounding examples than the defaults.
DEMO_SETTINGS = {"TWIN_DATASET_TITLE_FALLBACK": "true", "TWIN_EVAL_MAX_EXAMPLES": "8", "TWIN_EVAL_MAX_NEW_TOKENS": "64",
                 "TWIN_EVAL_GROUNDING_EXAMPLES": "4"}
# The question the demo asks the demo author's twin (her post on idempotent backfills answers it).
DEMO_QUESTION = "What rules make a backfill safe to run twice, and why overwrite the whole partition?"
SAMPLE_QUESTION = "How long should a sourdough starter ferment before baking?"


class DemoError(RuntimeError):
    pass


@dataclass
class DemoPaths:
    root: Path
    repository: Path = field(init=False)
    export: Path = field(init=False)
    sources: Path = field(init=False)

    def __post_init__(self) -> None:
        self.repository = self.root / "pipeline-kit"
        self.export = self.root / "exports" / "tomas-okafor-x-export.zip"
        self.sources = self.root / "sources.yaml"


@dataclass
class StageClock:
    """Times each stage of the demo and says where to look at what it made."""

    console: Console
    stages: list[tuple[str, float, str]] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str, where: str = "") -> Iterator[None]:
        self.console.rule(f"[bold]{name}")
        started = time.monotonic()
        try:
            yield
        finally:
            elapsed = time.monotonic() - started
            self.stages.append((name, elapsed, where))
            self.console.print(f"[dim]{name}: {elapsed:.1f} s[/]")

    def summary(self) -> Table:
        table = Table(title="Demo stages")
        for column in ("stage", "seconds", "where to look"):
            table.add_column(column, justify="right" if column == "seconds" else "left")
        for name, elapsed, where in self.stages:
            table.add_row(name, f"{elapsed:.1f}", where)
        table.add_row("total", f"{sum(e for _, e, _ in self.stages):.1f}", "")
        return table


def prepare_corpus(paths: DemoPaths, base_url: str) -> Path:
    """Build the sample repository and export (stable paths, so reruns crawl the same links)."""
    from twin.demo import build_sample_export, build_sample_repository, write_sources

    paths.root.mkdir(parents=True, exist_ok=True)
    build_sample_repository(paths.repository)
    paths.export.parent.mkdir(parents=True, exist_ok=True)
    build_sample_export(paths.export)
    return write_sources(base_url, paths.repository, paths.export, paths.sources)


def _with_demo_sources(settings: Settings) -> Settings:
    """Without a sources file of the user's own, the stack's scheduled crawls read the demo's."""
    if "TWIN_SOURCES_FILE" in os.environ or settings.sources_file.exists():
        return settings
    os.environ["TWIN_SOURCES_FILE"] = str(DemoPaths(settings.data_dir / "demo").sources)
    get_settings.cache_clear()
    return get_settings()


def _with_demo_dataset_limits(settings: Settings) -> Settings:
    """On the demo's corpus, the Asset-triggered `datasets` run builds one author's sets from a few
    passages, unless the user named an author or a limit (TWIN_AUTHOR, TWIN_DATASET_MAX_PASSAGES)."""
    if settings.sources_file != DemoPaths(settings.data_dir / "demo").sources:
        return settings
    author = settings.author or DEMO_AUTHOR
    limit = settings.dataset_max_passages or DEMO_DATASET_PASSAGES
    # In the environment, so that the stack's Airflow processes started next see them too.
    os.environ["TWIN_AUTHOR"], os.environ["TWIN_DATASET_MAX_PASSAGES"] = author, str(limit)
    for name, value in DEMO_SETTINGS.items():
        os.environ.setdefault(name, value)
    get_settings.cache_clear()
    # The stack hands its processes the settings object's values as variables, over the environment: so
    # the settings it gets must carry them too.
    demo, fields = get_settings(), documented_variables()
    names = ["TWIN_AUTHOR", "TWIN_DATASET_MAX_PASSAGES", *DEMO_SETTINGS]
    return settings.model_copy(update={fields[name]: getattr(demo, fields[name]) for name in names})


def _with_demo_crawl_allowances(settings: Settings) -> Settings:
    """The sample site is served on loopback and the demo's sources file lies in its data folder: the
    crawler refuses both unless allowed (TWIN_FETCH_ALLOWED_NETWORKS, TWIN_CRAWL_SOURCES_DIRS)."""
    networks = ",".join(filter(None, [settings.fetch_allowed_networks, "127.0.0.0/8"]))
    folders = ",".join(filter(None, [settings.crawl_sources_dirs, str(settings.data_dir / "demo")]))
    os.environ["TWIN_FETCH_ALLOWED_NETWORKS"], os.environ["TWIN_CRAWL_SOURCES_DIRS"] = networks, folders
    get_settings.cache_clear()
    return settings.model_copy(update={"fetch_allowed_networks": networks, "crawl_sources_dirs": folders})


def run_demo(settings: Settings | None = None, console: Console | None = None, timeout_s: float = 900,
             model_stages: bool = True) -> None:
    """`model_stages=False` stops after the datasets (the training DAG stays paused, nothing is served)."""
    from twin.demo import serve_sample_site
    from twin.stack.stack import ensure_stack

    settings = _with_demo_dataset_limits(_with_demo_crawl_allowances(_with_demo_sources(settings or get_settings())))
    console = console or Console()
    clock = StageClock(console)
    console.rule("[bold]LLM twin demo")
    console.print(f"data folder: {settings.data_dir}  sources: {settings.sources_file}")

    with clock.stage("local stack", "twin stack status"):
        stack = ensure_stack(settings, progress=lambda line: console.print(f"  stack: {line}"))
    user, password = stack.airflow_credentials()
    if not password:
        raise DemoError("the Airflow API server has not written its admin password yet; see twin stack status")

    server, base_url = serve_sample_site(settings.demo_site_port)
    try:
        sources = prepare_corpus(DemoPaths(settings.data_dir / "demo"), base_url)
        console.print(f"sample site: {base_url}  sources: {sources}")
        airflow = AirflowClient(f"http://{settings.host}:{settings.airflow_port}", user, password)
        ui = f"http://{settings.host}:{settings.airflow_port}"
        try:
            started = datetime.now(UTC)
            dags = PIPELINE_DAGS if model_stages else [d for d in PIPELINE_DAGS if d != "training"]
            if _run_pipelines(airflow, sources, clock, timeout_s, ui, started, dags) and model_stages:
                _train_and_approve(airflow, settings, clock, timeout_s, ui, started)
        finally:
            airflow.close()
    finally:
        server.stop()
    if model_stages:
        _serve_and_ask(settings, clock)
    _print_results(settings, console, user, password)
    _show_commands(console)
    console.print(clock.summary())


def _run_pipelines(airflow: AirflowClient, sources: Path, clock: StageClock, timeout_s: float, ui: str,
                   started: datetime, dags: list[str]) -> bool:
    """Crawl through datasets; True when new datasets were built (so the training DAG was triggered)."""
    console = clock.console
    for dag_id in dags:
        airflow.wait_for_dag(dag_id, timeout=120)
        if dag_id != "crawl":
            airflow.unpause(dag_id)

    with clock.stage("smoke", f"{ui}/dags/smoke"):
        smoke = airflow.trigger("smoke")
        _expect_success(airflow, airflow.wait_for_run("smoke", smoke.run_id, timeout_s), console)

    with clock.stage("crawl", f"{ui}/dags/crawl"):
        crawl = airflow.trigger("crawl", conf={"sources_file": str(sources)})
        # On its first unpause the daily crawl also schedules a run for the latest interval; with
        # max_active_runs=1 it may run before ours, and then ours finds nothing new.
        airflow.unpause("crawl")
        console.print(f"crawl: triggered run {crawl.run_id}")
        _expect_success(airflow, airflow.wait_for_run("crawl", crawl.run_id, timeout_s), console)
    # Each producer updates its Asset only when something changed; a rerun on an unchanged corpus
    # therefore triggers nothing downstream, which is the point.
    for producer, announce, consumer, where in (
            ("crawl", "publish_raw_documents", "etl", "twin quality report"),
            ("etl", "announce_cleaned_documents", "features", "twin search / twin eval retrieval"),
            ("features", "announce_chunks", "datasets", "twin dataset list")):
        producer_runs = [r for r in airflow.runs_queued_since(producer, started) if r.state in FINISHED]
        if not any(airflow.task_state(producer, r.run_id, announce) == "success" for r in producer_runs):
            console.print(f"{producer}: nothing changed, so {consumer} was not triggered")
            return False
        with clock.stage(consumer, f"{ui}/dags/{consumer}; {where}"):
            run = airflow.wait_for_triggered_run(consumer, started, timeout=timeout_s)
            _expect_success(airflow, run, console)
    return True


def _train_and_approve(airflow: AirflowClient, settings: Settings, clock: StageClock, timeout_s: float, ui: str,
                       started: datetime) -> None:
    """The Asset-triggered `training` run trains, evaluates and gates; then it waits for a person, whom
    the demo stands in for with `twin model approve`, exactly as a user would type it."""
    from twin.registry import ModelRegistry
    from twin.training.data import untrainable_reason

    console = clock.console
    author = settings.author or DEMO_AUTHOR
    with clock.stage("training and evaluation", f"{ui}/dags/training; MLflow {settings.resolved_mlflow_uri}"):
        run = _wait_for_tasks(airflow, console, "training", started, ("gate",), timeout_s)
        if airflow.task_state("training", run.run_id, "train") == "skipped":
            console.print(f"[yellow]training skipped: {untrainable_reason(settings, author)}[/]. The base model "
                          f"serves. For a full set: twin dataset build --author {author}, then trigger the DAG "
                          "training (Airflow UI) or run twin train")
            return
        version = ModelRegistry(settings).list(author)[-1]
        console.print(f"training: version {version.version} of twin-{author}, gate {version.tags.get('gate')}")
        _run_twin(console, ["model", "list", "--author", author])
    if version.tags.get("gate") != "passed":
        console.print(f"[yellow]version {version.version} did not pass the gate, so nobody is asked to approve "
                      "it and the base model keeps serving[/]")
        return
    with clock.stage("approval", f"{ui} (Browse, Required Actions) or the MLflow UI"):
        console.print("The training run now waits for a person: Approve in the Airflow UI (Browse, Required "
                      f"Actions), or set the tag approval=approved on version {version.version} in the MLflow UI. "
                      "The demo approves from the command line:")
        _run_twin(console, ["model", "approve", version.version, "--author", author,
                            "--reason", "approved by make demo"], check=True)
        _wait_for_tasks(airflow, console, "training", started, ("record_decision",), timeout_s, run=run)


def _wait_for_tasks(airflow: AirflowClient, console: Console, dag_id: str, after: datetime, tasks: tuple[str, ...],
                    timeout_s: float, run: DagRun | None = None, poll_s: float = 3.0) -> DagRun:
    """Wait until the tasks of the run queued after `after` finished (a waiting DAG run never does)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = [run] if run else airflow.runs_queued_since(dag_id, after)
        for candidate in runs:
            states = [airflow.task_state(dag_id, candidate.run_id, task) for task in tasks]
            if all(state in ("success", "skipped") for state in states):
                return candidate
            if any(state in ("failed", "upstream_failed") for state in states):
                _expect_success(airflow, airflow.get_run(dag_id, candidate.run_id), console)
        time.sleep(poll_s)
    raise DemoError(f"{dag_id}: {', '.join(tasks)} did not finish within {timeout_s:.0f} s; see the Airflow UI")


def _run_twin(console: Console, args: list[str], check: bool = False) -> None:
    twin = str(Path(sys.executable).parent / "twin")
    console.rule(f"$ twin {shlex.join(args)}")
    result = subprocess.run([twin, *args], check=False)
    if check and result.returncode:
        raise DemoError(f"twin {shlex.join(args)} failed (exit {result.returncode})")


def _serve_and_ask(settings: Settings, clock: StageClock) -> None:
    """Deploy the twin and its RAG service on the stack's Ray Serve, ask one question, show the canary."""
    api, console = f"http://{settings.host}:{settings.serve_port}", clock.console
    with clock.stage("serving", f"{api} (web page), {api}/docs (API)"):
        _run_twin(console, ["serve", "up"], check=True)
    with clock.stage("a question", f"twin ask \"...\"; traces in MLflow {settings.resolved_mlflow_uri}"):
        _run_twin(console, ["ask", DEMO_QUESTION, "--author", settings.author or DEMO_AUTHOR], check=True)
    with clock.stage("canary", "twin model canary status; DAG canary"):
        _run_twin(console, ["model", "canary", "status", "--author", settings.author or DEMO_AUTHOR])


def _expect_success(airflow: AirflowClient, run: DagRun, console: Console) -> None:
    if run.state != "success":
        tails = airflow.failed_task_logs(run.dag_id, run.run_id)
        for task, lines in tails.items():
            if lines:
                console.rule(f"[red]{run.dag_id}.{task}: the end of its log")
                console.print("\n".join(lines), markup=False, highlight=False)
        names = list(tails)
        raise DemoError(f"{run.dag_id} run {run.run_id} ended {run.state}; failed tasks: {names}. "
                        "The end of each failed task's log is printed above; the Airflow UI has the whole log.")
    console.print(f"[green]{run.dag_id}[/]: run {run.run_id} succeeded")


def _show_commands(console: Console) -> None:
    """Run the commands a user runs next, exactly as they would type them."""
    for args in (["search", SAMPLE_QUESTION, "-k", "3"], ["quality", "report"], ["eval", "retrieval"],
                 ["dataset", "list"]):
        _run_twin(console, args)


def _print_results(settings: Settings, console: Console, user: str, password: str) -> None:
    from twin.storage.documents import Collections, DocumentStore

    with DocumentStore.from_settings(settings) as store:
        counts = {name: store.count(name) for name in (
            Collections.RAW_DOCUMENTS, Collections.CLEANED_DOCUMENTS, Collections.QUARANTINE, Collections.CRAWL_RUNS)}
    table = Table(title="What the pipelines produced")
    table.add_column("collection")
    table.add_column("records", justify="right")
    for name, count in counts.items():
        table.add_row(str(name), str(count))
    console.print(table)

    where = Table(title="Where to look", show_header=False)
    where.add_row("Airflow UI", f"http://{settings.host}:{settings.airflow_port}  (user {user}, password {password})")
    where.add_row("MLflow UI", settings.resolved_mlflow_uri)
    where.add_row("Ray dashboard", f"http://{settings.host}:{settings.ray_dashboard_port}")
    where.add_row("Data-quality report", "twin quality report")
    where.add_row("Search", f'twin search "{SAMPLE_QUESTION}"')
    where.add_row("Retrieval metrics", "twin eval retrieval")
    where.add_row("Fine-tuning datasets", f"twin dataset list / show VERSION  ({settings.author or 'every author'}, "
                  f"{settings.dataset_max_passages or 'all'} passages; artifacts under datasets/)")
    where.add_row("Logs", str(settings.logs_dir))
    where.add_row("Stop everything", "twin stack down")
    console.print(where)
