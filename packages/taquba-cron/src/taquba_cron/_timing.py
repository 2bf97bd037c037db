"""Pure fire-time computation: cron expressions evaluated on a zone's wall clock.

croniter matches expressions against wall-clock times; this module owns the mapping from wall
times to UTC instants, which croniter's own time-zone handling gets wrong around DST changes
(it fires a repeated wall time twice). The rules:

* The fire times of a schedule are the instants ``place(w)`` for every wall time ``w`` that
  matches the expression, as a set: instants are UTC milliseconds, equal instants fire once.
* A wall time that exists once maps to its instant.
* A wall time that exists twice (fall back) maps to its first occurrence only.
* A wall time that does not exist (spring forward) maps to the first valid instant after the
  gap, i.e. the instant of the transition. Several skipped wall times collapse into it.

``place`` is monotone (non-decreasing) in the wall time, which is what makes the "next fire
after an instant" search below correct: every wall time at or before the wall time of an
instant ``t`` (or, inside a repeated interval's second pass, before the interval's end) places
at or before ``t``.

Everything here is synchronous and free of I/O; all times are integers in milliseconds.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from croniter import CroniterBadDateError, CroniterError, croniter

from ._errors import InvalidCronExpression

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

__all__ = [
    "CronExpression",
    "from_instant",
    "next_fire_after",
    "place_wall",
    "prev_fire_at_or_before",
    "to_instant",
    "wall_of",
]

_MS: Final = timedelta(milliseconds=1)
_EPOCH: Final = datetime(1970, 1, 1)  # the naive epoch of wall-clock times
_EPOCH_UTC: Final = datetime(1970, 1, 1, tzinfo=UTC)
# A fixed instant to build croniter objects and test that an expression ever fires.
_REFERENCE: Final = datetime(2000, 1, 1, tzinfo=UTC)

_NICKNAMES: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def to_instant(ms: int) -> datetime:
    """The aware UTC datetime of an instant in milliseconds."""
    return _EPOCH_UTC + timedelta(milliseconds=ms)


def from_instant(moment: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime (floored to the millisecond)."""
    return (moment - _EPOCH_UTC) // _MS


def _wall_datetime(wall_ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=wall_ms)


def _offset_of_wall(wall_ms: int, zone: ZoneInfo, fold: int) -> int:
    offset = _wall_datetime(wall_ms).replace(tzinfo=zone, fold=fold).utcoffset()
    assert offset is not None  # a ZoneInfo always answers
    return offset // _MS


def _offset_at(ms: int, zone: ZoneInfo) -> int:
    offset = to_instant(ms).astimezone(zone).utcoffset()
    assert offset is not None  # a ZoneInfo always answers
    return offset // _MS


def wall_of(ms: int, zone: ZoneInfo) -> tuple[int, int]:
    """The wall-clock time of an instant in ``zone``, as ``(wall_ms, fold)``.

    ``wall_ms`` counts milliseconds from the naive epoch 1970-01-01T00:00; ``fold`` is 1 when
    the instant is the second occurrence of a repeated wall time.
    """
    local = to_instant(ms).astimezone(zone)
    offset = local.utcoffset()
    assert offset is not None  # a ZoneInfo always answers
    return ms + offset // _MS, local.fold


def _transition(zone: ZoneInfo, lo: int, hi: int) -> int:
    """The first instant in ``(lo, hi]`` whose UTC offset is ``hi``'s (offsets differ at ends)."""
    before = _offset_at(lo, zone)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset_at(mid, zone) == before:
            lo = mid
        else:
            hi = mid
    return hi


def place_wall(wall_ms: int, zone: ZoneInfo) -> int:
    """The instant at which the wall time ``wall_ms`` of ``zone`` fires (see the module rules)."""
    first = wall_ms - _offset_of_wall(wall_ms, zone, 0)
    second = wall_ms - _offset_of_wall(wall_ms, zone, 1)
    if first <= second:
        return first  # exists once (equal), or twice (first is the earlier occurrence)
    # In a gap, fold=0 reads the offset before the transition and fold=1 the one after, so
    # ``second < first`` and the transition lies between them.
    return _transition(zone, second, first)


def _repeat_end(ms: int, wall_ms: int, zone: ZoneInfo) -> int:
    """For an instant in the second pass of a repeated interval: the interval's end wall time."""
    offset_before = _offset_of_wall(wall_ms, zone, 0)
    first = wall_ms - offset_before
    return _transition(zone, first, ms) + offset_before


