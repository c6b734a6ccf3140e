"""The figures a twin version is judged by. All are heuristics of "sounds like the author", labelled so:

- held-out perplexity of the author's own answers (lower: the model finds the author's words likelier);
- style similarity: cosine similarity (MiniLM embeddings) of a model's answer to the author's held-out
  passages (their normalised mean), with a bootstrap confidence interval over the held-out instructions;
- passage similarity: the same cosine to the one real passage the instruction was written from (reported,
  not gated: a twin cannot know a held-out article, so this measures the question's topic more than voice);
- authorship: a character n-gram logistic regression trained on the author's versus other authors'
  training passages; the share of a model's answers it attributes to the author.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    level: float = 0.95

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def bootstrap_mean(values: Sequence[float], *, samples: int = 1000, level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of the mean (paired differences give the interval of a gain)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("no values to bootstrap")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(samples, data.size))].mean(axis=1)
    tail = (1 - level) / 2
    return Interval(float(data.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail)), level)


def perplexity(model: Any, tokenizer: Any, conversations: Sequence[Sequence[dict[str, str]]], *,
               max_length: int = 512) -> float:
    """exp(mean negative log-likelihood) of the assistant turns, given the chat-templated prompts."""
    import torch

    total_nll, total_tokens = 0.0, 0
    model.eval()
    for messages in conversations:
        prompt = tokenizer.apply_chat_template(list(messages[:-1]), add_generation_prompt=True, tokenize=True,
                                               return_dict=True)["input_ids"]
        full = tokenizer.apply_chat_template(list(messages), tokenize=True, return_dict=True)["input_ids"]
        full = full[:max_length]
        labels = [-100] * min(len(prompt), len(full)) + full[len(prompt):]
        scored = sum(1 for t in labels[1:] if t != -100)  # the model shifts labels by one
        if scored == 0:
            continue
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([full], device=model.device),
                        labels=torch.tensor([labels], device=model.device))
        total_nll += float(out.loss) * scored
        total_tokens += scored
    if total_tokens == 0:
        raise ValueError("no answer tokens to score")
    return math.exp(total_nll / total_tokens)


def cosine_rows(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> list[float]:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
    y /= np.linalg.norm(y, axis=1, keepdims=True) + 1e-12
    return [float(v) for v in (x * y).sum(axis=1)]


def centroid_similarity(vectors: Sequence[Sequence[float]], references: Sequence[Sequence[float]]) -> list[float]:
    """Cosine of each vector to the normalised mean of the normalised references (the author's passages)."""
    refs = np.asarray(references, dtype=float)
    if refs.size == 0:
        raise ValueError("no reference passages")
    refs /= np.linalg.norm(refs, axis=1, keepdims=True) + 1e-12
    centroid = refs.mean(axis=0)
    return cosine_rows(vectors, [centroid] * len(vectors))


class AuthorshipClassifier:
    """Author versus other authors, from character n-grams (a heuristic stylometric check)."""

    def __init__(self, author_texts: Sequence[str], other_texts: Sequence[str], *, seed: int = 0) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        if not author_texts or not other_texts:
            raise ValueError("the authorship check needs passages of the author and of other authors")
        self.pipeline = make_pipeline(
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=1),
            LogisticRegression(class_weight="balanced", max_iter=2000, random_state=seed))
        self.pipeline.fit(list(author_texts) + list(other_texts), [1] * len(author_texts) + [0] * len(other_texts))
        self.training_sizes = {"author": len(author_texts), "others": len(other_texts)}

    def author_share(self, texts: Sequence[str]) -> float:
        """Share of texts attributed to the author (probability above one half)."""
        if not texts:
            raise ValueError("no texts to attribute")
        return float((self.pipeline.predict_proba(list(texts))[:, 1] > 0.5).mean())

    def author_probabilities(self, texts: Sequence[str]) -> list[float]:
        return [float(p) for p in self.pipeline.predict_proba(list(texts))[:, 1]]
