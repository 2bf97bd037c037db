"""Fire-time computation: DST rules, checked against croniter and a brute-force oracle.

The oracle walks UTC instants one step (a minute, or a second for 6-field expressions) at a
time, reads each instant's wall clock with zoneinfo, and matches it against the field sets
croniter expands the expression into. For an interval expression (its seconds, minute or hour
field starts with ``*``) an instant fires when its wall time matches, whichever occurrence it
is. For a fixed-time expression an instant fires when its wall time matches and is the first
occurrence of that wall time (fold 0), or when the wall clock just jumped over a gap that held
a matching wall time (the first valid instant after the gap). It shares no code with
`taquba_cron._timing`.
"""

from __future__ import annotations

import functools
import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taquba_cron import InvalidCronExpression, Schedule
from taquba_cron._timing import (
    CronExpression,
    from_instant,
    next_fire_after,
    place_wall,
    prev_fire_at_or_before,
    to_instant,
)

DST_ZONES = ["America/New_York", "Europe/London", "Australia/Lord_Howe"]
FIXED_ZONES = ["UTC", "Asia/Kolkata"]
ZONES = DST_ZONES + FIXED_ZONES
MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------- the oracle


@functools.cache
def transitions(zone_name: str) -> tuple[int, ...]:
    """Every UTC-offset change of the zone in 2020-2031, to the millisecond."""
    zone = ZoneInfo(zone_name)

    def offset(ms: int) -> timedelta | None:
        return to_instant(ms).astimezone(zone).utcoffset()

    found: list[int] = []
    start = from_instant(datetime(2020, 1, 1, tzinfo=UTC))
    end = from_instant(datetime(2031, 1, 1, tzinfo=UTC))
    step = DAY  # offset changes are months apart in the zones tested
    previous = offset(start)
    for ms in range(start + step, end, step):
        current = offset(ms)
        if current != previous:
            lo, hi = ms - step, ms
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if offset(mid) == previous:
                    lo = mid
                else:
                    hi = mid
            found.append(hi)
            previous = current
    return tuple(found)


class Oracle:
    """Which instants fire, from croniter's expanded field sets and zoneinfo alone."""

    def __init__(self, expression: str, zone_name: str, name: str = "oracle") -> None:
        fields = expression.split()
        self.seconds = len(fields) == 6
        expanded = croniter(expression, second_at_beginning=self.seconds, hash_id=name).expanded
        # croniter keeps the seconds field last (index 5), whatever its position in the text.
        minute, hour, dom, month, dow = ({*values} for values in expanded[:5])
        second: set[object] = {*expanded[5]} if self.seconds else {0}
        self.fields = second, minute, hour, dom, month, dow
        self.day_or = "*" not in dom and "*" not in dow
        self.interval = any(field.startswith("*") for field in fields[: 3 if self.seconds else 2])
        self.zone = ZoneInfo(zone_name)
        self.step = 1000 if self.seconds else MINUTE

    def matches(self, wall: datetime) -> bool:
        second, minute, hour, dom, month, dow = self.fields
        if not (
            ("*" in minute or wall.minute in minute)
            and ("*" in hour or wall.hour in hour)
            and ("*" in second or wall.second in second)
            and ("*" in month or wall.month in month)
        ):
            return False
        weekday = (wall.weekday() + 1) % 7
        dom_ok = "*" in dom or wall.day in dom
        dow_ok = "*" in dow or weekday in dow or (weekday == 0 and 7 in dow)
        return (dom_ok or dow_ok) if self.day_or else (dom_ok and dow_ok)

    def fires(self, start: int, end: int) -> list[int]:
        """Fire instants in ``[start, end]`` (aligned to the step)."""
        step = self.step
        first = start - start % step
        if first < start:
            first += step
        found: list[int] = []
        zone, delta = self.zone, timedelta(milliseconds=step)
        previous_wall = to_instant(first - step).astimezone(zone).replace(tzinfo=None)
        moment = to_instant(first)
        naive = moment.replace(tzinfo=None)
        for ms in range(first, end + 1, step):
            local = moment.astimezone(zone)
            offset = local.utcoffset()
            assert offset is not None
            wall = naive + offset
            moment += delta
            naive += delta
            gap = wall - previous_wall > delta
            if self.interval:
                if self.matches(wall):
                    found.append(ms)
            elif local.fold == 0 and self.matches(wall):
                found.append(ms)
            elif gap:
                skipped = previous_wall + delta
                while skipped < wall:
                    if self.matches(skipped):
                        found.append(ms)
                        break
                    skipped += delta
            previous_wall = wall
        return found


