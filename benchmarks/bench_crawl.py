"""Crawl throughput against a local site, beside raw HTTP GETs of the same pages in the same run.

    .venv/bin/python -m benchmarks.bench_crawl [--pages 200]

Prints pages/s for: raw GETs (baseline), the crawler's fetch + extraction, and the full
`crawl_link` (robots.txt, fetch, extraction, upsert into a MongoDB-protocol server), with each
one's ratio to the baseline. The per-domain delay is set to 0 here: with the default
TWIN_PER_DOMAIN_DELAY_S of 0.5 s, politeness caps one host at 2 pages/s whatever the code costs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from benchmarks.report import record
from benchmarks.servers import local_mongo


def page_html(number: int) -> bytes:
    paragraphs = "".join(
        f"<p>Article {number}, paragraph {i}: crawlers fetch politely, extract the main text and store each "
        f"page once under its normalised address, so that reruns write nothing new.</p>" for i in range(12)
    )
    return (f"<html><head><title>Article {number}</title><meta name='author' content='Ada'></head><body>"
            f"<nav><a href='/'>Home</a></nav><article><h1>Article {number}</h1>{paragraphs}</article>"
            f"<footer>footer</footer></body></html>").encode()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/robots.txt":
            body, kind = b"User-agent: *\nDisallow: /private/\n", "text/plain"
        else:
            body, kind = page_html(int(self.path.rsplit("/", 1)[-1] or 0)), "text/html; charset=utf-8"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _timed(label: str, work: Callable[[], int]) -> tuple[str, float]:
    started = time.perf_counter()
    count = work()
    seconds = time.perf_counter() - started
    return label, count / seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=200)
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="twin-bench-crawl-"))
    site = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{site.server_address[1]}"
    urls = [f"{base}/articles/{n}" for n in range(args.pages)]
    try:
        with local_mongo(workdir) as mongo_uri:
            os.environ.update({"TWIN_DATA_DIR": str(workdir / "data"), "MONGODB_URI": mongo_uri,
                               "MONGODB_DATABASE": "bench_crawl", "TWIN_PER_DOMAIN_DELAY_S": "0",
                               "TWIN_FETCH_ALLOWED_NETWORKS": "127.0.0.0/8"})  # the local site is on loopback
            results = _run(urls)
    finally:
        site.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)
    baseline = results[0][1]
    print(f"crawl benchmark: {args.pages} pages from a local site")
    for label, rate in results:
        print(f"  {label:<44} {rate:8.1f} pages/s   ratio to raw GETs {rate / baseline:6.3f}")
    for label, rate in results[1:]:
        record("crawl", label, rate, "raw HTTP GETs", baseline, "pages/s")


def _run(urls: list[str]) -> list[tuple[str, float]]:
    from twin.crawl.article import ArticleCrawler
    from twin.crawl.base import CrawlContext
    from twin.crawl.fetch import Fetcher
    from twin.crawl.pipeline import crawl_link
    from twin.crawl.sources import Link
    from twin.settings import get_settings

    settings = get_settings()
    links = [Link(author_id="ada", author_name="Ada", url=url) for url in urls]

    def raw_gets() -> int:
        with httpx.Client() as client:
            return sum(len(client.get(url).content) > 0 for url in urls)

    def fetch_and_extract() -> int:
        with Fetcher(settings) as fetcher:
            ctx = CrawlContext(settings=settings, fetcher=fetcher, run_id="bench")
            return sum(len(ArticleCrawler().crawl(link, ctx).documents) for link in links)

    def full_crawl(run_id: str) -> Callable[[], int]:
        return lambda: sum(crawl_link(link, run_id)["status"] != "failed" for link in links)

    raw_gets()  # warm up the site and the client code paths
    return [
        _timed("raw HTTP GETs (baseline)", raw_gets),
        _timed("crawler fetch + extraction", fetch_and_extract),
        _timed("crawl_link, first run (insert)", full_crawl("bench-1")),
        _timed("crawl_link, rerun (unchanged)", full_crawl("bench-2")),
    ]


if __name__ == "__main__":
    main()
