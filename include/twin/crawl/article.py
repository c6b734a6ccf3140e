"""Any article URL: fetch politely, then extract main text, title, author and date with trafilatura."""

from __future__ import annotations

import trafilatura

from twin.crawl.base import CrawlContext, Crawler, CrawlResult, make_document, parse_date
from twin.crawl.errors import CrawlError
from twin.crawl.fetch import FEED_TYPES, HTML_TYPES, Page
from twin.crawl.sources import Link
from twin.crawl.urls import normalize_url
from twin.models import DocumentKind, RawDocument, SourceKind


class ArticleCrawler(Crawler):
    name = SourceKind.ARTICLE.value
    source_kind = SourceKind.ARTICLE

    def crawl(self, link: Link, ctx: CrawlContext) -> CrawlResult:
        page = ctx.fetcher.get(normalize_url(link.target), accept=HTML_TYPES | FEED_TYPES)
        if page.mime in FEED_TYPES:  # a feed at an address that does not look like one
            from twin.crawl.feed import FeedCrawler  # feed builds on this module

            return FeedCrawler().crawl_page(page, link, ctx)
        return CrawlResult(documents=[article_from_page(page, link, ctx, self.source_kind)])


def article_from_page(page: Page, link: Link, ctx: CrawlContext, source_kind: SourceKind,
                      **extra_metadata: object) -> RawDocument:
    """Extract the main text of a fetched page; no main text is a failure, not an empty document."""
    extracted = trafilatura.bare_extraction(
        page.text, url=page.url, with_metadata=True, favor_recall=True, include_comments=False,
    )
    text = (getattr(extracted, "text", None) or "").strip()
    if not text:
        raise CrawlError(f"no main text found in {page.url}")
    metadata = {"http_status": page.status, "content_type": page.mime, **extra_metadata}
    if extracted.author:
        metadata["page_author"] = extracted.author
    if extracted.sitename:
        metadata["site_name"] = extracted.sitename
    return make_document(
        link, ctx, source_kind=source_kind, kind=DocumentKind.ARTICLE, url=page.url, content=text,
        title=extracted.title, published_at=parse_date(extracted.date), metadata=metadata,
    )


class ExportOnlyCrawler(Crawler):
    """LinkedIn and X forbid scraping their pages: their posts come in through a data export."""

    name = "export-only"
    source_kind = SourceKind.EXPORT

    def crawl(self, link: Link, ctx: CrawlContext) -> CrawlResult:
        raise CrawlError(
            f"{link.target}: pages of this site must not be scraped; download your data export "
            "(LinkedIn: Settings > Data privacy > Get a copy of your data; X: Settings > Your account > "
            "Download an archive) and add it as {path: FILE.zip, kind: export}"
        )
