"""Tombstones for documents a complete crawl no longer yields, batches of links for the DAG's
mapping limit, the deadline on a feed that lists a slow page, and the sources-file folder rule."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from tests.crawl.conftest import git
from tests.fixtures.hostile_site import Response, prose
from twin.crawl.errors import CrawlError, SourcesError
from twin.crawl.pipeline import crawl_batch, crawl_link, crawl_sources, load_links, plan_batches
from twin.crawl.sources import Link
from twin.models import LinkStatus, RawDocument
from twin.settings import get_settings
from twin.storage.documents import Collections, DocumentStore


def ada(**target: str) -> Link:
    return Link(author_id="ada", author_name="Ada Example", **target)


def rss(site, items: list[tuple[str, str | None]]) -> Response:
    """A feed of full-content posts: (slug, RFC 822 date or None)."""
    entries = "".join(
        f"<item><title>Post {slug}</title><link>{site.url('/posts/' + slug)}</link>"
        + (f"<pubDate>{date}</pubDate>" if date else "")
        + f"<content:encoded><![CDATA[<p>{prose('post ' + slug)}</p>]]></content:encoded></item>"
        for slug, date in items)
    body = ("<?xml version='1.0' encoding='utf-8'?><rss version='2.0' xmlns:content='http://purl.org/rss/1.0/"
            f"modules/content/'><channel><title>t</title><link>{site.base}</link>{entries}</channel></rss>")
    return Response(body=body.encode(), content_type="application/rss+xml")


def raw(url: str, path: str | None = None) -> RawDocument:
    with DocumentStore.from_settings() as store:
        [doc] = store.find(Collections.RAW_DOCUMENTS, RawDocument, {"url": url, "path": path})
    return doc


def test_a_post_dropped_from_its_feed_is_tombstoned_and_restored_when_it_returns(crawl_settings, hostile_site):
    march, april = "Tue, 05 Mar 2024 10:00:00 GMT", "Fri, 05 Apr 2024 10:00:00 GMT"
    hostile_site.pages["/blog.xml"] = rss(hostile_site, [("a", march), ("b", march), ("c", april)])
    feed = ada(url=hostile_site.url("/blog.xml"))
    assert crawl_link(feed, "r1")["inserted"] == 3

    hostile_site.pages["/blog.xml"] = rss(hostile_site, [("a", march), ("c", april)])  # b deleted
    outcome = crawl_link(feed, "r2")
    assert (outcome["status"], outcome["tombstoned"], outcome["unchanged"]) == ("stored", 1, 2)
    gone = raw(hostile_site.url("/posts/b"))
    assert gone.tombstoned_at is not None and gone.updated_at >= gone.tombstoned_at
    assert "no longer yielded by" in gone.tombstone_reason and "r2" in gone.tombstone_reason
    assert raw(hostile_site.url("/posts/a")).tombstoned_at is None
    assert crawl_link(feed, "r3")["tombstoned"] == 0  # already tombstoned: counted once

    hostile_site.pages["/blog.xml"] = rss(hostile_site, [("a", march), ("b", march), ("c", april)])
    outcome = crawl_link(feed, "r4")
    assert (outcome["status"], outcome["restored"], outcome["inserted"]) == ("stored", 1, 0)
    back = raw(hostile_site.url("/posts/b"))
    assert back.tombstoned_at is None and back.tombstone_reason is None and back.updated_at > gone.updated_at
    assert crawl_link(feed, "r5")["status"] == "unchanged"


def test_a_post_that_scrolled_out_of_the_feed_window_stays(crawl_settings, hostile_site) -> None:
    old, new, newer = "Mon, 01 Jan 2024 10:00:00 GMT", "Tue, 05 Mar 2024 10:00:00 GMT", "Fri, 05 Apr 2024 10:00:00 GMT"
    hostile_site.pages["/blog.xml"] = rss(hostile_site, [("old", old), ("new", new)])
    feed = ada(url=hostile_site.url("/blog.xml"))
    crawl_link(feed, "r1")
    hostile_site.pages["/blog.xml"] = rss(hostile_site, [("new", new), ("newer", newer)])  # a 2-entry window
    assert crawl_link(feed, "r2")["tombstoned"] == 0
    assert raw(hostile_site.url("/posts/old")).tombstoned_at is None
    hostile_site.pages["/blog.xml"] = rss(hostile_site, [("old", old), ("newer", newer)])  # "new" deleted
    assert crawl_link(feed, "r3")["tombstoned"] == 1
    assert raw(hostile_site.url("/posts/new")).tombstoned_at is not None


def test_failed_or_partial_crawls_tombstone_nothing(crawl_settings, hostile_site) -> None:
    feed = ada(url=hostile_site.url("/blog.xml"))
    hostile_site.pages["/blog.xml"] = rss(hostile_site, [("a", None), ("b", None)])
    crawl_link(feed, "r1")
    hostile_site.pages["/blog.xml"] = Response(status=404, body=b"gone")
    assert crawl_link(feed, "r2")["status"] == "failed"
    # An entry that failed (here: a teaser whose page is missing) makes the crawl partial.
    partial = rss(hostile_site, [("a", None)])
    partial.body = partial.body.replace(b"</channel>", f"<item><title>x</title><link>{hostile_site.url('/missing')}"
                                        "</link><description>teaser</description></item></channel>".encode())
    hostile_site.pages["/blog.xml"] = partial
    outcome = crawl_link(feed, "r3")
    assert outcome["failed"] == 1 and outcome["tombstoned"] == 0
    assert raw(hostile_site.url("/posts/b")).tombstoned_at is None
    # ... and what it did not yield is still remembered: the next complete crawl tombstones it.
    hostile_site.pages["/blog.xml"] = rss(hostile_site, [("a", None)])
    assert crawl_link(feed, "r4")["tombstoned"] == 1


def test_a_document_another_link_still_yields_is_not_tombstoned(crawl_settings, hostile_site) -> None:
    page = hostile_site.url("/articles/from-feed.html")
    feed, article = ada(url=hostile_site.url("/feed.xml")), ada(url=page)
    crawl_link(feed, "r1")
    crawl_link(article, "r1")
    hostile_site.pages["/feed.xml"].body = hostile_site.pages["/feed.xml"].body.replace(
        b"<item><title>Summary post</title>", b"<item><title>gone</title>", 1).replace(
        f"<link>{page}</link>".encode(), f"<link>{hostile_site.url('/posts/feed-only')}</link>".encode())
    assert crawl_link(feed, "r2")["tombstoned"] == 0
    assert raw(page).tombstoned_at is None


def test_a_file_removed_from_its_repository_is_tombstoned(crawl_settings, local_repo: Path) -> None:
    repo = ada(path=str(local_repo))
    assert crawl_link(repo, "r1")["inserted"] == 2
    git("rm", "-q", "src/app.py", cwd=local_repo)
    git("commit", "-q", "-m", "drop app", cwd=local_repo)
    outcome = crawl_link(repo, "r2")
    assert (outcome["status"], outcome["tombstoned"], outcome["unchanged"]) == ("stored", 1, 1)
    url = local_repo.resolve().as_uri()
    assert raw(url, "src/app.py").tombstoned_at is not None
    assert raw(url, "README.md").tombstoned_at is None


def test_batches_group_hosts_and_never_exceed_the_mapping_limit() -> None:
    links = [{"author_id": "a", "author_name": "A", "url": f"https://host{i % 40}.example/p{i}"} for i in range(3000)]
    links += [{"author_id": "a", "author_name": "A", "path": f"/exports/{i}.zip"} for i in range(500)]
    batches = plan_batches(links, batch_links=20)
    assert len(batches) == 175 and all(len(b) <= 20 for b in batches)
    assert sorted(str(link) for b in batches for link in b) == sorted(str(link) for link in links)
    hosts_in_order = [link.get("url", "local").split("/")[2] if "url" in link else "local"
                      for b in batches for link in b]
    runs = [h for i, h in enumerate(hosts_in_order) if i == 0 or hosts_in_order[i - 1] != h]
    assert len(runs) == len(set(runs)) == 41  # each host's links are consecutive
    assert len(plan_batches(links, batch_links=1)) <= 1024  # batches grow rather than exceed the limit


def test_a_sources_file_of_over_1024_links_is_planned_within_the_limit(crawl_settings, hostile_site, tmp_path):
    links = [hostile_site.url(f"/articles/generated-{i}.html") for i in range(1500)]
    sources = tmp_path / "sources.yaml"
    sources.write_text(yaml.safe_dump({"authors": [{"name": "Ada Example", "links": links}]}))
    loaded = load_links("big-run", sources)
    assert len(loaded) == 1500
    batches = plan_batches(loaded, batch_links=1)
    assert len(batches) == 750 and sum(map(len, batches)) == 1500


def test_a_retried_batch_keeps_what_its_first_try_stored(crawl_settings, hostile_site) -> None:
    batch = [ada(url=hostile_site.url("/articles/one.html")).model_dump(),
             ada(url=hostile_site.url("/broken")).model_dump()]
    with pytest.raises(CrawlError, match=r"1 of 2 links hit transient errors.*HTTP 500"):
        crawl_batch(batch, "batch-run", final_attempt=False)
    outcomes = {o["link"]: o for o in crawl_batch(batch, "batch-run", final_attempt=True)}
    assert outcomes[hostile_site.url("/articles/one.html")]["inserted"] == 1  # not "unchanged" on the retry
    assert outcomes[hostile_site.url("/broken")]["status"] == "failed"
    assert hostile_site.hits["/articles/one.html"] == 1


def test_a_feed_listing_a_slow_drip_page_finishes_within_the_deadline(crawl_settings, hostile_site, tmp_path,
                                                                      monkeypatch) -> None:
    monkeypatch.setenv("TWIN_FETCH_DEADLINE_S", "2")
    get_settings.cache_clear()
    slow_link = hostile_site.url("/slow-drip")
    teaser = f"<item><title>slow</title><link>{slow_link}</link><description>t</description></item>"
    feed = rss(hostile_site, [("a", None), ("b", None)])
    feed.body = feed.body.replace(b"</channel>", teaser.encode() + b"</channel>")
    hostile_site.pages["/blog.xml"] = feed
    sources = tmp_path / "sources.yaml"
    sources.write_text(yaml.safe_dump({"authors": [{"name": "Ada Example", "links": [
        hostile_site.url("/blog.xml"), hostile_site.url("/slow-drip"), hostile_site.url("/articles/one.html")]}]}))
    started = time.monotonic()
    run = crawl_sources(sources)
    assert time.monotonic() - started < 2 * (2 + 1) + 5  # two slow fetches, each cut at the deadline
    by_link = {o.link: o for o in run.outcomes}
    slow = by_link[hostile_site.url("/slow-drip")]
    assert slow.status == LinkStatus.FAILED and "over the fetch deadline of 2s" in slow.reason
    blog = by_link[hostile_site.url("/blog.xml")]
    assert (blog.status, blog.inserted, blog.failed) == (LinkStatus.STORED, 2, 1)
    assert "fetch deadline" in blog.failures[0]["reason"]
    assert by_link[hostile_site.url("/articles/one.html")].status == LinkStatus.STORED


def test_sources_file_parameter_is_confined_to_the_configured_folders(crawl_settings, tmp_path, monkeypatch) -> None:
    elsewhere = tmp_path / "elsewhere" / "sources.yaml"
    elsewhere.parent.mkdir()
    elsewhere.write_text("authors:\n  - name: Ada Example\n    links: [/etc]\n")
    with pytest.raises(SourcesError, match="refused: a crawl run may read sources files only inside"):
        load_links("param-run", elsewhere, from_parameter=True)
    with DocumentStore.from_settings() as store:
        run = store.get_crawl_run("param-run")
    assert run is not None and "TWIN_CRAWL_SOURCES_DIRS" in run.error
    monkeypatch.setenv("TWIN_CRAWL_SOURCES_DIRS", str(elsewhere.parent))
    get_settings.cache_clear()
    assert len(load_links("param-run-2", elsewhere, from_parameter=True)) == 1
    assert len(load_links("cli-run", elsewhere)) == 1  # the command line names its own file
