"""Dataset builds on a small corpus with the real packaged model: versions, the generation cache,
filters, the split, the GX gate and MLflow lineage."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tests.datasets.corpus import CORPUS, document
from twin.datasets import filters as F
from twin.datasets.builder import DatasetBuilder, DatasetError, SplitSettings, build_builder
from twin.datasets.versions import DatasetVersions, diff_versions
from twin.llm import LLMClient, SamplingSettings
from twin.llm.base import GenerationResult, GeneratorFingerprint
from twin.llm.openai_backend import OpenAIBackend


@pytest.mark.slow
def test_build_rebuild_and_change_one_passage(corpus_env) -> None:
    settings, store = corpus_env
    builder = build_builder(settings, store)
    first = builder.build("mara")
    passages = len(CORPUS)
    assert first.passages == passages and first.generated["instruction"] == passages
    kept = first.rows["instruction"]["train"] + first.rows["instruction"]["test"]
    dropped = sum(n for name, n in first.filters["instruction"].items() if name != F.ANSWER_LENGTH)
    assert kept + dropped == passages  # every passage is a row or counted under one filter
    assert first.generated["answer"] == kept and first.changed and first.parent_version is None

    versions = DatasetVersions(builder.versions.artifacts)
    manifest = versions.manifest("mara", first.version)
    assert {s["document_id"] for s in manifest["sources"]} == {row[0] for row in CORPUS}  # not the other author
    assert manifest["generator"]["model"] == "SmolLM2-135M-Instruct"
    assert manifest["generator"]["revision"].startswith("gguf-sha256:")
    assert set(manifest["prompts"]) == {"instruction", "answer"} and all(len(h) == 64 for h in
                                                                          manifest["prompts"].values())
    rows = versions.all_rows("mara", first.version)
    by_passage = {r["passage_id"]: r for r in rows["instruction"]}
    texts = {row[3].strip() for row in CORPUS}
    for row in rows["instruction"]:
        assert row["output"] in texts and row["messages"][1]["content"] == row["output"]  # the author's words
    for row in rows["preference"]:
        assert row["chosen"][0]["content"] == by_passage[row["passage_id"]]["output"]
        assert row["rejected"][0]["content"] and row["rejected"][0]["content"] != row["chosen"][0]["content"]
    splits = {r["document_id"]: r["split"] for r in rows["instruction"]}
    assert all(r["split"] == splits[r["document_id"]] for d in rows.values() for r in d)
    assert versions.latest("mara") == first.version

    import mlflow

    mlflow.set_tracking_uri(settings.resolved_mlflow_uri)
    run = mlflow.get_run(first.mlflow_run_id)
    assert run.data.tags["twin.dataset_version"] == first.version
    names = {i.dataset.name for i in run.inputs.dataset_inputs}
    assert f"mara-instruction-train@{first.version}" in names and len(names) == 4

    again = build_builder(settings, store).build("mara")
    assert again.version == first.version and not again.changed
    assert again.generated == {"instruction": 0, "answer": 0} and again.cached["instruction"] == passages
    assert again.mlflow_run_id == first.mlflow_run_id  # one run per version

    changed_text = CORPUS[0][3] + " A partition that is overwritten whole can be replayed at any time."
    store.upsert_cleaned([document(CORPUS[0][0], CORPUS[0][1], CORPUS[0][2], changed_text)])
    third = build_builder(settings, store).build("mara")
    assert third.generated["instruction"] == 1 and third.cached["instruction"] == passages - 1
    assert third.version != first.version and third.parent_version == first.version and third.changed
    diff = diff_versions(versions, versions.manifest("mara", first.version), versions.manifest("mara", third.version))
    touched = {p for d in diff["datasets"].values() for key in ("added", "removed", "changed") for p in d[key]}
    old_ids = {r["passage_id"] for r in rows["instruction"] if r["document_id"] == "backfills"}
    new_rows = versions.all_rows("mara", third.version)["instruction"]
    new_ids = {r["passage_id"] for r in new_rows if r["document_id"] == "backfills"}
    assert touched <= old_ids | new_ids  # only the changed document's passage moved


@pytest.mark.slow
def test_empty_and_malformed_replies_are_recorded_and_skipped(corpus_env, openai_server) -> None:
    settings, store = corpus_env
    openai_server.faults.extend(["empty", "malformed"])
    generator = LLMClient(OpenAIBackend(openai_server.url, "smollm2", max_retries=0),
                          SamplingSettings(max_new_tokens=32), batch_size=1)  # one at a time: faults hit rows 1, 2
    builder = build_builder(settings, store, generator=generator)
    report = builder.build("mara", limit=3, track=False)
    assert report.passages == 3 and report.generated["instruction"] == 3
    assert report.filters["instruction"][F.EMPTY_REPLY] == 1
    assert report.filters["instruction"][F.MALFORMED_REPLY] == 1
    assert sorted(s["reason"] for s in report.skipped_replies if s["task"] == "instruction") == [
        F.EMPTY_REPLY, F.MALFORMED_REPLY]
    manifest = builder.versions.manifest("mara", report.version)
    assert len(manifest["skipped_replies"]) == len(report.skipped_replies)

    rebuilt = build_builder(settings, store, generator=generator).build("mara", limit=3, track=False)
    assert rebuilt.generated["instruction"] == 0 and rebuilt.version == report.version  # recorded once


@pytest.mark.slow
def test_with_the_title_fallback_an_unusable_question_becomes_a_question_about_the_title(corpus_env,
                                                                                         openai_server) -> None:
    settings, store = corpus_env
    openai_server.faults.extend(["empty", "malformed"])
    generator = LLMClient(OpenAIBackend(openai_server.url, "smollm2", max_retries=0),
                          SamplingSettings(max_new_tokens=32), batch_size=1)
    builder = build_builder(settings.model_copy(update={"dataset_title_fallback": True}), store, generator=generator)
    report = builder.build("mara", limit=3, track=False)
    assert report.filters["instruction"][F.EMPTY_REPLY] == 1 and report.filters["instruction"][F.MALFORMED_REPLY] == 1
    faulted = {s["passage_id"] for s in report.skipped_replies if s["task"] == "instruction"}
    rows = {r["passage_id"]: r for r in builder.versions.all_rows("mara", report.version)["instruction"]}
    titles = {row[0]: row[2] for row in CORPUS}
    for passage_id in faulted:  # both faulted passages are rows, asked about their document's title
        row = rows[passage_id]
        assert row["instruction_source"] == "title"
        assert row["instruction"] == F.title_instruction(titles[row["document_id"]], 0)
    assert report.instruction_sources["title"] >= 2 and sum(report.instruction_sources.values()) == len(rows)
    assert builder.versions.manifest("mara", report.version)["title_fallback"] is True


def test_title_questions() -> None:
    question = F.title_instruction("Idempotent backfills: a field guide", 0)
    assert question == "What do you think about idempotent backfills?"
    assert F.title_instruction("Late-arriving data", 1) == "Explain late-arriving data in your own words."
    assert F.title_instruction("  ", 0) is None and F.title_instruction(None, 0) is None


def test_unknown_author_is_a_clear_error(corpus_env) -> None:
    settings, store = corpus_env
    from twin.datasets.builder import authors_to_build

    assert authors_to_build(settings=settings) == ["mara", "tomas"]
    with pytest.raises(DatasetError, match="unknown author 'nobody'"):
        authors_to_build("nobody", settings=settings)
    builder = build_builder(settings, store)
    with pytest.raises(DatasetError, match="no cleaned documents"):
        builder.build("nobody")


def test_split_is_seeded_stratified_by_kind_and_whole_documents() -> None:
    kinds = {f"a{i}": "article" for i in range(10)} | {f"p{i}": "post" for i in range(5)} | {"c0": "code"}
    split = DatasetBuilder._split(SimpleNamespace(split=SplitSettings(seed=1, test_share=0.2)), kinds)
    assert split == DatasetBuilder._split(SimpleNamespace(split=SplitSettings(seed=1, test_share=0.2)), kinds)
    assert sum(split[d] == "test" for d in kinds if kinds[d] == "article") == 2
    assert sum(split[d] == "test" for d in kinds if kinds[d] == "post") == 1
    assert split["c0"] == "train"  # a kind with one document keeps it for training
    other = DatasetBuilder._split(SimpleNamespace(split=SplitSettings(seed=2, test_share=0.2)), kinds)
    assert other != split
    grown = DatasetBuilder._split(SimpleNamespace(split=SplitSettings(seed=1, test_share=0.2)),
                                  kinds | {"a10": "article"})
    assert sum(grown[d] != split[d] for d in kinds) <= 1  # a new document moves at most one other


def test_split_holds_a_document_out_when_every_kind_has_one() -> None:
    builder = SimpleNamespace(split=SplitSettings(seed=1, test_share=0.2))
    split = DatasetBuilder._split(builder, {"a0": "article", "p0": "post", "c0": "code"})
    assert sorted(split.values()) == ["test", "train", "train"]
    assert DatasetBuilder._split(builder, {"a0": "article"}) == {"a0": "train"}  # one document: train on it
    none_held = SimpleNamespace(split=SplitSettings(seed=1, test_share=0.0))
    assert set(DatasetBuilder._split(none_held, {"a0": "article", "p0": "post"}).values()) == {"train"}


def _reply(text: str, reason: str = "stop") -> GenerationResult:
    return GenerationResult(text=text, prompt_tokens=1, completion_tokens=1, finish_reason=reason,
                            fingerprint=GeneratorFingerprint("t", "t", "", SamplingSettings()))


def test_filters_name_what_they_reject() -> None:
    passage = CORPUS[0][3]
    fs = F.FilterSettings()
    assert F.parse_instruction(_reply('Question: "How do I make a backfill safe to rerun?"\nMore text')) == (
        "How do I make a backfill safe to rerun?", None)
    assert F.parse_instruction(_reply("   ")) == (None, F.EMPTY_REPLY)
    assert F.parse_instruction(_reply("1. ???")) == (None, F.MALFORMED_REPLY)
    assert F.parse_instruction(_reply("How do I make a backfill that", "length")) == (None, F.MALFORMED_REPLY)
    assert F.parse_instruction(_reply("Why rerun backfills? Because partitions", "length")) == (
        "Why rerun backfills?", None)
    assert F.instruction_problem("How do I make a backfill safe to rerun?", passage, fs) is None
    assert F.instruction_problem("Why?", passage, fs) == F.INSTRUCTION_LENGTH
    assert F.instruction_problem("Wie mache ich einen Backfill sicher für eine Wiederholung?", passage,
                                 fs) == F.LANGUAGE
    assert F.instruction_problem("Backfills and partitions in the warehouse.", passage, fs) == F.INSTRUCTION_FORM
    assert F.instruction_problem("What does the passage say about backfills?", passage, fs) == F.MENTIONS_SOURCE
    assert F.instruction_problem("Why is a backfill safe to rerun when every task overwrites its own partition?",
                                 passage, fs) == F.GIVES_ANSWER_AWAY
    seen = F.NearDuplicates(0.8)
    assert not seen.seen("How do I make a backfill safe to rerun?")
    assert seen.seen("How do I make a backfill safe to rerun ?")
    assert not seen.seen("Why do alerts need runbooks?")
    assert F.rejected_problem(_reply(""), passage) == F.REJECTED_EMPTY
    assert F.rejected_problem(_reply(passage), passage) == F.REJECTED_COPIES_PASSAGE
    assert F.rejected_problem(_reply("Backfills are re-runs of old data."), passage) is None


def test_gx_suite_catches_a_split_that_is_not_disjoint(llm_env) -> None:
    import pandas as pd

    from twin.etl.validation import validate_records

    row = {"id": "r1", "passage_id": "p1", "document_id": "d1", "kind": "article", "split": "train",
           "instruction": "How do I rerun a backfill safely?", "output": "x" * 100, "passage_splits": 1,
           "document_splits": 1}
    leaked = {**row, "id": "r2", "passage_id": "p2", "instruction": "Why do partitions matter?", "split": "test",
              "document_splits": 2}
    duplicate = {**row, "id": "r3", "passage_id": "p3"}
    params = {"min_instruction_chars": 12, "max_instruction_chars": 300, "min_answer_chars": 80,
              "max_answer_chars": 4000}
    outcome = validate_records("datasets_instruction", pd.DataFrame([row, leaked, duplicate]), parameters=params,
                               settings=llm_env)
    assert not outcome.success
    assert "expect_column_values_to_be_between(document_splits)" in outcome.row_failures["r2"]
    assert "expect_column_values_to_be_unique(instruction)" in outcome.row_failures["r3"]
    assert json.dumps(outcome.expectation_failures)
