"""The ETL run: raw documents changed since the last successful run -> validated, cleaned,
de-duplicated documents in `cleaned_documents`; everything that fails a gate goes to `quarantine`.

Policies (see README):
- Incremental and race-free: a run processes every raw document whose content hash (or tombstone
  state) differs from what the ledger `etl_ledger` says the ETL last made of it, in `updated_at`
  order and batches of TWIN_ETL_BATCH_SIZE. The ledger is written after each batch's writes, so a
  failed run resumes where it stopped, and a document committed late (its `updated_at` stamped by
  the crawler before an earlier run passed it) is still found. Quarantined documents come back
  when their raw content changes, not on every run. Without a watermark in `pipeline_state` (first
  run, or reset by hand) every raw document is judged again.
- Tombstones: a raw document with `tombstoned_at` (gone from its source) or deleted outright loses
  its cleaned document, quarantine record and signature; the report counts them (`tombstoned`,
  `removed_tombstoned`) and the features run then drops its chunks.
- Near-duplicate signatures are read once per run and kept up to date in memory between batches.
- Idempotent: a record is written only when it differs from what is stored; a rerun writes nothing.
- Duplicates: an exact or near duplicate of another document (any source, same kind) is stored in
  `cleaned_documents` with `duplicate_of` naming the canonical document and is left out of the
  search index by the features pipeline. The canonical one is the one cleaned first, or within one
  batch the one published (then seen) first.
- The quality gate: when the share of quarantined documents in a batch of at least
  TWIN_QUARANTINE_MIN_BATCH documents is above TWIN_QUARANTINE_MAX_SHARE the run fails; the
  quarantine records are written (so the cause can be read) but no cleaned document of that batch
  changes and the watermark stays before it, so the batch is retried whole. A smaller batch (a daily
  run of two documents, one bad) cannot say much about the source: its failures are quarantined, the
  run goes on, and the report's `alerts` (and a warning in the log) name them.
- Cleaning is counted: characters removed per rule, per document (`cleaning` of the cleaned
  document) and per run (`cleaning_removed_chars`); a document that loses more than
  TWIN_CLEANING_MAX_LOSS_SHARE of its text fails the cleaned-documents suite and is quarantined.
- Every run's report is stored in `etl_runs` (also when the gate stops it), for the quality report.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from bson import Binary
from pydantic import BaseModel, Field, ValidationError
from pymongo import DeleteOne, ReplaceOne

from twin.etl.cleaning import clean_document, prose_outside_code
from twin.etl.dedup import DuplicateIndex, minhash, signature_bytes, signature_from_bytes
from twin.etl.validation import ValidationOutcome, validate_records
from twin.models import CleanedDocument, QuarantinedDocument, RawDocument, content_hash, utcnow
from twin.settings import Settings, get_settings
from twin.storage.documents import Collections, DocumentStore, to_mongo

log = logging.getLogger(__name__)

PIPELINE = "etl"
RAW_CHECKPOINT = "raw_documents"
CLEANED_CHECKPOINT = "cleaned_documents"
# MinHash signatures of canonical cleaned documents, so later runs find near duplicates of them
# without re-reading every cleaned text. Owned by the ETL.
SIGNATURES = "etl_signatures"
# What the ETL last made of each raw document: the raw content hash and whether it was a tombstone.
# Written after a batch's writes, so it is the ETL's race-free watermark (see RawCursor).
LEDGER = "etl_ledger"
VANISHED = "_vanished"  # marks the stand-in record of a raw document deleted outright
# One report per ETL run (id = run id): what `twin quality report` shows next to the Data Docs.
ETL_RUNS = "etl_runs"
# Failures named in one alert; the rest are counted.
_ALERT_NAMES = 10


class QualityGateError(RuntimeError):
    """Too many documents of a batch failed validation; the message says which and why."""


class EtlReport(BaseModel):
    run_id: str
    processed: int = 0  # raw documents looked at in this run
    cleaned: int = 0  # cleaned documents written (new or changed), duplicates included
    unchanged: int = 0  # cleaned the same as already stored
    exact_duplicates: int = 0  # in this batch, stored with duplicate_of
    near_duplicates: int = 0
    quarantined: int = 0  # documents of this batch that failed a gate
    quarantined_by_stage: dict[str, int] = Field(default_factory=dict)
    quarantine_written: int = 0
    removed_from_cleaned: int = 0  # old cleaned versions of documents that now fail
    tombstoned: int = 0  # raw documents tombstoned (gone from their source) or deleted, in this run
    removed_tombstoned: int = 0  # cleaned documents removed because their raw document was tombstoned
    released_from_quarantine: int = 0  # quarantined before, good now
    failed_share: float = 0.0
    expectation_failures: dict[str, int] = Field(default_factory=dict)
    validated: bool = False  # a checkpoint ran (so the Data Docs have a new result)
    cleaning_removed_chars: dict[str, int] = Field(default_factory=dict)  # rule -> characters removed
    cleaning_over_loss_limit: dict[str, float] = Field(default_factory=dict)  # id -> share lost (quarantined)
    alerts: list[str] = Field(default_factory=list)  # failures let through by the gate, named
    gate_error: str | None = None  # why the quality gate stopped the run
    watermark: datetime | None = None
    changed: bool = False  # cleaned_documents changed: downstream pipelines have work


@dataclass
class BatchPlan:
    report: EtlReport
    cleaned: list[CleanedDocument] = field(default_factory=list)
    quarantined: list[QuarantinedDocument] = field(default_factory=list)
    signatures: dict[str, bytes] = field(default_factory=dict)  # canonical documents of the batch
    batch_failures: list[str] = field(default_factory=list)
    tombstoned: list[dict[str, Any]] = field(default_factory=list)  # raw records to remove downstream
    raw_states: dict[Any, tuple[Any, bool]] = field(default_factory=dict)  # raw _id -> (content hash, tombstoned)


def run_etl(run_id: str | None = None, *, settings: Settings | None = None,
            store: DocumentStore | None = None) -> EtlReport:
    """Clean and validate every raw document changed since the last successful run."""
    settings = settings or get_settings()
    run_id = run_id or f"etl-{utcnow():%Y%m%dT%H%M%S%f}"
    own_store = store is None
    store = store or DocumentStore.from_settings(settings)
    try:
        store.ensure_indexes()
        # Finding the duplicates of a changed canonical document must not scan the collection.
        store.collection(Collections.CLEANED_DOCUMENTS).create_index("duplicate_of", name="by_duplicate_of")
        store.collection(LEDGER).create_index([("_id", 1), ("raw_content_hash", 1), ("tombstoned", 1)],
                                              name="by_id_hash_tombstone")
        return _run(store, run_id, settings)
    finally:
        if own_store:
            store.close()


def _run(store: DocumentStore, run_id: str, settings: Settings) -> EtlReport:
    total = EtlReport(run_id=run_id)
    cursor = load_cursor(store)
    total.watermark = cursor.watermark
    while raws := changed_raw_records(store, cursor, settings.etl_batch_size):
        cursor.advance(raws)
        raws += orphaned_duplicates(store, [str(r["_id"]) for r in raws])
        plan = plan_batch(raws, run_id, settings, store, canonical=cursor.canonical(store, settings))
        plan.report.quarantine_written = write_quarantine(store, plan.quarantined)
        try:
            check_quality_gate(plan, settings)
        except QualityGateError as exc:
            merge_reports(total, plan.report)
            total.gate_error = str(exc)
            save_run_report(store, total)
            raise
        apply_plan(store, plan)
        # Committed per batch: a later batch that fails does not undo the work of this one.
        store.set_watermark(PIPELINE, cursor.watermark, last_id=cursor.last_id, last_run_id=run_id,
                            last_run_at=utcnow())
        merge_reports(total, plan.report)
        log.info("ETL %s: batch of %d done, watermark %s", run_id, plan.report.processed, cursor.watermark)
        total.watermark = cursor.watermark
    log.info("ETL %s: %s", run_id, total.model_dump(exclude={"run_id"}))
    save_run_report(store, total)
    return total


def save_run_report(store: DocumentStore, report: EtlReport) -> None:
    store.collection(ETL_RUNS).replace_one(
        {"_id": report.run_id}, {"_id": report.run_id, **report.model_dump(exclude={"run_id"}), "saved_at": utcnow()},
        upsert=True)


@dataclass
class RawCursor:
    """The raw documents a run has to process, in (`updated_at`, id) order, and the run's in-memory
    near-duplicate index. Race-free: the pending set comes from reconciling content hashes with the
    ledger of what the ETL last made of each raw document, not from a timestamp, so a document whose
    write committed late (with an `updated_at` older than a watermark already passed) is still found."""

    pending: deque[Any]
    watermark: datetime | None = None  # newest `updated_at` processed: informational; None = judge all
    last_id: Any = None
    _canonical: DuplicateIndex | None = None

    def advance(self, raws: list[dict[str, Any]]) -> None:
        for raw in raws:
            key = (raw.get("updated_at"), raw.get("_id"))
            if isinstance(key[0], datetime) and (self.watermark is None or _order(key) > _order(
                    (self.watermark, self.last_id))):
                self.watermark, self.last_id = key

    def canonical(self, store: DocumentStore, settings: Settings) -> DuplicateIndex:
        """Signatures of canonical documents, read once per run; batches update it in memory."""
        if self._canonical is None:
            self._canonical = load_canonical_index(store, settings.near_duplicate_threshold, exclude=set())
        return self._canonical


def _order(key: tuple[Any, Any]) -> tuple[Any, str]:
    updated_at, doc_id = key
    return (updated_at if isinstance(updated_at, datetime) else datetime.min.replace(tzinfo=UTC), str(doc_id))


def load_cursor(store: DocumentStore) -> RawCursor:
    """What this run must process: every raw document whose (content_hash, tombstoned) differs from
    the ledger's record of it (or has none), and every ledger entry whose raw document was deleted.
    Without a watermark (first run, or state reset by hand) every raw document is judged again."""
    state = store.collection(Collections.PIPELINE_STATE).find_one({"_id": PIPELINE}) or {}
    watermark = state.get("watermark") if isinstance(state.get("watermark"), datetime) else None
    ledger = {d["_id"]: (d.get("raw_content_hash"), bool(d.get("tombstoned")))
              for d in store.collection(LEDGER).find({}, {"raw_content_hash": 1, "tombstoned": 1})}
    pending: list[tuple[Any, Any]] = []
    raws = store.collection(Collections.RAW_DOCUMENTS).find(
        {}, {"content_hash": 1, "tombstoned_at": 1, "updated_at": 1})
    for raw in raws:
        made = ledger.pop(raw["_id"], None)
        if watermark is None or made != (raw.get("content_hash"), raw.get("tombstoned_at") is not None):
            pending.append((raw.get("updated_at"), raw["_id"]))
    pending += [(None, doc_id) for doc_id in ledger]  # raw document deleted outright: remove what it made
    pending.sort(key=_order)
    return RawCursor(deque(doc_id for _, doc_id in pending), watermark, state.get("last_id"))


def changed_raw_records(store: DocumentStore, cursor: RawCursor, limit: int) -> list[dict[str, Any]]:
    """The next pending raw records, as stored (not parsed): a malformed record must reach the gate,
    not crash the run. A raw document deleted since the cursor was made comes back as a tombstone."""
    ids = [cursor.pending.popleft() for _ in range(min(limit, len(cursor.pending)))]
    if not ids:
        return []
    found = {r["_id"]: r for r in store.collection(Collections.RAW_DOCUMENTS).find({"_id": {"$in": ids}})}
    return [found.get(doc_id) or {"_id": doc_id, "tombstoned_at": utcnow(), VANISHED: True,
                                  "tombstone_reason": "deleted from raw_documents"} for doc_id in ids]


def merge_reports(total: EtlReport, batch: EtlReport) -> None:
    for name in ("processed", "cleaned", "unchanged", "exact_duplicates", "near_duplicates", "quarantined",
                 "quarantine_written", "removed_from_cleaned", "released_from_quarantine", "tombstoned",
                 "removed_tombstoned"):
        setattr(total, name, getattr(total, name) + getattr(batch, name))
    for name in ("quarantined_by_stage", "expectation_failures", "cleaning_removed_chars"):
        setattr(total, name, dict(Counter(getattr(total, name)) + Counter(getattr(batch, name))))
    total.cleaning_over_loss_limit |= batch.cleaning_over_loss_limit
    total.alerts += batch.alerts
    total.failed_share = round(total.quarantined / total.processed, 4) if total.processed else 0.0
    total.validated |= batch.validated
    total.changed |= batch.changed


def orphaned_duplicates(store: DocumentStore, batch_ids: list[str]) -> list[dict[str, Any]]:
    """Raw records of stored duplicates whose canonical document is in this batch: the canonical one
    may change or fail, so they are judged again with it."""
    if not batch_ids:
        return []
    ids = [d["_id"] for d in store.collection(Collections.CLEANED_DOCUMENTS).find(
        {"duplicate_of": {"$in": batch_ids}, "_id": {"$nin": batch_ids}}, {"_id": 1})]
    return list(store.collection(Collections.RAW_DOCUMENTS).find({"_id": {"$in": ids}})) if ids else []


# --- planning: validate, clean, validate, de-duplicate (reads only) ---------------------------------
def cleaned_suite_parameters(settings: Settings) -> dict[str, Any]:
    """The cleaned-documents suite's bounds that come from settings (its `$PARAMETER` placeholders)."""
    return {"cleaning_max_loss_share": settings.cleaning_max_loss_share}


