"""Posts from a LinkedIn or X data export (a zip archive or its unpacked folder).

Their pages must not be scraped; the export is the way in. LinkedIn: `Shares.csv` (Date, ShareLink,
ShareCommentary, ...). X: `data/tweets.js` (`window.YTD.tweets.part0 = [...]`, larger archives add
`tweets-part1.js`, ...).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twin.crawl.base import CrawlContext, Crawler, CrawlResult, make_document, parse_date
from twin.crawl.errors import CrawlError
from twin.crawl.sources import Link
from twin.crawl.urls import normalize_url
from twin.models import DocumentKind, RawDocument, SourceKind

_LINKEDIN_SHARES = re.compile(r"(^|/)shares\.csv$", re.IGNORECASE)
_X_TWEETS = re.compile(r"(^|/)data/tweets(-part\d+)?\.js$", re.IGNORECASE)


class ExportCrawler(Crawler):
    name = SourceKind.EXPORT.value
    source_kind = SourceKind.EXPORT

    def crawl(self, link: Link, ctx: CrawlContext) -> CrawlResult:
        archive = ExportArchive.open(Path(link.target), ctx.settings.max_repo_bytes)
        result = CrawlResult()
        found = False
        for name in archive.names():
            if _LINKEDIN_SHARES.search(name):
                found = True
                self._collect(linkedin_posts(archive.read_text(name)), link, ctx, result, archive.uri, name)
            elif _X_TWEETS.search(name):
                found = True
                self._collect(x_posts(archive.read_text(name)), link, ctx, result, archive.uri, name)
        if not found:
            raise CrawlError(f"{link.target} is not a LinkedIn or X export: no Shares.csv or data/tweets.js inside")
        return result

    def _collect(self, posts: Iterator[dict[str, Any] | CrawlError | None], link: Link, ctx: CrawlContext,
                 result: CrawlResult, export_uri: str, member: str) -> None:
        for number, post in enumerate(posts, start=1):
            if isinstance(post, CrawlError):
                result.fail(f"{member} entry {number}", post.reason)
            elif post:
                result.documents.append(_post_document(post, link, ctx, export_uri))


def _post_document(post: dict[str, Any], link: Link, ctx: CrawlContext, export_uri: str) -> RawDocument:
    return make_document(
        link, ctx, source_kind=SourceKind.EXPORT, kind=DocumentKind.POST, url=post["url"] or export_uri,
        path=post["id"], content=post["text"], published_at=post["published_at"],
        metadata={"platform": post["platform"], "export": export_uri, **post["metadata"]},
    )


class ExportArchive:
    """A zip or a folder, read through one small interface, with a size limit per member."""

    def __init__(self, root: Path, zip_file: zipfile.ZipFile | None, max_bytes: int) -> None:
        self.root = root
        self.zip = zip_file
        self.max_bytes = max_bytes
        self.uri = root.resolve().as_uri()

    @classmethod
    def open(cls, path: Path, max_bytes: int) -> ExportArchive:
        if path.is_dir():
            return cls(path, None, max_bytes)
        if not path.is_file():
            raise CrawlError(f"export not found: {path}")
        try:
            return cls(path, zipfile.ZipFile(path), max_bytes)
        except zipfile.BadZipFile:
            raise CrawlError(f"{path} is not a zip archive") from None

    def names(self) -> list[str]:
        if self.zip is not None:
            return sorted(self.zip.namelist())
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())

    def read_text(self, name: str) -> str:
        size = self.zip.getinfo(name).file_size if self.zip else (self.root / name).stat().st_size
        if size > self.max_bytes:
            raise CrawlError(f"{name} is {size} bytes, over the limit of {self.max_bytes} (TWIN_MAX_REPO_BYTES)")
        data = self.zip.read(name) if self.zip else (self.root / name).read_bytes()
        return data.decode("utf-8-sig", errors="replace")


def linkedin_posts(text: str) -> Iterator[dict[str, Any] | CrawlError | None]:
    """One post per row with commentary; reshares without text are skipped (nothing of the author's voice)."""
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "ShareCommentary" not in reader.fieldnames:
        yield CrawlError(f"Shares.csv lacks a ShareCommentary column (columns: {reader.fieldnames})")
        return
    for row in reader:
        commentary = (row.get("ShareCommentary") or "").strip()
        if not commentary:
            yield None  # keeps entry numbers equal to row numbers
            continue
        share_link = (row.get("ShareLink") or "").strip()
        published = _linkedin_date(row.get("Date"))
        if row.get("Date") and published is None:
            yield CrawlError(f"unreadable date {row.get('Date')!r}")
            continue
        post_id = share_link.rstrip("/").rsplit("/", 1)[-1] if share_link else _digest(row.get("Date"), commentary)
        yield {
            "platform": "linkedin", "id": f"linkedin:{post_id}", "text": commentary, "published_at": published,
            "url": _safe_url(share_link),
            "metadata": {"shared_url": row.get("SharedUrl") or None, "visibility": row.get("Visibility") or None},
        }


def x_posts(text: str) -> Iterator[dict[str, Any] | CrawlError | None]:
    """One post per tweet the author wrote; retweets are someone else's words and are skipped."""
    _, _, payload = text.partition("=")
    try:
        items = json.loads(payload)
    except json.JSONDecodeError as exc:
        yield CrawlError(f"tweets.js is not valid JSON after its `window.YTD... =` prefix: {exc}")
        return
    for item in items if isinstance(items, list) else []:
        tweet = item.get("tweet", item) if isinstance(item, dict) else None
        if not isinstance(tweet, dict) or not tweet.get("id_str") or not tweet.get("full_text"):
            yield CrawlError("tweet without id_str or full_text")
            continue
        full_text = tweet["full_text"].strip()
        if full_text.startswith("RT @"):
            yield None
            continue
        yield {
            "platform": "x", "id": f"x:{tweet['id_str']}", "text": full_text,
            "published_at": _x_date(tweet.get("created_at")),
            "url": f"https://x.com/i/web/status/{tweet['id_str']}",
            "metadata": {"lang": tweet.get("lang"), "in_reply_to": tweet.get("in_reply_to_status_id_str"),
                         "favorite_count": _int(tweet.get("favorite_count"))},
        }


def _linkedin_date(value: str | None) -> datetime | None:
    return parse_date(value) if value else None


def _x_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%a %b %d %H:%M:%S %z %Y").astimezone(UTC)
    except ValueError:
        return None


def _safe_url(url: str) -> str | None:
    try:
        return normalize_url(url) if url else None
    except ValueError:
        return None


def _digest(*parts: str | None) -> str:
    return hashlib.sha1("\x1f".join(p or "" for p in parts).encode()).hexdigest()[:16]


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
