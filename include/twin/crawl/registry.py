"""The default crawler registry: built-in crawlers and the domains routed to them.

Add your own with `default_registry.register(MyCrawler, domains=[...])` (see twin.crawl.base).
"""

from __future__ import annotations

from twin.crawl.article import ArticleCrawler, ExportOnlyCrawler
from twin.crawl.base import CrawlerRegistry
from twin.crawl.exports import ExportCrawler
from twin.crawl.feed import FeedCrawler, MediumCrawler
from twin.crawl.repository import RepositoryCrawler


def builtin_registry() -> CrawlerRegistry:
    registry = CrawlerRegistry()
    registry.register(ArticleCrawler)
    registry.register(FeedCrawler)
    registry.register(MediumCrawler, domains=["medium.com"])
    registry.register(RepositoryCrawler, domains=["github.com", "gitlab.com", "codeberg.org", "bitbucket.org"])
    registry.register(ExportCrawler)
    # Their terms forbid scraping: posts come in through the owner's data export.
    registry.register(ExportOnlyCrawler, domains=["linkedin.com", "x.com", "twitter.com"])
    return registry


default_registry = builtin_registry()
