"""Data-quality reports: the GX Data Docs site, published to the artifact store after every run.

The site is copied under `quality/etl/site/` (a local folder, or an S3 prefix that can be served as a
static site); `quality/etl/latest.json` says where the latest one is, when and by which run.
The published copy works offline: the scripts and styles that GX's templates load from public CDNs
are copied into the site from vendor/report-assets/ (scripts/install_report_assets.sh) and every page
points at them. Only the latest TWIN_QUALITY_REPORT_KEEP_RUNS runs are kept.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import re
import shutil
import tempfile
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel

from twin.etl.validation import data_docs_dir, prune_validation_runs
from twin.models import utcnow
from twin.settings import Settings, get_settings
from twin.storage.artifacts import ArtifactStore, get_artifact_store

log = logging.getLogger(__name__)

REPORT_PREFIX = "quality/etl"
SITE_PREFIX = f"{REPORT_PREFIX}/site"
LATEST_KEY = f"{REPORT_PREFIX}/latest.json"
INDEX = "index.html"
ASSETS_MANIFEST = Path(__file__).with_name("report_assets.json")
PROJECT_ROOT = Path(__file__).resolve().parents[3]
VENDOR_FOLDER = "static/vendor"  # where the site's own copies of the CDN files go
RESOURCE_TAG = re.compile(r"<(?:script|link|img)\b[^>]*>", re.I)
# Subresource-integrity attributes pin a CDN response; a local copy from the package needs none, and
# `crossorigin` would make a browser refuse a file:// script.
SRI_ATTRIBUTE = re.compile(r"""\s(?:integrity|crossorigin)(?:=(?:"[^"]*"|'[^']*'|[^\s>]+))?""", re.I)
SITE_STATIC = re.compile(r"""(\b(?:src|href)=["'])(?:\./|(?:\.\./)+)?static/""", re.I)
REMOTE_RESOURCE = re.compile(r"""<(?:script|link|img)\b[^>]*?\b(?:src|href)=["']?((?:https?:)?//[^"'\s>]+)""", re.I)


class NoReportError(LookupError):
    """No data-quality report has been published yet (or the requested page is not in it)."""


class ReportAssetsMissing(FileNotFoundError):
    """The local copies of the report's scripts and styles are not installed."""


class PublishedReport(BaseModel):
    run_id: str
    published_at: datetime
    location: str  # where the report's index.html can be read: a file path or an s3:// URL
    site: str  # where the whole site lies
    # The ETL run's own report (characters removed per cleaning rule, alerts, gate), when it was stored.
    etl_run: dict[str, Any] | None = None
    offline: bool = True  # every page loads its scripts and styles from the site itself
    pruned_runs: list[str] = []  # validation runs dropped from the report by this publish


def report_assets_dir(settings: Settings) -> Path:
    return settings.report_assets_dir or PROJECT_ROOT / "vendor" / "report-assets"


def make_offline(site: Path, assets: Path) -> list[str]:
    """Copy the vendored CDN files into `site` and point every page at its copies.

    Returns the remote scripts and styles still referenced (empty unless GX's templates name a file the
    manifest does not know). Raises ReportAssetsMissing, naming the installer, when a copy is missing.
    """
    manifest = json.loads(ASSETS_MANIFEST.read_text())
    files: dict[str, str] = manifest["files"]
    images: dict[str, str] = manifest["images"]  # URL -> path inside the site ("static/...")
    missing = [rel for rel in [*files.values(), *manifest["dirs"]] if not (assets / rel).exists()]
    if missing:
        raise ReportAssetsMissing(f"{len(missing)} of the report's scripts and styles are missing from {assets} "
                                  f"(e.g. {missing[0]}): run scripts/install_report_assets.sh")
    vendor = site / VENDOR_FOLDER
    for rel in files.values():
        (vendor / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(assets / rel, vendor / rel)
    for rel in manifest["dirs"]:
        shutil.copytree(assets / rel, vendor / rel, dirs_exist_ok=True)
    remote: set[str] = set()
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        relative = Path(os.path.relpath(vendor, page.parent)).as_posix()
        static = Path(os.path.relpath(site / "static", page.parent)).as_posix()

        def localise(tag: re.Match[str], relative: str = relative, static: str = static) -> str:
            text = tag.group(0)
            for url, rel in files.items():
                for quote in '"', "'":
                    if f"{quote}{url}{quote}" in text:
                        text = SRI_ATTRIBUTE.sub("", text.replace(f"{quote}{url}{quote}", f'"{relative}/{rel}"'))
            for url, rel in images.items():  # any query string (GX adds a tracking one) goes too
                text = re.sub(rf"""(src=["']){re.escape(url)}[^"'\s>]*""",
                              lambda m, rel=rel: f"{m.group(1)}{rel}", text)
            # GX counts the folders of a validation page wrong for some of its own files (the favicon).
            return SITE_STATIC.sub(lambda m: f"{m.group(1)}{static}/", text)

        rewritten = RESOURCE_TAG.sub(localise, html)
        if rewritten != html:
            page.write_text(rewritten, encoding="utf-8")
        remote.update(REMOTE_RESOURCE.findall(rewritten))
    return sorted(remote)


def publish_quality_report(run_id: str, *, settings: Settings | None = None,
                           store: ArtifactStore | None = None) -> PublishedReport | None:
    """Copy the local Data Docs site to the artifact store; None when no validation has run yet."""
    settings = settings or get_settings()
    site = data_docs_dir(settings)
    if not (site / INDEX).is_file():
        log.warning("no Data Docs at %s yet: nothing has been validated, nothing to publish", site)
        return None
    store = store or get_artifact_store(settings)
    pruned = prune_validation_runs(settings.quality_report_keep_runs, settings)
    with tempfile.TemporaryDirectory(prefix="twin-report-") as staging:
        staged = Path(staging) / "site"
        shutil.copytree(site, staged)
        try:
            remote = make_offline(staged, report_assets_dir(settings))
        except ReportAssetsMissing as exc:
            log.error("data-quality report published with links to public CDNs (it needs a network): %s", exc)
            remote = ["(every script and style)"]
        else:
            if remote:
                log.error("data-quality report pages still load %s: add them to %s", remote, ASSETS_MANIFEST)
        report = PublishedReport(run_id=run_id, published_at=utcnow(), site=store.publish_dir(staged, SITE_PREFIX),
                                 location=store.location(f"{SITE_PREFIX}/{INDEX}"),
                                 etl_run=stored_etl_run(run_id, settings), offline=not remote,
                                 pruned_runs=pruned)
    _remove_published_runs(store, pruned)
    # Written last: readers never see a pointer to a half-copied site.
    store.put_bytes(LATEST_KEY, report.model_dump_json(indent=2).encode(), "application/json")
    log.info("data-quality report of run %s published at %s", run_id, report.location)
    return report


def _remove_published_runs(store: ArtifactStore, runs: list[str]) -> None:
    """Drop the pages of pruned runs from the published copy too (where the store can delete)."""
    remove = getattr(store, "remove_prefix", None)
    if not runs or remove is None:
        return
    # validations/<suite>/<run name>/<run time>/<batch>.html: the page's folder is the run's time.
    keys = store.list(f"{SITE_PREFIX}/validations")
    for folder in sorted({key.rsplit("/", 2)[0] for key in keys if key.rsplit("/", 3)[1] in runs}):
        remove(folder)


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
