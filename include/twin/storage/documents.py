"""The DocumentStore: one adapter over pymongo for MongoDB and any MongoDB-protocol server.

The same code runs against a real MongoDB in production and the embedded server of the local stack.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel
from pymongo import ASCENDING, MongoClient, ReplaceOne, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database

from twin.masking import register_secret, url_passwords
from twin.models import (
    Author,
    CleanedDocument,
    CrawlRun,
    QuarantinedDocument,
    RawDocument,
    utcnow,
)

M = TypeVar("M", bound=BaseModel)


class Collections(StrEnum):
    AUTHORS = "authors"
    RAW_DOCUMENTS = "raw_documents"
    CRAWL_RUNS = "crawl_runs"
    CLEANED_DOCUMENTS = "cleaned_documents"
    QUARANTINE = "quarantine"
    PIPELINE_STATE = "pipeline_state"  # watermarks and other small per-pipeline state
    DATASET_GENERATIONS = "dataset_generations"  # cached generator replies of dataset builds


# Unique indexes make duplicates impossible even under concurrent writers.
UNIQUE_KEYS: dict[Collections, list[list[str]]] = {
    Collections.RAW_DOCUMENTS: [["url", "path"]],
}
LOOKUP_KEYS: dict[Collections, list[str]] = {
    Collections.RAW_DOCUMENTS: ["author_id", "updated_at"],
    Collections.CLEANED_DOCUMENTS: ["author_id", "content_hash", "cleaned_at"],
    Collections.QUARANTINE: ["etl_run_id"],
}

# Compound indexes holding every field a reconciliation scan reads (ETL: raw hashes against its
# ledger; features: cleaned hashes against its manifest), so MongoDB serves those scans from the
# index alone and incremental runs stay cheap as the corpus grows.
COVERING_KEYS: dict[Collections, dict[str, list[str]]] = {
    Collections.RAW_DOCUMENTS: {"by_id_hash_tombstone": ["_id", "content_hash", "tombstoned_at", "updated_at"]},
    Collections.CLEANED_DOCUMENTS: {"by_id_hash_dup": ["_id", "content_hash", "duplicate_of"]},
}


class WriteOutcome(StrEnum):
    INSERTED = "inserted"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass
class BulkWriteSummary:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


def to_mongo(model: BaseModel) -> dict[str, Any]:
    doc = model.model_dump(mode="python")
    doc["_id"] = doc.pop("id")
    return doc


def from_mongo(model: type[M], doc: Mapping[str, Any]) -> M:
    data = dict(doc)
    data["id"] = data.pop("_id")
    return model.model_validate(data)


class DocumentStore:
    def __init__(self, uri: str, database: str, *, timeout_ms: int = 5000) -> None:
        # The URI's password is masked from now on in our logs, tracebacks and Airflow task logs.
        register_secret(*url_passwords(uri))
        # pymongo reconnects by itself: each operation waits up to timeout_ms for a reachable server, and a
        # read or write cut by a dropped connection is retried once (retryable reads and writes).
        self.client: MongoClient = MongoClient(
            uri, serverSelectionTimeoutMS=timeout_ms, retryReads=True, retryWrites=True, tz_aware=True,
            uuidRepresentation="standard"
        )
        self.db: Database = self.client[database]

    @classmethod
    def from_settings(cls, settings: Any = None) -> DocumentStore:
        from twin.settings import get_settings

        settings = settings or get_settings()
        return cls(settings.resolved_mongodb_uri, settings.mongodb_database,
                   timeout_ms=int(settings.mongodb_server_wait_s * 1000))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> DocumentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ping(self) -> None:
        self.client.admin.command("ping")

    def collection(self, name: Collections | str) -> Collection:
        return self.db[str(name)]

    def ensure_indexes(self) -> None:
        for name, keys in UNIQUE_KEYS.items():
            for fields in keys:
                self.collection(name).create_index(
                    [(f, ASCENDING) for f in fields], unique=True, name="uniq_" + "_".join(fields)
                )
        for name, fields in LOOKUP_KEYS.items():
            for f in fields:
                self.collection(name).create_index([(f, ASCENDING)], name=f"by_{f}")
        for name, indexes in COVERING_KEYS.items():
            for index_name, fields in indexes.items():
                self.collection(name).create_index([(f, ASCENDING) for f in fields], name=index_name)

    # --- generic typed access -----------------------------------------------------------------
    def get(self, name: Collections, model: type[M], id_: str) -> M | None:
        doc = self.collection(name).find_one({"_id": id_})
        return from_mongo(model, doc) if doc else None

    def find(
        self,
        name: Collections,
        model: type[M],
        query: Mapping[str, Any] | None = None,
        *,
        sort: list[tuple[str, int]] | None = None,
        limit: int = 0,
    ) -> Iterator[M]:
        cursor = self.collection(name).find(dict(query or {}))
        if sort:
            cursor = cursor.sort(sort)
        if limit:
            cursor = cursor.limit(limit)
        for doc in cursor:
            yield from_mongo(model, doc)

    def count(self, name: Collections, query: Mapping[str, Any] | None = None) -> int:
        return self.collection(name).count_documents(dict(query or {}))

    def replace_many(self, name: Collections, models: Iterable[BaseModel]) -> int:
        """Upsert whole records by id in one bulk write; returns how many were written."""
        ops = [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in map(to_mongo, models)]
        if not ops:
            return 0
        result = self.collection(name).bulk_write(ops, ordered=False)
        return result.upserted_count + result.modified_count

    def delete_many(self, name: Collections, ids: Iterable[str]) -> int:
        ids = list(ids)
        if not ids:
            return 0
        return self.collection(name).delete_many({"_id": {"$in": ids}}).deleted_count

    # --- authors and raw documents ------------------------------------------------------------
    def upsert_author(self, author: Author) -> None:
        self.replace_many(Collections.AUTHORS, [author])

    def upsert_raw_documents(self, docs: Iterable[RawDocument]) -> dict[str, WriteOutcome]:
        """Idempotent upsert by (url, path): unchanged content is only touched (last_seen),
        changed content replaces the old one and keeps the previous hash."""
        docs = list(docs)
        if not docs:
            return {}
        existing = {
            d["_id"]: d
            for d in self.collection(Collections.RAW_DOCUMENTS).find(
                {"_id": {"$in": [d.id for d in docs]}},
                {"content_hash": 1, "first_seen": 1},
            )
        }
        now = utcnow()
        ops: list[UpdateOne | ReplaceOne] = []
        outcomes: dict[str, WriteOutcome] = {}
        for doc in docs:
            old = existing.get(doc.id)
            if old is not None and old["content_hash"] == doc.content_hash:
                ops.append(UpdateOne({"_id": doc.id}, {"$set": {"last_seen": now}}))
                outcomes[doc.id] = WriteOutcome.UNCHANGED
                continue
            record = doc.model_copy(
                update={
                    "first_seen": old["first_seen"] if old else now,
                    "last_seen": now,
                    "updated_at": now,
                    "previous_hash": old["content_hash"] if old else None,
                }
            )
            ops.append(ReplaceOne({"_id": doc.id}, to_mongo(record), upsert=True))
            outcomes[doc.id] = WriteOutcome.UPDATED if old else WriteOutcome.INSERTED
        self.collection(Collections.RAW_DOCUMENTS).bulk_write(ops, ordered=False)
        return outcomes

    def raw_documents_changed_since(self, since: datetime | None) -> Iterator[RawDocument]:
        query = {"updated_at": {"$gt": since}} if since else {}
        return self.find(Collections.RAW_DOCUMENTS, RawDocument, query, sort=[("updated_at", ASCENDING)])

    # --- crawl runs ---------------------------------------------------------------------------
    def save_crawl_run(self, run: CrawlRun) -> None:
        self.replace_many(Collections.CRAWL_RUNS, [run])

    def get_crawl_run(self, run_id: str) -> CrawlRun | None:
        return self.get(Collections.CRAWL_RUNS, CrawlRun, run_id)

    # --- cleaned documents and quarantine -----------------------------------------------------
    def upsert_cleaned(self, docs: Iterable[CleanedDocument]) -> int:
        return self.replace_many(Collections.CLEANED_DOCUMENTS, docs)

    def quarantine(self, docs: Iterable[QuarantinedDocument]) -> int:
        return self.replace_many(Collections.QUARANTINE, docs)

    # --- watermarks ---------------------------------------------------------------------------
    def get_watermark(self, pipeline: str) -> datetime | None:
        doc = self.collection(Collections.PIPELINE_STATE).find_one({"_id": pipeline})
        return doc.get("watermark") if doc else None

    def set_watermark(self, pipeline: str, value: datetime, **extra: Any) -> None:
        self.collection(Collections.PIPELINE_STATE).update_one(
            {"_id": pipeline}, {"$set": {"watermark": value, **extra}}, upsert=True
        )
