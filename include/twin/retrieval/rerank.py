"""Reranking with a trained cross-encoder (TWIN_RERANKER_MODEL).

A model without a trained classification head would score pairs with random weights, so loading
refuses any model whose config does not declare a sequence-classification architecture.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from twin.models import SearchHit


class RerankerError(RuntimeError):
    """The configured reranker cannot be used (missing, or not a trained cross-encoder)."""


def _architectures(model: str) -> list[str]:
    folder = Path(model).expanduser()
    if folder.is_dir():
        config_file = folder / "config.json"
        if not config_file.exists():
            raise RerankerError(f"TWIN_RERANKER_MODEL={model}: no config.json in that folder")
        return list(json.loads(config_file.read_text()).get("architectures") or [])
    from transformers import AutoConfig

    try:  # a model id: needs a model hub (or a local cache of it)
        return list(AutoConfig.from_pretrained(model).architectures or [])
    except OSError as exc:
        raise RerankerError(f"TWIN_RERANKER_MODEL={model}: cannot load its config ({exc})") from None


def check_cross_encoder(model: str) -> None:
    architectures = _architectures(model)
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise RerankerError(
            f"TWIN_RERANKER_MODEL={model} is not a trained cross-encoder (architectures: {architectures or 'none'}); "
            "its scoring head would be random. Use a cross-encoder such as a ms-marco MiniLM model.")


class Reranker:
    def __init__(self, model: str, *, device: str | None = None) -> None:
        check_cross_encoder(model)
        from sentence_transformers import CrossEncoder

        self.model_name = model
        self._model: Any = CrossEncoder(str(Path(model).expanduser()) if Path(model).expanduser().is_dir()
                                        else model, device=device)

    def rerank(self, query: str, hits: Sequence[SearchHit], k: int) -> list[SearchHit]:
        if not hits:
            return []
        scores = self._model.predict([(query, hit.chunk.text) for hit in hits], show_progress_bar=False)
        order = sorted(range(len(hits)), key=lambda i: -float(scores[i]))[:k]
        return [hits[i].model_copy(update={"score": float(scores[i]), "retriever": "rerank",
                                           "ranks": {**hits[i].ranks, "rerank": rank}})
                for rank, i in enumerate(order, start=1)]


@lru_cache(maxsize=2)
def get_reranker(model: str, device: str | None = None) -> Reranker:
    """One reranker per model per process."""
    return Reranker(model, device=device)
