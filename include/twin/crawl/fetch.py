"""Polite HTTP fetching: robots.txt, per-domain rate limit, timeouts, retries, size and type limits,
one total deadline per fetch, and only the addresses netguard allows."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import ssl
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from functools import lru_cache
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import certifi
import charset_normalizer
import httpx
from protego import Protego
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from twin.crawl.errors import CrawlError
from twin.crawl.netguard import AddressPolicy, guarded_transport
from twin.crawl.urls import host_of, normalize_url
from twin.settings import Settings

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
ROBOTS_TTL_S = 3600.0
MAX_CRAWL_DELAY_S = 30.0  # cap on a robots.txt Crawl-delay, so one host cannot stall a run
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml", "text/plain"})
FEED_TYPES = frozenset({"application/rss+xml", "application/atom+xml", "application/rdf+xml", "application/xml",
                        "text/xml", "application/feed+json", "application/json"})
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.IGNORECASE)
# The HTML standard's fallback for pages of Latin-script text whose charset is unknown or wrong.
WESTERN_FALLBACK = "cp1252"
# A Latin-1 symbol between two letters ("Za¿ó³æ") means a Central European page read as Western.
_MID_WORD_SYMBOL = re.compile(r"[^\W\d_][\u00a1-\u00bf][^\W\d_]")


@dataclass(frozen=True)
class Page:
    url: str  # final, normalised URL after redirects
    status: int
    mime: str
    charset: str | None
    body: bytes

    @property
    def text(self) -> str:
        return decode_body(self.body, self.charset)


def decode_body(body: bytes, declared: str | None) -> str:
    """Decode by the declared charset, then an HTML meta charset, then UTF-8; when none of them
    decodes, UTF-8 with a few bad bytes stays UTF-8, Latin-script text is read as Windows-1252
    (the HTML standard's fallback; detectors often guess Windows-1250 and turn "crème" into
    "crčme"), and anything else goes to charset detection."""
    meta = _META_CHARSET.search(body[:4096])
    for encoding in (declared, meta.group(1).decode("ascii") if meta else None, "utf-8"):
        if not encoding:
            continue
        try:
            return body.decode(encoding)
        except (LookupError, UnicodeDecodeError):
            continue
    utf8 = body.decode("utf-8", errors="replace")
    bad = utf8.count("\ufffd")
    if sum(ord(c) > 127 for c in utf8) >= 20 * bad:  # a stray byte in a UTF-8 page
        log.warning("page is UTF-8 with %d undecodable bytes; they became U+FFFD", bad)
        return utf8
    best = charset_normalizer.from_bytes(body).best()
    guess = str(best) if best is not None else None
    if guess is None or _mostly_latin(guess):
        try:
            western = body.decode(WESTERN_FALLBACK)
        except UnicodeDecodeError:
            western = None
        if western is not None and not _MID_WORD_SYMBOL.search(western):
            return western
    return guess if guess is not None else body.decode(WESTERN_FALLBACK, errors="replace")


def _mostly_latin(text: str) -> bool:
    letters = [c for c in text if ord(c) > 127 and c.isalpha()]
    latin = sum(unicodedata.name(c, "").startswith("LATIN") for c in letters)
    return latin * 2 >= len(letters)


def parse_content_type(header: str | None) -> tuple[str, str | None]:
    if not header:
        return "", None
    message = Message()
    message["content-type"] = header
    return message.get_content_type().lower(), message.get_param("charset")  # type: ignore[return-value]


class Deadline:
    """One total time budget for a fetch: redirects, robots.txt, retries and their back-off, and
    every byte of the body. Politeness waits (rate limit, Crawl-delay) are bounded on their own and
    do not use it up."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.ends - time.monotonic()

    def extend(self, seconds: float) -> None:
        self.ends += seconds

    def check(self, url: str, read: int | None = None) -> None:
        if self.remaining() <= 0:
            got = f" after {read} bytes of its body" if read is not None else ""
            raise CrawlError(f"gave up on {url}{got}: over the fetch deadline of {self.seconds:g}s "
                             f"(TWIN_FETCH_DEADLINE_S)")