# ---------------------------------------------------------------------------- strategies

SECONDS = st.sampled_from(["0", "30", "*/15", "*", "59"])
MINUTES = st.sampled_from(["0", "30", "15,45", "*/15", "*", "59", "0-5", "*/7", "20-40/10"])
HOURS = st.sampled_from(["*", "0", "1", "2", "3", "1-3", "*/2", "2,14", "23", "0-4"])
DOMS = st.sampled_from(["*", "*", "*", "1", "2-8", "15"])
DOWS = st.sampled_from(["*", "*", "*", "0", "1-5", "6", "sun"])


@st.composite
def five_field(draw: st.DrawFn, *, days: bool = True) -> str:
    dom, dow = (draw(DOMS), draw(DOWS)) if days else ("*", "*")
    return f"{draw(MINUTES)} {draw(HOURS)} {dom} * {dow}"


@st.composite
def six_field(draw: st.DrawFn) -> str:
    minute = draw(st.sampled_from(["*", "0", "59", "*/10", "30"]))
    return f"{draw(SECONDS)} {minute} {draw(HOURS)} * * *"


@st.composite
def near_transition(draw: st.DrawFn, zone_name: str, spread: int) -> int:
    """An instant within ``spread`` ms of one of the zone's offset changes (any instant for
    zones without changes)."""
    changes = transitions(zone_name)
    if not changes:
        return draw(st.integers(1_577_836_800_000, 1_893_456_000_000))
    change = draw(st.sampled_from(changes))
    return change + draw(st.integers(-spread, spread))


# ---------------------------------------------------------------------------- properties


def _check_next(expression: str, zone_name: str, after: int, horizon: int) -> None:
    expected = Oracle(expression, zone_name).fires(after + 1, after + horizon)
    got = next_fire_after(CronExpression(expression, hash_id="oracle"), ZoneInfo(zone_name), after)
    if expected:
        assert got == expected[0]
    else:
        assert got is None or got > after + horizon


def _check_prev(expression: str, zone_name: str, at: int, horizon: int) -> None:
    expected = Oracle(expression, zone_name).fires(at - horizon, at)
    got = prev_fire_at_or_before(
        CronExpression(expression, hash_id="oracle"), ZoneInfo(zone_name), at
    )
    if expected:
        assert got == expected[-1]
    else:
        assert got is None or got < at - horizon


@settings(PROPERTY, max_examples=300)
@given(data=st.data(), zone_name=st.sampled_from(DST_ZONES), expression=five_field(days=False))
def test_next_fire_matches_the_oracle_across_dst_changes(
    data: st.DataObject, zone_name: str, expression: str
) -> None:
    _check_next(expression, zone_name, data.draw(near_transition(zone_name, 3 * HOUR)), DAY)


@settings(PROPERTY, max_examples=300)
@given(data=st.data(), zone_name=st.sampled_from(DST_ZONES), expression=five_field(days=False))
def test_prev_fire_matches_the_oracle_across_dst_changes(
    data: st.DataObject, zone_name: str, expression: str
) -> None:
    _check_prev(expression, zone_name, data.draw(near_transition(zone_name, 3 * HOUR)), DAY)


@settings(PROPERTY, max_examples=25)
@given(data=st.data(), zone_name=st.sampled_from(ZONES), expression=five_field())
def test_day_fields_match_the_oracle_near_dst_changes(
    data: st.DataObject, zone_name: str, expression: str
) -> None:
    after = data.draw(near_transition(zone_name, 2 * DAY))
    _check_next(expression, zone_name, after, 8 * DAY)
    _check_prev(expression, zone_name, after, 4 * DAY)


