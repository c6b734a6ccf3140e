"""Training rows from a dataset version in the artifact store (see twin.datasets.versions).

SFT takes the instruction rows as conversational `messages` (TRL applies the base model's chat
template); DPO takes the preference rows as conversational prompt / chosen / rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twin.datasets.versions import DatasetVersions, VersionNotFoundError
from twin.settings import Settings
from twin.storage.artifacts import get_artifact_store


class TrainingDataError(RuntimeError):
    """No dataset version to train on, or one without the rows a stage needs."""


@dataclass(frozen=True)
class TrainingData:
    author: str
    version: str
    manifest: dict[str, Any]
    instruction_train: list[dict[str, Any]]
    instruction_test: list[dict[str, Any]]
    preference_train: list[dict[str, Any]]
    locations: dict[str, str]  # "instruction_train" → artifact URL, for the MLflow dataset inputs

    def sft_rows(self, limit: int | None = None) -> list[dict[str, Any]]:
        return [{"messages": r["messages"]} for r in self.instruction_train[:limit]]

    def dpo_rows(self, limit: int | None = None) -> list[dict[str, Any]]:
        return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
                for r in self.preference_train[:limit]]


def untrainable_reason(settings: Settings, author: str, version: str | None = None) -> str | None:
    """Why a dataset version cannot give an evaluable model (no training or no held-out instruction rows),
    or None when it can. The gate needs held-out rows; a set without them is refused before training."""
    try:
        data = load_training_data(settings, author, version)
    except TrainingDataError as exc:
        return str(exc)
    if not data.instruction_test:
        return (f"dataset {author}/{data.version} has {len(data.instruction_train)} training and "
                f"{len(data.instruction_test)} held-out instruction rows: too few to train and evaluate a twin; "
                "build a larger one (TWIN_DATASET_MAX_PASSAGES, or all passages)")
    return None


def load_training_data(settings: Settings, author: str, version: str | None = None) -> TrainingData:
    versions = DatasetVersions(get_artifact_store(settings))
    name = version or versions.latest(author)
    if not name:
        raise TrainingDataError(f"author {author!r} has no dataset version yet: "
                                f"run `twin dataset build --author {author}`")
    try:
        manifest = versions.find(name, author)
    except VersionNotFoundError as exc:
        raise TrainingDataError(str(exc)) from None
    full = manifest["version"]
    parts = {f"{d}_{s}": versions.rows(author, full, d, s)
             for d, s in (("instruction", "train"), ("instruction", "test"), ("preference", "train"))}
    if not parts["instruction_train"]:
        raise TrainingDataError(f"dataset {author}/{full} has no instruction training rows")
    locations = {k: versions.artifacts.location(f"{versions.prefix(author, full)}/{k}.jsonl") for k in parts}
    return TrainingData(author=author, version=full, manifest=manifest, locations=locations, **parts)
