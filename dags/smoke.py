"""Smoke DAG: write a document, index it, log an MLflow run. Run on demand (`make demo` runs it)."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from twin.orchestration import dag_doc, log_failure, task_defaults

default_args = task_defaults(retries=1, retry_delay=timedelta(seconds=10), execution_timeout=timedelta(minutes=10))


# One run at a time: the smoke index holds a single chunk that each run replaces.
@dag(dag_id="smoke", schedule=None, catchup=False, max_active_runs=1, default_args=default_args,
     tags=["twin", "smoke"], doc_md=dag_doc(__doc__), on_failure_callback=log_failure)
def smoke():
    @task
    def write_document(dag_run=None) -> dict:
        from twin.smoke import write_smoke_document

        return write_smoke_document(dag_run.run_id)

    @task
    def index_document(written: dict) -> dict:
        from twin.smoke import index_smoke_document

        return index_smoke_document(written["document_id"])

    @task
    def log_run(written: dict, indexed: dict) -> dict:
        from twin.smoke import log_smoke_run

        return log_smoke_run(written["document_id"], indexed)

    written = write_document()
    log_run(written, index_document(written))


smoke()
