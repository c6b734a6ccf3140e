"""Any article URL: fetch politely, then extract main text, title, author and date with trafilatura.

The main text is stored as literal markdown rendered from trafilatura's structured output (its XML
tree): headings, paragraphs, fenced code blocks, inline code, tables, lists and quotes keep their
shape, and text is never escaped or re-parsed, so `<nav>` or `Map<String, Integer>` in a post stays
exactly as its reader saw it. Raw documents say so in `metadata["content_format"]`.
"""

from __future__ import annotations

from typing import Any

import trafilatura
from lxml import etree

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


# How cleaning must read the content of a raw document (metadata["content_format"]).
MARKDOWN = "markdown"  # literal text, rendered here from the extractor's tree; code fenced with ```
HTML = "html"  # markup still to extract (cleaning runs the same extraction on it)
_EXTRACT_OPTIONS: dict[str, Any] = {"favor_recall": True, "include_comments": False, "include_formatting": True,
                                    "include_tables": True, "include_links": False, "include_images": False}


def extract(html: str, url: str | None = None, *, with_metadata: bool = True) -> Any:
    """trafilatura's result for a page (None when it finds no main text); `.body` is its XML tree."""
    return trafilatura.bare_extraction(html, url=url, with_metadata=with_metadata, **_EXTRACT_OPTIONS)


def html_to_markdown(html: str, url: str | None = None) -> str:
    """The main text of an HTML page or fragment as literal markdown ("" when there is none)."""
    if not html.strip():
        return ""
    extracted = extract(html, url, with_metadata=False)
    body = getattr(extracted, "body", None)
    return render_markdown(body) if body is not None else ""


def render_markdown(body: etree._Element) -> str:
    """trafilatura's XML tree -> markdown. Text is written as it is: trafilatura's own markdown output
    escapes it (`\\_`, `\\<`), which would change code and formulas."""
    blocks = [block for child in body for block in [_block(child)] if block.strip()]
    return "\n\n".join(blocks).strip()


def _block(element: etree._Element) -> str:
    tag = element.tag
    if tag == "head":
        level = (element.get("rend") or "h2").lstrip("h")
        return "#" * (int(level) if level.isdigit() else 2) + " " + _inline(element).strip()
    if tag == "code":  # a code block: trafilatura keeps inline code inside paragraphs
        code = "".join(element.itertext()).strip("\n")
        fence = "````" if "```" in code else "```"
        return f"{fence}\n{code}\n{fence}"
    if tag == "list":
        ordered = element.get("rend") == "ol"
        items = [_inline(item).strip() for item in element if item.tag == "item"]
        return "\n".join(f"{i}. {text}" if ordered else f"- {text}" for i, text in enumerate(items, 1) if text)
    if tag == "table":
        return _table(element)
    if tag == "quote":
        inner = "\n\n".join(b for child in element for b in [_block(child)] if b.strip()) or _inline(element)
        return "\n".join(f"> {line}" if line else ">" for line in inner.strip().split("\n"))
    if tag in ("graphic", "ref") and not "".join(element.itertext()).strip():
        return ""
    return _inline(element).strip()


def _inline(element: etree._Element) -> str:
    parts = [element.text or ""]
    for child in element:
        if child.tag == "code":
            code = "".join(child.itertext())
            tick = "``" if "`" in code else "`"
            parts.append(f"{tick}{code}{tick}")
        elif child.tag == "lb":
            parts.append("\n")
        elif child.tag == "hi" and child.get("rend") in ("#sup", "#sub"):  # x^2, H_2O, footnote marks
            parts.append(("^" if child.get("rend") == "#sup" else "_") + _inline(child))
        elif child.tag in ("list", "table", "quote"):
            parts.append("\n" + _block(child) + "\n")
        else:
            parts.append(_inline(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _table(table: etree._Element) -> str:
    rows = [[" ".join(_inline(cell).split()).replace("|", "\\|") for cell in row if cell.tag == "cell"]
            for row in table if row.tag == "row"]
    rows = [row for row in rows if row]
    if not rows:
        return ""
    width = max(len(row) for row in rows)
    lines = ["| " + " | ".join(row + [""] * (width - len(row))) + " |" for row in rows]
    lines.insert(1, "|" + " --- |" * width)
    return "\n".join(lines)


def article_from_page(page: Page, link: Link, ctx: CrawlContext, source_kind: SourceKind,
                      **extra_metadata: object) -> RawDocument:
    """Extract the main text of a fetched page; no main text is a failure, not an empty document."""
    extracted = extract(page.text, page.url)
    body = getattr(extracted, "body", None)
    text = render_markdown(body) if body is not None else ""
    if not text:
        raise CrawlError(f"no main text found in {page.url}")
    metadata = {"http_status": page.status, "content_type": page.mime, "content_format": MARKDOWN,
                **extra_metadata}
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
