"""The RAG ingress (FastAPI under `@serve.ingress`) and `build_app`, which binds it to the LLM deployment.

Per request: API key, body size and rate limit (middleware); the author's canary config (cached
`TWIN_CANARY_CONFIG_TTL_S`) and `choose_role` pick champion or challenger; the champion is the
registry alias read every `TWIN_SERVE_REGISTRY_POLL_S` (hot swap: the new version is loaded before
requests move to it, requests already running finish on theirs); retrieval decides whether to answer
at all; the LLM deployment answers through the multiplexed handle; the request is recorded for the
canary and traced in MLflow.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.sse import EventSourceResponse
from fastapi.staticfiles import StaticFiles
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from twin.search.base import IndexNotBuiltError
from twin.serving.rag import REFUSAL, Answer, PromptPlan, RagPipeline, finish
from twin.serving.schemas import (
    AskRequest,
    AskResponse,
    ChatRequest,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    SearchRequest,
    SearchResponse,
)
from twin.serving.versions import BASE, ChampionCache, ModelRef
from twin.settings import Settings, load_settings

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
OPEN_PATHS = ("/", "/health", "/ready", "/openapi.json", "/docs", "/redoc", "/favicon.ico")
MODEL_PREFIX = "twin-"
VERSION_HEADER, TRACE_HEADER = "X-Twin-Model-Version", "X-Trace-Id"
ERRORS = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
          413: "payload_too_large", 422: "invalid_request", 429: "rate_limited", 503: "unavailable"}

api = FastAPI(title="LLM twin API", version="1.0",
              description="Ask a person's writing twin: RAG answers with cited sources, retrieval, an "
                          "OpenAI-compatible chat endpoint and feedback for the canary comparison.",
              responses={400: {"model": ErrorResponse}, 401: {"model": ErrorResponse}, 413: {"model": ErrorResponse},
                         422: {"model": ErrorResponse}, 429: {"model": ErrorResponse}})
api.mount("/static", StaticFiles(directory=STATIC), name="static")
_ingress: TwinRAG | None = None  # the replica's ingress, for the middleware
# `stream: true` answers Server-Sent Events instead of the JSON body: both are documented.
STREAMED = {"description": "The answer, or with `stream: true` Server-Sent Events",
            "content": {"text/event-stream": {"schema": {  # one event: its name and its JSON data
                "type": "object", "required": ["data"],
                "properties": {"event": {"type": "string"}, "data": {"type": "string"}}}}}}


def error(status: int, message: str, details: list[dict[str, Any]] | None = None,
          headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"message": message, "type": ERRORS.get(status, "error"), "code": status}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
               for e in exc.errors()]
    return error(422, "the request body is not valid: " + "; ".join(
        f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in details[:5]), details)


def failed_answer(exc: Exception) -> tuple[int, str]:
    """The status and public message of a failed answer: no index yet is a 503 the operator can act on."""
    if isinstance(exc, IndexNotBuiltError):
        return 503, f"{exc}; `twin features run` builds it"
    return 500, f"the answer failed: {type(exc).__name__}"


@api.exception_handler(IndexNotBuiltError)
async def _no_index(request: Request, exc: IndexNotBuiltError) -> JSONResponse:
    return error(*failed_answer(exc), headers={"Retry-After": "30"})


@api.middleware("http")
async def _guard(request: Request, call_next: Any) -> Response:
    """API key (401), body size (413) and rate limit (429), before any route runs."""
    ingress = _ingress
    path = request.url.path
    if path in OPEN_PATHS or path.startswith("/static/"):
        return await call_next(request)
    if ingress is None:  # never unguarded: no keys known yet means no answer yet
        return error(503, "the API is starting")
    key = presented_key(request)
    if ingress.api_keys and key not in ingress.api_keys:
        return error(401, "a valid API key is needed: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                     headers={"WWW-Authenticate": "Bearer"})
    limit = ingress.settings.serve_max_body_bytes
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        return error(413, f"the request body is larger than {limit} bytes (TWIN_SERVE_MAX_BODY_BYTES)")
    if length is None and request.method in ("POST", "PUT", "PATCH") and len(await request.body()) > limit:
        return error(413, f"the request body is larger than {limit} bytes (TWIN_SERVE_MAX_BODY_BYTES)")
    client = client_key(request) or (request.client.host if request.client else "anonymous")
    if not ingress.limiter.allow(client):
        return error(429, f"more than {ingress.settings.serve_rate_limit_per_min} requests a minute from this "
                          "client (TWIN_SERVE_RATE_LIMIT_PER_MIN); retry later", headers={"Retry-After": "60"})
    return await call_next(request)


def presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("x-api-key")


def client_key(request: Request) -> str | None:
    """A hash of the caller's API key or X-Client-Key (never the raw key): canary stickiness, rate limit."""
    raw = request.headers.get("x-client-key") or presented_key(request)
    return hashlib.sha256(raw.encode()).hexdigest()[:32] if raw else None


