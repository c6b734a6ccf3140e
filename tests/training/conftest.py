"""Fixtures of the training tests: dataset versions of the three sample authors, written through
twin.datasets' DatasetVersions into the test run's artifact store.

The rows come straight from the sample corpus (twin.demo.corpus_dataset: a passage is a paragraph of an
article, its instruction built from the article's title), so no generator runs here: the dataset builder has
its own tests.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.llm.support import (  # noqa: F401  (fixtures: the OpenAI-compatible server of the judge tests)
    local_backend,
    model_cache_dir,
    openai_server,
    openai_server_session,
)
from twin.demo.corpus_dataset import author_rows, write_version
from twin.demo.corpus_files import AUTHORS
from twin.storage.artifacts import LocalArtifactStore


@pytest.fixture(scope="session")
def training_env(mlflow_uri: str) -> dict[str, str]:
    """Settings of the training tests: the test MLflow server, and each author's dataset version."""
    from twin.settings import get_settings

    os.environ["MLFLOW_TRACKING_URI"] = mlflow_uri
    get_settings.cache_clear()
    settings = get_settings()
    store = LocalArtifactStore(settings.artifacts_dir)
    versions = {a.id: write_version(store, a.id, author_rows(a.id)) for a in AUTHORS}
    from twin.llm.local import resolve_model

    resolve_model("packaged", settings.resolved_model_cache_dir)  # dequantised once, before ranks start
    return {"MLFLOW_TRACKING_URI": mlflow_uri, "TWIN_DATA_DIR": str(settings.data_dir),
            "versions": json.dumps(versions)}


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]
