"""The HTTP API on a real Serve application (tests/serving/conftest.py): answers with cited sources,
refusals, the planted instruction, the OpenAI client, errors, feedback."""

from __future__ import annotations

import httpx

from tests.serving.conftest import PLANTED_PAYLOAD, PLANTED_QUESTION, ServeApp

ANSWERABLE = ("What rules make a backfill safe to run twice, and why overwrite the whole partition?",
              "/mara-lindqvist/idempotent-backfills.html")
UNANSWERABLE = "How do I tune Spark shuffle partitions for a skewed join?"


def test_an_answerable_question_cites_the_right_document(serve_app: ServeApp) -> None:
    with serve_app.client() as client:
        reply = client.post("/v1/ask", json={"question": ANSWERABLE[0], "author": "mara-lindqvist"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["answer"] and body["answer"] != "I don't know", body
    assert body["sources"][0]["url"].endswith(ANSWERABLE[1]), body["sources"]
    assert body["model_version"] == "base" and reply.headers["X-Twin-Model-Version"] == "base"
    assert reply.headers["X-Trace-Id"] == body["trace_id"]
    assert set(body["cited"]) <= {s["number"] for s in body["sources"]}


def test_an_unanswerable_question_gets_i_dont_know_and_no_sources(serve_app: ServeApp) -> None:
    with serve_app.client() as client:
        body = client.post("/v1/ask", json={"question": UNANSWERABLE}).json()
    assert body["answer"] == "I don't know" and body["sources"] == [], body


def test_a_planted_instruction_does_not_change_the_answer(serve_app: ServeApp) -> None:
    with serve_app.client() as client:
        body = client.post("/v1/ask", json={"question": PLANTED_QUESTION, "author": "mara-lindqvist"}).json()
    assert any(s["url"].endswith("/deploy-freezes.html") for s in body["sources"]), body
    assert PLANTED_PAYLOAD.lower() not in body["answer"].lower(), body


def test_the_official_openai_client_talks_to_the_twin(serve_app: ServeApp) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=serve_app.url + "/v1", api_key=serve_app.api_key, max_retries=0)
    assert {m.id for m in client.models.list()} == {"twin-mara-lindqvist", "twin-tomas-okafor", "twin-priya-raman"}
    reply = client.chat.completions.create(model="twin-mara-lindqvist",
                                           messages=[{"role": "user", "content": ANSWERABLE[0]}])
    assert reply.choices[0].message.content and reply.usage.completion_tokens > 0
    assert reply.system_fingerprint == "version-base"
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="twin-mara-lindqvist", messages=[{"role": "user", "content": ANSWERABLE[0]}], stream=True)
        if c.choices]
    assert len([p for p in pieces if p]) > 2 and "".join(pieces).strip()
    refused = client.chat.completions.create(model="twin-mara-lindqvist",
                                             messages=[{"role": "user", "content": UNANSWERABLE}])
    assert refused.choices[0].message.content == "I don't know"


def test_ask_streams_tokens_then_the_answer_with_sources(serve_app: ServeApp) -> None:
    import json

    events = []
    with serve_app.client() as client, client.stream(
            "POST", "/v1/ask", json={"question": ANSWERABLE[0], "author": "mara-lindqvist", "stream": True}) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in reply.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line[5:])))
    tokens = [e for n, e in events if n == "token"]
    final = [e for n, e in events if n == "done"]
    assert len(tokens) > 2 and len(final) == 1, events
    assert final[0]["sources"][0]["url"].endswith(ANSWERABLE[1]) and final[0]["model_version"] == "base"


def test_errors_are_clear_json(serve_app: ServeApp) -> None:
    ask = {"question": ANSWERABLE[0]}
    assert httpx.post(serve_app.url + "/v1/ask", json=ask, timeout=60).status_code == 401
    wrong = httpx.post(serve_app.url + "/v1/ask", json=ask, headers={"X-API-Key": "wrong"}, timeout=60)
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "unauthorized"
    with serve_app.client() as client:
        invalid = client.post("/v1/ask", json={"question": "", "k": 0})
        assert invalid.status_code == 422 and {tuple(d["loc"]) for d in invalid.json()["error"]["details"]} == {
            ("body", "question"), ("body", "k")}
        assert client.post("/v1/ask", json={"question": "x" * 2001}).status_code == 422  # the setting's limit
        too_big = client.post("/v1/ask", content=b'{"question": "' + b"a" * 70_000 + b'"}',
                              headers={"content-type": "application/json"})
        assert too_big.status_code == 413 and "TWIN_SERVE_MAX_BODY_BYTES" in too_big.json()["error"]["message"]
        assert client.post("/v1/ask", json={**ask, "author": "nobody"}).status_code == 404
        assert client.post("/v1/chat/completions", json={"model": "gpt-4", "messages": [
            {"role": "user", "content": "hi"}]}).status_code == 404
        assert client.post("/v1/ask", content=b"{not json", headers={"content-type": "application/json"}
                           ).status_code == 422
    assert httpx.get(serve_app.url + "/health", timeout=60).json() == {"status": "ok"}
    assert httpx.get(serve_app.url + "/ready", timeout=60).status_code == 200
    spec = httpx.get(serve_app.url + "/openapi.json", timeout=60).json()
    assert {"/v1/ask", "/v1/search", "/v1/chat/completions", "/v1/models", "/v1/feedback"} <= set(spec["paths"])


def test_every_answer_is_recorded_and_rated_for_the_canary(serve_app: ServeApp) -> None:
    from twin.canary.store import CanaryStore
    from twin.storage.documents import DocumentStore

    with serve_app.client() as client:
        body = client.post("/v1/ask", json={"question": UNANSWERABLE, "author": "priya-raman"}).json()
        rated = client.post("/v1/feedback", json={"trace_id": body["trace_id"], "rating": -1, "comment": "no"})
        assert rated.status_code == 200 and rated.json()["version"] == "base", rated.text
        assert client.post("/v1/feedback", json={"trace_id": "nope", "rating": 1}).status_code == 404
        assert client.post("/v1/feedback", json={"trace_id": body["trace_id"], "rating": 5}).status_code == 422
    store = CanaryStore(DocumentStore(serve_app.mongodb_uri, serve_app.database).db)
    [served] = [r for r in store.requests("priya-raman") if r.trace_id == body["trace_id"]]
    assert served.endpoint == "/v1/ask" and served.status_code == 200 and served.role == "champion"
    assert served.client_key and serve_app.api_key not in served.client_key
    assert [f.rating for f in store.feedback("priya-raman") if f.trace_id == body["trace_id"]] == [-1]


def test_search_returns_hits_and_the_relevance_signal(serve_app: ServeApp) -> None:
    with serve_app.client() as client:
        hit = client.post("/v1/search", json={"query": ANSWERABLE[0], "k": 3}).json()
        miss = client.post("/v1/search", json={"query": UNANSWERABLE}).json()
    assert hit["answerable"] and hit["hits"][0]["url"].endswith(ANSWERABLE[1])
    assert not miss["answerable"]


def test_a_missing_index_is_a_503_that_names_the_fix_and_other_failures_hide_their_details() -> None:
    from twin.search.base import IndexNotBuiltError
    from twin.serving.app import failed_answer

    status, message = failed_answer(IndexNotBuiltError("search index 'chunks' does not exist yet"))
    assert status == 503 and "twin features run" in message
    status, message = failed_answer(RuntimeError("mongodb://user:secret@host"))
    assert status == 500 and "secret" not in message and "RuntimeError" in message
