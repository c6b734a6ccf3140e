"""Reading generator replies and the filters of dataset rows; each filter has a name that the
build report counts.

Order matters only for which name a row is counted under: a row is counted once, under the first
filter it fails.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from twin.llm.base import GenerationResult

# Filter names, as they appear in manifests and reports.
EMPTY_REPLY = "empty_reply"
MALFORMED_REPLY = "malformed_reply"
ANSWER_LENGTH = "answer_length"
INSTRUCTION_LENGTH = "instruction_length"
LANGUAGE = "language"
INSTRUCTION_FORM = "instruction_form"
MENTIONS_SOURCE = "mentions_source"
GIVES_ANSWER_AWAY = "gives_answer_away"
NEAR_DUPLICATE = "near_duplicate_instruction"
REJECTED_EMPTY = "rejected_empty"
REJECTED_COPIES_PASSAGE = "rejected_copies_passage"
FAILED_VALIDATION = "failed_validation"

INSTRUCTION_FILTERS = [ANSWER_LENGTH, EMPTY_REPLY, MALFORMED_REPLY, INSTRUCTION_LENGTH, LANGUAGE,
                       INSTRUCTION_FORM, MENTIONS_SOURCE, GIVES_ANSWER_AWAY, NEAR_DUPLICATE, FAILED_VALIDATION]
PREFERENCE_FILTERS = [REJECTED_EMPTY, REJECTED_COPIES_PASSAGE, FAILED_VALIDATION]

_PREFIX = re.compile(r"^\s*(?:[-*•]|\d+[.)]|#+|>)?\s*(?:\*\*)?\s*(?:question|q|instruction|request)\s*\d*\s*[:.-]\s*",
                     re.IGNORECASE)
_LIST_MARK = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
_SOURCE_WORDS = re.compile(
    r"\b(?:the|this|that|given|above|following|provided)\s+"
    r"(?:passage|text|excerpt|article|snippet|paragraph|document|writing|post|author|extract|code\s+file)s?\b",
    re.IGNORECASE)
_QUESTION_TEXT = (
    "what how why when where which who whom whose is are was were do does did can could should would will may might "
    "has have explain describe write give list tell show compare summarize summarise outline suggest implement "
    "define provide name discuss walk help")
_QUESTION_WORDS = frozenset(_QUESTION_TEXT.split(" "))
_WORD = re.compile(r"[\w'-]+", re.UNICODE)
ANSWER_AWAY_RUN = 8  # words in a row shared with the passage: the question quotes its answer
# Questions about a document's title, for passages whose generated question is unusable (and for corpus-built sets).
TITLE_QUESTIONS = ("What do you think about {t}?", "Explain {t} in your own words.", "What should I know about {t}?")


@dataclass(frozen=True)
class FilterSettings:
    language: str = "en"
    min_instruction_chars: int = 12
    max_instruction_chars: int = 300
    min_answer_chars: int = 80
    max_answer_chars: int = 4000
    duplicate_threshold: float = 0.8

    @classmethod
    def from_settings(cls, settings: Any) -> FilterSettings:
        return cls(language=settings.dataset_language,
                   min_instruction_chars=settings.dataset_min_instruction_chars,
                   max_instruction_chars=settings.dataset_max_instruction_chars,
                   min_answer_chars=settings.dataset_min_answer_chars,
                   max_answer_chars=settings.dataset_max_answer_chars,
                   duplicate_threshold=settings.dataset_duplicate_threshold)


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def parse_instruction(reply: GenerationResult | None) -> tuple[str | None, str | None]:
    """(instruction, None) from a reply, or (None, filter name) for an empty or malformed one."""
    if reply is None or not reply.text.strip():
        return None, EMPTY_REPLY
    line = next((ln for ln in reply.text.splitlines() if ln.strip()), "")
    line = _LIST_MARK.sub("", _PREFIX.sub("", line)).strip()
    if "?" in line:  # small models often go on after the question: the question is what was asked for
        line = line[:line.index("?") + 1]
    line = line.strip().strip("\"'`*“”").strip()
    if not re.search(r"[^\W\d_]", line):  # no letter at all: not an instruction
        return None, MALFORMED_REPLY
    if reply.finish_reason == "length" and not line.endswith("?") and "\n" not in reply.text.strip():
        return None, MALFORMED_REPLY  # cut off by the token limit mid-sentence
    return line, None


def title_instruction(title: str | None, n: int) -> str | None:
    """The n-th title question about a document (its title up to a colon, lower-cased), or None without a title."""
    subject = " ".join((title or "").split(":")[0].split()).lower()
    return TITLE_QUESTIONS[n % len(TITLE_QUESTIONS)].format(t=subject) if subject else None


def answer_length_ok(passage: str, fs: FilterSettings) -> bool:
    return fs.min_answer_chars <= len(passage.strip()) <= fs.max_answer_chars


def instruction_problem(instruction: str, passage: str, fs: FilterSettings) -> str | None:
    """The first per-row filter the instruction fails, or None."""
    if not fs.min_instruction_chars <= len(instruction) <= fs.max_instruction_chars:
        return INSTRUCTION_LENGTH
    if not language_ok(instruction, fs.language):
        return LANGUAGE
    if not instruction_form_ok(instruction):
        return INSTRUCTION_FORM
    if _SOURCE_WORDS.search(instruction):
        return MENTIONS_SOURCE
    if longest_shared_run(words(instruction), words(passage)) >= ANSWER_AWAY_RUN:
        return GIVES_ANSWER_AWAY
    return None


def instruction_form_ok(instruction: str) -> bool:
    first = words(instruction)[:1]
    return instruction.rstrip().endswith("?") or bool(first and first[0] in _QUESTION_WORDS)


@lru_cache(maxsize=1)
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE)


def language_ok(text: str, language: str) -> bool:
    """The expected language is among the three likeliest: short questions full of code names
    are often misread as another language, a question in another language is not."""
    ranked = [lang for lang, _ in _identifier().rank(text)[:3]]
    return language in ranked


def longest_shared_run(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest run of consecutive words that a and b share."""
    best, previous = 0, [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            if x == y:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def rejected_problem(rejected: GenerationResult | None, passage: str) -> str | None:
    if rejected is None or not rejected.text.strip():
        return REJECTED_EMPTY
    shared = longest_shared_run(words(rejected.text), words(passage))
    if shared >= max(12, len(words(passage)) // 2):  # it repeats the author's words: no contrast to learn
        return REJECTED_COPIES_PASSAGE
    return None


class NearDuplicates:
    """Instructions already kept, by MinHash LSH over their word sets; the first one wins."""

    def __init__(self, threshold: float) -> None:
        from datasketch import MinHashLSH

        self._lsh = MinHashLSH(threshold=threshold, num_perm=128)
        self._count = 0

    def seen(self, instruction: str) -> bool:
        """True if a near duplicate was kept before; otherwise keep this one and return False."""
        from datasketch import MinHash

        signature = MinHash(num_perm=128, seed=1)
        for token in set(words(instruction)):
            signature.update(token.encode("utf-8"))
        if self._lsh.query(signature):
            return True
        self._lsh.insert(str(self._count), signature)
        self._count += 1
        return False
