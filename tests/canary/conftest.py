"""Canary tests: the real MongoDB-protocol server (a fresh database per test) and the real MLflow registry."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from tests.training.test_registry import new_version as registered_version
from twin.canary.store import CanaryStore, ServedRequest
from twin.models import utcnow
from twin.registry import ModelRegistry
from twin.settings import Settings

# Small enough for fast tests, large enough for the tests to mean something.
CANARY_ENV = {"TWIN_CANARY_MIN_REQUESTS": "150", "TWIN_CANARY_MIN_FEEDBACK": "40",
              "TWIN_CANARY_FEEDBACK_MARGIN": "0.15"}


@pytest.fixture
def canary_store(document_store) -> CanaryStore:
    return CanaryStore(document_store.db)


@pytest.fixture
def canary_env(monkeypatch: pytest.MonkeyPatch, tmp_path, mongodb_uri: str, mlflow_uri: str,
               document_store) -> Iterator[Settings]:
    """Settings on the test servers, the test's own database, and the canary thresholds above."""
    from twin.settings import get_settings

    env = {"TWIN_DATA_DIR": str(tmp_path / "data"), "MONGODB_URI": mongodb_uri,
           "MONGODB_DATABASE": document_store.db.name, "MLFLOW_TRACKING_URI": mlflow_uri, **CANARY_ENV}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def registry(canary_env: Settings) -> ModelRegistry:
    return ModelRegistry(canary_env)


@pytest.fixture
def author() -> str:
    return f"can-{uuid.uuid4().hex[:8]}"


def new_version(registry: ModelRegistry, author: str, *, gate: str = "passed") -> str:
    """A registered version over a real MLflow run, gated as given (the registry tests' helper)."""
    return registered_version(registry, author, gate)


def champion_and_challenger(registry: ModelRegistry, author: str, *,
                            approve_challenger: bool = True) -> tuple[str, str]:
    champion = new_version(registry, author)
    registry.approve(author, champion, by="ana")
    challenger = new_version(registry, author)
    if approve_challenger:
        registry.set_tags(author, challenger, {"approval": "approved", "approved_by": "ana"})
    return champion, challenger


def simulate(store: CanaryStore, author: str, version: str, role: str, n: int, *, error_rate: float,
             latency_ms: float, thumbs_up: float | None = None, ratings: int = 0, seed: int = 0,
             start: datetime | None = None) -> None:
    """`n` served requests of one version through CanaryStore (and `ratings` of them rated), spread over
    two hours from `start` (default: two hours ago): errors drawn with `error_rate`, latencies lognormal
    around `latency_ms`."""
    rng = random.Random(seed)
    start = start or utcnow() - timedelta(hours=2)
    for i in range(n):
        failed = rng.random() < error_rate
        trace = f"{role}-{version}-{seed}-{i}-{os.urandom(3).hex()}"
        store.record_request(ServedRequest(
            trace_id=trace, author=author, version=version, role=role, endpoint="/v1/ask",
            latency_ms=latency_ms * rng.lognormvariate(0, 0.3), status_code=500 if failed else 200,
            error="generation failed" if failed else None, client_key=f"client-{i % 37}",
            at=start + timedelta(seconds=7200 * i / n)))
        if i < ratings and thumbs_up is not None:
            store.record_feedback(trace, 1 if rng.random() < thumbs_up else -1)
