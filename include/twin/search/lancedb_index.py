"""The embedded SearchIndex: LanceDB on local disk (vector + BM25 full-text + metadata filters).

Blue-green by name: physical tables are `<name>__<timestamp>`; a small JSON pointer file
`<name>.alias.json`, replaced atomically, names the live one. Every call resolves the pointer, so
readers move to a rebuilt table as soon as it is committed and never see a half-built one. The table a
rebuild retires is kept until the next rebuild, so a read that began on it just before the swap finishes.

Freshness: LanceDB searches rows its indexes do not cover yet with a flat scan, so upserts and
deletes are visible as soon as `upsert` / `delete_documents` return; `optimize()` folds new rows
into the indexes once enough have piled up (kept off the write path for small batches).
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lancedb
import pyarrow as pa
from lancedb.index import FTS, BTree, IvfHnswSq
from lancedb.query import MultiMatchQuery

from twin.models import Chunk, EmbeddedChunk, SearchFilters, SearchHit
from twin.search.base import BulkResult, HybridParts, HybridWeights, IndexNotBuiltError, SearchIndex
from twin.search.fusion import fuse_hits

# Opt in now to Lance's future default (index statistics without IVF centroids); also silences
# the warning it logs on every statistics call until the variable is set.
os.environ.setdefault("LANCE_INCLUDE_VECTOR_CENTROIDS", "false")

VECTOR = "vector"
TEXT = "text"
# Hybrid search runs its BM25 query here while the calling thread runs the ANN query: both mostly
# wait on LanceDB's native threads, so together they take about as long as the slower one.
_SIDE_QUERIES = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lancedb-bm25")
TITLE = "title"
WRITE_BATCH = 5_000
_CHUNK_COLUMNS = list(Chunk.model_fields)


def chunk_schema(dimension: int) -> pa.Schema:
    return pa.schema([
        pa.field("id", pa.string(), nullable=False),
        pa.field("document_id", pa.string(), nullable=False),
        pa.field("chunk_index", pa.int32()),
        pa.field("kind", pa.string()),
        pa.field("author_id", pa.string()),
        pa.field("author_name", pa.string()),
        pa.field("url", pa.string()),
        pa.field("path", pa.string()),
        pa.field("title", pa.string()),
        pa.field(TEXT, pa.string()),
        pa.field("token_count", pa.int32()),
        pa.field("published_at", pa.timestamp("us", tz="UTC")),
        pa.field("document_hash", pa.string()),
        pa.field(VECTOR, pa.list_(pa.float32(), dimension)),
    ])


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _timestamp_literal(value: datetime) -> str:
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return f"TIMESTAMP '{aware.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f')}'"


def filters_to_sql(filters: SearchFilters | None) -> str | None:
    """A SQL predicate for LanceDB's `where`; None when there is nothing to filter on."""
    if filters is None or filters.is_empty():
        return None
    clauses = []
    if filters.author_ids:
        clauses.append(f"author_id IN ({', '.join(sql_literal(a) for a in filters.author_ids)})")
    if filters.kinds:
        clauses.append(f"kind IN ({', '.join(sql_literal(str(k)) for k in filters.kinds)})")
    if filters.published_after:
        clauses.append(f"published_at >= {_timestamp_literal(filters.published_after)}")
    if filters.published_before:
        clauses.append(f"published_at < {_timestamp_literal(filters.published_before)}")
    return " AND ".join(clauses)


