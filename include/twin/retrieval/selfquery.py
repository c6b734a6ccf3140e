"""Self-query: an author or a document kind named in the question becomes a search filter.

With an LLM configured the model reads the question; without one (or when its answer cannot be
used) rules match the known authors' names and ids, and kind words ("code", "posts", "article").

A kind word counts only where the question asks for that kind of document: after a possessive
("her code", "Karpathy's tweets"), after a preposition ("in the repository", "from his posts"), or
as a plural followed by "by"/"from" ("articles by Ada"), and never as the first half of a compound
or a phrase ("source code file", "thread pool", "a function of", "post-mortem"). The retriever
never lets a filter read from the question empty a result (see `Retriever.retrieve`).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


# A name's possessive, but not a contraction ("what's the thread about").
_POSSESSIVE = (r"(?:his|her|their|its|my|your|our|"
               r"(?!(?:what|that|it|there|here|who|where|how|let|he|she)['’]s\b)\w+(?:'s|’s|s'))")
_DETERMINER = r"(?:the|a|an|this|that|these|those|one|some|any|each|every|" + _POSSESSIVE + ")"
_PREPOSITION = r"(?:in|inside|within|from|among|across|through|throughout)"
# A kind word followed by one of these is a modifier or a phrase, not a kind of document:
# "code file", "code path", "thread pool", "function call", "post office", "a function of".
_COMPOUND = ("of", "file", "files", "path", "paths", "base", "bases", "review", "reviews", "smell", "smells",
             "block", "blocks", "point", "points", "size", "sizes", "style", "quality", "generation",
             "golf", "name", "names", "pool", "pools", "safety", "count", "counts", "dump", "dumps", "local",
             "locals", "id", "ids", "office", "processing", "hoc", "call", "calls", "signature", "signatures",
             "pointer", "pointers", "body", "bodies", "template", "templates", "title", "length", "limit",
             "limits", "hash", "line", "lines", "editor", "editors", "owner", "owners", "contention",
             "scheduler", "schedulers", "count", "summary", "layout", "width", "level", "levels",
             "coverage", "cell", "cells", "comment", "comments", "host", "hosting")
_FOLLOWER = rf"\b(?!-|\s+(?:{'|'.join(_COMPOUND)})\b)"


def _kind_pattern(word: str) -> re.Pattern[str]:
    """A kind word where the question asks for documents of that kind (see the module docs)."""
    w = re.escape(word)
    asked = (
        rf"\b{_POSSESSIVE}\s+(?:\w+\s+)?{w}{_FOLLOWER}"  # "her code", "Ada's latest posts"
        rf"|\b{_PREPOSITION}\s+(?:{_DETERMINER}\s+)?(?:\w+\s+)?{w}{_FOLLOWER}"  # "in the repository"
        rf"|\b{w}\b\s+(?:by|from)\s+(?-i:[A-Z])"  # "articles by Ada" (a name follows)
    )
    return re.compile(rf"(?<![\w-])(?:{asked})", re.IGNORECASE)


# Verbs that ask for short posts: "what did Grace post about", "she tweeted".
_BLOG_POST = re.compile(r"\bblog\s+post(?=s?\b)", re.IGNORECASE)
# The asker ("how do I post") and a noun phrase ("does the post office") are no author posting.
_POST_VERBS = re.compile(r"\b(?:did|does|has)\s+(?!(?:i|you|we|the|a|an|this|that)\b)(?:\w+\s+){1,3}?"
                         rf"(?:post|tweet){_FOLLOWER}|\b(?:posted|tweeted)\b", re.IGNORECASE)


class SelfQuery:
    def __init__(self, authors: Sequence[Author], llm: QueryLLM | None = None) -> None:
        self.authors = list(authors)
        self.llm = llm
        self._author_patterns = [(a, [_word_pattern(n) for n in self._names(a)]) for a in self.authors]
        self._kind_patterns = [(k, [_kind_pattern(w) for w in words]) for k, words in KIND_WORDS.items()]

    def _names(self, author: Author) -> list[str]:
        names = {author.name, author.id}
        parts = author.name.split()
        for position in (0, -1):  # a first name or a surname alone, when no other author shares it
            part = parts[position] if len(parts) > 1 else ""
            others = [a.name.split()[position] for a in self.authors if len(a.name.split()) > 1]
            if len(part) >= 3 and others.count(part) == 1:
                names.add(part)
        # Without accents too: "Tomas" names Tomás.
        names |= {_unaccented(n) for n in names}
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
        # A blog post is an article here; "post" alone means a short social post.
        text = _BLOG_POST.sub("article", question)
        kinds = [k for k, patterns in self._kind_patterns
                 if any(p.search(text) for p in patterns) or (k is DocumentKind.POST and _POST_VERBS.search(text))]
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


def _unaccented(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


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


# --- measuring the rules ------------------------------------------------------------------------
@dataclass
class SelfQueryCase:
    id: str
    query: str
    author: str | None  # the author id a correct filter names, or None for no author filter
    kind: DocumentKind | None


def load_selfquery_cases(path: Path) -> tuple[list[Author], list[SelfQueryCase]]:
    """A labelled file: a first line {"authors": [{"id", "name"}, ...]}, then one question per line
    {"id", "query", "author": id or null, "kind": kind or null}."""
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines or "authors" not in lines[0]:
        raise ValueError(f"{path}: the first line must list the authors")
    authors = [Author(**a) for a in lines[0]["authors"]]
    cases = [SelfQueryCase(id=str(row["id"]), query=row["query"], author=row.get("author"),
                           kind=DocumentKind(row["kind"]) if row.get("kind") else None) for row in lines[1:]]
    return authors, cases


def score_selfquery(self_query: SelfQuery, cases: Sequence[SelfQueryCase]) -> dict[str, Any]:
    """Precision and recall of the inferred author and kind filters, and the share of questions whose
    filters are exactly right; `wrong` lists the questions that were not."""
    counts = {"author": [0, 0, 0], "kind": [0, 0, 0]}  # [inferred, correct among inferred, expected]
    wrong = []
    for case in cases:
        filters = self_query.extract(case.query).filters
        got = {"author": filters.author_ids or [], "kind": filters.kinds or []}
        want = {"author": [case.author] if case.author else [], "kind": [case.kind] if case.kind else []}
        for field_name in counts:
            counts[field_name][0] += len(got[field_name])
            counts[field_name][1] += sum(1 for value in got[field_name] if value in want[field_name])
            counts[field_name][2] += len(want[field_name])
        if got != want:
            wrong.append(f"{case.id}: {case.query!r} gave {got}, expected {want}")
    scores: dict[str, Any] = {}
    for field_name, (inferred, correct, expected) in counts.items():
        scores[f"{field_name}_precision"] = correct / inferred if inferred else 1.0
        scores[f"{field_name}_recall"] = correct / expected if expected else 1.0
    scores["exact"] = (len(cases) - len(wrong)) / len(cases) if cases else 0.0
    scores["wrong"] = wrong
    return scores
