"""Self-query rules measured on labelled questions, and the rule that an inferred filter never
empties a result."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.features import AUTHORS
from twin.models import DocumentKind, SearchFilters
from twin.retrieval.retriever import Retriever
from twin.retrieval.selfquery import SelfQuery, load_selfquery_cases, score_selfquery

LABELLED = Path(__file__).resolve().parents[1] / "data" / "selfquery_eval.jsonl"


def test_rules_are_precise_on_labelled_questions() -> None:
    authors, cases = load_selfquery_cases(LABELLED)
    ordinary = [c for c in cases if c.kind is None
                and any(w in c.query.lower() for w in ("code", "post", "thread", "function"))]
    assert len(cases) >= 50 and len(ordinary) >= 15, "the set holds kind words in their ordinary sense"
    scores = score_selfquery(SelfQuery(authors), cases)
    assert scores["author_precision"] >= 0.95 and scores["author_recall"] >= 0.95, scores["wrong"]
    assert scores["kind_precision"] >= 0.9 and scores["kind_recall"] >= 0.9, scores["wrong"]
    assert scores["exact"] >= 0.95, scores["wrong"]
    # Ordinary senses alone never become a kind filter.
    wrong_kinds = [c.id for c in ordinary if SelfQuery(authors).extract(c.query).filters.kinds]
    assert len(wrong_kinds) <= 1, wrong_kinds


def test_the_source_code_file_question_names_an_author_and_no_kind() -> None:
    authors, _ = load_selfquery_cases(LABELLED)
    intent = SelfQuery(authors).by_rules("How large was the Linux source code file that Karpathy trained on?")
    assert intent.filters.author_ids == ["karpathy"] and intent.filters.kinds is None


def test_scores_count_a_wrong_filter_against_precision() -> None:
    authors, cases = load_selfquery_cases(LABELLED)
    # A self-query that sets kind=code on every question has kind precision of the code share only.
    class AlwaysCode(SelfQuery):
        def by_rules(self, question: str):  # type: ignore[override]
            intent = super().by_rules(question)
            intent.filters = intent.filters.model_copy(update={"kinds": [DocumentKind.CODE]})
            return intent

    scores = score_selfquery(AlwaysCode(authors), cases)
    code_share = sum(1 for c in cases if c.kind is DocumentKind.CODE) / len(cases)
    assert scores["kind_precision"] == pytest.approx(code_share)
    assert scores["exact"] < 0.5


@pytest.fixture(scope="module")
def retriever(indexed_corpus, embedder) -> Retriever:
    return Retriever(indexed_corpus[0], embedder, authors=AUTHORS)


@pytest.mark.parametrize("mode", ["bm25", "vector", "hybrid"])
def test_an_inferred_filter_that_finds_nothing_is_relaxed_and_said_so(retriever: Retriever, mode: str) -> None:
    # Ada has no code in the corpus: author + kind finds nothing, the author alone does.
    result = retriever.retrieve("What does Ada Lovelace's code compute with Bernoulli numbers?", k=5, mode=mode)
    assert result.hits, "an inferred filter must not empty the result"
    assert {h.chunk.author_id for h in result.hits} == {"ada"}
    assert result.filters.author_ids == ["ada"] and result.filters.kinds is None
    assert any("no result with the inferred kind filter" in n for n in result.notes), result.notes


def test_an_explicit_filter_is_never_relaxed(retriever: Retriever) -> None:
    result = retriever.retrieve("Bernoulli numbers", k=5, filters=SearchFilters(kinds=[DocumentKind.CODE],
                                                                                author_ids=["ada"]))
    assert result.hits == [] and result.filters.kinds == [DocumentKind.CODE]
