"""Where the sample corpus lives, who wrote it, and builders for its repository and export.

The repository and the export are built at run time (a git repository cannot live inside ours, and
the export is a zip). Both builds are deterministic: fixed commit dates and zip timestamps give the
same commit id and the same archive bytes on every run, so re-crawling them changes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
SITE_DIR = CORPUS_DIR / "site"
REPOSITORY_DIR = CORPUS_DIR / "repository" / "pipeline-kit"
EXPORT_POSTS = CORPUS_DIR / "exports" / "tomas-okafor-posts.json"
BASE_URL_PLACEHOLDER = "{{BASE_URL}}"

# Fixed dates make the sample repository's commit id the same on every build.
_COMMIT_DATE = "2025-04-28T09:15:00+02:00"
_ZIP_TIMESTAMP = (2025, 4, 1, 12, 0, 0)


@dataclass(frozen=True)
class SampleAuthor:
    id: str  # also the URL path segment of the author's blog
    name: str
    has_repository: bool = False
    has_export: bool = False

    @property
    def feed_path(self) -> str:
        return f"/{self.id}/feed.xml"


AUTHORS: tuple[SampleAuthor, ...] = (
    SampleAuthor("mara-lindqvist", "Mara Lindqvist", has_repository=True),
    SampleAuthor("tomas-okafor", "Tomás Okafor", has_export=True),
    SampleAuthor("priya-raman", "Priya Raman"),
)


def article_paths(author_id: str | None = None) -> list[str]:
    """URL paths of the sample articles (e.g. /priya-raman/stellar-parallax.html), read from the feeds."""
    paths: list[str] = []
    for author in AUTHORS:
        if author_id is not None and author.id != author_id:
            continue
        feed = ElementTree.parse(SITE_DIR / author.id / "feed.xml")
        for link in feed.iterfind("./channel/item/link"):
            paths.append((link.text or "").removeprefix(BASE_URL_PLACEHOLDER))
    return paths


def build_sample_repository(dest: Path) -> Path:
    """Copy Mara's `pipeline-kit` to `dest`, add a small PNG, and commit it as a local git repository.

    Returns `dest`. A `dest` that already holds a git repository is returned as it is (the build is
    deterministic); a non-empty `dest` without one is refused rather than overwritten.
    """
    dest = Path(dest)
    if (dest / ".git").is_dir():
        return dest
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists, is not empty and is not a git repository: refusing to overwrite it")
    shutil.copytree(REPOSITORY_DIR, dest, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache"))
    # A binary file the crawler must skip; generated so our repository holds no binary blobs.
    (dest / "docs").mkdir(exist_ok=True)
    (dest / "docs" / "lookback-window.png").write_bytes(_tiny_png())
    env = {**os.environ, "GIT_AUTHOR_DATE": _COMMIT_DATE, "GIT_COMMITTER_DATE": _COMMIT_DATE}
    identity = ["-c", "user.name=Mara Lindqvist", "-c", "user.email=mara@idempotent.example",
                "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"]
    message = "pipeline-kit 0.4.1: partitions, retry, dedup, schema"
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", message]):
        subprocess.run(["git", *identity, *args], cwd=dest, env=env, check=True, capture_output=True)
    return dest


def build_sample_export(dest: Path) -> Path:
    """Write Tomás's X-style export zip (`data/tweets.js`, `data/account.js`) and return its path.

    `dest` is the zip path, or a folder to write `x-export-tomas-okafor.zip` into.
    """
    dest = Path(dest)
    if dest.suffix != ".zip":
        dest = dest / "x-export-tomas-okafor.zip"
    dest.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(EXPORT_POSTS.read_text(encoding="utf-8"))
    tweets = [{"tweet": {"id_str": p["id_str"], "id": p["id_str"], "full_text": p["full_text"],
                         "created_at": p["created_at"], "lang": "en"}} for p in data["posts"]]
    account = [{"account": {"username": data["account"]["username"],
                            "accountDisplayName": data["account"]["display_name"],
                            "accountId": data["account"]["account_id"]}}]
    members = {
        "data/tweets.js": "window.YTD.tweets.part0 = " + json.dumps(tweets, ensure_ascii=False, indent=2),
        "data/account.js": "window.YTD.account.part0 = " + json.dumps(account, ensure_ascii=False, indent=2),
    }
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, text in members.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=_ZIP_TIMESTAMP), text.encode("utf-8"),
                             compress_type=zipfile.ZIP_DEFLATED)
    return dest


def _tiny_png(width: int = 8, height: int = 8) -> bytes:
    """A valid greyscale gradient PNG, built by hand so no imaging library is needed."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    rows = b"".join(b"\x00" + bytes((x * 32) % 256 for x in range(width)) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
