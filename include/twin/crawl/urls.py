"""URL normalisation, so that one page has one key however a link was written."""

from __future__ import annotations

from urllib.parse import urldefrag, urlsplit, urlunsplit

from courlan import normalize_url as _courlan_normalize


def normalize_url(url: str) -> str:
    """Lower-case scheme and host, drop the default port, the fragment and tracking parameters
    (utm_*, fbclid, gclid, ref, ...), and sort the query.

    courlan (trafilatura's URL library) does the heavy lifting; it keeps fragments, which never
    name a different document for a crawler, so they are dropped here.
    """
    url = url.strip()
    if not urlsplit(url).scheme:
        raise ValueError(f"not an absolute URL: {url!r}")
    normalised = _courlan_normalize(url)
    normalised, _ = urldefrag(normalised)
    parts = urlsplit(normalised)
    # "@" is a legal path character (RFC 3986 pchar) that courlan percent-encodes; profile URLs
    # such as medium.com/@user read better, and fetch the same, with it kept.
    return urlunsplit(parts._replace(path=parts.path.replace("%40", "@")))


def host_of(url: str) -> str:
    """The host (with a non-default port) that rate limits and robots.txt are kept per."""
    return urlsplit(url).netloc.lower()


def is_url(target: str) -> bool:
    return urlsplit(target).scheme in {"http", "https", "file", "ssh", "git"}
