"""Canary state in the document store: per-author canary configs, served requests and feedback.

The serving ingress reads the config and records every request and rating here; the `canary` DAG and
`twin model canary status` read the records back to compare champion and challenger.
"""

from __future__ import annotations

import hashlib
import random
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, field_validator
from pymongo import ASCENDING
from pymongo.database import Database

from twin.models import utcnow

if TYPE_CHECKING:
    from twin.settings import Settings

Role = Literal["champion", "challenger"]

CONFIG_COLLECTION = "canary_config"
REQUESTS_COLLECTION = "served_requests"
FEEDBACK_COLLECTION = "feedback"


class CanaryConfig(BaseModel):
    """One per author (`_id` = author): which version is the challenger and how much traffic it gets."""

    author: str
    challenger_version: str | None = None  # registered model version number, as a string
    share: float = Field(0.0, ge=0.0, le=1.0)  # share of traffic sent to the challenger
    sticky: bool = True  # same client key -> same role while the config is unchanged
    updated_at: datetime = Field(default_factory=utcnow)
    updated_by: str = ""

    @property
    def active(self) -> bool:
        return self.challenger_version is not None and self.share > 0


class ServedRequest(BaseModel):
    """One answered (or failed) request, `_id` = trace_id."""

    trace_id: str
    author: str
    version: str
    role: Role
    endpoint: str  # "/v1/ask" | "/v1/chat/completions"
    latency_ms: float
    status_code: int
    error: str | None = None
    client_key: str | None = None  # a hash of the API key / X-Client-Key, never the raw key
    at: datetime = Field(default_factory=utcnow)

    @property
    def failed(self) -> bool:
        return self.status_code >= 500 or self.error is not None


class Feedback(BaseModel):
    trace_id: str
    author: str
    version: str
    rating: int  # +1 / -1
    comment: str = ""
    at: datetime = Field(default_factory=utcnow)

    @field_validator("rating")
    @classmethod
    def _plus_or_minus_one(cls, value: int) -> int:
        if value not in (1, -1):
            raise ValueError(f"rating must be +1 or -1, got {value}")
        return value


class UnknownTraceError(KeyError):
    """Feedback names a trace id no served request has."""


class CanaryStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.configs = db[CONFIG_COLLECTION]
        self.served = db[REQUESTS_COLLECTION]
        self.ratings = db[FEEDBACK_COLLECTION]
        # The comparisons read one author's records in time order; the index keeps that cheap.
        self.served.create_index([("author", ASCENDING), ("at", ASCENDING)])
        self.ratings.create_index([("author", ASCENDING), ("at", ASCENDING)])

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> CanaryStore:
        from twin.storage.documents import DocumentStore

        return cls(DocumentStore.from_settings(settings).db)

    # --- config ----------------------------------------------------------------------------
    def config(self, author: str) -> CanaryConfig:
        doc = self.configs.find_one({"_id": author})
        if doc is None:
            return CanaryConfig(author=author)
        doc.pop("_id")
        return CanaryConfig.model_validate(doc)

    def set_config(self, config: CanaryConfig) -> None:
        doc = config.model_dump(mode="python")
        self.configs.replace_one({"_id": config.author}, {"_id": config.author, **doc}, upsert=True)

    def authors_with_canary(self) -> list[str]:
        """Authors whose canary currently sends traffic to a challenger."""
        cursor = self.configs.find({"challenger_version": {"$ne": None}, "share": {"$gt": 0}}, {"_id": 1})
        return sorted(doc["_id"] for doc in cursor)

    # --- records ---------------------------------------------------------------------------
    def record_request(self, request: ServedRequest) -> None:
        """Idempotent on trace_id: a retried recording of the same request changes nothing."""
        doc = request.model_dump(mode="python")
        self.served.update_one({"_id": request.trace_id}, {"$setOnInsert": doc}, upsert=True)

    def record_feedback(self, trace_id: str, rating: int, comment: str = "") -> Feedback:
        served = self.served.find_one({"_id": trace_id}, {"author": 1, "version": 1})
        if served is None:
            raise UnknownTraceError(trace_id)
        feedback = Feedback(trace_id=trace_id, author=served["author"], version=served["version"],
                            rating=rating, comment=comment)
        self.ratings.insert_one(feedback.model_dump(mode="python"))
        return feedback

    def requests(self, author: str, since: datetime | None = None) -> list[ServedRequest]:
        docs = self.served.find(_query(author, since)).sort("at", ASCENDING)
        return [ServedRequest.model_validate(_without_id(doc)) for doc in docs]

    def feedback(self, author: str, since: datetime | None = None) -> list[Feedback]:
        docs = self.ratings.find(_query(author, since)).sort("at", ASCENDING)
        return [Feedback.model_validate(_without_id(doc)) for doc in docs]


def _query(author: str, since: datetime | None) -> dict[str, Any]:
    query: dict[str, Any] = {"author": author}
    if since is not None:
        query["at"] = {"$gte": since}
    return query


def _without_id(doc: dict[str, Any]) -> dict[str, Any]:
    doc.pop("_id", None)
    return doc


def _unit_interval(text: str) -> float:
    """A deterministic number in [0, 1) from a string (first 8 bytes of its sha256)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def choose_role(config: CanaryConfig, client_key: str | None, rng: random.Random | None = None) -> Role:
    """Champion or challenger for one request: the challenger with probability `share`.

    Sticky routing hashes the client key with the challenger version, so a client keeps its role while
    the config names the same challenger, and a new challenger reshuffles clients.
    """
    if not config.active:
        return "champion"
    if config.sticky and client_key:
        draw = _unit_interval(f"{client_key}{config.challenger_version}")
    else:
        draw = (rng or random).random()
    return "challenger" if draw < config.share else "champion"
