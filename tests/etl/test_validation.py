"""The reusable GX gate: suites from expectations/, per-row failures, Data Docs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from twin.etl.validation import (
    ValidationSetupError,
    build_data_docs,
    load_suite_definition,
    validate_records,
)
from twin.settings import load_settings

LOSS = {"cleaning_max_loss_share": 0.2}


def cleaned(rows: list[dict]) -> pd.DataFrame:
    """Rows of the cleaned-documents frame; `prose` is the content unless a row says otherwise."""
    return pd.DataFrame([{"prose": r.get("content"), "cleaning_loss_share": 0.0, **r} for r in rows])


@pytest.fixture
def settings(tmp_path: Path):
    return load_settings(data_dir=tmp_path / "data")


def test_every_suite_in_expectations_loads() -> None:
    directory = load_settings().resolved_expectations_dir
    names = [p.stem for p in directory.glob("*.json")]
    assert {"raw_documents", "cleaned_documents"} <= set(names)
    for name in names:
        assert load_suite_definition(name, directory)["expectations"]


def test_cleaned_suite_returns_the_failing_rows_with_their_expectations(settings) -> None:
    frame = cleaned([
        {"id": "ok", "kind": "article", "content": "Plain text.", "content_chars": 11},
        {"id": "tags", "kind": "post", "content": "Hi <span>there</span>", "content_chars": 21},
        {"id": "named-tag", "kind": "article", "content": "Wrap links in a <nav> element.", "content_chars": 30},
        {"id": "html-code", "kind": "code", "content": "<div>{x}</div>", "content_chars": 14},
        {"id": "empty", "kind": "article", "content": "", "content_chars": 0},
        {"id": "lossy", "kind": "article", "content": "Left.", "content_chars": 5, "cleaning_loss_share": 0.5},
    ])
    outcome = validate_records("cleaned_documents", frame, parameters=LOSS, settings=settings)
    assert not outcome.success and outcome.evaluated_rows == 6
    assert outcome.row_failures == {
        "tags": ["expect_column_values_to_not_match_regex(prose)"],
        "empty": ["expect_column_values_to_be_between(content_chars)"],
        "lossy": ["expect_column_values_to_be_between(cleaning_loss_share)"],
    }
    assert outcome.expectation_failures == {"expect_column_values_to_not_match_regex(prose)": 1,
                                            "expect_column_values_to_be_between(content_chars)": 1,
                                            "expect_column_values_to_be_between(cleaning_loss_share)": 1}


def test_duplicate_ids_fail_both_rows_and_good_frames_pass(settings) -> None:
    row = {"kind": "article", "content": "Text.", "content_chars": 5}
    dup = validate_records("cleaned_documents", cleaned([{"id": "x", **row}, {"id": "x", **row}]),
                           parameters=LOSS, settings=settings)
    assert dup.row_failures == {"x": ["expect_column_values_to_be_unique(id)"]}
    good = validate_records("cleaned_documents", cleaned([{"id": "a", **row}, {"id": "b", **row}]),
                            parameters=LOSS, settings=settings)
    assert good.success and good.row_failures == {}


def test_data_docs_are_built_under_the_data_folder(settings) -> None:
    frame = cleaned([{"id": "e", "kind": "article", "content": "", "content_chars": 0}])
    validate_records("cleaned_documents", frame, parameters=LOSS, settings=settings)
    site = build_data_docs(settings)
    assert site.is_relative_to(settings.data_dir) and (site / "index.html").is_file()


def test_missing_or_broken_suites_say_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "nameless.json").write_text(json.dumps({"expectations": []}))
    settings = load_settings(data_dir=tmp_path / "data", expectations_dir=tmp_path)
    frame = pd.DataFrame([{"id": "a"}])
    with pytest.raises(ValidationSetupError, match="does not exist"):
        validate_records("absent", frame, settings=settings)
    with pytest.raises(ValidationSetupError, match="not valid JSON"):
        validate_records("broken", frame, settings=settings)
    with pytest.raises(ValidationSetupError, match="needs \"name\""):
        validate_records("nameless", frame, settings=settings)
    with pytest.raises(ValidationSetupError, match="no id column"):
        validate_records("absent", pd.DataFrame([{"key": 1}]), settings=settings)
