"""Great Expectations checks on chunks before they are embedded, through the ETL's reusable gate.

The suite is data: `chunks.json` in the expectations folder (TWIN_EXPECTATIONS_DIR, by default the
project's `expectations/`), with `checkpoints/chunks.json` saying how it runs. A failing chunk is
mapped back to its document so that the pipeline keeps that whole document out of this run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twin.models import Chunk
from twin.settings import Settings

CHECKPOINT = "chunks"
_COLUMNS = ["id", "document_id", "chunk_index", "kind", "author_id", "url", "text", "token_count", "document_hash"]


def invalid_chunks(chunks: Sequence[Chunk], *, max_tokens: int, settings: Settings) -> dict[str, list[str]]:
    """Validate chunks with the GX suite; returns {document id: [failed expectation, ...]} for failures."""
    if not chunks:
        return {}
    import pandas as pd

    from twin.etl.validation import validate_records

    frame = pd.DataFrame([{c: _plain(getattr(chunk, c)) for c in _COLUMNS} for chunk in chunks])
    outcome = validate_records(CHECKPOINT, frame, parameters={"max_tokens": max_tokens}, settings=settings)
    document_of = {chunk.id: chunk.document_id for chunk in chunks}
    failures: dict[str, set[str]] = {}
    if outcome.batch_failures:  # nothing to blame a row for: every document of the batch is suspect
        for doc_id in set(document_of.values()):
            failures.setdefault(doc_id, set()).update(outcome.batch_failures)
    for chunk_id, labels in outcome.row_failures.items():
        for doc_id in [document_of[chunk_id]] if chunk_id in document_of else set(document_of.values()):
            failures.setdefault(doc_id, set()).update(labels)
    return {doc_id: sorted(labels) for doc_id, labels in failures.items()}


def publish_report(settings: Settings) -> None:
    """Fold this run's chunk validations into the Data Docs site (once per run, not per batch)."""
    from twin.etl.validation import build_data_docs

    build_data_docs(settings)


def _plain(value: Any) -> Any:
    return str(value) if hasattr(value, "value") else value  # enums as their string value
