"""Incremental feature runs are exact: late commits, model switches, failed writes, rebuilds racing runs."""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.fixtures.features import AUTHORS, corpus_documents, make_document
from twin.features.embedding import Embedder
from twin.features.pipeline import MANIFEST
from twin.models import DocumentKind, content_hash
from twin.storage.documents import Collections
from twin.storage.locks import LockBusyError, StoreLock


def _seed(store, docs) -> None:
    store.replace_many(Collections.AUTHORS, AUTHORS)
    store.upsert_cleaned(docs)


def test_a_document_committed_late_with_an_old_timestamp_is_still_indexed(feature_pipeline) -> None:
    store = feature_pipeline.store
    _seed(store, corpus_documents())
    first = feature_pipeline.run()
    assert first.watermark is not None
    # Cleaned (and stamped) before the run above advanced past it, committed only now.
    late = make_document("late", "ada", DocumentKind.POST, "Late", "Committed after the run had moved on.", 3,
                         cleaned_at=first.watermark - timedelta(hours=1))
    store.upsert_cleaned([late])
    report = feature_pipeline.run()
    assert (report.considered, report.indexed) == (1, 1)
    assert feature_pipeline.index.chunk_ids("late")


def test_switching_to_another_model_of_the_same_dimension_reembeds_everything(
        make_pipeline, lance_index, embedder, other_embedder) -> None:
    assert other_embedder.dimension == embedder.dimension and other_embedder.fingerprint != embedder.fingerprint
    docs = corpus_documents()
    first_pipeline = make_pipeline(lance_index, embedder)
    _seed(first_pipeline.store, docs)
    first = first_pipeline.run()

    switched = make_pipeline(lance_index, other_embedder)
    report = switched.run()
    assert (report.considered, report.indexed, report.chunks_written) == (len(docs), len(docs), first.chunks_written)
    assert lance_index.count() == first.chunks_written  # replaced, not added beside the old ones
    assert {d["fingerprint"] for d in switched.store.collection(MANIFEST).find()} == {switched.fingerprint}
    # Every stored vector is now the new model's: a chunk's own text under the new model finds it at 1.0.
    for doc in docs:
        chunk = switched.chunker.chunk(doc)[0]
        top = lance_index.search_vector(other_embedder.encode_query(chunk.text), 1, exact=True)[0]
        assert top.chunk.id == chunk.id and math.isclose(top.score, 1.0, abs_tol=1e-3)
    assert switched.run().considered == 0


class NaNForMarkedText(Embedder):
    """The packaged model, except that it yields NaN for texts with a marker (as a broken model can)."""

    marker = "Quarantined zebra"

    def encode(self, texts):
        return [[math.nan] * self.dimension if self.marker in t else v for t, v in zip(texts, super().encode(texts),
                                                                                       strict=True)]


def test_a_write_that_fails_part_way_leaves_the_old_chunks(make_pipeline, search_index, embedder) -> None:
    docs = corpus_documents()
    good = make_pipeline(search_index, embedder)
    _seed(good.store, docs)
    good.run()
    target = docs[0]
    old_ids = search_index.chunk_ids(target.id)
    text = " ".join(f"Sentence {i} tells of the difference engine and its printer." for i in range(30))
    text += f" {NaNForMarkedText.marker} stripes confuse the model."
    edited = target.model_copy(update={"content": text, "content_hash": content_hash(text)})
    good.store.upsert_cleaned([edited])

    broken = make_pipeline(search_index, NaNForMarkedText("packaged", batch_size=16))
    new_ids = {c.id for c in broken.chunker.chunk(edited)}
    assert len(new_ids) > 2, "the new version has several chunks, of which one fails"
    report = broken.run()
    assert "index write failed" in report.failures[target.id]
    assert search_index.chunk_ids(target.id) == old_ids, "old chunks kept, nothing of the half-written version"
    assert any("Jacquard" in h.chunk.text for h in search_index.search_bm25("Jacquard loom", 3))

    fixed = good.run()  # the failed document has a stale manifest entry: it is retried
    assert (fixed.indexed, fixed.failures) == (1, {})
    assert search_index.chunk_ids(target.id) == new_ids
    assert fixed.chunks_deleted == len(old_ids - new_ids)


def test_an_incremental_run_waits_for_a_rebuild_and_its_writes_survive_the_swap(make_pipeline, lance_index,
                                                                               embedder) -> None:
    docs = [make_document(f"doc-{n}", AUTHORS[n % 3].id, DocumentKind.ARTICLE, f"Doc {n}",
                          f"Document {n} discusses topic {n} at length. It has a second sentence about {n}.", n)
            for n in range(40)]
    rebuilder = make_pipeline(lance_index, embedder)
    rebuilder.batch_documents = 4  # many small batches: the rebuild takes a while
    _seed(rebuilder.store, docs)
    rebuilder.run()
    runner = make_pipeline(lance_index, embedder)
    outcome: dict[str, object] = {}
    thread = threading.Thread(target=lambda: outcome.update(rebuild=rebuilder.rebuild()))
    thread.start()
    deadline = time.monotonic() + 60
    while runner.lock("probe").holder() is None and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    # Written while the rebuild runs; the rebuild may or may not have read past it already.
    fresh = make_document("fresh", "ada", DocumentKind.POST, "Fresh", "Written during the rebuild of the index.", 90)
    runner.store.upsert_cleaned([fresh])
    report = runner.run()
    thread.join(60)
    assert "rebuild" in outcome
    assert report.lock_wait_s > 0, "the run overlapped the rebuild and waited for it"
    assert lance_index.chunk_ids("fresh"), "the run's writes are in the live index after the swap"
    assert lance_index.count() == sum(len(runner.chunker.chunk(d)) for d in [*docs, fresh])
    assert runner.run().considered == 0


def test_a_stale_lock_is_taken_over_and_a_live_one_makes_a_run_fail_clearly(make_pipeline, lance_index,
                                                                           embedder) -> None:
    pipeline = make_pipeline(lance_index, embedder, index_lock_wait_s=0.5)
    _seed(pipeline.store, corpus_documents())
    records = pipeline.store.collection(Collections.PIPELINE_STATE)
    live = StoreLock(pipeline.store, f"index:{lance_index.name}", ttl_s=60, purpose="another rebuild")
    assert live.try_acquire() and not StoreLock(pipeline.store, f"index:{lance_index.name}", ttl_s=60).try_acquire()
    with pytest.raises(LockBusyError, match="another rebuild"):
        pipeline.run()
    assert pipeline.store.count(MANIFEST) == 0  # type: ignore[arg-type]

    # The holder died: its lock expired without renewal.
    records.update_one({"_id": live.key}, {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}})
    report = pipeline.run()
    assert report.indexed == len(corpus_documents())
    assert records.find_one({"_id": live.key}) is None, "released after the run"
    with pytest.raises(LockBusyError, match="taken over"):
        live.renew()
