"""Tests never degrade silently: without a real OpenSearch node the run fails and says why; the
in-memory fallback serves only when TWIN_TEST_OPENSEARCH=osmem is set by hand, and then says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.opensearch import OpenSearchUnavailable, choose_flavor

REPO = Path(__file__).resolve().parents[2]
INSTALLER = REPO / "scripts" / "install_opensearch.sh"
# A node version that is not installed anywhere, and a Maven that is not there.
MISSING = {"OPENSEARCH_VERSION": "9.9.9", "MVN": "/nonexistent/mvn"}


def run_installer(vendor: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "TWIN_TEST_OPENSEARCH"}
    return subprocess.run(["bash", str(INSTALLER)], env={**base, **MISSING, "TWIN_VENDOR_DIR": str(vendor), **env},
                          capture_output=True, text=True, timeout=60)


def test_installer_fails_and_records_why_when_the_node_cannot_be_installed(tmp_path: Path) -> None:
    result = run_installer(tmp_path)
    assert result.returncode == 1
    assert "cannot install the OpenSearch 9.9.9 test node: /nonexistent/mvn not found" in result.stderr
    assert "TWIN_TEST_OPENSEARCH=osmem" in result.stderr  # the way out is named
    assert "not found" in (tmp_path / "opensearch-9.9.9.unavailable").read_text()
    assert not (tmp_path / "opensearch-9.9.9").exists()


def test_installer_accepts_the_fallback_only_when_asked(tmp_path: Path) -> None:
    result = run_installer(tmp_path, TWIN_TEST_OPENSEARCH="osmem")
    assert result.returncode == 0
    assert "the tests use the in-memory fallback server" in result.stderr


def test_choose_flavor(tmp_path: Path) -> None:
    home = tmp_path / "opensearch-2.19.1"
    with pytest.raises(OpenSearchUnavailable, match=r"scripts/install_opensearch\.sh has not run"):
        choose_flavor({}, home)
    (tmp_path / "opensearch-2.19.1.unavailable").write_text("java not found\n")
    with pytest.raises(OpenSearchUnavailable, match=r"java not found.*TWIN_TEST_OPENSEARCH=osmem"):
        choose_flavor({}, home)
    assert choose_flavor({"TWIN_TEST_OPENSEARCH": "osmem"}, home) == "osmem"
    assert choose_flavor({"OPENSEARCH_URL": "http://127.0.0.1:9"}, home) == "url"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "opensearch").touch()
    (home / "plugins" / "opensearch-knn").mkdir(parents=True)
    assert choose_flavor({}, home) == "node"
    assert choose_flavor({"TWIN_TEST_OPENSEARCH": "osmem"}, home) == "osmem"


PROBE = '''
pytest_plugins = ["tests.fixtures.opensearch"]

def test_probe(opensearch_node):
    assert opensearch_node.url.startswith("http://127.0.0.1:")
'''


def run_probe(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_probe.py").write_text(PROBE)
    base = {k: v for k, v in os.environ.items() if k not in ("TWIN_TEST_OPENSEARCH", "OPENSEARCH_URL")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           str(tmp_path / "test_probe.py")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**base, "PYTHONPATH": str(REPO),
                                            "TWIN_TEST_OPENSEARCH_HOME": str(tmp_path / "opensearch-9.9.9"), **env})


def test_a_run_without_a_node_fails_saying_why(tmp_path: Path) -> None:
    result = run_probe(tmp_path)
    assert result.returncode == 1, result.stdout
    assert "no OpenSearch node for the tests" in result.stdout and "has not run" in result.stdout


def test_a_run_on_the_fallback_says_so_in_its_summary(tmp_path: Path) -> None:
    result = run_probe(tmp_path, TWIN_TEST_OPENSEARCH="osmem")
    assert result.returncode == 0, result.stdout
    summary = result.stdout[result.stdout.index("OpenSearch: IN-MEMORY FALLBACK"):]
    assert "k-NN queries and search pipelines were NOT tested" in summary and "1 passed" in summary
