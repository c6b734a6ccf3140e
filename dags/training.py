"""The `training` DAG: a new dataset version -> LoRA training -> evaluation gate -> a person decides.

Scheduled on the Asset `datasets` (or triggered by hand with params author / dataset_version). Each
task calls one library function; the registry (MLflow, `twin-<author>`) is the one record.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Asset, Param, PokeReturnValue, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from twin.orchestration import (
    DATASETS_ASSET,
    MODELS_ASSET,
    authors_in_dataset_events,
    dag_doc,
    log_failure,
    task_defaults,
)
from twin.settings import get_settings

SETTINGS = get_settings()
APPROVE, REJECT = "Approve", "Reject"

DOC = """
### Training: train, evaluate, gate, then a person approves

1. **train**: the deepspeed launcher (TWIN_TRAINING_NUM_PROCS ranks, training/config.yaml or
   TWIN_TRAINING_CONFIG) trains LoRA SFT (+DPO) and registers a new version of `twin-<author>`;
   with TWIN_TRAINING_BACKEND=sagemaker the same entry point runs as a SageMaker training job.
   A retry reuses the run's output folder and resumes from its last checkpoint.
2. **evaluate**: held-out perplexity, style similarity (95% bootstrap CI) and the authorship
   check beside the base model and the champion; figures as `eval.*` tags on the version.
3. **gate**: a version that is not more the author than the base (TWIN_GATE_*) stops here.
   One that passes is alias `challenger` with tag `approval=pending`.
4. **approval** (Browse → Required Actions): Approve or Reject with a comment; no default, and
   the request expires after TWIN_APPROVAL_TIMEOUT_S without approving anything.
   **mlflow_decision** waits in parallel for a decision made in the MLflow UI: set the tag
   `approval` to `approved` or `rejected` on the challenger version (optionally `reason`,
   `approved_by`/`rejected_by`). The first decision wins; one made in MLflow (or with
   `twin model approve`) also answers the Airflow request, naming where it was made.
With the param `model_version`, the run skips training and decides on that registered version
(evaluated now, or on its recorded figures if it was evaluated before).
When the dataset events name several authors, this run trains the first; **train_other_authors**
queues one run per other author, each with its own approval.

