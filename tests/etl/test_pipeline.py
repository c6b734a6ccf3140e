"""The ETL run against the real MongoDB-protocol server: exact outcomes, idempotence, changes, the gate."""

from __future__ import annotations

import pytest

from tests.etl.conftest import ESSAY, essay, raw_doc, seed_fixture_documents
from twin.etl.pipeline import ETL_RUNS, PIPELINE, QualityGateError, run_etl
from twin.models import CleanedDocument, DocumentKind, QuarantinedDocument
from twin.settings import get_settings
from twin.storage.documents import Collections, DocumentStore


def snapshot(store: DocumentStore) -> dict[str, list[dict]]:
    names = (Collections.CLEANED_DOCUMENTS, Collections.QUARANTINE, "etl_signatures")
    return {str(n): sorted(store.collection(n).find(), key=lambda d: d["_id"]) for n in names}


def cleaned(store: DocumentStore) -> dict[str, CleanedDocument]:
    return {d.id: d for d in store.find(Collections.CLEANED_DOCUMENTS, CleanedDocument)}


def quarantined(store: DocumentStore) -> dict[str, QuarantinedDocument]:
    return {d.id: d for d in store.find(Collections.QUARANTINE, QuarantinedDocument)}


def test_good_bad_and_duplicate_documents_land_where_they_belong(etl_store) -> None:
    seeded = seed_fixture_documents(etl_store)
    report = run_etl("run-1", store=etl_store)

    assert (report.processed, report.cleaned, report.quarantined) == (13, 6, 7)
    assert (report.exact_duplicates, report.near_duplicates) == (1, 1)
    assert report.quarantined_by_stage == {"raw": 4, "cleaned": 3} and report.changed
    docs = cleaned(etl_store)
    assert set(docs) == set(seeded.good.values())
    assert {i: d.duplicate_of for i, d in docs.items() if d.duplicate_of} == seeded.duplicates
    assert docs[seeded.good["code"]].content.startswith('TEMPLATE = "<div')  # code keeps its markup
    assert docs[seeded.good["post"]].content == "Shipped the new crawler today"

    bad = quarantined(etl_store)
    assert set(bad) == set(seeded.bad.values())
    between = "expect_column_values_to_be_between(content_chars)"
    assert bad[seeded.bad["empty"]].failed_expectations == [between]
    assert bad[seeded.bad["absurd_size"]].failed_expectations == [between]
    assert bad[seeded.bad["markup_only"]].failed_expectations == [between]
    assert bad[seeded.bad["markup_only"]].stage == "cleaned"
    markup = "expect_column_values_to_not_match_regex(prose)"
    assert bad[seeded.bad["markup_left"]].failed_expectations == [markup]
    assert bad[seeded.bad["unparsed_html"]].failed_expectations == [markup]
    assert bad[seeded.bad["no_author"]].failed_expectations == [
        "expect_column_value_lengths_to_be_between(author_id)",
        "expect_column_value_lengths_to_be_between(author_name)",
    ]
    assert bad[seeded.bad["malformed"]].failed_expectations == [
        "expect_column_values_to_not_be_null(author_id)", "expect_column_values_to_not_be_null(author_name)"]
    assert bad[seeded.bad["malformed"]].record["url"] == "https://blog.test/malformed"  # nothing lost
    assert etl_store.get_watermark(PIPELINE) == report.watermark


def test_a_rerun_writes_nothing_even_without_the_watermark(etl_store) -> None:
    seed_fixture_documents(etl_store)
    run_etl("run-1", store=etl_store)
    before = snapshot(etl_store)

    again = run_etl("run-2", store=etl_store)
    assert (again.processed, again.changed) == (0, False)
    # Forget the watermark: everything is judged again, and still nothing is written.
    etl_store.collection(Collections.PIPELINE_STATE).delete_many({})
    full = run_etl("run-3", store=etl_store)
    assert (full.processed, full.cleaned, full.unchanged, full.quarantine_written, full.changed) == (13, 0, 6, 0, False)
    assert snapshot(etl_store) == before


