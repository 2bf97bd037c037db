"""Per-queue configuration and the retry backoff schedule."""

from __future__ import annotations

from dataclasses import dataclass

from ._records import MAX_PRIORITY, PRIORITY_NORMAL

__all__ = ["QueueConfig", "backoff_delay"]

DAY = 86_400.0


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueConfig:
    """Settings of one named queue. Durations are in seconds."""

    max_attempts: int = 3
    """Claims a job may have before a failure dead-letters it (each claim is an attempt)."""
    lease_duration: float = 30.0
    """How long a claim is held before the reaper may requeue it, unless renewed."""
    default_priority: int = PRIORITY_NORMAL
    """Priority of jobs enqueued without one (lower is claimed first)."""
    retry_backoff_base: float = 1.0
    """Delay before the first retry; doubles per attempt. Zero retries at once."""
    retry_backoff_max: float = 300.0
    """The longest retry delay."""
    keep_done: float | None = None
    """Keep acknowledged jobs' records this long (None: an ack deletes the record)."""
    dead_retention: float | None = 7 * DAY
    """Delete dead-lettered jobs this long after they died (None: keep them forever)."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.lease_duration <= 0:
            raise ValueError("lease_duration must be positive")
        if not 0 <= self.default_priority <= MAX_PRIORITY:
            raise ValueError("default_priority must fit in 32 bits")
        if self.retry_backoff_base < 0 or self.retry_backoff_max < 0:
            raise ValueError("retry backoff durations must not be negative")
        if self.keep_done is not None and self.keep_done < 0:
            raise ValueError("keep_done must not be negative")
        if self.dead_retention is not None and self.dead_retention < 0:
            raise ValueError("dead_retention must not be negative")


def backoff_delay(attempt: int, base: float, maximum: float) -> float:
    """Delay in seconds before retrying a job whose ``attempt``-th claim failed.

    ``min(base * 2**(attempt - 1), maximum)``; zero when ``base`` is zero.
    """
    if base <= 0:
        return 0.0
    exponent = min(max(attempt - 1, 0), 1023)  # 2.0**1024 overflows; inf * base caps below
    return min(base * 2.0**exponent, maximum)
