"""Fixtures of the LLM client and dataset tests: the real packaged model, loaded once, and a small
OpenAI-compatible HTTP server on 127.0.0.1 that answers from that model.

The server can be told to misbehave for its next requests (`faults`): answer too late, fail with a
503, need an API key, or reply empty or malformed, as real endpoints do.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.fixtures.processes import free_port, wait_until
from twin.llm.base import SamplingSettings

SMALL_TOKENS = 12  # the model is slow on two shared cores: tests ask for short replies


@pytest.fixture(scope="session")
def model_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the packaged model is dequantised once for the run (TWIN_MODEL_CACHE_DIR reuses one)."""
    configured = os.environ.get("TWIN_MODEL_CACHE_DIR")
    return Path(configured) if configured else tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def local_backend(model_cache_dir: Path):
    from twin.llm.local import shared_local_backend

    return shared_local_backend("packaged", str(model_cache_dir), None)


@pytest.fixture
def llm_env(twin_env, model_cache_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings of a fresh data folder and database, sharing the session's model cache."""
    from twin.settings import get_settings

    monkeypatch.setenv("TWIN_MODEL_CACHE_DIR", str(model_cache_dir))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@dataclass
class OpenAIServer:
    url: str  # base URL, ending in /v1
    faults: deque = field(default_factory=deque)  # "slow", "busy", "empty", "malformed", "canned": one a request
    requests: list[dict] = field(default_factory=list)
    api_key: str | None = None
    slow_s: float = 2.0


def _app(server: OpenAIServer, backend):
    # fastapi names at module level: the endpoint's annotations are resolved there
    app = FastAPI()

    @app.post("/v1/chat/completions")
    def chat(body: dict, request: Request):
        server.requests.append(body)
        if server.api_key and request.headers.get("authorization") != f"Bearer {server.api_key}":
            return JSONResponse({"error": {"message": "invalid api key", "type": "auth"}}, status_code=401)
        fault = server.faults.popleft() if server.faults else None
        if fault == "slow":
            time.sleep(server.slow_s)
        if fault == "busy":
            return JSONResponse({"error": {"message": "overloaded", "type": "server"}}, status_code=503)
        sampling = SamplingSettings(temperature=body.get("temperature", 0.7), top_p=body.get("top_p", 0.9),
                                    max_new_tokens=body.get("max_tokens", 16), seed=body.get("seed", 0),
                                    repetition_penalty=body.get("repetition_penalty", 1.0))
        if fault in ("empty", "malformed", "canned"):  # canned: a quick fixed answer, whatever the load
            text = {"empty": "", "malformed": "?? ... ??", "canned": "Yes."}[fault]
            prompt_tokens, tokens, reason = 1, 1, "stop"
        else:
            [done] = backend.generate([body["messages"]], sampling)
            text, prompt_tokens, tokens, reason = done.text, done.prompt_tokens, done.completion_tokens, \
                done.finish_reason
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": body["model"], "choices": [{"index": 0, "finish_reason": reason,
                                                     "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens,
                          "total_tokens": prompt_tokens + tokens}}

    return app


@pytest.fixture(scope="session")
def openai_server_session(local_backend) -> Iterator[OpenAIServer]:
    import uvicorn

    port = free_port()
    server = OpenAIServer(url=f"http://127.0.0.1:{port}/v1")
    uv = uvicorn.Server(uvicorn.Config(_app(server, local_backend), host="127.0.0.1", port=port,
                                       log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    wait_until(lambda: uv.started, 30, "OpenAI-compatible test server")
    yield server
    uv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def openai_server(openai_server_session: OpenAIServer) -> Iterator[OpenAIServer]:
    """The session's server, with no faults, no key and no requests recorded."""
    server = openai_server_session
    server.faults.clear()
    server.requests.clear()
    server.api_key = None
    yield server
    server.faults.clear()
