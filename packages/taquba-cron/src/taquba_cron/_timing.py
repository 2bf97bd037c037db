"""Pure fire-time computation: cron expressions evaluated on a zone's wall clock.

croniter matches expressions against wall-clock times; this module owns the mapping from wall
times to UTC instants, which croniter's own time-zone handling gets wrong around DST changes
(it fires a repeated wall time twice, also for fixed-time jobs). Expressions fall in two
classes, the rule Vixie cron, cronie and cronsim follow:

* **Interval** expressions: the seconds (when present), minute or hour field starts with
  ``*`` (``*``, ``*/15``, ``*/10``; ``@hourly`` too). They run by elapsed time: the fire
  times are every instant whose wall time matches. A wall time skipped by a spring-forward
  gap does not fire (no catch-up); a wall time repeated by a fall-back fires at both of its
  occurrences. So ``0 * * * *`` fires 23 times on a spring-forward day and 25 on a fall-back
  day, an hour apart throughout.
* **Fixed-time** expressions (every other one, e.g. ``30 2 * * *``, ``0 9-17/2 * * *``): the
  fire times are the instants ``place(w)`` for every wall time ``w`` that matches, as a set
  (instants are UTC milliseconds, equal instants fire once):

  * a wall time that exists once maps to its instant;
  * a wall time that exists twice (fall back) maps to its first occurrence only;
  * a wall time that does not exist (spring forward) maps to the first valid instant after
    the gap, i.e. the instant of the transition. Several skipped wall times collapse into it.

How the searches work. Every existing wall time ``w`` has a first occurrence ``first(w)`` and a
last one ``last(w)`` (equal unless ``w`` is repeated). Both are strictly increasing in ``w``,
and ``place`` is non-decreasing, which makes the "next fire after an instant ``t``" search a
walk over matching wall times from a starting wall time chosen so that every earlier wall time
maps at or before ``t``. Interval expressions take the earlier of two such walks, one over
first occurrences and one over last occurrences; wall times in a gap are jumped over.

Everything here is synchronous and free of I/O; all times are integers in milliseconds.
"""

from __future__ import annotations

import re
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
    "is_interval",
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

_ONE_VALUE_RANGE: Final = re.compile(r"^(\w+)-\1(?:/\d+)?$", re.IGNORECASE)
_LAST_WEEKDAY: Final = re.compile(r"^([0-7]|[A-Za-z]{3})[Ll]$")

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


def _occurrences(wall_ms: int, zone: ZoneInfo) -> tuple[int, int] | None:
    """The first and last instants at which ``wall_ms`` occurs (equal unless it is repeated).

    None for a wall time in a gap (spring forward): it never occurs.
    """
    first = wall_ms - _offset_of_wall(wall_ms, zone, 0)
    last = wall_ms - _offset_of_wall(wall_ms, zone, 1)
    # In a gap, fold=0 reads the offset before the transition and fold=1 the one after, so
    # ``last < first`` and the transition lies between them.
    return (first, last) if first <= last else None


def _gap(wall_ms: int, zone: ZoneInfo) -> tuple[int, int, int]:
    """For a wall time in a gap: (transition instant, first wall time of the gap, first after).

    The transition instant is the first valid instant after the gap.
    """
    before = _offset_of_wall(wall_ms, zone, 0)
    after = _offset_of_wall(wall_ms, zone, 1)
    transition = _transition(zone, wall_ms - after, wall_ms - before)
    return transition, transition + before, transition + after


def place_wall(wall_ms: int, zone: ZoneInfo) -> int:
    """The instant at which wall time ``wall_ms`` fires for a fixed-time expression.

    See the module rules: the first occurrence, or the end of the gap for a skipped time.
    """
    found = _occurrences(wall_ms, zone)
    if found is not None:
        return found[0]  # exists once, or twice (the first is the earlier occurrence)
    return _gap(wall_ms, zone)[0]


def _repeat_end(ms: int, wall_ms: int, zone: ZoneInfo) -> int:
    """For an instant in the second pass of a repeated interval: the interval's end wall time."""
    offset_before = _offset_of_wall(wall_ms, zone, 0)
    first = wall_ms - offset_before
    return _transition(zone, first, ms) + offset_before


def _repeat_start(ms: int, twin: int, zone: ZoneInfo) -> int:
    """The first wall time of the repeated interval whose first pass holds ``ms``.

    ``twin`` is the second occurrence of the wall time of ``ms``.
    """
    transition = _transition(zone, ms, twin)
    return transition + _offset_at(transition, zone)


def _next_existing(
    expression: CronExpression, zone: ZoneInfo, start: int
) -> tuple[int, int] | None:
    """The occurrences of the first matching wall time after ``start`` that exists."""
    while True:
        wall = expression.next_wall_after(start)
        if wall is None:
            return None
        found = _occurrences(wall, zone)
        if found is not None:
            return found
        start = _gap(wall, zone)[2] - 1  # jump over the rest of the gap


