"""Model versions as the LLM deployment serves them, and the champion as the ingress resolves it.

A multiplexed model id is `base` (the packaged base model, served while an author has no registered
version) or `<author>:<version>` (a registered version of `twin-<author>`: the base model named by the
version's `base_model` tag with the version's LoRA adapter applied by PEFT). The answer names the
version alone (`base`, `3`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from twin.llm import LLMClient, LLMError
from twin.settings import Settings

log = logging.getLogger(__name__)

BASE = "base"


@dataclass(frozen=True)
class ModelRef:
    author: str | None
    version: str  # "base" or a registered version number

    @property
    def model_id(self) -> str:
        return BASE if self.version == BASE or not self.author else f"{self.author}:{self.version}"

    @classmethod
    def parse(cls, model_id: str) -> ModelRef:
        if model_id == BASE:
            return cls(None, BASE)
        author, sep, version = model_id.rpartition(":")
        if not sep or not author or not version.isdigit():
            raise LLMError(f"unknown model id {model_id!r}: use 'base' or '<author>:<version>'")
        return cls(author, version)


def load_client(model_id: str, settings: Settings) -> LLMClient:
    """An LLM client for one multiplexed model id (loads the weights; seconds on the CPU)."""
    from twin.llm.client import local_client, sampling_from_settings

    ref = ModelRef.parse(model_id)
    if ref.version == BASE:
        return local_client(settings.base_model, settings)
    from twin.llm.local import LocalBackend, resolve_model
    from twin.registry import ModelRegistry, RegistryError

    registry = ModelRegistry(settings)
    try:
        info = registry.get(ref.author or "", ref.version)
    except RegistryError as exc:
        raise LLMError(str(exc)) from None
    adapter = _download(registry, info.source, settings)
    base_path, _ = resolve_model(info.tags.get("base_model", settings.base_model), settings.resolved_model_cache_dir)
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = settings.llm_device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    model = PeftModel.from_pretrained(base, str(adapter)).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(base_path, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    backend = LocalBackend.from_loaded(tokenizer, model, name=f"twin-{ref.author}@{ref.version}",
                                       revision=f"{ref.author}:{ref.version}:{info.run_id or ''}",
                                       cache_dir=settings.resolved_model_cache_dir)
    return LLMClient(backend, sampling_from_settings(settings), batch_size=settings.llm_batch_size)


def _download(registry: object, source: str, settings: Settings) -> Path:
    """The version's adapter folder, fetched from the MLflow artifact store into the model cache."""
    import mlflow.artifacts

    target = settings.resolved_model_cache_dir / "adapters" / _safe(source)
    if (target / "adapter_config.json").is_file() or any(target.glob("*/adapter_config.json")):
        return _adapter_root(target)
    target.mkdir(parents=True, exist_ok=True)
    mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(target),
                                        tracking_uri=settings.resolved_mlflow_uri)
    return _adapter_root(target)


def _adapter_root(target: Path) -> Path:
    found = sorted(target.rglob("adapter_config.json"))
    if not found:
        raise LLMError(f"no LoRA adapter (adapter_config.json) in {target}")
    return found[0].parent


def _safe(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:24]


class ChampionCache:
    """Each author's champion version, read from the registry at most every `poll_s` seconds.

    Unreachable registry: the last version read stays (or `base` when none was ever read), so an
    MLflow outage never stops answers.
    """

    def __init__(self, settings: Settings, poll_s: float) -> None:
        self.settings = settings
        self.poll_s = poll_s
        self._known: dict[str, tuple[str, float]] = {}

    def cached(self, author: str) -> str | None:
        entry = self._known.get(author)
        return entry[0] if entry else None

    def stale(self, author: str) -> bool:
        entry = self._known.get(author)
        return entry is None or time.monotonic() - entry[1] >= self.poll_s

    def read(self, author: str) -> str:
        """The registry's champion now (blocking: call it off the event loop)."""
        from twin.registry import CHAMPION, ModelRegistry

        try:
            version = ModelRegistry(self.settings).alias_version(author, CHAMPION) or BASE
        except Exception as exc:
            log.warning("registry unreachable for %s (%s): keeping %s", author, exc, self.cached(author) or BASE)
            version = self.cached(author) or BASE
        return version

    def store(self, author: str, version: str) -> None:
        self._known[author] = (version, time.monotonic())

    def authors(self) -> list[str]:
        return list(self._known)
