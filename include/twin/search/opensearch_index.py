"""The production SearchIndex: OpenSearch with the k-NN plugin (HNSW `knn_vector`, BM25, filters).

Blue-green by alias: the logical name is an alias over one physical index `<name>-<timestamp>`;
`commit_rebuild` moves the alias in one `_aliases` call (atomic), then deletes the old index.

Hybrid search runs server-side (search pipeline + `hybrid` query) when the node has the
neural-search plugin; otherwise a BM25 query and a k-NN query are fused on the client with the
same `fusion.py` the embedded adapter uses.

The vector field uses the Lucene HNSW engine: it needs no native library (the faiss/nmslib engines
load native code that minimal distributions lack, and a missing one stops the node).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from opensearchpy import NotFoundError, OpenSearch
from opensearchpy.helpers import scan, streaming_bulk

from twin.models import Chunk, EmbeddedChunk, SearchFilters, SearchHit
from twin.search.base import BulkResult, HybridWeights, IndexNotBuiltError, SearchIndex
from twin.search.fusion import fuse_hits
from twin.settings import Settings

VECTOR = "embedding"
BULK_CHUNK = 500
# HNSW explores this many candidates at least (Lucene's ef_search is the k-NN query's k): a wider
# search for a few ms more lifts recall@10 from about 0.90 to near 1 on 100k chunks.
ANN_CANDIDATES = 100
_SOURCE = {"excludes": [VECTOR]}
_CHUNK_FIELDS = list(Chunk.model_fields)


def index_body(dimension: int, ef_construction: int = 128, m: int = 16) -> dict[str, Any]:
    """Settings and mapping of one physical index."""
    keyword = {"type": "keyword"}
    return {
        "settings": {
            "index.knn": True,
            "number_of_shards": 1,
            "auto_expand_replicas": "0-1",  # green on one node, one replica once there are two
        },
        "mappings": {
            "dynamic": False,
            "properties": {
                "id": keyword, "document_id": keyword, "chunk_index": {"type": "integer"},
                "kind": keyword, "author_id": keyword, "author_name": keyword, "url": keyword,
                "path": keyword, "title": {"type": "text", "analyzer": "english"},
                "text": {"type": "text", "analyzer": "english"}, "token_count": {"type": "integer"},
                "published_at": {"type": "date"}, "document_hash": keyword,
                VECTOR: {
                    "type": "knn_vector", "dimension": dimension,
                    "method": {"name": "hnsw", "space_type": "cosinesimil", "engine": "lucene",
                               "parameters": {"ef_construction": ef_construction, "m": m}},
                },
            },
        },
    }


def filter_clauses(filters: SearchFilters | None) -> list[dict[str, Any]]:
    """Bool `filter` clauses for the metadata filters (empty when there is nothing to filter on)."""
    if filters is None or filters.is_empty():
        return []
    clauses: list[dict[str, Any]] = []
    if filters.author_ids:
        clauses.append({"terms": {"author_id": list(filters.author_ids)}})
    if filters.kinds:
        clauses.append({"terms": {"kind": [str(k) for k in filters.kinds]}})
    date_range: dict[str, str] = {}
    if filters.published_after:
        date_range["gte"] = _iso(filters.published_after)
    if filters.published_before:
        date_range["lt"] = _iso(filters.published_before)
    if date_range:
        clauses.append({"range": {"published_at": date_range}})
    return clauses


def filter_query(filters: SearchFilters | None) -> dict[str, Any]:
    clauses = filter_clauses(filters)
    return {"bool": {"filter": clauses}} if clauses else {"match_all": {}}


def bm25_query(query: str, filters: SearchFilters | None, title_boost: float = 0.0) -> dict[str, Any]:
    """BM25 on the chunk text; with `title_boost` > 0 the title field too, its score at that weight
    added to the text's (`most_fields`, as the embedded adapter's multi-match sums its fields)."""
    match: dict[str, Any] = {"match": {"text": {"query": query}}}
    if title_boost > 0:
        match = {"multi_match": {"query": query, "fields": ["text", f"title^{title_boost:g}"],
                                 "type": "most_fields"}}
    return {"bool": {"must": [match], "filter": filter_clauses(filters)}}


def knn_query(vector: Sequence[float], k: int, filters: SearchFilters | None) -> dict[str, Any]:
    """Approximate k-NN; the Lucene engine applies `filter` while searching the graph."""
    clause: dict[str, Any] = {"vector": list(vector), "k": k}
    if filters is not None and not filters.is_empty():
        clause["filter"] = filter_query(filters)
    return {"knn": {VECTOR: clause}}


def exact_query(vector: Sequence[float], filters: SearchFilters | None) -> dict[str, Any]:
    """Brute-force cosine over every (filtered) document with the k-NN plugin's scoring script."""
    return {"script_score": {
        "query": filter_query(filters),
        "script": {"source": "knn_score", "lang": "knn",
                   "params": {"field": VECTOR, "query_value": list(vector), "space_type": "cosinesimil"}},
    }}


