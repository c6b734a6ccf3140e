"""The sources file: authors and their links, in YAML.

```yaml
authors:
  - id: ada                      # optional; derived from the name when absent
    name: Ada Example
    links:
      - https://blog.example/feed.xml              # kind detected (feed/article/repository/export)
      - {url: https://github.com/ada/tools, kind: repository}
      - {path: exports/ada-linkedin.zip, kind: export}   # relative to the sources file
```
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from twin.crawl.errors import SourcesError
from twin.models import Author


class Link(BaseModel):
    """One thing to crawl for one author: a URL or a local path, with an optional kind."""

    model_config = ConfigDict(extra="forbid")

    author_id: str
    author_name: str
    url: str | None = None
    path: str | None = None  # absolute once loaded
    kind: str | None = None  # a SourceKind value or the name of a registered crawler

    @model_validator(mode="after")
    def _one_target(self) -> Link:
        if bool(self.url) == bool(self.path):
            raise ValueError("a link needs exactly one of `url` or `path`")
        return self

    @property
    def target(self) -> str:
        return self.url or self.path or ""


class _LinkEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = None
    path: str | None = None
    kind: str | None = None


class _AuthorEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    name: str
    links: list[str | _LinkEntry] = Field(default_factory=list)


class _SourcesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    authors: list[_AuthorEntry]


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "author"


def load_sources(path: Path) -> tuple[list[Author], list[Link]]:
    """Read and validate a sources file; errors name the file and the offending entry."""
    if not path.is_file():
        raise SourcesError(f"sources file not found: {path} (set TWIN_SOURCES_FILE)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        parsed = _SourcesFile.model_validate(data)
    except (yaml.YAMLError, ValidationError) as exc:
        raise SourcesError(f"invalid sources file {path}: {exc}") from None
    return parse_authors(parsed, base_dir=path.parent)


def parse_authors(parsed: _SourcesFile, base_dir: Path) -> tuple[list[Author], list[Link]]:
    authors: list[Author] = []
    links: list[Link] = []
    seen_ids: set[str] = set()
    for entry in parsed.authors:
        author_id = entry.id or slugify(entry.name)
        if author_id in seen_ids:
            raise SourcesError(f"author id {author_id!r} appears twice in the sources file")
        seen_ids.add(author_id)
        author_links = [_link(item, author_id, entry.name, base_dir) for item in entry.links]
        authors.append(Author(id=author_id, name=entry.name, links=[link.target for link in author_links]))
        links.extend(author_links)
    return authors, links


def _link(item: str | _LinkEntry, author_id: str, author_name: str, base_dir: Path) -> Link:
    entry = _LinkEntry(url=item) if isinstance(item, str) else item
    url, path = entry.url, entry.path
    if url and path is None and not _looks_remote(url):  # a local path written as a URL: read it as one
        url, path = None, url
    if path is not None:
        # Relative paths are read against the sources file, so the file can move with its exports.
        path = str((base_dir / Path(path).expanduser()).resolve())
    try:
        return Link(author_id=author_id, author_name=author_name, url=url, path=path, kind=entry.kind)
    except ValidationError as exc:
        raise SourcesError(f"invalid link {item!r} of author {author_id!r}: {exc}") from None


def _looks_remote(target: str) -> bool:
    # "scheme://..." or git's scp-like "git@host:owner/repo.git"
    return "://" in target or re.match(r"^[\w.-]+@[\w.-]+:", target) is not None


def link_for(target: str, author_name: str, *, author_id: str | None = None, kind: str | None = None) -> Link:
    """A link from a command line argument: an existing local path or a URL."""
    local = Path(target).expanduser()
    if not _looks_remote(target) and local.exists():
        return Link(author_id=author_id or slugify(author_name), author_name=author_name,
                    path=str(local.resolve()), kind=kind)
    return Link(author_id=author_id or slugify(author_name), author_name=author_name, url=target, kind=kind)


def links_as_dicts(links: list[Link]) -> list[dict[str, Any]]:
    return [link.model_dump() for link in links]
