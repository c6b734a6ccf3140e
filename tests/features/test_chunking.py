"""Chunking by kind with the real embedding model's tokenizer."""

from __future__ import annotations

import re
from itertools import pairwise

import pytest

from tests.fixtures.features import make_document
from twin.features.chunking import Chunker, ChunkSizes, ModelTokenizer
from twin.models import DocumentKind

SIZES = ChunkSizes(max_tokens=40, overlap_tokens=16, post_max_tokens=20)  # a sentence is ~12 tokens


@pytest.fixture(scope="module")
def chunker(embedder) -> Chunker:
    return Chunker(ModelTokenizer(embedder.tokenizer), SIZES)


def _article(paragraphs: int = 3, sentences: int = 4) -> str:
    return "\n\n".join(
        " ".join(f"Sentence {s} of paragraph {p} is about retrieval number {p * 10 + s}." for s in range(sentences))
        for p in range(paragraphs))


def test_article_windows_fit_overlap_and_cover_every_sentence(chunker: Chunker) -> None:
    doc = make_document("a1", "ada", DocumentKind.ARTICLE, "t", _article(), 1)
    chunks = chunker.chunk(doc)
    assert len(chunks) > 2
    assert all(0 < c.token_count <= SIZES.max_tokens for c in chunks)
    assert all(c.token_count == chunker.tokenizer.count_tokens(c.text) for c in chunks)
    for sentence_number in range(30):
        wanted = f"number {sentence_number}."
        if wanted in doc.content:
            assert any(wanted in c.text for c in chunks), wanted
    for left, right in pairwise(chunks):
        last_sentence = re.split(r"(?<=\.)\s+", left.text)[-1]
        assert right.text.startswith(last_sentence), "consecutive windows share the boundary sentence"
    assert all(c.text[0].isupper() and c.text.endswith(".") for c in chunks), "windows cut at sentence ends"


def test_a_sentence_longer_than_a_window_is_cut_by_tokens(chunker: Chunker) -> None:
    text = " ".join(f"word{i}" for i in range(200))  # one "sentence", far over 40 tokens
    chunks = chunker.chunk(make_document("a2", "ada", DocumentKind.ARTICLE, "t", text, 1))
    assert len(chunks) > 3
    assert all(c.token_count <= SIZES.max_tokens for c in chunks)
    assert chunks[0].text.startswith("word0") and chunks[-1].text.endswith("word199")


def test_short_code_file_is_one_chunk_and_long_one_splits_at_definitions(chunker: Chunker) -> None:
    short = "def add(a, b):\n    return a + b\n"
    assert [c.text for c in chunker.chunk(make_document("c1", "linus", DocumentKind.CODE, "f.py", short, 1))] \
        == [short.strip()]
    long = "\n\n".join(f"def function_{i}(value):\n    total = value * {i}\n    return total + {i}\n"
                       for i in range(8))
    chunks = chunker.chunk(make_document("c2", "linus", DocumentKind.CODE, "g.py", long, 1))
    assert len(chunks) > 1
    assert all(c.text.startswith("def function_") for c in chunks), [c.text[:20] for c in chunks]
    assert all(c.token_count <= SIZES.max_tokens for c in chunks)
    # Every function's body stays with its definition line.
    for i in range(8):
        assert any(f"def function_{i}(value):\n    total = value * {i}" in c.text for c in chunks)


def test_post_is_whole_when_it_fits_and_short_windows_otherwise(chunker: Chunker) -> None:
    short = "Shipping the new release today. Thanks to everyone who tested it."
    assert [c.text for c in chunker.chunk(make_document("p1", "grace", DocumentKind.POST, "t", short, 1))] == [short]
    long = _article(paragraphs=1, sentences=8)
    chunks = chunker.chunk(make_document("p2", "grace", DocumentKind.POST, "t", long, 1))
    assert len(chunks) > 2
    assert all(c.token_count <= SIZES.post_max_tokens for c in chunks)


def test_empty_document_gives_no_chunks(chunker: Chunker) -> None:
    assert chunker.chunk(make_document("e", "ada", DocumentKind.ARTICLE, "t", "  \n\n ", 1)) == []


def test_chunk_ids_are_stable_and_follow_the_text(chunker: Chunker) -> None:
    doc = make_document("s", "ada", DocumentKind.ARTICLE, "t", _article(), 1)
    first, again = chunker.chunk(doc), chunker.chunk(doc)
    assert [c.id for c in first] == [c.id for c in again]
    edited = make_document("s", "ada", DocumentKind.ARTICLE, "t", _article().replace("number 3.", "number three."), 1)
    changed = {c.id for c in chunker.chunk(edited)} ^ {c.id for c in first}
    assert changed, "an edit changes the ids of the chunks it touches"
    assert {c.document_hash for c in first} == {doc.content_hash}


def test_overlap_must_be_smaller_than_the_window() -> None:
    with pytest.raises(ValueError, match="overlap"):
        ChunkSizes(max_tokens=32, overlap_tokens=32)
