"""The `etl` DAG: raw documents -> validated, cleaned documents; quarantine; data-quality report.

Runs whenever the crawl updates the `raw_documents` Asset. Each task calls one library function.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from twin.orchestration import CLEANED_DOCUMENTS_ASSET, RAW_DOCUMENTS_ASSET, dag_doc, log_failure, task_defaults

DOC = """
### ETL: clean, validate, quarantine

Cleans every raw document changed since the last successful run, validates it with the Great
Expectations suites in `expectations/`, stores it in `cleaned_documents` (duplicates with
`duplicate_of`) or in `quarantine` with the expectations it failed.

**Data-quality report (latest):** [open the Data Docs](/twin-quality/index.html)
(served by the `twin_quality` plugin; `twin quality report` prints where it is stored).
"""


@dag(
    dag_id="etl",
    schedule=[Asset(RAW_DOCUMENTS_ASSET)],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # one watermark: runs must not overlap
    tags=["etl", "data-quality"],
    doc_md=dag_doc(DOC),
    on_failure_callback=log_failure,
    default_args=task_defaults(retries=2, retry_delay=timedelta(minutes=1), execution_timeout=timedelta(hours=2)),
)
def etl() -> None:
    @task
    def clean_and_validate(run_id: str | None = None) -> dict:
        from twin.etl.pipeline import QualityGateError, run_etl

        try:
            return run_etl(run_id).model_dump(mode="json")
        except QualityGateError as exc:
            # The same batch would fail again: no retries, the message says why.
            raise AirflowFailException(str(exc)) from exc

    @task(trigger_rule="all_done")  # a report is most needed when the gate failed
    def publish_quality_report(run_id: str | None = None) -> str | None:
        from twin.etl.report import publish_quality_report as publish

        report = publish(run_id or "unknown")
        return report.location if report else None

    @task(outlets=[Asset(CLEANED_DOCUMENTS_ASSET)])
    def announce_cleaned_documents(report: dict) -> None:
        if not report["changed"]:
            raise AirflowSkipException("no cleaned document changed: downstream pipelines are not triggered")

    report = clean_and_validate()
    report >> publish_quality_report()
    announce_cleaned_documents(report)


etl()
