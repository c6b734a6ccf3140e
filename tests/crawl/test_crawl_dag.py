"""The `crawl` DAG end to end with dag.test(): the hostile site, a local repository and exports.

Good links are stored exactly once, every bad one is recorded with its reason while the run
succeeds, a rerun writes nothing (and emits no asset event), and an edited page is updated.
"""

from __future__ import annotations

import importlib.util
import logging
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from tests.crawl.conftest import linkedin_zip, x_zip
from tests.fixtures.hostile_site import article_html, html, prose
from twin.crawl.pipeline import crawl_run_id_for
from twin.models import LinkStatus, RawDocument
from twin.orchestration import CRAWL_POOL, RAW_DOCUMENTS_ASSET
from twin.settings import get_settings
from twin.storage.documents import Collections, DocumentStore

REPO = Path(__file__).resolve().parents[2]
GOOD = {  # link -> documents it yields
    "/articles/one.html": 1, "/articles/two.html": 1, "/old-home": 1, "/malformed.html": 1,
    "/legacy.html": 1, "/feed.xml": 2, "/charset/fr.html": 1,
}
BAD = {  # link -> words of its recorded reason
    "/private/secret.html": "disallowed by robots.txt", "/missing": "HTTP 404", "/broken": "HTTP 500",
    "/slow": "timed out", "/image.png": "unsupported content type 'image/png'",
    "/huge.html": "larger than the limit", "/loop-a": "redirect loop",
    "/slow-drip": "over the fetch deadline of 3s", "/to-metadata": "a link-local address",
}
BATCH_LINKS = 4