def _prev_existing(
    expression: CronExpression, zone: ZoneInfo, limit: int
) -> tuple[int, int] | None:
    """The occurrences of the last matching wall time at or before ``limit`` that exists."""
    while True:
        wall = expression.prev_wall_at_or_before(limit)
        if wall is None:
            return None
        found = _occurrences(wall, zone)
        if found is not None:
            return found
        limit = _gap(wall, zone)[1] - 1  # jump over the rest of the gap


class CronExpression:
    """A parsed cron expression: 5 fields, or 6 with a leading seconds field.

    Fields: ``[second] minute hour day-of-month month day-of-week``, with croniter's syntax
    (lists, ranges, steps, names, ``L``, ``W``, ``#``, and ``H`` hashed on ``hash_id``) and
    POSIX OR-semantics between day-of-month and day-of-week. The nicknames ``@yearly``,
    ``@annually``, ``@monthly``, ``@weekly``, ``@daily``, ``@midnight`` and ``@hourly`` stand
    for their usual 5-field forms. The last given weekday of the month may be written ``L5``
    (croniter) or ``5L`` (Quartz, cronsim). Random ``R`` fields and a year field are rejected:
    every scheduler instance must compute the same fire times.

    ``interval`` tells which DST rules apply (see the module docstring and `is_interval`).
    """

    __slots__ = ("_iter", "_lock", "has_seconds", "interval", "text")

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
        self.interval = is_interval(fields)
        # croniter 7 reads a one-value range ``a-a`` (or ``a-a/n``) as ``*``: write it ``a``.
        fields = [
            ",".join(_ONE_VALUE_RANGE.sub(r"\1", item) for item in field.split(","))
            for field in fields
        ]
        # Quartz and cronsim write the last given weekday of the month ``5L``; croniter ``L5``.
        fields[-1] = ",".join(_LAST_WEEKDAY.sub(r"L\1", item) for item in fields[-1].split(","))
        normalized = " ".join(fields)
        if fields[-3] not in ("*", "?") and any(char in fields[-1] for char in "#Ll"):
            # croniter either rejects the combination or silently drops the day of month.
            raise InvalidCronExpression(
                text,
                "the '#' and 'L' day-of-week forms need '*' as the day of month",
            )
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


def is_interval(fields: list[str]) -> bool:
    """Whether an expression's fields (5, or 6 with leading seconds) make an interval job.

    Vixie cron's rule (its ``MIN_STAR`` and ``HR_STAR`` flags), also cronie's and cronsim's: the
    minute or hour field starts with ``*``. A seconds field starting with ``*`` counts too, so
    that ``* 2 * * *`` and ``* 0 2 * * *`` are alike, while ``30 2 * * *`` and
    ``0 30 2 * * *`` both stay fixed-time.
    """
    return any(field.startswith("*") for field in fields[: 3 if len(fields) == 6 else 2])


def next_fire_after(expression: CronExpression, zone: ZoneInfo, after_ms: int) -> int | None:
    """The first fire instant strictly after ``after_ms`` (None: the expression stops firing)."""
    wall_ms, fold = wall_of(after_ms, zone)
    # Every wall time at or before ``start`` has its first occurrence at or before after_ms.
    start = _repeat_end(after_ms, wall_ms, zone) - 1 if fold else wall_ms
    if expression.interval:
        found = _next_existing(expression, zone, start)
        best = None if found is None else found[0]
        if not fold:
            twin = _occurrences(wall_ms, zone)
            if twin is None or twin[1] <= after_ms:
                return best  # the walk over last occurrences finds the same wall time
            # after_ms is in the first pass of a repeated interval: all of its second pass
            # is still ahead.
            start = _repeat_start(after_ms, twin[1], zone) - 1
        else:
            start = wall_ms  # second pass: later wall times of the interval are ahead
        found = _next_existing(expression, zone, start)
        if found is not None and (best is None or found[1] < best):
            best = found[1]
        return best
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
    # Every wall time at or before ``limit`` has its first occurrence at or before at_ms.
    limit = _repeat_end(at_ms, wall_ms, zone) - 1 if fold else wall_ms
    if expression.interval:
        found = _prev_existing(expression, zone, limit)
        best = None if found is None else found[0]
        limit = wall_ms  # every wall time at or before it has its last occurrence by at_ms...
        if not fold:
            twin = _occurrences(wall_ms, zone)
            if twin is not None and twin[1] > at_ms:
                # ... unless at_ms is in the first pass of a repeated interval.
                limit = _repeat_start(at_ms, twin[1], zone) - 1
        found = _prev_existing(expression, zone, limit)
        if found is not None and (best is None or found[1] > best):
            best = found[1]
        return best
    while True:
        wall = expression.prev_wall_at_or_before(limit)
        if wall is None:
            return None
        fire = place_wall(wall, zone)
        if fire <= at_ms:
            return fire
        limit = wall - 1  # unreachable by the monotonicity argument; kept as a guard
