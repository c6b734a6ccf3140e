"""The SearchIndex contract, held by both adapters (LanceDB embedded, OpenSearch on a real node)."""

from __future__ import annotations

import random
import threading
import uuid
from datetime import timedelta

import pytest

from tests.search.chunks import DIM, EPOCH, axis, make_chunk, unit
from twin.models import Chunk, DocumentKind, SearchFilters
from twin.search.base import HybridWeights, IndexNotBuiltError, SearchIndex

ARTICLE, CODE, POST = DocumentKind.ARTICLE, DocumentKind.CODE, DocumentKind.POST


def corpus():
    return [
        make_chunk("apple", "apple orchards bloom in the spring sun", axis(0), author="ada", kind=ARTICLE,
                   published=EPOCH + timedelta(days=10)),
        make_chunk("kernel", "the kernel scheduler runs each task on a cpu", axis(1), author="grace", kind=CODE,
                   published=EPOCH + timedelta(days=60)),
        make_chunk("compiler", "compilers translate source code into machine code", axis(2), author="grace",
                   kind=POST, published=EPOCH + timedelta(days=150)),
        make_chunk("moth", "a moth was found in relay seventy", axis(3), author="linus", kind=POST,
                   published=EPOCH - timedelta(days=200)),
        make_chunk("undated", "notes about apple trees and kernels without a date", unit(0, 0, 0, 0, 1),
                   author="linus", kind=ARTICLE, published=None),
    ]


def ids(hits) -> list[str]:
    return [h.chunk.id for h in hits]


def test_ensure_is_idempotent_and_checks_the_dimension(index: SearchIndex):
    index.ensure(DIM)
    assert index.count() == 0
    with pytest.raises(ValueError, match=r"\d+-d vectors"):
        index.ensure(DIM + 1)


def test_upsert_inserts_then_replaces_by_id(index: SearchIndex):
    first = index.upsert(corpus())
    assert first.ok and first.indexed == 5
    replaced = make_chunk("apple", "pears ripen slowly in autumn", axis(0), author="ada")
    assert index.upsert([replaced]).indexed == 1
    assert index.count() == 5
    assert ids(index.search_bm25("pears", 5)) == ["apple"]
    assert "apple" not in ids(index.search_bm25("orchards", 5))


def test_upsert_same_id_twice_in_one_batch_keeps_one(index: SearchIndex):
    index.upsert([make_chunk("x", "first words", axis(0)), make_chunk("x", "second words", axis(0))])
    assert index.count() == 1
    assert ids(index.search_bm25("second", 3)) == ["x"]


def test_chunk_ids_and_delete_documents(index: SearchIndex):
    chunks = [make_chunk(f"a{i}", f"alpha text {i}", axis(i), document_id="doc-a", index=i) for i in range(3)]
    chunks += [make_chunk(f"b{i}", f"beta text {i}", axis(i), document_id="doc-b", index=i) for i in range(2)]
    index.upsert(chunks)
    assert index.chunk_ids("doc-a") == {"a0", "a1", "a2"}
    assert index.chunk_ids("missing") == set()
    assert index.delete_documents(["doc-a", "missing"]) == 3
    assert index.chunk_ids("doc-a") == set()
    assert index.chunk_ids("doc-b") == {"b0", "b1"}
    assert index.count() == 2
    assert index.search_bm25("alpha", 5) == []
    assert index.delete_documents(["doc-a"]) == 0


def test_chunk_ids_many_answers_for_every_document_in_one_call(index: SearchIndex):
    chunks = [make_chunk(f"d{d}-{i}", f"text {d} {i}", axis(i % DIM), document_id=f"doc-{d}", index=i)
              for d in range(30) for i in range(d % 4)]  # doc-0, doc-4, ... have no chunks
    index.upsert(chunks)
    wanted = [f"doc-{d}" for d in range(30)] + ["missing"]
    found = index.chunk_ids_many(wanted)
    assert set(found) == set(wanted)
    assert found == {d: index.chunk_ids(d) for d in wanted}
    assert found["doc-3"] == {"d3-0", "d3-1", "d3-2"}
    assert found["doc-4"] == set() and found["missing"] == set()
    assert index.chunk_ids_many([]) == {}


