"""Hybrid retrieval: self-query filters, optional query expansion, BM25 / vector / fused search,
dedupe and optional cross-encoder reranking. Each optional step that cannot run says why in `notes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from twin.features.embedding import Embedder
from twin.models import Author, SearchFilters, SearchHit
from twin.retrieval.expansion import expand_query
from twin.retrieval.llm import QueryLLM
from twin.retrieval.relevance import RelevanceModel, content_words, load_model, relevance_features
from twin.retrieval.rerank import Reranker
from twin.retrieval.selfquery import SelfQuery, merge_filters
from twin.search.base import HybridParts, HybridWeights, SearchIndex
from twin.search.fusion import reciprocal_rank_fusion

Mode = Literal["bm25", "vector", "hybrid"]
MODES: tuple[Mode, ...] = ("bm25", "vector", "hybrid")


@dataclass
class RetrievalResult:
    query: str
    hits: list[SearchHit]
    filters: SearchFilters
    phrasings: list[str]  # the question and any expansions that were searched
    notes: list[str] = field(default_factory=list)  # steps skipped or adjusted, and why
    # How likely the index holds an answer: the relevance model's probability over `features` (see
    # twin.retrieval.relevance), or the best passage's cosine without a model; None in BM25 mode.
    # Compared with `min_relevance` (chosen on labelled questions) it says whether to answer at all.
    relevance: float | None = None
    min_relevance: float = 0.0
    features: dict[str, float] = field(default_factory=dict)

    @property
    def answerable(self) -> bool:
        """False when nothing in the index matches the question well enough to answer from it."""
        return bool(self.hits) and (self.relevance is None or self.relevance >= self.min_relevance)


def dedupe_hits(hits: Sequence[SearchHit]) -> list[SearchHit]:
    """Drop repeated chunks and chunks whose text repeats a better-ranked one (e.g. cross-posts)."""
    seen_ids: set[str] = set()
    seen_texts: set[str] = set()
    unique = []
    for hit in hits:
        text_key = " ".join(hit.chunk.text.lower().split())
        if hit.chunk.id in seen_ids or text_key in seen_texts:
            continue
        seen_ids.add(hit.chunk.id)
        seen_texts.add(text_key)
        unique.append(hit)
    return unique


class Retriever:
    def __init__(self, index: SearchIndex, embedder: Embedder, *, authors: Sequence[Author] = (),
                 llm: QueryLLM | None = None, reranker: Reranker | None = None,
                 weights: HybridWeights | None = None, rerank_candidates: int = 30,
                 min_relevance: float | None = None, aggregate_weight: float = 0.3,
                 relevance_model: RelevanceModel | None = None,
                 query_vectors: dict[str, list[float]] | None = None, self_query_llm: bool = True) -> None:
        self.index = index
        self.embedder = embedder
        self.llm = llm
        self.reranker = reranker
        self.weights = weights or HybridWeights()
        # The LLM may write expansions only: self-query by rules is the more precise with a small model.
        self.self_query = SelfQuery(authors, llm if self_query_llm else None)
        self.rerank_candidates = rerank_candidates
        self.relevance_model = relevance_model
        # Without an explicit threshold the model's own, chosen with it; without a model none.
        self.min_relevance = (min_relevance if min_relevance is not None
                              else relevance_model.threshold if relevance_model else 0.0)
        self._frequencies: dict[str, int] = {}  # chunk count per word, valid while the index size holds
        self._frequency_total = -1
        self.aggregate_weight = aggregate_weight
        # A query is embedded once, whatever the mode; retrievers over one corpus may share the cache.
        self._query_vectors: dict[str, list[float]] = {} if query_vectors is None else query_vectors

    def query_vector(self, query: str) -> list[float]:
        if query not in self._query_vectors:
            if len(self._query_vectors) >= 1024:
                self._query_vectors.clear()
            self._query_vectors[query] = self.embedder.encode_query(query)
        return self._query_vectors[query]

    def search(self, query: str, k: int, filters: SearchFilters | None = None,
               mode: Mode = "hybrid") -> list[SearchHit]:
        """One phrasing through one retriever."""
        if mode == "bm25":
            return self.index.search_bm25(query, k, filters)
        vector = self.query_vector(query)
        if mode == "vector":
            return self.index.search_vector(vector, k, filters)
        if mode == "hybrid":
            return self.index.search_hybrid(query, vector, k, filters, self.weights)
        raise ValueError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")

    def retrieve(self, query: str, *, k: int = 10, filters: SearchFilters | None = None, mode: Mode = "hybrid",
                 self_query: bool = True, expand: bool = False, rerank: bool = False,
                 aggregate: bool = False) -> RetrievalResult:
        if not query.strip():
            raise ValueError("the query is empty")
        notes: list[str] = []
        explicit = filters or SearchFilters()
        # Filters to try in turn: the inferred ones, then fewer of them, then only the caller's.
        # A filter read from the question must never empty a result the question alone would get.
        attempts = [(explicit, "")]
        if self_query:
            intent = self.self_query.extract(query)
            notes.extend(intent.notes)
            if intent.matched:
                notes.append(f"self-query ({intent.source}): filtering on " + ", ".join(intent.matched))
            attempts = _relaxations(explicit, merge_filters(filters, intent.filters))
        phrasings = [query, *self._expansions(query, expand, notes)]
        use_reranker = rerank and self._can_rerank(notes)
        # Fetch more than k: dedupe drops some, and the reranker needs candidates to reorder.
        fetch = max(k, self.rerank_candidates) if use_reranker else 2 * k
        parts: HybridParts | None = None  # the question's own BM25 and vector lists, when hybrid
        for attempt, (filters, _) in enumerate(attempts):
            if mode == "hybrid":  # one search gives the ranking and the relevance signal's inputs
                parts = self.index.search_hybrid_parts(query, self.query_vector(query), fetch, filters, self.weights)
                lists = [parts.fused, *(self.search(p, fetch, filters, mode) for p in phrasings[1:])]
            else:
                lists = [self.search(p, fetch, filters, mode) for p in phrasings]
            if any(lists) or attempt == len(attempts) - 1:
                break
            notes.append(f"self-query: no result with the inferred {attempts[attempt + 1][1]} filter; "
                         "searched without it")
        hits = dedupe_hits(lists[0] if len(lists) == 1 else _fuse_phrasings(lists, mode))
        if use_reranker:
            assert self.reranker is not None
            hits = self.reranker.rerank(query, hits, k)
        if aggregate:
            hits = aggregate_by_document(hits, self.aggregate_weight)
        relevance, features = None, {}
        if mode != "bm25" and hits:
            features = self.relevance_features(query, hits[0], filters, parts)
            relevance = (self.relevance_model.probability(features) if self.relevance_model
                         else features["cosine"])
        return RetrievalResult(query=query, hits=hits[:k], filters=filters, phrasings=phrasings, notes=notes,
                               relevance=relevance, min_relevance=self.min_relevance, features=features)

    def relevance_features(self, query: str, top: SearchHit, filters: SearchFilters | None,
                           parts: HybridParts | None = None) -> dict[str, float]:
        """The relevance model's inputs for one retrieval whose best hit is `top` (searched for
        unless `parts` holds the question's BM25 and vector lists under these filters)."""
        if parts is not None:
            vector, bm25 = parts.vector[:10], parts.bm25[:1]
        else:
            vector = self.index.search_vector(self.query_vector(query), 10, filters)
            bm25 = self.index.search_bm25(query, 1, filters)
        words = content_words(query)
        missing = [w for w in words if w not in self._frequencies]
        if missing or self._frequency_total < 0:
            found, total = self.index.document_frequencies(missing)
            if total != self._frequency_total or len(self._frequencies) > 50_000:  # the index changed
                self._frequencies, self._frequency_total = {}, total
                found, _ = self.index.document_frequencies(words)
            self._frequencies.update(found)
        return relevance_features(query, top, bm25, vector, self._frequencies, self._frequency_total)

    def _expansions(self, query: str, expand: bool, notes: list[str]) -> list[str]:
        if not expand:
            return []
        if self.llm is None:
            notes.append("query expansion skipped: no LLM is configured")
            return []
        rewrites = expand_query(query, self.llm)
        notes.append(f"query expansion ({self.llm.name}): {len(rewrites)} rephrasings")
        return rewrites

    def _can_rerank(self, notes: list[str]) -> bool:
        if self.reranker is None:
            notes.append("reranking skipped: no reranker model is configured (TWIN_RERANKER_MODEL)")
            return False
        return True


