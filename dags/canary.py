"""The `canary` DAG: every hour, compare each active canary's challenger with the champion and decide.

One mapped task per author with an active canary (a challenger version and a share above 0). Each
task calls twin.canary.apply.run: the stated tests of twin.canary.compare, then promote (alias
champion, previous-champion kept), roll back (share 0) or wait; the decision and its figures land as
tags on the challenger version and in the task log.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task

from twin.orchestration import dag_doc, log_failure, task_defaults

DOC = """
### Canary: promote or roll back the challenger from live traffic

Serve sends the configured share of `/v1/ask` and `/v1/chat/completions` to a challenger
(`twin model canary set`); every request and rating lands in `served_requests` and `feedback`.
For each author with an active canary this DAG:

- **rolls back** (share 0, tags `canary=rolled-back`, `canary_reason`) when the challenger's error
  rate or p95 latency is significantly above TWIN_CANARY_MAX_ERROR_RATE / TWIN_CANARY_MAX_P95_LATENCY_MS
  (exact binomial tests), or significantly worse than the champion's beyond the margins;
- **promotes** (alias `champion`, the old one `previous-champion`, tag `canary=promoted`) when both
  versions saw TWIN_CANARY_MIN_REQUESTS requests, the challenger is shown non-inferior in error rate
  (two-proportion z-test), latency (Mann-Whitney U) and, with enough ratings, thumbs-up rate, and a
  person approved it (tag `approval=approved`);
- **waits** otherwise, saying why (tag `canary=waiting`).

`twin model canary status` shows the same figures and p-values.
"""


@dag(
    dag_id="canary",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # one decision per canary at a time
    tags=["canary", "models"],
    doc_md=dag_doc(DOC),
    on_failure_callback=log_failure,
    default_args=task_defaults(retries=2, retry_delay=timedelta(minutes=1), execution_timeout=timedelta(minutes=10)),
)
def canary() -> None:
    @task
    def active_canaries() -> list[str]:
        from twin.canary.store import CanaryStore

        return CanaryStore.from_settings().authors_with_canary()

    @task
    def decide(author: str) -> dict:
        from twin.canary.apply import run
        from twin.settings import get_settings

        return run(author, get_settings())

    decide.expand(author=active_canaries())


canary()
