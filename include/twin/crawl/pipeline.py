"""What the `crawl` DAG and the CLI call: load links, plan batches, crawl links, record the run.

Data moves through MongoDB; only small link descriptions and outcomes travel between tasks. Airflow
maps at most 1024 tasks, so the DAG maps over batches of links (those of one host together, so one
task is polite to one host), and each link's outcome is recorded exactly as for a single link.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pymongo.errors import BulkWriteError

from twin.crawl.base import CrawlContext, CrawlerRegistry
from twin.crawl.errors import CrawlError, SourcesError
from twin.crawl.fetch import Fetcher
from twin.crawl.sources import Link, links_as_dicts, load_sources
from twin.crawl.tombstones import reconcile, tombstoned_ids_among
from twin.crawl.urls import host_of
from twin.models import CrawlRun, LinkOutcome, LinkStatus, RawDocument, stable_id, utcnow
from twin.settings import Settings, get_settings
from twin.storage.documents import DocumentStore, WriteOutcome

log = logging.getLogger(__name__)

DUPLICATE_KEY = 11000  # MongoDB error code
MAX_MAPPED_TASKS = 1024  # Airflow's default max_map_length
LINK_OUTCOMES = "crawl_link_outcomes"  # outcomes of finished links, so a retried batch skips them


def crawl_run_id_for(airflow_run_id: str) -> str:
    """Retries of one DAG run reuse its crawl-run id, so they update one record."""
    return f"airflow:{airflow_run_id}"


def new_run_id(prefix: str = "cli") -> str:
    return f"{prefix}:{utcnow():%Y%m%dT%H%M%SZ}:{uuid.uuid4().hex[:6]}"


def allowed_sources_file(value: str | Path, settings: Settings) -> Path:
    """A sources file named by a DAG run's parameter, accepted only inside the configured folders:
    a run's conf must not make the crawler read (and clone, and upload) any local path."""
    path = Path(value).expanduser().resolve()
    folders = [settings.sources_file.parent, *(Path(f.strip()).expanduser().resolve()
                                               for f in settings.crawl_sources_dirs.split(",") if f.strip())]
    if not any(path.is_relative_to(folder) for folder in folders):
        raise SourcesError(f"sources file {path} refused: a crawl run may read sources files only inside "
                           f"{', '.join(map(str, folders))} (the folder of TWIN_SOURCES_FILE and "
                           "TWIN_CRAWL_SOURCES_DIRS)")
    return path


def load_links(run_id: str, sources_file: Path | None = None, settings: Settings | None = None, *,
               from_parameter: bool = False) -> list[dict]:
    """Read the sources file, save its authors, open the crawl-run record; return the links.

    A sources file that cannot be read (or is refused) is recorded on the crawl run, then raised."""
    settings = settings or get_settings()
    try:
        if from_parameter and sources_file is not None:
            sources_file = allowed_sources_file(sources_file, settings)
        authors, links = load_sources(sources_file or settings.sources_file)
    except SourcesError as exc:
        with DocumentStore.from_settings(settings) as store:
            store.save_crawl_run(CrawlRun(id=run_id, finished_at=utcnow(), error=str(exc)))
        raise
    with DocumentStore.from_settings(settings) as store:
        store.ensure_indexes()
        for author in authors:
            store.upsert_author(author)
        if store.get_crawl_run(run_id) is None:
            store.save_crawl_run(CrawlRun(id=run_id))
    log.info("crawl run %s: %d links of %d authors", run_id, len(links), len(authors))
    return links_as_dicts(links)


