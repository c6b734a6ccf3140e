"""One SearchIndex per test on each adapter: LanceDB in a temporary folder, OpenSearch on the node."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.search.chunks import DIM
from twin.search.base import SearchIndex

BACKENDS = ["lancedb", pytest.param("opensearch", marks=pytest.mark.opensearch)]


def _open(backend: str, request: pytest.FixtureRequest, tmp_path: Path, name: str) -> SearchIndex:
    if backend == "lancedb":
        from twin.search.lancedb_index import LanceDBSearchIndex

        return LanceDBSearchIndex(tmp_path / "lancedb", name)
    from opensearchpy import OpenSearch

    from twin.search.opensearch_index import OpenSearchSearchIndex

    node = request.getfixturevalue("opensearch_node")
    return OpenSearchSearchIndex(OpenSearch(hosts=[node.url], timeout=60), name)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def open_index(backend: str, request: pytest.FixtureRequest, tmp_path: Path):
    """Opens another handle on an index by name (as a second reader process would)."""
    return lambda name: _open(backend, request, tmp_path, name)


@pytest.fixture
def index(open_index) -> Iterator[SearchIndex]:
    idx = open_index(f"t-{uuid.uuid4().hex[:12]}")
    idx.ensure(DIM)
    yield idx
    idx.drop()


@pytest.fixture
def knn_index(index: SearchIndex, backend: str, request: pytest.FixtureRequest) -> SearchIndex:
    """The index, for tests that need k-NN queries (the in-memory fallback server has none)."""
    if backend == "opensearch" and not request.getfixturevalue("opensearch_node").has_knn:
        pytest.skip("fallback server without k-NN; its request bodies are checked in test_opensearch_bodies.py")
    return index
