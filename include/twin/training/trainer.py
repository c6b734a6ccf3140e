"""One training run: LoRA SFT through TRL's SFTTrainer, then optional DPO through DPOTrainer.

No training loop or loss is written here: TRL and transformers do both (under DeepSpeed when the
config names a JSON file). What this module adds is the platform around them: the dataset version
in, the distributed setup on CPUs or GPUs, checkpoints that a rerun resumes from, and rank 0's
MLflow run (params, per-step metrics, system metrics, the dataset inputs, the adapter).

Output folder layout (a rerun of the same run name resumes from it):
    sft/checkpoint-N/  sft/adapter/  [dpo/checkpoint-N/  dpo/adapter/]  adapter/  run.json
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from twin.settings import Settings
from twin.training.config import TrainingConfig
from twin.training.data import TrainingData, load_training_data

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[3]
MODEL_INFO = "twin_model.json"  # beside the adapter: which base model it needs
DONE = "DONE"  # written into a stage's adapter folder once the stage finished


@dataclass
class TrainingResult:
    author: str
    dataset_version: str
    output_dir: str
    adapter_dir: str
    run_id: str | None = None
    model_version: str | None = None
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage → steps, first/last loss
    evaluation: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def code_commit() -> str:
    """The commit the code runs from ("" outside a git checkout), marked when files differ from it."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return commit + ("-dirty" if dirty else "")


def default_extensions_dir() -> Path:
    """Where DeepSpeed's compiled ops are cached: torch's own default, so every rerun finds them."""
    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions")


@contextlib.contextmanager
def deepspeed_op_builds(extensions_dir: Path) -> Iterator[None]:
    """Held around a DeepSpeed run: clears the op build locks that killed builds left behind.

    torch guards an op build with a bare lock file (cpp_extension's FileBaton): a build killed half-way
    leaves it, and every later build waits for it forever. Each training process holds a shared flock here
    while it runs, which the kernel drops when the process dies; a process that finds no other holder
    knows that no build is running, so every lock file left under the folder is stale.
    """
    extensions_dir.mkdir(parents=True, exist_ok=True)
    with open(extensions_dir / "twin-training.lock", "a") as holder:
        try:
            fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # another training process is alive, and its builds are real
        else:
            for baton in extensions_dir.rglob("lock"):
                log.warning("removing %s, left by an op build that was killed", baton)
                baton.unlink(missing_ok=True)
        fcntl.flock(holder, fcntl.LOCK_SH)
        yield


def distributed_kwargs(config: TrainingConfig) -> dict[str, Any]:
    """TrainingArguments for this machine: CPU or CUDA, DeepSpeed or not, one rank or the launcher's N."""
    import torch

    cuda = torch.cuda.is_available()
    kwargs: dict[str, Any] = {}
    bf16 = config.precision == "bf16" or (config.precision == "auto" and cuda and torch.cuda.is_bf16_supported())
    kwargs["bf16"] = bf16
    if not cuda:
        kwargs["use_cpu"] = True
    if config.deepspeed is None:
        if not cuda and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            kwargs["ddp_backend"] = "gloo"
        return kwargs
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(default_extensions_dir()))
    kwargs["deepspeed"] = str(Path(config.deepspeed).expanduser().resolve())
    if not cuda:
        # Without CUDA, transformers/accelerate see a world size of 1 under the deepspeed launcher and
        # DeepSpeed's batch-size check fails. Creating the process state first on gloo, with DeepSpeed
        # announced, and telling the Trainer to use it, gives every rank the launcher's world.
        from accelerate import PartialState

        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
        PartialState(backend="gloo")
        os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)
        kwargs["accelerator_config"] = {"use_configured_state": True}
    return kwargs


def output_dir_for(config: TrainingConfig, settings: Settings, data: TrainingData) -> Path:
    if config.output_dir is not None:
        return Path(config.output_dir).expanduser().resolve()
    name = config.run_name or f"{data.version[:12]}-seed{config.seed}"
    return settings.data_dir / "training" / config.author / name


def _stage_args(config: TrainingConfig, stage: str, out: Path, dist: dict[str, Any]) -> dict[str, Any]:
    s = config.sft if stage == "sft" else config.dpo
    return dict(output_dir=str(out / stage), max_steps=s.max_steps, num_train_epochs=s.epochs,
                learning_rate=s.learning_rate, per_device_train_batch_size=s.per_device_batch_size,
                gradient_accumulation_steps=s.gradient_accumulation_steps, warmup_steps=s.warmup_steps,
                max_length=config.max_length, gradient_checkpointing=config.gradient_checkpointing,
                save_strategy="steps", save_steps=config.save_steps, save_total_limit=config.save_total_limit,
                logging_steps=config.logging_steps, seed=config.seed, data_seed=config.seed,
                report_to="none", disable_tqdm=True, dataloader_num_workers=0, save_only_model=False, **dist)


