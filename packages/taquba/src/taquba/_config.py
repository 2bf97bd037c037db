"""Per-queue configuration and the retry backoff schedule."""

from __future__ import annotations

from dataclasses import dataclass

from ._records import MAX_ATTEMPTS, MAX_PRIORITY, PRIORITY_NORMAL
from ._validate import check_int, check_optional_seconds, check_seconds

__all__ = ["QueueConfig", "backoff_delay"]

DAY = 86_400.0
MAX_PAYLOAD_THRESHOLD = 2**63 - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueConfig:
    """Settings of one named queue. Durations are in seconds.

    Every field is checked when the config is built: a wrong type (``bool`` included), NaN, a
    negative duration or an int out of range raises `InvalidArgument` (a `UsageError`, and
    so still the `ValueError` earlier versions raised) naming the field.

    Infinity means "no limit" where that has a meaning: ``keep_done=math.inf`` keeps done
    records forever, ``dead_retention=math.inf`` is the same as None (keep dead records
    forever), ``retry_backoff_max=math.inf`` leaves the backoff uncapped. A computed due time
    past `MAX_TIMESTAMP_MS` (the end of year 9999) is clamped to it, and a retention that
    long never expires. ``lease_duration`` and ``retry_backoff_base`` must be finite.
    """

    max_attempts: int = 3
    """Claims a job may have before a failure dead-letters it (each claim is an attempt)."""
    lease_duration: float = 30.0
    """How long a claim is held before the reaper may requeue it, unless renewed."""
    default_priority: int = PRIORITY_NORMAL
    """Priority of jobs enqueued without one (lower is claimed first)."""
    retry_backoff_base: float = 1.0
    """Delay before the first retry; doubles per attempt. Zero retries at once."""
    retry_backoff_max: float = 300.0
    """The longest retry delay (``math.inf``: uncapped)."""
    keep_done: float | None = None
    """Keep acknowledged jobs' records this long (None: an ack deletes the record;
    ``math.inf``: keep them forever)."""
    dead_retention: float | None = 7 * DAY
    """Delete dead-lettered jobs this long after they died (None or ``math.inf``: keep them
    forever)."""
    payload_offload_threshold: int | None = None
    """Payloads longer than this many bytes are written as objects of their own, next to the
    database, and the record keeps a reference (`JobRecord.payload_ref`); None (the default)
    keeps every payload in its record. ``0`` offloads every non-empty payload. Applies to the
    jobs enqueued onto the queue (follow-up enqueues of `Effects` included)."""

    def __post_init__(self) -> None:
        check_int("max_attempts", self.max_attempts, low=1, high=MAX_ATTEMPTS)
        check_seconds("lease_duration", self.lease_duration, positive=True)
        check_int("default_priority", self.default_priority, low=0, high=MAX_PRIORITY)
        check_seconds("retry_backoff_base", self.retry_backoff_base)
        check_seconds("retry_backoff_max", self.retry_backoff_max, allow_inf=True)
        check_optional_seconds("keep_done", self.keep_done, allow_inf=True)
        check_optional_seconds("dead_retention", self.dead_retention, allow_inf=True)
        if self.payload_offload_threshold is not None:
            check_int(
                "payload_offload_threshold",
                self.payload_offload_threshold,
                low=0,
                high=MAX_PAYLOAD_THRESHOLD,
            )


def backoff_delay(attempt: int, base: float, maximum: float) -> float:
    """Delay in seconds before retrying a job whose ``attempt``-th claim failed.

    ``min(base * 2**(attempt - 1), maximum)``; zero when ``base`` is zero. May be infinite
    when ``maximum`` is (callers clamp the due time, see `duration_ms`).
    """
    if base <= 0:
        return 0.0
    exponent = min(max(attempt - 1, 0), 1023)  # 2.0**1024 overflows; inf * base caps below
    return min(base * 2.0**exponent, maximum)
