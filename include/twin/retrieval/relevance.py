"""A calibrated "does the index hold an answer?" signal, so the RAG service can say "I don't know".

Cosine similarity alone separates answerable from unanswerable questions badly (a question on a
nearby topic still finds a passage at 0.5), so several features of one retrieval are combined by a
logistic regression into a probability:

- `cosine`: cosine similarity of the query and its nearest chunk (within the filters);
- `cosine_margin`: that cosine minus the mean of the ten nearest (a lone close passage stands out);
- `bm25_norm`: the best BM25 score divided by the summed IDF of the question's content words, i.e.
  how much of the question's weight the best text match carries, whatever the question's length;
- `coverage`: IDF-weighted share of the question's content words (stop words removed) that occur
  in the top passage: an unanswerable question names things ("FAISS", "dropout") no passage has;
- `known`: IDF-weighted share of the content words that occur anywhere in the index;
- `agreement`: 1 when BM25's and the vectors' best chunks come from the same document.

The coefficients and the threshold are data (`relevance_model.json`), fitted on the tuning split of
the labelled hard set by `python -m twin.retrieval.fit_relevance`; the threshold is chosen there too.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from twin.models import SearchHit

FEATURES = ("cosine", "cosine_margin", "bm25_norm", "coverage", "known", "agreement")
MODEL_FILE = Path(__file__).with_name("relevance_model.json")
_WORD = re.compile(r"[a-z0-9]+")
# Words of how a question is asked, not of what it asks about, missing from scikit-learn's stop
# words; left in, they count as "content" the passage lacks ("which rate does she use ...").
# Dropping them lowered the cross-validated false negatives on the tuning split (0.12 -> 0.06 at 5% FP).
QUESTION_WORDS = frozenset({"does", "did", "doesn", "isn", "use", "used", "uses", "make", "makes", "sure",
                            "happens", "say", "says", "think", "need", "way", "best", "better", "new", "work",
                            "works", "getting"})


@lru_cache(maxsize=1)
def stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS  # imported on first use: it is slow

    return frozenset(ENGLISH_STOP_WORDS)


def _stem(word: str) -> str:
    """A crude suffix strip, applied alike to question and passage words ("filters" ~ "filter")."""
    for suffix in ("ing", "ies", "es", "ed", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def content_words(text: str) -> list[str]:
    """Lower-cased words of a question without stop words and question words, once each, in order."""
    stops = stop_words() | QUESTION_WORDS
    return list(dict.fromkeys(w for w in _WORD.findall(text.lower()) if w not in stops and len(w) > 1))


def idf(document_frequency: int, total: int) -> float:
    """BM25's IDF (Lucene's form), so `bm25_norm` is on the scale of the BM25 score itself."""
    return math.log(1 + (total - document_frequency + 0.5) / (document_frequency + 0.5))


def relevance_features(query: str, top: SearchHit, bm25: Sequence[SearchHit], vector: Sequence[SearchHit],
                       frequencies: dict[str, int], total: int) -> dict[str, float]:
    """The features of one retrieval: `top` is the final best hit, `bm25` and `vector` the two
    retrievers' own lists (best first), `frequencies` the index's chunk count per content word."""
    words = content_words(query)
    weights = {w: idf(frequencies.get(w, 0), max(total, 1)) for w in words}
    weight_sum = sum(weights.values())
    passage = {_stem(w) for w in _WORD.findall(top.chunk.text.lower())}
    cosines = [h.score for h in vector[:10]]
    def share(selected: list[str]) -> float:
        return sum(weights[w] for w in selected) / weight_sum if weight_sum else 0.0
    return {
        "cosine": cosines[0] if cosines else 0.0,
        "cosine_margin": cosines[0] - sum(cosines) / len(cosines) if cosines else 0.0,
        "bm25_norm": bm25[0].score / weight_sum if bm25 and weight_sum else 0.0,
        "coverage": share([w for w in words if _stem(w) in passage]),
        "known": share([w for w in words if frequencies.get(w, 0) > 0]),
        "agreement": 1.0 if bm25 and vector and bm25[0].chunk.document_id == vector[0].chunk.document_id else 0.0,
    }


@dataclass(frozen=True)
class RelevanceModel:
    """Standardised logistic regression over FEATURES; `threshold` is a probability."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    threshold: float

    def probability(self, values: dict[str, float]) -> float:
        z = self.intercept + sum(c * (values[f] - m) / s for f, m, s, c in
                                 zip(self.features, self.mean, self.scale, self.coef, strict=True))
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def to_json(self) -> dict[str, object]:
        return {"features": list(self.features), "mean": list(self.mean), "scale": list(self.scale),
                "coef": list(self.coef), "intercept": self.intercept, "threshold": self.threshold}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> RelevanceModel:
        model = cls(tuple(data["features"]), tuple(data["mean"]), tuple(data["scale"]),  # type: ignore[arg-type]
                    tuple(data["coef"]), float(data["intercept"]), float(data["threshold"]))  # type: ignore[arg-type]
        if set(model.features) - set(FEATURES):
            raise ValueError(f"relevance model uses unknown features {set(model.features) - set(FEATURES)}")
        return model


@lru_cache(maxsize=4)
def load_model(path: Path = MODEL_FILE) -> RelevanceModel | None:
    """The fitted model, or None before one was fitted (then the raw cosine is the signal)."""
    if not path.exists():
        return None
    return RelevanceModel.from_json(json.loads(path.read_text(encoding="utf-8")))
