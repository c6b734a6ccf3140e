"""The polite fetcher against the hostile local site: every bad page fails with its own reason."""

from __future__ import annotations

import time

import pytest

from tests.fixtures.hostile_site import MISDECLARED
from twin.crawl.errors import CrawlError
from twin.crawl.fetch import DomainThrottle, Fetcher, decode_body, parse_content_type


def fetch_error(settings, url: str) -> CrawlError:
    with Fetcher(settings) as fetcher, pytest.raises(CrawlError) as caught:
        fetcher.get(url)
    return caught.value


def test_good_page_is_fetched_with_the_configured_user_agent(fetch_settings, hostile_site) -> None:
    with Fetcher(fetch_settings) as fetcher:
        page = fetcher.get(hostile_site.url("/articles/one.html"))
    assert page.status == 200 and page.mime == "text/html"
    assert "First article" in page.text
    assert fetcher.client.headers["user-agent"] == "twin-test/1.0"


@pytest.mark.parametrize(
    ("path", "reason", "retryable"),
    [
        ("/private/secret.html", "disallowed by robots.txt", False),
        ("/missing", "HTTP 404", False),
        ("/broken", "HTTP 500", True),
        ("/slow", "timed out after 1s", True),
        ("/image.png", "unsupported content type 'image/png'", False),
        ("/huge.html", "larger than the limit of 200000 bytes", False),
        ("/loop-a", "redirect loop", False),
        ("ftp://127.0.0.1/file.txt", "not an http(s) URL", False),
    ],
)
def test_bad_pages_fail_with_a_clear_reason(fetch_settings, hostile_site, path, reason, retryable) -> None:
    error = fetch_error(fetch_settings, path if "://" in path else hostile_site.url(path))
    assert reason in error.reason
    assert error.retryable is retryable


def test_transient_errors_are_retried_then_reported(fetch_settings, hostile_site) -> None:
    fetch_error(fetch_settings, hostile_site.url("/broken"))
    assert hostile_site.hits["/broken"] == fetch_settings.fetch_retries + 1


def test_huge_page_is_not_read_to_the_end(fetch_settings, hostile_site) -> None:
    started = time.monotonic()
    fetch_error(fetch_settings, hostile_site.url("/huge.html"))
    assert hostile_site.hits["/huge.html"] == 1  # a size limit is not transient: no retry
    assert time.monotonic() - started < 5


def test_redirect_is_followed_to_its_final_normalised_url(fetch_settings, hostile_site) -> None:
    with Fetcher(fetch_settings) as fetcher:
        page = fetcher.get(hostile_site.url("/old-home"))
    assert page.url == hostile_site.url("/articles/new-home.html")


def test_robots_txt_is_fetched_once_and_cached_on_disk(fetch_settings, hostile_site) -> None:
    for _ in range(2):
        with Fetcher(fetch_settings) as fetcher:
            fetcher.get(hostile_site.url("/articles/one.html"))
            fetcher.get(hostile_site.url("/articles/two.html"))
    assert hostile_site.hits["/robots.txt"] == 1


def test_legacy_charset_declared_in_meta_is_decoded(fetch_settings, hostile_site) -> None:
    with Fetcher(fetch_settings) as fetcher:
        page = fetcher.get(hostile_site.url("/legacy.html"))
    assert page.charset is None  # only the meta tag names it
    assert "Привет, мир!" in page.text


def test_decoding_falls_back_to_detection() -> None:
    text = "Съешь же ещё этих мягких французских булок, да выпей чаю. " * 5
    assert decode_body(text.encode("cp1251"), None) == text  # neither declared nor UTF-8
    assert decode_body("naïve".encode("latin-1"), "latin-1") == "naïve"
    assert decode_body(b"x", "no-such-charset") == "x"


def test_content_type_parsing() -> None:
    assert parse_content_type("Text/HTML; Charset=ISO-8859-1") == ("text/html", "ISO-8859-1")
    assert parse_content_type(None) == ("", None)


def test_throttle_spaces_requests_to_one_host(tmp_path) -> None:
    throttle = DomainThrottle(tmp_path, delay_s=0.2)
    started = time.monotonic()
    for _ in range(3):
        throttle.wait("blog.example")
    throttle.wait("other.example")  # another host does not wait
    assert time.monotonic() - started >= 0.4


def test_slow_drip_page_is_cut_at_the_fetch_deadline(fetch_settings, hostile_site) -> None:
    settings = fetch_settings.model_copy(update={"fetch_deadline_s": 2.0, "fetch_retries": 3})
    started = time.monotonic()
    error = fetch_error(settings, hostile_site.url("/slow-drip"))
    elapsed = time.monotonic() - started
    assert "over the fetch deadline of 2s (TWIN_FETCH_DEADLINE_S)" in error.reason
    assert "bytes of its body" in error.reason
    assert not error.retryable and hostile_site.hits["/slow-drip"] == 1  # slowness is not retried
    assert 2.0 <= elapsed < 2.0 + fetch_settings.fetch_timeout_s + 1


def test_retries_stop_at_the_deadline(fetch_settings, hostile_site) -> None:
    # /slow sleeps 3 s, past the 1 s read timeout: without the deadline 6 tries would take over 6 s.
    settings = fetch_settings.model_copy(update={"fetch_deadline_s": 2.5, "fetch_retries": 5})
    started = time.monotonic()
    error = fetch_error(settings, hostile_site.url("/slow"))
    assert "timed out" in error.reason or "fetch deadline" in error.reason
    assert time.monotonic() - started < 2.5 + fetch_settings.fetch_timeout_s + 0.5
    assert hostile_site.hits["/slow"] < 6


@pytest.mark.parametrize("path", sorted(MISDECLARED))
def test_windows_1252_page_declared_as_utf8_is_read_as_windows_1252(fetch_settings, hostile_site, path) -> None:
    title, text = MISDECLARED[path]
    with Fetcher(fetch_settings) as fetcher:
        page = fetcher.get(hostile_site.url(path))
    assert page.charset == "utf-8"  # what the server claimed
    assert f"<title>{title}</title>" in page.text and text in page.text


def test_charset_fallbacks_keep_other_scripts_and_stray_bytes() -> None:
    polish = "Zażółć gęślą jaźń. Pójdźmy do sklepu kupić chleb i masło, a potem wróćmy do domu. " * 3
    assert "ż" in decode_body(polish.encode("cp1250"), "utf-8")  # Central European is not forced to 1252
    russian = "Съешь же ещё этих мягких французских булок, да выпей чаю. " * 5
    assert decode_body(russian.encode("cp1251"), "utf-8") == russian
    utf8 = ("Crème brûlée, déjà vu, naïve façade. " * 10).encode() + b"\xff"  # one stray byte
    assert decode_body(utf8, "utf-8").startswith("Crème brûlée, déjà vu")