def crawl_link(link: Link | Mapping[str, Any], run_id: str, *, final_attempt: bool = True,
               settings: Settings | None = None, registry: CrawlerRegistry | None = None) -> dict[str, Any]:
    """Crawl one link and upsert its documents; return its outcome as a plain dict.

    Transient failures (timeouts, 5xx) are raised while attempts remain, so the caller (Airflow)
    can retry; on the final attempt every failure becomes a recorded "failed" outcome instead.
    """
    settings = settings or get_settings()
    link = link if isinstance(link, Link) else Link.model_validate(dict(link))
    if registry is None:
        from twin.crawl.registry import default_registry as registry
    try:
        crawler = registry.crawler_for(link)
        with Fetcher(settings) as fetcher:
            result = crawler.crawl(link, CrawlContext(settings=settings, fetcher=fetcher, run_id=run_id))
        if not result.documents:
            raise CrawlError("no documents found" + (f"; {len(result.failures)} items failed"
                                                     if result.failures else ""))
    except CrawlError as exc:
        if exc.retryable and not final_attempt:
            raise
        return _failed(link, exc.reason).model_dump(mode="json")
    except Exception as exc:  # a bug or hostile input must not cost the other links their run
        if not final_attempt:
            raise
        log.exception("crawler crashed on %s", link.target)
        return _failed(link, f"crawler error: {type(exc).__name__}: {exc}").model_dump(mode="json")
    unique = list({doc.id: doc for doc in result.documents}.values())  # a feed may list an entry twice
    with DocumentStore.from_settings(settings) as store:
        was_tombstoned = tombstoned_ids_among(store, [doc.id for doc in unique])
        writes = _upsert(store, unique)
        reconciled = reconcile(store, link, unique, complete=not result.failures, run_id=run_id,
                               was_tombstoned=was_tombstoned)
    outcome = summarise(link, list(writes.values()), result.failures, tombstoned=reconciled.tombstoned,
                        restored=reconciled.restored)
    log.info("%s: %s (inserted %d, updated %d, unchanged %d, tombstoned %d, restored %d, failed items %d)",
             link.target, outcome.status, outcome.inserted, outcome.updated, outcome.unchanged,
             outcome.tombstoned, outcome.restored, outcome.failed)
    for failure in result.failures:
        log.warning("%s: item %s failed: %s", link.target, failure["item"], failure["reason"])
    return outcome.model_dump(mode="json")


def _upsert(store: DocumentStore, unique: list[RawDocument]) -> dict[str, WriteOutcome]:
    try:
        return store.upsert_raw_documents(unique)
    except BulkWriteError as exc:
        # Two tasks inserting the same new page at once: one wins the unique index; the other,
        # retried, now sees the page and compares hashes like any rerun.
        if not all(err.get("code") == DUPLICATE_KEY for err in exc.details.get("writeErrors", [])):
            raise
        return store.upsert_raw_documents(unique)


def _failed(link: Link, reason: str) -> LinkOutcome:
    log.warning("link %s failed: %s", link.target, reason)
    return LinkOutcome(link=link.target, author_id=link.author_id, status=LinkStatus.FAILED, reason=reason)


def summarise(link: Link, writes: list[WriteOutcome], failures: list[dict[str, str]], *, tombstoned: int = 0,
              restored: int = 0) -> LinkOutcome:
    counts = {w: writes.count(w) for w in WriteOutcome}
    if not writes:
        reason = "no documents found" + (f"; {len(failures)} items failed" if failures else "")
        status, reason_or_none = LinkStatus.FAILED, reason
    elif counts[WriteOutcome.INSERTED] or counts[WriteOutcome.UPDATED] or tombstoned or restored:
        status, reason_or_none = LinkStatus.STORED, None
    else:
        status, reason_or_none = LinkStatus.UNCHANGED, None
    return LinkOutcome(
        link=link.target, author_id=link.author_id, status=status, reason=reason_or_none,
        inserted=counts[WriteOutcome.INSERTED], updated=counts[WriteOutcome.UPDATED],
        unchanged=counts[WriteOutcome.UNCHANGED], failed=len(failures), failures=failures,
        tombstoned=tombstoned, restored=restored,
    )


def plan_batches(links: list[Mapping[str, Any]], batch_links: int,
                 max_batches: int = MAX_MAPPED_TASKS) -> list[list[dict[str, Any]]]:
    """Cut the links into at most `max_batches` batches of about `batch_links` links.

    Links of one host are consecutive, so a batch holds few hosts and two tasks rarely wait on
    one host's rate limit; many one-link hosts share a batch. When the links need more batches than
    Airflow may map, batches grow instead."""
    size = max(batch_links, math.ceil(len(links) / max_batches))
    by_host = sorted((dict(link) for link in links), key=lambda d: (_host_key(d), d.get("url") or d.get("path")))
    batches: list[list[dict[str, Any]]] = []
    for link in by_host:
        if not batches or len(batches[-1]) >= size:
            batches.append([])
        batches[-1].append(link)
    return batches


def _host_key(link: Mapping[str, Any]) -> str:
    return host_of(link["url"]) if link.get("url") else "(local)"


