"""The relevance signal: its features worked out by hand, the fit and threshold rule, the index's
term statistics on each adapter, and the fitted model on questions it was not fitted on."""

from __future__ import annotations

import pytest

from tests.fixtures.features import make_document
from twin.models import DocumentKind, SearchHit
from twin.retrieval.fit_relevance import choose_probability_threshold, fit
from twin.retrieval.relevance import FEATURES, RelevanceModel, content_words, idf, load_model, relevance_features


def _hit(doc: str, text: str, score: float) -> SearchHit:
    document = make_document(doc, "ada", DocumentKind.ARTICLE, doc, text, 1)
    chunk = {"id": f"{doc}-0", "document_id": doc, "chunk_index": 0, "kind": "article", "author_id": "ada",
             "author_name": "Ada Lovelace", "url": document.url, "text": text, "token_count": 1,
             "document_hash": document.content_hash}
    return SearchHit.model_validate({"chunk": chunk, "score": score, "retriever": "hybrid"})


def test_features_of_one_retrieval_worked_out_by_hand() -> None:
    query = "How do Bloom filters size their bits for FAISS?"
    assert content_words(query) == ["bloom", "filters", "size", "bits", "faiss"]
    # How the question is asked is not what it asks about.
    assert content_words("Which rate does Noor use for dropout?") == ["rate", "noor", "dropout"]
    top = _hit("a", "A Bloom filter needs about ten bits per key.", 0.6)
    vector = [top, _hit("b", "other", 0.4), _hit("c", "other", 0.2)]
    bm25 = [_hit("a", top.chunk.text, 3.0)]
    frequencies = {"bloom": 2, "filters": 5, "size": 9, "bits": 3, "faiss": 0}
    values = relevance_features(query, top, bm25, vector, frequencies, total=10)
    weights = {w: idf(frequencies[w], 10) for w in frequencies}
    total = sum(weights.values())
    assert set(values) == set(FEATURES)
    assert values["cosine"] == 0.6 and values["cosine_margin"] == pytest.approx(0.6 - 0.4)
    assert values["bm25_norm"] == pytest.approx(3.0 / total)
    # "filters" matches "filter" after the suffix strip; "size" and "faiss" are not in the passage.
    assert values["coverage"] == pytest.approx((weights["bloom"] + weights["filters"] + weights["bits"]) / total)
    assert values["known"] == pytest.approx((total - weights["faiss"]) / total)  # FAISS is nowhere
    assert values["agreement"] == 1.0
    other = relevance_features(query, top, [_hit("z", "x", 1.0)], vector, frequencies, total=10)
    assert other["agreement"] == 0.0


def test_threshold_refuses_the_unanswerable_and_sits_between_scores() -> None:
    # Two unanswerable questions at 0.6 and 0.2: with 10% allowed none may pass, so the threshold
    # lies between 0.6 and the next higher probability (0.8); the answerable one at 0.3 is refused.
    assert choose_probability_threshold([0.9, 0.8, 0.3, 0.6, 0.2], [1, 1, 1, 0, 0]) == pytest.approx(0.7)
    assert choose_probability_threshold([0.9, 0.5], [1, 0], target_fp=1.0) == pytest.approx(0.25)


def test_fit_learns_the_direction_of_each_feature_and_round_trips_as_data() -> None:
    rows, labels = [], []
    for i in range(30):  # answerable: high cosine, margin and coverage; unanswerable: low
        good = i % 3 != 0
        jitter = (i % 5) / 50
        rows.append([0.6 + jitter if good else 0.3 + jitter, 0.2 if good else 0.05, 1.0 if good else 0.3,
                     0.7 if good else 0.2 + jitter, 1.0, 1.0 if good else float(i % 2)])
        labels.append(int(good))
    model = fit(rows, labels)
    assert all(c > 0 for c in model.coef[:4])
    probabilities = [model.probability(dict(zip(FEATURES, r, strict=True))) for r in rows]
    assert all((p >= model.threshold) == bool(y) for p, y in zip(probabilities, labels, strict=True))
    assert RelevanceModel.from_json(model.to_json()) == model


def test_the_packaged_model_is_fitted_data() -> None:
    model = load_model()
    assert model is not None and model.features == FEATURES and 0.0 < model.threshold < 1.0
    assert model.coef[FEATURES.index("cosine")] > 0 and model.coef[FEATURES.index("agreement")] > 0


def test_term_statistics_come_from_the_index(indexed_corpus) -> None:
    index = indexed_corpus[0]
    frequencies, total = index.document_frequencies(["compiler", "zyzzyva", "compiler"])
    assert total == index.count()
    assert 0 < frequencies["compiler"] < total and frequencies["zyzzyva"] == 0
    assert index.document_frequencies([]) == ({}, total)
