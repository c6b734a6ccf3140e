"""Which partitions a run rebuilds.

A daily run rebuilds its own date plus a lookback window, because late events keep landing in
older partitions. Every rebuild overwrites the whole partition, so doing it again is harmless.
"""

from __future__ import annotations

from datetime import date, timedelta


def partitions_to_rebuild(logical_date: str, lookback_days: int = 3) -> list[str]:
    """The logical date and the `lookback_days` before it, newest first.

    Takes the scheduler's logical date, never the wall clock: the same input gives the same
    partitions, whenever the task runs.
    """
    if lookback_days < 0:
        raise ValueError(f"lookback_days must be >= 0, got {lookback_days}")
    day = date.fromisoformat(logical_date)
    return [(day - timedelta(days=n)).isoformat() for n in range(lookback_days + 1)]


def is_provisional(partition: str, logical_date: str, settle_days: int = 3) -> bool:
    """True while late data can still change this partition. Dashboards show a badge for these."""
    age = date.fromisoformat(logical_date) - date.fromisoformat(partition)
    return age.days < settle_days
