"""Git repositories: a shallow clone of a URL or a local path, one document per text or code file.

`git clone` runs only for links of the sources file: http(s), ssh and git URLs whose host resolves
to an allowed address (netguard; the clone is pinned to the checked address and follows no
redirect), or a local path the file lists. No other transport (file://, ext::) is open to a clone.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from twin.crawl.base import CrawlContext, Crawler, CrawlResult, make_document
from twin.crawl.errors import CrawlError
from twin.crawl.netguard import AddressPolicy
from twin.crawl.sources import Link
from twin.crawl.urls import normalize_url
from twin.models import DocumentKind, SourceKind

log = logging.getLogger(__name__)
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:(?!//)")

CLONE_TIMEOUT_S = 300
REMOTE_SCHEMES = {"http": 80, "https": 443, "ssh": 22, "git": 9418}
OWNER_REPO_HOSTS = frozenset({"github.com", "codeberg.org", "bitbucket.org"})
SKIPPED_DIRS = frozenset({
    ".git", "node_modules", "vendor", "vendors", "third_party", "thirdparty", "bower_components", ".venv",
    "venv", "__pycache__", ".tox", ".mypy_cache", ".pytest_cache", ".ruff_cache", "site-packages", "dist",
    ".idea", ".vscode", ".gradle", ".next", "Pods",
})
LOCK_FILES = frozenset({
    "package-lock.json", "yarn.lock", "pnpm-lock.yaml", "poetry.lock", "pipfile.lock", "cargo.lock",
    "gemfile.lock", "composer.lock", "go.sum", "uv.lock", "pdm.lock", "flake.lock", "npm-shrinkwrap.json",
})
BINARY_SUFFIXES = frozenset({
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".ico", ".webp", ".svgz", ".pdf", ".zip", ".gz", ".tgz", ".bz2",
    ".xz", ".7z", ".tar", ".jar", ".war", ".whl", ".egg", ".so", ".dll", ".dylib", ".exe", ".bin", ".o", ".a",
    ".pyc", ".class", ".woff", ".woff2", ".ttf", ".otf", ".eot", ".mp3", ".mp4", ".wav", ".avi", ".mov",
    ".webm", ".psd", ".sqlite", ".db", ".parquet", ".pkl", ".pt", ".onnx", ".safetensors", ".npy", ".npz",
})
LANGUAGES = {
    ".py": "python", ".pyi": "python", ".ipynb": "jupyter", ".js": "javascript", ".mjs": "javascript",
    ".cjs": "javascript", ".jsx": "javascript", ".ts": "typescript", ".tsx": "typescript", ".go": "go",
    ".rs": "rust", ".java": "java", ".kt": "kotlin", ".scala": "scala", ".c": "c", ".h": "c", ".cc": "cpp",
    ".cpp": "cpp", ".hpp": "cpp", ".cs": "csharp", ".rb": "ruby", ".php": "php", ".swift": "swift",
    ".m": "objective-c", ".r": "r", ".jl": "julia", ".lua": "lua", ".pl": "perl", ".sh": "shell",
    ".bash": "shell", ".zsh": "shell", ".ps1": "powershell", ".sql": "sql", ".html": "html", ".css": "css",
    ".scss": "scss", ".vue": "vue", ".svelte": "svelte", ".md": "markdown", ".rst": "restructuredtext",
    ".txt": "text", ".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".json": "json", ".xml": "xml",
    ".ini": "ini", ".cfg": "ini", ".tf": "terraform", ".proto": "protobuf", ".graphql": "graphql",
    ".dart": "dart", ".ex": "elixir", ".exs": "elixir", ".erl": "erlang", ".hs": "haskell", ".ml": "ocaml",
    ".clj": "clojure", ".tex": "latex", ".svg": "svg",
}
LANGUAGES_BY_NAME = {"makefile": "make", "dockerfile": "dockerfile", "license": "text", "readme": "text",
                     "cmakelists.txt": "cmake", "gemfile": "ruby", "rakefile": "ruby", "procfile": "text"}


class RepositoryCrawler(Crawler):
    name = SourceKind.REPOSITORY.value
    source_kind = SourceKind.REPOSITORY

    def crawl(self, link: Link, ctx: CrawlContext) -> CrawlResult:
        source, repo_url = _clone_source(link)
        remote = bool(link.url) and not source.startswith("file://")
        pins = _checked_remote(source, ctx.fetcher.policy) if remote else []
        with tempfile.TemporaryDirectory(prefix="twin-repo-") as tmp:
            checkout = Path(tmp) / "repo"
            commit = shallow_clone(source, checkout, remote=remote, pins=pins)
            _check_repo_size(checkout, ctx.settings.max_repo_bytes)
            return self._documents(checkout, repo_url, commit, link, ctx)

    def _documents(self, root: Path, repo_url: str, commit: str, link: Link, ctx: CrawlContext) -> CrawlResult:
        result = CrawlResult()
        skipped: Counter[str] = Counter()
        for path in walk_files(root, skipped):
            relative = path.relative_to(root).as_posix()
            text, why_not = read_text_file(path, ctx.settings.max_repo_file_bytes)
            if text is None:
                skipped[why_not] += 1
                continue
            result.documents.append(make_document(
                link, ctx, source_kind=SourceKind.REPOSITORY, kind=DocumentKind.CODE, url=repo_url,
                path=relative, title=relative, content=text,
                metadata={"language": language_of(path), "commit": commit, "bytes": path.stat().st_size},
            ))
        log.info("repository %s: %d files kept, skipped %s", repo_url, len(result.documents), dict(skipped))
        if not result.documents:
            raise CrawlError(f"no text or code files in {repo_url} (skipped: {dict(skipped) or 'none'})")
        return result


def _clone_source(link: Link) -> tuple[str, str]:
    """What to hand `git clone`, and the normalised URL the documents are keyed by."""
    if link.path:
        local = Path(link.path)
        if not local.is_dir():
            raise CrawlError(f"repository path not found: {local}")
        # file:// makes git honour --depth for a local repository too.
        return local.resolve().as_uri(), local.resolve().as_uri()
    url = link.url or ""
    if url.startswith(("http://", "https://")):
        normalised = _repository_root(normalize_url(url).removesuffix("/").removesuffix(".git"))
        return normalised, normalised
    if url.startswith("file://"):  # a local path the sources file wrote as a URL
        return _clone_source(Link(**{**link.model_dump(), "url": None, "path": urlsplit(url).path}))
    return url, url  # ssh / git: URLs are kept as written


def _checked_remote(url: str, policy: AddressPolicy) -> list[str]:
    """Refuse a remote whose scheme is not a clone transport or whose host is not allowed; returns
    `host:port:addresses` for git's http.curloptResolve, so the clone connects where was checked."""
    if _SCP_LIKE.match(url):  # git@host:owner/repo.git is ssh
        url = "ssh://" + url.replace(":", "/", 1)
    parts = urlsplit(url)
    if parts.scheme not in REMOTE_SCHEMES:
        raise CrawlError(f"git clone refused for {url}: only {', '.join(REMOTE_SCHEMES)} URLs or local paths "
                         "listed in the sources file are cloned")
    if not parts.hostname:
        raise CrawlError(f"git clone refused for {url}: no host")
    port = parts.port or REMOTE_SCHEMES[parts.scheme]
    addresses = policy.resolve(parts.hostname, port)
    return [f"{parts.hostname}:{port}:{','.join(addresses)}"] if parts.scheme in {"http", "https"} else []


