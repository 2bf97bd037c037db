"""Time sources for the queue.

Every timestamp the queue writes, and every comparison it makes against "now" (lease expiry,
promotion of scheduled jobs, retention cut-offs), reads a `Clock`. Layers share the queue's
clock through `Queue.clock`, so a `MockClock` virtualises time for the whole stack at once.
Background loop intervals are trio sleeps, not clock readings.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, cast, runtime_checkable

from ._errors import InvalidArgument
from ._validate import MAX_TIMESTAMP_MS, check_int, check_seconds

__all__ = ["Clock", "MockClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """A source of wall-clock time in whole milliseconds since the Unix epoch."""

    def now_ms(self) -> int:
        """Return the current time in milliseconds since the Unix epoch."""
        ...


class SystemClock:
    """The system's wall clock (`time.time`)."""

    def now_ms(self) -> int:
        """Return the current wall-clock time in milliseconds since the Unix epoch."""
        return time.time_ns() // 1_000_000

    def __repr__(self) -> str:
        return "SystemClock()"


class MockClock:
    """A clock that only moves when told to, for tests.

    Time never goes backwards: `advance` refuses negative steps, as a queue that saw time
    regress could expire leases or promote jobs twice. Safe to share between threads.
    """

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        """Create a clock reading ``start_ms`` (default: a fixed instant in November 2023)."""
        self._now = check_int("start_ms", start_ms, low=0, high=MAX_TIMESTAMP_MS)
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        """Return the clock's current reading."""
        return self._now

    def advance(self, seconds: float) -> int:
        """Move the clock forward by ``seconds`` (rounded to milliseconds); return the new time.

        Raises `InvalidArgument` (a `ValueError`) for a negative, NaN or infinite step; the
        reading never passes `MAX_TIMESTAMP_MS`.
        """
        given = cast("object", seconds)  # checked as what a caller may really pass
        if isinstance(given, (int, float)) and given < 0:
            raise InvalidArgument(
                "seconds", seconds, "must not be negative (a MockClock never moves backwards)"
            )
        step = check_seconds("seconds", seconds)
        with self._lock:
            self._now = min(self._now + min(round(step * 1000), MAX_TIMESTAMP_MS), MAX_TIMESTAMP_MS)
            return self._now

    def __repr__(self) -> str:
        return f"MockClock(now_ms={self._now})"
