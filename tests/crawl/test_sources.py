"""The sources file and URL normalisation."""

from __future__ import annotations

from pathlib import Path

import pytest

from twin.crawl.errors import SourcesError
from twin.crawl.sources import link_for, load_sources
from twin.crawl.urls import normalize_url

SOURCES = """
authors:
  - id: ada
    name: Ada Example
    links:
      - https://blog.example/feed.xml
      - {url: https://github.com/ada/tools, kind: repository}
      - {path: exports/ada-linkedin.zip, kind: export}
  - name: Grace Hopper
    links: [https://grace.example/posts/1]
"""


def test_sources_file_lists_authors_and_links(tmp_path: Path) -> None:
    sources = tmp_path / "conf" / "sources.yaml"
    sources.parent.mkdir()
    sources.write_text(SOURCES)
    authors, links = load_sources(sources)
    assert [(a.id, a.name) for a in authors] == [("ada", "Ada Example"), ("grace-hopper", "Grace Hopper")]
    assert [(link.author_id, link.target, link.kind) for link in links] == [
        ("ada", "https://blog.example/feed.xml", None),
        ("ada", "https://github.com/ada/tools", "repository"),
        ("ada", str(tmp_path / "conf" / "exports" / "ada-linkedin.zip"), "export"),  # relative to the file
        ("grace-hopper", "https://grace.example/posts/1", None),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("authors: [{name: A, links: [{url: x, path: y}]}]", "exactly one of `url` or `path`"),
        ("authors: [{name: A, links: [{link: x}]}]", "Extra inputs are not permitted"),
        ("authors: [{name: A}, {name: A}]", "author id 'a' appears twice"),
        ("authors: [{links: []}]", "name"),
        ("authors: [\n", "invalid sources file"),
    ],
)
def test_invalid_sources_fail_with_a_clear_message(tmp_path: Path, text: str, message: str) -> None:
    sources = tmp_path / "sources.yaml"
    sources.write_text(text)
    with pytest.raises(SourcesError, match=message):
        load_sources(sources)


def test_missing_sources_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SourcesError, match="TWIN_SOURCES_FILE"):
        load_sources(tmp_path / "nope.yaml")


def test_a_local_path_written_under_url_is_crawled_as_a_path(tmp_path: Path) -> None:
    sources = tmp_path / "sources.yaml"
    sources.write_text("authors:\n  - name: Ada\n    links:\n      - {url: ./repo, kind: repository}\n"
                       "      - git@github.com:ada/tools.git\n")
    _, links = load_sources(sources)
    assert (links[0].url, links[0].path) == (None, str(tmp_path / "repo"))
    assert (links[1].url, links[1].path) == ("git@github.com:ada/tools.git", None)


def test_link_for_a_command_line_target(tmp_path: Path) -> None:
    assert link_for(str(tmp_path), "Ada Example").path == str(tmp_path)
    web = link_for("https://blog.example/a", "Ada Example", kind="article")
    assert (web.url, web.author_id, web.kind) == ("https://blog.example/a", "ada-example", "article")


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("HTTP://Blog.Example:80/a/b?utm_source=x&b=2&a=1#frag", "http://blog.example/a/b?a=1&b=2"),
        ("https://blog.example:443/p?fbclid=1&z=1", "https://blog.example/p?z=1"),
        ("https://blog.example:8443/Case/Kept", "https://blog.example:8443/Case/Kept"),
        ("https://medium.com/@ada", "https://medium.com/@ada"),
    ],
)
def test_url_normalisation(raw: str, normalised: str) -> None:
    assert normalize_url(raw) == normalised


def test_relative_url_is_rejected() -> None:
    with pytest.raises(ValueError, match="not an absolute URL"):
        normalize_url("/just/a/path")