class DomainThrottle:
    """At most one request per `delay` seconds per host, across processes on this machine.

    Airflow runs mapped tasks in separate processes, so the last request time lives in a file,
    guarded by an exclusive lock that a waiter holds while it sleeps.
    """

    def __init__(self, folder: Path, delay_s: float) -> None:
        self.folder = folder
        self.delay_s = delay_s

    def wait(self, host: str, delay_s: float | None = None) -> float:
        """Wait for the host's turn; returns the seconds slept."""
        delay = max(self.delay_s, delay_s or 0.0)
        if delay <= 0:
            return 0.0
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / hashlib.sha1(host.encode()).hexdigest()).open("a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            last = float(handle.read() or 0)
            pause = last + delay - time.time()
            if pause > 0:
                time.sleep(pause)
            handle.seek(0)
            handle.truncate()
            handle.write(repr(time.time()))
        return max(pause, 0.0)


class RobotsCache:
    """robots.txt per origin, cached in memory and on disk for an hour."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._parsed: dict[str, Protego] = {}

    def rules(self, origin: str, download: Callable[[str], str]) -> Protego:
        if origin not in self._parsed:
            self._parsed[origin] = Protego.parse(self._text(origin, download))
        return self._parsed[origin]

    def _text(self, origin: str, download: Callable[[str], str]) -> str:
        cached = self.folder / hashlib.sha1(origin.encode()).hexdigest()
        if cached.exists() and time.time() - cached.stat().st_mtime < ROBOTS_TTL_S:
            return cached.read_text(encoding="utf-8")
        text = download(origin + "/robots.txt")
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}")  # rename is atomic: readers never see half a file
        partial.write_text(text, encoding="utf-8")
        partial.replace(cached)
        return text


class Fetcher:
    """GET pages politely. One instance per crawl of a link; close it (or use `with`)."""

    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        try:
            self.policy = AddressPolicy.parse(settings.fetch_allowed_networks)
        except ValueError as exc:
            raise CrawlError(str(exc)) from None
        self.client = httpx.Client(
            headers={"User-Agent": settings.user_agent}, timeout=settings.fetch_timeout_s,
            follow_redirects=False, transport=transport or guarded_transport(self.policy, _tls_context()),
        )
        self._deadline = Deadline(settings.fetch_deadline_s)
        state = settings.data_dir / "crawl"
        self.throttle = DomainThrottle(state / "throttle", settings.per_domain_delay_s)
        self.robots = RobotsCache(state / "robots")

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, url: str, accept: frozenset[str] = HTML_TYPES) -> Page:
        """Fetch one page, retrying transient failures with exponential backoff, all within one
        deadline (TWIN_FETCH_DEADLINE_S)."""
        deadline = self._deadline = Deadline(self.settings.fetch_deadline_s)

        def out_of_time(state: RetryCallState) -> bool:  # no retry whose back-off outlasts the deadline
            return deadline.remaining() <= (state.upcoming_sleep or 0)

        retrying = Retrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, CrawlError) and exc.retryable),
            stop=stop_after_attempt(self.settings.fetch_retries + 1) | out_of_time,
            wait=wait_exponential(multiplier=0.5, max=8), reraise=True,
            before_sleep=lambda state: log.info("retrying %s after: %s", url, state.outcome.exception()),
        )
        for attempt in retrying:
            with attempt:
                return self._follow(url, accept)
        raise AssertionError("unreachable")  # tenacity either returns or re-raises

    def _timeout(self, url: str) -> float:
        """The per-request timeout, never past the deadline."""
        self._deadline.check(url)
        return min(self.settings.fetch_timeout_s, self._deadline.remaining())

    def _follow(self, url: str, accept: frozenset[str]) -> Page:
        seen: set[str] = set()
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            if current in seen:
                raise CrawlError(f"redirect loop at {current}")
            if urlsplit(current).scheme not in {"http", "https"}:
                raise CrawlError(f"not an http(s) URL: {current}")
            seen.add(current)
            rules = self._robots(current)
            if not rules.can_fetch(current, self.settings.user_agent):
                raise CrawlError(f"disallowed by robots.txt: {current}")
            self._deadline.extend(self.throttle.wait(
                host_of(current), min(rules.crawl_delay(self.settings.user_agent) or 0, MAX_CRAWL_DELAY_S)))
            result = self._stream(current, accept)
            if isinstance(result, Page):
                return result
            current = result
        raise CrawlError(f"more than {MAX_REDIRECTS} redirects from {url}")

    def _robots(self, url: str) -> Protego:
        parts = urlsplit(url)
        return self.robots.rules(f"{parts.scheme}://{parts.netloc}", self._download_robots)

    def _download_robots(self, robots_url: str) -> str:
        self._deadline.extend(self.throttle.wait(host_of(robots_url)))
        try:
            with self.client.stream("GET", robots_url, follow_redirects=True,
                                    timeout=self._timeout(robots_url)) as response:
                if response.status_code >= 500:
                    # RFC 9309: a server error on robots.txt means "assume everything is disallowed" for now.
                    raise CrawlError(f"robots.txt answered HTTP {response.status_code}", retryable=True)
                if response.status_code >= 400:
                    return ""  # no robots.txt: everything allowed
                body = self._read_limited(response, robots_url)
        except httpx.HTTPError as exc:
            raise CrawlError(f"robots.txt unreachable: {type(exc).__name__}", retryable=True) from None
        return body.decode("utf-8", errors="replace")

    def _stream(self, url: str, accept: frozenset[str]) -> Page | str:
        """Return the page, or the next URL when the answer is a redirect."""
        timeout = self._timeout(url)
        try:
            with self.client.stream("GET", url, timeout=timeout) as response:
                if response.is_redirect:
                    return normalize_url(urljoin(url, response.headers["location"]))
                _check_status(response)
                mime, charset = parse_content_type(response.headers.get("content-type"))
                if mime not in accept:
                    raise CrawlError(f"unsupported content type {mime or 'none'!r} (expected one of "
                                     f"{', '.join(sorted(accept))})")
                body = self._read_limited(response, url)
                return Page(url=url, status=response.status_code, mime=mime, charset=charset, body=body)
        except httpx.TimeoutException:
            raise CrawlError(f"timed out after {timeout:.3g}s: {url}", retryable=True) from None
        except httpx.TransportError as exc:
            raise CrawlError(f"network error on {url}: {type(exc).__name__}: {exc}", retryable=True) from None

    def _read_limited(self, response: httpx.Response, url: str) -> bytes:
        """The body, refused past the size limit or the deadline (a page that drips a few bytes a
        second never trips the per-read timeout, so the deadline is checked after every chunk)."""
        limit = self.settings.max_page_bytes
        too_big = f"page is larger than the limit of {limit} bytes (TWIN_MAX_PAGE_BYTES)"
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise CrawlError(too_big)
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise CrawlError(too_big)  # leaving the `with` block drops the connection unread
            chunks.append(chunk)
            self._deadline.check(url, size)
        return b"".join(chunks)


@lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    # Loading the CA bundle costs ~0.1 s; one context serves every fetcher of the process.
    return ssl.create_default_context(cafile=certifi.where())


def _check_status(response: httpx.Response) -> None:
    code = response.status_code
    if code == 429 or code >= 500:
        raise CrawlError(f"HTTP {code} {response.reason_phrase} from {response.url}", retryable=True)
    if code >= 400:
        raise CrawlError(f"HTTP {code} {response.reason_phrase} from {response.url}")
