"""Retries for transient failures only.

Retrying a bug wastes time and hides it. Retrying a network blip saves a page at 03:00.
So callers say what counts as transient, and everything else is raised at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

TRANSIENT_HTTP_STATUS = frozenset({429, 502, 503, 504})


def backoff_delays(base: float = 1.0, cap: float = 60.0, attempts: int = 6) -> Iterator[float]:
    """Exponential backoff with full jitter: spreads clients out instead of syncing them up."""
    for attempt in range(attempts):
        yield random.uniform(0, min(cap, base * 2**attempt))


def call_with_retries(
    fn: Callable[[], T],
    is_transient: Callable[[Exception], bool],
    delays: Iterator[float] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `fn`; on a transient error wait and try again; re-raise anything else immediately."""
    for delay in delays if delays is not None else backoff_delays():
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            sleep(delay)
    # Last attempt: its error, if any, goes to the caller unchanged.
    return fn()
