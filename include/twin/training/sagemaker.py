"""The `sagemaker` launch backend: the same training/train.py, config YAML and DeepSpeed JSON, run as a
SageMaker training job (TWIN_TRAINING_BACKEND=sagemaker).

The request is built here from the training config and handed to SageMaker's CreateTrainingJob (the
shape the amazon provider's SageMakerTrainingOperator takes as `config`):
- the container (TWIN_SAGEMAKER_IMAGE: a PyTorch GPU image with this project installed) runs
  `deepspeed --num_gpus G training/train.py --config … --deepspeed …` as its entry point;
- the config YAML and the DeepSpeed JSON are uploaded to S3 and arrive as the input channel `config`;
- the dataset version is read from the S3 artifact store, as everywhere (TWIN_ARTIFACTS_S3_*);
- the run's output folder is SageMaker's checkpoint folder, synced to S3, so a restarted job (spot
  interruption, retry) resumes from its last checkpoint; the adapter goes to MLflow, which registers
  the version as on a local run (MLFLOW_TRACKING_URI must be reachable from the job).
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

from twin.settings import Settings
from twin.training.config import TrainingConfig, registered_model_name
from twin.training.trainer import REPO_ROOT

log = logging.getLogger(__name__)

CONFIG_CHANNEL = "/opt/ml/input/data/config"
CHECKPOINTS = "/opt/ml/checkpoints"
FINISHED = {"Completed", "Failed", "Stopped"}
# Settings the job needs to see to train, log and register as a local run does.
FORWARDED = ("TWIN_ARTIFACTS_S3_BUCKET", "TWIN_ARTIFACTS_S3_PREFIX", "TWIN_TRAINING_EXPERIMENT", "TWIN_LLM_SEED")


class SageMakerLaunchError(RuntimeError):
    """The job could not be started, failed, or finished without registering a version."""


def job_name(author: str, run_name: str) -> str:
    """SageMaker's job-name rule: 1-63 characters of letters, digits and hyphens."""
    name = re.sub(r"[^A-Za-z0-9-]+", "-", f"twin-{author}-{run_name}").strip("-")
    return name[:63].rstrip("-")


def _s3_uri(settings: Settings, *parts: str) -> str:
    if not settings.artifacts_s3_bucket:
        raise SageMakerLaunchError("the sagemaker backend needs TWIN_ARTIFACTS_S3_BUCKET (data and model on S3)")
    key = "/".join(p.strip("/") for p in (settings.artifacts_s3_prefix, *parts) if p.strip("/"))
    return f"s3://{settings.artifacts_s3_bucket}/{key}"


def training_job_request(settings: Settings, config: TrainingConfig, *, config_file: Path, run_name: str,
                         dataset_version: str | None = None) -> dict[str, Any]:
    """The CreateTrainingJob request of one run (also the SageMakerTrainingOperator's `config`)."""
    if not settings.sagemaker_role_arn or not settings.sagemaker_image:
        raise SageMakerLaunchError("the sagemaker backend needs TWIN_SAGEMAKER_ROLE_ARN and TWIN_SAGEMAKER_IMAGE")
    if config.deepspeed is None:
        raise SageMakerLaunchError("the training config names no DeepSpeed JSON (deepspeed: ds_zero2.json)")
    name = job_name(config.author, run_name)
    args = ["--num_gpus", str(settings.sagemaker_gpus_per_instance), "training/train.py",
            "--config", f"{CONFIG_CHANNEL}/{config_file.name}",
            "--deepspeed", f"{CONFIG_CHANNEL}/{Path(config.deepspeed).name}",
            "--author", config.author, "--run-name", run_name, "--output-dir", f"{CHECKPOINTS}/{run_name}"]
    if dataset_version:
        args += ["--dataset-version", dataset_version]
    environment = {"MLFLOW_TRACKING_URI": settings.resolved_mlflow_uri, "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                   "TWIN_DATA_DIR": "/opt/ml/twin-data"}
    for variable in FORWARDED:
        field = variable.removeprefix("TWIN_").lower()
        value = getattr(settings, field, None)
        if value is not None:
            environment[variable] = str(value)
    return {
        "TrainingJobName": name,
        "RoleArn": settings.sagemaker_role_arn,
        "AlgorithmSpecification": {"TrainingImage": settings.sagemaker_image, "TrainingInputMode": "File",
                                   "ContainerEntrypoint": ["deepspeed"], "ContainerArguments": args},
        "InputDataConfig": [{"ChannelName": "config", "InputMode": "File", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": _s3_uri(settings, "training", "jobs", name, "config") + "/",
            "S3DataDistributionType": "FullyReplicated"}}}],
        "OutputDataConfig": {"S3OutputPath": _s3_uri(settings, "training", "jobs")},
        "CheckpointConfig": {"S3Uri": _s3_uri(settings, "training", "checkpoints", config.author, run_name),
                             "LocalPath": CHECKPOINTS},
        "ResourceConfig": {"InstanceType": settings.sagemaker_instance_type, "InstanceCount": 1,
                           "VolumeSizeInGB": settings.sagemaker_volume_gb},
        "StoppingCondition": {"MaxRuntimeInSeconds": int(settings.training_timeout_s)},
        "Environment": environment,
        "HyperParameters": {"author": config.author, "run_name": run_name, "dataset_version": dataset_version or ""},
        "Tags": [{"Key": "twin:author", "Value": config.author},
                 {"Key": "twin:registered-model", "Value": registered_model_name(config.author)}],
    }


