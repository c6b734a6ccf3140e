"""Publishing the data-quality report, `twin quality report`, and the Airflow plugin that serves it."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.etl.conftest import raw_doc
from twin.cli import app as cli_app
from twin.etl.pipeline import run_etl
from twin.etl.report import (
    ASSETS_MANIFEST,
    REMOTE_RESOURCE,
    NoReportError,
    ReportAssetsMissing,
    latest_quality_report,
    make_offline,
    publish_quality_report,
    read_report_page,
)
from twin.settings import get_settings
from twin.storage.artifacts import S3ArtifactStore

PLUGIN_FILE = Path(__file__).resolve().parents[2] / "plugins" / "twin_quality.py"


@pytest.fixture
def validated(etl_store, etl_settings):
    """One ETL run, so that a Data Docs site exists."""
    etl_store.upsert_raw_documents([raw_doc("https://blog.test/a", "Text."), raw_doc("https://blog.test/b", "")])
    run_etl("run-1", store=etl_store)
    return etl_settings


def test_cli_says_clearly_when_there_is_no_report_yet(twin_env) -> None:
    result = CliRunner().invoke(cli_app, ["quality", "report"])
    assert result.exit_code == 1
    assert "no data-quality report has been published yet" in result.output
    assert publish_quality_report("run-0") is None  # nothing validated yet: nothing to publish


def test_published_report_is_found_by_the_cli(validated) -> None:
    published = publish_quality_report("run-1")
    assert Path(published.location).read_text().startswith("<!DOCTYPE html>")
    result = CliRunner().invoke(cli_app, ["quality", "report"])
    assert result.exit_code == 0 and result.stdout.strip() == published.location
    assert latest_quality_report().run_id == "run-1"
    with pytest.raises(NoReportError):
        read_report_page("../latest.json")


def test_report_goes_to_s3_when_a_bucket_is_configured(validated, s3_endpoint, monkeypatch) -> None:
    import boto3

    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                        "TWIN_ARTIFACTS_S3_BUCKET": "reports", "TWIN_S3_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="reports")
    published = publish_quality_report("run-1")
    assert published.location == "s3://reports/twin/quality/etl/site/index.html"
    body, content_type = read_report_page("index.html")
    assert content_type == "text/html" and body.startswith(b"<!DOCTYPE html>")
    assert isinstance(latest_quality_report().model_dump(), dict)
    assert S3ArtifactStore("reports", "twin", endpoint_url=s3_endpoint).exists("quality/etl/latest.json")


def test_airflow_plugin_serves_the_report_to_allowed_users_only(validated) -> None:
    spec = importlib.util.spec_from_file_location("twin_quality_plugin", PLUGIN_FILE)
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    report_app = plugin.TwinQualityPlugin.fastapi_apps[0]["app"]
    client = TestClient(report_app)
    assert client.get("/index.html").status_code == 401  # Airflow's own authentication guards it

    published = publish_quality_report("run-1")
    report_app.dependency_overrides[report_app.state.access_check] = lambda: None  # a user allowed to read `etl`
    page = client.get("/index.html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.content == Path(published.location).read_bytes()
    assert client.get("/missing.html").status_code == 404
    assert plugin.TwinQualityPlugin.external_views[0]["href"] == "/twin-quality/index.html"


def test_etl_can_run_from_the_cli_and_publishes_its_report(etl_store) -> None:
    etl_store.upsert_raw_documents([raw_doc("https://blog.test/a", "<p>Some text.</p>")])
    result = CliRunner().invoke(cli_app, ["etl", "run"])
    assert result.exit_code == 0, result.output
    assert '"cleaned": 1' in result.stdout
    assert latest_quality_report().run_id.startswith("cli-")


# --- the report works offline ------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
# Screenshots of the rendered report stay with the test output (git ignores tests/output/).
SCREENSHOTS = Path(os.environ.get("TWIN_TEST_OUTPUT_DIR") or REPO / "tests" / "output") / "quality_report"
CDN_HOSTS = sorted({urlsplit(url).hostname for url in json.loads(ASSETS_MANIFEST.read_text())["files"]})
# Airflow run ids are what the etl DAG passes as the run id; the report must show them as they are.
AIRFLOW_RUN_ID = "manual__2026-12-01T10:00:00.123456+00:00"


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("Debian's chromium is needed to render the report: run scripts/install_chromium.sh "
                    "(`make test` does)", pytrace=False)
    return path


def network_off() -> list[str]:
    """A network namespace with nothing in it (where allowed) on top of Chromium's own resolver block."""
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    return ["unshare", "-n"] if probe.returncode == 0 else []