def test_small_batches_give_the_same_outcome_and_resume_after_the_last_document(etl_store, monkeypatch) -> None:
    monkeypatch.setenv("TWIN_ETL_BATCH_SIZE", "5")
    monkeypatch.setenv("TWIN_QUARANTINE_MAX_SHARE", "1")  # one small batch may hold mostly bad documents
    get_settings.cache_clear()
    seeded = seed_fixture_documents(etl_store)
    report = run_etl("run-1", store=etl_store)

    assert (report.processed, report.cleaned, report.quarantined) == (13, 6, 7)
    docs = cleaned(etl_store)
    duplicates = {i: d.duplicate_of for i, d in docs.items() if d.duplicate_of}
    # Which copy of the essay is canonical depends on the batch it came in; that two are duplicates of it does not.
    essay_copies = {seeded.good[n] for n in ("article", "exact_duplicate", "near_duplicate")}
    assert len(duplicates) == 2 and set(duplicates) | set(duplicates.values()) == essay_copies
    assert len(set(duplicates.values())) == 1
    state = etl_store.collection(Collections.PIPELINE_STATE).find_one({"_id": PIPELINE})
    newest = max(etl_store.collection(Collections.RAW_DOCUMENTS).find(), key=lambda d: (d["updated_at"], d["_id"]))
    assert (state["watermark"], state["last_id"]) == (newest["updated_at"], newest["_id"])
    assert run_etl("run-2", store=etl_store).processed == 0


def test_changed_documents_replace_or_remove_their_old_cleaned_versions(etl_store) -> None:
    seeded = seed_fixture_documents(etl_store)
    run_etl("run-1", store=etl_store)
    article, exact, near = (seeded.good[n] for n in ("article", "exact_duplicate", "near_duplicate"))

    etl_store.upsert_raw_documents([
        # the canonical article is rewritten: its duplicates must be judged again without it
        raw_doc("https://blog.test/pipelines", essay("something new entirely"), published="2026-01-01"),
        # a good document turns bad: its old cleaned version must go
        raw_doc("https://blog.test/gardens", ""),
        # a quarantined document is fixed: it leaves the quarantine
        raw_doc("https://blog.test/empty", "Now there is text here."),
        # a good document becomes a copy of another source's
        raw_doc("https://linkedin.test/in/ada", ESSAY, kind=DocumentKind.POST, path="post-1"),
    ])
    report = run_etl("run-2", store=etl_store)

    docs, bad = cleaned(etl_store), quarantined(etl_store)
    assert report.processed == 6  # four changed + two duplicates of the rewritten article
    assert docs[article].duplicate_of is None and docs[article].content.startswith("Sentence 0 about something new")
    assert docs[exact].duplicate_of is None  # now the earliest copy of the essay
    assert docs[near].duplicate_of == exact
    assert seeded.good["other_article"] not in docs and seeded.good["other_article"] in bad
    assert seeded.bad["empty"] in docs and seeded.bad["empty"] not in bad
    assert docs[seeded.good["post"]].duplicate_of is None  # posts are compared with posts only
    assert (report.removed_from_cleaned, report.released_from_quarantine) == (1, 1)
    assert len(docs) == 6 and len(bad) == 7


def test_quarantined_documents_are_retried_only_when_their_content_changes(etl_store) -> None:
    bad = raw_doc("https://blog.test/x", "")
    etl_store.upsert_raw_documents([bad, raw_doc("https://blog.test/y", "Fine text."),
                                    raw_doc("https://blog.test/z", "More fine text.")])
    first = run_etl("run-1", store=etl_store)
    assert first.quarantined == 1
    etl_store.upsert_raw_documents([bad])  # re-crawled, same content: not retried
    assert run_etl("run-2", store=etl_store).processed == 0
    etl_store.upsert_raw_documents([raw_doc("https://blog.test/x", "Fixed at the source.")])
    retried = run_etl("run-3", store=etl_store)
    assert (retried.processed, retried.cleaned, retried.released_from_quarantine) == (1, 1, 1)
    assert etl_store.count(Collections.QUARANTINE) == 0