def test_delete_chunks_removes_only_those_ids(index: SearchIndex):
    index.upsert([make_chunk(f"a{i}", f"alpha text {i}", axis(i), document_id="doc-a", index=i) for i in range(3)])
    assert index.delete_chunks(["a0", "a2", "missing"]) == 2
    assert index.chunk_ids("doc-a") == {"a1"}
    assert index.delete_chunks([]) == 0
    assert [h.chunk.id for h in index.search_bm25("alpha", 5)] == ["a1"]


def test_count_with_filters(index: SearchIndex):
    index.upsert(corpus())
    assert index.count() == 5
    assert index.count(SearchFilters(author_ids=["grace"])) == 2
    assert index.count(SearchFilters(author_ids=["grace", "linus"])) == 4
    assert index.count(SearchFilters(kinds=[POST])) == 2
    assert index.count(SearchFilters(published_after=EPOCH)) == 3  # undated chunks never match a date range
    assert index.count(SearchFilters(published_after=EPOCH, published_before=EPOCH + timedelta(days=60))) == 1
    assert index.count(SearchFilters(author_ids=["grace"], kinds=[CODE])) == 1
    assert index.count(SearchFilters(author_ids=["nobody"])) == 0


def test_bm25_finds_the_term_matching_chunk(index: SearchIndex):
    index.upsert(corpus())
    hits = index.search_bm25("scheduler", 3)
    assert ids(hits) == ["kernel"]
    hit = hits[0]
    assert hit.retriever == "bm25" and hit.ranks == {"bm25": 1} and hit.score > 0
    assert type(hit.chunk) is Chunk and hit.chunk.author_id == "grace" and hit.chunk.kind == CODE
    assert hit.chunk.published_at == EPOCH + timedelta(days=60)
    # Stemming: "compiler" matches "compilers".
    assert ids(index.search_bm25("compiler", 3))[0] == "compiler"
    assert index.search_bm25("zebra", 3) == []


def test_title_weight_lets_bm25_match_the_title(index: SearchIndex):
    index.upsert(corpus())  # each title is "title <id>"; no chunk text says "undated"
    assert index.search_bm25("undated", 3) == []
    index.title_boost = 2.0  # type: ignore[attr-defined]
    assert ids(index.search_bm25("undated", 3)) == ["undated"]
    # Both chunks say "apple"; the title's weight puts the one titled "apple" first.
    assert ids(index.search_bm25("apple", 3))[0] == "apple"


def test_vector_finds_the_nearest(knn_index: SearchIndex):
    knn_index.upsert(corpus())
    query = unit(0.1, 0.2, 1.0)  # closest to axis 2 ("compiler"), then axis 1 ("kernel")
    for exact in (False, True):
        hits = knn_index.search_vector(query, 2, exact=exact)
        assert ids(hits) == ["compiler", "kernel"], f"exact={exact}"
        assert hits[0].retriever == "vector" and hits[0].ranks == {"vector": 1}
        assert hits[0].score == pytest.approx(1.0 / (1 + 0.01 + 0.04) ** 0.5, abs=1e-3)  # cosine
        assert hits[0].score > hits[1].score


def test_hybrid_parts_are_the_fused_ranking_and_the_two_lists(knn_index: SearchIndex):
    knn_index.upsert(corpus())
    query, vector = "apple kernel", unit(1.0, 0.3)
    parts = knn_index.search_hybrid_parts(query, vector, 3, parts=2)
    assert ids(parts.fused) == ids(knn_index.search_hybrid(query, vector, 3))
    assert ids(parts.bm25) == ids(knn_index.search_bm25(query, 2))
    assert ids(parts.vector) == ids(knn_index.search_vector(vector, 2)) == ["apple", "kernel"]
    assert [h.score for h in parts.vector] == pytest.approx([h.score for h in knn_index.search_vector(vector, 2)])