def load_crawl_dag():
    spec = importlib.util.spec_from_file_location("crawl_dag_under_test", REPO / "dags" / "crawl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.crawl()
    # Same retry path as production, with seconds instead of minutes between tries.
    task = dag.get_task("crawl_batch")
    task.retries, task.retry_delay, task.max_retry_delay = 1, timedelta(seconds=1), timedelta(seconds=2)
    return dag


def asset_events() -> int:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        return session.scalar(select(func.count()).select_from(AssetEvent).join(
            AssetModel, AssetEvent.asset_id == AssetModel.id).where(AssetModel.name == RAW_DOCUMENTS_ASSET))


def task_states(dag_run) -> dict[str, set[str]]:
    states: dict[str, set[str]] = {}
    for ti in dag_run.get_task_instances():
        states.setdefault(ti.task_id, set()).add(str(ti.state))
    return states


@pytest.fixture
def sources(crawl_settings, hostile_site, local_repo, tmp_path, monkeypatch) -> dict[str, str]:
    exports = tmp_path / "sources" / "exports"
    exports.mkdir(parents=True)
    linkedin_zip(exports / "ada-linkedin.zip")
    x_zip(exports / "ada-x.zip")
    links = [hostile_site.url(p) for p in [*GOOD, *BAD]]
    data = {"authors": [{"id": "ada", "name": "Ada Example", "links": [
        *links,
        {"path": str(local_repo), "kind": "repository"},
        {"path": "exports/ada-linkedin.zip", "kind": "export"},
        {"path": "exports/ada-x.zip"},
        {"path": "exports/missing.zip", "kind": "export"},
    ]}]}
    path = tmp_path / "sources" / "sources.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("TWIN_SOURCES_FILE", str(path))
    monkeypatch.setenv("TWIN_FETCH_DEADLINE_S", "3")
    monkeypatch.setenv("TWIN_CRAWL_BATCH_LINKS", str(BATCH_LINKS))
    get_settings.cache_clear()
    return {"repo": str(local_repo), "missing_export": str(exports / "missing.zip")}


@pytest.fixture
def crawl_pool(airflow_db) -> None:
    from airflow.models.pool import Pool

    Pool.create_or_update_pool(CRAWL_POOL, slots=2, description="crawl fetches (tests)", include_deferred=False)


@pytest.mark.slow
def test_crawl_dag_stores_good_links_once_records_bad_ones_and_is_idempotent(
    crawl_pool, sources, hostile_site, caplog
) -> None:
    dag = load_crawl_dag()
    caplog.set_level(logging.WARNING, logger="twin.crawl")
    events_before = asset_events()

    # --- first run: everything new -------------------------------------------------------------
    first = dag.test()
    assert str(first.state) == "success"
    states = task_states(first)
    assert states["crawl_batch"] == {"success"}  # failures are outcomes, not failed tasks
    links = len(GOOD) + len(BAD) + 4
    batches = [ti for ti in first.get_task_instances() if ti.task_id == "crawl_batch"]
    assert len(batches) == -(-links // BATCH_LINKS)  # one mapped task per batch, not per link
    assert states["publish_raw_documents"] == {"success"}
    assert asset_events() == events_before + 1

    with DocumentStore.from_settings() as store:
        run = store.get_crawl_run(crawl_run_id_for(first.run_id))
        outcomes = {o.link: o for o in run.outcomes}
        assert len(outcomes) == links and run.finished_at is not None
        for path, count in GOOD.items():
            outcome = outcomes[hostile_site.url(path)]
            assert (outcome.status, outcome.inserted) == (LinkStatus.STORED, count), outcome
        for path, words in BAD.items():
            outcome = outcomes[hostile_site.url(path)]
            assert outcome.status == LinkStatus.FAILED and words in outcome.reason, outcome
        assert outcomes[sources["repo"]].inserted == 2
        assert outcomes[sources["missing_export"]].reason.startswith("export not found")
        total = sum(GOOD.values()) + 2 + 2 + 2  # site, repository, LinkedIn, X
        assert store.count(Collections.RAW_DOCUMENTS) == total
        assert len({(d["url"], d.get("path")) for d in store.collection(Collections.RAW_DOCUMENTS).find()}) == total
        raw = store.collection(Collections.RAW_DOCUMENTS)
        assert raw.find_one({"url": hostile_site.url("/articles/new-home.html")})  # where the redirect led
        legacy = raw.find_one({"url": hostile_site.url("/legacy.html")})
        assert "Привет, мир!" in legacy["content"]
        assert raw.find_one({"url": hostile_site.url("/charset/fr.html")})["title"] == "Café crème"
        assert store.count(Collections.AUTHORS) == 1
    logged = caplog.text
    assert "disallowed by robots.txt" in logged and "HTTP 500" in logged  # the task log names failures

    # --- rerun: nothing changed, nothing written, no asset event -------------------------------
    second = dag.test()
    assert str(second.state) == "success"
    assert task_states(second)["publish_raw_documents"] == {"skipped"}
    assert asset_events() == events_before + 1
    with DocumentStore.from_settings() as store:
        rerun = store.get_crawl_run(crawl_run_id_for(second.run_id))
        assert not rerun.changed
        assert all(o.inserted == o.updated == 0 for o in rerun.outcomes)
        assert store.count(Collections.RAW_DOCUMENTS) == total
        assert store.count(Collections.RAW_DOCUMENTS, {"crawl_run_id": crawl_run_id_for(second.run_id)}) == 0

    # --- an edited page is updated in place, keeping its previous hash -------------------------
    hostile_site.pages["/articles/one.html"] = html(article_html("First article", prose("second editions")))
    third = dag.test()
    assert task_states(third)["publish_raw_documents"] == {"success"}
    assert asset_events() == events_before + 2
    with DocumentStore.from_settings() as store:
        run = store.get_crawl_run(crawl_run_id_for(third.run_id))
        edited = {o.link: o for o in run.outcomes}[hostile_site.url("/articles/one.html")]
        assert (edited.status, edited.updated) == (LinkStatus.STORED, 1)
        [doc] = store.find(Collections.RAW_DOCUMENTS, RawDocument, {"url": hostile_site.url("/articles/one.html")})
        assert "second editions" in doc.content and doc.previous_hash is not None
        assert doc.crawl_run_id == run.id
        assert store.count(Collections.RAW_DOCUMENTS) == total