def aggregate_by_document(hits: Sequence[SearchHit], weight: float) -> list[SearchHit]:
    """Rank documents by their best chunk's score plus `weight` times the scores of their other
    chunks (a document that matches in several places beats one lucky chunk), then list each
    document's chunks together, best document first. Scores of a ranking are positive (RRF, cosine,
    BM25); the chunks keep their own scores."""
    by_doc: dict[str, list[SearchHit]] = {}
    for hit in hits:
        by_doc.setdefault(hit.chunk.document_id, []).append(hit)
    def doc_score(group: list[SearchHit]) -> float:
        return group[0].score + weight * sum(max(h.score, 0.0) for h in group[1:])
    order = sorted(by_doc.values(), key=lambda group: -doc_score(group))  # stable: ties keep rank order
    return [hit for group in order for hit in group]


def _relaxations(explicit: SearchFilters, inferred: SearchFilters) -> list[tuple[SearchFilters, str]]:
    """The inferred filters, then without the inferred kind, then without the inferred author:
    (filters, what the step before it dropped). The caller's own filters are always kept."""
    steps = [(inferred, "")]
    if inferred.kinds and not explicit.kinds:
        steps.append((inferred.model_copy(update={"kinds": None}), "kind"))
    if steps[-1][0].author_ids and not explicit.author_ids:
        steps.append((steps[-1][0].model_copy(update={"author_ids": None}), "author"))
    return steps


