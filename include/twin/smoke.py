"""A smoke check of the three external systems every pipeline uses: the document store, the search
index and MLflow. The `smoke` DAG runs one function per step; results are small dicts (ids, URLs).

It writes to its own collection and index so it never mixes with the real corpus.
"""

from __future__ import annotations

from typing import Any

from twin.models import Chunk, DocumentKind, EmbeddedChunk, content_hash, stable_id, utcnow
from twin.settings import get_settings
from twin.storage.documents import DocumentStore

SMOKE_COLLECTION = "smoke_documents"
SMOKE_CHUNK_ID = stable_id("smoke", "chunk")
SMOKE_TEXT = (
    "The smoke test checks that a document can be written to the store, indexed for hybrid search "
    "and traced in the experiment tracker."
)


def _index_name() -> str:
    return f"{get_settings().index_name}-smoke"


def write_smoke_document(run_id: str) -> dict[str, Any]:
    doc_id = stable_id("smoke", run_id)
    record = {"_id": doc_id, "text": SMOKE_TEXT, "run_id": run_id, "written_at": utcnow()}
    with DocumentStore.from_settings() as store:
        store.collection(SMOKE_COLLECTION).replace_one({"_id": doc_id}, record, upsert=True)
        stored = store.collection(SMOKE_COLLECTION).find_one({"_id": doc_id})
    if stored is None or stored["text"] != SMOKE_TEXT:
        raise RuntimeError(f"document {doc_id} was not read back from {SMOKE_COLLECTION}")
    return {"document_id": doc_id, "collection": SMOKE_COLLECTION}


def index_smoke_document(document_id: str) -> dict[str, Any]:
    """Index this run's smoke document as the smoke index's one chunk, then find it by a hybrid query.

    Every run writes the same text, so the index holds exactly one smoke chunk (a fixed id, replaced
    each run): a query can then only find this run's document, never an older identical copy.
    """
    from twin.features.embedding import get_embedder
    from twin.search.factory import get_search_index

    embedder = get_embedder()
    chunk = Chunk(
        id=SMOKE_CHUNK_ID, document_id=document_id, chunk_index=0, kind=DocumentKind.ARTICLE,
        author_id="smoke", author_name="Smoke Test", url=f"smoke://{document_id}", text=SMOKE_TEXT,
        token_count=embedder.count_tokens(SMOKE_TEXT), document_hash=content_hash(SMOKE_TEXT),
    )
    index = get_search_index(name=_index_name())
    index.ensure(embedder.dimension)
    result = index.upsert([EmbeddedChunk(**chunk.model_dump(), embedding=embedder.encode_query(SMOKE_TEXT))])
    if not result.ok:
        raise RuntimeError(f"indexing failed: {result.failures}")
    # Indexes written before the chunk id was fixed hold one chunk per earlier run: remove them.
    with DocumentStore.from_settings() as store:
        others = store.collection(SMOKE_COLLECTION).find({"_id": {"$ne": document_id}}, {"_id": 1})
        earlier = [doc["_id"] for doc in others]
    if earlier:
        index.delete_documents(earlier)
    query = "written to the store and indexed for hybrid search"
    hits = index.search_hybrid(query, embedder.encode_query(query), k=5)
    found = [hit.chunk.document_id for hit in hits]
    if found != [document_id]:
        raise RuntimeError(f"a hybrid query of the smoke index should find exactly {document_id}; it found {found}")
    return {"index": _index_name(), "chunk_id": chunk.id, "score": hits[0].score}


def log_smoke_run(document_id: str, index_result: dict[str, Any]) -> dict[str, Any]:
    from twin.tracking import tracked_run

    settings = get_settings()
    with tracked_run("smoke", params={"document_id": document_id, "index": index_result["index"]},
                     tags={"pipeline": "smoke"}, experiment="twin-smoke") as run:
        import mlflow

        mlflow.log_metric("hybrid_top_score", float(index_result["score"]))
        run_id = run.info.run_id
        experiment_id = run.info.experiment_id
    url = f"{settings.resolved_mlflow_uri}/#/experiments/{experiment_id}/runs/{run_id}"
    return {"mlflow_run_id": run_id, "url": url}
