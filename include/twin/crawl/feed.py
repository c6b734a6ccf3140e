"""RSS/Atom feeds (Medium, Substack, any blog): parse the feed and follow its entries.

An entry that carries its full content (content:encoded, Atom content) is stored from the feed
itself: Medium's article pages sit behind bot protection, so its feed is the supported way in.
Entries with only a summary are fetched as article pages.
"""

from __future__ import annotations

import calendar
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import feedparser
import lxml.html

from twin.crawl.article import article_from_page, html_to_markdown
from twin.crawl.base import CrawlContext, Crawler, CrawlResult, make_document
from twin.crawl.errors import CrawlError
from twin.crawl.fetch import FEED_TYPES, HTML_TYPES, Page
from twin.crawl.sources import Link
from twin.crawl.urls import normalize_url
from twin.models import DocumentKind, RawDocument, SourceKind

MIN_FULL_CONTENT_CHARS = 200  # shorter "content" is a teaser; fetch the page instead


class FeedCrawler(Crawler):
    name = SourceKind.FEED.value
    source_kind = SourceKind.FEED

    def feed_url(self, url: str) -> str:
        return normalize_url(url)

    def crawl(self, link: Link, ctx: CrawlContext) -> CrawlResult:
        page = ctx.fetcher.get(self.feed_url(link.target), accept=FEED_TYPES | HTML_TYPES)
        return self.crawl_page(page, link, ctx)

    def crawl_page(self, page: Page, link: Link, ctx: CrawlContext) -> CrawlResult:
        parsed = feedparser.parse(page.body, response_headers={"content-type": f"{page.mime}; "
                                                                               f"charset={page.charset or ''}"})
        if not parsed.entries:
            problem = parsed.get("bozo_exception")
            raise CrawlError(f"not a feed or an empty feed: {page.url}" + (f" ({problem})" if problem else ""))
        result = CrawlResult()
        for entry in parsed.entries:
            item = entry.get("link") or entry.get("id") or entry.get("title") or "?"
            try:
                result.documents.append(self._entry_document(entry, link, ctx, feed_url=page.url))
            except CrawlError as exc:
                result.fail(item, exc.reason)
        return result

    def _entry_document(self, entry: Any, link: Link, ctx: CrawlContext, feed_url: str) -> RawDocument:
        if not entry.get("link"):
            raise CrawlError("feed entry has no link")
        if urlsplit(entry["link"]).scheme not in {"http", "https"}:  # file://, ftp:// ... never from a feed
            raise CrawlError(f"feed entry link is not an http(s) URL: {entry['link']}")
        url = normalize_url(entry["link"])
        metadata = {"feed_url": feed_url, "entry_author": entry.get("author"), "tags": _tags(entry)}
        text = _full_content(entry)
        if text is None:
            page = ctx.fetcher.get(url, accept=HTML_TYPES)
            return article_from_page(page, link, ctx, SourceKind.FEED, **metadata, from_feed_content=False)
        return make_document(
            link, ctx, source_kind=SourceKind.FEED, kind=DocumentKind.ARTICLE, url=url, content=text,
            title=entry.get("title"), published_at=_entry_date(entry),
            metadata={**metadata, "from_feed_content": True},
        )


def _full_content(entry: Any) -> str | None:
    for content in entry.get("content") or []:
        text = html_to_text(content.get("value") or "")
        if len(text) >= MIN_FULL_CONTENT_CHARS:
            return text
    return None


def html_to_text(html: str) -> str:
    """Main text of an HTML fragment; falls back to all its text when extraction finds none."""
    if not html.strip():
        return ""
    text = html_to_markdown(f"<html><body><article>{html}</article></body></html>")
    if text:
        return text.strip()
    return lxml.html.fromstring(html).text_content().strip()


def _entry_date(entry: Any) -> datetime | None:
    struct: time.struct_time | None = entry.get("published_parsed") or entry.get("updated_parsed")
    return datetime.fromtimestamp(calendar.timegm(struct), tz=UTC) if struct else None


def _tags(entry: Any) -> list[str]:
    return [tag.get("term") for tag in entry.get("tags") or [] if tag.get("term")]


class MediumCrawler(FeedCrawler):
    """Medium profiles and publications are read through their feeds (/feed/@user)."""

    name = "medium"

    def feed_url(self, url: str) -> str:
        parts = urlsplit(normalize_url(url))
        segments = [s for s in parts.path.split("/") if s]
        if segments and segments[0] == "feed":
            return urlunsplit(parts)
        on_subdomain = parts.hostname != "medium.com"  # user.medium.com or a publication
        if on_subdomain and not segments:
            return urlunsplit((parts.scheme, parts.netloc, "/feed", "", ""))
        if not on_subdomain and len(segments) == 1:
            return urlunsplit((parts.scheme, parts.netloc, f"/feed/{segments[0]}", "", ""))
        raise CrawlError(
            f"{url}: Medium article pages sit behind bot protection; add the author's feed instead, "
            f"e.g. https://medium.com/feed/{segments[0] if segments else '@user'}"
        )