@PROPERTY
@given(data=st.data(), zone_name=st.sampled_from(ZONES), expression=six_field())
def test_seconds_field_matches_the_oracle_across_dst_changes(
    data: st.DataObject, zone_name: str, expression: str
) -> None:
    at = data.draw(near_transition(zone_name, HOUR))
    _check_next(expression, zone_name, at, 2 * HOUR)
    _check_prev(expression, zone_name, at, HOUR)


@PROPERTY
@given(
    zone_name=st.sampled_from(FIXED_ZONES),
    expression=st.one_of(
        five_field(),
        six_field(),
        st.sampled_from(["0 0 L * *", "0 9 * * 5#3", "0 12 15W * *", "0 0 29 2 *", "@weekly"]),
    ),
    after=st.integers(946_684_800_000, 4_102_444_800_000),
)
def test_without_dst_croniter_itself_is_the_oracle(
    zone_name: str, expression: str, after: int
) -> None:
    zone = ZoneInfo(zone_name)
    parsed = CronExpression(expression, hash_id="x")
    start = to_instant(after).astimezone(zone)
    seconds = len(expression.split()) == 6
    reference = croniter(expression, start, second_at_beginning=seconds)
    expected = [from_instant(reference.get_next(datetime)) for _ in range(3)]
    got: list[int] = []
    instant = after
    for _ in range(3):
        fire = next_fire_after(parsed, zone, instant)
        assert fire is not None
        got.append(fire)
        instant = fire
    assert got == expected
    # croniter's get_prev is strict at whole seconds: start it 1 ms later to include ``after``.
    start = to_instant(after + 1).astimezone(zone)
    reference = croniter(expression, start, second_at_beginning=seconds)
    assert prev_fire_at_or_before(parsed, zone, after) == from_instant(reference.get_prev(datetime))


@PROPERTY
@given(
    zone_name=st.sampled_from(DST_ZONES),
    expression=five_field(),
    after=st.integers(1_577_836_800_000, 1_893_456_000_000),
)
def test_away_from_transitions_croniter_aware_mode_agrees(
    zone_name: str, expression: str, after: int
) -> None:
    zone = ZoneInfo(zone_name)
    parsed = CronExpression(expression, hash_id="x")
    got = next_fire_after(parsed, zone, after)
    assert got is not None
    if any(after - DAY <= change <= got + DAY for change in transitions(zone_name)):
        return  # near a transition croniter fires repeated wall times twice; the oracle rules
    reference = croniter(expression, to_instant(after).astimezone(zone))
    assert got == from_instant(reference.get_next(datetime))


@settings(max_examples=20, deadline=None)
@given(
    zone_name=st.sampled_from(ZONES),
    minute=st.integers(0, 59),
    hour=st.integers(0, 23),
    year=st.integers(2021, 2029),
)
def test_a_fixed_daily_time_fires_exactly_once_every_local_day(
    zone_name: str, minute: int, hour: int, year: int
) -> None:
    zone = ZoneInfo(zone_name)
    parsed = CronExpression(f"{minute} {hour} * * *", hash_id="x")
    instant = from_instant(datetime(year, 1, 1, tzinfo=zone)) - 1
    end = from_instant(datetime(year + 1, 1, 1, tzinfo=zone))
    days: list[object] = []
    while True:
        fire = next_fire_after(parsed, zone, instant)
        assert fire is not None
        if fire >= end:
            break
        days.append(to_instant(fire).astimezone(zone).date())
        instant = fire
    first = to_instant(end).astimezone(zone).date().replace(year=year)
    count = (first.replace(year=year + 1) - first).days
    assert days == [first + timedelta(days=i) for i in range(count)]


# ---------------------------------------------------------------------------- examples


def _local(zone_name: str, *args: int, fold: int = 0) -> int:
    return from_instant(datetime(*args, tzinfo=ZoneInfo(zone_name), fold=fold))  # type: ignore[misc]


