"""DocumentStore against a real MongoDB-protocol server (or MONGODB_URI when set)."""

import pytest
from pymongo.errors import DuplicateKeyError

from twin.models import (
    DocumentKind,
    RawDocument,
    SourceKind,
    content_hash,
    stable_id,
)
from twin.storage.documents import Collections, WriteOutcome


def raw(url: str, text: str, path: str | None = None) -> RawDocument:
    return RawDocument(
        id=stable_id(url, path or ""), kind=DocumentKind.ARTICLE, source_kind=SourceKind.ARTICLE,
        url=url, path=path, author_id="ada", author_name="Ada", content=text,
        content_hash=content_hash(text), crawl_run_id="run-1",
    )


def test_upsert_is_idempotent_and_keeps_previous_hash(document_store) -> None:
    first = raw("https://blog.test/a", "one")
    assert document_store.upsert_raw_documents([first]) == {first.id: WriteOutcome.INSERTED}
    assert document_store.upsert_raw_documents([first]) == {first.id: WriteOutcome.UNCHANGED}
    stored = document_store.get(Collections.RAW_DOCUMENTS, RawDocument, first.id)
    assert stored.content == "one" and stored.previous_hash is None

    changed = raw("https://blog.test/a", "two")
    assert document_store.upsert_raw_documents([changed]) == {first.id: WriteOutcome.UPDATED}
    stored = document_store.get(Collections.RAW_DOCUMENTS, RawDocument, first.id)
    assert stored.content == "two"
    assert stored.previous_hash == content_hash("one")
    assert stored.first_seen <= stored.updated_at
    assert document_store.count(Collections.RAW_DOCUMENTS) == 1


def test_unchanged_upsert_only_touches_last_seen(document_store) -> None:
    doc = raw("https://blog.test/b", "text")
    document_store.upsert_raw_documents([doc])
    before = document_store.get(Collections.RAW_DOCUMENTS, RawDocument, doc.id)
    document_store.upsert_raw_documents([doc])
    after = document_store.get(Collections.RAW_DOCUMENTS, RawDocument, doc.id)
    assert after.updated_at == before.updated_at
    assert after.last_seen >= before.last_seen


def test_unique_index_rejects_a_second_record_for_the_same_url_and_path(document_store) -> None:
    doc = raw("https://blog.test/c", "x", path="src/a.py")
    document_store.upsert_raw_documents([doc])
    clash = doc.model_dump(mode="python")
    clash["_id"] = "another-id"
    clash.pop("id")
    with pytest.raises(DuplicateKeyError):
        document_store.collection(Collections.RAW_DOCUMENTS).insert_one(clash)


def test_bulk_upsert_many_and_changed_since(document_store) -> None:
    docs = [raw(f"https://blog.test/{i}", f"text {i}") for i in range(50)]
    outcomes = document_store.upsert_raw_documents(docs)
    assert list(outcomes.values()).count(WriteOutcome.INSERTED) == 50
    newest = max(d.updated_at for d in document_store.raw_documents_changed_since(None))
    document_store.upsert_raw_documents([raw("https://blog.test/7", "edited")])
    changed = list(document_store.raw_documents_changed_since(newest))
    assert [d.url for d in changed] == ["https://blog.test/7"]


def test_watermarks_roundtrip(document_store) -> None:
    from twin.models import utcnow

    assert document_store.get_watermark("etl") is None
    now = utcnow()
    document_store.set_watermark("etl", now, run_id="r1")
    assert abs((document_store.get_watermark("etl") - now).total_seconds()) < 0.01
