"""The generation cache: every generator reply of a dataset build, kept in the document store.

Keyed by (task, input hash, generator fingerprint, prompt hash): the input hash is the passage's
(instruction task) or the instruction's (answer task), so a rebuild regenerates only the rows whose
passage, generator settings or prompt changed. Empty and malformed replies are cached too: they are
recorded once and skipped on every rebuild, not regenerated into another random outcome.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pymongo import ReplaceOne

from twin.llm.base import GenerationResult, GeneratorFingerprint
from twin.models import stable_id, utcnow
from twin.storage.documents import Collections, DocumentStore


@dataclass(frozen=True)
class CacheKey:
    task: str  # "instruction" or "answer"
    input_hash: str
    fingerprint: str
    prompt_hash: str

    @property
    def id(self) -> str:
        return stable_id(self.task, self.input_hash, self.fingerprint, self.prompt_hash)


class GenerationCache:
    def __init__(self, store: DocumentStore) -> None:
        self.collection = store.collection(Collections.DATASET_GENERATIONS)

    def get_many(self, keys: Sequence[CacheKey], fingerprint: GeneratorFingerprint) -> dict[str, GenerationResult]:
        found: dict[str, GenerationResult] = {}
        for start in range(0, len(keys), 500):
            ids = [k.id for k in keys[start:start + 500]]
            for doc in self.collection.find({"_id": {"$in": ids}}):
                found[doc["_id"]] = GenerationResult(
                    text=doc["text"], prompt_tokens=doc["prompt_tokens"], completion_tokens=doc["completion_tokens"],
                    finish_reason=doc["finish_reason"], fingerprint=fingerprint)
        return found

    def put_many(self, items: Iterable[tuple[CacheKey, GenerationResult]]) -> int:
        ops = [ReplaceOne({"_id": key.id}, {
            "_id": key.id, "task": key.task, "input_hash": key.input_hash, "fingerprint": key.fingerprint,
            "prompt_hash": key.prompt_hash, "text": result.text, "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens, "finish_reason": result.finish_reason,
            "generator": result.fingerprint.as_dict(), "created_at": utcnow()}, upsert=True) for key, result in items]
        if not ops:
            return 0
        self.collection.bulk_write(ops, ordered=False)
        return len(ops)