def _fuse_phrasings(lists: Sequence[list[SearchHit]], mode: str) -> list[SearchHit]:
    """Merge the result lists of several phrasings by reciprocal rank (equal weights)."""
    named = {f"q{i}": [(h.chunk.id, h.score) for h in hits] for i, hits in enumerate(lists)}
    by_id = {h.chunk.id: h for hits in reversed(lists) for h in hits}  # the first list's hit object wins
    fused = reciprocal_rank_fusion(named, {name: 1.0 for name in named})
    return [by_id[chunk_id].model_copy(update={"score": score, "retriever": f"{mode}+expansion"})
            for chunk_id, score in fused]


def weights_from_settings(settings: Any) -> HybridWeights:
    return HybridWeights(bm25=settings.hybrid_bm25_weight, vector=settings.hybrid_vector_weight,
                         method=settings.hybrid_fusion)


def known_authors(store: Any) -> list[Author]:
    """Authors from the `authors` collection, or else the distinct authors of the cleaned documents."""
    from twin.storage.documents import Collections

    authors = list(store.find(Collections.AUTHORS, Author))
    if authors:
        return authors
    groups = store.collection(Collections.CLEANED_DOCUMENTS).aggregate(
        [{"$group": {"_id": "$author_id", "name": {"$first": "$author_name"}}}])
    return [Author(id=g["_id"], name=g["name"] or g["_id"]) for g in groups if g["_id"]]


def build_retriever(settings: Any = None, *, store: Any = None, index: SearchIndex | None = None,
                    llm: QueryLLM | None = None, expand: bool = False) -> Retriever:
    """A retriever over the configured index, knowing the authors of the document store.

    The LLM client (TWIN_LLM_*) is attached when expansion is asked for or TWIN_SELF_QUERY_LLM is on;
    local weights load only when it is first called.
    """
    from twin.features.embedding import get_embedder
    from twin.retrieval.rerank import get_reranker
    from twin.search.factory import get_search_index
    from twin.settings import get_settings
    from twin.storage.documents import DocumentStore

    settings = settings or get_settings()
    own_store = store is None
    store = store or DocumentStore.from_settings(settings)
    try:
        authors = known_authors(store)
    finally:
        if own_store:
            store.close()
    reranker = get_reranker(settings.reranker_model, settings.embedding_device) if settings.reranker_model else None
    if llm is None and (expand or settings.self_query_llm):
        from twin.llm import get_llm_client

        llm = get_llm_client(settings)
    return Retriever(index or get_search_index(settings), get_embedder(settings), authors=authors, llm=llm,
                     self_query_llm=settings.self_query_llm,
                     reranker=reranker, weights=weights_from_settings(settings),
                     min_relevance=settings.retrieval_min_relevance,
                     aggregate_weight=settings.retrieval_aggregate_weight, relevance_model=load_model())
