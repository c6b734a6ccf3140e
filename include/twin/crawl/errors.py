"""Errors of the crawl area. Each carries a reason meant for the crawl-run record."""

from __future__ import annotations


class CrawlError(Exception):
    """A link (or an item inside it) could not be crawled.

    `retryable` marks transient causes (timeouts, 5xx, network errors) worth another attempt;
    the rest (404, robots.txt, content type, size limits) fail at once.
    """

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class SourcesError(ValueError):
    """The sources file is missing or invalid."""
