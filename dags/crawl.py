"""DAG `crawl`: every link of the sources file, in mapped batches of links, into MongoDB raw_documents.

Airflow maps at most 1024 tasks, so links are batched (links of one host together,
TWIN_CRAWL_BATCH_LINKS per batch) and one task crawls a batch; each link still gets its own outcome
in crawl_runs. Every task has an execution_timeout (TWIN_CRAWL_TASK_TIMEOUT_S for a batch), so
no page can hold a run forever; one fetch is bounded by TWIN_FETCH_DEADLINE_S.

Thin wiring only: each task calls one function of twin.crawl.pipeline. Import stays fast: the
library is imported inside the tasks; only the settings are read at import, for the timeout.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from twin.orchestration import CRAWL_POOL, RAW_DOCUMENTS_ASSET, dag_doc, log_failure, task_defaults
from twin.settings import get_settings

RAW_DOCUMENTS = Asset(RAW_DOCUMENTS_ASSET)
SHORT_TASK_TIMEOUT = timedelta(minutes=15)  # reading the sources file, planning, recording the run


def _crawl_run_id() -> str:
    from twin.crawl.pipeline import crawl_run_id_for

    return crawl_run_id_for(get_current_context()["run_id"])


@dag(
    dag_id="crawl",
    schedule="@daily",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["twin", "crawl"],
    doc_md=dag_doc(__doc__),
    on_failure_callback=log_failure,
    # Empty means TWIN_SOURCES_FILE; a manual run may point at another sources file.
    params={"sources_file": Param("", type="string", description="Sources YAML inside the folder of "
                                  "TWIN_SOURCES_FILE or TWIN_CRAWL_SOURCES_DIRS; empty: TWIN_SOURCES_FILE")},
    default_args=task_defaults(
        execution_timeout=SHORT_TASK_TIMEOUT,
        retries=2,
        retry_delay=timedelta(seconds=30),
        retry_exponential_backoff=2.0,
        max_retry_delay=timedelta(minutes=10),
    ),
)
def crawl() -> None:
    @task
    def load_links(params=None) -> list[dict]:
        from pathlib import Path

        from twin.crawl.pipeline import load_links

        sources_file = (params or {}).get("sources_file")
        return load_links(_crawl_run_id(), Path(sources_file) if sources_file else None, from_parameter=True)

    @task
    def plan_batches(links: list[dict]) -> list[list[dict]]:
        from twin.crawl.pipeline import plan_batches

        return plan_batches(links, get_settings().crawl_batch_links)

    @task(pool=CRAWL_POOL, map_index_template="{{ crawl_batch_label }}",
          execution_timeout=timedelta(seconds=get_settings().crawl_task_timeout_s))
    def crawl_batch(batch: list[dict]) -> list[dict]:
        from twin.crawl.pipeline import crawl_batch

        context = get_current_context()
        first = batch[0].get("url") or batch[0].get("path")
        context["crawl_batch_label"] = f"{first} (+{len(batch) - 1})"  # type: ignore[typeddict-unknown-key]
        ti = context["ti"]
        # Transient errors raise (and Airflow retries) until the last try, which records them instead.
        return crawl_batch(batch, _crawl_run_id(), final_attempt=ti.try_number > ti.max_tries)

    @task(trigger_rule="all_done")
    def finish_run(links: list[dict], outcomes: list[list[dict]]) -> bool:
        from twin.crawl.pipeline import finish_run

        # all_done: runs even when load_links failed, and then records an empty run instead of crashing.
        return finish_run(_crawl_run_id(), list(links or []), [o for batch in outcomes or [] for o in batch or []])

    @task(outlets=[RAW_DOCUMENTS])
    def publish_raw_documents(changed: bool) -> None:
        # A skipped task emits no asset event, so downstream DAGs run only when documents changed.
        if not changed:
            raise AirflowSkipException("no raw document new or changed in this run")

    links = load_links()
    outcomes = crawl_batch.expand(batch=plan_batches(links))
    publish_raw_documents(finish_run(links, outcomes))


crawl()