def hybrid_pipeline(weights: HybridWeights) -> dict[str, Any]:
    """A search pipeline for the neural-search plugin's `hybrid` query."""
    if weights.method == "rrf":
        return {"phase_results_processors": [{"score-ranker-processor": {
            "combination": {"technique": "rrf", "rank_constant": weights.rrf_k}}}]}
    return {"phase_results_processors": [{"normalization-processor": {
        "normalization": {"technique": "min_max"},
        "combination": {"technique": "arithmetic_mean",
                        "parameters": {"weights": _unit_weights(weights)}}}}]}


def hybrid_query(query: str, vector: Sequence[float], k: int, filters: SearchFilters | None,
                 title_boost: float = 0.0) -> dict[str, Any]:
    return {"hybrid": {"queries": [bm25_query(query, filters, title_boost), knn_query(vector, k, filters)]}}


def _unit_weights(weights: HybridWeights) -> list[float]:
    total = weights.bm25 + weights.vector
    if total <= 0:
        raise ValueError("hybrid weights must not both be zero")
    return [weights.bm25 / total, weights.vector / total]


def _iso(value: datetime) -> str:
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat()


def _document(chunk: EmbeddedChunk) -> dict[str, Any]:
    source = chunk.model_dump(mode="json")
    source["kind"] = str(chunk.kind)
    return source


