"""Incremental ETL runs are exact: late commits, overlapping runs, tombstones through to the index.

Crawl-free: raw documents are written to the real MongoDB-protocol server as a crawl would write
them, then the ETL and the feature pipeline run as the DAGs run them.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.etl.conftest import essay, raw_doc
from twin.etl.dedup import DuplicateIndex, minhash
from twin.etl.pipeline import LEDGER, run_etl
from twin.models import CleanedDocument
from twin.storage.documents import Collections, to_mongo


def cleaned_ids(store) -> set[str]:
    return {d["_id"] for d in store.collection(Collections.CLEANED_DOCUMENTS).find({}, {"_id": 1})}


def docs(n: int, topic: str = "topic") -> list:
    return [raw_doc(f"https://blog.test/{topic}-{i}", essay(f"{topic} number {i}", 12)) for i in range(n)]


def test_a_raw_document_committed_late_with_an_old_timestamp_is_still_processed(etl_store) -> None:
    etl_store.upsert_raw_documents(docs(3))
    first = run_etl("run-1", store=etl_store)
    assert first.cleaned == 3 and first.watermark is not None
    # A crawl stamped these before run-1 read past that time, and its write committed only now.
    stamped = first.watermark - timedelta(minutes=5)
    late = raw_doc("https://blog.test/late", essay("late arrivals", 12))
    changed = raw_doc("https://blog.test/topic-0", essay("a rewritten first post", 12))
    for doc in (late, changed):
        record = to_mongo(doc.model_copy(update={"updated_at": stamped}))
        etl_store.collection(Collections.RAW_DOCUMENTS).replace_one({"_id": doc.id}, record, upsert=True)

    second = run_etl("run-2", store=etl_store)
    assert (second.processed, second.cleaned) == (2, 2)
    stored = etl_store.get(Collections.CLEANED_DOCUMENTS, CleanedDocument, changed.id)
    assert stored is not None and "rewritten first post" in stored.content
    assert late.id in cleaned_ids(etl_store)
    assert run_etl("run-3", store=etl_store).processed == 0


def test_writes_that_overlap_a_run_are_all_processed_by_the_next_one(etl_store) -> None:
    etl_store.upsert_raw_documents(docs(20, "before"))
    stamped = datetime.now(UTC) - timedelta(minutes=1)  # client clocks: stamped before the run starts
    writer_docs = docs(20, "during")

    def crawl() -> None:
        for doc in writer_docs:
            etl_store.collection(Collections.RAW_DOCUMENTS).replace_one(
                {"_id": doc.id}, to_mongo(doc.model_copy(update={"updated_at": stamped})), upsert=True)

    writer = threading.Thread(target=crawl)
    writer.start()
    run_etl("run-overlapping", store=etl_store)
    writer.join()
    run_etl("run-next", store=etl_store)
    expected = {d.id for d in docs(20, "before") + writer_docs}
    assert cleaned_ids(etl_store) == expected
    ledger = {d["_id"]: d["raw_content_hash"] for d in etl_store.collection(LEDGER).find()}
    assert ledger == {d.id: d.content_hash for d in docs(20, "before") + writer_docs}


def test_signatures_loaded_once_follow_the_run_in_memory() -> None:
    index = DuplicateIndex(0.9)
    text = essay("shared text", 30)
    index.add("a", "article", "h1", minhash(text))
    assert index.find("article", "h2", minhash(text)).of == "a"
    index.discard(["a", "unknown"])
    assert len(index) == 0 and index.find("article", "h1", minhash(text)) is None
    index.add("b", "article", "h1", minhash(text))  # a later batch's canonical copy takes its place
    assert index.find("article", "h1", minhash(text)).of == "b"


@pytest.fixture
def features(etl_store, etl_settings, embedder, tmp_path):
    from twin.features.chunking import ChunkSizes
    from twin.features.pipeline import FeaturePipeline
    from twin.search.lancedb_index import LanceDBSearchIndex

    index = LanceDBSearchIndex(tmp_path / "lancedb", f"t-{uuid.uuid4().hex[:10]}")
    yield FeaturePipeline(etl_store, index, embedder, ChunkSizes(64, 16, 32), etl_settings)
    index.drop()


def _tombstone(store, doc_id: str, when: datetime | None) -> None:
    store.collection(Collections.RAW_DOCUMENTS).update_one({"_id": doc_id}, {"$set": {
        "tombstoned_at": when, "tombstone_reason": "no longer in its feed" if when else None,
        "updated_at": datetime.now(UTC)}})


def test_a_tombstoned_document_leaves_cleaned_documents_and_the_index(etl_store, features) -> None:
    posts = [d.model_copy(update={"published_at": datetime(2026, 1, 1, tzinfo=UTC)}) for d in docs(3, "feed")]
    # An exact copy of feed-0 published later: a duplicate while the original exists.
    copy = raw_doc("https://mirror.test/feed-0", posts[0].content, published="2026-06-01")
    etl_store.upsert_raw_documents([*posts, copy])
    run_etl("run-1", store=etl_store)
    assert features.run().indexed == 3  # the mirror copy is a duplicate: not indexed
    gone = posts[0].id
    assert features.index.chunk_ids(gone)

    _tombstone(etl_store, gone, datetime.now(UTC))
    etl = run_etl("run-2", store=etl_store)
    assert (etl.tombstoned, etl.removed_tombstoned, etl.changed) == (1, 1, True)
    assert gone not in cleaned_ids(etl_store)
    mirror = etl_store.get(Collections.CLEANED_DOCUMENTS, CleanedDocument, copy.id)
    assert mirror is not None and mirror.duplicate_of is None, "the copy is canonical now its original is gone"
    report = features.run()
    assert report.removed == 1 and report.chunks_deleted > 0
    assert features.index.chunk_ids(gone) == set() and features.index.chunk_ids(copy.id)
    assert {h.chunk.document_id for h in features.index.search_bm25("feed number 1", 20)} <= {
        posts[1].id, posts[2].id, copy.id}
    assert run_etl("run-3", store=etl_store).processed == 0 and features.run().considered == 0

    _tombstone(etl_store, gone, None)  # it came back to its feed
    restored = run_etl("run-4", store=etl_store)
    assert (restored.processed, restored.tombstoned, restored.exact_duplicates) == (1, 0, 1)
    back = etl_store.get(Collections.CLEANED_DOCUMENTS, CleanedDocument, gone)
    assert back is not None and back.duplicate_of == copy.id, "the copy cleaned first stays canonical"
    assert features.run().considered == 0 and features.index.chunk_ids(copy.id)


def test_a_raw_document_deleted_outright_is_removed_downstream(etl_store, features) -> None:
    posts = docs(2, "deleted")
    etl_store.upsert_raw_documents(posts)
    run_etl("run-1", store=etl_store)
    features.run()
    etl_store.delete_many(Collections.RAW_DOCUMENTS, [posts[0].id])
    etl = run_etl("run-2", store=etl_store)
    assert (etl.tombstoned, etl.removed_tombstoned) == (1, 1)
    assert etl_store.count(LEDGER, {"_id": posts[0].id}) == 0  # type: ignore[arg-type]
    assert features.run().removed == 1 and features.index.chunk_ids(posts[0].id) == set()
