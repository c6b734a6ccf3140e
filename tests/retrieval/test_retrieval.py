"""Retrieval on the small corpus, indexed once per module on each index adapter."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tests.fixtures.features import AUTHORS, EPOCH, corpus_documents
from twin.models import DocumentKind, SearchFilters
from twin.retrieval.context import assemble_context
from twin.retrieval.rerank import Reranker, RerankerError
from twin.retrieval.retriever import MODES, Retriever, dedupe_hits
from twin.retrieval.selfquery import SelfQuery

# A query that matches every author's text, so that a leaking filter would show.
BROAD = "engine compiler kernel scheduler machine code bug task runtime cards"
DOCS = {d.id: d for d in corpus_documents()}


class ScriptedLLM:
    """A QueryLLM that answers from a fixed script: the retrieval logic is under test, not a model."""

    name = "scripted"

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.prompts: list[str] = []

    def complete(self, prompt: str, *, max_new_tokens: int = 128) -> str:
        self.prompts.append(prompt)
        return self.answer


@pytest.fixture(scope="module")
def retriever(indexed_corpus, embedder) -> Retriever:
    index, _, _ = indexed_corpus
    return Retriever(index, embedder, authors=AUTHORS)


@pytest.mark.parametrize("mode", MODES)
def test_author_filters_never_leak_other_authors(retriever: Retriever, mode: str) -> None:
    for author in AUTHORS:
        result = retriever.retrieve(BROAD, k=20, filters=SearchFilters(author_ids=[author.id]), mode=mode,
                                    self_query=False)
        assert result.hits, f"{author.id} has matching chunks"
        assert {h.chunk.author_id for h in result.hits} == {author.id}
    unfiltered = retriever.retrieve(BROAD, k=20, mode=mode, self_query=False)
    assert len({h.chunk.author_id for h in unfiltered.hits}) > 1, "without a filter several authors come back"


@pytest.mark.parametrize("mode", MODES)
def test_kind_and_date_filters(retriever: Retriever, mode: str) -> None:
    posts = retriever.retrieve(BROAD, k=20, filters=SearchFilters(kinds=[DocumentKind.POST]), mode=mode,
                               self_query=False)
    assert posts.hits and {h.chunk.kind for h in posts.hits} == {DocumentKind.POST}
    after = EPOCH + timedelta(days=35)
    recent = retriever.retrieve(BROAD, k=20, filters=SearchFilters(published_after=after), mode=mode,
                                self_query=False)
    expected = {d.id for d in DOCS.values() if d.published_at and d.published_at >= after}
    assert recent.hits and {h.chunk.document_id for h in recent.hits} <= expected


def test_bm25_finds_the_exact_term_and_vectors_the_paraphrase(retriever: Retriever) -> None:
    assert retriever.search("FLOW-MATIC", 3, mode="bm25")[0].chunk.document_id == "grace-compilers"
    paraphrase = "an insect got stuck inside the computer hardware"
    assert retriever.search(paraphrase, 3, mode="vector")[0].chunk.document_id == "grace-bug"
    hybrid = retriever.search(paraphrase + " relay", 5, mode="hybrid")
    assert hybrid[0].chunk.document_id == "grace-bug"
    assert hybrid[0].retriever == "hybrid" and set(hybrid[0].ranks) == {"bm25", "vector"}


def test_self_query_rules_turn_named_author_and_kind_into_filters(retriever: Retriever) -> None:
    result = retriever.retrieve("What did Grace Hopper post about machines?", k=10)
    assert result.filters.author_ids == ["grace"] and result.filters.kinds == [DocumentKind.POST]
    assert result.hits and {(h.chunk.author_id, h.chunk.kind) for h in result.hits} == {("grace", "post")}
    assert any("self-query (rules)" in note for note in result.notes)
    # An explicit filter wins over the one read from the question.
    explicit = retriever.retrieve("Grace Hopper on scheduling", k=10, filters=SearchFilters(author_ids=["linus"]))
    assert {h.chunk.author_id for h in explicit.hits} == {"linus"}


def test_self_query_rules_match_whole_names_ids_and_kind_words() -> None:
    rules = SelfQuery(AUTHORS)
    assert rules.by_rules("Torvalds's code for the scheduler").filters.author_ids == ["linus"]
    assert rules.by_rules("Torvalds's code for the scheduler").filters.kinds == [DocumentKind.CODE]
    assert rules.by_rules("articles by ada").filters.author_ids == ["ada"]
    nothing = rules.by_rules("adapters and graceful shutdown in a codebase")
    assert nothing.filters.is_empty() and nothing.matched == []


def test_self_query_through_an_llm_and_its_fallback_to_rules() -> None:
    llm = ScriptedLLM('Sure: {"author_id": "ada", "kind": "post"}')
    intent = SelfQuery(AUTHORS, llm).extract("what did she say about imagination?")
    assert intent.source == "llm" and intent.filters.author_ids == ["ada"] and intent.filters.kinds == ["post"]
    assert "ada: Ada Lovelace" in llm.prompts[0]
    confused = SelfQuery(AUTHORS, ScriptedLLM("I cannot help with that")).extract("Grace Hopper's compiler")
    assert confused.source == "rules" and confused.filters.author_ids == ["grace"]
    assert "used rules" in confused.notes[0]
    unknown = SelfQuery(AUTHORS, ScriptedLLM('{"author_id": "mallory", "kind": "poem"}')).extract("x")
    assert unknown.filters.is_empty(), "names the model invents are not filters"


def test_query_expansion_is_skipped_without_an_llm_and_merged_with_one(retriever: Retriever, indexed_corpus,
                                                                       embedder) -> None:
    plain = retriever.retrieve("the first bug", k=5, expand=True, self_query=False)
    assert "query expansion skipped: no LLM is configured" in plain.notes
    assert plain.phrasings == ["the first bug"]

    llm = ScriptedLLM("1. moth found in a relay\n- insect in the Mark II log book\n\nthe first bug")
    expanding = Retriever(indexed_corpus[0], embedder, authors=AUTHORS, llm=llm)
    result = expanding.retrieve("the first bug", k=5, expand=True, self_query=False)
    assert result.phrasings == ["the first bug", "moth found in a relay", "insect in the Mark II log book"]
    assert result.hits[0].chunk.document_id == "grace-bug"
    assert {h.retriever for h in result.hits} == {"hybrid+expansion"}
    assert len({h.chunk.id for h in result.hits}) == len(result.hits)


def test_reranking_is_skipped_without_a_model_and_refuses_untrained_heads(retriever: Retriever) -> None:
    result = retriever.retrieve("compilers", k=3, rerank=True, self_query=False)
    assert any(note.startswith("reranking skipped") for note in result.notes)
    assert result.hits
    from twin.features.embedding import resolve_model_path

    # The embedding model has no trained classification head: as a reranker it would score at random.
    with pytest.raises(RerankerError, match="not a trained cross-encoder"):
        Reranker(resolve_model_path("packaged"))


def test_context_fits_the_budget_and_cites_each_document_once(retriever: Retriever, embedder) -> None:
    hits = retriever.retrieve(BROAD, k=10, self_query=False).hits
    full = assemble_context(hits, 10_000, embedder.count_tokens)
    assert len(full.hits) == len(hits) and full.skipped == 0
    assert len(full.sources) == len({h.chunk.document_id for h in hits})
    first = full.sources[0]
    assert first.citation() == f"[1] {hits[0].chunk.url} / {hits[0].chunk.title} / {hits[0].chunk.author_name}"
    assert full.text.startswith("[1] ")

    budget = full.tokens // 2
    small = assemble_context(hits, budget, embedder.count_tokens)
    assert 0 < small.tokens <= budget and small.skipped > 0
    assert embedder.count_tokens(small.text) <= budget
    cited = {s.number for s in small.sources}
    assert cited == set(range(1, len(small.sources) + 1))


def test_dedupe_drops_repeated_chunks_and_repeated_text(retriever: Retriever) -> None:
    hits = retriever.search(BROAD, 5, mode="bm25")
    copy = hits[0].model_copy(update={"chunk": hits[0].chunk.model_copy(update={"id": "other",
                                                                                 "text": hits[0].chunk.text.upper()})})
    assert dedupe_hits([*hits, hits[0], copy]) == hits


def test_a_reranker_folder_must_declare_a_trained_classification_head(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text('{"architectures": ["BertModel"]}')
    with pytest.raises(RerankerError, match="not a trained cross-encoder"):
        Reranker(str(tmp_path / "base"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RerankerError, match=r"no config\.json"):
        Reranker(str(tmp_path / "empty"))


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory, embedder) -> str:
    """A tiny sequence-classification model saved like a cross-encoder: its scores mean nothing, but
    they are real model outputs, enough to check that reranking orders by them."""
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-cross-encoder")
    config = BertConfig(vocab_size=embedder.tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(folder)
    embedder.tokenizer.save_pretrained(folder)
    return str(folder)


def test_reranking_orders_candidates_by_the_cross_encoder(indexed_corpus, embedder, tiny_cross_encoder) -> None:
    reranker = Reranker(tiny_cross_encoder)
    retriever = Retriever(indexed_corpus[0], embedder, authors=AUTHORS, reranker=reranker, rerank_candidates=12)
    result = retriever.retrieve(BROAD, k=4, rerank=True, self_query=False)
    assert len(result.hits) == 4 and {h.retriever for h in result.hits} == {"rerank"}
    assert [h.ranks["rerank"] for h in result.hits] == [1, 2, 3, 4]
    assert all(set(h.ranks) - {"rerank"} for h in result.hits), "first-stage ranks are kept"
    candidates = retriever.retrieve(BROAD, k=12, self_query=False).hits
    scores = reranker._model.predict([(BROAD, h.chunk.text) for h in candidates])
    best = sorted(zip(scores, [h.chunk.id for h in candidates], strict=True), key=lambda p: -float(p[0]))[:4]
    assert [h.chunk.id for h in result.hits] == [chunk_id for _, chunk_id in best]
    assert [h.score for h in result.hits] == pytest.approx([float(s) for s, _ in best], abs=1e-5)