def _utc(*args: int) -> int:
    return from_instant(datetime(*args, tzinfo=UTC))  # type: ignore[misc]


def _fires(expression: str, zone_name: str, start: int, end: int) -> list[int]:
    parsed = CronExpression(expression, hash_id="x")
    zone = ZoneInfo(zone_name)
    found: list[int] = []
    instant = start
    while (fire := next_fire_after(parsed, zone, instant)) is not None and fire <= end:
        found.append(fire)
        instant = fire
    return found


@pytest.mark.parametrize(
    ("zone_name", "expression", "day", "expected_utc"),
    [
        # New York springs forward at 02:00 EST -> 03:00 EDT (07:00Z).
        ("America/New_York", "30 2 * * *", (2024, 3, 10), [_utc(2024, 3, 10, 7, 0)]),
        # An interval expression (minute field "*/15") runs by elapsed time: 02:xx never comes.
        ("America/New_York", "*/15 2 * * *", (2024, 3, 10), []),
        # A fixed-time one collapses every skipped time into the end of the gap.
        ("America/New_York", "0,15,30,45 2 * * *", (2024, 3, 10), [_utc(2024, 3, 10, 7, 0)]),
        # ... and falls back at 02:00 EDT -> 01:00 EST: 01:30 fires once, in EDT (05:30Z).
        ("America/New_York", "30 1 * * *", (2024, 11, 3), [_utc(2024, 11, 3, 5, 30)]),
        # London: 01:00 GMT -> 02:00 BST; 01:30 does not exist and fires at 02:00 BST.
        ("Europe/London", "30 1 * * *", (2024, 3, 31), [_utc(2024, 3, 31, 1, 0)]),
        ("Europe/London", "30 1 * * *", (2024, 10, 27), [_utc(2024, 10, 27, 0, 30)]),
        # Lord Howe moves by 30 minutes: 02:00 -> 02:30 (+10:30 -> +11) in October.
        ("Australia/Lord_Howe", "15 2 * * *", (2024, 10, 6), [_utc(2024, 10, 5, 15, 30)]),
        # ... and 02:00 -> 01:30 in April: 01:45 fires once, at +11.
        ("Australia/Lord_Howe", "45 1 * * *", (2024, 4, 7), [_utc(2024, 4, 6, 14, 45)]),
        # Kolkata has no DST: 09:00 IST is 03:30Z every day.
        ("Asia/Kolkata", "0 9 * * *", (2024, 3, 10), [_utc(2024, 3, 10, 3, 30)]),
    ],
)
def test_documented_dst_examples(
    zone_name: str, expression: str, day: tuple[int, int, int], expected_utc: list[int]
) -> None:
    start = _local(zone_name, *day) - 1
    end = _local(zone_name, *day, 23, 59)
    assert _fires(expression, zone_name, start, end) == expected_utc


def test_interval_schedules_fire_through_the_repeated_hour_in_a_dst_zone() -> None:
    # Interval expressions run by elapsed time: both passes of 01:xx fire (04:00Z is 00:00 EDT,
    # 05:00Z 01:00 EDT, 06:00Z 01:00 EST, 07:00Z 02:00 EST).
    fires = _fires(
        "0,30 * * * *",
        "America/New_York",
        _utc(2024, 11, 3, 4, 0),
        _utc(2024, 11, 3, 8, 0),
    )
    hours = [f"{to_instant(f):%H:%M}" for f in fires]
    assert hours == ["04:30", "05:00", "05:30", "06:00", "06:30", "07:00", "07:30", "08:00"]


def _day_of(expression: str, zone_name: str, day: tuple[int, int, int]) -> list[int]:
    start = _local(zone_name, *day) - 1
    end = _local(zone_name, *(day[:2]), day[2] + 1) - 1
    return _fires(expression, zone_name, start, end)


