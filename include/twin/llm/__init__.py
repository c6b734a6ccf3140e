"""One LLM client for the platform: dataset generation, self-query, expansion, judges and serving.

    from twin.llm import get_llm_client
    client = get_llm_client()                       # TWIN_LLM_BACKEND: local (default) or openai
    [reply] = client.chat(["Why are backfills hard?"])
    reply.text, reply.completion_tokens, reply.fingerprint
"""

from twin.llm.base import (
    Completion,
    GenerationResult,
    GeneratorFingerprint,
    LLMError,
    Messages,
    SamplingSettings,
)
from twin.llm.client import LLMClient, build_client, get_llm_client, local_client

__all__ = [
    "Completion",
    "GenerationResult",
    "GeneratorFingerprint",
    "LLMClient",
    "LLMError",
    "Messages",
    "SamplingSettings",
    "build_client",
    "get_llm_client",
    "local_client",
]
