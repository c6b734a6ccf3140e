"""`LLMClient`: the one way the platform calls a language model.

It batches conversations for its backend, fills in the sampling settings and attaches the generator
fingerprint to every result. It also is retrieval's `QueryLLM` (`name`, `complete`), so self-query and
query expansion run through it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from twin.llm.base import (
    Backend,
    GenerationResult,
    GeneratorFingerprint,
    Messages,
    SamplingSettings,
)

if TYPE_CHECKING:
    from twin.settings import Settings

Prompt = str | Messages  # a bare string is one user message


def as_messages(prompt: Prompt) -> Messages:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


class LLMClient:
    def __init__(self, backend: Backend, sampling: SamplingSettings | None = None, *, batch_size: int = 8) -> None:
        self.backend = backend
        self.sampling = sampling or SamplingSettings()
        self.batch_size = batch_size

    @property
    def name(self) -> str:
        return f"{self.backend.name}:{self.backend.model}"

    def fingerprint(self, sampling: SamplingSettings | None = None) -> GeneratorFingerprint:
        return GeneratorFingerprint(backend=self.backend.name, model=self.backend.model,
                                    revision=self.backend.revision(), sampling=sampling or self.sampling)

    def settings_for(self, **overrides: Any) -> SamplingSettings:
        """The client's sampling settings with some changed (None leaves a setting as it is)."""
        return self.sampling.with_(**overrides)

    def chat(self, prompts: Sequence[Prompt], *, sampling: SamplingSettings | None = None,
             progress: Callable[[int], None] | None = None) -> list[GenerationResult]:
        """Replies to every prompt, in order, generated `batch_size` at a time."""
        sampling = sampling or self.sampling
        fingerprint = self.fingerprint(sampling)
        conversations = [as_messages(p) for p in prompts]
        results: list[GenerationResult] = []
        for start in range(0, len(conversations), self.batch_size):
            batch = conversations[start:start + self.batch_size]
            for c in self.backend.generate(batch, sampling):
                results.append(GenerationResult(text=c.text, prompt_tokens=c.prompt_tokens,
                                                completion_tokens=c.completion_tokens,
                                                finish_reason=c.finish_reason, fingerprint=fingerprint))
            if progress is not None:
                progress(len(batch))
        return results

    def generate(self, prompt: Prompt, **overrides: Any) -> GenerationResult:
        return self.chat([prompt], sampling=self.settings_for(**overrides))[0]

    def stream(self, prompt: Prompt, *, sampling: SamplingSettings | None = None) -> Iterator[str]:
        """The reply as text pieces while it is generated; a backend that cannot stream gives it whole."""
        sampling = sampling or self.sampling
        streaming = getattr(self.backend, "stream", None)
        if streaming is None:
            yield self.chat([prompt], sampling=sampling)[0].text
            return
        yield from streaming(as_messages(prompt), sampling)

    def complete(self, prompt: str, *, max_new_tokens: int = 128) -> str:
        """`QueryLLM`: the model's reply to `prompt`."""
        return self.generate(prompt, max_new_tokens=max_new_tokens).text


def sampling_from_settings(settings: Settings) -> SamplingSettings:
    return SamplingSettings(temperature=settings.llm_temperature, top_p=settings.llm_top_p,
                            max_new_tokens=settings.llm_max_new_tokens,
                            repetition_penalty=settings.llm_repetition_penalty, seed=settings.llm_seed)


def local_client(model: str, settings: Settings) -> LLMClient:
    """A local-backend client for `model`, sharing loaded weights with every other client of it."""
    from twin.llm.local import shared_local_backend

    backend = shared_local_backend(model, str(settings.resolved_model_cache_dir), settings.llm_device)
    return LLMClient(backend, sampling_from_settings(settings), batch_size=settings.llm_batch_size)


def build_client(settings: Settings) -> LLMClient:
    """The client the settings describe (TWIN_LLM_BACKEND and its TWIN_LLM_* settings)."""
    if settings.llm_backend == "openai":
        from twin.llm.openai_backend import OpenAIBackend

        backend = OpenAIBackend(settings.llm_base_url or "", settings.llm_model, api_key=settings.llm_api_key,
                                timeout_s=settings.llm_timeout_s, max_retries=settings.llm_max_retries,
                                concurrency=settings.llm_batch_size)
        return LLMClient(backend, sampling_from_settings(settings), batch_size=settings.llm_batch_size)
    return local_client(settings.llm_model, settings)


def get_llm_client(settings: Settings | None = None) -> LLMClient:
    """The client of the configured settings; local weights load on first use, once per process."""
    from twin.settings import get_settings

    return build_client(settings or get_settings())
