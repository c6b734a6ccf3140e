"""Registered versions on the running app: a canary share sends traffic to the challenger, and a
moved champion alias is picked up under load with zero failed requests."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.serving.conftest import ServeApp, register_lora_versions
from tests.serving.test_api import ANSWERABLE, UNANSWERABLE

AUTHOR = "mara-lindqvist"


@pytest.fixture(scope="module")
def registered_version(serve_app: ServeApp, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A LoRA adapter over the packaged model, logged to an MLflow run and registered as twin-<author>."""
    return register_lora_versions(serve_app, AUTHOR, tmp_path_factory.mktemp("adapter"), "serving-tests")[0]


def test_a_canary_share_routes_to_the_challenger(serve_app: ServeApp, registered_version: str) -> None:
    from twin.canary.store import CanaryConfig, CanaryStore
    from twin.storage.documents import DocumentStore

    store = CanaryStore(DocumentStore(serve_app.mongodb_uri, serve_app.database).db)
    store.set_config(CanaryConfig(author=AUTHOR, challenger_version=registered_version, share=1.0))
    try:
        time.sleep(1)  # the ingress's config cache (TWIN_CANARY_CONFIG_TTL_S=0.5)
        with serve_app.client({"X-Client-Key": "canary-client"}) as client:
            reply = client.post("/v1/ask", json={"question": ANSWERABLE[0], "author": AUTHOR})
        body = reply.json()
        assert reply.status_code == 200, reply.text
        assert body["role"] == "challenger" and body["model_version"] == registered_version, body
        assert body["sources"][0]["url"].endswith(ANSWERABLE[1])
        [served] = [r for r in store.requests(AUTHOR) if r.trace_id == body["trace_id"]]
        assert served.role == "challenger" and served.version == registered_version
    finally:
        store.set_config(CanaryConfig(author=AUTHOR))
    time.sleep(1)


def test_a_moved_champion_is_served_under_load_without_a_failed_request(serve_app: ServeApp,
                                                                         registered_version: str) -> None:
    from twin.registry import CHAMPION, ModelRegistry
    from twin.training.config import registered_model_name

    results: list[tuple[float, int, str]] = []  # (started, status, version)
    stop = threading.Event()

    def client_loop(question: str) -> None:
        with httpx.Client(base_url=serve_app.url, headers=serve_app.auth, timeout=120) as client:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    reply = client.post("/v1/ask", json={"question": question, "author": AUTHOR})
                    results.append((started, reply.status_code, reply.headers.get("X-Twin-Model-Version", "")))
                except httpx.HTTPError as exc:
                    results.append((started, 0, repr(exc)))

    threads = [threading.Thread(target=client_loop, args=(q,)) for q in (ANSWERABLE[0], UNANSWERABLE) * 2]
    for thread in threads:
        thread.start()
    try:
        time.sleep(4)
        registry = ModelRegistry(serve_app.settings())
        registry.client.set_registered_model_alias(registered_model_name(AUTHOR), CHAMPION, registered_version)
        moved = time.monotonic()
        deadline = moved + 60
        while time.monotonic() < deadline and not any(v == registered_version for _, _, v in results):
            time.sleep(0.5)
        time.sleep(4)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        ModelRegistry(serve_app.settings()).client.delete_registered_model_alias(
            registered_model_name(AUTHOR), CHAMPION)
    failed = [r for r in results if r[1] != 200]
    assert not failed, failed
    versions = [v for _, _, v in sorted(results)]
    assert versions[0] == "base" and versions[-1] == registered_version, versions
    first_new = versions.index(registered_version)
    assert all(v == registered_version for v in versions[first_new + 4:]), versions  # 4 clients: in flight
    print(f"\nhot swap: {len(results)} requests, 0 failed; base -> {registered_version} "
          f"after {sorted(results)[first_new][0] - moved:.1f} s")
