"""Training for real on the packaged SmolLM2-135M: the deepspeed launcher with 2 CPU ranks and ZeRO-2,
the MLflow run and registered version it leaves, the gate refusing a worse version, and a resume
after a kill. Tiny runs (a few steps, short sequences, r=8): they check the machinery, not quality.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from twin.training.launch import launcher_command, run_launcher
from twin.training.trainer import default_extensions_dir

pytestmark = pytest.mark.slow

AUTHOR = "mara-lindqvist"
EVAL_ENV = {"TWIN_EVAL_MAX_EXAMPLES": "4", "TWIN_EVAL_MAX_NEW_TOKENS": "24", "TWIN_EVAL_BOOTSTRAP_SAMPLES": "200",
            "TWIN_EVAL_GROUNDING_EXAMPLES": "2"}


def write_config(path: Path, **changes) -> Path:
    config = {"author": AUTHOR, "max_length": 96, "max_train_rows": 8, "save_steps": 4, "logging_steps": 1,
              "lora": {"r": 8, "alpha": 16},
              "sft": {"max_steps": 8, "learning_rate": 0.002, "per_device_batch_size": 2}, **changes}
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def launched(training_env, repo_root: Path, tmp_path_factory) -> dict:
    """One 2-rank ZeRO-2 run through the launcher, evaluated and gated on rank 0."""
    os.environ.update(EVAL_ENV)
    from twin.settings import get_settings

    get_settings.cache_clear()
    config = write_config(tmp_path_factory.mktemp("launch") / "config.yaml")
    cmd = launcher_command(config=config, author=AUTHOR, run_name="launcher-zero2", num_procs=2,
                           deepspeed=repo_root / "training" / "ds_zero2.json", evaluate=True)
    # As a build killed half-way leaves it: without the guard every rank would wait on it forever.
    stale = default_extensions_dir() / "deepspeed_shm_comm" / "lock"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.touch()
    started = time.monotonic()
    env = {**EVAL_ENV, "MLFLOW_TRACKING_URI": training_env["MLFLOW_TRACKING_URI"]}
    result = run_launcher(cmd, timeout_s=900, env=env)
    result["wall_s"] = time.monotonic() - started
    result["stale_lock_left"] = stale.exists()
    return result


def test_launcher_trains_two_ranks_with_zero2(launched: dict) -> None:
    from mlflow import MlflowClient

    assert not launched["stale_lock_left"]
    sft = launched["stages"]["sft"]
    assert sft["steps"] == 8
    losses = sft["logged_losses"]
    assert len(losses) == 8
    # The same 8 rows seen four times (2 ranks x batch 2): the last epoch's loss is well below the first's.
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.3, losses
    adapter = Path(launched["adapter_dir"])
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "adapter_config.json").is_file()
    info = json.loads((adapter / "twin_model.json").read_text())
    assert info["base_model"] == "packaged" and info["author"] == AUTHOR

    client = MlflowClient()
    run = client.get_run(launched["run_id"])
    assert run.data.params["world_size"] == "2" and run.data.params["deepspeed"] == "ds_zero2.json"
    assert run.data.params["lora_r"] == "8"
    history = client.get_metric_history(run.info.run_id, "sft.loss")
    assert sorted(m.step for m in history) == list(range(1, 9))
    names = {d.dataset.name for d in run.inputs.dataset_inputs}
    assert f"{AUTHOR}-instruction_train@{launched['dataset_version']}" in names, names
    assert any(m.startswith("system/") for m in run.data.metrics), "no system metrics"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
    assert "adapter/adapter_model.safetensors" in artifacts

    version = client.get_model_version(f"twin-{AUTHOR}", launched["model_version"])
    tags = version.tags
    assert tags["dataset_version"] == launched["dataset_version"] and tags["base_model"] == "packaged"
    assert len(tags["code_commit"].split("-")[0]) == 40
    assert tags["gate"] in ("passed", "failed") and "eval.style_gain_low" in tags and "eval.authorship" in tags
    report = launched["evaluation"]
    style = report["style"]["candidate"]
    assert style["low"] <= style["mean"] <= style["high"]
    # Grounding of answers given the retrieved passages, for the twin and the base; heuristics, labelled so.
    assert "eval.grounding" in tags and "eval.grounding_base" in tags
    assert 0.0 <= report["grounding"]["candidate"]["mean"] <= 1.0 and "heuristic" in report["grounding_note"]
    assert tags["eval_method"] == "heuristic" and report["judge"] is None and "no judge" in report["judge_note"]
    # The gate's decision and the aliases agree: only a passing version waits as challenger.
    aliases = client.get_registered_model(f"twin-{AUTHOR}").aliases
    assert (aliases.get("challenger") == launched["model_version"]) == (tags["gate"] == "passed")
    assert "champion" not in aliases or aliases["champion"] != launched["model_version"]  # nobody approved it


def test_a_worse_version_is_never_promoted(launched: dict, training_env, tmp_path: Path) -> None:
    """The trained adapter with its LoRA B matrices blown up: real weights, a broken model."""
    import mlflow
    from safetensors.torch import load_file, save_file
    from typer.testing import CliRunner

    from twin.cli import app
    from twin.evaluation.gate import evaluate_and_gate
    from twin.registry import ModelRegistry
    from twin.settings import get_settings

    broken = tmp_path / "adapter"
    subprocess.run(["cp", "-r", launched["adapter_dir"], str(broken)], check=True)
    weights = load_file(broken / "adapter_model.safetensors")
    save_file({k: v * 60 if "lora_B" in k else v for k, v in weights.items()}, broken / "adapter_model.safetensors")
    settings = get_settings()
    registry = ModelRegistry(settings)
    mlflow.set_tracking_uri(training_env["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment("worse-versions")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(broken), "adapter")
        source = mlflow.get_artifact_uri("adapter")
    version = registry.register(AUTHOR, run_id=run.info.run_id, source=source,
                                tags={"dataset_version": launched["dataset_version"], "base_model": "packaged"})
    report = evaluate_and_gate(settings, AUTHOR, version)
    assert report["gate"] == "failed"
    assert report["perplexity"]["candidate"] > report["perplexity"]["base"]
    assert any("perplexity" in r for r in report["reasons"])
    info = registry.get(AUTHOR, version)
    assert info.tags["gate"] == "failed" and info.aliases == [] and info.approval == ""
    refused = CliRunner().invoke(app, ["model", "approve", version, "--author", AUTHOR])
    assert refused.exit_code == 1 and "did not pass the evaluation gate" in refused.output
    assert registry.alias_version(AUTHOR, "champion") != version


def test_resume_after_kill_loses_nothing(training_env, repo_root: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", save_steps=2, evaluate=False, register_version=False,
                          output_dir=str(tmp_path / "out"),
                          sft={"max_steps": 6, "learning_rate": 0.002, "per_device_batch_size": 2})
    cmd = [sys.executable, str(repo_root / "training" / "train.py"), "--config", str(config)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": training_env["MLFLOW_TRACKING_URI"]}
    first = subprocess.Popen(cmd, cwd=repo_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    checkpoint = tmp_path / "out" / "sft" / "checkpoint-2"
    deadline = time.monotonic() + 600
    while not (checkpoint / "trainer_state.json").is_file():
        assert first.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.5)
    time.sleep(1.0)  # let the checkpoint's last files land
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    assert not (tmp_path / "out" / "sft" / "adapter" / "DONE").exists(), "the run finished before the kill"
    before = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    run_id = json.loads((tmp_path / "out" / "mlflow_run.json").read_text())["run_id"]

    second = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    result = json.loads(next(line for line in second.stdout.splitlines() if line.startswith("TWIN_RESULT="))[12:])
    assert result["run_id"] == run_id  # the same MLflow run goes on
    assert result["stages"]["sft"]["steps"] == 6
    assert len(result["stages"]["sft"]["logged_losses"]) == 4  # steps 3..6 only: 1..2 were not repeated
    last = sorted((tmp_path / "out" / "sft").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-1]
    after = json.loads((last / "trainer_state.json").read_text())["log_history"]
    assert [h["loss"] for h in after if "loss" in h][:2] == [h["loss"] for h in before if "loss" in h]

    from mlflow import MlflowClient

    steps = {m.step for m in MlflowClient().get_metric_history(run_id, "sft.loss")}
    assert steps == {1, 2, 3, 4, 5, 6}