def _repository_root(url: str) -> str:
    """github.com/owner/repo/tree/main/src -> github.com/owner/repo: a page of a repo names the repo."""
    parts = urlsplit(url)
    host = (parts.hostname or "").removeprefix("www.")
    segments = [s for s in parts.path.split("/") if s]
    if host in OWNER_REPO_HOSTS and len(segments) > 2:
        return urlunsplit((parts.scheme, parts.netloc, "/" + "/".join(segments[:2]), "", ""))
    if "/-/" in parts.path:  # GitLab: /group/sub/repo/-/tree/main
        return urlunsplit((parts.scheme, parts.netloc, parts.path.split("/-/")[0], "", ""))
    return url


def shallow_clone(source: str, dest: Path, *, remote: bool, pins: list[str] | None = None) -> str:
    """`git clone --depth 1`; returns the commit. No prompts: a private repo fails instead of hanging.

    GIT_ALLOW_PROTOCOL closes every other transport (submodules and ext:: included); a remote clone
    follows no HTTP redirect, which could lead it to an address that was never checked."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_LFS_SKIP_SMUDGE": "1",
           "GIT_ALLOW_PROTOCOL": "http:https:ssh:git" if remote else "file"}
    options = ["-c", "http.followRedirects=false"]
    for pin in pins or []:
        options += ["-c", f"http.curloptResolve={pin}"]
    command = ["git", *options, "clone", "--depth", "1", "--single-branch", "--no-tags", "--quiet", "--",
               source, str(dest)]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, env=env, timeout=CLONE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise CrawlError(f"git clone of {source} timed out after {CLONE_TIMEOUT_S}s", retryable=remote) from None
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or "").strip().splitlines()[-1:] or ["no message"]
        raise CrawlError(f"git clone of {source} failed: {detail[0]}", retryable=remote) from None
    head = subprocess.run(["git", "-C", str(dest), "rev-parse", "HEAD"], capture_output=True, text=True)
    return head.stdout.strip()


def _check_repo_size(root: Path, limit: int) -> None:
    total = sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    if total > limit:
        raise CrawlError(f"repository is {total} bytes, over the limit of {limit} (TWIN_MAX_REPO_BYTES)")


def walk_files(root: Path, skipped: Counter[str]) -> list[Path]:
    """Files worth reading, in a stable order: no vendored trees, lock files, binaries or symlinks."""
    kept: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not os.path.islink(os.path.join(folder, d)))
        for name in sorted(files):
            path = Path(folder, name)
            lower = name.lower()
            if path.is_symlink():
                skipped["symlink"] += 1  # may point outside the checkout
            elif lower in LOCK_FILES or lower.endswith(".lock"):
                skipped["lock file"] += 1
            elif path.suffix.lower() in BINARY_SUFFIXES or lower.endswith((".min.js", ".min.css", ".map")):
                skipped["binary or generated"] += 1
            else:
                kept.append(path)
    return kept


def read_text_file(path: Path, max_bytes: int) -> tuple[str | None, str]:
    """The file's text, or None and why it was skipped."""
    size = path.stat().st_size
    if size > max_bytes:
        return None, "oversized"
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        return None, "binary"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, "binary"
    if not text.strip():
        return None, "empty"
    return text, ""


def language_of(path: Path) -> str:
    return LANGUAGES.get(path.suffix.lower()) or LANGUAGES_BY_NAME.get(path.name.lower(), "text")