5. **record_decision** moves the aliases (champion, previous-champion) and emits Asset `models`.
"""


@dag(
    dag_id="training",
    schedule=[Asset(DATASETS_ASSET)],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["training", "models"],
    doc_md=dag_doc(DOC),
    on_failure_callback=log_failure,
    params={"author": Param("", type="string", description="whose twin; empty: the dataset event's, else TWIN_AUTHOR"),
            "dataset_version": Param("", type="string", description="dataset version; empty: the latest"),
            "model_version": Param("", type="string",
                                   description="decide on this registered version instead of training a new one")},
    default_args=task_defaults(retries=1, retry_delay=timedelta(minutes=1)),
)
def training() -> None:
    @task(execution_timeout=timedelta(seconds=SETTINGS.training_timeout_s))
    def train(**context) -> dict:
        from twin.settings import get_settings
        from twin.training.data import untrainable_reason
        from twin.training.launch import launch_local
        from twin.training.sagemaker import launch_sagemaker

        author = _author(context)
        if existing := context["params"].get("model_version"):
            return {"author": author, "model_version": str(existing), "trained": False}
        run = context["dag_run"]
        settings = get_settings()
        if why := untrainable_reason(settings, author, context["params"].get("dataset_version") or None):
            raise AirflowSkipException(why)  # minutes of training on a set nothing can evaluate would be wasted
        # One output folder per DAG run: a retry of this task resumes from its checkpoints.
        launch = launch_sagemaker if settings.training_backend == "sagemaker" else launch_local
        return launch(settings, author, run_name=f"{run.run_id}",
                      dataset_version=context["params"].get("dataset_version") or None)

    @task(execution_timeout=timedelta(seconds=SETTINGS.training_timeout_s))  # generation on CPUs takes minutes
    def evaluate(result: dict) -> dict:
        from twin.evaluation.gate import gate_version
        from twin.settings import get_settings

        if not result.get("model_version"):
            raise RuntimeError(f"training registered no version: {result}")
        # A version evaluated before (a retry, or a hand-triggered decision) keeps its recorded figures.
        report = gate_version(get_settings(), result["author"], result["model_version"])
        return {k: report[k] for k in ("author", "version", "gate", "reasons", "perplexity", "style_gain_over_base",
                                       "authorship")}

    @task.short_circuit
    def gate(report: dict) -> bool:
        return report["gate"] == "passed"  # False skips the approval: the version is never promoted

    approval = HITLOperator(
        task_id="approval",
        subject="Promote twin-{{ ti.xcom_pull(task_ids='evaluate')['author'] }} version "
                "{{ ti.xcom_pull(task_ids='evaluate')['version'] }} to champion?",
        body="Gate passed. Style gain over base: {{ ti.xcom_pull(task_ids='evaluate')['style_gain_over_base'] }}; "
             "authorship: {{ ti.xcom_pull(task_ids='evaluate')['authorship'] }}; perplexity: "
             "{{ ti.xcom_pull(task_ids='evaluate')['perplexity'] }}. See `twin model list` and the MLflow run.",
        options=[APPROVE, REJECT],
        params={"comment": Param("", type="string", description="why (kept on the version as its reason)")},
        response_timeout=timedelta(seconds=SETTINGS.approval_timeout_s),
        retries=0,  # a retry would ask again; a timeout must stay a timeout
    )

    # mode="poke" holds one worker slot while it waits: in mode="reschedule" Airflow can fail the sensor when a
    # poke's exit is processed after the next poke was queued (apache/airflow#71172, seen here on 2 cores).
    @task.sensor(poke_interval=SETTINGS.approval_poll_s, timeout=SETTINGS.approval_timeout_s, mode="poke",
                 soft_fail=True)
    def mlflow_decision(report: dict, **context) -> PokeReturnValue:
        from twin.registry import ModelRegistry
        from twin.settings import get_settings

        if context["ti"].xcom_pull(task_ids="approval"):  # decided in Airflow: nothing to wait for
            return PokeReturnValue(is_done=True, xcom_value=None)
        info = ModelRegistry(get_settings()).get(report["author"], report["version"])
        done = info.approval in ("approved", "rejected")
        return PokeReturnValue(is_done=done, xcom_value=info.approval if done else None)

    # Upstream are only the two ways of deciding: the report is pulled, not passed, because an XCom argument
    # would make `evaluate` an upstream too, and its success would satisfy one_success before anyone decided.
    @task(trigger_rule="one_success", outlets=[Asset(MODELS_ASSET)])
    def record_decision(**context) -> dict:
        from twin.registry import APPROVED, ModelRegistry
        from twin.settings import get_settings

        report = context["ti"].xcom_pull(task_ids="evaluate")
        registry = ModelRegistry(get_settings())
        author, version = report["author"], report["version"]
        answer = context["ti"].xcom_pull(task_ids="approval")
        if answer and answer.get("chosen_options"):
            user = answer.get("responded_by_user") or {}
            by = user.get("name") or user.get("id") or "airflow user"
            comment = (answer.get("params_input") or {}).get("comment", "")
            if answer["chosen_options"][0] == APPROVE:
                registry.approve(author, version, by=by, source="airflow", reason=comment)
            else:
                registry.reject(author, version, by=by, source="airflow", reason=comment or "rejected in Airflow")
        else:
            registry.apply_ui_decision(author, version)
            _answer_open_request(context, registry.get(author, version))
        info = registry.get(author, version)
        if info.approval != APPROVED:
            raise AirflowSkipException(f"version {version} {info.approval or 'undecided'}: champion unchanged")
        context["outlet_events"][Asset(MODELS_ASSET)].extra = {"author": author, "version": version}
        return {"author": author, "version": version, "aliases": info.aliases, "approval": info.approval}

    @task
    def other_authors(**context) -> list[dict]:
        """The other authors the dataset events name: each gets a training run, and an approval, of its own."""
        if context["params"].get("author") or context["params"].get("model_version"):
            return []
        run_id = context["dag_run"].run_id
        return [{"trigger_run_id": f"{run_id}__{author}", "conf": {"author": author, "dataset_version": version or ""}}
                for author, version in _event_authors(context)[1:]]

    # Queued behind this run (max_active_runs=1); a rerun finds its runs already there and triggers none twice.
    TriggerDagRunOperator.partial(task_id="train_other_authors", trigger_dag_id="training",
                                  skip_when_already_exists=True).expand_kwargs(other_authors())
    report = evaluate(train())
    waiting = gate(report)
    sensor = mlflow_decision(report)
    waiting >> [approval, sensor]
    [approval, sensor] >> record_decision()


def _answer_open_request(context: dict, info) -> None:
    """A decision made outside Airflow (MLflow UI, CLI) also answers the Airflow request: otherwise it stays
    open, and this run with it, until TWIN_APPROVAL_TIMEOUT_S, holding back the next training runs."""
    import logging

    from twin.airflow_client import answer_request_as_admin
    from twin.registry import APPROVED, REJECTED

    if info.approval not in (APPROVED, REJECTED):
        return  # nothing decided: the request stays for a person
    source = info.tags.get("approval_source", "mlflow-ui")
    by = info.tags.get("approved_by") or info.tags.get("rejected_by") or "unknown"
    comment = f"decided in {source} by {by}: {info.tags.get('reason', '')}".rstrip(": ")
    why_not = answer_request_as_admin(get_settings(), "training", context["dag_run"].run_id, "approval",
                                      APPROVE if info.approval == APPROVED else REJECT, comment)
    if why_not:
        logging.getLogger(__name__).warning("the approval request stays open until it expires: %s", why_not)


def _event_authors(context: dict) -> list[tuple[str, str | None]]:
    """(author, dataset version) of each author the triggering dataset events name."""
    extras = [event.extra or {} for events in (context.get("triggering_asset_events") or {}).values()
              for event in events]
    return authors_in_dataset_events(extras)


def _author(context: dict) -> str:
    """The author: the run's param, else the first the triggering dataset events name, else TWIN_AUTHOR."""
    named = _event_authors(context)
    author = context["params"].get("author") or (named[0][0] if named else None) or get_settings().author
    if not author:
        raise ValueError("no author: set the DAG param author, TWIN_AUTHOR, or emit datasets with extra.author")
    return author


training()
