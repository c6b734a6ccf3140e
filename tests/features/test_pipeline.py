"""The incremental feature pipeline against a real MongoDB-protocol server and each index adapter."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from tests.fixtures.features import AUTHORS, corpus_documents, make_document
from twin.features.pipeline import MANIFEST, PIPELINE
from twin.models import CleanedDocument, DocumentKind, SearchFilters, content_hash
from twin.storage.documents import Collections


def _store_docs(store, docs: list[CleanedDocument]) -> None:
    store.replace_many(Collections.AUTHORS, AUTHORS)
    store.upsert_cleaned(docs)


def _edit(doc: CleanedDocument, content: str) -> CleanedDocument:
    return doc.model_copy(update={"content": content, "content_hash": content_hash(content),
                                  "cleaned_at": datetime.now(UTC)})


def test_first_run_indexes_every_document_and_a_rerun_indexes_nothing(feature_pipeline, embedder) -> None:
    docs = corpus_documents()
    _store_docs(feature_pipeline.store, docs)
    first = feature_pipeline.run()
    assert not first.failures
    assert first.indexed == len(docs) and first.chunks_written >= len(docs)
    index = feature_pipeline.index
    assert index.count() == first.chunks_written
    for doc in docs:
        assert {c.id for c in feature_pipeline.chunker.chunk(doc)} == index.chunk_ids(doc.id)
    # Stored vectors are the model's unit-length embeddings: the chunk's own text finds it first.
    chunk = feature_pipeline.chunker.chunk(docs[0])[0]
    top = index.search_vector(embedder.encode_query(chunk.text), 1, exact=True)[0]
    assert top.chunk.id == chunk.id and math.isclose(top.score, 1.0, abs_tol=1e-3)

    again = feature_pipeline.run()
    assert (again.considered, again.indexed, again.chunks_written, again.chunks_deleted) == (0, 0, 0, 0)
    assert index.count() == first.chunks_written


def test_recleaned_but_unchanged_documents_are_not_reembedded(feature_pipeline) -> None:
    docs = corpus_documents()
    _store_docs(feature_pipeline.store, docs)
    feature_pipeline.run()
    # The ETL ran again and touched every document without changing the text.
    feature_pipeline.store.upsert_cleaned([d.model_copy(update={"cleaned_at": datetime.now(UTC)}) for d in docs])
    report = feature_pipeline.run()
    assert report.considered == 0, "same content hash and model as the manifest: nothing to look at"
    assert report.indexed == 0 and report.chunks_written == 0


def test_editing_a_document_replaces_its_chunks(feature_pipeline) -> None:
    docs = corpus_documents()
    _store_docs(feature_pipeline.store, docs)
    feature_pipeline.run()
    index = feature_pipeline.index
    target = docs[0]
    old_ids = index.chunk_ids(target.id)
    others = {d.id: index.chunk_ids(d.id) for d in docs[1:]}

    edited = _edit(target, "Babbage never finished the machine. The difference engine prints mathematical "
                           "tables with a zinc printer.")
    feature_pipeline.store.upsert_cleaned([edited])
    report = feature_pipeline.run()

    assert report.indexed == 1 and report.considered == 1
    new_ids = index.chunk_ids(target.id)
    assert new_ids and not (new_ids & old_ids)
    assert new_ids == {c.id for c in feature_pipeline.chunker.chunk(edited)}
    assert {d.id: index.chunk_ids(d.id) for d in docs[1:]} == others, "other documents are untouched"
    texts = [h.chunk.text for h in index.search_bm25("zinc printer", 5)]
    assert any("zinc printer" in t for t in texts)
    assert not any("Jacquard" in h.chunk.text for h in index.search_bm25("Jacquard loom", 5))


def test_removed_and_duplicate_documents_lose_their_chunks(feature_pipeline) -> None:
    docs = corpus_documents()
    _store_docs(feature_pipeline.store, docs)
    first = feature_pipeline.run()
    index, store = feature_pipeline.index, feature_pipeline.store
    removed, duplicate = docs[0], docs[2]
    store.delete_many(Collections.CLEANED_DOCUMENTS, [removed.id])
    store.upsert_cleaned([duplicate.model_copy(update={"duplicate_of": docs[1].id,
                                                       "cleaned_at": datetime.now(UTC)})])
    report = feature_pipeline.run()
    assert report.removed == 2
    assert index.chunk_ids(removed.id) == set() and index.chunk_ids(duplicate.id) == set()
    assert index.count() == first.chunks_written - report.chunks_deleted
    assert store.count(MANIFEST, {"_id": {"$in": [removed.id, duplicate.id]}}) == 0  # type: ignore[arg-type]


def test_a_bad_document_is_reported_kept_for_retry_and_the_rest_goes_through(feature_pipeline) -> None:
    docs = corpus_documents()
    blank = make_document("blank", "ada", DocumentKind.POST, "empty", " \n\t ", 5)
    _store_docs(feature_pipeline.store, [*docs, blank])
    report = feature_pipeline.run()
    assert set(report.failures) == {"blank"} and "no text" in report.failures["blank"]
    assert report.indexed == len(docs)
    state = feature_pipeline.store.collection(Collections.PIPELINE_STATE).find_one({"_id": PIPELINE})
    assert state["retry"] == ["blank"]

    # Fixed upstream without a newer cleaned_at than the watermark: the retry list still picks it up.
    fixed = blank.model_copy(update={"content": "Now it has words.", "content_hash": content_hash("Now it has words."),
                                     "cleaned_at": datetime(2000, 1, 1, tzinfo=UTC)})
    feature_pipeline.store.upsert_cleaned([fixed])
    retry = feature_pipeline.run()
    assert not retry.failures and retry.indexed == 1
    assert feature_pipeline.index.chunk_ids("blank")


def test_chunks_failing_the_gx_suite_keep_their_document_out(feature_pipeline, tmp_path) -> None:
    import json
    import shutil

    # A stricter copy of the shipped suite: no chunk may mention a moth.
    strict = tmp_path / "expectations"
    shutil.copytree(feature_pipeline.settings.resolved_expectations_dir, strict)
    spec = json.loads((strict / "chunks.json").read_text())
    spec["expectations"].append({"type": "expect_column_values_to_not_match_regex",
                                 "kwargs": {"column": "text", "regex": "moth"}})
    (strict / "chunks.json").write_text(json.dumps(spec))
    feature_pipeline.settings = feature_pipeline.settings.model_copy(update={"expectations_dir": strict})
    docs = corpus_documents()
    _store_docs(feature_pipeline.store, docs)
    report = feature_pipeline.run()
    assert list(report.failures) == ["grace-bug"]
    assert "expect_column_values_to_not_match_regex(text)" in report.failures["grace-bug"]
    assert feature_pipeline.index.chunk_ids("grace-bug") == set()
    assert report.indexed == len(docs) - 1


def test_rebuild_swaps_in_a_complete_index(feature_pipeline) -> None:
    docs = corpus_documents()
    _store_docs(feature_pipeline.store, docs)
    first = feature_pipeline.run()
    report = feature_pipeline.rebuild()
    assert report.mode == "rebuild" and not report.failures
    assert report.indexed == len(docs) and report.chunks_written == first.chunks_written
    index = feature_pipeline.index
    assert index.count() == first.chunks_written
    assert index.count(SearchFilters(author_ids=["grace"])) == sum(
        len(feature_pipeline.chunker.chunk(d)) for d in docs if d.author_id == "grace")
    assert feature_pipeline.store.count(MANIFEST) == len(docs)  # type: ignore[arg-type]
    assert feature_pipeline.run().indexed == 0, "after a rebuild the incremental run has nothing to do"


def test_rebuild_moves_the_index_to_a_new_embedding_dimension(feature_pipeline) -> None:
    """Changing TWIN_EMBEDDING_MODEL changes the vector size: a rebuild must replace the old index."""
    docs = corpus_documents()
    _store_docs(feature_pipeline.store, docs)
    feature_pipeline.index.ensure(8)  # the live index was built by a model with 8-d vectors
    report = feature_pipeline.rebuild()
    assert not report.failures and report.indexed == len(docs)
    query = feature_pipeline.embedder.encode_query("sourdough")
    assert len(feature_pipeline.index.search_vector(query, k=3)) == 3
