"""A dataset version too small to evaluate a twin on is refused before any training starts."""

from __future__ import annotations

from twin.datasets.versions import DatasetVersions, file_name, to_jsonl
from twin.demo.corpus_dataset import author_rows, write_version
from twin.settings import get_settings
from twin.storage.artifacts import LocalArtifactStore
from twin.training.data import untrainable_reason

AUTHOR = "mara-lindqvist"


def train_only_version(store: LocalArtifactStore, rows: list[dict]) -> str:
    """What a tiny build can give: every kept row in training, none held out."""
    instruction = [{k: r[k] for k in r if k not in ("prompt", "chosen", "rejected")} | {"split": "train"} for r in rows]
    files = {file_name("instruction", "train"): to_jsonl(instruction), file_name("instruction", "test"): b"",
             file_name("preference", "train"): b"", file_name("preference", "test"): b""}
    DatasetVersions(store).write(AUTHOR, "trainonly0000000", files, {"version": "trainonly0000000", "author_id": AUTHOR,
                                                                       "created_at": "2026-12-01T00:00:00+00:00"})
    return "trainonly0000000"


def test_a_version_without_held_out_rows_is_refused_with_its_counts(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TWIN_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    settings = get_settings()
    store = LocalArtifactStore(settings.artifacts_dir)
    rows = author_rows(AUTHOR)
    try:
        reason = untrainable_reason(settings, AUTHOR, train_only_version(store, rows[:2]))
        assert reason is not None and "2 training and 0 held-out instruction rows" in reason
        # One document only: the split holds it out whole, so nothing is left to train on.
        first = [r for r in rows if r["document_id"] == rows[0]["document_id"]]
        one_document = write_version(store, AUTHOR, first)
        assert "no instruction training rows" in untrainable_reason(settings, AUTHOR, one_document)
        assert untrainable_reason(settings, AUTHOR, write_version(store, AUTHOR, rows)) is None
        assert "no dataset version" in untrainable_reason(settings, "tomas-okafor")
    finally:
        get_settings.cache_clear()