class OpenSearchSearchIndex(SearchIndex):
    """A SearchIndex on an OpenSearch cluster; `name` is the alias readers and writers use."""

    def __init__(self, client: OpenSearch, name: str, *, title_boost: float = 0.0,
                 _physical: str | None = None) -> None:
        self.client = client
        self.name = name
        self.title_boost = title_boost  # BM25 also matches the title at this weight (0: the text only)
        self._physical = _physical  # set for a staged (not yet live) rebuild
        self._neural: bool | None = None
        self._pipelines: set[str] = set()  # search pipelines this client already put

    @classmethod
    def from_settings(cls, settings: Settings, name: str | None = None) -> OpenSearchSearchIndex:
        if not settings.opensearch_url:
            raise ValueError("OPENSEARCH_URL is not set")
        auth = None
        if settings.opensearch_user:
            password = settings.opensearch_password.get_secret_value() if settings.opensearch_password else ""
            auth = (settings.opensearch_user, password)
        client = OpenSearch(hosts=[settings.opensearch_url], http_auth=auth,
                            verify_certs=settings.opensearch_verify_certs, ssl_show_warn=False, timeout=60)
        return cls(client, name or settings.index_name)

    @property
    def _target(self) -> str:
        return self._physical or self.name

    # --- alias ------------------------------------------------------------------------------
    def live_indices(self) -> list[str]:
        """Physical indices behind the alias (one, except during a botched manual change)."""
        try:
            return sorted(self.client.indices.get_alias(name=self.name))
        except NotFoundError:
            return []

    def _new_physical_name(self) -> str:
        return f"{self.name}-{datetime.now(UTC).strftime('%Y%m%d%H%M%S%f')}{uuid.uuid4().hex[:6]}"

    def _exists(self) -> bool:
        return bool(self.client.indices.exists(index=self._target))

    # --- SearchIndex ------------------------------------------------------------------------
    def ensure(self, dimension: int) -> None:
        if self._exists():
            existing = self.dimension()
            if existing != dimension:
                raise ValueError(f"search index {self.name!r} holds {existing}-d vectors, not {dimension}-d; "
                                 "rebuild it (begin_rebuild/commit_rebuild) to change the embedding model")
            return
        body = index_body(dimension)
        if self._physical:
            # A staged index takes one bulk load: no periodic refresh (fewer tiny segments, fewer
            # HNSW graph rebuilds on merge). upsert still refreshes before it returns.
            body["settings"]["refresh_interval"] = "-1"
            self.client.indices.create(index=self._physical, body=body)
        else:
            body["aliases"] = {self.name: {"is_write_index": True}}
            self.client.indices.create(index=self._new_physical_name(), body=body)

    def dimension(self) -> int:
        mappings = self.client.indices.get_mapping(index=self._target)
        first = next(iter(mappings.values()))
        return int(first["mappings"]["properties"][VECTOR]["dimension"])

    def upsert(self, chunks: Sequence[EmbeddedChunk]) -> BulkResult:
        result = BulkResult()
        actions = ({"_op_type": "index", "_index": self._target, "_id": c.id, "_source": _document(c)}
                   for c in chunks)
        # raise_on_error=False: a rejected item (e.g. wrong vector size) is reported, the rest indexed.
        for ok, item in streaming_bulk(self.client, actions, chunk_size=BULK_CHUNK, max_retries=3,
                                       raise_on_error=False, raise_on_exception=False):
            outcome = next(iter(item.values()))
            if ok:
                result.indexed += 1
            else:
                result.failures.append((str(outcome.get("_id")), _reason(outcome)))
        self.client.indices.refresh(index=self._target)  # searchable when we return
        return result

    def delete_documents(self, document_ids: Sequence[str]) -> int:
        # Ids by scan, then a bulk delete: works on every distribution (delete_by_query lives in the
        # optional reindex module) and tells exactly how many chunks went.
        ids = list(dict.fromkeys(document_ids))
        if not ids:
            return 0
        hits = scan(self.client, index=self._target, _source=False,
                    query={"query": {"terms": {"document_id": ids}}})
        actions = ({"_op_type": "delete", "_index": self._target, "_id": hit["_id"]} for hit in hits)
        deleted = 0
        for ok, item in streaming_bulk(self.client, actions, chunk_size=BULK_CHUNK, raise_on_error=False):
            deleted += int(ok and item["delete"].get("result") == "deleted")
        self.client.indices.refresh(index=self._target)
        return deleted

    def chunk_ids(self, document_id: str) -> set[str]:
        hits = scan(self.client, index=self._target, _source=False,
                    query={"query": {"term": {"document_id": document_id}}})
        return {hit["_id"] for hit in hits}

    def chunk_ids_many(self, document_ids: Sequence[str]) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {d: set() for d in document_ids}
        ids = list(found)
        for start in range(0, len(ids), BULK_CHUNK):  # a terms query is capped (65,536 terms by default)
            hits = scan(self.client, index=self._target, _source=["document_id"],
                        query={"query": {"terms": {"document_id": ids[start:start + BULK_CHUNK]}}})
            for hit in hits:
                found[hit["_source"]["document_id"]].add(hit["_id"])
        return found

    def delete_chunks(self, chunk_ids: Sequence[str]) -> int:
        actions = ({"_op_type": "delete", "_index": self._target, "_id": chunk_id}
                   for chunk_id in dict.fromkeys(chunk_ids))
        deleted = 0
        for ok, item in streaming_bulk(self.client, actions, chunk_size=BULK_CHUNK, raise_on_error=False):
            deleted += int(ok and item["delete"].get("result") == "deleted")
        if deleted:
            self.client.indices.refresh(index=self._target)
        return deleted

    def count(self, filters: SearchFilters | None = None) -> int:
        response = self.client.count(index=self._target, body={"query": filter_query(filters)})
        return int(response["count"])

    def search_bm25(self, query: str, k: int, filters: SearchFilters | None = None) -> list[SearchHit]:
        if not query.strip():
            return []
        return self._search({"size": k, "query": bm25_query(query, filters, self.title_boost)}, "bm25")

    def document_frequencies(self, terms: Sequence[str]) -> tuple[dict[str, int], int]:
        unique = [t for t in dict.fromkeys(terms) if t.strip()]
        lines: list[dict[str, Any]] = []
        for term in unique:  # one round trip: a counting search per term
            lines += [{"index": self._target}, {"size": 0, "track_total_hits": True,
                                                "query": {"match": {"text": {"query": term}}}}]
        responses = self.client.msearch(body=lines)["responses"] if lines else []
        found = {t: 0 for t in terms}
        for term, response in zip(unique, responses, strict=True):
            if "error" in response:
                raise RuntimeError(f"term statistics on {self._target!r} failed: {response['error']}")
            found[term] = int(response["hits"]["total"]["value"])
        return found, self.count()

    def search_vector(self, vector: Sequence[float], k: int, filters: SearchFilters | None = None,
                      exact: bool = False) -> list[SearchHit]:
        query = exact_query(vector, filters) if exact else knn_query(vector, max(k, ANN_CANDIDATES), filters)
        hits = self._search({"size": k, "query": query}, "vector")
        # OpenSearch scores cosinesimil as (1 + cos) / 2; report cosine, as the embedded adapter does.
        return [hit.model_copy(update={"score": 2.0 * hit.score - 1.0}) for hit in hits]

    def search_hybrid(self, query: str, vector: Sequence[float], k: int, filters: SearchFilters | None = None,
                      weights: HybridWeights | None = None) -> list[SearchHit]:
        weights = weights or HybridWeights()
        candidates = max(k * 4, 20)  # fusion needs more than k from each list to reorder well
        if self.has_neural_search():
            return self._server_hybrid(query, vector, k, candidates, filters, weights)
        bodies = [{"size": candidates, "query": bm25_query(query, filters)},
                  {"size": candidates, "query": knn_query(vector, max(candidates, ANN_CANDIDATES), filters)}]
        bm25, dense = self._msearch(bodies, ["bm25", "vector"])  # one round trip for both
        dense = [hit.model_copy(update={"score": 2.0 * hit.score - 1.0}) for hit in dense]
        return fuse_hits(bm25 if query.strip() else [], dense, k, weights)

    def begin_rebuild(self, dimension: int) -> OpenSearchSearchIndex:
        staged = OpenSearchSearchIndex(self.client, self.name, title_boost=self.title_boost,
                                       _physical=self._new_physical_name())
        staged.ensure(dimension)
        return staged

    def commit_rebuild(self, staged: SearchIndex) -> None:
        if not isinstance(staged, OpenSearchSearchIndex) or staged.name != self.name or not staged._physical:
            raise ValueError("commit_rebuild takes the index returned by begin_rebuild on this index")
        self.client.indices.put_settings(index=staged._physical, body={"index": {"refresh_interval": None}})
        old = [index for index in self.live_indices() if index != staged._physical]
        actions: list[dict[str, Any]] = [{"remove": {"index": index, "alias": self.name}} for index in old]
        actions.append({"add": {"index": staged._physical, "alias": self.name, "is_write_index": True}})
        self.client.indices.update_aliases(body={"actions": actions})  # one call: readers never see a gap
        for index in old:
            self.client.indices.delete(index=index, params={"ignore_unavailable": "true"})

    def drop(self) -> None:
        indices = [self._physical] if self._physical else self.live_indices()
        for index in indices:
            self.client.indices.delete(index=index, params={"ignore_unavailable": "true"})

    # --- helpers ----------------------------------------------------------------------------
    def has_neural_search(self) -> bool:
        if self._neural is None:
            plugins = self.client.cat.plugins(format="json")
            self._neural = any(p.get("component") == "opensearch-neural-search" for p in plugins)
        return self._neural

    def _server_hybrid(self, query: str, vector: Sequence[float], k: int, candidates: int,
                       filters: SearchFilters | None, weights: HybridWeights) -> list[SearchHit]:
        pipeline = f"twin-hybrid-{weights.method}-{weights.bm25:g}-{weights.vector:g}-{weights.rrf_k}"
        if pipeline not in self._pipelines:
            self.client.transport.perform_request("PUT", f"/_search/pipeline/{pipeline}",
                                                  body=hybrid_pipeline(weights))
            self._pipelines.add(pipeline)
        body = {"size": k, "query": hybrid_query(query, vector, candidates, filters, self.title_boost)}
        return self._search(body, "hybrid", params={"search_pipeline": pipeline})

    def _search(self, body: dict[str, Any], retriever: str, params: dict[str, str] | None = None
                ) -> list[SearchHit]:
        try:
            response = self.client.search(index=self._target, body={**body, "_source": _SOURCE}, params=params)
        except NotFoundError as error:
            raise IndexNotBuiltError(f"search index {self._target!r} does not exist yet: run the features pipeline"
                                     ) from error
        return _hits(response, retriever)

    def _msearch(self, bodies: list[dict[str, Any]], retrievers: list[str]) -> list[list[SearchHit]]:
        lines: list[dict[str, Any]] = []
        for body in bodies:
            lines += [{"index": self._target}, {**body, "_source": _SOURCE}]
        responses = self.client.msearch(body=lines)["responses"]
        for response in responses:
            if "error" in response:
                if "index_not_found_exception" in str(response["error"]):
                    raise IndexNotBuiltError(f"search index {self._target!r} does not exist yet: run the features "
                                             "pipeline")
                raise RuntimeError(f"search on {self._target!r} failed: {response['error']}")
        return [_hits(r, retriever) for r, retriever in zip(responses, retrievers, strict=True)]


def _hits(response: dict[str, Any], retriever: str) -> list[SearchHit]:
    hits = []
    for rank, hit in enumerate(response["hits"]["hits"], start=1):
        source = hit["_source"]
        chunk = Chunk.model_validate({f: source.get(f) for f in _CHUNK_FIELDS})
        hits.append(SearchHit(chunk=chunk, score=float(hit["_score"]), retriever=retriever, ranks={retriever: rank}))
    return hits


def _reason(outcome: dict[str, Any]) -> str:
    error = outcome.get("error")
    if isinstance(error, dict):
        cause = error.get("caused_by", {}).get("reason")
        return f"{error.get('type')}: {error.get('reason')}" + (f" ({cause})" if cause else "")
    return str(error or outcome.get("exception") or f"status {outcome.get('status')}")
