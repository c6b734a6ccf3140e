"""The `datasets` DAG: each author's passages -> instruction and preference datasets, versioned.

Runs whenever the features DAG updates the `chunks` Asset (or by hand, for one author and a
passage limit). One mapped task per author; each calls one library function. Generator replies
are cached, so a run over an unchanged corpus generates nothing and makes no new version; the
`datasets` Asset is updated only when some author got a new version.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, Param, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from twin.orchestration import CHUNKS_ASSET, DATASETS_ASSET, dag_doc, log_failure, task_defaults

DOC = """
### Datasets: the author's voice as fine-tuning data

For every passage of an author (TWIN_AUTHOR, or the `author` parameter; empty means every
author), the generator (TWIN_LLM_BACKEND, TWIN_LLM_MODEL) writes the question the passage answers;
the answer is the passage verbatim. The base model (TWIN_BASE_MODEL) answers the same question
for the preference set's rejected side. Filters are counted, the split is seeded and stratified by
kind, the rows pass the GX suites `expectations/datasets_*.json`, and each version lands in the
artifact store under `datasets/<author>/<version>/` with its `manifest.json`, logged to MLflow as
dataset inputs. `twin dataset list | show | diff` reads them.
"""


@dag(
    dag_id="datasets",
    schedule=[Asset(CHUNKS_ASSET)],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # one generation cache writer per author at a time
    tags=["datasets", "model"],
    doc_md=dag_doc(DOC),
    on_failure_callback=log_failure,
    params={"author": Param("", type="string", description="Author id; empty: TWIN_AUTHOR, else every author."),
            "limit": Param(0, type="integer", minimum=0,
                           description="Most passages per author; 0: TWIN_DATASET_MAX_PASSAGES, else all.")},
    default_args=task_defaults(retries=2, retry_delay=timedelta(minutes=1), execution_timeout=timedelta(minutes=10)),
)
def datasets() -> None:
    @task
    def authors(params=None) -> list[str]:
        from twin.datasets.builder import DatasetError, authors_to_build

        try:
            return authors_to_build((params or {}).get("author") or None)
        except DatasetError as exc:
            raise AirflowFailException(str(exc)) from exc  # a wrong author stays wrong on a retry

    @task(execution_timeout=timedelta(hours=6), max_active_tis_per_dagrun=1)  # generation is the long part
    def build(author: str, params=None) -> dict:
        from twin.datasets.builder import build_dataset

        return build_dataset(author, limit=(params or {}).get("limit") or None)

    @task(outlets=[Asset(DATASETS_ASSET)])
    def announce_datasets(reports: list[dict], outlet_events=None) -> list[str]:
        changed = [f"{r['author_id']}/{r['version']}" for r in reports if r["changed"]]
        if not changed:
            raise AirflowSkipException("no dataset changed: training is not triggered")
        # The training DAG reads whose twin to train from the event (without it: TWIN_AUTHOR or a failure).
        first = next(r for r in reports if r["changed"])
        outlet_events[Asset(DATASETS_ASSET)].extra = {"author": first["author_id"], "version": first["version"],
                                                      "changed": changed}
        return changed

    announce_datasets(build.expand(author=authors()))


datasets()
