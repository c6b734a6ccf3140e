"""Small hand-made chunks for the SearchIndex contract tests."""

from __future__ import annotations

from datetime import UTC, datetime

from twin.models import DocumentKind, EmbeddedChunk

DIM = 8
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def unit(*weights: float) -> list[float]:
    """A unit vector from the leading components given (the rest are zero)."""
    values = [*weights, *([0.0] * (DIM - len(weights)))]
    norm = sum(v * v for v in values) ** 0.5
    return [v / norm for v in values]


def axis(i: int) -> list[float]:
    return unit(*([0.0] * i), 1.0)


def make_chunk(chunk_id: str, text: str, vector: list[float], *, author: str = "ada",
               kind: DocumentKind = DocumentKind.ARTICLE, published: datetime | None = EPOCH,
               document_id: str | None = None, index: int = 0) -> EmbeddedChunk:
    return EmbeddedChunk(
        id=chunk_id, document_id=document_id or f"doc-{chunk_id}", chunk_index=index, kind=kind,
        author_id=author, author_name=author.title(), url=f"https://example.org/{chunk_id}",
        title=f"title {chunk_id}", text=text, token_count=len(text.split()), published_at=published,
        document_hash="hash", embedding=vector,
    )