def render(page: Path, screenshot: Path | None = None) -> tuple[str, str]:
    """The page's DOM after its scripts ran in headless Chromium with no network; and Chromium's log."""
    argv = [*network_off(), chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1400,1000", "--virtual-time-budget=8000",
            "--enable-logging=stderr", "--v=0", f"--user-data-dir={page.parent.parent / '.chromium'}"]
    argv += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    result = subprocess.run([*argv, page.as_uri()], capture_output=True, text=True, timeout=120,
                            cwd=page.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, result.stderr


def published_site(report) -> Path:
    return Path(report.location).parent


def test_published_pages_reference_no_cdn_and_carry_the_assets(validated) -> None:
    report = publish_quality_report(AIRFLOW_RUN_ID)
    site = published_site(report)
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 4 and report.offline  # index, two suites, a validation page at least
    for page in pages:
        html = page.read_text()
        assert not [host for host in CDN_HOSTS if host in html], page
        assert REMOTE_RESOURCE.findall(html) == [], page  # no script or style from any other host
        for src in re.findall(r"<(?:script|link)\b[^>]*?(?:src|href)=\"([^\"]+)\"", html):
            assert (page.parent / src).resolve().is_file(), f"{page}: {src} is not in the site"


def test_report_renders_offline_and_lists_the_validation_runs(validated, etl_store) -> None:
    etl_store.upsert_raw_documents([raw_doc("https://blog.test/c", "More text.")])
    run_etl(AIRFLOW_RUN_ID, store=etl_store)
    report = publish_quality_report(AIRFLOW_RUN_ID)
    index = published_site(report) / "index.html"
    dom, log = render(index)
    soup = BeautifulSoup(dom, "html.parser")
    # bootstrap-table (jQuery, Bootstrap) built the list of validation runs from the page's data.
    rows = [row.get_text(" ", strip=True) for row in soup.select(".bootstrap-table table tbody tr[data-index]")]
    runs = [row for row in rows if "run-1" in row or AIRFLOW_RUN_ID in row]
    assert len(runs) >= 4, rows  # two runs, each validating raw and cleaned documents
    assert any(AIRFLOW_RUN_ID in row and "raw_documents" in row for row in runs), rows
    assert any("run-1" in row and "cleaned_documents" in row for row in runs), rows
    assert "__none__" not in dom
    assert "Failed to load resource" not in log and "ERR_NAME_NOT_RESOLVED" not in log, log[-2000:]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    render(index, SCREENSHOTS / "index.png")
    page = next(published_site(report).glob(f"validations/raw_documents/{AIRFLOW_RUN_ID}/*/*.html"))
    render(page, SCREENSHOTS / "validation.png")
    dom, log = render(page)
    assert "expect_column_values_to_be_between" in dom or "content_chars" in dom
    assert "Failed to load resource" not in log, log[-2000:]
    print(f"\nscreenshots of the rendered report: {SCREENSHOTS}")
    assert (SCREENSHOTS / "index.png").stat().st_size > 10_000


def test_old_runs_are_pruned_from_the_report(validated, etl_store, monkeypatch) -> None:
    monkeypatch.setenv("TWIN_QUALITY_REPORT_KEEP_RUNS", "2")
    get_settings.cache_clear()
    first = publish_quality_report("run-1")
    assert first.pruned_runs == []
    for n in (2, 3):
        etl_store.upsert_raw_documents([raw_doc(f"https://blog.test/n{n}", f"Text number {n}.")])
        run_etl(f"run-{n}", store=etl_store)
        report = publish_quality_report(f"run-{n}")
    assert report.pruned_runs == ["run-1"]
    site = published_site(report)
    index = (site / "index.html").read_text()
    assert "run-2" in index and "run-3" in index and "run-1" not in index
    assert not list(site.glob("validations/*/run-1")), "the pruned run's pages stay published"
    assert list(site.glob("validations/raw_documents/run-3/*/*.html"))
    assert not list(get_settings().data_dir.glob("gx/uncommitted/validations/*/run-1"))


def test_missing_assets_are_named_and_the_report_still_published(validated, monkeypatch, tmp_path, caplog) -> None:
    monkeypatch.setenv("TWIN_REPORT_ASSETS_DIR", str(tmp_path / "nothing-here"))
    get_settings.cache_clear()
    with pytest.raises(ReportAssetsMissing, match=r"install_report_assets\.sh"):
        make_offline(tmp_path, tmp_path / "nothing-here")
    report = publish_quality_report("run-1")
    assert report is not None and not report.offline
    assert "run scripts/install_report_assets.sh" in caplog.text
