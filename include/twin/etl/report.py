"""Data-quality reports: the GX Data Docs site, published to the artifact store after every run.

The site is copied under `quality/etl/site/` (a local folder, or an S3 prefix that can be served as a
static site); `quality/etl/latest.json` says where the latest one is, when and by which run.
"""

from __future__ import annotations

import json
import logging
import mimetypes
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from pydantic import BaseModel

from twin.etl.validation import data_docs_dir
from twin.models import utcnow
from twin.settings import Settings, get_settings
from twin.storage.artifacts import ArtifactStore, get_artifact_store

log = logging.getLogger(__name__)

REPORT_PREFIX = "quality/etl"
SITE_PREFIX = f"{REPORT_PREFIX}/site"
LATEST_KEY = f"{REPORT_PREFIX}/latest.json"
INDEX = "index.html"


class NoReportError(LookupError):
    """No data-quality report has been published yet (or the requested page is not in it)."""


class PublishedReport(BaseModel):
    run_id: str
    published_at: datetime
    location: str  # where the report's index.html can be read: a file path or an s3:// URL
    site: str  # where the whole site lies
    # The ETL run's own report (characters removed per cleaning rule, alerts, gate), when it was stored.
    etl_run: dict[str, Any] | None = None


def publish_quality_report(run_id: str, *, settings: Settings | None = None,
                           store: ArtifactStore | None = None) -> PublishedReport | None:
    """Copy the local Data Docs site to the artifact store; None when no validation has run yet."""
    settings = settings or get_settings()
    site = data_docs_dir(settings)
    if not (site / INDEX).is_file():
        log.warning("no Data Docs at %s yet: nothing has been validated, nothing to publish", site)
        return None
    store = store or get_artifact_store(settings)
    report = PublishedReport(run_id=run_id, published_at=utcnow(), site=store.publish_dir(site, SITE_PREFIX),
                             location=store.location(f"{SITE_PREFIX}/{INDEX}"),
                             etl_run=stored_etl_run(run_id, settings))
    # Written last: readers never see a pointer to a half-copied site.
    store.put_bytes(LATEST_KEY, report.model_dump_json(indent=2).encode(), "application/json")
    log.info("data-quality report of run %s published at %s", run_id, report.location)
    return report


def stored_etl_run(run_id: str, settings: Settings) -> dict[str, Any] | None:
    """The report `run_etl` stored for this run (None when there is none or the store is unreachable:
    the Data Docs are still published)."""
    from pymongo.errors import PyMongoError

    from twin.etl.pipeline import ETL_RUNS, EtlReport
    from twin.storage.documents import DocumentStore

    try:
        with DocumentStore.from_settings(settings) as documents:
            stored = documents.collection(ETL_RUNS).find_one({"_id": run_id})
    except PyMongoError as exc:
        log.warning("the report of ETL run %s could not be read (%s): published without it", run_id, exc)
        return None
    return EtlReport.model_validate({**stored, "run_id": run_id}).model_dump(mode="json") if stored else None


def etl_run_summary(etl_run: dict[str, Any]) -> list[str]:
    """Lines for `twin quality report`: what cleaning removed, what was flagged, what the gate said."""
    removed = etl_run.get("cleaning_removed_chars") or {}
    lines = [f"ETL run {etl_run['run_id']}: {etl_run.get('processed', 0)} processed, {etl_run.get('cleaned', 0)} "
             f"cleaned, {etl_run.get('quarantined', 0)} quarantined",
             "cleaning removed (characters per rule): "
             + (", ".join(f"{rule}={n}" for rule, n in removed.items()) or "nothing")]
    over = etl_run.get("cleaning_over_loss_limit") or {}
    if over:
        lines.append("quarantined for losing too much text in cleaning (TWIN_CLEANING_MAX_LOSS_SHARE): "
                     + ", ".join(f"{doc_id} ({share:.0%})" for doc_id, share in over.items()))
    lines += [f"alert: {alert}" for alert in etl_run.get("alerts") or []]
    if etl_run.get("gate_error"):
        lines.append(f"quality gate: {etl_run['gate_error']}")
    return lines


def latest_quality_report(*, settings: Settings | None = None,
                          store: ArtifactStore | None = None) -> PublishedReport:
    store = store or get_artifact_store(settings or get_settings())
    if not store.exists(LATEST_KEY):
        raise NoReportError("no data-quality report has been published yet: run the `etl` DAG first")
    return PublishedReport.model_validate(json.loads(store.get_bytes(LATEST_KEY)))


def read_report_page(path: str, *, settings: Settings | None = None,
                     store: ArtifactStore | None = None) -> tuple[bytes, str]:
    """One file of the published site (for serving it through Airflow's web server)."""
    store = store or get_artifact_store(settings or get_settings())
    relative = PurePosixPath(path.strip("/") or INDEX)
    if any(part in ("..", ".") for part in relative.parts):
        raise NoReportError(f"invalid report path {path!r}")
    key = f"{SITE_PREFIX}/{relative.as_posix()}"
    if not store.exists(key):
        raise NoReportError(f"no report page {relative.as_posix()!r}: has the `etl` DAG run yet?")
    content_type = mimetypes.guess_type(relative.name)[0] or "application/octet-stream"
    return store.get_bytes(key), content_type
