"""The typed training configuration: one YAML file (or defaults) describes a whole run.

    config = TrainingConfig.from_yaml("training/config.yaml")      # or TrainingConfig(author="mara")

The base model is the packaged SmolLM2-135M-Instruct by default ("packaged", resolved by twin.llm);
production names a model id or a folder. Batch sizes and gradient accumulation are plain numbers
here: the DeepSpeed JSON configs take them through `"auto"`, so the world size can change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(8, ge=1, description="LoRA rank")
    alpha: int = Field(16, ge=1, description="LoRA alpha (scaling = alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


class StageSettings(BaseModel):
    """One trainer stage (SFT or DPO)."""

    model_config = ConfigDict(extra="forbid")

    max_steps: int = Field(-1, description="stop after this many optimizer steps (-1: run the epochs)")
    epochs: float = Field(1.0, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    per_device_batch_size: int = Field(2, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    warmup_steps: int = Field(0, ge=0)


class DPOSettings(StageSettings):
    enabled: bool = False
    beta: float = Field(0.1, gt=0)
    learning_rate: float = Field(5e-5, gt=0)


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    author: str = Field(..., min_length=1, description="whose twin: registered model twin-<author>")
    dataset_version: str | None = Field(None, description="dataset version (or unique prefix); None: the latest")
    base_model: str = Field("packaged", description='"packaged" (SmolLM2-135M-Instruct), a folder or a model id')
    lora: LoraSettings = Field(default_factory=LoraSettings)
    sft: StageSettings = Field(default_factory=StageSettings)
    dpo: DPOSettings = Field(default_factory=DPOSettings)
    max_length: int = Field(512, ge=16, description="tokens per example (longer ones are truncated)")
    max_train_rows: int | None = Field(None, ge=1, description="use only the first N training rows (smoke runs)")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 where the hardware supports it, else fp32")
    gradient_checkpointing: bool = False
    save_steps: int = Field(50, ge=1, description="checkpoint every N optimizer steps")
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(1, ge=1)
    seed: int = 42
    output_dir: Path | None = Field(
        None, description="checkpoints and the adapter; None: TWIN_DATA_DIR/training/<author>/<run name>")
    run_name: str | None = Field(None, description="names the output folder and the MLflow run; None: derived")
    deepspeed: Path | None = Field(None, description="DeepSpeed JSON config (training/ds_*.json); None: no DeepSpeed")
    merge: bool = Field(False, description="also log the adapter merged into the base model")
    evaluate: bool = Field(True, description="evaluate and gate the new version after training (rank 0)")
    register_version: bool = Field(True, description="register a new version of twin-<author> in MLflow")

    @model_validator(mode="after")
    def _stages_bounded(self) -> TrainingConfig:
        if self.deepspeed is not None and not Path(self.deepspeed).expanduser().is_file():
            raise ValueError(f"deepspeed config {self.deepspeed} does not exist")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainingConfig:
        path = Path(path)
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a training config is a mapping, got {type(data).__name__}")
        if data.get("deepspeed"):  # relative to the config file, so configs travel with their JSON
            ds = Path(data["deepspeed"])
            data["deepspeed"] = str(ds if ds.is_absolute() or ds.is_file() else path.parent / ds)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(data)

    @property
    def registered_model(self) -> str:
        return registered_model_name(self.author)


def registered_model_name(author: str) -> str:
    return f"twin-{author}"