def _clients(settings: Settings) -> tuple[Any, Any]:
    import boto3

    session = boto3.session.Session(region_name=settings.sagemaker_region)
    endpoint = settings.s3_endpoint_url  # an S3/SageMaker emulator (tests); unset: AWS
    return (session.client("s3", endpoint_url=endpoint), session.client("sagemaker", endpoint_url=endpoint))


def upload_config(settings: Settings, config_file: Path, deepspeed: Path, request: dict[str, Any], s3: Any) -> None:
    uri = request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    for path in (config_file, deepspeed):
        s3.put_object(Bucket=bucket, Key=f"{prefix}{path.name}", Body=path.read_bytes())


def launch_sagemaker(settings: Settings, author: str, *, run_name: str, config: Path | None = None,
                     dataset_version: str | None = None, poll_s: float = 30.0) -> dict[str, Any]:
    """Start the job (or follow the one of the same name: a retried DAG task does not start a second),
    wait for it, and return the version it registered (found by its MLflow run's run name)."""
    from botocore.exceptions import ClientError

    from twin.training.launch import safe_run_name

    config_file = Path(config or settings.training_config or REPO_ROOT / "training" / "config.yaml")
    training = TrainingConfig.from_yaml(config_file, author=author)
    run_name = safe_run_name(run_name)
    request = training_job_request(settings, training, config_file=config_file, run_name=run_name,
                                   dataset_version=dataset_version)
    s3, sagemaker = _clients(settings)
    name = request["TrainingJobName"]
    try:
        job = sagemaker.describe_training_job(TrainingJobName=name)
        log.info("training job %s exists (%s): following it", name, job["TrainingJobStatus"])
    except ClientError:
        upload_config(settings, config_file, Path(training.deepspeed), request, s3)
        sagemaker.create_training_job(**request)
        log.info("started training job %s", name)
    deadline = time.monotonic() + settings.training_timeout_s + 600
    while (job := sagemaker.describe_training_job(TrainingJobName=name))["TrainingJobStatus"] not in FINISHED:
        if time.monotonic() > deadline:
            raise SageMakerLaunchError(f"training job {name} still {job['TrainingJobStatus']} after the timeout")
        time.sleep(poll_s)
    if job["TrainingJobStatus"] != "Completed":
        raise SageMakerLaunchError(f"training job {name} {job['TrainingJobStatus']}: {job.get('FailureReason', '')}")
    version = registered_version(settings, author, run_name)
    if version is None:
        raise SageMakerLaunchError(f"training job {name} completed but registered no version of "
                                   f"{registered_model_name(author)} from an MLflow run named {run_name!r}")
    return {"author": author, "model_version": version, "training_job": name,
            "model_artifacts": job.get("ModelArtifacts", {}).get("S3ModelArtifacts")}


def registered_version(settings: Settings, author: str, run_name: str) -> str | None:
    """The newest version of twin-<author> registered by the run of output folder `run_name` (train.py names
    its MLflow run train-<author>-<output folder name>)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=settings.resolved_mlflow_uri, registry_uri=settings.resolved_mlflow_uri)
    try:
        versions = client.search_model_versions(f"name='{registered_model_name(author)}'")
    except MlflowException:
        return None
    for v in sorted(versions, key=lambda v: int(v.version), reverse=True):
        if v.run_id and client.get_run(v.run_id).info.run_name == f"train-{author}-{run_name}":
            return str(v.version)
    return None