@pytest.mark.parametrize("method", ["rrf", "score"])
def test_hybrid_ranks_a_chunk_matching_both_first(knn_index: SearchIndex, method: str):
    knn_index.upsert([
        make_chunk("text-only", "apple apple harvest", axis(3)),  # best text match, far vector
        make_chunk("weak-text", "a long report on weather, roads, rivers, towns and one apple", axis(4)),
        make_chunk("vector-only", "quarterly revenue report", axis(0)),  # nearest vector, no text match
        make_chunk("near-1", "budget meeting minutes", unit(1.0, 0.5)),
        make_chunk("near-2", "office party planning", unit(1.0, 1.0)),
        make_chunk("both", "an apple a day", unit(1.0, 0.1)),  # good at both
        make_chunk("neither", "weather today is cloudy", axis(5)),
    ])
    hits = knn_index.search_hybrid("apple", axis(0), 3, weights=HybridWeights(method=method))
    assert ids(hits)[0] == "both"
    assert hits[0].retriever == "hybrid"
    assert set(hits[0].ranks) == {"bm25", "vector"}
    assert hits[0].score >= hits[1].score >= hits[2].score


@pytest.mark.parametrize(("method", "strong", "weak"), [("score", 5.0, 1.0), ("rrf", 1.0, 0.0)])
def test_hybrid_weights_shift_the_ranking(knn_index: SearchIndex, method: str, strong: float, weak: float):
    knn_index.upsert([
        make_chunk("text-only", "apple apple harvest", axis(3)),
        make_chunk("vector-only", "quarterly revenue report", axis(0)),
    ])
    text_heavy = HybridWeights(bm25=strong, vector=weak, method=method)
    vector_heavy = HybridWeights(bm25=weak, vector=strong, method=method)
    assert ids(knn_index.search_hybrid("apple", axis(0), 2, weights=text_heavy))[0] == "text-only"
    assert ids(knn_index.search_hybrid("apple", axis(0), 2, weights=vector_heavy))[0] == "vector-only"


FILTERS = {
    "author": (SearchFilters(author_ids=["grace"]), lambda c: c.author_id == "grace"),
    "kind": (SearchFilters(kinds=[POST]), lambda c: c.kind == POST),
    "date": (SearchFilters(published_after=EPOCH, published_before=EPOCH + timedelta(days=100)),
             lambda c: c.published_at is not None and EPOCH <= c.published_at < EPOCH + timedelta(days=100)),
}


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_filters_never_leak(knn_index: SearchIndex, name: str):
    filters, allowed = FILTERS[name]
    knn_index.upsert(corpus())
    text = "apple kernel compilers moth notes"
    unfiltered = ids(knn_index.search_hybrid(text, axis(0), 10))
    assert len(unfiltered) == 5  # without the filter, other chunks do come back
    searches = {
        "bm25": knn_index.search_bm25(text, 10, filters),
        "vector": knn_index.search_vector(axis(0), 10, filters),
        "exact": knn_index.search_vector(axis(0), 10, filters, exact=True),
        "hybrid": knn_index.search_hybrid(text, axis(0), 10, filters),
    }
    expected = knn_index.count(filters)
    assert 0 < expected < 5
    for retriever, hits in searches.items():
        assert hits, retriever
        assert all(allowed(h.chunk) for h in hits), (retriever, ids(hits))
        if retriever != "bm25":  # every chunk is some distance away, so all allowed ones come back
            assert len(hits) == expected, retriever


def test_bulk_failures_are_reported_per_item(index: SearchIndex):
    good = [make_chunk("good-1", "first good chunk", axis(0)), make_chunk("good-2", "second good chunk", axis(1))]
    bad = make_chunk("bad", "wrong vector size", [1.0, 0.0, 0.0])
    result = index.upsert([good[0], bad, good[1]])
    assert result.indexed == 2
    assert [chunk_id for chunk_id, _ in result.failures] == ["bad"]
    assert result.failures[0][1]  # a reason is given
    assert not result.ok
    assert index.count() == 2
    assert ids(index.search_bm25("good", 5)) and "bad" not in ids(index.search_bm25("wrong", 5))


