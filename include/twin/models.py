"""Typed domain models shared by every pipeline.

Traceability runs through ids: an answer cites chunks, a chunk names its cleaned document, a cleaned
document keeps its raw document's id, and a raw document names the crawl run that last wrote it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stable_id(*parts: str) -> str:
    """A deterministic id from its parts, so reruns address the same record."""
    return hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class DocumentKind(StrEnum):
    ARTICLE = "article"
    CODE = "code"
    POST = "post"


class SourceKind(StrEnum):
    ARTICLE = "article"  # any web page holding one article
    FEED = "feed"  # RSS / Atom: Medium, Substack, any blog
    REPOSITORY = "repository"  # a git repository (URL or local path)
    EXPORT = "export"  # a LinkedIn or X data export archive


class Author(Record):
    id: str
    name: str
    links: list[str] = Field(default_factory=list)


class RawDocument(Record):
    id: str  # stable_id(url, path)
    kind: DocumentKind
    source_kind: SourceKind
    url: str  # normalised
    path: str | None = None  # file path inside a repository; post id inside an export
    author_id: str
    author_name: str
    title: str | None = None
    content: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    published_at: datetime | None = None
    content_hash: str
    previous_hash: str | None = None
    first_seen: datetime = Field(default_factory=utcnow)
    last_seen: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)  # when content last changed
    crawl_run_id: str
    # Set when a complete crawl of its link no longer yields it (removed from its feed, repository or
    # export); cleared when it comes back. Downstream, a tombstone means "remove what you built from it".
    tombstoned_at: datetime | None = None
    tombstone_reason: str | None = None


class LinkStatus(StrEnum):
    STORED = "stored"  # at least one document new or changed
    UNCHANGED = "unchanged"
    FAILED = "failed"


class LinkOutcome(Record):
    link: str
    author_id: str
    status: LinkStatus
    reason: str | None = None
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0  # items inside the link (feed entries, repo files) that failed
    tombstoned: int = 0  # documents of earlier crawls that this complete crawl no longer yielded
    restored: int = 0  # tombstoned documents that came back
    failures: list[dict[str, str]] = Field(default_factory=list)  # [{"item": ..., "reason": ...}]


class CrawlRun(Record):
    id: str
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    outcomes: list[LinkOutcome] = Field(default_factory=list)
    error: str | None = None  # why the run could not start (e.g. a refused sources file)

    @property
    def changed(self) -> bool:
        return any(o.inserted or o.updated or o.tombstoned or o.restored for o in self.outcomes)


class CleaningStats(Record):
    """What cleaning removed from one document."""

    source_chars: int  # text cleaning started from (for HTML input: after extraction)
    cleaned_chars: int
    removed_chars: dict[str, int] = Field(default_factory=dict)  # rule -> characters removed
    loss_share: float = 0.0  # share of the text (non-whitespace characters) lost, URLs, emoji and PII aside


class CleanedDocument(Record):
    id: str  # same id as the raw document it came from
    raw_id: str
    kind: DocumentKind
    url: str
    path: str | None = None
    author_id: str
    author_name: str
    title: str | None = None
    content: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    published_at: datetime | None = None
    content_hash: str  # of the cleaned content
    raw_content_hash: str  # of the raw content it was cleaned from
    duplicate_of: str | None = None
    cleaned_at: datetime = Field(default_factory=utcnow)
    etl_run_id: str
    cleaning: CleaningStats | None = None  # None for documents cleaned before it was counted


class QuarantinedDocument(Record):
    id: str  # raw id
    raw_content_hash: str
    stage: str  # "raw" or "cleaned"
    failed_expectations: list[str]
    record: dict[str, Any]
    etl_run_id: str
    quarantined_at: datetime = Field(default_factory=utcnow)


class Chunk(Record):
    id: str  # stable_id(document_id, chunk_index, text hash)
    document_id: str
    chunk_index: int
    kind: DocumentKind
    author_id: str
    author_name: str
    url: str
    path: str | None = None
    title: str | None = None
    text: str
    token_count: int
    published_at: datetime | None = None
    document_hash: str  # cleaned content hash the chunk was cut from


class EmbeddedChunk(Chunk):
    embedding: list[float]


class SearchFilters(Record):
    author_ids: list[str] | None = None
    kinds: list[DocumentKind] | None = None
    published_after: datetime | None = None
    published_before: datetime | None = None

    def is_empty(self) -> bool:
        return not (self.author_ids or self.kinds or self.published_after or self.published_before)


class SearchHit(Record):
    chunk: Chunk
    score: float
    retriever: str  # "bm25", "vector", "hybrid", "rerank", ...
    ranks: dict[str, int] = Field(default_factory=dict)  # rank per retriever that found it