@pytest.mark.parametrize(
    ("zone_name", "expression", "day", "count", "largest_gap_minutes"),
    [
        # The regressions of issue #14: an hourly schedule fires 25 times, an hour apart, on
        # the fall-back day (it left a 120-minute gap), ...
        ("America/New_York", "0 * * * *", (2024, 11, 3), 25, 60),
        ("America/New_York", "*/15 * * * *", (2024, 11, 3), 100, 15),
        ("America/New_York", "*/10 * * * * *", (2024, 11, 3), 25 * 360, 10 / 60),
        # ... and 23 times on the spring-forward day, with no double firing at 03:00.
        ("America/New_York", "15 * * * *", (2024, 3, 10), 23, 60),
        ("America/New_York", "0 * * * *", (2024, 3, 10), 23, 60),
        ("Europe/London", "@hourly", (2024, 10, 27), 25, 60),
        ("Australia/Lord_Howe", "*/30 * * * *", (2024, 4, 7), 49, 30),
        ("Australia/Lord_Howe", "*/30 * * * *", (2024, 10, 6), 47, 30),
        ("America/Santiago", "0 * * * *", (2024, 9, 8), 23, 60),
    ],
)
def test_interval_schedules_keep_their_period_through_dst_changes(
    zone_name: str,
    expression: str,
    day: tuple[int, int, int],
    count: int,
    largest_gap_minutes: float,
) -> None:
    fires = _day_of(expression, zone_name, day)
    assert len(fires) == count
    assert max(b - a for a, b in itertools.pairwise(fires)) == largest_gap_minutes * MINUTE


def test_spring_forward_does_not_fire_an_hourly_schedule_twice() -> None:
    fires = _day_of("15 * * * *", "America/New_York", (2024, 3, 10))
    local = [f"{to_instant(f).astimezone(ZoneInfo('America/New_York')):%H:%M}" for f in fires]
    assert "03:00" not in local
    assert local[:3] == ["00:15", "01:15", "03:15"]


def test_interval_prev_fire_inside_the_repeated_hour() -> None:
    parsed = CronExpression("0,30 * * * *", hash_id="x")
    zone = ZoneInfo("America/New_York")
    first_pass = _local("America/New_York", 2024, 11, 3, 1, 40)
    second_pass = _local("America/New_York", 2024, 11, 3, 1, 10, fold=1)
    assert prev_fire_at_or_before(parsed, zone, first_pass) == _utc(2024, 11, 3, 5, 30)
    assert prev_fire_at_or_before(parsed, zone, second_pass) == _utc(2024, 11, 3, 6, 0)
    assert next_fire_after(parsed, zone, first_pass) == _utc(2024, 11, 3, 6, 0)
    assert next_fire_after(parsed, zone, second_pass) == _utc(2024, 11, 3, 6, 30)


@pytest.mark.parametrize(
    ("expression", "interval"),
    [
        ("0 * * * *", True),
        ("*/15 2 * * *", True),
        ("* 2 * * *", True),
        ("*/10 * * * * *", True),
        ("* 30 2 * * *", True),
        ("@hourly", True),
        ("30 2 * * *", False),
        ("0 30 2 * * *", False),
        ("0 9-17/2 * * *", False),
        ("0-59/15 1-3 * * *", False),
        ("@daily", False),
    ],
)
def test_which_expressions_run_by_elapsed_time(expression: str, interval: bool) -> None:
    assert CronExpression(expression, hash_id="x").interval is interval


def test_one_value_ranges_are_not_wildcards() -> None:
    # croniter 7 expands "a-a" to "*"; taquba-cron passes it on as "a".
    after = datetime(2020, 3, 8, 3, tzinfo=UTC)  # a Sunday
    assert Schedule("s", "* * * * 1-1", "q").next_fire_times(after)[0] == datetime(
        2020, 3, 9, tzinfo=UTC
    )
    assert Schedule("s", "5-5 * * * *", "q").next_fire_times(after)[0] == datetime(
        2020, 3, 8, 3, 5, tzinfo=UTC
    )
    assert Schedule("s", "0 0 * * mon-mon/2", "q").next_fire_times(after)[0] == datetime(
        2020, 3, 9, tzinfo=UTC
    )