def _and(*clauses: str | None) -> str | None:
    present = [f"({c})" for c in clauses if c]
    return " AND ".join(present) or None


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class LanceDBSearchIndex(SearchIndex):
    """A SearchIndex on a LanceDB folder; `name` is the logical (alias) name."""

    def __init__(self, root_dir: Path | str, name: str, *, ann_min_rows: int = 10_000,
                 optimize_after_rows: int = 20_000, title_boost: float = 0.0, _physical: str | None = None) -> None:
        self.root_dir = Path(root_dir)
        self.name = name
        # ANN indexes need training data; below this many rows exact search is as fast.
        self.ann_min_rows = ann_min_rows
        self.optimize_after_rows = optimize_after_rows
        # BM25 also matches the title field at this weight (0: the chunk text only); tables made
        # before the title had its own full-text index are searched on the text alone.
        self.title_boost = title_boost
        self._physical = _physical  # set for a staged (not yet live) rebuild
        self.root_dir.mkdir(parents=True, exist_ok=True)
        # A zero consistency interval makes every call see writes made by other processes.
        self._db = lancedb.connect(str(self.root_dir), read_consistency_interval=timedelta(0))
        self._tables: dict[str, Any] = {}  # open handles by physical name (names are never reused)
        self._titled: dict[str, bool] = {}  # physical name → whether its title has a full-text index

    # --- alias ------------------------------------------------------------------------------
    @property
    def _pointer(self) -> Path:
        return self.root_dir / f"{self.name}.alias.json"

    def live_table_name(self) -> str | None:
        if self._physical:
            return self._physical
        try:
            return str(json.loads(self._pointer.read_text())["table"])
        except FileNotFoundError:
            return None

    def _write_pointer(self, table_name: str) -> None:
        tmp = self._pointer.with_suffix(f".{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps({"table": table_name, "since": datetime.now(UTC).isoformat()}))
        os.replace(tmp, self._pointer)  # atomic: readers see the old or the new pointer, never half

    def _new_physical_name(self) -> str:
        return f"{self.name}__{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}{uuid.uuid4().hex[:6]}"

    def _physical_tables(self) -> list[str]:
        prefix = f"{self.name}__"
        return [t for t in self._all_tables() if t.startswith(prefix)]

    def _all_tables(self) -> list[str]:
        names: list[str] = []
        page_token = None
        while True:
            page = self._db.list_tables(page_token=page_token)
            names.extend(page.tables)
            page_token = page.page_token
            if not page_token:
                return names

    def _table(self) -> Any:
        table_name = self.live_table_name()
        if table_name is None:
            raise IndexNotBuiltError(f"search index {self.name!r} does not exist yet: run the features pipeline")
        if table_name not in self._tables:
            self._tables[table_name] = self._db.open_table(table_name)
        return self._tables[table_name]

    def _create_table(self, table_name: str, dimension: int) -> Any:
        table = self._db.create_table(table_name, schema=chunk_schema(dimension), exist_ok=True)
        table.create_index(TEXT, config=FTS())
        table.create_index(TITLE, config=FTS())
        table.create_index("id", config=BTree())  # merge_insert and deletes look rows up by id
        table.create_index("document_id", config=BTree())
        return table

    # --- SearchIndex ------------------------------------------------------------------------
    def ensure(self, dimension: int) -> None:
        table_name = self.live_table_name()
        if table_name is not None and table_name in self._all_tables():
            existing = self.dimension()
            if existing != dimension:
                raise ValueError(f"search index {self.name!r} holds {existing}-d vectors, not {dimension}-d; "
                                 "rebuild it (begin_rebuild/commit_rebuild) to change the embedding model")
            return
        table_name = table_name or self._new_physical_name()
        self._create_table(table_name, dimension)
        if not self._physical:
            self._write_pointer(table_name)

    def dimension(self) -> int:
        vector_type = self._table().schema.field(VECTOR).type
        return int(vector_type.list_size)

    def upsert(self, chunks: Sequence[EmbeddedChunk]) -> BulkResult:
        result = BulkResult()
        table = self._table()
        dimension = int(table.schema.field(VECTOR).type.list_size)
        rows: dict[str, dict[str, Any]] = {}
        for chunk in chunks:
            problem = _invalid(chunk, dimension)
            if problem:
                result.failures.append((chunk.id, problem))
            else:
                rows[chunk.id] = _to_row(chunk)  # the last version of a repeated id wins
        for batch in _batches(list(rows.values()), WRITE_BATCH):
            try:
                (table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all()
                 .execute(pa.Table.from_pylist(list(batch), schema=table.schema)))
                result.indexed += len(batch)
            except Exception as exc:  # one bad batch must not lose the others: report its items
                result.failures.extend((row["id"], f"write failed: {exc}") for row in batch)
        self._after_write(table)
        return result

    def delete_documents(self, document_ids: Sequence[str]) -> int:
        return self._delete_where("document_id", document_ids)

    def chunk_ids(self, document_id: str) -> set[str]:
        rows = (self._table().search().where(f"document_id = {sql_literal(document_id)}")
                .select(["id"]).limit(None).to_arrow())
        return set(rows.column("id").to_pylist())

    def chunk_ids_many(self, document_ids: Sequence[str]) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {d: set() for d in document_ids}
        table = self._table()
        for batch in _batches(list(found), 500):
            rows = (table.search().where(f"document_id IN ({', '.join(sql_literal(d) for d in batch)})")
                    .select(["id", "document_id"]).limit(None).to_arrow())
            for chunk_id, document_id in zip(rows.column("id").to_pylist(), rows.column("document_id").to_pylist(),
                                             strict=True):
                found[document_id].add(chunk_id)
        return found

    def delete_chunks(self, chunk_ids: Sequence[str]) -> int:
        return self._delete_where("id", chunk_ids)

    def _delete_where(self, column: str, values: Sequence[str]) -> int:
        """Delete the rows whose `column` is one of `values`, in batches; returns how many were deleted."""
        table = self._table()
        deleted = 0
        for batch in _batches(list(dict.fromkeys(values)), 500):
            where = f"{column} IN ({', '.join(sql_literal(v) for v in batch)})"
            matching = table.count_rows(where)
            if matching:
                table.delete(where)
                deleted += matching
        return deleted

    def count(self, filters: SearchFilters | None = None) -> int:
        return int(self._table().count_rows(filters_to_sql(filters)))

    def search_bm25(self, query: str, k: int, filters: SearchFilters | None = None) -> list[SearchHit]:
        if not query.strip():
            return []
        table = self._table()
        if self.title_boost > 0 and self._title_indexed(table):
            fts: Any = MultiMatchQuery(query, [TEXT, TITLE], boosts=[1.0, self.title_boost])
            builder = table.search(fts, query_type="fts")
        else:
            builder = table.search(query, query_type="fts", fts_columns=TEXT)
        builder = builder.select([*_CHUNK_COLUMNS, "_score"])
        where = filters_to_sql(filters)
        if where:
            builder = builder.where(where, prefilter=True)
        rows = builder.limit(k).to_arrow().to_pylist()
        return _hits(rows, "bm25", lambda row: float(row["_score"]))

    def document_frequencies(self, terms: Sequence[str]) -> tuple[dict[str, int], int]:
        table = self._table()
        total = int(table.count_rows())
        found = {}
        for term in dict.fromkeys(terms):  # one FTS query per term: LanceDB exposes no term statistics
            rows = (table.search(term, query_type="fts", fts_columns=TEXT).select(["id", "_score"])
                    .limit(max(total, 1)).to_arrow()) if term.strip() else None
            found[term] = rows.num_rows if rows is not None else 0
        return found, total

    def search_vector(self, vector: Sequence[float], k: int, filters: SearchFilters | None = None,
                      exact: bool = False) -> list[SearchHit]:
        builder = (self._table().search(list(vector), query_type="vector", vector_column_name=VECTOR)
                   .distance_type("cosine").select([*_CHUNK_COLUMNS, "_distance"]))
        # Approximate: re-rank a few times more candidates on full vectors; cheap, lifts recall a lot.
        builder = builder.bypass_vector_index() if exact else builder.nprobes(20).refine_factor(5)
        where = filters_to_sql(filters)
        if where:
            builder = builder.where(where, prefilter=True)
        rows = builder.limit(k).to_arrow().to_pylist()
        # Report cosine similarity (higher is better), the same scale on both adapters.
        return _hits(rows, "vector", lambda row: 1.0 - float(row["_distance"]))

    def search_hybrid(self, query: str, vector: Sequence[float], k: int, filters: SearchFilters | None = None,
                      weights: HybridWeights | None = None) -> list[SearchHit]:
        return self.search_hybrid_parts(query, vector, k, filters, weights).fused

    def search_hybrid_parts(self, query: str, vector: Sequence[float], k: int, filters: SearchFilters | None = None,
                            weights: HybridWeights | None = None, parts: int = 10) -> HybridParts:
        candidates = max(k * 4, 20, parts)  # fusion needs more than k from each list to reorder well
        future = _SIDE_QUERIES.submit(self.search_bm25, query, candidates, filters)
        dense = self.search_vector(vector, candidates, filters)
        bm25 = future.result()
        return HybridParts(fuse_hits(bm25, dense, k, weights), bm25[:parts], dense[:parts])

    def begin_rebuild(self, dimension: int) -> LanceDBSearchIndex:
        staged = LanceDBSearchIndex(self.root_dir, self.name, ann_min_rows=self.ann_min_rows,
                                    optimize_after_rows=self.optimize_after_rows, title_boost=self.title_boost,
                                    _physical=self._new_physical_name())
        staged.ensure(dimension)
        return staged

    def commit_rebuild(self, staged: SearchIndex) -> None:
        if not isinstance(staged, LanceDBSearchIndex) or staged.name != self.name or not staged._physical:
            raise ValueError("commit_rebuild takes the index returned by begin_rebuild on this index")
        staged_table = staged._physical
        retired = self.live_table_name() if not self._physical else None
        self._write_pointer(staged_table)
        # The table just retired stays until the next rebuild: a reader in another process may have resolved
        # the old pointer a moment ago and be reading it now (dropping it at once failed such reads).
        # Generations before it (names sort by creation time) have had a whole rebuild to drain, so they go;
        # a table staged by another rebuild still running is newer, and stays.
        for table_name in self._physical_tables():
            if retired and table_name < retired:
                self._db.drop_table(table_name)
                self._tables.pop(table_name, None)

    def drop(self) -> None:
        if self._physical:
            if self._physical in self._all_tables():
                self._db.drop_table(self._physical)
            self._tables.clear()
            return
        self._pointer.unlink(missing_ok=True)  # first, so readers fail clearly rather than midway
        for table_name in self._physical_tables():
            self._db.drop_table(table_name)
        self._tables.clear()

    def _title_indexed(self, table: Any) -> bool:
        if table.name not in self._titled:
            self._titled[table.name] = any(index.columns == [TITLE] for index in table.list_indices())
        return self._titled[table.name]

    # --- maintenance ------------------------------------------------------------------------
    def build_vector_index(self) -> None:
        """Train the ANN (IVF + HNSW, scalar-quantised) index on the current rows."""
        table = self._table()
        rows = table.count_rows()
        partitions = max(1, min(256, int(math.sqrt(rows) / 2)))
        table.create_index(VECTOR, config=IvfHnswSq(distance_type="cosine", num_partitions=partitions))

    def has_vector_index(self) -> bool:
        return any(VECTOR in index.columns for index in self._table().list_indices())

    def optimize(self) -> None:
        """Fold rows written since the last index build into the indexes and compact files."""
        self._table().optimize()

    def _after_write(self, table: Any) -> None:
        if not self.has_vector_index() and table.count_rows() >= self.ann_min_rows:
            self.build_vector_index()
            return
        stats = table.index_stats(f"{TEXT}_idx")
        if stats is not None and stats.num_unindexed_rows >= self.optimize_after_rows:
            table.optimize()


def _invalid(chunk: EmbeddedChunk, dimension: int) -> str | None:
    if not chunk.id:
        return "empty chunk id"
    if len(chunk.embedding) != dimension:
        return f"embedding has {len(chunk.embedding)} dimensions, index expects {dimension}"
    if not all(math.isfinite(x) for x in chunk.embedding):
        return "embedding holds NaN or infinite values"
    return None


def _to_row(chunk: EmbeddedChunk) -> dict[str, Any]:
    row = chunk.model_dump(mode="python", exclude={"embedding"})
    row["kind"] = str(chunk.kind)
    row[VECTOR] = chunk.embedding
    return row


def _hits(rows: list[dict[str, Any]], retriever: str, score: Any) -> list[SearchHit]:
    hits = []
    for rank, row in enumerate(rows, start=1):
        chunk = Chunk.model_validate({column: row[column] for column in _CHUNK_COLUMNS})
        hits.append(SearchHit(chunk=chunk, score=score(row), retriever=retriever, ranks={retriever: rank}))
    return hits
