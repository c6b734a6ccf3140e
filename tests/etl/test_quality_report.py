"""Publishing the data-quality report, `twin quality report`, and the Airflow plugin that serves it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.etl.conftest import raw_doc
from twin.cli import app as cli_app
from twin.etl.pipeline import run_etl
from twin.etl.report import NoReportError, latest_quality_report, publish_quality_report, read_report_page
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
