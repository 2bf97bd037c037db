"""Checks of caller-supplied numbers, durations and times (pure functions, no I/O).

Every public entry point runs its numeric and time arguments through these before it
touches storage, so a bad value fails at the call with `InvalidArgument` naming the argument,
never later as a ``struct.error`` from the key encoding or an ``OverflowError`` in a
background task.

Conventions:

- ``bool`` is never a number here (``True`` is an ``int`` in Python, never what was meant);
- NaN is always refused; infinity only where a parameter documents what it means;
- a finite duration too long to store is clamped: a time computed from it is capped at
  `MAX_TIMESTAMP_MS`, the last millisecond of year 9999 (the latest instant a `datetime` can
  hold, so every stored time can still be shown as one; the key encoding itself would take
  up to ``2**64 - 1``).
"""

from __future__ import annotations

import math
import numbers
import operator
import sys
from datetime import UTC, datetime
from typing import Final

from ._errors import InvalidArgument

__all__ = [
    "MAX_TIMESTAMP_MS",
    "check_int",
    "check_optional_seconds",
    "check_seconds",
    "check_type",
    "clamp_time",
    "datetime_ms",
    "duration_ms",
    "retention_ms",
]

MAX_TIMESTAMP_MS: Final = 253_402_300_799_999
"""The latest time taquba stores, in ms since the epoch: 9999-12-31 23:59:59.999 UTC.

Due times, lease expiries and retention deadlines computed past it are clamped to it.
"""

_MAX_SECONDS: Final = MAX_TIMESTAMP_MS / 1000


def check_type(argument: str, value: object, expected: type, what: str) -> None:
    """Raise `InvalidArgument` unless ``value`` is an instance of ``expected``."""
    if not isinstance(value, expected):
        raise InvalidArgument(argument, value, f"must be {what}")


def check_int(argument: str, value: object, *, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]``; `InvalidArgument` for a bool or non-int."""
    if isinstance(value, bool):
        raise InvalidArgument(argument, value, f"must be an int between {low} and {high}")
    try:
        number = operator.index(value)  # pyright: ignore[reportArgumentType]
    except TypeError:
        raise InvalidArgument(argument, value, f"must be an int between {low} and {high}") from None
    if not low <= number <= high:
        raise InvalidArgument(argument, value, f"must be an int between {low} and {high}")
    return number


def check_seconds(
    argument: str, value: object, *, positive: bool = False, allow_inf: bool = False
) -> float:
    """``value`` as a duration in seconds.

    Refuses a bool or non-real, NaN, a negative value (and zero when ``positive``), and
    infinity unless ``allow_inf``. An int too large for a float becomes the largest float
    (a huge finite duration, clamped wherever it becomes a time).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgument(argument, value, "must be a number of seconds (int or float)")
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond the float range (no other Real overflows here)
        seconds = -sys.float_info.max if value < 0 else sys.float_info.max
    if math.isnan(seconds):
        raise InvalidArgument(argument, value, "must be a number of seconds")
    if seconds < 0 or (positive and seconds == 0):
        sign = "positive" if positive else "non-negative"
        raise InvalidArgument(argument, value, f"must be a {sign} number of seconds")
    if math.isinf(seconds) and not allow_inf:
        raise InvalidArgument(argument, value, "must be a finite number of seconds")
    return seconds


def check_optional_seconds(
    argument: str, value: object, *, positive: bool = False, allow_inf: bool = False
) -> float | None:
    """`check_seconds`, letting None through."""
    if value is None:
        return None
    return check_seconds(argument, value, positive=positive, allow_inf=allow_inf)


def duration_ms(seconds: float) -> int:
    """A checked, non-negative duration in whole ms (rounded up), capped at `MAX_TIMESTAMP_MS`.

    Infinity and any duration longer than the whole storable range become `MAX_TIMESTAMP_MS`,
    so adding the result to a time and clamping (`clamp_time`) never overflows anything.
    """
    if seconds >= _MAX_SECONDS:
        return MAX_TIMESTAMP_MS
    return math.ceil(seconds * 1000)


def clamp_time(ms: int) -> int:
    """``ms`` capped at `MAX_TIMESTAMP_MS`."""
    return min(ms, MAX_TIMESTAMP_MS)


def retention_ms(seconds: float | None) -> int | None:
    """A retention in ms, or None for "forever" (None, infinity, or longer than storable time)."""
    if seconds is None:
        return None
    ms = duration_ms(seconds)
    return None if ms >= MAX_TIMESTAMP_MS else ms


def datetime_ms(argument: str, value: object) -> int:
    """A timezone-aware `datetime` as ms since the epoch (floored), clamped to storable times.

    Times before the epoch become negative values: callers treat any past time as "now".
    """
    if not isinstance(value, datetime):
        raise InvalidArgument(argument, value, "must be a timezone-aware datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgument(argument, value, "must be a timezone-aware datetime")
    # Exact integer arithmetic: .timestamp() is a float and loses ms far from 1970.
    delta = value - _EPOCH
    ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    return clamp_time(ms)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
