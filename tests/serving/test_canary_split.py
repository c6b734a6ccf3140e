"""A canary through the running Serve app: two registered versions of one twin at a 50% share.

Non-sticky, a few hundred /v1/ask requests split within binomial bounds, and every response names the
version the canary store recorded for its trace; sticky, each client key keeps its version, and both
versions answer a real question with their own LoRA adapter loaded side by side (multiplexing).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from scipy.stats import binomtest

from tests.serving.conftest import ServeApp, register_lora_versions
from tests.serving.test_api import UNANSWERABLE

AUTHOR = "tomas-okafor"  # the other serving tests use the other two authors' champions
ANSWERABLE = ("How do you calculate hydration with baker's percentages when the levain also contains water?",
              "/tomas-okafor/bakers-percentages-hydration.html")


@pytest.fixture(scope="module")
def two_versions(serve_app: ServeApp, tmp_path_factory: pytest.TempPathFactory):
    """Champion v1 and challenger v2 of twin-tomas-okafor, each a LoRA adapter over the packaged model."""
    from twin.registry import ModelRegistry
    from twin.training.config import registered_model_name

    registry = ModelRegistry(serve_app.settings())
    versions = register_lora_versions(serve_app, AUTHOR, tmp_path_factory.mktemp("canary-adapter"),
                                      "canary-serving-tests", count=2)
    for version in versions:
        registry.set_tags(AUTHOR, version, {"gate": "passed"})
    champion, challenger = versions
    registry.mark_challenger(AUTHOR, champion)
    registry.approve(AUTHOR, champion, by="tests")
    registry.mark_challenger(AUTHOR, challenger)
    yield champion, challenger
    registry.client.delete_registered_model(registered_model_name(AUTHOR))


def ask_all(serve_app: ServeApp, jobs: list[tuple[str, str | None]]) -> list[dict]:
    """Each (question, client key) as one /v1/ask, 8 at a time; the reply's body, headers and status."""
    def ask(job: tuple[str, str | None]) -> dict:
        question, key = job
        headers = {**serve_app.auth, **({"X-Client-Key": key} if key else {})}
        with httpx.Client(base_url=serve_app.url, headers=headers, timeout=120) as client:
            reply = client.post("/v1/ask", json={"question": question, "author": AUTHOR})
        return {"status": reply.status_code, "key": key, "body": reply.json(),
                "header": reply.headers.get("X-Twin-Model-Version"), "trace": reply.headers.get("X-Trace-Id")}

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(ask, jobs))


def wait_for_version(serve_app: ServeApp, version: str, timeout_s: float = 180) -> None:
    """Until the ingress's registry poll has seen `version` as champion (it lags on a loaded machine)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ask_all(serve_app, [(UNANSWERABLE, None)])[0]["header"] == version:
            return
        time.sleep(0.5)
    raise AssertionError(f"the ingress did not serve champion version {version} within {timeout_s:.0f} s")


@pytest.mark.e2e  # about 100 s on 2 cores: 390 answers through Serve and two adapters loaded
def test_a_half_share_splits_live_traffic_and_names_each_version(serve_app: ServeApp, two_versions) -> None:
    from twin.canary.apply import start
    from twin.canary.store import CanaryConfig, CanaryStore
    from twin.registry import ModelRegistry
    from twin.storage.documents import DocumentStore

    champion, challenger = two_versions
    store = CanaryStore(DocumentStore(serve_app.mongodb_uri, serve_app.database).db)
    registry = ModelRegistry(serve_app.settings())
    try:
        wait_for_version(serve_app, champion)
        start(store, registry, AUTHOR, challenger, share=0.5, sticky=False, by="tests")
        time.sleep(1.5)  # the ingress's canary config cache (TWIN_CANARY_CONFIG_TTL_S=0.5)
        started = time.perf_counter()
        replies = ask_all(serve_app, [(UNANSWERABLE, None)] * 300)
        elapsed = time.perf_counter() - started
        assert {r["status"] for r in replies} == {200}, [r for r in replies if r["status"] != 200][:3]
        for r in replies:
            assert r["body"]["model_version"] == r["header"] and r["body"]["trace_id"] == r["trace"]
        versions = [r["header"] for r in replies]
        assert set(versions) == {champion, challenger}
        to_challenger = versions.count(challenger)
        split = binomtest(to_challenger, len(versions), 0.5)
        assert split.pvalue > 0.01, to_challenger
        recorded = {s.trace_id: s for s in store.requests(AUTHOR)}
        for r in replies:
            served = recorded[r["trace"]]
            assert served.version == r["header"]
            assert served.role == ("challenger" if served.version == challenger else "champion")

        # Sticky: every client key keeps its version; then each version answers a real question.
        store.set_config(store.config(AUTHOR).model_copy(update={"sticky": True}))
        time.sleep(1)
        keys = [f"client-{i}" for i in range(30)]
        sticky = ask_all(serve_app, [(UNANSWERABLE, key) for key in keys * 3])
        by_key: dict[str, set[str]] = {}
        for r in sticky:
            by_key.setdefault(r["key"], set()).add(r["header"])
        assert all(len(v) == 1 for v in by_key.values()), by_key
        holder = {next(iter(v)): key for key, v in by_key.items()}
        assert set(holder) == {champion, challenger}
        answers = ask_all(serve_app, [(ANSWERABLE[0], holder[champion]), (ANSWERABLE[0], holder[challenger])])
        for reply, version in zip(answers, (champion, challenger), strict=True):
            assert reply["status"] == 200 and reply["header"] == version, reply
            assert reply["body"]["sources"] and reply["body"]["sources"][0]["url"].endswith(ANSWERABLE[1])
        print(f"\ncanary through Serve: {to_challenger}/{len(versions)} to the challenger "
              f"(binomial p={split.pvalue:.2f}), {len(versions) / elapsed:.1f} requests/s; "
              f"sticky: {len(by_key)} keys x 3 requests, one version each")
    finally:
        store.set_config(CanaryConfig(author=AUTHOR))
    time.sleep(1)
