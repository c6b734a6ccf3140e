"""Fusion math: reciprocal rank fusion, weights, min-max normalised score fusion, ties."""

from __future__ import annotations

import pytest

from tests.search.chunks import axis, make_chunk
from twin.models import Chunk, SearchHit
from twin.search.base import HybridWeights
from twin.search.fusion import fuse, fuse_hits, min_max_normalise, reciprocal_rank_fusion, score_fusion


def test_rrf_sums_reciprocal_ranks():
    fused = dict(reciprocal_rank_fusion({"bm25": [("a", 9.0), ("b", 5.0)], "vector": [("b", 0.9), ("c", 0.8)]},
                                        {"bm25": 1.0, "vector": 1.0}, rrf_k=60))
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["c"] == pytest.approx(1 / 62)


def test_rrf_ignores_raw_scores_and_orders_best_first():
    lists = {"bm25": [("a", 1000.0), ("b", 0.001)], "vector": [("b", 0.5), ("a", 0.49)]}
    assert [item for item, _ in reciprocal_rank_fusion(lists, {}, rrf_k=0)] == ["a", "b"]  # 1+1/2 each: tie
    lists["vector"] = [("b", 0.5)]
    assert [item for item, _ in reciprocal_rank_fusion(lists, {}, rrf_k=0)] == ["b", "a"]  # 1/2+1/1 > 1/1


def test_rrf_weights_scale_each_retriever():
    lists = {"bm25": [("text", 1.0)], "vector": [("dense", 1.0)]}
    fused = reciprocal_rank_fusion(lists, {"bm25": 1.0, "vector": 3.0}, rrf_k=60)
    assert fused[0] == ("dense", pytest.approx(3 / 61))
    assert fused[1] == ("text", pytest.approx(1 / 61))
    assert reciprocal_rank_fusion(lists, {"bm25": 2.0, "vector": 1.0})[0][0] == "text"


def test_rrf_rejects_a_negative_constant():
    with pytest.raises(ValueError, match="rrf_k"):
        reciprocal_rank_fusion({"bm25": [("a", 1.0)]}, {}, rrf_k=-1)


def test_min_max_normalise():
    assert min_max_normalise([("a", 10.0), ("b", 5.0), ("c", 0.0)]) == {"a": 1.0, "b": 0.5, "c": 0.0}
    assert min_max_normalise([("a", 3.0), ("b", 3.0)]) == {"a": 1.0, "b": 1.0}  # all tie at the top
    assert min_max_normalise([]) == {}


def test_score_fusion_weights_normalised_scores():
    lists = {"bm25": [("a", 12.0), ("b", 6.0), ("c", 0.0)], "vector": [("c", 0.9), ("b", 0.5), ("a", 0.1)]}
    fused = dict(score_fusion(lists, {"bm25": 1.0, "vector": 2.0}))
    assert fused["a"] == pytest.approx(1.0 + 2 * 0.0)
    assert fused["b"] == pytest.approx(0.5 + 2 * 0.5)
    assert fused["c"] == pytest.approx(0.0 + 2 * 1.0)
    assert [item for item, _ in score_fusion(lists, {"bm25": 1.0, "vector": 2.0})] == ["c", "b", "a"]


def test_ties_break_by_best_rank_then_id():
    # Same fused score and both ranked first once: the id decides, so the order is stable.
    lists = {"bm25": [("b", 2.0), ("a", 1.0)], "vector": [("a", 2.0), ("b", 1.0)]}
    assert [item for item, _ in reciprocal_rank_fusion(lists, {})] == ["a", "b"]
    lists = {"bm25": [("b", 2.0)], "vector": [("z", 2.0)]}
    assert [item for item, _ in fuse(lists, HybridWeights())] == ["b", "z"]
    # Same normalised score: the better rank leads, whatever the id.
    assert [item for item, _ in score_fusion({"bm25": [("y", 1.0), ("x", 1.0)]}, {})] == ["y", "x"]


def test_fuse_picks_the_method():
    lists = {"bm25": [("a", 10.0), ("b", 9.9)], "vector": [("b", 0.9), ("a", 0.1)]}
    assert fuse(lists, HybridWeights(method="rrf"))[0][1] == pytest.approx(1 / 61 + 1 / 62)
    assert dict(fuse(lists, HybridWeights(method="score")))["b"] == pytest.approx(0.0 + 1.0)
    with pytest.raises(ValueError, match="unknown fusion method"):
        fuse(lists, HybridWeights(method="borda"))


def _hit(chunk_id: str, score: float, retriever: str, rank: int) -> SearchHit:
    chunk = Chunk.model_validate(make_chunk(chunk_id, f"text {chunk_id}", axis(0)).model_dump(exclude={"embedding"}))
    return SearchHit(chunk=chunk, score=score, retriever=retriever, ranks={retriever: rank})


def test_fuse_hits_keeps_chunks_and_per_retriever_ranks():
    bm25 = [_hit("a", 5.0, "bm25", 1), _hit("b", 4.0, "bm25", 2)]
    vector = [_hit("b", 0.9, "vector", 1), _hit("c", 0.8, "vector", 2)]
    hits = fuse_hits(bm25, vector, k=2)
    assert [h.chunk.id for h in hits] == ["b", "a"]
    assert hits[0].ranks == {"bm25": 2, "vector": 1}
    assert hits[1].ranks == {"bm25": 1}
    assert all(h.retriever == "hybrid" for h in hits)
    assert hits[0].chunk.text == "text b"
    assert fuse_hits([], [], k=5) == []
