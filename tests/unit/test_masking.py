"""Secrets never printed: `twin config`, the unreachable-store error, log records and tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.fixtures.processes import free_port
from twin import masking
from twin.masking import MASK, SecretRegistry, is_secret_name, mask, masked_value

TWIN = Path(sys.executable).parent / "twin"
PASSWORD = "s3cr3t-Pa55word"
OPENSEARCH_PASSWORD = "os-pa55-very-secret"


def run_twin(args: list[str], env: dict[str, str], tmp_path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TWIN_", "MONGODB_", "OPENSEARCH_"))}
    return subprocess.run([str(TWIN), *args], env={**clean, "TWIN_DATA_DIR": str(tmp_path), **env},
                          cwd=tmp_path, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(("text", "expected"), [
    (f"mongodb://twin:{PASSWORD}@db:27017/?authSource=admin", f"mongodb://twin:{MASK}@db:27017/?authSource=admin"),
    (f"postgresql+psycopg2://airflow:{PASSWORD}@postgres:5432/airflow",
     f"postgresql+psycopg2://airflow:{MASK}@postgres:5432/airflow"),
    ("see https://h.test/x?user=a&password=hunter22&b=1", f"see https://h.test/x?user=a&password={MASK}&b=1"),
    ("mongodb://127.0.0.1:27017/", "mongodb://127.0.0.1:27017/"),  # nothing secret: unchanged
    ("https://user@h.test/", "https://user@h.test/"),
])
def test_mask_hides_passwords_in_urls_and_parameters(text: str, expected: str) -> None:
    assert mask(text, SecretRegistry()) == expected


def test_known_secret_values_are_masked_wherever_they_appear() -> None:
    registry = SecretRegistry()
    registry.add(SecretStr("tok-123456"), "abc")  # too short to search for verbatim: ignored
    registry.add_from_environment({"OPENAI_API_KEY": "sk-live-999", "TWIN_CHUNK_TOKENS": "256",
                                   "MONGODB_URI": f"mongodb://u:{PASSWORD}@h/"})
    text = f"key sk-live-999 token tok-123456 password {PASSWORD} chunk 256 abc"
    assert mask(text, registry) == f"key {MASK} token {MASK} password {MASK} chunk 256 abc"


@pytest.mark.parametrize(("name", "secret"), [
    ("MONGO_ROOT_PASSWORD", True), ("AWS_SECRET_ACCESS_KEY", True), ("OPENAI_API_KEY", True),
    ("AIRFLOW__CORE__FERNET_KEY", True), ("HF_TOKEN", True), ("opensearch_password", True),
    ("TWIN_CHUNK_TOKENS", False), ("context_max_tokens", False), ("AIRFLOW__CORE__AUTH_MANAGER", False),
    ("TWIN_AIRFLOW_ADMIN_USER", False), ("author_id", False),
])
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret
    assert (masked_value(name, "value") == MASK) is secret


def test_config_prints_no_secret(tmp_path: Path) -> None:
    result = run_twin(["config"], {"MONGODB_URI": f"mongodb://twin:{PASSWORD}@127.0.0.1:27017/?authSource=admin",
                                   "OPENSEARCH_PASSWORD": OPENSEARCH_PASSWORD}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert OPENSEARCH_PASSWORD not in result.stdout + result.stderr
    assert f"MONGODB_URI=mongodb://twin:{MASK}@127.0.0.1:27017/?authSource=admin" in result.stdout.splitlines()
    assert f"OPENSEARCH_PASSWORD={MASK}" in result.stdout.splitlines()
    assert "TWIN_MONGO_PORT=27017" in result.stdout.splitlines()  # the rest is shown as it is


def test_unreachable_document_store_error_masks_the_password(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = run_twin(["etl", "run"], {"MONGODB_URI": f"mongodb://twin:{PASSWORD}@127.0.0.1:{port}/",
                                       "TWIN_MONGODB_SERVER_WAIT_S": "2"}, tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"cannot reach the document store at mongodb://twin:{MASK}@127.0.0.1:{port}/" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_log_records_and_tracebacks_are_masked(tmp_path: Path) -> None:
    script = (
        "import logging, sys\n"
        "from twin import masking\n"
        "masking.install()\n"
        "logging.basicConfig(stream=sys.stdout, level=logging.INFO, format='%(message)s')\n"
        f"logging.getLogger('x').info('connecting to %s', 'mongodb://u:{PASSWORD}@h:1/')\n"
        f"logging.getLogger('x').info('key is %s', {OPENSEARCH_PASSWORD!r})\n"
        "try:\n"
        f"    raise RuntimeError('failed: mongodb://u:{PASSWORD}@h:1/')\n"
        "except RuntimeError:\n"
        "    logging.getLogger('x').exception('oops')\n"
        f"raise ValueError('boom at https://a:{PASSWORD}@h.test/')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "OPENSEARCH_PASSWORD": OPENSEARCH_PASSWORD})
    assert result.returncode == 1
    assert f"connecting to mongodb://u:{MASK}@h:1/" in result.stdout
    assert f"key is {MASK}" in result.stdout
    assert f"RuntimeError: failed: mongodb://u:{MASK}@h:1/" in result.stdout
    assert f"ValueError: boom at https://a:{MASK}@h.test/" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr and OPENSEARCH_PASSWORD not in result.stdout


def test_document_store_registers_its_password() -> None:
    from twin.storage.documents import DocumentStore

    assert mask(f"password {PASSWORD}") == f"password {PASSWORD}"
    store = DocumentStore(f"mongodb://reader:{PASSWORD}@127.0.0.1:{free_port()}/", "x", timeout_ms=100)
    try:
        assert mask(f"password {PASSWORD}") == f"password {MASK}"  # e.g. in a driver's error message
    finally:
        store.close()
        masking.SECRETS.clear()
