"""The RAG steps of a request, apart from Serve: retrieve, decide whether to answer, build the prompt
from the template files, and keep the answer's citations to what was retrieved.

The same `RagPipeline` runs inside the Serve ingress and in-process (the benchmark's baseline).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from twin.llm import Messages
from twin.models import SearchFilters
from twin.retrieval.context import assemble_context
from twin.retrieval.retriever import RetrievalResult, Retriever
from twin.serving.schemas import Source

PROMPTS = Path(__file__).with_name("prompts")
REFUSAL = "I don't know"
# Text that tries to steer the model: a retrieved passage is data, so such sentences never reach it.
_INJECTION = re.compile(
    r"\b(ignore|disregard|forget|override)\b[^.!?\n]{0,40}\b(instructions?|prompts?|rules|directions|context)\b"
    r"|\byou are now\b|\bnew instructions?\b|\bsystem prompt\b|\bact as\b[^.!?\n]{0,40}\binstead\b",
    re.IGNORECASE)
_SENTENCE = re.compile(r"[^.!?\n]*(?:[.!?]+|\n|$)")
_CITATION = re.compile(r"\s?\[(\d+)\]")
REDACTED = "[instruction-like text removed]"


def neutralise(text: str) -> tuple[str, int]:
    """The passage with every sentence that reads as an instruction to the model replaced; and how many."""
    count = 0

    def redact(match: re.Match[str]) -> str:
        nonlocal count
        sentence = match.group(0)
        if sentence.strip() and _INJECTION.search(sentence):
            count += 1
            return REDACTED + ("\n" if sentence.endswith("\n") else " ")
        return sentence

    return _SENTENCE.sub(redact, text), count


@dataclass
class Templates:
    system: str
    user: str
    passage: str

    @classmethod
    def load(cls, folder: Path = PROMPTS) -> Templates:
        return cls(*((folder / f"{name}.txt").read_text(encoding="utf-8").strip() + "\n"
                     for name in ("system", "user", "passage")))


@dataclass
class PromptPlan:
    messages: Messages
    sources: list[Source]
    context_tokens: int
    redacted: int = 0  # instruction-like sentences removed from the passages


@dataclass
class Answer:
    text: str
    sources: list[Source] = field(default_factory=list)
    cited: list[int] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return is_refusal(self.text)


def is_refusal(text: str) -> bool:
    return text.strip().lower().replace("\u2019", "'").startswith("i don't know")


class RagPipeline:
    def __init__(self, retriever: Retriever, count_tokens: Callable[[str], int], *, budget_tokens: int,
                 templates: Templates | None = None, author_names: dict[str, str] | None = None) -> None:
        self.retriever = retriever
        self.count_tokens = count_tokens
        self.budget_tokens = budget_tokens
        self.templates = templates or Templates.load()
        self.author_names = author_names or {}

    def retrieve(self, question: str, *, author: str | None, k: int) -> RetrievalResult:
        filters = SearchFilters(author_ids=[author]) if author else None
        # The caller's author is the filter; no self-query guess may widen or narrow it.
        return self.retriever.retrieve(question, k=k, filters=filters, self_query=author is None)

    def plan(self, question: str, result: RetrievalResult, author: str | None) -> PromptPlan | None:
        """The prompt for an answerable retrieval; None when retrieval says the index holds no answer."""
        if not result.answerable:
            return None
        context = assemble_context(result.hits, self.budget_tokens, self.count_tokens)
        if not context.hits:
            return None
        numbers = {s.document_id: s.number for s in context.sources}
        blocks, redacted = [], 0
        for hit in context.hits:
            text, count = neutralise(hit.chunk.text)
            redacted += count
            blocks.append(self.templates.passage.format(number=numbers[hit.chunk.document_id],
                                                        title=_attr(hit.chunk.title or hit.chunk.url), text=text))
        best: dict[str, float] = {}
        for hit in context.hits:
            best.setdefault(hit.chunk.document_id, hit.score)
        sources = [Source(number=s.number, document_id=s.document_id, url=s.url, title=s.title,
                          author=_author_of(context.hits, s.document_id), author_name=s.author_name,
                          score=round(best[s.document_id], 6)) for s in context.sources]
        name = self.author_names.get(author or "", "") or (sources[0].author_name if author else "the author")
        messages = [{"role": "system", "content": self.templates.system.format(author=name)},
                    {"role": "user", "content": self.templates.user.format(passages="\n".join(blocks).strip(),
                                                                            question=question.strip())}]
        return PromptPlan(messages, sources, context.tokens, redacted)


def finish(text: str, sources: Sequence[Source]) -> Answer:
    """The model's reply with citations of passages it was not given removed; a refusal keeps no sources."""
    known = {s.number for s in sources}
    cited: list[int] = []

    def keep(match: re.Match[str]) -> str:
        number = int(match.group(1))
        if number not in known:
            return ""
        if number not in cited:
            cited.append(number)
        return match.group(0)

    cleaned = _CITATION.sub(keep, text).strip()
    if not cleaned or is_refusal(cleaned):
        return Answer(REFUSAL)
    return Answer(cleaned, list(sources), cited)


def _attr(text: str) -> str:
    return text.replace('"', "'").replace("\n", " ")


def _author_of(hits: Sequence[object], document_id: str) -> str:
    return next(h.chunk.author_id for h in hits if h.chunk.document_id == document_id)  # type: ignore[attr-defined]
