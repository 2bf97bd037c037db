"""`Schedule`: a named cron expression in a time zone, and the job it enqueues."""

from __future__ import annotations

import math
import types
import zoneinfo
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Final

from taquba import MAX_QUEUE_NAME_BYTES

from ._errors import InvalidSchedule, UnknownTimeZone
from ._policy import Missed, Overlap
from ._timing import (
    CronExpression,
    from_instant,
    next_fire_after,
    prev_fire_at_or_before,
    to_instant,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from datetime import datetime

__all__ = ["HEADER_PREFIX", "MAX_NAME_LENGTH", "Schedule"]

HEADER_PREFIX: Final = "cron."
"""Headers whose names start with this are written by the scheduler; schedules may not set them."""

MAX_NAME_LENGTH: Final = 200
"""The longest schedule name, in characters."""

_MAX_PRIORITY: Final = 2**32 - 1


def _has_control(text: str) -> bool:
    return any(ord(char) < 0x20 or ord(char) == 0x7F for char in text)


@dataclass(frozen=True, eq=False)
class Schedule:
    """A named cron schedule that enqueues one job per fire time onto a taquba queue.

    Everything is checked at construction; an invalid definition raises `InvalidSchedule`
    (or its subclasses `InvalidCronExpression` and `UnknownTimeZone`).

    Example:
        ```python
        Schedule("nightly-report", "30 2 * * *", "reports", tz="Europe/London",
                 payload=b"{}", missed=Missed.COALESCE)
        ```
    """

    name: str
    """Unique name; it keys the schedule's durable state and its jobs' dedup keys.

    1 to 200 characters, no control characters. Renaming a schedule starts it afresh.
    """
    cron: str
    """The cron expression: ``minute hour day-of-month month day-of-week``, optionally with
    a leading seconds field (6 fields), or a nickname (``@hourly``, ``@daily``, ...).

    Evaluated on the wall clock of ``tz``. ``H`` fields are hashed on the schedule name.
    """
    queue: str
    """The queue the jobs are enqueued on."""
    _: KW_ONLY
    payload: bytes = b""
    """The payload of every job. Exclusive with ``payload_factory``."""
    payload_factory: Callable[[datetime], bytes] | None = None
    """Builds each job's payload from its fire time (aware, in ``tz``).

    Called before each enqueue attempt, possibly more than once per fire time when scheduler
    instances race, so it should be cheap and deterministic. If it raises, the firing is not
    enqueued (see `PayloadError`).
    """
    tz: str = "UTC"
    """The IANA time zone whose wall clock the expression follows (e.g. ``"Europe/Paris"``)."""
    missed: Missed = Missed.SKIP
    """What to do with firings missed while no scheduler ran (see `Missed`)."""
    grace: float = 60.0
    """Seconds a firing may be late and still count as on time (enqueued under any policy)."""
    lookback: float = 86_400.0
    """Seconds back that `Missed.COALESCE` and `Missed.BACKFILL` reach for missed firings."""
    overlap: Overlap = Overlap.ALLOW
    """What to do with a firing while the previous firing's job is unfinished (see `Overlap`)."""
    priority: int | None = None
    """Claim priority of the jobs (lower first); default: the queue's."""
    headers: Mapping[str, str] = field(default_factory=dict[str, str])
    """Extra headers stored with each job (names starting with ``cron.`` are reserved)."""
    max_attempts: int | None = None
    """Attempts before a job is dead-lettered; default: the queue's."""
    _expression: CronExpression = field(init=False, repr=False)
    _zone: zoneinfo.ZoneInfo = field(init=False, repr=False)

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidSchedule("a schedule name must be a non-empty str")
        if len(name) > MAX_NAME_LENGTH or _has_control(name):
            raise InvalidSchedule(
                f"invalid schedule name {name!r}: at most {MAX_NAME_LENGTH} characters, "
                "no control characters"
            )
        queue = self.queue
        if (
            not isinstance(queue, str)  # pyright: ignore[reportUnnecessaryIsInstance]
            or not queue
            or len(queue.encode()) > MAX_QUEUE_NAME_BYTES
            or _has_control(queue)
        ):
            raise InvalidSchedule(
                f"schedule {name!r}: invalid queue name {queue!r} (1 to "
                f"{MAX_QUEUE_NAME_BYTES} UTF-8 bytes, no control characters)"
            )
        object.__setattr__(self, "_expression", CronExpression(self.cron, hash_id=name))
        object.__setattr__(self, "_zone", _zone(self.tz))
        self._check_payload()
        try:
            object.__setattr__(self, "missed", Missed(self.missed))
        except ValueError:
            raise InvalidSchedule(
                f"schedule {name!r}: missed must be one of {[m.value for m in Missed]}"
            ) from None
        try:
            object.__setattr__(self, "overlap", Overlap(self.overlap))
        except ValueError:
            raise InvalidSchedule(
                f"schedule {name!r}: overlap must be one of {[o.value for o in Overlap]}"
            ) from None
        for label, value, floor in (("grace", self.grace, 0.001), ("lookback", self.lookback, 0)):
            if (
                not isinstance(value, (int, float))  # pyright: ignore[reportUnnecessaryIsInstance]
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value < floor
            ):
                raise InvalidSchedule(
                    f"schedule {name!r}: {label} must be a finite number of seconds >= {floor}"
                )
        self._check_options()

    def _check_payload(self) -> None:
        if self.payload_factory is not None:
            if self.payload:
                raise InvalidSchedule(
                    f"schedule {self.name!r}: pass payload or payload_factory, not both"
                )
            if not callable(self.payload_factory):
                raise InvalidSchedule(f"schedule {self.name!r}: payload_factory must be callable")
        elif not isinstance(self.payload, (bytes, bytearray, memoryview)):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidSchedule(f"schedule {self.name!r}: payload must be bytes")
        else:
            object.__setattr__(self, "payload", bytes(self.payload))

    def _check_options(self) -> None:
        name = self.name
        priority, max_attempts = self.priority, self.max_attempts
        if priority is not None and (
            not isinstance(priority, int)  # pyright: ignore[reportUnnecessaryIsInstance]
            or isinstance(priority, bool)
            or not 0 <= priority <= _MAX_PRIORITY
        ):
            raise InvalidSchedule(f"schedule {name!r}: priority must be an int in [0, 2**32 - 1]")
        if max_attempts is not None and (
            not isinstance(max_attempts, int)  # pyright: ignore[reportUnnecessaryIsInstance]
            or isinstance(max_attempts, bool)
            or max_attempts < 1
        ):
            raise InvalidSchedule(f"schedule {name!r}: max_attempts must be a positive int")
        headers = dict(self.headers)
        for key, value in headers.items():
            if not isinstance(key, str) or not isinstance(value, str):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise InvalidSchedule(f"schedule {name!r}: headers must map str to str")
            if key.startswith(HEADER_PREFIX):
                raise InvalidSchedule(
                    f"schedule {name!r}: header {key!r} uses the reserved prefix {HEADER_PREFIX!r}"
                )
        object.__setattr__(self, "headers", types.MappingProxyType(headers))

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        """The time zone ``tz`` names."""
        return self._zone

    def next_fire_times(self, after: datetime, n: int = 1) -> list[datetime]:
        """The next ``n`` fire times strictly after ``after``, aware in the schedule's zone.

        Pure: no stored state is read, so a paused schedule lists its times too. Fewer than
        ``n`` are returned only for an expression that stops firing (none do within 50 years).

        Args:
            after: a timezone-aware datetime.
            n: how many fire times to list.

        Raises:
            ValueError: ``after`` is naive or ``n`` is negative.
        """
        if after.tzinfo is None or after.utcoffset() is None:
            raise ValueError("after must be timezone-aware")
        if n < 0:
            raise ValueError("n must not be negative")
        times: list[datetime] = []
        instant = from_instant(after)
        while len(times) < n:
            fire = self.next_fire_after_ms(instant)
            if fire is None:
                break
            times.append(to_instant(fire).astimezone(self._zone))
            instant = fire
        return times

    def next_fire_after_ms(self, after_ms: int) -> int | None:
        """The first fire time strictly after ``after_ms`` (ms since the Unix epoch, UTC)."""
        return next_fire_after(self._expression, self._zone, after_ms)

    def prev_fire_at_or_before_ms(self, at_ms: int) -> int | None:
        """The last fire time at or before ``at_ms`` (ms since the Unix epoch, UTC)."""
        return prev_fire_at_or_before(self._expression, self._zone, at_ms)


def _zone(tz: str) -> zoneinfo.ZoneInfo:
    if not isinstance(tz, str) or not tz:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise UnknownTimeZone(repr(tz))
    try:
        return zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise UnknownTimeZone(tz) from exc