class CronExpression:
    """A parsed cron expression: 5 fields, or 6 with a leading seconds field.

    Fields: ``[second] minute hour day-of-month month day-of-week``, with croniter's syntax
    (lists, ranges, steps, names, ``L``, ``W``, ``#``, and ``H`` hashed on ``hash_id``) and
    POSIX OR-semantics between day-of-month and day-of-week. The nicknames ``@yearly``,
    ``@annually``, ``@monthly``, ``@weekly``, ``@daily``, ``@midnight`` and ``@hourly`` stand
    for their usual 5-field forms. Random ``R`` fields and a year field are rejected: every
    scheduler instance must compute the same fire times.
    """

    __slots__ = ("_iter", "_lock", "has_seconds", "text")

    def __init__(self, text: str, *, hash_id: str) -> None:
        """Parse ``text``; raise `InvalidCronExpression` if it is invalid or never fires."""
        if not isinstance(text, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidCronExpression(repr(text), "the expression must be a str")
        self.text = text
        normalized = " ".join(text.split())
        normalized = _NICKNAMES.get(normalized.lower(), normalized)
        fields = normalized.split(" ")
        if normalized.startswith("@"):
            raise InvalidCronExpression(text, "unknown nickname")
        if len(fields) not in (5, 6):
            raise InvalidCronExpression(
                text,
                f"expected 5 fields (minute hour day-of-month month day-of-week) or 6 with a "
                f"leading seconds field, got {len(fields)}",
            )
        for item in fields:
            if any(part[:1] in ("R", "r") for part in item.split(",")):
                raise InvalidCronExpression(text, "random 'R' fields are not supported")
        self.has_seconds = len(fields) == 6
        # One croniter object is repositioned for every query; the lock keeps a Schedule
        # shared between threads (e.g. two trio.run calls) correct.
        self._lock = threading.Lock()
        try:
            self._iter = croniter(
                normalized,
                _REFERENCE,
                second_at_beginning=self.has_seconds,
                hash_id=hash_id,
            )
        except CroniterError as exc:
            raise InvalidCronExpression(text, str(exc)) from exc
        if self.next_wall_after(0) is None:
            raise InvalidCronExpression(text, "it never fires")

    def next_wall_after(self, wall_ms: int) -> int | None:
        """The first matching wall time strictly after ``wall_ms`` (None: none within 50 years)."""
        with self._lock:
            self._iter.set_current(to_instant(wall_ms), force=True)
            try:
                found: datetime = self._iter.get_next(datetime)
            except CroniterBadDateError:
                return None
        return from_instant(found)

    def prev_wall_at_or_before(self, wall_ms: int) -> int | None:
        """The last matching wall time at or before ``wall_ms`` (None: none within 50 years)."""
        whole_second = wall_ms - wall_ms % 1000
        with self._lock:
            self._iter.set_current(to_instant(whole_second + 1), force=True)
            try:
                found: datetime = self._iter.get_prev(datetime)
            except CroniterBadDateError:
                return None
        return from_instant(found)

    def __repr__(self) -> str:
        return f"CronExpression({self.text!r})"


def next_fire_after(expression: CronExpression, zone: ZoneInfo, after_ms: int) -> int | None:
    """The first fire instant strictly after ``after_ms`` (None: the expression stops firing)."""
    wall_ms, fold = wall_of(after_ms, zone)
    start = _repeat_end(after_ms, wall_ms, zone) - 1 if fold else wall_ms
    while True:
        wall = expression.next_wall_after(start)
        if wall is None:
            return None
        fire = place_wall(wall, zone)
        if fire > after_ms:
            return fire
        start = wall  # unreachable by the monotonicity argument; kept as a guard


def prev_fire_at_or_before(expression: CronExpression, zone: ZoneInfo, at_ms: int) -> int | None:
    """The last fire instant at or before ``at_ms`` (None: none within 50 years)."""
    wall_ms, fold = wall_of(at_ms, zone)
    limit = _repeat_end(at_ms, wall_ms, zone) - 1 if fold else wall_ms
    while True:
        wall = expression.prev_wall_at_or_before(limit)
        if wall is None:
            return None
        fire = place_wall(wall, zone)
        if fire <= at_ms:
            return fire
        limit = wall - 1  # unreachable by the monotonicity argument; kept as a guard
