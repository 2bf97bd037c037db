"""The pure missed-run policy and the stored state record."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taquba_cron import CorruptState, Missed, Schedule
from taquba_cron._policy import Plan, State, plan

MINUTE = 60_000
HOUR = 60 * MINUTE
T0 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)


def step(schedule: Schedule, state: State, now: int, *, limit: int = 1000) -> Plan | None:
    return plan(
        state,
        now,
        next_after=schedule.next_fire_after_ms,
        prev_at_or_before=schedule.prev_fire_at_or_before_ms,
        missed=schedule.missed,
        grace_ms=round(schedule.grace * 1000),
        lookback_ms=round(schedule.lookback * 1000),
        limit=limit,
    )


def every_minute(missed: Missed = Missed.SKIP, **options: float) -> Schedule:
    return Schedule("m", "* * * * *", "q", missed=missed, **options)  # type: ignore[arg-type]


def test_nothing_due_is_none() -> None:
    schedule = every_minute()
    assert step(schedule, State(T0, None), T0) is None
    assert step(schedule, State(T0, None), T0 + MINUTE - 1) is None
    assert step(schedule, State(T0, None, paused=True), T0 + HOUR) is None


def test_on_time_firing_is_enqueued_under_every_policy() -> None:
    for missed in Missed:
        result = step(every_minute(missed), State(T0, None), T0 + MINUTE + 500)
        assert result == Plan([T0 + MINUTE], State(T0 + MINUTE + 500, T0 + MINUTE), more=False)


def test_skip_drops_late_firings_but_keeps_the_one_within_grace() -> None:
    # Down for 5m30s on "* * * * *": 4 firings are more than 60 s late, the 5th is 30 s late.
    now = T0 + 5 * MINUTE + 30_000
    result = step(every_minute(), State(T0, T0), now)
    assert result == Plan([T0 + 5 * MINUTE], State(now, T0 + 5 * MINUTE), more=False)
    # With a 10 s grace nothing is on time: the watermark moves, nothing is enqueued.
    result = step(every_minute(grace=10), State(T0, T0), now)
    assert result == Plan([], State(now, T0), more=False)
    assert every_minute().next_fire_after_ms(now) == T0 + 6 * MINUTE


def test_coalesce_enqueues_the_latest_missed_firing_once() -> None:
    hourly = Schedule("h", "0 * * * *", "q", missed=Missed.COALESCE, lookback=6 * 3600)
    now = T0 + 5 * HOUR + 20 * MINUTE
    result = step(hourly, State(T0, T0), now)
    assert result == Plan([T0 + 5 * HOUR], State(now, T0 + 5 * HOUR), more=False)
    # Beyond the lookback window there is nothing to coalesce.
    short = Schedule("h", "0 * * * *", "q", missed=Missed.COALESCE, lookback=600)
    assert step(short, State(T0, T0), now) == Plan([], State(now, T0), more=False)


def test_backfill_enqueues_every_missed_firing_within_lookback_in_order() -> None:
    hourly = Schedule("h", "0 * * * *", "q", missed=Missed.BACKFILL, lookback=3 * 3600)
    now = T0 + 5 * HOUR + 20 * MINUTE
    result = step(hourly, State(T0, T0), now)
    fires = [T0 + 3 * HOUR, T0 + 4 * HOUR, T0 + 5 * HOUR]
    assert result == Plan(fires, State(now, fires[-1]), more=False)


def test_backfill_in_steps_of_limit() -> None:
    schedule = every_minute(Missed.BACKFILL)
    now = T0 + 10 * MINUTE
    first = step(schedule, State(T0, None), now, limit=4)
    assert first == Plan(
        [T0 + i * MINUTE for i in range(1, 5)], State(T0 + 4 * MINUTE, T0 + 4 * MINUTE), True
    )
    second = step(schedule, first.state, now, limit=4)
    assert second is not None
    assert second.fires == [T0 + i * MINUTE for i in range(5, 9)]
    third = step(schedule, second.state, now, limit=4)
    assert third == Plan([T0 + 9 * MINUTE, T0 + 10 * MINUTE], State(now, T0 + 10 * MINUTE), False)
    assert step(schedule, third.state, now) is None


@settings(max_examples=200, deadline=None)
@given(
    missed=st.sampled_from(list(Missed)),
    through=st.integers(0, 3 * HOUR),
    elapsed=st.integers(1, 6 * HOUR),
    grace=st.integers(1, 600),
    lookback=st.integers(0, 4 * 3600),
    limit=st.integers(1, 50),
)
def test_steps_cover_exactly_the_due_firings_of_the_policy(
    missed: Missed, through: int, elapsed: int, grace: int, lookback: int, limit: int
) -> None:
    schedule = Schedule("p", "*/5 * * * *", "q", missed=missed, grace=grace, lookback=lookback)
    start, now = T0 + through, T0 + through + elapsed
    due: list[int] = []
    fire = schedule.next_fire_after_ms(start)
    while fire is not None and fire <= now:
        due.append(fire)
        fire = schedule.next_fire_after_ms(fire)
    window = grace * 1000 if missed is Missed.SKIP else max(grace, lookback) * 1000
    in_window = [f for f in due if f >= now - window]
    expected = in_window[-1:] if missed is Missed.COALESCE else in_window

    state, enqueued = State(start, None), []
    while (result := step(schedule, state, now, limit=limit)) is not None:
        assert len(result.fires) <= limit
        enqueued += result.fires
        assert result.state.through >= state.through
        state = result.state
    assert enqueued == expected
    assert state.through == (now if due else start)
    assert state.last == (expected[-1] if expected else None)


def test_state_round_trip_and_corruption() -> None:
    for state in (State(1, None), State(2, 1, paused=True)):
        assert State.decode("s", state.encode()) == state
    assert State(5, 3).encode() == b'{"last":3,"paused":false,"through":5,"v":1}'
    for raw in (b"nope", b"[]", b'{"v":2}', b'{"v":1,"through":"x","last":null,"paused":false}'):
        with pytest.raises(CorruptState):
            State.decode("s", raw)
