"""The factory picks the adapter named by TWIN_SEARCH_BACKEND."""

from __future__ import annotations

from pathlib import Path

import pytest

from twin.search.factory import get_search_index
from twin.search.lancedb_index import LanceDBSearchIndex
from twin.search.opensearch_index import OpenSearchSearchIndex
from twin.settings import SettingsError, load_settings


def test_lancedb_is_the_default(tmp_path: Path):
    index = get_search_index(load_settings(data_dir=tmp_path, index_name="chunks"))
    assert isinstance(index, LanceDBSearchIndex)
    assert index.name == "chunks" and index.root_dir == tmp_path / "lancedb"
    assert get_search_index(load_settings(data_dir=tmp_path), name="other").name == "other"


def test_opensearch_needs_its_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("OPENSEARCH_URL", raising=False)
    with pytest.raises(SettingsError, match="OPENSEARCH_URL"):
        get_search_index(load_settings(search_backend="opensearch", data_dir=tmp_path))


def test_opensearch_adapter_from_settings(tmp_path: Path):
    settings = load_settings(search_backend="opensearch", opensearch_url="https://127.0.0.1:9",
                             opensearch_user="reader", opensearch_password="secret",
                             opensearch_verify_certs=False, data_dir=tmp_path)
    index = get_search_index(settings, name="chunks")
    assert isinstance(index, OpenSearchSearchIndex) and index.name == "chunks"
    connection = index.client.transport.get_connection()
    assert connection.host == "https://127.0.0.1:9"
