"""The exact request bodies the OpenSearch adapter sends. These cover what the in-memory fallback
server cannot run (k-NN, exact script scoring, the neural-search hybrid pipeline); on a real node
the contract suite runs the same bodies end to end."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from twin.models import DocumentKind, SearchFilters
from twin.search.base import HybridWeights
from twin.search.opensearch_index import (
    VECTOR,
    bm25_query,
    exact_query,
    filter_clauses,
    hybrid_pipeline,
    hybrid_query,
    index_body,
    knn_query,
)

FILTERS = SearchFilters(author_ids=["ada"], kinds=[DocumentKind.POST],
                        published_after=datetime(2024, 1, 1, tzinfo=UTC),
                        published_before=datetime(2024, 6, 1, 12, tzinfo=UTC))
FILTER_CLAUSES = [
    {"terms": {"author_id": ["ada"]}},
    {"terms": {"kind": ["post"]}},
    {"range": {"published_at": {"gte": "2024-01-01T00:00:00+00:00", "lt": "2024-06-01T12:00:00+00:00"}}},
]


def test_index_body_has_an_hnsw_vector_bm25_text_and_keyword_metadata():
    body = index_body(384)
    assert body["settings"]["index.knn"] is True
    properties = body["mappings"]["properties"]
    assert properties[VECTOR] == {
        "type": "knn_vector", "dimension": 384,
        "method": {"name": "hnsw", "space_type": "cosinesimil", "engine": "lucene",
                   "parameters": {"ef_construction": 128, "m": 16}},
    }
    assert properties["text"] == {"type": "text", "analyzer": "english"}
    assert all(properties[f] == {"type": "keyword"} for f in ("id", "document_id", "author_id", "kind", "url"))
    assert properties["published_at"] == {"type": "date"}


def test_filters_become_bool_filter_clauses():
    assert filter_clauses(FILTERS) == FILTER_CLAUSES
    assert filter_clauses(None) == [] and filter_clauses(SearchFilters()) == []
    naive = SearchFilters(published_after=datetime(2024, 1, 1))  # a naive datetime is taken as UTC
    assert filter_clauses(naive) == [{"range": {"published_at": {"gte": "2024-01-01T00:00:00+00:00"}}}]


def test_bm25_query_matches_text_inside_the_filters():
    assert bm25_query("apple pie", FILTERS) == {
        "bool": {"must": [{"match": {"text": {"query": "apple pie"}}}], "filter": FILTER_CLAUSES}}


def test_bm25_query_with_a_title_weight_sums_text_and_weighted_title():
    assert bm25_query("apple pie", None, title_boost=1.5) == {"bool": {"must": [{"multi_match": {
        "query": "apple pie", "fields": ["text", "title^1.5"], "type": "most_fields"}}], "filter": []}}


def test_knn_query_filters_while_searching():
    assert knn_query([0.1, 0.2], 5, None) == {"knn": {VECTOR: {"vector": [0.1, 0.2], "k": 5}}}
    assert knn_query([0.1, 0.2], 5, FILTERS) == {"knn": {VECTOR: {
        "vector": [0.1, 0.2], "k": 5, "filter": {"bool": {"filter": FILTER_CLAUSES}}}}}


def test_exact_query_scores_every_filtered_document_with_the_knn_script():
    assert exact_query([1.0, 0.0], FILTERS) == {"script_score": {
        "query": {"bool": {"filter": FILTER_CLAUSES}},
        "script": {"source": "knn_score", "lang": "knn",
                   "params": {"field": VECTOR, "query_value": [1.0, 0.0], "space_type": "cosinesimil"}}}}
    assert exact_query([1.0], None)["script_score"]["query"] == {"match_all": {}}


def test_hybrid_pipeline_and_query_for_the_neural_search_plugin():
    assert hybrid_pipeline(HybridWeights(bm25=1.0, vector=3.0, method="score")) == {
        "phase_results_processors": [{"normalization-processor": {
            "normalization": {"technique": "min_max"},
            "combination": {"technique": "arithmetic_mean", "parameters": {"weights": [0.25, 0.75]}}}}]}
    assert hybrid_pipeline(HybridWeights(rrf_k=40)) == {"phase_results_processors": [{"score-ranker-processor": {
        "combination": {"technique": "rrf", "rank_constant": 40}}}]}
    with pytest.raises(ValueError, match="zero"):
        hybrid_pipeline(HybridWeights(bm25=0.0, vector=0.0, method="score"))
    assert hybrid_query("apple", [0.5], 20, FILTERS) == {"hybrid": {"queries": [
        bm25_query("apple", FILTERS), knn_query([0.5], 20, FILTERS)]}}
