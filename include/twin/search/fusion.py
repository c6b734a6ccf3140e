"""Client-side fusion of ranked lists from several retrievers (BM25, vector) into one ranking.

Two methods, picked by `HybridWeights.method`:
- "rrf": reciprocal rank fusion, score(d) = sum over retrievers r of w_r / (rrf_k + rank_r(d)), ranks
  starting at 1. Needs no score calibration: `HybridWeights`' own default, and the plain baseline's.
- "score": min-max normalise each retriever's scores to [0, 1], then sum w_r * norm_r(d). Keeps how
  much better the top hit is, at the price of trusting the scores' scale within one list. The
  platform's default (`TWIN_HYBRID_FUSION`): it beat every RRF setting on the hard set's tuning split.

Ties are broken by the best rank any retriever gave, then by id, so results are deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from twin.models import SearchHit
from twin.search.base import HybridWeights

Ranked = Sequence[tuple[str, float]]  # (id, score) best first


def reciprocal_rank_fusion(
    lists: Mapping[str, Ranked], weights: Mapping[str, float], rrf_k: int = 60
) -> list[tuple[str, float]]:
    """Fuse ranked lists by weighted reciprocal rank; returns (id, fused score) best first."""
    if rrf_k < 0:
        raise ValueError(f"rrf_k must be >= 0, got {rrf_k}")
    scores: dict[str, float] = {}
    for retriever, ranked in lists.items():
        weight = weights.get(retriever, 1.0)
        for rank, (item_id, _) in enumerate(ranked, start=1):
            scores[item_id] = scores.get(item_id, 0.0) + weight / (rrf_k + rank)
    return _sorted(scores, lists)


def min_max_normalise(ranked: Ranked) -> dict[str, float]:
    """Scores mapped to [0, 1]; when all scores are equal every item gets 1 (they tie at the top)."""
    if not ranked:
        return {}
    values = [score for _, score in ranked]
    low, high = min(values), max(values)
    span = high - low
    return {item_id: (score - low) / span if span > 0 else 1.0 for item_id, score in ranked}


def score_fusion(lists: Mapping[str, Ranked], weights: Mapping[str, float]) -> list[tuple[str, float]]:
    """Fuse by the weighted sum of min-max normalised scores; returns (id, fused score) best first."""
    scores: dict[str, float] = {}
    for retriever, ranked in lists.items():
        weight = weights.get(retriever, 1.0)
        for item_id, norm in min_max_normalise(ranked).items():
            scores[item_id] = scores.get(item_id, 0.0) + weight * norm
    return _sorted(scores, lists)


def fuse(lists: Mapping[str, Ranked], weights: HybridWeights) -> list[tuple[str, float]]:
    """Fuse with the method and weights of `weights` ("bm25" and "vector" lists)."""
    per_retriever = {"bm25": weights.bm25, "vector": weights.vector}
    if weights.method == "rrf":
        return reciprocal_rank_fusion(lists, per_retriever, weights.rrf_k)
    if weights.method == "score":
        return score_fusion(lists, per_retriever)
    raise ValueError(f"unknown fusion method {weights.method!r}; use 'rrf' or 'score'")


def fuse_hits(
    bm25: Sequence[SearchHit], vector: Sequence[SearchHit], k: int, weights: HybridWeights | None = None
) -> list[SearchHit]:
    """Fuse two hit lists into the top-k "hybrid" hits, keeping each retriever's rank in `ranks`."""
    weights = weights or HybridWeights()
    lists = {"bm25": [(h.chunk.id, h.score) for h in bm25], "vector": [(h.chunk.id, h.score) for h in vector]}
    chunks = {h.chunk.id: h.chunk for h in [*vector, *bm25]}
    ranks: dict[str, dict[str, int]] = {}
    for retriever, ranked in lists.items():
        for rank, (item_id, _) in enumerate(ranked, start=1):
            ranks.setdefault(item_id, {})[retriever] = rank
    return [
        SearchHit(chunk=chunks[item_id], score=score, retriever="hybrid", ranks=ranks[item_id])
        for item_id, score in fuse(lists, weights)[:k]
    ]


def _sorted(scores: dict[str, float], lists: Mapping[str, Ranked]) -> list[tuple[str, float]]:
    best_rank: dict[str, int] = {}
    for ranked in lists.values():
        for rank, (item_id, _) in enumerate(ranked, start=1):
            best_rank[item_id] = min(rank, best_rank.get(item_id, rank))
    return sorted(scores.items(), key=lambda item: (-item[1], best_rank[item[0]], item[0]))
