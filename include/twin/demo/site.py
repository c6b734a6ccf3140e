"""A loopback web server for the sample blog site, and the sources file that points the crawler at it.

Pages and feeds are stored with the literal `{{BASE_URL}}` wherever an absolute link is needed; the
server rewrites it to its own `http://127.0.0.1:PORT` per response, so links work on any free port.
"""

from __future__ import annotations

import hashlib
import mimetypes
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from twin.demo.corpus_files import AUTHORS, BASE_URL_PLACEHOLDER, SITE_DIR

_TEXT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".xml": "application/xml; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
_FEED_TYPE = "application/rss+xml; charset=utf-8"


class SampleSiteServer(ThreadingHTTPServer):
    """Serves `site_dir` on 127.0.0.1 from a daemon thread; `stop()` shuts it down and frees the port."""

    daemon_threads = True

    def __init__(self, port: int = 0, site_dir: Path = SITE_DIR) -> None:
        super().__init__(("127.0.0.1", port), _SiteHandler)
        self.site_dir = Path(site_dir).resolve()
        self.base_url = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, name="sample-site", daemon=True)

    def start(self) -> SampleSiteServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.shutdown()
            self._thread.join(timeout=5)
        self.server_close()


class _SiteHandler(BaseHTTPRequestHandler):
    server: SampleSiteServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and the demo crawl would otherwise print one line per request."""

    def _respond(self, send_body: bool) -> None:
        file = self._resolve(urlsplit(self.path).path)
        if file is None:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8", send_body)
            return
        body = file.read_bytes()
        content_type = _FEED_TYPE if file.name == "feed.xml" else _TEXT_TYPES.get(file.suffix)
        if content_type is not None:
            body = body.replace(BASE_URL_PLACEHOLDER.encode(), self.server.base_url.encode())
        else:
            content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        etag = '"' + hashlib.sha1(body).hexdigest() + '"'
        if self.headers.get("If-None-Match") == etag:
            self._send(HTTPStatus.NOT_MODIFIED, b"", content_type, send_body=False, etag=etag)
            return
        self._send(HTTPStatus.OK, body, content_type, send_body, etag=etag)

    def _resolve(self, url_path: str) -> Path | None:
        """The file for a URL path, or None; never a file outside the site folder."""
        relative = unquote(url_path).lstrip("/")
        candidate = (self.server.site_dir / relative).resolve()
        if candidate.is_dir():
            candidate = candidate / "index.html"
        if not candidate.is_relative_to(self.server.site_dir) or not candidate.is_file():
            return None
        return candidate

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, send_body: bool,
              etag: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if status != HTTPStatus.NOT_MODIFIED else 0))
        if etag:
            self.send_header("ETag", etag)
        self.end_headers()
        if send_body and status != HTTPStatus.NOT_MODIFIED:
            self.wfile.write(body)


def serve_sample_site(port: int = 0, site_dir: Path = SITE_DIR) -> tuple[SampleSiteServer, str]:
    """Start the sample site on 127.0.0.1 (port 0 picks a free one); returns the server and its base URL."""
    server = SampleSiteServer(port, site_dir).start()
    return server, server.base_url


def stop(server: SampleSiteServer) -> None:
    """Stop a server started by `serve_sample_site`."""
    server.stop()


def write_sources(base_url: str, repo_path: Path | None, export_path: Path | None, dest: Path) -> Path:
    """Write the demo's sources YAML (authors and their links) to `dest` and return it.

    Feeds point at the running sample site; the repository and the export, when given, go to the
    authors who own them (Mara's `pipeline-kit`, Tomás's post export).
    """
    authors = []
    for author in AUTHORS:
        links: list[Any] = [base_url.rstrip("/") + author.feed_path]
        if author.has_repository and repo_path is not None:
            links.append({"url": str(Path(repo_path).resolve()), "kind": "repository"})
        if author.has_export and export_path is not None:
            links.append({"path": str(Path(export_path).resolve()), "kind": "export"})
        authors.append({"id": author.id, "name": author.name, "links": links})
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump({"authors": authors}, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return dest
