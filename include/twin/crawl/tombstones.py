"""Tombstones: a document that a complete crawl of its link no longer yields is marked removed.

Each link keeps a manifest (collection `link_manifests`): the ids its last crawls yielded. After a
crawl that completed with no failed item, ids of the manifest missing from the crawl are
tombstoned (`tombstoned_at`, `tombstone_reason`, `updated_at` bumped so incremental readers see
it), unless another link still lists them. A crawl with failed items tombstones nothing (a feed
entry that failed to fetch is not a removed post) and only adds to the manifest; a failed crawl
never gets here. A feed shows only its latest entries, so a post older than every dated entry of
the feed has scrolled out of it, not been removed: it stays, and stays in the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from twin.crawl.sources import Link
from twin.models import RawDocument, SourceKind, stable_id, utcnow
from twin.storage.documents import Collections, DocumentStore

MANIFESTS = "link_manifests"


@dataclass
class Reconciled:
    tombstoned: int = 0
    restored: int = 0


def tombstoned_ids_among(store: DocumentStore, ids: list[str]) -> list[str]:
    """Ids of these documents that are tombstoned now (call before writing the new crawl)."""
    raw = store.collection(Collections.RAW_DOCUMENTS)
    return [d["_id"] for d in raw.find({"_id": {"$in": ids}, "tombstoned_at": {"$ne": None}}, {"_id": 1})]


def reconcile(store: DocumentStore, link: Link, documents: list[RawDocument], *, complete: bool,
              run_id: str, was_tombstoned: list[str]) -> Reconciled:
    """Restore documents that came back, tombstone those gone, and save the link's manifest."""
    raw = store.collection(Collections.RAW_DOCUMENTS)
    manifests = store.collection(MANIFESTS)
    key = stable_id("link", link.author_id, link.target)
    now = utcnow()
    current = {doc.id for doc in documents}
    previous = set((manifests.find_one({"_id": key}) or {}).get("document_ids", []))

    # Changed documents were replaced without a tombstone already; unchanged ones need clearing.
    if was_tombstoned:
        raw.update_many({"_id": {"$in": was_tombstoned}, "tombstoned_at": {"$ne": None}},
                        {"$set": {"tombstoned_at": None, "tombstone_reason": None, "updated_at": now}})

    gone = previous - current if complete else set()
    kept = _scrolled_out_of_feed(store, documents, gone) if gone else set()
    gone -= kept
    if gone:  # another link that still yields a document keeps it alive
        shared = manifests.find({"_id": {"$ne": key}, "document_ids": {"$in": sorted(gone)}}, {"document_ids": 1})
        gone -= {doc_id for m in shared for doc_id in m["document_ids"]}
    tombstoned = 0
    if gone:
        reason = f"no longer yielded by {link.target} (crawl run {run_id})"
        tombstoned = raw.update_many(
            {"_id": {"$in": sorted(gone)}, "tombstoned_at": None},
            {"$set": {"tombstoned_at": now, "tombstone_reason": reason, "updated_at": now, "crawl_run_id": run_id}},
        ).modified_count

    remembered = current | kept if complete else current | previous
    manifests.replace_one({"_id": key}, {"_id": key, "link": link.target, "author_id": link.author_id,
                                         "document_ids": sorted(remembered), "crawl_run_id": run_id,
                                         "complete": complete, "crawled_at": now}, upsert=True)
    return Reconciled(tombstoned=tombstoned, restored=len(was_tombstoned))


def _scrolled_out_of_feed(store: DocumentStore, documents: list[RawDocument], gone: set[str]) -> set[str]:
    """Feed posts dated before every dated entry the feed lists now: out of its window, not removed."""
    if not documents or any(d.source_kind != SourceKind.FEED for d in documents):
        return set()
    dates = [d.published_at for d in documents if d.published_at is not None]
    if not dates:
        return set()
    oldest: datetime = min(dates)
    raw = store.collection(Collections.RAW_DOCUMENTS)
    return {d["_id"] for d in raw.find({"_id": {"$in": sorted(gone)}, "published_at": {"$lt": oldest}}, {"_id": 1})}
