"""The bundled sample corpus: its loopback site, feeds, size, eval labels, repository and export builders."""

from __future__ import annotations

import http.client
import json
import subprocess
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from datetime import datetime
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml

from twin.demo import (
    AUTHORS,
    SITE_DIR,
    SampleSiteServer,
    article_paths,
    build_sample_export,
    build_sample_repository,
    serve_sample_site,
    stop,
    write_sources,
)

EVAL_FILE = Path(__file__).resolve().parents[1] / "data" / "retrieval_eval.jsonl"
PLACEHOLDER = "{{BASE_URL}}"


class _ArticleText(HTMLParser):
    """Collects the words inside <article>, the h1, the <time datetime> and the byline."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.words: list[str] = []
        self.h1: list[str] = []
        self.byline: list[str] = []
        self.datetimes: list[str] = []
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.depth += tag == "article"
        self._open.append("byline" if attributes.get("class") == "byline" else tag)
        if tag == "time" and attributes.get("datetime"):
            self.datetimes.append(attributes["datetime"] or "")

    def handle_endtag(self, tag: str) -> None:
        self.depth -= tag == "article"
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.words.extend(data.split())
        if "h1" in self._open:
            self.h1.append(data)
        if "byline" in self._open:
            self.byline.append(data)


def _parse_article(html: str) -> _ArticleText:
    parser = _ArticleText()
    parser.feed(html)
    return parser


def _get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers["Content-Type"], response.read().decode("utf-8")


def _raw_status(server: SampleSiteServer, path: str) -> int:
    """Status for a path sent verbatim (urllib would normalise `..`)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[SampleSiteServer, str]]:
    server, base_url = serve_sample_site()
    yield server, base_url
    stop(server)


def _feed_items(base_url: str, author_id: str) -> list[ElementTree.Element]:
    status, content_type, body = _get(f"{base_url}/{author_id}/feed.xml")
    assert status == 200 and "rss" in content_type
    assert PLACEHOLDER not in body
    root = ElementTree.fromstring(body)
    assert root.tag == "rss" and root.get("version") == "2.0"
    return root.findall("./channel/item")


def test_server_binds_loopback_on_a_free_port(site: tuple[SampleSiteServer, str]) -> None:
    server, base_url = site
    assert server.server_address[0] == "127.0.0.1"
    assert base_url == f"http://127.0.0.1:{server.server_address[1]}"


def test_feeds_list_every_article_with_rewritten_links(site: tuple[SampleSiteServer, str]) -> None:
    _, base_url = site
    for author in AUTHORS:
        items = _feed_items(base_url, author.id)
        on_disk = {f"{base_url}/{author.id}/{p.name}" for p in (SITE_DIR / author.id).glob("*.html")
                   if p.name not in ("index.html", "about.html")}
        links = {item.findtext("link") for item in items}
        assert links == on_disk, f"{author.id}: feed and article files differ"
        for item in items:
            assert item.findtext("title") and item.findtext("description")
            assert author.name in (item.findtext("author") or "")
            assert parsedate_to_datetime(item.findtext("pubDate") or "").tzinfo is not None


def test_every_article_is_served_with_metadata(site: tuple[SampleSiteServer, str]) -> None:
    _, base_url = site
    names = {a.id: a.name for a in AUTHORS}
    for path in article_paths():
        status, content_type, html = _get(base_url + path)
        assert status == 200 and content_type.startswith("text/html")
        assert PLACEHOLDER not in html
        assert f'<link rel="canonical" href="{base_url}{path}">' in html
        article = _parse_article(html)
        assert "".join(article.h1).strip(), f"{path} has no h1"
        assert names[path.split("/")[1]] in "".join(article.byline)
        assert article.datetimes and datetime.fromisoformat(article.datetimes[0]).year >= 2023
        assert "Subscribe to my newsletter" in html  # boilerplate the cleaner has to drop


def test_corpus_size_and_article_lengths() -> None:
    paths = article_paths()
    per_author = {a.id: len(article_paths(a.id)) for a in AUTHORS}
    assert len(paths) == len(set(paths)) >= 40
    assert sum(1 for count in per_author.values() if count >= 10) >= 2, per_author
    lengths = {p: len(_parse_article((SITE_DIR / p.lstrip("/")).read_text(encoding="utf-8")).words) for p in paths}
    outside = {p: n for p, n in lengths.items() if not 350 <= n <= 700}
    assert not outside, f"articles outside 350-700 words: {outside}"
    titles = ["".join(_parse_article((SITE_DIR / p.lstrip("/")).read_text(encoding="utf-8")).h1) for p in paths]
    assert len(set(titles)) == len(titles)


