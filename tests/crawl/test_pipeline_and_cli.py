"""The library entry points the DAG and the CLI use, against the real document store."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twin.cli import app
from twin.crawl.errors import CrawlError
from twin.crawl.pipeline import crawl_link, crawl_sources, finish_run
from twin.crawl.sources import Link
from twin.models import LinkStatus
from twin.storage.documents import Collections, DocumentStore

REPO = Path(__file__).resolve().parents[2]


def ada(url: str) -> Link:
    return Link(author_id="ada", author_name="Ada Example", url=url)


def test_transient_failures_raise_until_the_final_attempt(crawl_settings, hostile_site) -> None:
    with pytest.raises(CrawlError, match="HTTP 500"):
        crawl_link(ada(hostile_site.url("/broken")), "run-1", final_attempt=False)
    outcome = crawl_link(ada(hostile_site.url("/broken")), "run-1", final_attempt=True)
    assert outcome["status"] == "failed" and "HTTP 500" in outcome["reason"]
    # a permanent failure needs no retry, whatever the attempt
    outcome = crawl_link(ada(hostile_site.url("/missing")), "run-1", final_attempt=False)
    assert outcome["status"] == "failed" and "HTTP 404" in outcome["reason"]


def test_finish_run_records_links_whose_task_left_no_outcome(crawl_settings, hostile_site) -> None:
    good, lost = ada(hostile_site.url("/articles/one.html")), ada(hostile_site.url("/articles/two.html"))
    outcome = crawl_link(good, "run-2")
    assert finish_run("run-2", [good.model_dump(), lost.model_dump()], [outcome, None]) is True
    with DocumentStore.from_settings() as store:
        run = store.get_crawl_run("run-2")
    by_link = {o.link: o for o in run.outcomes}
    assert by_link[good.url].status == LinkStatus.STORED
    assert by_link[lost.url].status == LinkStatus.FAILED
    assert "without an outcome" in by_link[lost.url].reason


def test_crawl_sources_without_airflow(crawl_settings, hostile_site, tmp_path) -> None:
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"authors:\n  - name: Ada Example\n    links:\n      - {hostile_site.url('/feed.xml')}\n"
                       f"      - {hostile_site.url('/missing')}\n")
    run = crawl_sources(sources)
    assert [o.status for o in run.outcomes] == [LinkStatus.STORED, LinkStatus.FAILED]
    assert run.changed and run.finished_at is not None
    again = crawl_sources(sources)
    assert not again.changed


def test_cli_crawls_one_link_and_prints_a_summary(crawl_settings, hostile_site) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["crawl", hostile_site.url("/articles/one.html"), "--author", "Ada Example"])
    assert result.exit_code == 0, result.output
    assert "stored" in result.output and "crawl run cli:" in result.output
    with DocumentStore.from_settings() as store:
        assert store.count(Collections.RAW_DOCUMENTS, {"author_id": "ada-example"}) == 1

    failed = runner.invoke(app, ["crawl", hostile_site.url("/private/secret.html"), "--author", "Ada Example"])
    assert failed.exit_code == 1
    assert "disallowed by robots.txt" in failed.output


def test_cli_requires_an_author_for_one_link(crawl_settings) -> None:
    result = CliRunner().invoke(app, ["crawl", "https://blog.example/a"])
    assert result.exit_code == 2 and "--author" in result.output


def test_crawl_dag_file_imports_fast_and_does_no_work_at_import() -> None:
    code = ("import time, sys; import airflow.sdk; t = time.perf_counter(); sys.path.insert(0, 'dags'); "
            "import crawl; print(time.perf_counter() - t); "
            "assert 'twin.crawl.pipeline' not in sys.modules and 'pymongo' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip()) < 2.0


def test_crawl_dag_shape() -> None:
    spec = importlib.util.spec_from_file_location("crawl_dag_shape", REPO / "dags" / "crawl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.crawl()
    assert dag.dag_id == "crawl" and dag.catchup is False and "crawl" in dag.tags
    assert dag.default_args["owner"] == "twin"
    crawl = dag.get_task("crawl_batch")
    assert crawl.pool == "crawl_fetch" and crawl.retries >= 1 and crawl.retry_exponential_backoff
    assert dag.get_task("finish_run").trigger_rule == "all_done"
    assert [o.name for o in dag.get_task("publish_raw_documents").outlets] == ["raw_documents"]