def test_pii_is_scrubbed_when_asked(etl_store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWIN_SCRUB_PII", "true")
    get_settings.cache_clear()
    doc = raw_doc("https://blog.test/contact", "Write to ada@example.org or call +1 (555) 123-4567.")
    etl_store.upsert_raw_documents([doc])
    run_etl("run-1", store=etl_store)
    assert cleaned(etl_store)[doc.id].content == "Write to [EMAIL] or call [PHONE]."


def test_the_quality_gate_stops_a_bad_batch_and_says_why(twin_env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWIN_QUARANTINE_MIN_BATCH", "3")  # a batch of 3 is large enough to be judged
    get_settings.cache_clear()
    with DocumentStore.from_settings(twin_env) as store:
        store.upsert_raw_documents([raw_doc("https://blog.test/ok", "Good text."),
                                    raw_doc("https://blog.test/e1", ""), raw_doc("https://blog.test/e2", " ")])
        with pytest.raises(QualityGateError) as caught:
            run_etl("run-bad", store=store)
        message = str(caught.value)
        assert "2 of 3 documents (66.7%)" in message and "TWIN_QUARANTINE_MAX_SHARE=20.0%" in message
        assert "expect_column_values_to_be_between(content_chars): 2" in message
        assert "etl_run_id=run-bad" in message
        # Nothing dropped: the failures are readable, nothing half-applied, the batch will be retried.
        assert store.count(Collections.QUARANTINE, {"etl_run_id": "run-bad"}) == 2
        assert store.count(Collections.CLEANED_DOCUMENTS) == 0
        assert store.get_watermark(PIPELINE) is None
        stored = store.collection(ETL_RUNS).find_one({"_id": "run-bad"})  # the quality report shows why
        assert stored["gate_error"] == message and stored["quarantined"] == 2
        store.client.drop_database(twin_env.mongodb_database)


def test_a_small_daily_batch_with_a_bad_document_quarantines_it_goes_on_and_alerts(twin_env) -> None:
    """Two documents a day, one bad: 50% is above TWIN_QUARANTINE_MAX_SHARE=20%, but a batch under
    TWIN_QUARANTINE_MIN_BATCH (20) does not stop the ETL, day after day."""
    with DocumentStore.from_settings(twin_env) as store:
        for day in (1, 2):
            good, bad = raw_doc(f"https://blog.test/day{day}", f"Notes of day {day}."), raw_doc(
                f"https://blog.test/day{day}-broken", "")
            store.upsert_raw_documents([good, bad])
            report = run_etl(f"daily-{day}", store=store)
            assert (report.processed, report.cleaned, report.quarantined, report.failed_share) == (2, 1, 1, 0.5)
            [alert] = report.alerts
            assert "1 of 2 documents (50.0%)" in alert and "TWIN_QUARANTINE_MIN_BATCH=20" in alert
            assert f"{bad.id} (https://blog.test/day{day}-broken): expect_column_values_to_be_between(content_chars)" \
                in alert
            assert good.id in cleaned(store) and bad.id in quarantined(store)
            assert store.get_watermark(PIPELINE) == report.watermark is not None  # the run moved on
            assert store.collection(ETL_RUNS).find_one({"_id": f"daily-{day}"})["alerts"] == [alert]
        assert run_etl("daily-3", store=store).processed == 0  # nothing is retried, nothing is stuck
        store.client.drop_database(twin_env.mongodb_database)


def test_a_batch_without_failures_raises_no_alert(twin_env) -> None:
    with DocumentStore.from_settings(twin_env) as store:
        store.upsert_raw_documents([raw_doc("https://blog.test/fine", "Fine text.")])
        assert run_etl("fine", store=store).alerts == []
        store.client.drop_database(twin_env.mongodb_database)
