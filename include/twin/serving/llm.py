"""The LLM deployment: several model versions per replica (Serve multiplexing keyed by model id),
dynamic batching of generations (`@serve.batch`), and token streaming. Models are called through
`twin.llm`'s `LLMClient`, the platform's one way to run a model.

Request (a dict, so it crosses the handle as plain data):
    {"messages": [...], "max_new_tokens": int?, "temperature": float?, "top_p": float?, "seed": int?}
Reply: {"text", "prompt_tokens", "completion_tokens", "finish_reason", "model_id", "model"}
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ray import serve

from twin.llm import LLMClient, SamplingSettings
from twin.serving.versions import load_client
from twin.settings import get_settings, load_settings

_SAMPLING_KEYS = ("max_new_tokens", "temperature", "top_p", "seed", "repetition_penalty")


def sampling_for(client: LLMClient, request: dict[str, Any]) -> SamplingSettings:
    return client.settings_for(**{k: request.get(k) for k in _SAMPLING_KEYS})


def default_num_gpus(configured: float | None) -> float:
    """The configured GPUs of an LLM replica, or one GPU where CUDA is present."""
    if configured is not None:
        return configured
    try:
        import torch

        return 1.0 if torch.cuda.is_available() else 0.0
    except ImportError:
        return 0.0


async def iterate_in_thread(iterator: Iterator[str]) -> AsyncIterator[str]:
    """A blocking iterator consumed on a thread, its items handed to the event loop as they come."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def pump() -> None:
        try:
            for item in iterator:
                loop.call_soon_threadsafe(queue.put_nowait, ("item", item))
        except BaseException as exc:  # handed to the reader, raised there
            loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, ("end", None))

    threading.Thread(target=pump, daemon=True).start()
    while True:
        kind, value = await queue.get()
        if kind == "item":
            yield value
        elif kind == "error":
            raise value
        else:
            return


@serve.deployment(name="TwinLLM", max_ongoing_requests=64)
class TwinLLM:
    def __init__(self, settings_overrides: dict[str, Any] | None = None) -> None:
        self.settings = load_settings(**(settings_overrides or {}))
        self._generate_batch.set_max_batch_size(self.settings.serve_max_batch_size)
        self._generate_batch.set_batch_wait_timeout_s(self.settings.serve_batch_wait_s)

    @serve.multiplexed(max_num_models_per_replica=get_settings().serve_max_models_per_replica)
    async def get_model(self, model_id: str) -> LLMClient:
        def load() -> LLMClient:
            client = load_client(model_id, self.settings)
            _ = client.backend.tokenizer  # type: ignore[attr-defined]  # weights load now, not on the first request
            return client

        return await asyncio.to_thread(load)

    async def load(self) -> dict[str, str]:
        """Loads the request's model id (warm-up before a hot swap, readiness)."""
        client = await self.get_model(serve.get_multiplexed_model_id())
        return {"model_id": serve.get_multiplexed_model_id(), "model": client.backend.model}

    async def generate(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self._generate_batch({**request, "model_id": serve.get_multiplexed_model_id()})

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _generate_batch(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        replies: list[dict[str, Any] | None] = [None] * len(requests)
        # Serve batches per model id; requests are still grouped by model and sampling settings here,
        # since one forward pass runs one model with one set of settings.
        groups: dict[tuple[str, SamplingSettings], list[int]] = {}
        clients: dict[str, LLMClient] = {}
        for i, request in enumerate(requests):
            model_id = request["model_id"]
            if model_id not in clients:
                clients[model_id] = await self.get_model(model_id)
            groups.setdefault((model_id, sampling_for(clients[model_id], request)), []).append(i)
        for (model_id, sampling), members in groups.items():
            client = clients[model_id]
            results = await asyncio.to_thread(client.chat, [requests[i]["messages"] for i in members],
                                              sampling=sampling)
            for i, result in zip(members, results, strict=True):
                replies[i] = {"text": result.text, "prompt_tokens": result.prompt_tokens,
                              "completion_tokens": result.completion_tokens, "finish_reason": result.finish_reason,
                              "model_id": model_id, "model": client.backend.model, "batch_size": len(members)}
        return [r for r in replies if r is not None]

    async def generate_stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Text pieces as they are generated, then one final item with the token counts."""
        model_id = serve.get_multiplexed_model_id()
        client = await self.get_model(model_id)
        sampling = sampling_for(client, request)
        pieces: list[str] = []
        async for piece in iterate_in_thread(client.stream(request["messages"], sampling=sampling)):
            pieces.append(piece)
            yield {"delta": piece}
        tokenizer = client.backend.tokenizer  # type: ignore[attr-defined]
        prompt_tokens = len(tokenizer.apply_chat_template(request["messages"], add_generation_prompt=True,
                                                          tokenize=True, return_dict=True)["input_ids"])
        completion = len(tokenizer("".join(pieces), add_special_tokens=False)["input_ids"])
        yield {"done": True, "text": "".join(pieces).strip(), "prompt_tokens": prompt_tokens,
               "completion_tokens": completion, "model_id": model_id, "model": client.backend.model,
               "finish_reason": "length" if completion >= sampling.max_new_tokens else "stop"}