class RateLimiter:
    """Sliding one-minute window per client key, per ingress replica."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._seen: dict[str, deque[float]] = {}

    def allow(self, client: str) -> bool:
        if self.per_minute <= 0:
            return True
        now = time.monotonic()
        window = self._seen.setdefault(client, deque())
        while window and now - window[0] > 60:
            window.popleft()
        if len(window) >= self.per_minute:
            return False
        window.append(now)
        if len(self._seen) > 10_000:  # forget idle clients
            self._seen = {k: v for k, v in self._seen.items() if v and now - v[-1] <= 60}
        return True


@dataclass
class Route:
    author: str | None
    role: str
    version: str  # "base" or a registered version number

    @property
    def model_id(self) -> str:
        return ModelRef(self.author, self.version).model_id


@dataclass
class Outcome:
    """What one /v1/ask or chat request did: its answer, tokens and timings (traced and recorded)."""

    route: Route
    trace_id: str
    started: float = field(default_factory=time.perf_counter)
    answer: Answer | None = None
    reply: dict[str, Any] = field(default_factory=dict)


def _span_start(name: str, kind: str, parent: Any = None, **kw: Any) -> Any:
    import mlflow

    return mlflow.start_span_no_context(name, span_type=kind, parent_span=parent, **kw)


def sse(event: str, payload: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(payload)}\n\n"


def data_line(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


# Everything the class uses is defined above it: Serve pickles the class when it is decorated.
@serve.deployment(name="TwinRAG", max_ongoing_requests=128)
@serve.ingress(api)
class TwinRAG:
    def __init__(self, llm: DeploymentHandle, settings_overrides: dict[str, Any] | None = None) -> None:
        # The registry is read on the request path's side: fail fast rather than retry for minutes.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        self.settings: Settings = load_settings(**(settings_overrides or {}))
        self.llm = llm
        keys = self.settings.serve_api_keys.get_secret_value() if self.settings.serve_api_keys else ""
        self.api_keys = {k.strip() for k in keys.split(",") if k.strip()}
        if not self.api_keys:
            log.warning("TWIN_SERVE_API_KEYS is unset: the HTTP API answers anyone who can reach %s:%s",
                        self.settings.host, self.settings.serve_port)
        self.limiter = RateLimiter(self.settings.serve_rate_limit_per_min)
        self.authors = self._authors()
        self.default_author = self.settings.author or (next(iter(self.authors)) if len(self.authors) == 1 else None)
        self.pipeline = self._pipeline()
        self.champions = ChampionCache(self.settings, self.settings.serve_registry_poll_s)
        self._canary: dict[str, tuple[Any, float]] = {}
        self._store: Any = None
        self.loaded: set[str] = set()
        self.tracing = self.settings.serve_tracing and self._configure_tracing()
        # Serve pickles this class by value: set the importable module's global, which the middleware reads.
        import twin.serving.app as module

        module._ingress = self
        loop = asyncio.get_event_loop()
        self._tasks = [loop.create_task(self._warm_up()), loop.create_task(self._poll_registry())]

    # --- setup --------------------------------------------------------------------------------
    def _authors(self) -> dict[str, str]:
        from twin.retrieval.retriever import known_authors
        from twin.storage.documents import DocumentStore

        store = DocumentStore.from_settings(self.settings)
        try:
            return {a.id: a.name for a in known_authors(store)}
        finally:
            store.close()

    def _pipeline(self) -> RagPipeline:
        from twin.features.embedding import get_embedder
        from twin.retrieval.retriever import build_retriever

        embedder = get_embedder(self.settings)
        return RagPipeline(build_retriever(self.settings), embedder.count_tokens,
                           budget_tokens=self.settings.context_max_tokens, author_names=self.authors)

    def _configure_tracing(self) -> bool:
        try:
            from twin.tracking import configure_mlflow

            configure_mlflow(self.settings, self.settings.serve_experiment)
            return True
        except Exception as exc:
            log.warning("MLflow tracing is off: %s", exc)
            return False

    def store(self) -> Any:
        if self._store is None:
            from twin.canary.store import CanaryStore

            self._store = CanaryStore.from_settings(self.settings)
        return self._store

    async def _warm_up(self) -> None:
        """Load every twin's champion (or the base model) so that /ready turns 200 and the first answer is quick."""
        authors = list(self.authors) or [None]
        for author in authors:
            route = await self.route(author, None)
            await self._load(route.model_id)

    async def _load(self, model_id: str) -> None:
        while True:
            try:
                await self.llm.options(multiplexed_model_id=model_id).load.remote()
                self.loaded.add(model_id)
                return
            except Exception as exc:
                log.warning("loading %s failed (%s); retrying", model_id, exc)
                await asyncio.sleep(2)

    async def _poll_registry(self) -> None:
        """Hot swap: a moved champion is loaded first, then new requests go to it."""
        while True:
            await asyncio.sleep(self.settings.serve_registry_poll_s)
            for author in self.champions.authors():
                try:
                    version = await asyncio.to_thread(self.champions.read, author)
                    if version != self.champions.cached(author):
                        model_id = ModelRef(author, version).model_id
                        log.info("champion of %s moved to %s: loading it", author, version)
                        await self._load(model_id)
                    self.champions.store(author, version)
                except Exception:
                    log.exception("registry poll for %s failed", author)

    # --- routing ------------------------------------------------------------------------------
    async def champion(self, author: str | None) -> str:
        if author is None:
            return BASE
        if self.champions.cached(author) is None:
            self.champions.store(author, await asyncio.to_thread(self.champions.read, author))
        return self.champions.cached(author) or BASE

    async def canary_config(self, author: str) -> Any:
        cached = self._canary.get(author)
        if cached and time.monotonic() - cached[1] < self.settings.canary_config_ttl_s:
            return cached[0]
        try:
            config = await asyncio.to_thread(self.store().config, author)
        except Exception as exc:
            if cached:  # a transient read error must not switch a running canary off: keep the last config read
                log.warning("canary config of %s unreadable, keeping the last one read: %s", author, exc)
                return cached[0]
            log.warning("canary config of %s unreadable: %s", author, exc)
            from twin.canary.store import CanaryConfig

            config = CanaryConfig(author=author)
        self._canary[author] = (config, time.monotonic())
        return config

    async def route(self, author: str | None, key: str | None) -> Route:
        from twin.canary.store import choose_role

        if author is not None:
            config = await self.canary_config(author)
            if choose_role(config, key) == "challenger":
                return Route(author, "challenger", str(config.challenger_version))
        return Route(author, "champion", await self.champion(author))

    def resolve_author(self, author: str | None) -> str | None:
        if author is not None and self.authors and author not in self.authors:
            raise HTTPException(404, f"no twin for author {author!r}; known: {', '.join(sorted(self.authors))}")
        return author or self.default_author

    def check_text(self, text: str, what: str) -> None:
        limit = self.settings.serve_max_question_chars
        if len(text) > limit:
            raise RequestValidationError([{"loc": ("body", what), "type": "string_too_long",
                                           "msg": f"longer than {limit} characters (TWIN_SERVE_MAX_QUESTION_CHARS)"}])
        if not text.strip():
            raise RequestValidationError([{"loc": ("body", what), "type": "string_blank", "msg": "is blank"}])

    # --- the steps of an answer -------------------------------------------------------------------
    async def prepare(self, question: str, author: str | None, k: int, root: Any) -> tuple[Any, PromptPlan | None]:
        span = _span_start("retrieval", "RETRIEVER", root, inputs={"question": question, "author": author, "k": k}) \
            if root is not None else None
        result = await asyncio.to_thread(self.pipeline.retrieve, question, author=author, k=k)
        plan = self.pipeline.plan(question, result, author)
        if span is not None:
            span.end(outputs=[{"document_id": h.chunk.document_id, "url": h.chunk.url, "score": h.score}
                              for h in result.hits],
                     attributes={"answerable": result.answerable, "relevance": result.relevance,
                                 "redacted_sentences": plan.redacted if plan else 0})
        return result, plan

    def generation_request(self, plan: PromptPlan, **sampling: Any) -> dict[str, Any]:
        return {"messages": plan.messages, **{k: v for k, v in sampling.items() if v is not None}}

    def start_trace(self, endpoint: str, outcome: Outcome, inputs: dict[str, Any]) -> Any:
        if not self.tracing:
            return None
        try:
            return _span_start(endpoint, "CHAIN", inputs=inputs, tags={"twin.trace_id": outcome.trace_id},
                               attributes={"model_version": outcome.route.version, "role": outcome.route.role,
                                           "author": outcome.route.author or ""})
        except Exception as exc:
            log.warning("tracing failed: %s", exc)
            return None

    def llm_span(self, root: Any, plan: PromptPlan, outcome: Outcome, start_ns: int) -> None:
        if root is None:
            return
        span = _span_start("generate", "LLM", root, inputs={"messages": plan.messages}, start_time_ns=start_ns)
        span.end(outputs={"text": outcome.reply.get("text", "")}, attributes={
            "model_version": outcome.route.version, "model_id": outcome.route.model_id,
            "prompt_tokens": outcome.reply.get("prompt_tokens", 0),
            "completion_tokens": outcome.reply.get("completion_tokens", 0),
            "batch_size": outcome.reply.get("batch_size", 1)})

    async def finish_request(self, endpoint: str, outcome: Outcome, root: Any, status: int,
                             failure: str | None, key: str | None) -> None:
        latency_ms = (time.perf_counter() - outcome.started) * 1000
        if root is not None:
            try:
                root.end(outputs={"answer": outcome.answer.text if outcome.answer else None, "error": failure},
                         attributes={"latency_ms": latency_ms, "status_code": status},
                         status="ERROR" if failure else "OK")
            except Exception as exc:
                log.warning("tracing failed: %s", exc)
        if outcome.route.author is None:
            return  # the canary compares one author's versions; an author-less request has none
        from twin.canary.store import ServedRequest

        record = ServedRequest(trace_id=outcome.trace_id, author=outcome.route.author, version=outcome.route.version,
                               role=outcome.route.role, endpoint=endpoint, latency_ms=latency_ms,  # type: ignore[arg-type]
                               status_code=status, error=failure, client_key=key)
        try:
            await asyncio.to_thread(self.store().record_request, record)
        except Exception as exc:
            log.warning("could not record request %s: %s", outcome.trace_id, exc)

    def headers(self, outcome: Outcome) -> dict[str, str]:
        return {VERSION_HEADER: outcome.route.version, TRACE_HEADER: outcome.trace_id}

    # --- endpoints ------------------------------------------------------------------------------
    @api.get("/", include_in_schema=False)
    async def page(self) -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @api.get("/health")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/ready", responses={503: {"model": ErrorResponse}})
    async def ready(self) -> JSONResponse:
        if not self.loaded:
            return error(503, "no model is loaded yet")
        return JSONResponse({"status": "ready", "models": sorted(self.loaded)})

    @api.get("/v1/models")
    async def models(self) -> dict[str, Any]:
        authors = sorted(self.authors) or ["base"]
        return {"object": "list", "data": [{"id": f"{MODEL_PREFIX}{a}", "object": "model", "created": 0,
                                            "owned_by": "twin", "author_name": self.authors.get(a, a)}
                                           for a in authors]}

    @api.post("/v1/search", response_model=SearchResponse, responses={404: {"model": ErrorResponse}})
    async def search(self, body: SearchRequest) -> SearchResponse:
        self.check_text(body.query, "query")
        author = self.resolve_author(body.author) if body.author else None
        result = await asyncio.to_thread(self.pipeline.retrieve, body.query, author=author, k=body.k)
        hits = [{"document_id": h.chunk.document_id, "chunk_id": h.chunk.id, "url": h.chunk.url,
                 "title": h.chunk.title, "author": h.chunk.author_id, "score": h.score, "text": h.chunk.text}
                for h in result.hits]
        return SearchResponse(query=body.query, hits=hits, answerable=result.answerable,  # type: ignore[arg-type]
                              relevance=result.relevance, notes=result.notes)

    @api.post("/v1/ask", response_model=AskResponse, responses={200: STREAMED, 404: {"model": ErrorResponse},
                                                                503: {"model": ErrorResponse}})
    async def ask(self, body: AskRequest, request: Request) -> Response:
        self.check_text(body.question, "question")
        author = self.resolve_author(body.author)
        key = client_key(request)
        outcome = Outcome(await self.route(author, key), uuid.uuid4().hex)
        self.require_loaded(outcome.route)
        root = self.start_trace("/v1/ask", outcome, body.model_dump())
        if body.stream:
            return EventSourceResponse(self._ask_events(body, outcome, root, key), headers=self.headers(outcome))
        try:
            _, plan = await self.prepare(body.question, author, body.k or self.settings.serve_default_k, root)
            outcome.answer = await self.answer(plan, outcome, root)
        except Exception as exc:
            status, message = failed_answer(exc)
            await self.finish_request("/v1/ask", outcome, root, status, f"{type(exc).__name__}: {exc}", key)
            return error(status, message, headers=self.headers(outcome))
        await self.finish_request("/v1/ask", outcome, root, 200, None, key)
        return JSONResponse(self.ask_body(outcome), headers=self.headers(outcome))

    def require_loaded(self, route: Route) -> None:
        if not self.loaded:
            raise HTTPException(503, "no model is loaded yet; retry when GET /ready answers 200",
                                headers={"Retry-After": "5"})

    def ask_body(self, outcome: Outcome) -> dict[str, Any]:
        answer = outcome.answer or Answer(REFUSAL)
        return AskResponse(answer=answer.text, sources=answer.sources,
                           model_version=outcome.route.version, trace_id=outcome.trace_id,
                           role=outcome.route.role, cited=answer.cited).model_dump()  # type: ignore[arg-type]

    async def answer(self, plan: PromptPlan | None, outcome: Outcome, root: Any, **sampling: Any) -> Answer:
        if plan is None:
            return Answer(REFUSAL)  # nothing relevant enough was retrieved: no model call
        start_ns = time.time_ns()
        handle = self.llm.options(multiplexed_model_id=outcome.route.model_id)
        outcome.reply = await handle.generate.remote(self.generation_request(plan, **sampling))
        self.llm_span(root, plan, outcome, start_ns)
        return finish(outcome.reply["text"], plan.sources)

    async def stream_answer(self, plan: PromptPlan | None, outcome: Outcome, root: Any,
                            **sampling: Any) -> AsyncIterator[str]:
        """The answer's text as it is generated (the refusal, without a model call, when nothing relevant
        was retrieved); `outcome.answer` holds the finished answer afterwards."""
        if plan is None:
            outcome.answer = Answer(REFUSAL)
            yield REFUSAL
            return
        start_ns = time.time_ns()
        handle = self.llm.options(multiplexed_model_id=outcome.route.model_id, stream=True)
        async for item in handle.generate_stream.remote(self.generation_request(plan, **sampling)):
            if item.get("done"):
                outcome.reply = item
            else:
                yield item["delta"]
        self.llm_span(root, plan, outcome, start_ns)
        outcome.answer = finish(outcome.reply.get("text", ""), plan.sources)

    async def _ask_events(self, body: AskRequest, outcome: Outcome, root: Any, key: str | None) -> AsyncIterator[str]:
        status, failure = 200, None
        try:
            _, plan = await self.prepare(body.question, outcome.route.author,
                                         body.k or self.settings.serve_default_k, root)
            async for delta in self.stream_answer(plan, outcome, root):
                yield sse("token", {"text": delta})
            yield sse("done", self.ask_body(outcome))
        except Exception as exc:
            (status, message), failure = failed_answer(exc), f"{type(exc).__name__}: {exc}"
            yield sse("error", {"error": {"message": message, "type": "error", "code": status}})
        finally:
            await self.finish_request("/v1/ask", outcome, root, status, failure, key)

    @api.post("/v1/chat/completions", responses={200: STREAMED, 404: {"model": ErrorResponse},
                                                 503: {"model": ErrorResponse}})
    async def chat(self, body: ChatRequest, request: Request) -> Response:
        """OpenAI-compatible: the last user message is the question; the answer is the RAG answer, with its
        sources in `twin.sources` (and in the final chunk when streaming)."""
        if not body.model.startswith(MODEL_PREFIX):
            raise HTTPException(404, f"unknown model {body.model!r}: see GET /v1/models")
        name = body.model[len(MODEL_PREFIX):]
        author = self.resolve_author(None if name == "base" and not self.authors else name)
        question = next((m.content for m in reversed(body.messages) if m.role == "user" and m.content), None)
        if question is None:
            raise RequestValidationError([{"loc": ("body", "messages"), "type": "missing",
                                           "msg": "needs a user message with content"}])
        self.check_text(question, "messages")
        key = client_key(request)
        outcome = Outcome(await self.route(author, key), uuid.uuid4().hex)
        self.require_loaded(outcome.route)
        root = self.start_trace("/v1/chat/completions", outcome, {"model": body.model, "question": question})
        sampling = {"max_new_tokens": body.max_completion_tokens or body.max_tokens, "temperature": body.temperature,
                    "top_p": body.top_p, "seed": body.seed}
        created = int(time.time())
        if body.stream:
            return EventSourceResponse(self._chat_events(body.model, question, outcome, root, key, sampling, created),
                                       headers=self.headers(outcome))
        try:
            _, plan = await self.prepare(question, author, self.settings.serve_default_k, root)
            outcome.answer = await self.answer(plan, outcome, root, **sampling)
        except Exception as exc:
            status, message = failed_answer(exc)
            await self.finish_request("/v1/chat/completions", outcome, root, status, f"{type(exc).__name__}: {exc}",
                                      key)
            return error(status, message, headers=self.headers(outcome))
        await self.finish_request("/v1/chat/completions", outcome, root, 200, None, key)
        answer = outcome.answer
        usage = {"prompt_tokens": outcome.reply.get("prompt_tokens", 0),
                 "completion_tokens": outcome.reply.get("completion_tokens", 0)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return JSONResponse({
            "id": f"chatcmpl-{outcome.trace_id}", "object": "chat.completion", "created": created, "model": body.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                         "finish_reason": "length" if outcome.reply.get("finish_reason") == "length" else "stop"}],
            "usage": usage, "system_fingerprint": f"version-{outcome.route.version}",
            "twin": self.ask_body(outcome)}, headers=self.headers(outcome))

    async def _chat_events(self, model: str, question: str, outcome: Outcome, root: Any, key: str | None,
                           sampling: dict[str, Any], created: int) -> AsyncIterator[str]:
        status, failure = 200, None
        base = {"id": f"chatcmpl-{outcome.trace_id}", "object": "chat.completion.chunk", "created": created,
                "model": model, "system_fingerprint": f"version-{outcome.route.version}"}

        def chunk(delta: dict[str, str], finish_reason: str | None = None, **extra: Any) -> str:
            return data_line({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                              **extra})

        try:
            yield chunk({"role": "assistant", "content": ""})
            _, plan = await self.prepare(question, outcome.route.author, self.settings.serve_default_k, root)
            async for delta in self.stream_answer(plan, outcome, root, **sampling):
                yield chunk({"content": delta})
            yield chunk({}, "stop", twin=self.ask_body(outcome))
            yield "data: [DONE]\n\n"
        except Exception as exc:
            (status, message), failure = failed_answer(exc), f"{type(exc).__name__}: {exc}"
            yield data_line({"error": {"message": message, "type": "error", "code": status}})
        finally:
            await self.finish_request("/v1/chat/completions", outcome, root, status, failure, key)

    @api.post("/v1/feedback", response_model=FeedbackResponse, responses={404: {"model": ErrorResponse}})
    async def feedback(self, body: FeedbackRequest) -> FeedbackResponse:
        from twin.canary.store import UnknownTraceError

        try:
            stored = await asyncio.to_thread(self.store().record_feedback, body.trace_id, body.rating, body.comment)
        except UnknownTraceError:
            raise HTTPException(404, f"no served request has trace id {body.trace_id!r}") from None
        return FeedbackResponse(trace_id=stored.trace_id, author=stored.author, version=stored.version,
                                rating=stored.rating)


