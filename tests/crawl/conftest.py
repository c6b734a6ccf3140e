"""Crawl test helpers: tight limits so hostile pages fail fast, a local git repository, export archives."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from twin.settings import Settings, get_settings

LINKEDIN_CSV = (
    "Date,ShareLink,ShareCommentary,SharedUrl,MediaUrl,Visibility\n"
    '2024-01-15 10:30:00,https://www.linkedin.com/feed/update/urn:li:share:111,'
    '"Shipping a crawler that respects robots.txt.\nSecond line, with a comma.",,,MEMBER_NETWORK\n'
    "2024-02-01 09:00:00,https://www.linkedin.com/feed/update/urn:li:share:222,,https://example.org,,PUBLIC\n"
    "2024-02-03 08:00:00,https://www.linkedin.com/feed/update/urn:li:share:333,"
    "Idempotent pipelines sleep well.,,,PUBLIC\n"
)
TWEETS = [
    {"tweet": {"id_str": "1001", "full_text": "Polite crawlers wait between requests.",
               "created_at": "Wed Oct 10 20:19:24 +0000 2018", "lang": "en", "favorite_count": "3"}},
    {"tweet": {"id_str": "1002", "full_text": "RT @someone: not my words",
               "created_at": "Wed Oct 10 20:20:00 +0000 2018"}},
    {"tweet": {"id_str": "1003", "full_text": "Hash the content, skip the rewrite.",
               "created_at": "Thu Oct 11 08:00:00 +0000 2018"}},
    {"tweet": {"full_text": "a broken row without an id"}},
]


@pytest.fixture
def crawl_settings(twin_env: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings of a fresh database with limits small enough for the hostile pages to trip quickly."""
    for name, value in {
        "TWIN_FETCH_TIMEOUT_S": "1", "TWIN_FETCH_RETRIES": "1", "TWIN_MAX_PAGE_BYTES": "200000",
        "TWIN_PER_DOMAIN_DELAY_S": "0.01", "TWIN_MAX_REPO_FILE_BYTES": "20000", "TWIN_USER_AGENT": "twin-test/1.0",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return get_settings()


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.name=Ada", "-c", "user.email=ada@example.org", "-c", "init.defaultBranch=main",
                    *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def local_repo(tmp_path: Path) -> Path:
    """A git repository with code, docs and everything a crawler must skip."""
    repo = tmp_path / "tools"
    (repo / "src").mkdir(parents=True)
    (repo / "node_modules" / "left-pad").mkdir(parents=True)
    (repo / "README.md").write_text("# Tools\n\nSmall tools for polite crawling.\n")
    (repo / "src" / "app.py").write_text("def main() -> None:\n    print('hello')\n")
    (repo / "package-lock.json").write_text('{"lockfileVersion": 3}\n')
    (repo / "node_modules" / "left-pad" / "index.js").write_text("module.exports = 1;\n")
    (repo / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    (repo / "data.bin.txt").write_bytes(b"text\x00with nul")
    (repo / "big.txt").write_text("many words " * 5000)
    (repo / "link.md").symlink_to("/etc/hostname")
    git("init", "-q", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "first", cwd=repo)
    return repo


def linkedin_zip(path: Path, csv_text: str = LINKEDIN_CSV) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("Shares.csv", csv_text)
        archive.writestr("Profile.csv", "First Name,Last Name\nAda,Example\n")
    return path


def x_zip(path: Path, tweets: list[dict] = TWEETS) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data/tweets.js", "window.YTD.tweets.part0 = " + json.dumps(tweets, indent=1))
        archive.writestr("data/account.js", "window.YTD.account.part0 = []")
    return path


@pytest.fixture
def fetch_settings(tmp_path: Path) -> Settings:
    """Same limits as `crawl_settings`, without a database: for fetcher and crawler tests."""
    from twin.settings import load_settings

    return load_settings(data_dir=tmp_path / "data", fetch_timeout_s=1, fetch_retries=1, max_page_bytes=200_000,
                         per_domain_delay_s=0.01, max_repo_file_bytes=20_000, user_agent="twin-test/1.0")