def crawl_batch(batch: list[Mapping[str, Any]], run_id: str, *, final_attempt: bool = True,
                settings: Settings | None = None) -> list[dict[str, Any]]:
    """Crawl a batch of links, one outcome each, like `crawl_link`.

    Each finished link's outcome is saved at once; a retry of the batch reuses those outcomes and
    crawls only the rest, so what the first try stored is still counted (and a task that runs
    past its timeout keeps the outcomes of the links it finished). Transient failures are raised
    for the whole batch, after the other links, while attempts remain."""
    settings = settings or get_settings()
    links = [link if isinstance(link, Link) else Link.model_validate(dict(link)) for link in batch]
    keys = {_outcome_key(run_id, link): link for link in links}
    with DocumentStore.from_settings(settings) as store:
        done = {d["_id"]: d["outcome"] for d in store.collection(LINK_OUTCOMES).find({"_id": {"$in": list(keys)}})}
    outcomes: list[dict[str, Any]] = []
    transient: list[str] = []
    for key, link in keys.items():
        if key in done:
            outcomes.append(done[key])
            continue
        try:
            outcome = crawl_link(link, run_id, final_attempt=final_attempt, settings=settings)
        except Exception as exc:  # raised only while attempts remain
            transient.append(f"{link.target}: {getattr(exc, 'reason', exc)}")
            continue
        with DocumentStore.from_settings(settings) as store:
            store.collection(LINK_OUTCOMES).replace_one(
                {"_id": key}, {"_id": key, "run_id": run_id, "outcome": outcome, "saved_at": utcnow()}, upsert=True)
        outcomes.append(outcome)
    if transient:
        raise CrawlError(f"{len(transient)} of {len(links)} links hit transient errors (the rest are saved): "
                         + "; ".join(transient), retryable=True)
    return outcomes


def _outcome_key(run_id: str, link: Link) -> str:
    return stable_id(run_id, link.author_id, link.target)


def finish_run(run_id: str, links: Iterable[Mapping[str, Any]], outcomes: Iterable[Mapping[str, Any] | None],
               settings: Settings | None = None) -> bool:
    """Save the crawl run with one outcome per link; True when any document was new or changed.

    A link without an outcome (its task crashed outright) is recorded as failed, never dropped.
    """
    settings = settings or get_settings()
    recorded = [LinkOutcome.model_validate(dict(o)) for o in outcomes if o]
    seen = {(o.link, o.author_id) for o in recorded}
    with DocumentStore.from_settings(settings) as store:
        for raw in links:
            link = Link.model_validate(dict(raw))
            if (link.target, link.author_id) in seen:
                continue
            saved = store.collection(LINK_OUTCOMES).find_one({"_id": _outcome_key(run_id, link)})
            if saved:  # its batch died (e.g. past TWIN_CRAWL_TASK_TIMEOUT_S) after this link was done
                recorded.append(LinkOutcome.model_validate(saved["outcome"]))
            else:
                recorded.append(_failed(link, "its crawl task failed without an outcome for it (an error, or "
                                              "past TWIN_CRAWL_TASK_TIMEOUT_S); see the task log"))
            seen.add((link.target, link.author_id))
        previous = store.get_crawl_run(run_id)
        run = CrawlRun(id=run_id, started_at=previous.started_at if previous else utcnow(), finished_at=utcnow(),
                       outcomes=recorded, error=previous.error if previous else None)
        store.save_crawl_run(run)
        store.collection(LINK_OUTCOMES).delete_many({"run_id": run_id})
    failed = [o for o in recorded if o.status == LinkStatus.FAILED]
    log.info("crawl run %s: %d links, %d failed, changed=%s", run_id, len(recorded), len(failed), run.changed)
    return run.changed


def crawl_links(links: list[Link], run_id: str, settings: Settings | None = None,
                on_outcome: Callable[[dict[str, Any]], None] | None = None) -> CrawlRun:
    """Crawl links one after another without Airflow (the CLI and the demo); returns the saved run."""
    settings = settings or get_settings()
    with DocumentStore.from_settings(settings) as store:
        store.ensure_indexes()
        if store.get_crawl_run(run_id) is None:
            store.save_crawl_run(CrawlRun(id=run_id))
    outcomes = []
    for link in links:
        outcome = crawl_link(link, run_id, final_attempt=True, settings=settings)
        outcomes.append(outcome)
        if on_outcome:
            on_outcome(outcome)
    finish_run(run_id, links_as_dicts(links), outcomes, settings=settings)
    with DocumentStore.from_settings(settings) as store:
        run = store.get_crawl_run(run_id)
    assert run is not None  # just saved
    return run


def crawl_sources(sources_file: Path | None = None, run_id: str | None = None,
                  settings: Settings | None = None) -> CrawlRun:
    """Crawl every link of a sources file (default TWIN_SOURCES_FILE) in this process."""
    settings = settings or get_settings()
    run_id = run_id or new_run_id()
    links = [Link.model_validate(d) for d in load_links(run_id, sources_file, settings)]
    return crawl_links(links, run_id, settings)