def _metrics_callback(stage: str, history: list[dict[str, float]]) -> Any:
    """Per-step metrics to rank 0's active MLflow run, named by stage (sft.loss, dpo.rewards/margins...)."""
    from transformers import TrainerCallback

    class StageMetrics(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if not state.is_world_process_zero or not logs:
                return
            numbers = {f"{stage}.{k}": float(v) for k, v in logs.items() if isinstance(v, int | float)}
            history.append({"step": state.global_step, **numbers})
            import mlflow

            if mlflow.active_run() is not None:
                mlflow.log_metrics({k.replace("/", "."): v for k, v in numbers.items()}, step=state.global_step)

    return StageMetrics()


def _last_checkpoint(folder: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def _summary(history: list[dict[str, float]], stage: str, trainer: Any) -> dict[str, Any]:
    losses = [h[f"{stage}.loss"] for h in history if f"{stage}.loss" in h]
    return {"steps": trainer.state.global_step, "logged_losses": losses,
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}


def run_training(config: TrainingConfig, settings: Settings) -> TrainingResult:
    """Train (resuming from the last checkpoint of the same output folder), then on rank 0 log,
    register and (if configured) evaluate and gate the new version."""
    if config.deepspeed is None:
        return _train(config, settings)
    with deepspeed_op_builds(default_extensions_dir()):
        return _train(config, settings)


def _train(config: TrainingConfig, settings: Settings) -> TrainingResult:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from twin.llm.local import resolve_model

    data = load_training_data(settings, config.author, config.dataset_version)
    out = output_dir_for(config, settings, data)
    out.mkdir(parents=True, exist_ok=True)
    # Before the distributed state exists: a model saved under it (the packaged model's one-time
    # dequantisation) may be written only partly by a rank that is not the main one.
    base_path, base_revision = resolve_model(config.base_model, settings.resolved_model_cache_dir)
    dist = distributed_kwargs(config)
    main = is_main_process()
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if dist["bf16"] else torch.float32
    result = TrainingResult(author=config.author, dataset_version=data.version, output_dir=str(out),
                            adapter_dir=str(out / "adapter"))
    run = _start_mlflow_run(config, settings, data, out, base_revision) if main else None
    if run is not None:
        result.run_id = run.info.run_id
    try:
        history: list[dict[str, float]] = []
        sft_adapter = out / "sft" / "adapter"
        if (sft_adapter / DONE).is_file():
            log.info("SFT already finished in %s: not repeated", sft_adapter)
        else:
            model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
            lora = LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                              target_modules=list(config.lora.target_modules), task_type="CAUSAL_LM")
            trainer = SFTTrainer(model=model, args=SFTConfig(**_stage_args(config, "sft", out, dist)),
                                 train_dataset=Dataset.from_list(data.sft_rows(config.max_train_rows)),
                                 processing_class=tokenizer, peft_config=lora,
                                 callbacks=[_metrics_callback("sft", history)])
            trainer.train(resume_from_checkpoint=_last_checkpoint(out / "sft"))
            result.stages["sft"] = _summary(history, "sft", trainer)
            _save_stage(trainer, tokenizer, sft_adapter, main)
            del trainer, model
        final = sft_adapter
        if config.dpo.enabled:
            dpo_adapter = out / "dpo" / "adapter"
            if not (dpo_adapter / DONE).is_file():
                rows = data.dpo_rows(config.max_train_rows)
                if not rows:
                    raise RuntimeError(f"dataset {config.author}/{data.version} has no preference rows for DPO")
                base = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
                # The SFT adapter, trainable; with adapters disabled the same model is DPO's reference.
                model = PeftModel.from_pretrained(base, str(sft_adapter), is_trainable=True)
                args = DPOConfig(beta=config.dpo.beta, **_stage_args(config, "dpo", out, dist))
                trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                     processing_class=tokenizer, callbacks=[_metrics_callback("dpo", history)])
                trainer.train(resume_from_checkpoint=_last_checkpoint(out / "dpo"))
                result.stages["dpo"] = _summary(history, "dpo", trainer)
                _save_stage(trainer, tokenizer, dpo_adapter, main)
                del trainer, model
            final = dpo_adapter
        if not main:
            return result
        _publish_adapter(final, out / "adapter", config, data, base_revision)
        _log_outcome(config, settings, out, result, base_path)
        if config.evaluate and result.model_version is not None:
            from twin.evaluation.gate import evaluate_and_gate

            result.evaluation = evaluate_and_gate(settings, config.author, result.model_version)
        (out / "run.json").write_text(json.dumps(result.as_dict(), indent=2, default=str))
        return result
    finally:
        if run is not None:
            import mlflow

            mlflow.end_run()


