"""The stated tests and the decisions they support, carried out on the real registry and document store."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from tests.canary.conftest import champion_and_challenger, new_version, simulate
from tests.fixtures.airflow import load_dag
from twin.canary import apply
from twin.canary.compare import Action, VersionStats, compare, holm_rejections
from twin.models import utcnow
from twin.registry import CHALLENGER, CHAMPION, PREVIOUS
from twin.settings import load_settings


def stats(version: str, role: str, n: int, errors: int, latency: float, ratings: list[int] | None = None,
          seed: int = 1) -> VersionStats:
    rng = random.Random(seed)
    return VersionStats(version, role, n, errors, [latency * rng.lognormvariate(0, 0.3) for _ in range(n - errors)],
                        ratings or [])


SETTINGS = load_settings(canary_min_requests=150, canary_min_feedback=40, canary_feedback_margin=0.15)


def test_small_traffic_waits_and_a_person_must_approve() -> None:
    few = compare(stats("1", "champion", 100, 1, 200), stats("2", "challenger", 40, 0, 200), SETTINGS, approved=True)
    assert few.action is Action.WAIT and "not enough traffic" in few.reason
    healthy = (stats("1", "champion", 400, 4, 200), stats("2", "challenger", 400, 4, 200, seed=2))
    unapproved = compare(*healthy, SETTINGS, approved=False)
    assert unapproved.action is Action.WAIT and "approved" in unapproved.reason
    promoted = compare(*healthy, SETTINGS, approved=True)
    assert promoted.action is Action.PROMOTE, promoted.reason
    assert promoted.p_values["error_noninferior"] < 0.05 and promoted.p_values["latency_noninferior"] < 0.05


def test_limits_roll_back_early_and_harm_against_the_champion_rolls_back() -> None:
    broken = compare(stats("1", "champion", 20, 0, 200), stats("2", "challenger", 20, 6, 200), SETTINGS, approved=True)
    assert broken.action is Action.ROLLBACK and "above the limit" in broken.reason  # before the minimum traffic
    slow = compare(stats("1", "champion", 200, 0, 200), stats("2", "challenger", 30, 0, 20_000), SETTINGS,
                   approved=True)
    assert slow.action is Action.ROLLBACK and "p95 latency" in slow.reason
    slower = compare(stats("1", "champion", 300, 0, 200), stats("2", "challenger", 300, 0, 400), SETTINGS,
                     approved=True)
    assert slower.action is Action.ROLLBACK and "slower than the champion" in slower.reason
    disliked = compare(stats("1", "champion", 300, 0, 200, [1] * 90 + [-1] * 10),
                       stats("2", "challenger", 300, 0, 200, [1] * 40 + [-1] * 60), SETTINGS, approved=True)
    assert disliked.action is Action.ROLLBACK and "feedback" in disliked.reason
    # The same small difference inside the margin: no rollback, and not enough evidence to promote either.
    close = compare(stats("1", "champion", 300, 3, 200), stats("2", "challenger", 300, 6, 200), SETTINGS,
                    approved=True)
    assert close.action is Action.WAIT, close.reason


def test_several_harm_tests_share_one_false_rollback_rate() -> None:
    """Holm's step-down: a lone p just under alpha among five tests is no rollback; a strong one is, and it
    lowers the bar for the next."""
    assert holm_rejections({"a": 0.04, "b": 0.5, "c": 0.6, "d": 0.7, "e": 0.8}, 0.05) == []
    assert holm_rejections({"a": 0.001, "b": 0.02, "c": 0.6}, 0.05) == ["a", "b"]
    assert holm_rejections({"a": 0.001, "b": 0.03, "c": 0.6}, 0.05) == ["a"]


def test_the_dag_rolls_back_a_failing_canary_and_promotes_a_healthy_one(
        airflow_db, canary_env, canary_store, registry, author) -> None:
    failing, healthy = f"{author}-f", f"{author}-h"
    f_champion, f_challenger = champion_and_challenger(registry, failing)
    h_champion, h_challenger = champion_and_challenger(registry, healthy)
    for name, challenger in ((failing, f_challenger), (healthy, h_challenger)):
        apply.start(canary_store, registry, name, challenger, share=0.5, by="ops")
    # Half the traffic each; the failing challenger errs on 30% of its requests.
    start = utcnow() - timedelta(hours=2)
    simulate(canary_store, failing, f_champion, "champion", 200, error_rate=0.01, latency_ms=200, seed=1, start=start)
    simulate(canary_store, failing, f_challenger, "challenger", 200, error_rate=0.3, latency_ms=200, seed=2,
             start=start)
    simulate(canary_store, healthy, h_champion, "champion", 300, error_rate=0.005, latency_ms=200,
             thumbs_up=0.8, ratings=60, seed=3, start=start)
    simulate(canary_store, healthy, h_challenger, "challenger", 300, error_rate=0.005, latency_ms=190,
             thumbs_up=0.85, ratings=60, seed=4, start=start)
    assert canary_store.authors_with_canary() == sorted([failing, healthy])

    run = load_dag("canary").test()
    assert str(run.state) == "success"
    decided = [ti for ti in run.get_task_instances() if ti.task_id == "decide"]
    assert len(decided) == 2 and all(str(ti.state) == "success" for ti in decided)

    rolled = registry.get(failing, f_challenger)
    assert rolled.tags["canary"] == "rolled-back" and "error rate" in rolled.tags["canary_reason"]
    assert rolled.tags["canary_decided_at"] and float(rolled.tags["canary.p.error_limit"]) < 0.05
    assert canary_store.config(failing).share == 0 and registry.alias_version(failing, CHAMPION) == f_champion

    promoted = registry.get(healthy, h_challenger)
    assert promoted.tags["canary"] == "promoted", promoted.tags["canary_reason"]
    assert registry.alias_version(healthy, CHAMPION) == h_challenger
    assert registry.alias_version(healthy, PREVIOUS) == h_champion
    assert registry.alias_version(healthy, CHALLENGER) is None
    assert float(promoted.tags["canary.p.feedback_noninferior"]) < 0.05
    assert promoted.tags["canary.challenger.requests"] == str(300) and canary_store.config(healthy).share == 0
    print(f"\nrolled back: {rolled.tags['canary_reason']}\npromoted: {promoted.tags['canary_reason']}")

    again = load_dag("canary").test()  # nothing active any more: no mapped task
    assert str(again.state) == "success"
    assert [ti for ti in again.get_task_instances() if ti.task_id == "decide" and str(ti.state) == "success"] == []


def test_starting_a_canary_needs_the_gate_or_an_approval(canary_env, canary_store, registry, author) -> None:
    failed = new_version(registry, author, gate="failed")
    with pytest.raises(apply.CanaryError, match="neither passed"):
        apply.start(canary_store, registry, author, failed, share=0.1)
    passed = new_version(registry, author)
    apply.start(canary_store, registry, author, passed, share=0.1, by="ops")
    assert canary_store.config(author).challenger_version == passed
    assert registry.get(author, passed).tags["canary"] == "started"
    # Pending approval: healthy traffic is not enough to promote.
    start = utcnow() - timedelta(hours=2)
    simulate(canary_store, author, "base", "champion", 160, error_rate=0.0, latency_ms=200, seed=5, start=start)
    simulate(canary_store, author, passed, "challenger", 160, error_rate=0.0, latency_ms=200, seed=6, start=start)
    result = apply.run(author, canary_env, canary_store)
    assert result["outcome"] == "waiting" and "approved" in result["reason"] and result["champion"] == "base"
    assert registry.alias_version(author, CHAMPION) is None and canary_store.config(author).share == 0.1


def test_with_an_approval_share_an_approval_starts_a_canary(monkeypatch, canary_env, canary_store, author) -> None:
    from twin.registry import ModelRegistry
    from twin.settings import get_settings

    monkeypatch.setenv("TWIN_CANARY_APPROVAL_SHARE", "0.1")
    get_settings.cache_clear()
    registry = ModelRegistry(get_settings())
    version = new_version(registry, author)
    info = registry.approve(author, version, by="ana")
    assert info.approval == "approved" and CHALLENGER in info.aliases and CHAMPION not in info.aliases
    config = canary_store.config(author)
    assert (config.challenger_version, config.share, config.updated_by) == (version, 0.1, "ana")
    # A canary already running for a pending version keeps its share when a person approves it.
    pending = new_version(registry, author)
    apply.start(canary_store, registry, author, pending, share=0.5, by="ops")
    registry.approve(author, pending, by="ana")
    assert canary_store.config(author).share == 0.5 and registry.get(author, pending).approval == "approved"
