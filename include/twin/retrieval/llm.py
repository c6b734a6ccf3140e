"""The small LLM interface retrieval needs (self-query, query expansion).

Later issues implement it with the served twin model; retrieval works without one (rules for
self-query, no expansion) and says so.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class QueryLLM(Protocol):
    """Anything that completes a prompt: a local model, the Ray Serve deployment, a hosted API."""

    name: str

    def complete(self, prompt: str, *, max_new_tokens: int = 128) -> str:
        """The model's answer to `prompt`, without the prompt itself."""
        ...
