"""What the `crawl` DAG and the CLI call: load links, crawl one link, record the run.

Data moves through MongoDB; only small link descriptions and outcomes travel between tasks.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pymongo.errors import BulkWriteError

from twin.crawl.base import CrawlContext, CrawlerRegistry
from twin.crawl.errors import CrawlError
from twin.crawl.fetch import Fetcher
from twin.crawl.sources import Link, links_as_dicts, load_sources
from twin.models import CrawlRun, LinkOutcome, LinkStatus, RawDocument, utcnow
from twin.settings import Settings, get_settings
from twin.storage.documents import DocumentStore, WriteOutcome

log = logging.getLogger(__name__)

DUPLICATE_KEY = 11000  # MongoDB error code


def crawl_run_id_for(airflow_run_id: str) -> str:
    """Retries of one DAG run reuse its crawl-run id, so they update one record."""
    return f"airflow:{airflow_run_id}"


def new_run_id(prefix: str = "cli") -> str:
    return f"{prefix}:{utcnow():%Y%m%dT%H%M%SZ}:{uuid.uuid4().hex[:6]}"


def load_links(run_id: str, sources_file: Path | None = None, settings: Settings | None = None) -> list[dict]:
    """Read the sources file, save its authors, open the crawl-run record; return the links."""
    settings = settings or get_settings()
    authors, links = load_sources(sources_file or settings.sources_file)
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
    except CrawlError as exc:
        if exc.retryable and not final_attempt:
            raise
        return _failed(link, exc.reason).model_dump(mode="json")
    except Exception as exc:  # a bug or hostile input must not cost the other links their run
        if not final_attempt:
            raise
        log.exception("crawler crashed on %s", link.target)
        return _failed(link, f"crawler error: {type(exc).__name__}: {exc}").model_dump(mode="json")
    with DocumentStore.from_settings(settings) as store:
        writes = _upsert(store, result.documents)
    outcome = summarise(link, list(writes.values()), result.failures)
    log.info("%s: %s (inserted %d, updated %d, unchanged %d, failed items %d)", link.target, outcome.status,
             outcome.inserted, outcome.updated, outcome.unchanged, outcome.failed)
    for failure in result.failures:
        log.warning("%s: item %s failed: %s", link.target, failure["item"], failure["reason"])
    return outcome.model_dump(mode="json")


def _upsert(store: DocumentStore, documents: list[RawDocument]) -> dict[str, WriteOutcome]:
    # One document per key (a feed may list an entry twice), last one wins.
    unique = list({doc.id: doc for doc in documents}.values())
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


def summarise(link: Link, writes: list[WriteOutcome], failures: list[dict[str, str]]) -> LinkOutcome:
    counts = {w: writes.count(w) for w in WriteOutcome}
    if not writes:
        reason = "no documents found" + (f"; {len(failures)} items failed" if failures else "")
        status, reason_or_none = LinkStatus.FAILED, reason
    elif counts[WriteOutcome.INSERTED] or counts[WriteOutcome.UPDATED]:
        status, reason_or_none = LinkStatus.STORED, None
    else:
        status, reason_or_none = LinkStatus.UNCHANGED, None
    return LinkOutcome(
        link=link.target, author_id=link.author_id, status=status, reason=reason_or_none,
        inserted=counts[WriteOutcome.INSERTED], updated=counts[WriteOutcome.UPDATED],
        unchanged=counts[WriteOutcome.UNCHANGED], failed=len(failures), failures=failures,
    )


def finish_run(run_id: str, links: Iterable[Mapping[str, Any]], outcomes: Iterable[Mapping[str, Any] | None],
               settings: Settings | None = None) -> bool:
    """Save the crawl run with one outcome per link; True when any document was new or changed.

    A link without an outcome (its task crashed outright) is recorded as failed, never dropped.
    """
    settings = settings or get_settings()
    recorded = [LinkOutcome.model_validate(dict(o)) for o in outcomes if o]
    seen = {(o.link, o.author_id) for o in recorded}
    for raw in links:
        link = Link.model_validate(dict(raw))
        if (link.target, link.author_id) not in seen:
            recorded.append(_failed(link, "its crawl task failed without an outcome; see the task log"))
    with DocumentStore.from_settings(settings) as store:
        previous = store.get_crawl_run(run_id)
        run = CrawlRun(id=run_id, started_at=previous.started_at if previous else utcnow(), finished_at=utcnow(),
                       outcomes=recorded)
        store.save_crawl_run(run)
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
