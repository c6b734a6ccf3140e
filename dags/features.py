"""The `features` DAG: cleaned documents -> chunks -> embeddings -> search index.

Runs whenever the ETL updates the `cleaned_documents` Asset. Incremental: only documents cleaned
since the last run are chunked and embedded, and only when their chunks differ from the indexed
ones; chunks of removed or duplicate documents are deleted. Each task calls one library function.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from twin.orchestration import CHUNKS_ASSET, CLEANED_DOCUMENTS_ASSET, dag_doc, log_failure, task_defaults

DOC = """
### Features: chunk, embed, index

Chunks each changed cleaned document by kind (sizes counted with the embedding model's
tokenizer), checks the chunks with the GX suite `expectations/chunks.json`, embeds them with
TWIN_EMBEDDING_MODEL and writes them through the search index (TWIN_SEARCH_BACKEND).
A document that fails keeps its previous chunks; it is listed in the task's return value and
retried on the next run. `twin index rebuild` rebuilds the whole index with an alias swap.
"""


@dag(
    dag_id="features",
    schedule=[Asset(CLEANED_DOCUMENTS_ASSET)],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # one watermark: runs must not overlap
    tags=["features", "search"],
    doc_md=dag_doc(DOC),
    on_failure_callback=log_failure,
    default_args=task_defaults(retries=2, retry_delay=timedelta(minutes=1), execution_timeout=timedelta(hours=4)),
)
def features() -> None:
    @task
    def chunk_embed_index() -> dict:
        from twin.features.pipeline import run_features

        return run_features()

    @task(outlets=[Asset(CHUNKS_ASSET)])
    def announce_chunks(report: dict) -> None:
        if not report["changed"]:
            raise AirflowSkipException("no chunk changed: downstream pipelines are not triggered")

    announce_chunks(chunk_embed_index())


features()
