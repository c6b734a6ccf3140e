"""Each crawler on local inputs: the hostile site, a local git repository, export archives."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.crawl.conftest import LINKEDIN_CSV, linkedin_zip, x_zip
from twin.crawl.base import CrawlContext, Crawler, CrawlResult
from twin.crawl.errors import CrawlError
from twin.crawl.fetch import Fetcher
from twin.crawl.registry import builtin_registry
from twin.crawl.sources import Link
from twin.models import DocumentKind, SourceKind


def link(target: str, kind: str | None = None) -> Link:
    key = "url" if "://" in target else "path"
    return Link(author_id="ada", author_name="Ada Example", kind=kind, **{key: target})


def run(settings, target: str, kind: str | None = None) -> CrawlResult:
    with Fetcher(settings) as fetcher:
        crawler = builtin_registry().crawler_for(link(target, kind))
        return crawler.crawl(link(target, kind), CrawlContext(settings=settings, fetcher=fetcher, run_id="r1"))


def test_article_extracts_text_title_author_and_date(fetch_settings, hostile_site) -> None:
    [doc] = run(fetch_settings, hostile_site.url("/articles/one.html?utm_source=x#top")).documents
    assert doc.url == hostile_site.url("/articles/one.html")
    assert doc.title == "First article"
    assert doc.metadata["page_author"] == "Ada Example"
    assert doc.published_at is not None and doc.published_at.year == 2024
    assert "Paragraph 2 on first things" in doc.content
    assert "Home" not in doc.content  # navigation is not main text
    assert doc.kind == DocumentKind.ARTICLE and doc.source_kind == SourceKind.ARTICLE


def test_malformed_html_still_yields_its_text(fetch_settings, hostile_site) -> None:
    [doc] = run(fetch_settings, hostile_site.url("/malformed.html")).documents
    assert "Paragraph 1 on tag soup" in doc.content


def test_feed_uses_full_content_and_fetches_teaser_entries(fetch_settings, hostile_site) -> None:
    result = run(fetch_settings, hostile_site.url("/feed.xml"))
    by_url = {d.url: d for d in result.documents}
    assert result.failures == []
    full = by_url[hostile_site.url("/posts/feed-only")]  # tracking parameter dropped
    assert full.metadata["from_feed_content"] is True
    assert "feeds with full content" in full.content
    assert full.published_at is not None and full.published_at.day == 5
    assert full.metadata["tags"] == ["crawling"]
    assert "/posts/feed-only" not in hostile_site.hits  # never fetched: the feed carried it
    teaser = by_url[hostile_site.url("/articles/from-feed.html")]
    assert teaser.metadata["from_feed_content"] is False
    assert "pages behind teasers" in teaser.content
    assert all(d.source_kind == SourceKind.FEED for d in result.documents)


def test_feed_entry_failures_are_recorded_and_the_rest_goes_through(fetch_settings, hostile_site) -> None:
    del hostile_site.pages["/articles/from-feed.html"]
    result = run(fetch_settings, hostile_site.url("/feed.xml"))
    assert len(result.documents) == 1
    assert result.failures == [{"item": hostile_site.url("/articles/from-feed.html"),
                                "reason": f"HTTP 404 Not Found from {hostile_site.url('/articles/from-feed.html')}"}]


def test_a_feed_at_an_address_that_does_not_look_like_one_is_read_as_a_feed(fetch_settings, hostile_site) -> None:
    hostile_site.pages["/syndication"] = hostile_site.pages["/feed.xml"]
    result = run(fetch_settings, hostile_site.url("/syndication"))
    assert len(result.documents) == 2 and all(d.source_kind == SourceKind.FEED for d in result.documents)


def test_a_page_that_is_not_a_feed_fails(fetch_settings, hostile_site) -> None:
    with pytest.raises(CrawlError, match="not a feed"):
        run(fetch_settings, hostile_site.url("/articles/one.html"), kind="feed")


def test_repository_keeps_text_and_code_and_skips_the_rest(fetch_settings, local_repo: Path) -> None:
    result = run(fetch_settings, str(local_repo))
    by_path = {d.path: d for d in result.documents}
    assert sorted(by_path) == ["README.md", "src/app.py"]
    assert by_path["src/app.py"].metadata["language"] == "python"
    assert by_path["README.md"].metadata["language"] == "markdown"
    assert len(by_path["src/app.py"].metadata["commit"]) == 40
    assert {d.url for d in result.documents} == {local_repo.resolve().as_uri()}
    assert all(d.kind == DocumentKind.CODE for d in result.documents)


def test_repository_over_the_size_limit_fails(fetch_settings, local_repo: Path) -> None:
    settings = fetch_settings.model_copy(update={"max_repo_bytes": 1000})
    with pytest.raises(CrawlError, match="over the limit of 1000"):
        run(settings, str(local_repo))


def test_missing_repository_fails_clearly(fetch_settings, tmp_path: Path) -> None:
    with pytest.raises(CrawlError, match=r"git clone .* failed"):
        run(fetch_settings, "https://127.0.0.1:9/nobody/nothing.git")
    with pytest.raises(CrawlError, match="repository path not found"):
        run(fetch_settings, str(tmp_path / "nope"), kind="repository")


def test_linkedin_export_zip(fetch_settings, tmp_path: Path) -> None:
    result = run(fetch_settings, str(linkedin_zip(tmp_path / "linkedin.zip")))
    texts = {d.path: d.content for d in result.documents}
    assert texts == {
        "linkedin:urn:li:share:111": "Shipping a crawler that respects robots.txt.\nSecond line, with a comma.",
        "linkedin:urn:li:share:333": "Idempotent pipelines sleep well.",
    }  # the reshare without commentary is not the author's words
    doc = result.documents[0]
    assert doc.kind == DocumentKind.POST and doc.source_kind == SourceKind.EXPORT
    assert doc.url == "https://www.linkedin.com/feed/update/urn:li:share:111"
    assert doc.published_at.isoformat() == "2024-01-15T10:30:00+00:00"


def test_x_export_records_bad_rows_and_skips_retweets(fetch_settings, tmp_path: Path) -> None:
    result = run(fetch_settings, str(x_zip(tmp_path / "x.zip")))
    assert [d.path for d in result.documents] == ["x:1001", "x:1003"]
    assert result.documents[0].url == "https://x.com/i/web/status/1001"
    assert result.documents[0].published_at.year == 2018
    assert result.failures == [{"item": "data/tweets.js entry 4", "reason": "tweet without id_str or full_text"}]


def test_export_as_a_plain_folder(fetch_settings, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "Shares.csv").write_text(LINKEDIN_CSV)
    assert len(run(fetch_settings, str(folder)).documents) == 2


def test_not_an_export(fetch_settings, tmp_path: Path) -> None:
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(CrawlError, match="not a zip archive"):
        run(fetch_settings, str(tmp_path / "junk.zip"))
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(CrawlError, match="not a LinkedIn or X export"):
        run(fetch_settings, str(folder), kind="export")


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("https://blog.example/posts/hello", "article"),
        ("https://blog.example/feed.xml", "feed"),
        ("https://ada.substack.com/feed", "feed"),
        ("https://github.com/ada/tools", "repository"),
        ("https://git.example/ada/tools.git", "repository"),
        ("https://medium.com/@ada", "medium"),
        ("https://www.linkedin.com/in/ada", "export-only"),
        ("https://x.com/ada", "export-only"),
    ],
)
def test_dispatcher_picks_a_crawler_by_domain_or_shape(target: str, kind: str) -> None:
    assert builtin_registry().detect(link(target)) == kind


def test_registry_is_extensible_by_domain_and_name() -> None:
    class WikiCrawler(Crawler):
        name = "wiki"
        source_kind = SourceKind.ARTICLE

        def crawl(self, link: Link, ctx: CrawlContext) -> CrawlResult:
            return CrawlResult()

    registry = builtin_registry()
    registry.register(WikiCrawler, domains=["wiki.example.org"])
    assert isinstance(registry.crawler_for(link("https://en.wiki.example.org/Page")), WikiCrawler)
    assert isinstance(registry.crawler_for(link("https://blog.example/x", kind="wiki")), WikiCrawler)
    with pytest.raises(CrawlError, match="no crawler named 'nope'"):
        registry.crawler_for(link("https://blog.example/x", kind="nope"))


def test_medium_profiles_are_read_through_their_feed() -> None:
    from twin.crawl.feed import MediumCrawler

    crawler = MediumCrawler()
    assert crawler.feed_url("https://medium.com/@ada?source=x") == "https://medium.com/feed/@ada"
    assert crawler.feed_url("https://ada.medium.com/") == "https://ada.medium.com/feed"
    assert crawler.feed_url("https://medium.com/feed/@ada") == "https://medium.com/feed/@ada"
    with pytest.raises(CrawlError, match="bot protection"):
        crawler.feed_url("https://medium.com/@ada/a-post-123")


def test_linkedin_pages_are_refused_with_advice(fetch_settings) -> None:
    with pytest.raises(CrawlError, match="must not be scraped"):
        run(fetch_settings, "https://www.linkedin.com/in/ada")
