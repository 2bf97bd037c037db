"""`Schedule`: a named cron expression in a time zone, and the job it enqueues."""

from __future__ import annotations

import math
import types
import zoneinfo
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, cast

import taquba
from taquba import MAX_QUEUE_NAME_BYTES

from ._errors import InvalidSchedule, PayloadError, UnknownTimeZone
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

__all__ = ["HEADER_PREFIX", "MAX_NAME_LENGTH", "Schedule"]

HEADER_PREFIX: Final = "cron."
"""Headers whose names start with this are written by the scheduler; schedules may not set them."""

MAX_NAME_LENGTH: Final = 200
"""The longest schedule name, in characters."""

_MAX_PRIORITY: Final = 2**32 - 1


def _bytes_of(value: object) -> bytes | None:
    """``value`` as bytes if it is bytes-like (bytes, bytearray, memoryview), else None."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, memoryview):
        return cast("memoryview[int]", value).tobytes()
    return None


def _has_control(text: str) -> bool:
    return any(ord(char) < 0x20 or ord(char) == 0x7F for char in text)


@dataclass(frozen=True, eq=False)
class Schedule:
    """A named cron schedule that enqueues one job per fire time onto a taquba queue.

    Everything is checked at construction; an invalid definition raises `InvalidSchedule`
    (or its subclasses `InvalidCronExpression` and `UnknownTimeZone`), and a fixed payload
    the codec cannot store raises the core's `taquba.UnsupportedType` or `taquba.TypeMismatch`.

    Payloads are the job's bytes as they are when they are `bytes`; any other value of a type
    `taquba.Codec` supports (a dataclass, a ``TypedDict``, a pydantic model, builtins) is
    encoded with ``taquba.Codec(payload_type)``, so a handler reads it back with
    ``taquba.Codec(T).decode(job.payload)``.

    Example:
        ```python
        Schedule("nightly-report", "30 2 * * *", "reports", tz="Europe/London",
                 payload=Report(kind="daily"), missed=Missed.COALESCE)
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
    queue_name: str
    """The name of the queue the jobs are enqueued on (in the `Scheduler`'s `taquba.Queue`)."""
    _: KW_ONLY
    payload: object = b""
    """The payload of every job. Exclusive with ``payload_factory``.

    `bytes` (the default, empty) are stored as they are; any other value is encoded with
    ``taquba.Codec(payload_type)`` once, here.
    """
    payload_factory: Callable[[datetime], Any] | None = None
    """Builds each job's payload from its fire time (aware, in ``tz``).

    It returns `bytes`, or a value of ``payload_type``. Called before each enqueue attempt,
    possibly more than once per fire time when scheduler instances race, so it should be cheap
    and deterministic. If it raises, or its value does not fit ``payload_type``, the firing is
    not enqueued (see `PayloadError`).
    """
    payload_type: Any = None
    """The type payloads are encoded as, with ``taquba.Codec(payload_type)``.

    Default: the type of ``payload``; with a ``payload_factory``, `bytes`. `bytes` payloads
    are never encoded: the job's payload is the bytes themselves.
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
    _codec: taquba.Codec[Any] | None = field(init=False, repr=False)  # None: bytes as they are
    _encoded: bytes = field(init=False, repr=False)  # the fixed payload, encoded

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidSchedule("a schedule name must be a non-empty str")
        if len(name) > MAX_NAME_LENGTH or _has_control(name):
            raise InvalidSchedule(
                f"invalid schedule name {name!r}: at most {MAX_NAME_LENGTH} characters, "
                "no control characters"
            )
        queue_name = self.queue_name
        if (
            not isinstance(queue_name, str)  # pyright: ignore[reportUnnecessaryIsInstance]
            or not queue_name
            or len(queue_name.encode()) > MAX_QUEUE_NAME_BYTES
            or _has_control(queue_name)
        ):
            raise InvalidSchedule(
                f"schedule {name!r}: invalid queue name {queue_name!r} (1 to "
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
        payload, factory, payload_type = self.payload, self.payload_factory, self.payload_type
        fixed = not (isinstance(payload, bytes) and not payload)  # anything but the default
        if factory is not None:
            if fixed:
                raise InvalidSchedule(
                    f"schedule {self.name!r}: pass payload or payload_factory, not both"
                )
            if not callable(factory):
                raise InvalidSchedule(f"schedule {self.name!r}: payload_factory must be callable")
        raw = _bytes_of(payload)
        if payload_type is None:
            payload_type = bytes if factory is not None or raw is not None else type(payload)
            object.__setattr__(self, "payload_type", payload_type)
        # The core's codec errors, as themselves: UnsupportedType for a type it cannot store.
        codec = None if payload_type is bytes else taquba.Codec(payload_type)
        object.__setattr__(self, "_codec", codec)
        if factory is not None:
            object.__setattr__(self, "_encoded", b"")
            return
        if codec is None:
            if raw is None:
                raise taquba.TypeMismatch("payload", "bytes", type(payload).__qualname__)
            payload = encoded = raw
        else:
            encoded = codec.encode(payload, path="payload")  # TypeMismatch if it does not fit
        object.__setattr__(self, "payload", payload)
        object.__setattr__(self, "_encoded", encoded)

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

    def encode_payload(self, fire: datetime) -> bytes:
        """The payload of the job this schedule enqueues for fire time ``fire``.

        The fixed payload (encoded when the schedule was built), or the value of
        ``payload_factory(fire)`` encoded as ``payload_type`` (`bytes` as they are).

        Raises:
            PayloadError: the factory raised, or its value does not fit ``payload_type``
                (the cause is the factory's exception or the codec's error).
        """
        factory = self.payload_factory
        if factory is None:
            return self._encoded
        fire_ms = from_instant(fire)
        try:
            value = factory(fire)
        except Exception as exc:
            raise PayloadError(self.name, fire_ms, f"{type(exc).__name__}: {exc}") from exc
        codec = self._codec
        if codec is None:
            raw = _bytes_of(value)
            if raw is None:
                raise PayloadError(
                    self.name,
                    fire_ms,
                    f"returned {type(value).__name__}, not bytes (set payload_type to encode "
                    "other values)",
                ) from taquba.TypeMismatch("payload", "bytes", type(value).__qualname__)
            return raw
        try:
            return codec.encode(value, path="payload")
        except taquba.SerializationError as exc:
            raise PayloadError(self.name, fire_ms, str(exc)) from exc

    def next_fire_times(self, after: datetime, n: int = 1) -> list[datetime]:
        """The next ``n`` fire times strictly after ``after``, aware in the schedule's zone.

        Pure: no stored state is read, so a paused schedule lists its times too. Fewer than
        ``n`` are returned only for an expression that stops firing (none do within 50 years).

        Args:
            after: a timezone-aware datetime.
            n: how many fire times to list.

        Raises:
            taquba.InvalidArgument: ``after`` is not an aware datetime, or ``n`` is not an int
                >= 0.
        """
        if not isinstance(after, datetime) or after.utcoffset() is None:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise taquba.InvalidArgument("after", after, "must be a timezone-aware datetime")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise taquba.InvalidArgument("n", n, "must be an int >= 0")
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
