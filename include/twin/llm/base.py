"""What every LLM backend shares: sampling settings, a generation result, the generator fingerprint.

A fingerprint names everything that decides a reply besides the prompt (backend, model, revision,
sampling settings), so that generated data can be cached and traced by it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Protocol

# One chat conversation: [{"role": "system" | "user" | "assistant", "content": "..."}, ...]
Messages = list[dict[str, str]]
FinishReason = Literal["stop", "length", "error"]


class LLMError(RuntimeError):
    """A model could not be loaded or an endpoint did not answer (after its retries)."""


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 0.7  # 0: greedy decoding
    top_p: float = 0.9
    max_new_tokens: int = 128
    repetition_penalty: float = 1.2
    seed: int = 42

    def with_(self, **changes: Any) -> SamplingSettings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass(frozen=True)
class GeneratorFingerprint:
    backend: str
    model: str
    revision: str  # weights hash, hub commit, or "" where an endpoint names none
    sampling: SamplingSettings

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def key(self) -> str:
        """Stable hash of the fingerprint: equal keys mean the same generator settings."""
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Completion:
    """One reply as a backend returns it."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason


@dataclass(frozen=True)
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    fingerprint: GeneratorFingerprint = field(repr=False)


class Backend(Protocol):
    """A way to run a chat model; the client batches, fingerprints and counts around it."""

    name: str  # "local", "openai"
    model: str

    def revision(self) -> str: ...

    def generate(self, conversations: Sequence[Messages], sampling: SamplingSettings) -> list[Completion]: ...
