"""Grounding of answers in retrieved passages, and the LLM judge.

Grounding: a held-out question is answered with the author's passages retrieved for it in the prompt
(as the RAG service answers); the answer is scored on how much of it those passages support. The
heuristic is lexical support: the share of the answer's content words (no stop words, 4+ letters) that
occur in the retrieved passages. Retrieval here is embedding similarity over the dataset's training
passages, which are the author's indexed chunks at the dataset's version; the held-out passages are
never retrieved, so a model cannot score by quoting the reference.

The judge: when TWIN_JUDGE_BASE_URL names an OpenAI-compatible endpoint, a judge prompt (`prompts/judge.txt`)
sent through twin.llm's LLMClient grades each answer for style (against the author's reference) and
grounding (against the retrieved passages), 1 to 5. Verdicts that do not parse are counted, not guessed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twin.datasets.prompts import PromptTemplate, load_prompt
from twin.llm.base import Messages
from twin.settings import Settings

PROMPTS_DIR = Path(__file__).parent / "prompts"
_WORD = re.compile(r"[a-z][a-z'-]{3,}")


def content_words(text: str) -> set[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return {w for w in _WORD.findall(text.lower()) if w not in ENGLISH_STOP_WORDS}


def lexical_support(answer: str, passages: Sequence[str]) -> float:
    """Share of the answer's content words found in the passages (0 for an answer with none)."""
    words = content_words(answer)
    if not words:
        return 0.0
    return len(words & content_words(" ".join(passages))) / len(words)


def top_k(query_vectors: Sequence[Sequence[float]], passage_vectors: Sequence[Sequence[float]],
          k: int) -> list[list[int]]:
    """Indices of the k passages nearest each query by cosine similarity, best first."""
    q, p = np.asarray(query_vectors, dtype=float), np.asarray(passage_vectors, dtype=float)
    q /= np.linalg.norm(q, axis=1, keepdims=True) + 1e-12
    p /= np.linalg.norm(p, axis=1, keepdims=True) + 1e-12
    order = np.argsort(-(q @ p.T), axis=1, kind="stable")[:, :k]
    return [[int(i) for i in row] for row in order]


def format_context(passages: Sequence[str]) -> str:
    return "\n\n".join(f"[{n}] {p}" for n, p in enumerate(passages, 1))


def grounded_prompts(questions: Sequence[str], contexts: Sequence[Sequence[str]]) -> list[Messages]:
    template = load_prompt("grounded_answer", PROMPTS_DIR)
    return [template.render(question=q, context=format_context(c)) for q, c in zip(questions, contexts, strict=True)]


@dataclass(frozen=True)
class Verdict:
    style: int
    grounded: int


_SCORE = re.compile(r'"?(style|grounded)"?\s*[:=]\s*([1-5])')


def parse_verdict(text: str) -> Verdict | None:
    """{"style": N, "grounded": N}, tolerating prose around it; None when either score is missing."""
    match = re.search(r"\{.*?\}", text, re.DOTALL)
    if match:
        try:
            data = json.loads(match.group(0))
            style, grounded = int(data["style"]), int(data["grounded"])
            if 1 <= style <= 5 and 1 <= grounded <= 5:
                return Verdict(style, grounded)
        except (ValueError, KeyError, TypeError):
            pass
    found = dict(_SCORE.findall(text.lower()))
    if "style" in found and "grounded" in found:
        return Verdict(int(found["style"]), int(found["grounded"]))
    return None


class Judge:
    """An LLM judge behind the one LLMClient; `grade` returns one verdict (or None) per answer."""

    def __init__(self, client, template: PromptTemplate | None = None) -> None:
        self.client = client
        self.template = template or load_prompt("judge", PROMPTS_DIR)

    @property
    def name(self) -> str:
        return self.client.name

    def grade(self, questions: Sequence[str], references: Sequence[str], contexts: Sequence[Sequence[str]],
              answers: Sequence[str]) -> list[Verdict | None]:
        prompts = [self.template.render(question=q, reference=r, context=format_context(c), answer=a)
                   for q, r, c, a in zip(questions, references, contexts, answers, strict=True)]
        return [parse_verdict(g.text) for g in self.client.chat(prompts)]


def judge_from_settings(settings: Settings) -> Judge | None:
    """The judge the settings name (TWIN_JUDGE_*), or None: the evaluation then says it used heuristics."""
    if not settings.judge_base_url:
        return None
    from twin.llm.base import SamplingSettings
    from twin.llm.client import LLMClient
    from twin.llm.openai_backend import OpenAIBackend

    backend = OpenAIBackend(settings.judge_base_url, settings.judge_model, api_key=settings.judge_api_key,
                            timeout_s=settings.llm_timeout_s, max_retries=settings.llm_max_retries,
                            concurrency=settings.llm_batch_size)
    sampling = SamplingSettings(temperature=0.0, max_new_tokens=settings.judge_max_new_tokens, repetition_penalty=1.0,
                                seed=settings.llm_seed)
    return Judge(LLMClient(backend, sampling, batch_size=settings.llm_batch_size))
