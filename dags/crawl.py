"""DAG `crawl`: every link of the sources file, one mapped task each, into MongoDB raw_documents.

Thin wiring only: each task calls one function of twin.crawl.pipeline. Import stays fast: the
library is imported inside the tasks, and nothing is read or connected at import time.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from twin.orchestration import CRAWL_POOL, DEFAULT_OWNER, RAW_DOCUMENTS_ASSET

RAW_DOCUMENTS = Asset(RAW_DOCUMENTS_ASSET)


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
    doc_md=__doc__,
    # Empty means TWIN_SOURCES_FILE; a manual run may point at another sources file.
    params={"sources_file": Param("", type="string", description="Sources YAML; empty: TWIN_SOURCES_FILE")},
    default_args={
        "owner": DEFAULT_OWNER,
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=10),
    },
)
def crawl() -> None:
    @task
    def load_links(params=None) -> list[dict]:
        from pathlib import Path

        from twin.crawl.pipeline import load_links

        sources_file = (params or {}).get("sources_file")
        return load_links(_crawl_run_id(), Path(sources_file) if sources_file else None)

    @task(pool=CRAWL_POOL, map_index_template="{{ crawl_target }}")
    def crawl_link(link: dict) -> dict:
        from twin.crawl.pipeline import crawl_link

        context = get_current_context()
        context["crawl_target"] = link.get("url") or link.get("path")  # type: ignore[typeddict-unknown-key]
        ti = context["ti"]
        # Transient errors raise (and Airflow retries) until the last try, which records them instead.
        return crawl_link(link, _crawl_run_id(), final_attempt=ti.try_number > ti.max_tries)

    @task(trigger_rule="all_done")
    def finish_run(links: list[dict], outcomes: list[dict]) -> bool:
        from twin.crawl.pipeline import finish_run

        # all_done: runs even when load_links failed, and then records an empty run instead of crashing.
        return finish_run(_crawl_run_id(), list(links or []), list(outcomes or []))

    @task(outlets=[RAW_DOCUMENTS])
    def publish_raw_documents(changed: bool) -> None:
        # A skipped task emits no asset event, so downstream DAGs run only when documents changed.
        if not changed:
            raise AirflowSkipException("no raw document new or changed in this run")

    links = load_links()
    outcomes = crawl_link.expand(link=links)
    publish_raw_documents(finish_run(links, outcomes))


crawl()