def build_app(settings: Settings | None = None, settings_overrides: dict[str, Any] | None = None) -> Any:
    """The Serve application: the LLM deployment and the RAG ingress bound to it, resources from settings."""
    from twin.serving.llm import TwinLLM, default_num_gpus

    settings = settings or load_settings(**(settings_overrides or {}))
    env = {"runtime_env": {"env_vars": serving_env()}}
    llm = TwinLLM.options(ray_actor_options={"num_cpus": settings.serve_llm_num_cpus,
                                             "num_gpus": default_num_gpus(settings.serve_llm_num_gpus), **env})
    rag = TwinRAG.options(ray_actor_options={"num_cpus": settings.serve_rag_num_cpus, **env})
    return rag.bind(llm.bind(settings_overrides), settings_overrides)


def serving_env() -> dict[str, str]:
    """The platform's variables of this process, handed to the replicas (they start elsewhere)."""
    prefixes = ("TWIN_", "MONGODB_", "MLFLOW_", "OPENSEARCH_", "HF_", "TRANSFORMERS_", "AWS_")
    return {k: v for k, v in os.environ.items() if k.startswith(prefixes)}


def app_builder(args: dict[str, str]) -> Any:
    """`serve run twin.serving.app:app_builder` / the Serve config YAML's import path."""
    return build_app()
