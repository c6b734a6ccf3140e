"""Context assembly: the best chunks that fit a token budget, each marked with its source number."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from twin.models import SearchHit


@dataclass
class Source:
    number: int
    url: str
    title: str | None
    author_name: str
    document_id: str

    def citation(self) -> str:
        return f"[{self.number}] {self.url} / {self.title or '(untitled)'} / {self.author_name}"


@dataclass
class Context:
    text: str
    sources: list[Source] = field(default_factory=list)
    hits: list[SearchHit] = field(default_factory=list)  # the chunks that made it in, in order
    tokens: int = 0
    skipped: int = 0  # chunks that did not fit the budget

    def citations(self) -> str:
        return "\n".join(s.citation() for s in self.sources)


def assemble_context(hits: Sequence[SearchHit], budget_tokens: int, count_tokens: Callable[[str], int]) -> Context:
    """Add chunks best-first while they fit; chunks of one document share one source number."""
    context = Context(text="")
    numbers: dict[str, Source] = {}
    blocks: list[str] = []
    for hit in hits:
        chunk = hit.chunk
        source = numbers.get(chunk.document_id) or Source(
            len(numbers) + 1, chunk.url, chunk.title, chunk.author_name, chunk.document_id)
        block = f"[{source.number}] {chunk.title or chunk.url}\n{chunk.text}"
        cost = count_tokens(block) + 1  # +1 for the blank line between blocks
        if context.tokens + cost > budget_tokens:
            context.skipped += 1
            continue  # a later, shorter chunk may still fit
        if chunk.document_id not in numbers:
            numbers[chunk.document_id] = source
            context.sources.append(source)
        blocks.append(block)
        context.hits.append(hit)
        context.tokens += cost
    context.text = "\n\n".join(blocks)
    return context