def _save_stage(trainer: Any, tokenizer: Any, folder: Path, main: bool) -> None:
    trainer.save_model(str(folder))  # every rank takes part (ZeRO-3 gathers the weights); rank 0 writes
    if main:
        tokenizer.save_pretrained(str(folder))
        (folder / DONE).write_text("done\n")


def _publish_adapter(stage_adapter: Path, final: Path, config: TrainingConfig, data: TrainingData,
                     base_revision: str | None) -> None:
    import shutil

    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(stage_adapter, tmp, ignore=shutil.ignore_patterns(DONE, "README.md", "training_args.bin"))
    (tmp / MODEL_INFO).write_text(json.dumps({
        "author": config.author, "base_model": config.base_model, "base_revision": base_revision,
        "dataset_version": data.version, "stages": ["sft"] + (["dpo"] if config.dpo.enabled else []),
    }, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def _start_mlflow_run(config: TrainingConfig, settings: Settings, data: TrainingData, out: Path,
                      base_revision: str | None) -> Any:
    """Rank 0's run: the same run again when a killed run is resumed (its id is kept in the output folder)."""
    import mlflow
    import pandas as pd

    from twin.tracking import configure_mlflow

    configure_mlflow(settings, settings.training_experiment)
    marker = out / "mlflow_run.json"
    if marker.is_file():
        run_id = json.loads(marker.read_text())["run_id"]
        log.info("resuming MLflow run %s", run_id)
        return mlflow.start_run(run_id=run_id, log_system_metrics=True)
    run = mlflow.start_run(run_name=f"train-{config.author}-{out.name}", log_system_metrics=True, tags={
        "twin.kind": "training", "twin.author": config.author, "twin.dataset_version": data.version,
        "twin.base_model": config.base_model, "twin.code_commit": code_commit()})
    marker.write_text(json.dumps({"run_id": run.info.run_id}))
    params = {"author": config.author, "dataset_version": data.version, "base_model": config.base_model,
              "base_revision": (base_revision or "")[:250], "lora_r": config.lora.r, "lora_alpha": config.lora.alpha,
              "lora_dropout": config.lora.dropout, "lora_targets": ",".join(config.lora.target_modules),
              "max_length": config.max_length, "precision": config.precision, "seed": config.seed,
              "gradient_checkpointing": config.gradient_checkpointing, "save_steps": config.save_steps,
              "deepspeed": Path(config.deepspeed).name if config.deepspeed else "none",
              "world_size": int(os.environ.get("WORLD_SIZE", "1")), "dpo": config.dpo.enabled,
              "max_train_rows": config.max_train_rows or "all"}
    for stage in ("sft", "dpo") if config.dpo.enabled else ("sft",):
        s = getattr(config, stage)
        params.update({f"{stage}_{k}": v for k, v in s.model_dump().items() if k != "enabled"})
    mlflow.log_params(params)
    for name, rows in (("instruction_train", data.instruction_train), ("instruction_test", data.instruction_test),
                       ("preference_train", data.preference_train)):
        frame = pd.DataFrame([{k: v for k, v in r.items() if isinstance(v, str)} for r in rows])
        dataset = mlflow.data.from_pandas(frame, source=data.locations[name],
                                          name=f"{config.author}-{name}@{data.version}")
        mlflow.log_input(dataset, context=name.split("_")[1], tags={"dataset_version": data.version})
    return run


def _log_outcome(config: TrainingConfig, settings: Settings, out: Path, result: TrainingResult,
                 base_path: str) -> None:
    """The adapter (and merged model) as run artifacts; a new registered version with its lineage tags."""
    import mlflow

    for stage, summary in result.stages.items():
        mlflow.log_metrics({f"{stage}.{k}": v for k, v in summary.items() if isinstance(v, int | float)})
    mlflow.log_artifacts(str(out / "adapter"), "adapter")
    if config.merge:
        merged = _merge(base_path, out / "adapter", out / "merged")
        mlflow.log_artifacts(str(merged), "merged")
    if not config.register_version:
        return
    from twin.registry import ModelRegistry

    registry = ModelRegistry(settings)
    version = registry.register(config.author, run_id=result.run_id or "",
                                source=mlflow.get_artifact_uri("adapter"), tags={
                                    "dataset_version": result.dataset_version, "base_model": config.base_model,
                                    "code_commit": code_commit(), "training_run": out.name,
                                    "stages": ",".join(result.stages) or "resumed"})
    result.model_version = version
    mlflow.set_tag("twin.model_version", version)


def _merge(base_path: str, adapter: Path, dest: Path) -> Path:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), str(adapter))
    model.merge_and_unload().save_pretrained(str(dest))
    AutoTokenizer.from_pretrained(str(adapter)).save_pretrained(str(dest))
    return dest
