"""The `training` DAG: a new dataset version -> LoRA training -> evaluation gate -> a person decides.

Scheduled on the Asset `datasets` (or triggered by hand with params author / dataset_version). Each
task calls one library function; the registry (MLflow, `twin-<author>`) is the one record.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Asset, Param, PokeReturnValue, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from twin.orchestration import DATASETS_ASSET, DEFAULT_OWNER, MODELS_ASSET
from twin.settings import get_settings

SETTINGS = get_settings()
APPROVE, REJECT = "Approve", "Reject"

DOC = """
### Training: train, evaluate, gate, then a person approves

1. **train**: the deepspeed launcher (TWIN_TRAINING_NUM_PROCS ranks, training/config.yaml or
   TWIN_TRAINING_CONFIG) trains LoRA SFT (+DPO) and registers a new version of `twin-<author>`.
   A retry reuses the run's output folder and resumes from its last checkpoint.
2. **evaluate**: held-out perplexity, style similarity (95% bootstrap CI) and the authorship
   check beside the base model and the champion; figures as `eval.*` tags on the version.
3. **gate**: a version that is not more the author than the base (TWIN_GATE_*) stops here.
   One that passes is alias `challenger` with tag `approval=pending`.
4. **approval** (Browse → Required Actions): Approve or Reject with a comment; no default, and
   the request expires after TWIN_APPROVAL_TIMEOUT_S without approving anything.
   **mlflow_decision** waits in parallel for a decision made in the MLflow UI: set the tag
   `approval` to `approved` or `rejected` on the challenger version (optionally `reason`,
   `approved_by`/`rejected_by`). The first decision wins; a request answered in MLflow leaves
   the Airflow request open until it expires.
5. **record_decision** moves the aliases (champion, previous-champion) and emits Asset `models`.
"""


@dag(
    dag_id="training",
    schedule=[Asset(DATASETS_ASSET)],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["training", "models"],
    doc_md=DOC,
    params={"author": Param("", type="string", description="whose twin; empty: the dataset event's, else TWIN_AUTHOR"),
            "dataset_version": Param("", type="string", description="dataset version; empty: the latest")},
    default_args={"owner": DEFAULT_OWNER, "retries": 1, "retry_delay": timedelta(minutes=1)},
)
def training() -> None:
    @task(execution_timeout=timedelta(seconds=SETTINGS.training_timeout_s))
    def train(**context) -> dict:
        from twin.settings import get_settings
        from twin.training.launch import launch_local

        author = _author(context)
        run = context["dag_run"]
        # One output folder per DAG run: a retry of this task resumes from its checkpoints.
        return launch_local(get_settings(), author, run_name=f"{run.run_id}",
                            dataset_version=context["params"].get("dataset_version") or None)

    @task
    def evaluate(result: dict) -> dict:
        from twin.evaluation.gate import evaluate_and_gate
        from twin.settings import get_settings

        if not result.get("model_version"):
            raise RuntimeError(f"training registered no version: {result}")
        report = evaluate_and_gate(get_settings(), result["author"], result["model_version"])
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

    @task.sensor(poke_interval=SETTINGS.approval_poll_s, timeout=SETTINGS.approval_timeout_s, mode="reschedule",
                 soft_fail=True)
    def mlflow_decision(report: dict, **context) -> PokeReturnValue:
        from twin.registry import ModelRegistry
        from twin.settings import get_settings

        if context["ti"].xcom_pull(task_ids="approval"):  # decided in Airflow: nothing to wait for
            return PokeReturnValue(is_done=True, xcom_value=None)
        info = ModelRegistry(get_settings()).get(report["author"], report["version"])
        done = info.approval in ("approved", "rejected")
        return PokeReturnValue(is_done=done, xcom_value=info.approval if done else None)

    @task(trigger_rule="one_success", outlets=[Asset(MODELS_ASSET)])
    def record_decision(report: dict, **context) -> dict:
        from twin.registry import APPROVED, ModelRegistry
        from twin.settings import get_settings

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
        info = registry.get(author, version)
        if info.approval != APPROVED:
            raise AirflowSkipException(f"version {version} {info.approval or 'undecided'}: champion unchanged")
        context["outlet_events"][Asset(MODELS_ASSET)].extra = {"author": author, "version": version}
        return {"author": author, "version": version, "aliases": info.aliases, "approval": info.approval}

    report = evaluate(train())
    waiting = gate(report)
    sensor = mlflow_decision(report)
    waiting >> [approval, sensor]
    [approval, sensor] >> record_decision(report)


def _author(context: dict) -> str:
    """The author: the run's param, else the triggering dataset event's, else TWIN_AUTHOR."""
    author = context["params"].get("author")
    for events in (context.get("triggering_asset_events") or {}).values():
        for event in events:
            author = author or (event.extra or {}).get("author")
    author = author or get_settings().author
    if not author:
        raise ValueError("no author: set the DAG param author, TWIN_AUTHOR, or emit datasets with extra.author")
    return author


training()
