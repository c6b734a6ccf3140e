"""The bounded load test (e2e): 16 concurrent clients for 60 s on the session Serve app, mostly /v1/ask and
every fourth request /v1/chat/completions, answerable and unanswerable questions; zero errors, p50/p95
printed and kept in tests/output/serving_load.json. Requests started within the 60 s finish; on a loaded
2-core machine that can take minutes."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import ServeApp
from tests.serving.test_api import ANSWERABLE, UNANSWERABLE

CLIENTS, DURATION_S = 16, 60.0
OUTPUT = Path(__file__).resolve().parents[1] / "output" / "serving_load.json"
# Generous: a slow answer on a loaded CPU machine is measured in p95, only a failed one is an error.
CLIENT_TIMEOUT_S = 600
QUESTIONS = [ANSWERABLE[0], UNANSWERABLE, "Why should a backfill overwrite the whole partition?",
             "What is merged during a deploy freeze?"]


async def client_loop(app: ServeApp, number: int, deadline: float, latencies: dict[str, list[float]],
                      errors: list[str]) -> None:
    async with httpx.AsyncClient(base_url=app.url, headers=app.auth, timeout=CLIENT_TIMEOUT_S) as client:
        i = 0
        while time.monotonic() < deadline:
            question = QUESTIONS[(number + i) % len(QUESTIONS)]
            chat = (number + i) % 4 == 3
            path = "/v1/chat/completions" if chat else "/v1/ask"
            body = ({"model": "twin-mara-lindqvist", "messages": [{"role": "user", "content": question}]} if chat
                    else {"question": question, "author": "mara-lindqvist"})
            began = time.perf_counter()
            try:
                reply = await client.post(path, json=body)
                if reply.status_code != 200:
                    errors.append(f"{path} {reply.status_code}: {reply.text[:200]}")
                elif not (reply.json()["choices"][0]["message"]["content"] if chat else reply.json()["answer"]):
                    errors.append(f"{path}: empty answer")
            except httpx.HTTPError as exc:
                errors.append(f"{path} {type(exc).__name__}: {exc}")
            latencies[path].append(time.perf_counter() - began)
            i += 1


@pytest.mark.e2e
def test_sixteen_clients_for_a_minute_get_no_errors(serve_app: ServeApp) -> None:
    latencies: dict[str, list[float]] = {"/v1/ask": [], "/v1/chat/completions": []}
    errors: list[str] = []

    async def run() -> None:
        deadline = time.monotonic() + DURATION_S
        await asyncio.gather(*(client_loop(serve_app, n, deadline, latencies, errors) for n in range(CLIENTS)))

    began = time.monotonic()
    asyncio.run(run())
    elapsed = time.monotonic() - began
    every = [x for values in latencies.values() for x in values]
    figures: dict[str, object] = {"clients": CLIENTS, "seconds": round(elapsed, 1), "errors": len(errors),
                                  "requests_per_s": round(len(every) / elapsed, 2)}
    for path, values in [*latencies.items(), ("all", every)]:
        p50, p95 = statistics.median(values), statistics.quantiles(values, n=20)[18]
        figures[path] = {"requests": len(values), "p50_s": round(p50, 2), "p95_s": round(p95, 2)}
        print(f"load {path}: {len(values)} requests, p50 {p50:.2f} s, p95 {p95:.2f} s")
    print(f"load: {len(every)} requests in {elapsed:.0f} s from {CLIENTS} clients = {len(every) / elapsed:.2f} req/s, "
          f"{len(errors)} errors")
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(figures, indent=2) + "\n")
    assert not errors, errors[:10]
    assert len(latencies["/v1/ask"]) >= CLIENTS and len(latencies["/v1/chat/completions"]) >= CLIENTS // 4
