"""The crawler contract, and the registry that picks a crawler for a link by kind or domain.

Extend it with your own crawler:

```python
from twin.crawl.base import Crawler
from twin.crawl.registry import default_registry

class WikiCrawler(Crawler):
    name = "wiki"
    source_kind = SourceKind.ARTICLE
    def crawl(self, link, ctx): ...

default_registry.register(WikiCrawler, domains=["wiki.example.org"])
```
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from twin.crawl.errors import CrawlError
from twin.crawl.fetch import Fetcher
from twin.crawl.sources import Link
from twin.models import DocumentKind, RawDocument, SourceKind, content_hash, stable_id
from twin.settings import Settings


@dataclass
class CrawlContext:
    settings: Settings
    fetcher: Fetcher
    run_id: str


@dataclass
class CrawlResult:
    documents: list[RawDocument] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)  # [{"item": ..., "reason": ...}]

    def fail(self, item: str, reason: str) -> None:
        self.failures.append({"item": item, "reason": reason})


class Crawler(ABC):
    """Turns one link into raw documents. Raise CrawlError when the link as a whole fails;
    record failures of single items (a feed entry, an export row) in the result instead."""

    name: ClassVar[str]
    source_kind: ClassVar[SourceKind]

    @abstractmethod
    def crawl(self, link: Link, ctx: CrawlContext) -> CrawlResult: ...


def make_document(
    link: Link, ctx: CrawlContext, *, source_kind: SourceKind, kind: DocumentKind, url: str, content: str,
    path: str | None = None, title: str | None = None, published_at: datetime | None = None,
    metadata: dict[str, Any] | None = None,
) -> RawDocument:
    """A raw document keyed by (normalised url, path), as the store's unique index expects."""
    return RawDocument(
        id=stable_id(url, path or ""), kind=kind, source_kind=source_kind, url=url, path=path,
        author_id=link.author_id, author_name=link.author_name, title=title, content=content,
        metadata=metadata or {}, published_at=published_at, content_hash=content_hash(content),
        crawl_run_id=ctx.run_id,
    )


def parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_FEED_PATH = re.compile(r"(/feed/?|/rss/?|/atom/?|\.rss|\.atom|\.xml|/feed\.json)$", re.IGNORECASE)
_EXPORT_MARKERS = ("Shares.csv", "data/tweets.js")


class CrawlerRegistry:
    """Crawlers by name, and domain rules that route links without an explicit kind."""

    def __init__(self) -> None:
        self._crawlers: dict[str, type[Crawler]] = {}
        self._domains: dict[str, str] = {}

    def register(self, crawler: type[Crawler], *, domains: tuple[str, ...] | list[str] = ()) -> type[Crawler]:
        self._crawlers[crawler.name] = crawler
        for domain in domains:
            self._domains[domain.lower()] = crawler.name
        return crawler

    def register_domain(self, domain: str, crawler_name: str) -> None:
        self._domains[domain.lower()] = crawler_name

    @property
    def names(self) -> list[str]:
        return sorted(self._crawlers)

    def crawler_for(self, link: Link) -> Crawler:
        name = link.kind or self.detect(link)
        if name not in self._crawlers:
            raise CrawlError(f"no crawler named {name!r} (known: {', '.join(self.names)})")
        return self._crawlers[name]()

    def detect(self, link: Link) -> str:
        """The crawler name for a link without a kind: domain rule, then the shape of the target."""
        if link.path:
            return _detect_local(Path(link.path))
        parts = urlsplit(link.url or "")
        host = (parts.hostname or "").lower()
        for domain, name in sorted(self._domains.items(), key=lambda item: -len(item[0])):
            if host == domain or host.endswith("." + domain):
                return name
        if parts.scheme in {"ssh", "git"} or parts.path.endswith(".git"):
            return SourceKind.REPOSITORY.value
        if _FEED_PATH.search(parts.path):
            return SourceKind.FEED.value
        return SourceKind.ARTICLE.value


def _detect_local(path: Path) -> str:
    if path.suffix.lower() == ".zip":
        return SourceKind.EXPORT.value
    if path.is_dir() and (path / ".git").exists():
        return SourceKind.REPOSITORY.value
    if path.is_dir() and any(next(iter(path.rglob(Path(m).name)), None) for m in _EXPORT_MARKERS):
        return SourceKind.EXPORT.value
    if path.is_dir():
        return SourceKind.REPOSITORY.value
    raise CrawlError(f"cannot tell what {path} is: give it a kind (repository or export)")

