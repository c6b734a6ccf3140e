"""The SearchIndex port: one interface, two adapters (OpenSearch, embedded LanceDB).

Both adapters are held to one contract suite in tests/search/test_contract.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from twin.models import EmbeddedChunk, SearchFilters, SearchHit


class IndexNotBuiltError(LookupError):
    """The search index does not exist yet: the features pipeline has not built it."""


@dataclass
class BulkResult:
    indexed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (chunk id, reason)

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class HybridWeights:
    """Weights of each retriever in the fused score; fusion is reciprocal rank unless "score"."""

    bm25: float = 1.0
    vector: float = 1.0
    method: str = "rrf"  # "rrf" (reciprocal rank) or "score" (min-max normalised scores)
    rrf_k: int = 60


@dataclass
class HybridParts:
    """A hybrid search's fused ranking with the top of the two lists fused (best first)."""

    fused: list[SearchHit]
    bm25: list[SearchHit]
    vector: list[SearchHit]


class SearchIndex(ABC):
    """A chunk index with BM25 text search, k-NN vector search and metadata filters.

    Writes go through a logical name (an alias); `begin_rebuild` / `commit_rebuild` build a fresh
    physical index beside the live one and swap the alias, so readers never see a half-built index.
    """

    name: str

    @abstractmethod
    def ensure(self, dimension: int) -> None:
        """Create the index (and alias) if missing; idempotent."""

    @abstractmethod
    def upsert(self, chunks: Sequence[EmbeddedChunk]) -> BulkResult:
        """Insert or replace chunks by id; reports per-item failures instead of raising."""

    @abstractmethod
    def delete_documents(self, document_ids: Sequence[str]) -> int:
        """Delete every chunk of these documents; returns how many were deleted."""

    @abstractmethod
    def chunk_ids(self, document_id: str) -> set[str]:
        """Ids of the chunks currently indexed for one document."""

    @abstractmethod
    def chunk_ids_many(self, document_ids: Sequence[str]) -> dict[str, set[str]]:
        """Ids of the chunks indexed for each of these documents, in one query per batch of ids;
        every requested document is a key (an empty set when nothing is indexed for it)."""

    @abstractmethod
    def delete_chunks(self, chunk_ids: Sequence[str]) -> int:
        """Delete chunks by id (e.g. a document's leftovers after its new chunks were written)."""

    @abstractmethod
    def count(self, filters: SearchFilters | None = None) -> int: ...

    @abstractmethod
    def search_bm25(self, query: str, k: int, filters: SearchFilters | None = None) -> list[SearchHit]: ...

    @abstractmethod
    def document_frequencies(self, terms: Sequence[str]) -> tuple[dict[str, int], int]:
        """How many chunks match each term in the BM25 field (analysed as that field is), and how
        many chunks the index holds: the IDF statistics of the relevance signal."""

    @abstractmethod
    def search_vector(
        self, vector: Sequence[float], k: int, filters: SearchFilters | None = None, exact: bool = False
    ) -> list[SearchHit]: ...

    @abstractmethod
    def search_hybrid(
        self,
        query: str,
        vector: Sequence[float],
        k: int,
        filters: SearchFilters | None = None,
        weights: HybridWeights | None = None,
    ) -> list[SearchHit]: ...

    def search_hybrid_parts(self, query: str, vector: Sequence[float], k: int, filters: SearchFilters | None = None,
                            weights: HybridWeights | None = None, parts: int = 10) -> HybridParts:
        """The fused top-k with the BM25 and vector lists' top `parts` (the relevance signal reads
        them). Here three searches; an adapter that fuses on the client overrides it to search once."""
        return HybridParts(self.search_hybrid(query, vector, k, filters, weights),
                           self.search_bm25(query, parts, filters), self.search_vector(vector, parts, filters))

    @abstractmethod
    def begin_rebuild(self, dimension: int) -> SearchIndex:
        """A writable index that is not yet live; fill it, then `commit_rebuild` it."""

    @abstractmethod
    def commit_rebuild(self, staged: SearchIndex) -> None:
        """Point the live name at the staged index and drop the old one."""

    @abstractmethod
    def drop(self) -> None:
        """Delete the index and everything behind its name."""
