"""The sagemaker launch backend against moto's server (S3 and SageMaker on one loopback port).

moto stores the CreateTrainingJob request, answers DescribeTrainingJob with it and reports the job
Completed at once; it runs no container, so no version gets registered: the launcher must say so
rather than report a success. What moto does not cover: the image, the entry point actually running,
checkpoint sync, and the job's reach to MLflow.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import boto3
import pytest

from twin.training.config import TrainingConfig
from twin.training.sagemaker import (
    SageMakerLaunchError,
    job_name,
    launch_sagemaker,
    training_job_request,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "training" / "config.yaml"


@pytest.fixture
def sagemaker_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch):
    from twin.settings import get_settings

    bucket = f"twin-sm-{uuid.uuid4().hex[:8]}"
    for key, value in {"TWIN_TRAINING_BACKEND": "sagemaker", "TWIN_ARTIFACTS_S3_BUCKET": bucket,
                       "TWIN_S3_ENDPOINT_URL": s3_endpoint, "TWIN_SAGEMAKER_REGION": "us-east-1",
                       "TWIN_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/twin-training",
                       "TWIN_SAGEMAKER_IMAGE": "123456789012.dkr.ecr.us-east-1.amazonaws.com/twin-train:1",
                       "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    settings = get_settings()
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    yield settings
    get_settings.cache_clear()


def test_request_runs_train_py_under_deepspeed_with_config_and_checkpoints_on_s3(sagemaker_env) -> None:
    config = TrainingConfig.from_yaml(CONFIG, author="mara-lindqvist")
    request = training_job_request(sagemaker_env, config, config_file=CONFIG, run_name="manual-1",
                                   dataset_version="abc123")
    spec = request["AlgorithmSpecification"]
    assert spec["ContainerEntrypoint"] == ["deepspeed"]
    args = spec["ContainerArguments"]
    assert args[:3] == ["--num_gpus", "4", "training/train.py"]
    assert args[args.index("--config") + 1] == "/opt/ml/input/data/config/config.yaml"
    assert args[args.index("--deepspeed") + 1] == "/opt/ml/input/data/config/ds_zero2.json"
    assert args[args.index("--dataset-version") + 1] == "abc123"
    assert args[args.index("--output-dir") + 1] == "/opt/ml/checkpoints/manual-1"
    bucket = sagemaker_env.artifacts_s3_bucket
    assert request["CheckpointConfig"] == {"S3Uri": f"s3://{bucket}/twin/training/checkpoints/mara-lindqvist/manual-1",
                                           "LocalPath": "/opt/ml/checkpoints"}
    assert request["Environment"]["TWIN_ARTIFACTS_S3_BUCKET"] == bucket
    assert request["StoppingCondition"]["MaxRuntimeInSeconds"] == int(sagemaker_env.training_timeout_s)


def test_job_names_follow_sagemakers_rule() -> None:
    name = job_name("mara-lindqvist", "manual__2026-12-01T13:38:52.221525+00:00" * 2)
    assert len(name) <= 63 and all(c.isalnum() or c == "-" for c in name) and not name.endswith("-")


def test_missing_role_or_bucket_is_a_clear_error(sagemaker_env, monkeypatch: pytest.MonkeyPatch) -> None:
    from twin.settings import get_settings

    monkeypatch.delenv("TWIN_SAGEMAKER_ROLE_ARN")
    get_settings.cache_clear()
    with pytest.raises(SageMakerLaunchError, match="TWIN_SAGEMAKER_ROLE_ARN"):
        training_job_request(get_settings(), TrainingConfig.from_yaml(CONFIG), config_file=CONFIG, run_name="r")


def test_launch_creates_the_job_uploads_its_config_and_refuses_a_job_that_registered_nothing(
        sagemaker_env, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from twin.settings import get_settings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    get_settings.cache_clear()
    settings = get_settings()
    run = f"manual-{uuid.uuid4().hex[:6]}"
    with pytest.raises(SageMakerLaunchError, match="completed but registered no version"):
        launch_sagemaker(settings, "mara-lindqvist", run_name=run, poll_s=0.1)
    sm = boto3.client("sagemaker", endpoint_url=settings.s3_endpoint_url, region_name="us-east-1")
    job = sm.describe_training_job(TrainingJobName=job_name("mara-lindqvist", run))
    assert job["RoleArn"] == settings.sagemaker_role_arn
    assert job["AlgorithmSpecification"]["TrainingImage"] == settings.sagemaker_image
    assert job["ResourceConfig"]["InstanceType"] == settings.sagemaker_instance_type
    assert job["HyperParameters"]["run_name"] == run
    s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, region_name="us-east-1")
    prefix = f"twin/training/jobs/{job['TrainingJobName']}/config/"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=settings.artifacts_s3_bucket,
                                                        Prefix=prefix)["Contents"])
    assert keys == [prefix + "config.yaml", prefix + "ds_zero2.json"]
    body = s3.get_object(Bucket=settings.artifacts_s3_bucket, Key=prefix + "ds_zero2.json")["Body"].read()
    assert json.loads(body) == json.loads((ROOT / "training" / "ds_zero2.json").read_text())
    # A retried task follows the existing job instead of starting a second one.
    with pytest.raises(SageMakerLaunchError, match="registered no version"):
        launch_sagemaker(settings, "mara-lindqvist", run_name=run, poll_s=0.1)
    names = [j["TrainingJobName"] for j in sm.list_training_jobs()["TrainingJobSummaries"]]
    assert names.count(job["TrainingJobName"]) == 1
