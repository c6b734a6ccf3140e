"""Tests for pipeline-kit. The rerun test is the one that matters."""

import pytest
from pipeline_kit.dedup import Decision, Keyed, content_hash, decide
from pipeline_kit.partitions import partitions_to_rebuild
from pipeline_kit.retry import call_with_retries
from pipeline_kit.schema import drift, fingerprint


def test_lookback_is_deterministic():
    assert partitions_to_rebuild("2024-03-01", 2) == ["2024-03-01", "2024-02-29", "2024-02-28"]
    assert partitions_to_rebuild("2024-03-01", 2) == partitions_to_rebuild("2024-03-01", 2)


def test_resend_is_skipped_and_update_applied():
    cols = ["status", "amount_eur"]
    first = content_hash({"status": "pending", "amount_eur": 1299, "received_at": "t1"}, cols)
    resend = content_hash({"status": "pending", "amount_eur": 1299, "received_at": "t2"}, cols)
    known = {("kestrel", "pay_1"): first}
    assert decide(known, Keyed(("kestrel", "pay_1"), resend)) is Decision.SKIP
    settled = content_hash({"status": "settled", "amount_eur": 1299}, cols)
    assert decide(known, Keyed(("kestrel", "pay_1"), settled)) is Decision.UPDATE


def test_permanent_errors_are_not_retried():
    calls = []

    def broken():
        calls.append(1)
        raise KeyError("amount")

    with pytest.raises(KeyError):
        call_with_retries(broken, is_transient=lambda e: isinstance(e, TimeoutError), sleep=lambda s: None)
    assert len(calls) == 1


def test_rename_shows_in_drift():
    old = [{"name": "delivered_at", "type": "timestamp", "nullable": True}]
    new = [{"name": "delivery_ts", "type": "string", "nullable": True}]
    assert fingerprint(old) != fingerprint(new)
    assert drift(old, new) == ["- removed: delivered_at (timestamp)", "+ added:   delivery_ts (string)"]