def plan_batch(raws: list[dict[str, Any]], run_id: str, settings: Settings, store: DocumentStore,
               canonical: DuplicateIndex | None = None) -> BatchPlan:
    plan = BatchPlan(report=EtlReport(run_id=run_id, processed=len(raws)))
    canonical = canonical if canonical is not None else load_canonical_index(
        store, settings.near_duplicate_threshold, exclude=set())
    raws = take_tombstoned(raws, plan, canonical)
    raw_outcome = validate_records(RAW_CHECKPOINT, raw_frame(raws), settings=settings, run_name=run_id)
    candidates = _clean_valid(raws, raw_outcome, run_id, settings, plan)
    cleaned_outcome = validate_records(CLEANED_CHECKPOINT, cleaned_frame(candidates), settings=settings,
                                       run_name=run_id, parameters=cleaned_suite_parameters(settings))
    plan.report.validated = True
    plan.batch_failures = raw_outcome.batch_failures + cleaned_outcome.batch_failures
    good = []
    for doc in candidates:
        if doc.id in cleaned_outcome.row_failures:
            plan.quarantined.append(_quarantine(doc.id, doc.raw_content_hash, "cleaned",
                                                cleaned_outcome.row_failures[doc.id], doc.model_dump(), run_id))
        else:
            good.append(doc)
    _mark_duplicates(good, {str(r["_id"]): r for r in raws}, canonical, plan)
    _count(plan)
    _count_cleaning(candidates, settings, plan.report)
    return plan


