"""Canary decisions carried out through the registry (twin.registry), and starting or clearing a canary.

Every decision lands on the challenger version as tags (canary, canary_reason, canary_decided_at and the
figures it judged, canary.*) and in the log; a promotion moves the aliases (previous-champion keeps the
old champion), a rollback sets the share to 0.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from twin.canary.compare import Action, Decision, compare, version_stats
from twin.canary.store import CanaryConfig, CanaryStore
from twin.models import utcnow
from twin.registry import APPROVED, CHALLENGER, CHAMPION, PREVIOUS, REJECTED, ModelRegistry, RegistryError, now
from twin.settings import Settings
from twin.training.config import registered_model_name

log = logging.getLogger(__name__)
BASE_VERSION = "base"  # the champion's name in the comparison when no version is registered yet


class CanaryError(RuntimeError):
    """A canary that cannot be started (a version that neither passed the gate nor was approved, ...)."""


@dataclass
class Canary:
    """The live state of one author's canary and the comparison it supports."""

    config: CanaryConfig
    decision: Decision


def evaluate(store: CanaryStore, registry: ModelRegistry, settings: Settings, author: str) -> Canary | None:
    """The decision the canary supports now; None when the author has no active canary."""
    config = store.config(author)
    if not config.active or config.challenger_version is None:
        return None
    challenger = config.challenger_version
    records = store.requests(author)
    mine = [r for r in records if r.role == "challenger" and r.version == challenger]
    # Compare over the same window: from the challenger's first request on.
    since = mine[0].at if mine else utcnow()
    window = [r for r in records if r.at >= since]
    feedback = store.feedback(author, since=since)
    champion_version = registry.alias_version(author, CHAMPION) or _most_served_champion(window)
    info = registry.get(author, challenger)
    decision = compare(version_stats(champion_version, "champion", window, feedback),
                       version_stats(challenger, "challenger", window, feedback),
                       settings, approved=info.approval == APPROVED)
    if info.approval == REJECTED:
        decision.action, decision.reason = Action.ROLLBACK, f"rejected by {info.tags.get('rejected_by', 'a person')}"
    elif CHAMPION in info.aliases:  # approved and promoted outside the canary: nothing left to compare
        decision.action, decision.reason = Action.PROMOTE, "already the champion (promoted outside the canary)"
    return Canary(config, decision)


def _most_served_champion(records: list) -> str:
    counts = Counter(r.version for r in records if r.role == "champion")
    return counts.most_common(1)[0][0] if counts else BASE_VERSION


def apply(store: CanaryStore, registry: ModelRegistry, author: str, canary: Canary) -> str:
    """Carry out the decision; returns what was done ("promoted", "rolled-back", "waiting")."""
    decision, version = canary.decision, canary.decision.challenger.version
    decided_at = now()
    outcome = {Action.PROMOTE: "promoted", Action.ROLLBACK: "rolled-back", Action.WAIT: "waiting"}[decision.action]
    if decision.action is Action.PROMOTE:
        _promote(registry, author, version)
    if decision.action is not Action.WAIT:
        store.set_config(canary.config.model_copy(update={"share": 0.0, "updated_at": utcnow(),
                                                          "updated_by": f"canary:{outcome}"}))
    registry.set_tags(author, version, {"canary": outcome, "canary_reason": decision.reason[:4000],
                                        "canary_decided_at": decided_at, **decision.tags()})
    log.info("canary %s v%s against champion %s: %s (%s); challenger %s; champion %s; p-values %s",
             author, version, decision.champion.version, outcome, decision.reason,
             decision.challenger.summary(), decision.champion.summary(),
             {k: round(v, 4) for k, v in decision.p_values.items()})
    return outcome


def _promote(registry: ModelRegistry, author: str, version: str) -> None:
    """champion <- the approved challenger; the old champion becomes previous-champion."""
    info = registry.get(author, version)
    if info.approval != APPROVED:  # compare() never promotes without it; this guards the registry itself
        raise RegistryError(f"version {version} is not approved (approval={info.approval or 'unset'})")
    name = registered_model_name(author)
    champion = registry.alias_version(author, CHAMPION)
    if champion is not None and champion != version:
        registry.client.set_registered_model_alias(name, PREVIOUS, champion)
    registry.client.set_registered_model_alias(name, CHAMPION, version)
    if registry.alias_version(author, CHALLENGER) == version:
        registry.client.delete_registered_model_alias(name, CHALLENGER)


def run(author: str, settings: Settings, store: CanaryStore | None = None) -> dict:
    """One decision round for one author (the canary DAG's task)."""
    store = store or CanaryStore.from_settings(settings)
    registry = ModelRegistry(settings)
    canary = evaluate(store, registry, settings, author)
    if canary is None:
        log.info("canary %s: no active canary", author)
        return {"author": author, "outcome": "none"}
    outcome = apply(store, registry, author, canary)
    d = canary.decision
    return {"author": author, "version": d.challenger.version, "champion": d.champion.version,
            "outcome": outcome, "reason": d.reason, "p_values": d.p_values,
            "challenger": d.challenger.summary(), "champion_stats": d.champion.summary()}


def start(store: CanaryStore, registry: ModelRegistry, author: str, version: str, *, share: float,
          sticky: bool = True, by: str = "") -> CanaryConfig:
    """Send `share` of the author's traffic to `version`: the approved challenger, or one that passed the gate
    (then promotion waits for a person's approval)."""
    info = registry.get(author, version)
    if CHAMPION in info.aliases:
        raise CanaryError(f"version {version} already is the champion")
    if info.approval == REJECTED:
        raise CanaryError(f"version {version} was rejected: it cannot be a canary")
    if info.approval != APPROVED and info.tags.get("gate") != "passed":
        raise CanaryError(f"version {version} neither passed the evaluation gate "
                          f"(gate={info.tags.get('gate', 'not evaluated')}) nor was approved")
    config = CanaryConfig(author=author, challenger_version=version, share=share, sticky=sticky,
                          updated_by=by)
    store.set_config(config)
    registry.set_tags(author, version, {"canary": "started", "canary_share": share, "canary_started_at": now(),
                                        "canary_reason": f"canary at {share:.0%} set by {by or 'unknown'}"})
    log.info("canary %s v%s started at share %.2f (sticky=%s) by %s", author, version, share, sticky, by)
    return config


def on_approval(settings: Settings, registry: ModelRegistry, author: str, version: str, *, by: str) -> None:
    """A person approved `version` while TWIN_CANARY_APPROVAL_SHARE > 0: the canary decides its promotion.

    A canary already running for this version keeps its share; otherwise one starts at the approval share."""
    store = CanaryStore.from_settings(settings)
    config = store.config(author)
    if config.active and config.challenger_version == version:
        log.info("canary %s v%s approved by %s: the canary may promote it now", author, version, by)
        return
    start(store, registry, author, version, share=settings.canary_approval_share, by=by)


def clear(store: CanaryStore, author: str, *, by: str = "") -> CanaryConfig:
    """Stop the canary: every request goes to the champion again."""
    config = store.config(author).model_copy(update={"share": 0.0, "updated_at": utcnow(), "updated_by": by})
    store.set_config(config)
    log.info("canary %s cleared by %s", author, by)
    return config
