"""Online comparison of champion and challenger, and the decision it supports.

The tests, all one-sided at TWIN_CANARY_ALPHA:

* Limits (exact binomial tests, valid at any traffic): roll back when the challenger's error rate is
  significantly above TWIN_CANARY_MAX_ERROR_RATE, or when significantly more than 5% of its requests take
  longer than TWIN_CANARY_MAX_P95_LATENCY_MS (its p95 passes the limit).
* Against the champion, once both saw TWIN_CANARY_MIN_REQUESTS requests:
  - error rate: a two-proportion z-test on the difference d = challenger - champion with the
    Agresti-Caffo adjustment (one success and one failure added to each group, so zero counts work);
    non-inferior when H0 d >= margin is rejected, harmful when H0 d <= margin is rejected;
  - latency (successful requests): Mann-Whitney U of challenger / (1 + margin) against champion;
    non-inferior when "challenger is slower by more than the margin" is rejected, harmful when
    "challenger is not slower by more than the margin" is rejected;
  - feedback (thumbs-up rate), once both have TWIN_CANARY_MIN_FEEDBACK ratings: the same z-test as the
    error rate, with the sign turned (a lower thumbs-up rate is worse).
* Decision: rollback when a limit or a harm test fires (Holm-corrected over the tests run); promote when
  every non-inferiority test passes (feedback only when there is enough of it) and a person approved the
  challenger; wait otherwise. The hourly DAG looks again each hour: those repeated looks are not corrected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import numpy as np
from scipy.stats import binomtest, mannwhitneyu, norm

from twin.canary.store import Feedback, Role, ServedRequest
from twin.settings import Settings

LATENCY_QUANTILE = 0.95  # share of requests that must stay under TWIN_CANARY_MAX_P95_LATENCY_MS


class Action(StrEnum):
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    WAIT = "wait"


@dataclass
class VersionStats:
    version: str
    role: Role
    requests: int
    errors: int
    latencies_ms: list[float] = field(repr=False)  # of successful requests
    ratings: list[int] = field(repr=False)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else math.nan

    def latency_quantile(self, q: float) -> float:
        return float(np.quantile(self.latencies_ms, q)) if self.latencies_ms else math.nan

    @property
    def p50_ms(self) -> float:
        return self.latency_quantile(0.5)

    @property
    def p95_ms(self) -> float:
        return self.latency_quantile(0.95)

    @property
    def thumbs_up(self) -> int:
        return sum(1 for r in self.ratings if r > 0)

    @property
    def feedback_mean(self) -> float:
        """Mean rating in [-1, 1]."""
        return sum(self.ratings) / len(self.ratings) if self.ratings else math.nan

    def summary(self) -> dict[str, float | int | str | None]:
        """JSON-ready figures (None where there is nothing to measure yet)."""
        return {"version": self.version, "role": self.role, "requests": self.requests,
                "error_rate": _rounded(self.error_rate, 4), "p50_ms": _rounded(self.p50_ms, 1),
                "p95_ms": _rounded(self.p95_ms, 1), "ratings": len(self.ratings),
                "feedback_mean": _rounded(self.feedback_mean, 3)}


def _rounded(value: float, digits: int) -> float | None:
    return None if math.isnan(value) else round(value, digits)


@dataclass
class Decision:
    action: Action
    reason: str
    champion: VersionStats
    challenger: VersionStats
    p_values: dict[str, float]  # test name -> one-sided p-value

    def tags(self) -> dict[str, str]:
        """What the registry keeps on the challenger version."""
        tags = {f"canary.p.{name}": f"{p:.4g}" for name, p in self.p_values.items()}
        for prefix, stats in (("challenger", self.challenger), ("champion", self.champion)):
            tags[f"canary.{prefix}.requests"] = str(stats.requests)
            tags[f"canary.{prefix}.error_rate"] = f"{stats.error_rate:.4g}"
            tags[f"canary.{prefix}.p95_ms"] = f"{stats.p95_ms:.1f}"
            tags[f"canary.{prefix}.feedback_mean"] = f"{stats.feedback_mean:.3g}"
        tags["canary.champion.version"] = self.champion.version
        return tags


def version_stats(version: str, role: Role, requests: Sequence[ServedRequest],
                  feedback: Sequence[Feedback]) -> VersionStats:
    """Figures of one version over its requests (client errors, 4xx, are the caller's, not the model's)."""
    mine = [r for r in requests if r.version == version and r.role == role and not 400 <= r.status_code < 500]
    failed = [r for r in mine if r.status_code >= 500 or r.error is not None]
    traces = {r.trace_id for r in mine}
    return VersionStats(version=version, role=role, requests=len(mine), errors=len(failed),
                        latencies_ms=[r.latency_ms for r in mine if r.status_code < 400 and r.error is None],
                        ratings=[f.rating for f in feedback if f.trace_id in traces])


def _z_difference(x1: int, n1: int, x0: int, n0: int, margin: float) -> float:
    """z of (p1 - p0 - margin) with the Agresti-Caffo adjusted Wald standard error."""
    p1, p0 = (x1 + 1) / (n1 + 2), (x0 + 1) / (n0 + 2)
    se = math.sqrt(p1 * (1 - p1) / (n1 + 2) + p0 * (1 - p0) / (n0 + 2))
    return (p1 - p0 - margin) / se


def holm_rejections(pvalues: dict[str, float], alpha: float) -> list[str]:
    """The tests Holm's step-down procedure rejects, keeping the family-wise error rate at alpha."""
    rejected: list[str] = []
    for rank, name in enumerate(sorted(pvalues, key=pvalues.__getitem__)):
        if pvalues[name] >= alpha / (len(pvalues) - rank):
            break
        rejected.append(name)
    return rejected


