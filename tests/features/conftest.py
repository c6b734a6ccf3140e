"""Feature-pipeline fixtures beyond tests/fixtures/features.py: a second embedding model of the same
dimension (built locally from the packaged one), and a pipeline on an embedded index for tests whose
subject is not the index adapter."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def other_embedder(tmp_path_factory: pytest.TempPathFactory):
    """Another 384-d model: the packaged MiniLM with its last encoder layer's weights negated. Same
    tokenizer and dimension, other vectors; deterministic, so its fingerprint is stable."""
    import torch
    from sentence_transformers import SentenceTransformer

    from twin.features.embedding import Embedder, resolve_model_path

    model = SentenceTransformer(resolve_model_path("packaged"), device="cpu")
    with torch.no_grad():
        for parameter in model[0].auto_model.encoder.layer[-1].parameters():
            parameter.neg_()
    folder = tmp_path_factory.mktemp("other-model")
    model.save(str(folder))
    return Embedder(str(folder), batch_size=16)


@pytest.fixture
def lance_index(tmp_path: Path):
    from twin.search.lancedb_index import LanceDBSearchIndex

    index = LanceDBSearchIndex(tmp_path / "lancedb", f"t-{uuid.uuid4().hex[:10]}")
    yield index
    index.drop()


@pytest.fixture
def make_pipeline(document_store, features_data_dir: Path):
    """Builds a pipeline on the test's store with any index and embedder (as another worker would)."""
    from twin.features.chunking import ChunkSizes
    from twin.features.pipeline import FeaturePipeline
    from twin.settings import load_settings

    def make(index, embedder, **settings):
        return FeaturePipeline(document_store, index, embedder, ChunkSizes(64, 16, 32),
                               load_settings(data_dir=features_data_dir, **settings))

    return make
