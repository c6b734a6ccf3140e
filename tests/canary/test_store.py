"""CanaryStore against the real document store, and choose_role's split and stickiness."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from scipy.stats import binomtest

from twin.canary.store import CanaryConfig, ServedRequest, UnknownTraceError, choose_role
from twin.models import utcnow


def served(trace: str, version: str, role: str = "champion", **extra) -> ServedRequest:
    fields = dict(trace_id=trace, author="ada", version=version, role=role, endpoint="/v1/ask",
                  latency_ms=120.0, status_code=200)
    return ServedRequest(**{**fields, **extra})


def test_config_defaults_then_round_trips(canary_store) -> None:
    default = canary_store.config("ada")
    assert default.challenger_version is None and default.share == 0 and not default.active
    canary_store.set_config(CanaryConfig(author="ada", challenger_version="7", share=0.25, sticky=False,
                                         updated_by="ops"))
    stored = canary_store.config("ada")
    assert (stored.challenger_version, stored.share, stored.sticky, stored.updated_by) == ("7", 0.25, False, "ops")
    assert canary_store.authors_with_canary() == ["ada"]
    canary_store.set_config(CanaryConfig(author="ada", challenger_version="7", share=0.0))
    assert canary_store.authors_with_canary() == []


def test_share_outside_the_unit_interval_is_refused() -> None:
    with pytest.raises(ValueError):
        CanaryConfig(author="ada", challenger_version="2", share=1.5)


def test_record_request_is_idempotent_and_filters_by_author_and_time(canary_store) -> None:
    old = served("t-old", "1", at=utcnow() - timedelta(hours=3))
    canary_store.record_request(old)
    canary_store.record_request(served("t1", "1"))
    canary_store.record_request(served("t1", "1", latency_ms=999.0))  # a retried recording
    canary_store.record_request(served("t2", "2", role="challenger", status_code=500, error="boom"))
    canary_store.record_request(served("t3", "1", author="bob"))
    records = canary_store.requests("ada")
    assert [r.trace_id for r in records] == ["t-old", "t1", "t2"]
    assert records[1].latency_ms == 120.0
    assert records[2].failed and not records[1].failed
    recent = canary_store.requests("ada", since=utcnow() - timedelta(hours=1))
    assert [r.trace_id for r in recent] == ["t1", "t2"]


def test_feedback_lands_against_the_version_that_answered(canary_store) -> None:
    canary_store.record_request(served("t-champ", "1"))
    canary_store.record_request(served("t-chall", "2", role="challenger"))
    assert canary_store.record_feedback("t-chall", 1, "good").version == "2"
    assert canary_store.record_feedback("t-champ", -1).version == "1"
    stored = {f.trace_id: (f.version, f.rating, f.comment) for f in canary_store.feedback("ada")}
    assert stored == {"t-chall": ("2", 1, "good"), "t-champ": ("1", -1, "")}
    with pytest.raises(UnknownTraceError):
        canary_store.record_feedback("no-such-trace", 1)
    with pytest.raises(ValueError):
        canary_store.record_feedback("t-champ", 5)
    assert len(canary_store.feedback("ada")) == 2


def test_half_share_splits_within_binomial_bounds() -> None:
    config = CanaryConfig(author="ada", challenger_version="2", share=0.5, sticky=False)
    rng = random.Random(13)
    n = 400
    challenger = sum(choose_role(config, None, rng) == "challenger" for _ in range(n))
    # Two-sided exact binomial test of the observed split against p = 0.5.
    assert binomtest(challenger, n, 0.5).pvalue > 0.01, challenger
    # Sticky routing over distinct client keys splits the same way.
    sticky = CanaryConfig(author="ada", challenger_version="2", share=0.5)
    by_key = sum(choose_role(sticky, f"client-{i}") == "challenger" for i in range(n))
    assert binomtest(by_key, n, 0.5).pvalue > 0.01, by_key


def test_sticky_routing_holds_per_client_key_and_reshuffles_with_a_new_challenger() -> None:
    config = CanaryConfig(author="ada", challenger_version="2", share=0.3)
    keys = [f"client-{i}" for i in range(200)]
    first = {key: choose_role(config, key) for key in keys}
    for _ in range(5):
        assert {key: choose_role(config, key, random.Random()) for key in keys} == first
    moved = CanaryConfig(author="ada", challenger_version="3", share=0.3)
    assert {key: choose_role(moved, key) for key in keys} != first
    # No challenger, or a zero share: everyone gets the champion.
    assert {choose_role(CanaryConfig(author="ada", share=0.9), key) for key in keys} == {"champion"}
    assert {choose_role(CanaryConfig(author="ada", challenger_version="2"), key) for key in keys} == {"champion"}