def test_rebuild_swaps_the_alias_without_an_empty_window(index: SearchIndex, open_index):
    old = [make_chunk(f"old-{i}", f"legacy text {i}", axis(i % DIM)) for i in range(6)]
    new = [make_chunk(f"new-{i}", f"fresh text {i}", axis(i % DIM)) for i in range(4)]
    index.upsert(old)
    staged = index.begin_rebuild(DIM)
    assert staged.upsert(new).ok
    assert index.count() == 6 and staged.count() == 4  # not live before the commit
    assert ids(index.search_bm25("fresh", 5)) == []

    reader = open_index(index.name)  # a second handle, as another process would hold
    seen: list[int] = []
    errors: list[Exception] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(reader.count())
            except Exception as exc:  # a failed read is a window too
                errors.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        index.commit_rebuild(staged)
        for _ in range(50):  # let the reader observe the new index for a while
            if seen and seen[-1] == 4:
                break
            threading.Event().wait(0.05)
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors[:3]
    assert seen and set(seen) <= {6, 4} and seen[-1] == 4
    assert index.count() == 4 and reader.count() == 4
    assert ids(index.search_bm25("legacy", 5)) == []
    assert sorted(ids(index.search_bm25("fresh", 10))) == [f"new-{i}" for i in range(4)]
    # Writes through the live name now land in the rebuilt index.
    index.upsert([make_chunk("later", "fresh arrival", axis(0))])
    assert index.count() == 5


def test_exact_and_approximate_vector_search_agree_on_small_data(knn_index: SearchIndex):
    rng = random.Random(7)
    vectors = [unit(*[rng.gauss(0, 1) for _ in range(DIM)]) for _ in range(300)]
    knn_index.upsert([make_chunk(f"r{i}", f"random {i}", v) for i, v in enumerate(vectors)])
    build = getattr(knn_index, "build_vector_index", None)
    if build is not None:  # LanceDB trains its ANN index on demand; OpenSearch builds HNSW on write
        build()
    overlaps = []
    for _ in range(10):
        query = unit(*[rng.gauss(0, 1) for _ in range(DIM)])
        exact = ids(knn_index.search_vector(query, 10, exact=True))
        approx = ids(knn_index.search_vector(query, 10))
        assert approx[0] == exact[0]
        overlaps.append(len(set(exact) & set(approx)) / 10)
    assert sum(overlaps) / len(overlaps) >= 0.9


def test_empty_query_and_empty_index(index: SearchIndex):
    assert index.search_bm25("anything", 5) == []
    assert index.search_bm25("   ", 5) == []
    assert index.chunk_ids("doc") == set()
    assert index.delete_documents([]) == 0


def test_searching_an_index_never_built_names_the_missing_index(open_index):
    """Before the features pipeline ran: a typed error the API answers with 503, not a bare 500."""
    never_built = open_index(f"t-{uuid.uuid4().hex[:12]}")
    with pytest.raises(IndexNotBuiltError, match="features pipeline"):
        never_built.search_bm25("apple orchards", 5)
    with pytest.raises(IndexNotBuiltError):
        never_built.search_hybrid_parts("apple orchards", axis(0), 5)


def test_embedded_index_keeps_the_retired_table_until_the_next_rebuild(tmp_path) -> None:
    """A reader that resolved the old pointer just before a swap may still be reading that table, so a rebuild
    drops only the generations before the one it retires."""
    from twin.search.lancedb_index import LanceDBSearchIndex

    index = LanceDBSearchIndex(tmp_path / "lancedb", "chunks")
    index.ensure(DIM)
    index.upsert([make_chunk("gen-0", "first generation", axis(0))])
    generations = [index.live_table_name()]
    for n in (1, 2):
        staged = index.begin_rebuild(DIM)
        assert staged.upsert([make_chunk(f"gen-{n}", f"generation {n}", axis(n))]).ok
        index.commit_rebuild(staged)
        generations.append(index.live_table_name())
        assert sorted(index._physical_tables()) == sorted(generations[-2:])  # live and just retired
    assert ids(index.search_bm25("generation", 5)) == ["gen-2"]
