"""The bundled sample corpus for the offline demo.

Three fictional authors, written for this project: a static blog site with RSS feeds (served on
loopback by `twin.demo.site`), a small git repository and an X-style post export. Everything the demo
crawls comes from here, so `make demo` needs no network beyond 127.0.0.1.
"""

from __future__ import annotations

from twin.demo.corpus_files import (
    AUTHORS,
    CORPUS_DIR,
    SITE_DIR,
    SampleAuthor,
    article_paths,
    build_sample_export,
    build_sample_repository,
)
from twin.demo.site import SampleSiteServer, serve_sample_site, stop, write_sources

__all__ = [
    "AUTHORS",
    "CORPUS_DIR",
    "SITE_DIR",
    "SampleAuthor",
    "SampleSiteServer",
    "article_paths",
    "build_sample_export",
    "build_sample_repository",
    "serve_sample_site",
    "stop",
    "write_sources",
]
