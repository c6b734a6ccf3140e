"""Test-run setup: isolated state folders, Airflow on a throwaway metadata DB, real servers.

Airflow reads its configuration when first imported, so its environment is set here, before any
test module imports it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_RUN_DIR = Path(tempfile.mkdtemp(prefix="twin-tests-"))

os.environ.setdefault("AIRFLOW_HOME", str(_RUN_DIR / "airflow"))
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{_RUN_DIR}/airflow/airflow.db")
os.environ["TWIN_DATA_DIR"] = str(_RUN_DIR / "data")
# The packaged LLM is dequantised once per run (about 45 s) and shared by every test and stack.
os.environ.setdefault("TWIN_MODEL_CACHE_DIR", str(_RUN_DIR / "models"))
# The test servers live on loopback, which the crawler refuses unless allowed.
os.environ["TWIN_FETCH_ALLOWED_NETWORKS"] = "127.0.0.0/8,::1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = [
    "tests.fixtures.servers",
    "tests.fixtures.airflow",
    "tests.fixtures.opensearch",
    "tests.fixtures.hostile_site",
    "tests.fixtures.features",
    "tests.fixtures.sample_corpus",
    "tests.fixtures.stack",
]


def pytest_sessionfinish(session, exitstatus) -> None:
    import shutil

    shutil.rmtree(_RUN_DIR, ignore_errors=True)