def compare(champion: VersionStats, challenger: VersionStats, settings: Settings, *,
            approved: bool) -> Decision:
    alpha, p = settings.canary_alpha, {}
    harms: dict[str, str] = {}  # rollback test -> what it found, should it reject

    # Limits: exact tests on the challenger alone, from its first request on.
    if challenger.requests:
        p["error_limit"] = float(binomtest(challenger.errors, challenger.requests, settings.canary_max_error_rate,
                                     alternative="greater").pvalue)
        harms["error_limit"] = (f"error rate {challenger.error_rate:.1%} over {challenger.requests} requests is "
                                f"above the limit {settings.canary_max_error_rate:.1%}")
    if challenger.latencies_ms:
        slow = sum(1 for ms in challenger.latencies_ms if ms > settings.canary_max_p95_latency_ms)
        p["latency_limit"] = float(binomtest(slow, len(challenger.latencies_ms), 1 - LATENCY_QUANTILE,
                                       alternative="greater").pvalue)
        harms["latency_limit"] = (f"p95 latency {challenger.p95_ms:.0f} ms passes the limit "
                                  f"{settings.canary_max_p95_latency_ms:.0f} ms")

    enough = min(champion.requests, challenger.requests) >= settings.canary_min_requests
    noninferior: dict[str, bool] = {}
    if enough:
        z = _z_difference(challenger.errors, challenger.requests, champion.errors, champion.requests,
                          settings.canary_error_margin)
        p["error_noninferior"], p["error_harm"] = float(norm.cdf(z)), float(norm.sf(z))
        noninferior["error rate"] = p["error_noninferior"] < alpha
        harms["error_harm"] = (f"error rate {challenger.error_rate:.1%} is worse than the champion's "
                               f"{champion.error_rate:.1%} by more than {settings.canary_error_margin:.1%}")
        if challenger.latencies_ms and champion.latencies_ms:
            scaled = np.asarray(challenger.latencies_ms) / (1 + settings.canary_latency_margin)
            p["latency_noninferior"] = float(mannwhitneyu(scaled, champion.latencies_ms, alternative="less").pvalue)
            p["latency_harm"] = float(mannwhitneyu(scaled, champion.latencies_ms, alternative="greater").pvalue)
            noninferior["latency"] = p["latency_noninferior"] < alpha
            harms["latency_harm"] = (f"latency p50 {challenger.p50_ms:.0f} ms is slower than the champion's "
                                     f"{champion.p50_ms:.0f} ms by more than {settings.canary_latency_margin:.0%}")
        else:
            noninferior["latency"] = False
        if min(len(champion.ratings), len(challenger.ratings)) >= settings.canary_min_feedback:
            # Thumbs-up rates, signs turned: d = champion - challenger must stay below the margin.
            z = _z_difference(champion.thumbs_up, len(champion.ratings), challenger.thumbs_up,
                              len(challenger.ratings), settings.canary_feedback_margin)
            p["feedback_noninferior"], p["feedback_harm"] = float(norm.cdf(z)), float(norm.sf(z))
            noninferior["feedback"] = p["feedback_noninferior"] < alpha
            harms["feedback_harm"] = (f"feedback mean {challenger.feedback_mean:+.2f} is worse than the champion's "
                                      f"{champion.feedback_mean:+.2f} beyond the margin")
    # Any one of several harm tests rolls back: Holm's correction keeps a false rollback at alpha for the lot.
    # Promotion needs every non-inferiority test to pass, which holds alpha without a correction.
    reasons_rollback = [f"{harms[name]} (p={p[name]:.3g}, Holm over {len(harms)} tests)"
                        for name in holm_rejections({name: p[name] for name in harms}, alpha)]

    def decide(action: Action, reason: str) -> Decision:
        return Decision(action, reason, champion, challenger, p)

    if reasons_rollback:
        return decide(Action.ROLLBACK, "; ".join(reasons_rollback))
    if not enough:
        return decide(Action.WAIT, f"not enough traffic: champion {champion.requests}, challenger "
                                   f"{challenger.requests} requests, {settings.canary_min_requests} needed each")
    unproven = [name for name, ok in noninferior.items() if not ok]
    if unproven:
        return decide(Action.WAIT, "non-inferiority not shown yet for " + ", ".join(unproven))
    if not approved:
        return decide(Action.WAIT, "not worse than the champion, but no person approved the challenger yet "
                                   "(twin model approve VERSION)")
    return decide(Action.PROMOTE, "not worse than the champion: " + ", ".join(
        f"{name} p={p[name]:.3g}" for name in p if name.endswith("_noninferior")))


