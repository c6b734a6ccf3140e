"""The `openai` backend: any OpenAI-compatible chat endpoint (vLLM, Ollama, a hosted API, this
platform's own Serve API), by base URL, model name and API key.

Retries are ours (tenacity), not the SDK's, so that every retried failure is logged with its cause:
timeouts, refused connections, 429 and 5xx are retried with jittered backoff; other errors (400, 401,
404) are the caller's to fix and fail at once. Token counts come from the response's `usage`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any

from pydantic import SecretStr

from twin.llm.base import Completion, LLMError, Messages, SamplingSettings

log = logging.getLogger(__name__)


class OpenAIBackend:
    name = "openai"

    def __init__(self, base_url: str, model: str, *, api_key: SecretStr | None = None, timeout_s: float = 60.0,
                 max_retries: int = 2, concurrency: int = 8) -> None:
        if not base_url:
            raise LLMError("the openai backend needs TWIN_LLM_BASE_URL (e.g. http://127.0.0.1:8000/v1)")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.concurrency = concurrency

    @cached_property
    def client(self) -> Any:
        import openai

        # Endpoints without auth still need a non-empty key for the SDK.
        key = self.api_key.get_secret_value() if self.api_key else "unused"
        return openai.OpenAI(base_url=self.base_url, api_key=key, timeout=self.timeout_s, max_retries=0)

    def revision(self) -> str:
        return ""  # an endpoint names its model, not its weights; the model name is in the fingerprint

    def generate(self, conversations: Sequence[Messages], sampling: SamplingSettings) -> list[Completion]:
        if len(conversations) <= 1:
            return [self._complete(c, sampling) for c in conversations]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(conversations))) as pool:
            return list(pool.map(lambda c: self._complete(c, sampling), conversations))

    def _complete(self, messages: Messages, sampling: SamplingSettings) -> Completion:
        import openai
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

        transient = (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError,
                     openai.InternalServerError)
        request: dict[str, Any] = {"model": self.model, "messages": list(messages),
                                   "max_tokens": sampling.max_new_tokens, "seed": sampling.seed,
                                   "temperature": max(sampling.temperature, 0.0), "top_p": sampling.top_p}
        if sampling.repetition_penalty != 1.0:
            request["extra_body"] = {"repetition_penalty": sampling.repetition_penalty}  # vLLM's extension
        retrying = Retrying(stop=stop_after_attempt(self.max_retries + 1), reraise=True,
                            wait=wait_exponential_jitter(initial=0.2, max=5.0),
                            retry=retry_if_exception_type(transient), before_sleep=self._log_retry)
        try:
            response = retrying(self.client.chat.completions.create, **request)
        except transient as exc:
            raise LLMError(f"{self.base_url} gave no answer after {self.max_retries + 1} tries: "
                           f"{exc.__class__.__name__}: {exc}") from exc
        except openai.APIStatusError as exc:
            raise LLMError(f"{self.base_url} refused the request ({exc.status_code}): {exc.message}") from exc
        if not response.choices:
            raise LLMError(f"{self.base_url} answered without a choice")
        choice = response.choices[0]
        usage = response.usage
        reason = choice.finish_reason if choice.finish_reason in ("stop", "length") else "stop"
        return Completion(text=(choice.message.content or "").strip(),
                          prompt_tokens=usage.prompt_tokens if usage else 0,
                          completion_tokens=usage.completion_tokens if usage else 0, finish_reason=reason)

    def _log_retry(self, state: Any) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("LLM request to %s failed (try %d): %r; retrying", self.base_url, state.attempt_number, exc)