def test_robots_sitemap_and_unknown_paths(site: tuple[SampleSiteServer, str]) -> None:
    server, base_url = site
    _, _, robots = _get(base_url + "/robots.txt")
    assert f"Sitemap: {base_url}/sitemap.xml" in robots
    assert _raw_status(server, "/no-such-author/feed.xml") == 404
    # corpus_files.py sits two folders above the site root: reachable only if the guard fails.
    assert _raw_status(server, "/../../corpus_files.py") == 404
    assert _raw_status(server, "/%2e%2e/%2e%2e/corpus_files.py") == 404


def test_unchanged_page_answers_not_modified(site: tuple[SampleSiteServer, str]) -> None:
    _, base_url = site
    url = base_url + article_paths()[0]
    with urllib.request.urlopen(url, timeout=10) as response:
        etag = response.headers["ETag"]
    request = urllib.request.Request(url, headers={"If-None-Match": etag})
    with pytest.raises(urllib.error.HTTPError) as not_modified:
        urllib.request.urlopen(request, timeout=10)
    assert not_modified.value.code == 304


def test_eval_questions_point_at_existing_articles() -> None:
    questions = [json.loads(line) for line in EVAL_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    existing = set(article_paths())
    author_ids = {a.id for a in AUTHORS}
    assert len(questions) >= 40
    assert len({q["id"] for q in questions}) == len(questions)
    for q in questions:
        assert q["query"].strip() and 1 <= len(q["relevant"]) <= 2, q["id"]
        assert set(q["relevant"]) <= existing, f"{q['id']} names a missing article: {q['relevant']}"
        if q["author"] is not None:
            assert q["author"] in author_ids
            assert all(path.startswith(f"/{q['author']}/") for path in q["relevant"]), q["id"]
    assert sum(len(q["relevant"]) == 2 for q in questions) >= 3
    assert sum(q["author"] is not None for q in questions) >= 3
    covered = {p for q in questions for p in q["relevant"]}
    assert covered == existing, f"articles no question targets: {existing - covered}"


def test_repository_builder_makes_a_deterministic_git_repo(tmp_path: Path) -> None:
    first = build_sample_repository(tmp_path / "one")
    second = build_sample_repository(tmp_path / "two")

    def head(repo: Path) -> str:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True,
                              text=True).stdout.strip()

    assert head(first) == head(second), "same content and dates must give the same commit"
    files = subprocess.run(["git", "ls-files"], cwd=first, check=True, capture_output=True, text=True).stdout.split()
    assert {"README.md", "poetry.lock", "config/pipeline.yaml", "docs/lookback-window.png"} <= set(files)
    assert sum(f.endswith(".py") for f in files) >= 4
    assert (first / "docs" / "lookback-window.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert build_sample_repository(first) == first  # already built: left as it is
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        build_sample_repository(occupied)
    assert (occupied / "keep.txt").read_text() == "mine"


def test_export_builder_writes_an_x_archive(tmp_path: Path) -> None:
    archive = build_sample_export(tmp_path)
    assert archive.read_bytes() == build_sample_export(tmp_path / "again.zip").read_bytes()
    with zipfile.ZipFile(archive) as zf:
        script = zf.read("data/tweets.js").decode("utf-8")
    prefix = "window.YTD.tweets.part0 = "
    assert script.startswith(prefix)
    tweets = [entry["tweet"] for entry in json.loads(script[len(prefix):])]
    assert len(tweets) >= 10 and len({t["id_str"] for t in tweets}) == len(tweets)
    for tweet in tweets:
        assert tweet["full_text"].strip()
        datetime.strptime(tweet["created_at"], "%a %b %d %H:%M:%S %z %Y")


def test_sources_file_points_at_site_repository_and_export(tmp_path: Path) -> None:
    repo, export = tmp_path / "repo", tmp_path / "export.zip"
    dest = write_sources("http://127.0.0.1:8123", repo, export, tmp_path / "cfg" / "sources.yaml")
    authors = {a["id"]: a for a in yaml.safe_load(dest.read_text(encoding="utf-8"))["authors"]}
    assert set(authors) == {a.id for a in AUTHORS}
    for author in AUTHORS:
        assert authors[author.id]["name"] == author.name
        assert authors[author.id]["links"][0] == f"http://127.0.0.1:8123/{author.id}/feed.xml"
    kinds = {link["kind"]: link for a in authors.values() for link in a["links"] if isinstance(link, dict)}
    assert kinds["repository"]["url"] == str(repo.resolve())
    assert kinds["export"]["path"] == str(export.resolve())


def test_shared_fixtures_give_a_loadable_sources_file(sample_site_url: str, sample_sources_file: Path) -> None:
    authors = yaml.safe_load(sample_sources_file.read_text(encoding="utf-8"))["authors"]
    feeds = [link for a in authors for link in a["links"] if isinstance(link, str)]
    assert feeds and all(link.startswith(sample_site_url) for link in feeds)
    for feed in feeds:
        assert _get(feed)[0] == 200
    local = [Path(link.get("url") or link["path"]) for a in authors for link in a["links"] if isinstance(link, dict)]
    assert local and all(path.exists() for path in local)