def take_tombstoned(raws: list[dict[str, Any]], plan: BatchPlan, canonical: DuplicateIndex) -> list[dict[str, Any]]:
    """Set tombstoned raw records aside (their cleaned documents are removed, nothing is validated) and
    return the live ones. Every document of the batch leaves the canonical index: it is judged again."""
    canonical.discard(str(r["_id"]) for r in raws)
    live = []
    for raw in raws:
        tombstoned = raw.get("tombstoned_at") is not None
        if not raw.get(VANISHED):
            plan.raw_states[raw["_id"]] = (raw.get("content_hash"), tombstoned)  # the id as stored
        (plan.tombstoned if tombstoned else live).append(raw)
    plan.report.processed = len(live)
    plan.report.tombstoned = len(plan.tombstoned)
    return live


def raw_frame(raws: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for r in raws:
        content = r.get("content")
        rows.append({
            "id": str(r.get("_id")), "kind": r.get("kind"), "url": r.get("url"),
            "author_id": r.get("author_id"), "author_name": r.get("author_name"),
            "content_hash": r.get("content_hash"),
            "content_chars": len(content.strip()) if isinstance(content, str) else None,
        })
    return pd.DataFrame(rows, columns=["id", "kind", "url", "author_id", "author_name", "content_hash",
                                       "content_chars"])


def cleaned_frame(docs: Iterable[CleanedDocument]) -> pd.DataFrame:
    rows = [{"id": d.id, "kind": str(d.kind), "content": d.content, "content_chars": len(d.content),
             "prose": prose_outside_code(d.content),
             "cleaning_loss_share": d.cleaning.loss_share if d.cleaning else 0.0} for d in docs]
    return pd.DataFrame(rows, columns=["id", "kind", "content", "content_chars", "prose", "cleaning_loss_share"])


def _count_cleaning(candidates: list[CleanedDocument], settings: Settings, report: EtlReport) -> None:
    removed: Counter[str] = Counter()
    for doc in candidates:
        if doc.cleaning:
            removed.update(doc.cleaning.removed_chars)
            if doc.cleaning.loss_share > settings.cleaning_max_loss_share:
                report.cleaning_over_loss_limit[doc.id] = doc.cleaning.loss_share
    report.cleaning_removed_chars = dict(sorted(removed.items()))
    if report.cleaning_over_loss_limit:
        log.warning("ETL %s: cleaning would remove more than TWIN_CLEANING_MAX_LOSS_SHARE=%.0f%% of %d document(s), "
                    "quarantined: %s", report.run_id, settings.cleaning_max_loss_share * 100,
                    len(report.cleaning_over_loss_limit), report.cleaning_over_loss_limit)


def _clean_valid(raws: list[dict[str, Any]], outcome: ValidationOutcome, run_id: str, settings: Settings,
                 plan: BatchPlan) -> list[CleanedDocument]:
    cleaned = []
    for record in raws:
        raw_id = str(record.get("_id"))
        raw_hash = str(record.get("content_hash") or content_hash(str(record.get("content") or "")))
        failures = outcome.row_failures.get(raw_id)
        if failures is None:
            try:
                raw = RawDocument.model_validate({**record, "id": raw_id})
                cleaned.append(clean_document(raw, run_id, scrub=settings.scrub_pii))
                continue
            except ValidationError as exc:
                failures = [f"raw_document_model({', '.join(str(e['loc'][0]) for e in exc.errors())})"]
            except Exception as exc:  # a cleaner bug must cost one document, not the batch
                log.exception("cleaning %s failed", raw_id)
                failures = [f"cleaning_error({type(exc).__name__}: {exc})"]
        plan.quarantined.append(_quarantine(raw_id, raw_hash, "raw", failures, record, run_id))
    return cleaned


def _quarantine(doc_id: str, raw_hash: str, stage: str, failures: list[str], record: Mapping[str, Any],
                run_id: str) -> QuarantinedDocument:
    body = {k: v for k, v in record.items() if k != "_id"}
    return QuarantinedDocument(id=doc_id, raw_content_hash=raw_hash, stage=stage,
                               failed_expectations=sorted(failures), record=body, etl_run_id=run_id)


def _mark_duplicates(docs: list[CleanedDocument], raws: Mapping[str, Mapping[str, Any]], index: DuplicateIndex,
                     plan: BatchPlan) -> None:
    for doc in sorted(docs, key=lambda d: _canonical_order(d, raws[d.id])):
        signature = minhash(doc.content)
        match = index.find(str(doc.kind), doc.content_hash, signature)
        if match is None:
            index.add(doc.id, str(doc.kind), doc.content_hash, signature)
            plan.signatures[doc.id] = signature_bytes(signature)
        else:
            doc.duplicate_of = match.of
            doc.metadata = {**doc.metadata, "duplicate": {"kind": str(match.kind), "similarity": match.similarity}}
        plan.cleaned.append(doc)


def _canonical_order(doc: CleanedDocument, raw: Mapping[str, Any]) -> tuple[Any, ...]:
    far = datetime.max.replace(tzinfo=UTC)
    first_seen = raw.get("first_seen") if isinstance(raw.get("first_seen"), datetime) else far
    return (doc.published_at or far, first_seen, doc.id)


def load_canonical_index(store: DocumentStore, threshold: float, *, exclude: set[str]) -> DuplicateIndex:
    index = DuplicateIndex(threshold)
    for sig in store.collection(SIGNATURES).find({"_id": {"$nin": sorted(exclude)}}).sort("_id", 1):
        index.add(sig["_id"], sig["kind"], sig["content_hash"], signature_from_bytes(bytes(sig["minhash"])))
    return index


def _count(plan: BatchPlan) -> None:
    report = plan.report
    report.quarantined = len(plan.quarantined)
    report.quarantined_by_stage = dict(Counter(q.stage for q in plan.quarantined))
    report.failed_share = round(report.quarantined / report.processed, 4) if report.processed else 0.0
    failures: Counter[str] = Counter()
    for q in plan.quarantined:
        failures.update(q.failed_expectations)
    report.expectation_failures = dict(failures.most_common())
    for doc in plan.cleaned:
        if doc.duplicate_of:
            kind = doc.metadata["duplicate"]["kind"]
            report.exact_duplicates += kind == "exact"
            report.near_duplicates += kind == "near"


# --- the gate ------------------------------------------------------------------------------------
def check_quality_gate(plan: BatchPlan, settings: Settings) -> None:
    """Stop the run when too large a share of a batch failed; a batch below TWIN_QUARANTINE_MIN_BATCH
    is too small to judge a share by: its failures stay quarantined and are reported as an alert."""
    report = plan.report
    problems = []
    if report.failed_share > settings.quarantine_max_share:
        top = ", ".join(f"{name}: {n}" for name, n in list(report.expectation_failures.items())[:5])
        share = (f"{report.quarantined} of {report.processed} documents ({report.failed_share:.1%}) failed validation, "
                 f"above TWIN_QUARANTINE_MAX_SHARE={settings.quarantine_max_share:.1%}")
        if report.processed >= settings.quarantine_min_batch:
            problems.append(f"{share}; failed expectations: {top}")
        else:
            alert = (f"ETL run {report.run_id}: {share} in a batch smaller than TWIN_QUARANTINE_MIN_BATCH="
                     f"{settings.quarantine_min_batch}, so the run goes on; quarantined: {_name_failures(plan)}")
            report.alerts.append(alert)
            log.warning(alert)
    problems += [f"batch-level expectation failed: {failure}" for failure in plan.batch_failures]
    if problems:
        raise QualityGateError(
            f"ETL run {report.run_id} stopped by the quality gate: " + "; ".join(problems)
            + f". The failing records are in the 'quarantine' collection (etl_run_id={report.run_id}) and in the "
            "data-quality report (`twin quality report`); this batch changed no cleaned document and the "
            "watermark stays before it."
        )


def _name_failures(plan: BatchPlan) -> str:
    named = [f"{q.id} ({q.record.get('url') or '?'}): {', '.join(q.failed_expectations)}"
             for q in plan.quarantined[:_ALERT_NAMES]]
    more = len(plan.quarantined) - len(named)
    return "; ".join(named) + (f"; and {more} more (see the 'quarantine' collection)" if more > 0 else "")


# --- writing -------------------------------------------------------------------------------------
def write_quarantine(store: DocumentStore, records: list[QuarantinedDocument]) -> int:
    """Store quarantine records, skipping ones already there for the same content and failures."""
    if not records:
        return 0
    stored = {d["_id"]: d for d in store.collection(Collections.QUARANTINE).find(
        {"_id": {"$in": [q.id for q in records]}}, {"raw_content_hash": 1, "stage": 1, "failed_expectations": 1})}
    fresh = [q for q in records if _quarantine_key(stored.get(q.id)) != _quarantine_key(to_mongo(q))]
    return store.quarantine(fresh)


def _quarantine_key(doc: Mapping[str, Any] | None) -> tuple[Any, ...] | None:
    return None if doc is None else (doc["raw_content_hash"], doc["stage"], list(doc["failed_expectations"]))


def _cleaned_key(doc: Mapping[str, Any] | None) -> tuple[Any, ...] | None:
    return None if doc is None else (doc["content_hash"], doc["raw_content_hash"], doc.get("duplicate_of"),
                                     doc.get("title"))


def apply_plan(store: DocumentStore, plan: BatchPlan) -> None:
    report = plan.report
    cleaned_ids = [d.id for d in plan.cleaned]
    quarantined_ids = [q.id for q in plan.quarantined]
    stored = {d["_id"]: d for d in store.collection(Collections.CLEANED_DOCUMENTS).find(
        {"_id": {"$in": cleaned_ids}}, {"content_hash": 1, "raw_content_hash": 1, "duplicate_of": 1, "title": 1})}
    fresh = [d for d in plan.cleaned if _cleaned_key(stored.get(d.id)) != _cleaned_key(to_mongo(d))]
    report.cleaned = store.upsert_cleaned(fresh)
    report.unchanged = len(plan.cleaned) - len(fresh)
    # A document that now fails must not linger in its old cleaned form.
    report.removed_from_cleaned = store.delete_many(Collections.CLEANED_DOCUMENTS, quarantined_ids)
    report.released_from_quarantine = store.delete_many(Collections.QUARANTINE, cleaned_ids)
    # A tombstoned document (gone from its source) loses what the ETL made of it; features then
    # drops its chunks, as its cleaned document is gone.
    tombstoned_ids = [str(r["_id"]) for r in plan.tombstoned]
    report.removed_tombstoned = store.delete_many(Collections.CLEANED_DOCUMENTS, tombstoned_ids)
    store.delete_many(Collections.QUARANTINE, tombstoned_ids)
    _write_signatures(store, plan, cleaned_ids + quarantined_ids + tombstoned_ids)
    _write_ledger(store, plan)
    report.changed = bool(report.cleaned or report.removed_from_cleaned or report.removed_tombstoned)
    for raw in plan.tombstoned:
        log.info("ETL %s: %s tombstoned (%s): its cleaned document is removed", report.run_id, raw["_id"],
                 raw.get("tombstone_reason") or "no longer at its source")


def _write_ledger(store: DocumentStore, plan: BatchPlan) -> None:
    """Last write of a batch: only what was committed is marked done, so a crash means a redo."""
    ledger = store.collection(LEDGER)
    now = utcnow()
    ops: list[ReplaceOne | DeleteOne] = [
        ReplaceOne({"_id": raw_id}, {"_id": raw_id, "raw_content_hash": raw_hash, "tombstoned": tombstoned,
                                     "etl_run_id": plan.report.run_id, "at": now}, upsert=True)
        for raw_id, (raw_hash, tombstoned) in plan.raw_states.items()]
    ops += [DeleteOne({"_id": r["_id"]}) for r in plan.tombstoned if r.get(VANISHED)]
    if ops:
        ledger.bulk_write(ops, ordered=False)


def _write_signatures(store: DocumentStore, plan: BatchPlan, batch_ids: list[str]) -> None:
    signatures = store.collection(SIGNATURES)
    stale = [i for i in batch_ids if i not in plan.signatures]
    if stale:
        signatures.delete_many({"_id": {"$in": stale}})
    by_id = {d.id: d for d in plan.cleaned}
    stored = {d["_id"]: d["content_hash"] for d in signatures.find(
        {"_id": {"$in": list(plan.signatures)}}, {"content_hash": 1})}
    ops = [ReplaceOne({"_id": doc_id}, {"_id": doc_id, "kind": str(by_id[doc_id].kind),
                                        "content_hash": by_id[doc_id].content_hash, "minhash": Binary(data)},
                      upsert=True)
           for doc_id, data in plan.signatures.items() if stored.get(doc_id) != by_id[doc_id].content_hash]
    if ops:
        signatures.bulk_write(ops, ordered=False)
