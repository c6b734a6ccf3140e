"""Self-query: an author or a document kind named in the question becomes a search filter.

With an LLM configured the model reads the question; without one (or when its answer cannot be
used) rules match the known authors' names and ids and kind words ("code", "posts", "article").
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from twin.models import Author, DocumentKind, SearchFilters
from twin.retrieval.llm import QueryLLM

KIND_WORDS: dict[DocumentKind, tuple[str, ...]] = {
    DocumentKind.CODE: ("code", "snippet", "snippets", "function", "functions", "repo", "repos",
                        "repository", "repositories", "source file", "source files"),
    DocumentKind.POST: ("post", "posts", "tweet", "tweets", "thread", "threads", "linkedin"),
    DocumentKind.ARTICLE: ("article", "articles", "blog", "blogs", "essay", "essays"),
}

LLM_PROMPT = """You turn a search question into filters. Known authors (id: name):
{authors}
Document kinds: article, code, post.
Answer with one JSON object and nothing else: {{"author_id": <an id above or null>, "kind": <a kind or null>}}.
Only set a filter when the question clearly names that author or kind.
Question: {question}
JSON:"""


@dataclass
class QueryIntent:
    filters: SearchFilters
    source: str  # "llm", "rules"
    matched: list[str] = field(default_factory=list)  # human-readable: what became a filter
    notes: list[str] = field(default_factory=list)


def _word_pattern(phrase: str) -> re.Pattern[str]:
    # Whole words, case-insensitive; a possessive ("Ada Lovelace's") still counts.
    return re.compile(rf"(?<![\w-]){re.escape(phrase)}(?:'s|’s)?(?![\w-])", re.IGNORECASE)


class SelfQuery:
    def __init__(self, authors: Sequence[Author], llm: QueryLLM | None = None) -> None:
        self.authors = list(authors)
        self.llm = llm
        self._author_patterns = [(a, [_word_pattern(n) for n in self._names(a)]) for a in self.authors]
        self._kind_patterns = [(k, [_word_pattern(w) for w in words]) for k, words in KIND_WORDS.items()]

    def _names(self, author: Author) -> list[str]:
        names = {author.name, author.id}
        surname = author.name.split()[-1] if author.name.split() else ""
        surnames = [a.name.split()[-1] for a in self.authors if a.name.split()]
        if len(surname) >= 3 and surnames.count(surname) == 1:
            names.add(surname)  # a surname alone is enough when no other author shares it
        return [n for n in names if n]

    def extract(self, question: str) -> QueryIntent:
        if self.llm is not None:
            intent = self._by_llm(question)
            if intent is not None:
                return intent
            fallback = self.by_rules(question)
            fallback.notes.append(f"self-query: the LLM {self.llm.name} gave no usable filters; used rules")
            return fallback
        return self.by_rules(question)

    def by_rules(self, question: str) -> QueryIntent:
        authors = [a for a, patterns in self._author_patterns if any(p.search(question) for p in patterns)]
        kinds = [k for k, patterns in self._kind_patterns if any(p.search(question) for p in patterns)]
        filters = SearchFilters(author_ids=[a.id for a in authors] or None, kinds=kinds or None)
        matched = [f"author {a.name} ({a.id})" for a in authors] + [f"kind {k}" for k in kinds]
        return QueryIntent(filters=filters, source="rules", matched=matched)

    def _by_llm(self, question: str) -> QueryIntent | None:
        assert self.llm is not None
        listing = "\n".join(f"{a.id}: {a.name}" for a in self.authors) or "(none)"
        answer = self.llm.complete(LLM_PROMPT.format(authors=listing, question=question), max_new_tokens=64)
        parsed = _first_json_object(answer)
        if parsed is None:
            return None
        by_key = {a.id.lower(): a for a in self.authors} | {a.name.lower(): a for a in self.authors}
        author = by_key.get(str(parsed.get("author_id") or "").strip().lower())
        kind_value = str(parsed.get("kind") or "").strip().lower()
        kind = DocumentKind(kind_value) if kind_value in {k.value for k in DocumentKind} else None
        filters = SearchFilters(author_ids=[author.id] if author else None, kinds=[kind] if kind else None)
        matched = ([f"author {author.name} ({author.id})"] if author else []) + ([f"kind {kind}"] if kind else [])
        return QueryIntent(filters=filters, source="llm", matched=matched)


def _first_json_object(text: str) -> dict | None:
    match = re.search(r"\{.*?\}", text, re.DOTALL)
    if not match:
        return None
    try:
        value = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def merge_filters(explicit: SearchFilters | None, inferred: SearchFilters) -> SearchFilters:
    """Filters given by the caller win field by field over the ones read from the question."""
    if explicit is None:
        return inferred
    return SearchFilters(
        author_ids=explicit.author_ids or inferred.author_ids,
        kinds=explicit.kinds or inferred.kinds,
        published_after=explicit.published_after or inferred.published_after,
        published_before=explicit.published_before or inferred.published_before,
    )
