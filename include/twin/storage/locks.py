"""A named lock held in the document store, so writers in different processes take turns.

One record per lock in `pipeline_state` (`_id` = "lock:<name>"); the unique `_id` makes taking it
atomic. A holder renews it while it works; a lock not renewed within its time to live belongs to a
process that died and is taken over, so a crash never wedges the pipeline.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from twin.models import utcnow
from twin.storage.documents import Collections, DocumentStore

log = logging.getLogger(__name__)


class LockBusyError(RuntimeError):
    """Another live holder kept the lock for longer than we were willing to wait."""


class StoreLock:
    def __init__(self, store: DocumentStore, name: str, *, ttl_s: float, purpose: str = "") -> None:
        self.store = store
        self.key = f"lock:{name}"
        self.ttl = timedelta(seconds=ttl_s)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.purpose = purpose
        self.waited_s = 0.0

    @property
    def _records(self) -> Any:
        return self.store.collection(Collections.PIPELINE_STATE)

    def holder(self) -> dict[str, Any] | None:
        return self._records.find_one({"_id": self.key})

    def try_acquire(self) -> bool:
        now = utcnow()
        try:
            # Matches only a free (missing) or stale lock; a live one makes the upsert collide on _id.
            self._records.update_one(
                {"_id": self.key, "expires_at": {"$lt": now}},
                {"$set": {"owner": self.owner, "purpose": self.purpose, "acquired_at": now,
                          "expires_at": now + self.ttl}},
                upsert=True)
        except DuplicateKeyError:
            return False
        return True

    def acquire(self, wait_s: float, poll_s: float = 0.2) -> None:
        started = time.monotonic()
        while not self.try_acquire():
            if time.monotonic() - started >= wait_s:
                held = self.holder() or {}
                raise LockBusyError(
                    f"{self.key} is held by {held.get('owner')} ({held.get('purpose') or 'unknown work'}) since "
                    f"{held.get('acquired_at')}, until {held.get('expires_at')} unless renewed; waited {wait_s:.0f}s "
                    "(TWIN_INDEX_LOCK_WAIT_S). Retry when it is done.")
            time.sleep(poll_s)
        self.waited_s = time.monotonic() - started
        if self.waited_s > poll_s:
            log.info("%s acquired after waiting %.1fs", self.key, self.waited_s)

    def renew(self) -> None:
        """Push the expiry forward; raises if the lock was taken over (we were too slow to renew)."""
        result = self._records.update_one({"_id": self.key, "owner": self.owner},
                                          {"$set": {"expires_at": utcnow() + self.ttl}})
        if result.matched_count != 1:
            raise LockBusyError(f"{self.key} was taken over by {(self.holder() or {}).get('owner')}: this run "
                                "did not renew it within TWIN_INDEX_LOCK_TTL_S and must stop")

    def release(self) -> None:
        self._records.delete_one({"_id": self.key, "owner": self.owner})

    @contextmanager
    def held(self, wait_s: float) -> Iterator[StoreLock]:
        self.acquire(wait_s)
        try:
            yield self
        finally:
            self.release()
