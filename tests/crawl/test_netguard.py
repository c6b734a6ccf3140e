"""No SSRF: the crawler reaches only public addresses and what TWIN_FETCH_ALLOWED_NETWORKS names,
checked after name resolution, at every redirect hop, and for git clones."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from twin.crawl.base import CrawlContext
from twin.crawl.errors import CrawlError
from twin.crawl.fetch import Fetcher
from twin.crawl.netguard import AddressPolicy, BlockedAddressError
from twin.crawl.repository import RepositoryCrawler
from twin.crawl.sources import Link


def refusal(settings, url: str) -> CrawlError:
    with Fetcher(settings) as fetcher, pytest.raises(CrawlError) as caught:
        fetcher.get(url)
    return caught.value


@pytest.fixture
def strict(fetch_settings):
    """The production default: nothing but public addresses."""
    return fetch_settings.model_copy(update={"fetch_allowed_networks": ""})


def test_loopback_is_refused_by_default_by_address_and_by_name(strict, hostile_site) -> None:
    error = refusal(strict, hostile_site.url("/articles/one.html"))
    assert "a loopback address" in error.reason and "TWIN_FETCH_ALLOWED_NETWORKS" in error.reason
    port = hostile_site.base.rsplit(":", 1)[1]
    assert "a loopback address" in refusal(strict, f"http://localhost:{port}/articles/one.html").reason  # resolved
    assert hostile_site.hits == {}  # not even robots.txt was asked for


@pytest.mark.parametrize(("path", "kind"), [("/to-metadata", "link-local"), ("/to-private", "private")])
def test_every_redirect_hop_is_checked(fetch_settings, hostile_site, path, kind) -> None:
    error = refusal(fetch_settings, hostile_site.url(path))  # loopback allowed, the hop's target is not
    assert isinstance(error, BlockedAddressError) and f"a {kind} address" in error.reason
    assert not error.retryable and hostile_site.hits[path] == 1


def test_allow_list_takes_networks_and_host_names() -> None:
    policy = AddressPolicy.parse("10.1.0.0/16, ::1 ,intranet.example")
    assert policy.why_refused("x", ipaddress.ip_address("10.1.2.3")) is None
    assert policy.why_refused("x", ipaddress.ip_address("::1")) is None
    assert policy.why_refused("intranet.example", ipaddress.ip_address("192.168.1.1")) is None
    assert "private" in policy.why_refused("x", ipaddress.ip_address("10.2.0.1"))
    assert "loopback" in policy.why_refused("x", ipaddress.ip_address("::ffff:127.0.0.1"))  # v4 mapped in v6
    assert "link-local" in policy.why_refused("x", ipaddress.ip_address("169.254.169.254"))
    assert policy.why_refused("x", ipaddress.ip_address("93.184.216.34")) is None  # public
    with pytest.raises(ValueError, match="TWIN_FETCH_ALLOWED_NETWORKS: 'not a/host'"):
        AddressPolicy.parse("127.0.0.0/8,not a/host")


def test_a_name_with_one_private_address_is_refused(monkeypatch) -> None:
    # A name that resolves to a public and a private address could be steered to either.
    answers = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 443)) for ip in ("93.184.216.34", "10.0.0.5")]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: answers)
    with pytest.raises(BlockedAddressError, match=r"10\.0\.0\.5.*private"):
        AddressPolicy().resolve("mixed.example", 443)


@pytest.mark.parametrize(("url", "words"), [
    ("http://169.254.169.254/repo.git", "a link-local address"),
    ("https://10.0.0.8/team/repo", "a private address"),
    ("git@127.0.0.1:team/repo.git", "a loopback address"),
    ("ext::sh -c touch% /tmp/pwned", "only http, https, ssh, git URLs"),
])
def test_git_clone_is_refused_for_unlisted_transports_and_hosts(strict, url, words) -> None:
    link = Link(author_id="ada", author_name="Ada", url=url, kind="repository")
    with Fetcher(strict) as fetcher, pytest.raises(CrawlError, match=words):
        RepositoryCrawler().crawl(link, CrawlContext(settings=strict, fetcher=fetcher, run_id="r"))


def test_a_local_repository_listed_as_a_file_url_is_still_cloned(fetch_settings, local_repo) -> None:
    link = Link(author_id="ada", author_name="Ada", url=local_repo.as_uri(), kind="repository")
    with Fetcher(fetch_settings) as fetcher:
        result = RepositoryCrawler().crawl(link, CrawlContext(settings=fetch_settings, fetcher=fetcher, run_id="r"))
    assert {d.path for d in result.documents} == {"README.md", "src/app.py"}


def test_a_feed_entry_cannot_point_the_crawler_at_a_local_file(fetch_settings, hostile_site) -> None:
    from twin.crawl.feed import FeedCrawler

    body = hostile_site.pages["/feed.xml"].body.replace(
        hostile_site.url("/articles/from-feed.html").encode(), b"file:///etc/passwd")
    hostile_site.pages["/local.xml"] = type(hostile_site.pages["/feed.xml"])(
        body=body, content_type="application/rss+xml")
    link = Link(author_id="ada", author_name="Ada", url=hostile_site.url("/local.xml"), kind="feed")
    with Fetcher(fetch_settings) as fetcher:
        result = FeedCrawler().crawl(link, CrawlContext(settings=fetch_settings, fetcher=fetcher, run_id="r"))
    [failure] = result.failures  # feedparser hands the link on as file://etc/passwd
    assert failure["reason"].startswith("feed entry link is not an http(s) URL: file://")
    assert len(result.documents) == 1  # the other entry is stored
