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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from twin.airflow_client import FINISHED, AirflowClient, AirflowError, DagRun
from twin.settings import Settings, get_settings

PIPELINE_DAGS = ["smoke", "crawl", "etl", "features", "datasets"]
# The demo builds one author's datasets from a few passages: the packaged model writes about one
# instruction and one answer per passage and second on 2 cores, so a full corpus would take long.
DEMO_AUTHOR = "mara-lindqvist"
DEMO_DATASET_PASSAGES = 8
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
    get_settings.cache_clear()
    return settings.model_copy(update={"author": author, "dataset_max_passages": limit})


def _with_demo_crawl_allowances(settings: Settings) -> Settings:
    """The sample site is served on loopback and the demo's sources file lies in its data folder: the
    crawler refuses both unless allowed (TWIN_FETCH_ALLOWED_NETWORKS, TWIN_CRAWL_SOURCES_DIRS)."""
    networks = ",".join(filter(None, [settings.fetch_allowed_networks, "127.0.0.0/8"]))
    folders = ",".join(filter(None, [settings.crawl_sources_dirs, str(settings.data_dir / "demo")]))
    os.environ["TWIN_FETCH_ALLOWED_NETWORKS"], os.environ["TWIN_CRAWL_SOURCES_DIRS"] = networks, folders
    get_settings.cache_clear()
    return settings.model_copy(update={"fetch_allowed_networks": networks, "crawl_sources_dirs": folders})


def run_demo(settings: Settings | None = None, console: Console | None = None, timeout_s: float = 900) -> None:
    from twin.demo import serve_sample_site
    from twin.stack.stack import ensure_stack

    settings = _with_demo_dataset_limits(_with_demo_crawl_allowances(_with_demo_sources(settings or get_settings())))
    console = console or Console()
    console.rule("[bold]LLM twin demo")
    console.print(f"data folder: {settings.data_dir}  sources: {settings.sources_file}")

    stack = ensure_stack(settings, progress=lambda line: console.print(f"  stack: {line}"))
    user, password = stack.airflow_credentials()
    if not password:
        raise DemoError("the Airflow API server has not written its admin password yet; see twin stack status")

    server, base_url = serve_sample_site(settings.demo_site_port)
    try:
        sources = prepare_corpus(DemoPaths(settings.data_dir / "demo"), base_url)
        console.print(f"sample site: {base_url}  sources: {sources}")
        airflow = AirflowClient(f"http://{settings.host}:{settings.airflow_port}", user, password)
        try:
            _run_pipelines(airflow, sources, console, timeout_s)
        finally:
            airflow.close()
    finally:
        server.stop()
    _print_results(settings, console, user, password)
    _show_commands(console)


def _run_pipelines(airflow: AirflowClient, sources: Path, console: Console, timeout_s: float) -> None:
    for dag_id in PIPELINE_DAGS:
        airflow.wait_for_dag(dag_id, timeout=120)
        if dag_id != "crawl":
            airflow.unpause(dag_id)

    smoke = airflow.trigger("smoke")
    _expect_success(airflow, airflow.wait_for_run("smoke", smoke.run_id, timeout_s), console)

    started = datetime.now(UTC)
    crawl = airflow.trigger("crawl", conf={"sources_file": str(sources)})
    # On its first unpause the daily crawl also schedules a run for the latest interval; with
    # max_active_runs=1 it may run before ours, and then ours finds nothing new.
    airflow.unpause("crawl")
    console.print(f"crawl: triggered run {crawl.run_id}")
    _expect_success(airflow, airflow.wait_for_run("crawl", crawl.run_id, timeout_s), console)
    # Each producer updates its Asset only when something changed; a rerun on an unchanged corpus
    # therefore triggers nothing downstream, which is the point.
    for producer, announce, consumer in (("crawl", "publish_raw_documents", "etl"),
                                         ("etl", "announce_cleaned_documents", "features"),
                                         ("features", "announce_chunks", "datasets")):
        producer_runs = [r for r in airflow.runs_queued_since(producer, started) if r.state in FINISHED]
        if not any(airflow.task_state(producer, r.run_id, announce) == "success" for r in producer_runs):
            console.print(f"{producer}: nothing changed, so {consumer} was not triggered")
            return
        run = airflow.wait_for_triggered_run(consumer, started, timeout=timeout_s)
        _expect_success(airflow, run, console)


def _expect_success(airflow: AirflowClient, run: DagRun, console: Console) -> None:
    if run.state != "success":
        failed = airflow.failed_task_instances(run.dag_id, run.run_id)
        for task in failed:
            if task.get("state") != "failed":
                continue
            console.rule(f"[red]{run.dag_id}.{task['task_id']} failed: the end of its log")
            try:
                console.print("\n".join(airflow.task_log_tail(run.dag_id, run.run_id, task)), markup=False,
                              highlight=False)
            except AirflowError as error:
                console.print(f"(its log could not be read: {error})", markup=False)
        names = [f"{t['task_id']} ({t.get('state')})" for t in failed]
        raise DemoError(f"{run.dag_id} run {run.run_id} ended {run.state}; failed tasks: {names}. "
                        "The end of each failed task's log is printed above; the Airflow UI has the whole log.")
    console.print(f"[green]{run.dag_id}[/]: run {run.run_id} succeeded")


def _show_commands(console: Console) -> None:
    """Run the commands a user runs next, exactly as they would type them."""
    twin = str(Path(sys.executable).parent / "twin")
    for args in (["search", SAMPLE_QUESTION, "-k", "3"], ["quality", "report"], ["eval", "retrieval"],
                 ["dataset", "list"]):
        console.rule(f"$ twin {shlex.join(args)}")
        subprocess.run([twin, *args], check=False)


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
