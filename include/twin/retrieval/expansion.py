"""Query expansion: a few other phrasings of the question, written by the LLM, searched together."""

from __future__ import annotations

import re

from twin.retrieval.llm import QueryLLM

PROMPT = """Rewrite the search question below in {n} different ways that ask for the same information.
Write one rewrite per line, without numbering or comments.
Question: {question}
Rewrites:"""

_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")


def expand_query(question: str, llm: QueryLLM, n: int = 3) -> list[str]:
    """Up to `n` distinct rephrasings (the question itself is not among them)."""
    answer = llm.complete(PROMPT.format(n=n, question=question), max_new_tokens=48 * n)
    seen = {question.strip().lower()}
    rewrites = []
    for line in answer.splitlines():
        text = _BULLET.sub("", line).strip().strip('"').strip()
        if len(text) >= 3 and text.lower() not in seen:
            seen.add(text.lower())
            rewrites.append(text)
    return rewrites[:n]