def test_last_weekday_of_the_month_in_both_spellings() -> None:
    after = datetime(2024, 1, 1, tzinfo=UTC)
    times = Schedule("s", "0 0 * * 5L", "q").next_fire_times(after, 3)
    assert times == Schedule("s", "0 0 * * L5", "q").next_fire_times(after, 3)
    assert [t.date().isoformat() for t in times] == ["2024-01-26", "2024-02-23", "2024-03-29"]


def test_place_wall_rules() -> None:
    zone = ZoneInfo("America/New_York")

    def wall(*args: int) -> int:
        return from_instant(datetime(*args, tzinfo=UTC))  # type: ignore[misc]

    assert place_wall(wall(2024, 3, 10, 2, 30), zone) == _utc(2024, 3, 10, 7, 0)
    assert place_wall(wall(2024, 11, 3, 1, 30), zone) == _utc(2024, 11, 3, 5, 30)
    assert place_wall(wall(2024, 6, 1, 12, 0), zone) == _utc(2024, 6, 1, 16, 0)


def test_sub_second_instants() -> None:
    parsed = CronExpression("*/10 * * * * *", hash_id="x")
    zone = ZoneInfo("UTC")
    base = _utc(2024, 1, 1, 0, 0)
    assert next_fire_after(parsed, zone, base) == base + 10_000
    assert next_fire_after(parsed, zone, base - 1) == base
    assert next_fire_after(parsed, zone, base + 9_999) == base + 10_000
    assert prev_fire_at_or_before(parsed, zone, base) == base
    assert prev_fire_at_or_before(parsed, zone, base + 9_999) == base
    assert prev_fire_at_or_before(parsed, zone, base - 1) == base - 10_000


# ---------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "expression",
    [
        "0 9 * * *",
        "0 * * * *",
        "0 9 * * 1-5",
        "*/5 * * * *",
        "30 0 9 * * mon-fri",
        "@daily",
        "@HOURLY",
        " 0  9 * * * ",
        "0 0 L * *",
        "0 9 * * 5#3",
        "H H * * *",
    ],
)
def test_valid_expressions(expression: str) -> None:
    assert CronExpression(expression, hash_id="n").next_wall_after(0) is not None


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "* * * *",
        "0 0 1 1 * 0 2030",
        "60 * * * *",
        "a b c d e",
        "*/0 * * * *",
        "0 0 30 2 *",
        "R * * * *",
        "0 R * * *",
        "@reboot",
        "@every 5m",
        "0 0 31 4 *",
        # croniter would silently fire on the last Friday only, or never: rejected instead.
        "0 0 1,L * 5L",
        "0 0 1 * 5#3",
        "0 0 15 * fri#3",
    ],
)
def test_invalid_expressions(expression: str) -> None:
    with pytest.raises(InvalidCronExpression) as info:
        CronExpression(expression, hash_id="n")
    assert info.value.expression == expression
    assert isinstance(info.value, ValueError)


def test_nicknames_mean_their_five_field_forms() -> None:
    after = datetime(2024, 5, 17, 13, 7, tzinfo=UTC)
    for nickname, form in [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
    ]:
        a = Schedule("n", nickname, "q").next_fire_times(after, 3)
        b = Schedule("n", form, "q").next_fire_times(after, 3)
        assert a == b, nickname


def test_seconds_come_first_in_six_fields() -> None:
    after = datetime(2024, 1, 1, tzinfo=UTC)
    times = Schedule("n", "15 30 * * * *", "q").next_fire_times(after, 2)
    assert [t.strftime("%H:%M:%S") for t in times] == ["00:30:15", "01:30:15"]


def test_hashed_fields_are_stable_per_schedule_name() -> None:
    after = datetime(2024, 1, 1, tzinfo=UTC)
    names = [f"job-{i}" for i in range(8)]
    firsts = {n: Schedule(n, "H H * * *", "q").next_fire_times(after, 1)[0] for n in names}
    assert firsts == {n: Schedule(n, "H H * * *", "q").next_fire_times(after, 1)[0] for n in names}
    assert len(set(firsts.values())) > 1
