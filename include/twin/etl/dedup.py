"""Exact and near-duplicate detection across sources (MinHash LSH over word shingles).

Documents are compared within one kind. The index holds only canonical documents (those that are
not duplicates themselves), so a duplicate always points at a canonical one, never at a chain.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from datasketch import MinHash, MinHashLSH

NUM_PERM = 128
SCHEME = "affine32"  # stored signatures are only comparable with sketches of the same scheme
SHINGLE_WORDS = 5
_WORD = re.compile(r"\w+")
# One template MinHash: building the permutations is the costly part, copies reuse them.
_TEMPLATE = MinHash(num_perm=NUM_PERM, seed=1, scheme=SCHEME)


class DuplicateKind(StrEnum):
    EXACT = "exact"
    NEAR = "near"


@dataclass(frozen=True)
class DuplicateMatch:
    of: str  # id of the canonical document
    kind: DuplicateKind
    similarity: float


def shingles(text: str) -> set[bytes]:
    words = _WORD.findall(text.lower())
    if len(words) < SHINGLE_WORDS:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + SHINGLE_WORDS]).encode() for i in range(len(words) - SHINGLE_WORDS + 1)}


def minhash(text: str) -> MinHash:
    signature = MinHash(num_perm=NUM_PERM, seed=1, scheme=SCHEME, permutations=_TEMPLATE.permutations)
    signature.update_batch(list(shingles(text)))
    return signature


def signature_bytes(signature: MinHash) -> bytes:
    return signature.hashvalues.astype(np.uint32).tobytes()


def signature_from_bytes(data: bytes) -> MinHash:
    values = np.frombuffer(data, dtype=np.uint32)
    return MinHash(num_perm=NUM_PERM, seed=1, scheme=SCHEME, hashvalues=values,
                   permutations=_TEMPLATE.permutations)


class DuplicateIndex:
    """Canonical documents by kind: exact content hashes plus an LSH index of their MinHashes."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._exact: dict[tuple[str, str], str] = {}
        self._exact_key: dict[str, tuple[str, str]] = {}  # the exact key a document holds, to discard it
        self._lsh: dict[str, MinHashLSH] = {}
        self._signatures: dict[str, MinHash] = {}

    def __len__(self) -> int:
        return len(self._signatures)

    def add(self, doc_id: str, kind: str, content_hash: str, signature: MinHash) -> None:
        if self._exact.setdefault((kind, content_hash), doc_id) == doc_id:
            self._exact_key[doc_id] = (kind, content_hash)
        if doc_id in self._signatures:
            return
        lsh = self._lsh.get(kind)
        if lsh is None:  # built once per kind: choosing its band layout integrates numerically (~50 ms)
            lsh = self._lsh[kind] = MinHashLSH(threshold=self.threshold, num_perm=NUM_PERM)
        lsh.insert(doc_id, signature)
        self._signatures[doc_id] = signature

    def discard(self, doc_ids: Iterable[str]) -> None:
        """Forget documents (they are judged again, or left the corpus); unknown ids are ignored.
        Lets one index, loaded once per run, follow the run's writes in memory."""
        gone = set(doc_ids)
        for doc_id in gone & self._signatures.keys():
            del self._signatures[doc_id]
            for lsh in self._lsh.values():
                if doc_id in lsh:  # the LSH of the document's kind
                    lsh.remove(doc_id)
        for doc_id in gone & self._exact_key.keys():
            self._exact.pop(self._exact_key.pop(doc_id), None)

    def find(self, kind: str, content_hash: str, signature: MinHash) -> DuplicateMatch | None:
        exact = self._exact.get((kind, content_hash))
        if exact is not None:
            return DuplicateMatch(of=exact, kind=DuplicateKind.EXACT, similarity=1.0)
        lsh = self._lsh.get(kind)
        if lsh is None:
            return None
        # LSH only proposes candidates; the estimated Jaccard similarity decides, ties by id.
        scored = [(signature.jaccard(self._signatures[c]), c) for c in lsh.query(signature)]
        scored = [(s, c) for s, c in scored if s >= self.threshold]
        if not scored:
            return None
        similarity, best = min(scored, key=lambda item: (-item[0], item[1]))
        return DuplicateMatch(of=best, kind=DuplicateKind.NEAR, similarity=round(similarity, 4))
