"""A small corpus of one author (one passage per document) and a second author, in a fresh database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from twin.models import Author, CleanedDocument, DocumentKind, content_hash
from twin.storage.documents import Collections, DocumentStore

AUTHOR = Author(id="mara", name="Mara Lindqvist")
OTHER = Author(id="tomas", name="Tomas Okafor")
# (id, kind, title, content): one passage each, so the counts below are exact
CORPUS = [
    ("backfills", DocumentKind.ARTICLE, "Idempotent backfills",
     "A backfill is safe to rerun when every task overwrites its own partition instead of appending to it. "
     "Key each write by the logical date of the run, never by the wall clock."),
    ("late-data", DocumentKind.ARTICLE, "Late-arriving data",
     "Late events are normal, not exceptional. Keep a lookback window of three days and reprocess those "
     "partitions on every run, so that a record arriving late still lands where it belongs."),
    ("on-call", DocumentKind.POST, "On-call",
     "Every alert that wakes someone at night needs a runbook link and an owner. If nobody can act on it, "
     "it is noise, and noise teaches people to ignore the pager."),
    ("retry", DocumentKind.CODE, "retry.py",
     "def retry(call, attempts=3):\n    \"\"\"Call until it succeeds, waiting longer after each failure.\"\"\"\n"
     "    for n in range(attempts):\n        try:\n            return call()\n        except OSError:\n"
     "            time.sleep(2 ** n)\n    return call()\n"),
]


def document(doc_id: str, kind: DocumentKind, title: str, content: str, author: Author = AUTHOR) -> CleanedDocument:
    return CleanedDocument(id=doc_id, raw_id=doc_id, kind=kind, url=f"https://example.org/{author.id}/{doc_id}",
                           author_id=author.id, author_name=author.name, title=title, content=content,
                           content_hash=content_hash(content), raw_content_hash=content_hash(content),
                           cleaned_at=datetime.now(UTC), etl_run_id="test")


@pytest.fixture
def corpus_env(llm_env, mlflow_uri, monkeypatch):
    from twin.settings import get_settings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    monkeypatch.setenv("TWIN_DATASET_INSTRUCTION_MAX_NEW_TOKENS", "24")
    monkeypatch.setenv("TWIN_DATASET_ANSWER_MAX_NEW_TOKENS", "16")
    monkeypatch.setenv("TWIN_DATASET_TEST_SHARE", "0.5")
    get_settings.cache_clear()
    settings = get_settings()
    with DocumentStore.from_settings(settings) as store:
        store.replace_many(Collections.AUTHORS, [AUTHOR, OTHER])
        store.upsert_cleaned([document(*row) for row in CORPUS])
        store.upsert_cleaned([document("other", DocumentKind.POST, "Other", "Somebody else's words " * 8, OTHER)])
        yield settings, store
        store.client.drop_database(settings.mongodb_database)
