"""Deduplication with a natural key and a content hash.

At-least-once delivery means resends. Same key and same hash: a resend, skip it.
Same key and a new hash: a real update, apply it and keep the old hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Decision(Enum):
    INSERT = "insert"
    SKIP = "skip"
    UPDATE = "update"


@dataclass(frozen=True)
class Keyed:
    key: tuple[Any, ...]
    content_hash: str


def content_hash(row: dict[str, Any], business_columns: list[str]) -> str:
    """Hash only the columns that mean something; metadata like received_at would defeat dedup."""
    payload = json.dumps({c: row.get(c) for c in business_columns}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def decide(known: dict[tuple[Any, ...], str], incoming: Keyed) -> Decision:
    """What to do with one incoming row, given the hashes already stored by key."""
    stored = known.get(incoming.key)
    if stored is None:
        return Decision.INSERT
    return Decision.SKIP if stored == incoming.content_hash else Decision.UPDATE