@dataclass
class Bucket:
    start: datetime
    version: str
    requests: int
    error_rate: float
    p50_ms: float
    feedback_mean: float


def over_time(requests: Sequence[ServedRequest], feedback: Sequence[Feedback], *,
              bucket_s: float = 3600.0) -> list[Bucket]:
    """Per-version figures in time buckets, for the plot."""
    rating_of = {f.trace_id: f.rating for f in feedback}
    groups: dict[tuple[float, str], list[ServedRequest]] = {}
    for r in requests:
        start = math.floor(r.at.timestamp() / bucket_s) * bucket_s
        groups.setdefault((start, r.version), []).append(r)
    buckets = []
    for (start, version), rows in sorted(groups.items()):
        ok = [r.latency_ms for r in rows if r.status_code < 400 and r.error is None]
        ratings = [rating_of[r.trace_id] for r in rows if r.trace_id in rating_of]
        buckets.append(Bucket(start=datetime.fromtimestamp(start, rows[0].at.tzinfo), version=version,
                              requests=len(rows),
                              error_rate=sum(r.status_code >= 500 or r.error is not None for r in rows) / len(rows),
                              p50_ms=float(np.median(ok)) if ok else math.nan,
                              feedback_mean=sum(ratings) / len(ratings) if ratings else math.nan))
    return buckets
