"""How a queue's loops are faring: retries of transient errors, with backoff and quiet logs.

Worker loops and background tasks (reaper, scheduler, stats fold) retry what may pass (a
transient `StorageError`, or for background tasks any error but a fatal one) instead of dying.
Each loop keeps a `Streak` of consecutive failures in the queue's `HealthTracker`: it decides the
next delay (capped exponential backoff with jitter, `retry_delay`), logs the first failure of a
run as a warning and then at most once per `LOG_EVERY` seconds, and logs the recovery.
`Queue.health` reads the tracker as a frozen `QueueHealth`.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._errors import TaqubaError

__all__ = ["LOG_EVERY", "HealthTracker", "QueueHealth", "Streak", "retry_delay"]

log = logging.getLogger("taquba")

RETRY_BASE: Final = 0.1
"""Seconds before the first retry (before jitter)."""
RETRY_CAP: Final = 30.0
"""The longest delay between retries, in seconds (before jitter)."""
LOG_EVERY: Final = 30.0
"""While a loop keeps failing, it logs at most once per this many seconds."""


def retry_delay(failures: int, jitter: float) -> float:
    """Seconds to wait after ``failures`` consecutive failures (``failures >= 1``).

    ``RETRY_BASE * 2**(failures - 1)`` capped at `RETRY_CAP`, scaled by ``0.5 + jitter / 2``
    where ``jitter`` is drawn uniformly from [0, 1] ("equal jitter": retries of many loops
    spread out, yet none retries at once).
    """
    exponent = min(max(failures, 1) - 1, 16)  # 2**16 * 0.1 s is far past the cap already
    return min(RETRY_CAP, RETRY_BASE * 2.0**exponent) * (0.5 + min(max(jitter, 0.0), 1.0) / 2)


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueHealth:
    """A snapshot of how a queue's loops are faring (`Queue.health`).

    Workers (`Worker.serve`) and the queue's background tasks retry transient storage errors
    with backoff instead of stopping; this shows whether any of them is retrying right now, and
    what went wrong last.
    """

    healthy: bool
    """No loop is failing now and the queue has not stopped."""
    consecutive_failures: int
    """The longest current run of failed attempts among the loops (0 when none is failing)."""
    failing: tuple[str, ...]
    """The loops failing now, e.g. ``("scheduler", "worker 'emails'")``."""
    retried: int
    """Failed attempts retried since the queue was opened, by every loop together."""
    last_error: BaseException | None
    """The most recent error a loop retried (kept after the loop recovers), or None."""
    stopped: TaqubaError | None
    """Why the queue stopped (`Queue.failure`), or None while it runs."""


class Streak:
    """One loop's run of consecutive failures (internal)."""

    __slots__ = ("_last_log", "_tracker", "after", "failures", "name")

    def __init__(self, tracker: HealthTracker, name: str, after: str | None) -> None:
        self._tracker = tracker
        self.name = name
        self.after = after
        """What follows a failure, for the log; None: a retry after the backoff delay."""
        self.failures = 0
        self._last_log = -LOG_EVERY

    def failed(self, error: BaseException) -> float:
        """Note a failed attempt; log it unless logged lately; return the delay to wait."""
        self.failures += 1
        tracker = self._tracker
        tracker.retried += 1
        tracker.last_error = error
        delay = retry_delay(self.failures, tracker.random.random())
        now = time.monotonic()
        if self.failures == 1 or now - self._last_log >= LOG_EVERY:
            self._last_log = now
            transient = bool(getattr(error, "transient", False))
            after = self.after or f"retrying in {delay:.1f} s"
            log.warning(
                "%s failed (%s%d in a row), %s: %s",
                self.name,
                "transient, " if transient else "",
                self.failures,
                after,
                error,
                exc_info=error if self.failures == 1 and not _is_ours(error) else None,
            )
        return delay

    def succeeded(self) -> None:
        """Note a successful attempt, ending the run of failures."""
        if self.failures:
            log.info("%s recovered after %d failed attempts", self.name, self.failures)
            self.failures = 0


def _is_ours(error: BaseException) -> bool:
    return type(error).__module__.startswith("taquba")


class HealthTracker:
    """The streaks of one queue's loops (internal; read through `Queue.health`)."""

    __slots__ = ("_streaks", "last_error", "random", "retried")

    def __init__(self) -> None:
        self._streaks: list[Streak] = []
        self.retried = 0
        self.last_error: BaseException | None = None
        self.random = random.Random()

    def streak(self, name: str, *, after: str | None = None) -> Streak:
        """Register a loop's streak; `release` it when the loop ends."""
        streak = Streak(self, name, after)
        self._streaks.append(streak)
        return streak

    def release(self, streak: Streak) -> None:
        """Forget a loop that ended."""
        if streak in self._streaks:
            self._streaks.remove(streak)

    def snapshot(self, stopped: TaqubaError | None) -> QueueHealth:
        """The current `QueueHealth`."""
        failing = tuple(s.name for s in self._streaks if s.failures)
        longest = max((s.failures for s in self._streaks), default=0)
        return QueueHealth(
            healthy=not failing and stopped is None,
            consecutive_failures=longest,
            failing=failing,
            retried=self.retried,
            last_error=self.last_error,
            stopped=stopped,
        )
