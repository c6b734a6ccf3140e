"""Pick the SearchIndex adapter named by the settings (TWIN_SEARCH_BACKEND)."""

from __future__ import annotations

from twin.search.base import SearchIndex
from twin.settings import Settings, SettingsError, get_settings


def get_search_index(settings: Settings | None = None, name: str | None = None) -> SearchIndex:
    """The configured index under `name` (default TWIN_INDEX_NAME); embedded LanceDB unless opensearch."""
    settings = settings or get_settings()
    index_name = name or settings.index_name
    if settings.search_backend == "opensearch":
        if not settings.opensearch_url:
            raise SettingsError("TWIN_SEARCH_BACKEND=opensearch needs OPENSEARCH_URL (e.g. https://host:9200)")
        from twin.search.opensearch_index import OpenSearchSearchIndex

        return OpenSearchSearchIndex.from_settings(settings, index_name)
    from twin.search.lancedb_index import LanceDBSearchIndex

    return LanceDBSearchIndex(settings.lancedb_dir, index_name)
