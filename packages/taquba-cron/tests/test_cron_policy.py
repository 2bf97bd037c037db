"""The pure missed-run policy and the stored state record."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taquba_cron import CorruptState, Missed, Overlap, Schedule
from taquba_cron._policy import Plan, State, plan

MINUTE = 60_000
HOUR = 60 * MINUTE
T0 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)


def step(
    schedule: Schedule, state: State, now: int, *, limit: int = 1000, busy: bool = False
) -> Plan | None:
    return plan(
        state,
        now,
        next_after=schedule.next_fire_after_ms,
        prev_at_or_before=schedule.prev_fire_at_or_before_ms,
        missed=schedule.missed,
        grace_ms=round(schedule.grace * 1000),
        lookback_ms=round(schedule.lookback * 1000),
        limit=limit,
        overlap=schedule.overlap,
        busy=busy,
        job_id="next",
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


SECOND = 1000


@pytest.mark.parametrize("missed", list(Missed))
def test_a_short_stall_enqueues_every_on_time_firing_under_every_policy(missed: Missed) -> None:
    # Issue #14: after a 35 s stall on a 10-second schedule, COALESCE enqueued one firing
    # where SKIP enqueued three; all three are within the 60 s grace, so all are on time.
    schedule = Schedule("s", "*/10 * * * * *", "q", missed=missed)
    now = T0 + 35 * SECOND
    result = step(schedule, State(T0, T0), now)
    fires = [T0 + 10 * SECOND, T0 + 20 * SECOND, T0 + 30 * SECOND]
    assert result == Plan(fires, State(now, fires[-1]), more=False)


def test_coalesce_merges_only_the_missed_firings() -> None:
    # Grace 10 s: 10 s and 20 s are missed (25 s and 15 s late), 30 s is on time (5 s late).
    now = T0 + 35 * SECOND
    expected = {
        Missed.SKIP: [T0 + 30 * SECOND],
        Missed.COALESCE: [T0 + 20 * SECOND, T0 + 30 * SECOND],
        Missed.BACKFILL: [T0 + 10 * SECOND, T0 + 20 * SECOND, T0 + 30 * SECOND],
    }
    for missed, fires in expected.items():
        schedule = Schedule("s", "*/10 * * * * *", "q", missed=missed, grace=10)
        assert step(schedule, State(T0, T0), now) == Plan(fires, State(now, fires[-1]), False)
    # One at a time: the coalesced firing first, then the on-time one.
    schedule = Schedule("s", "*/10 * * * * *", "q", missed=Missed.COALESCE, grace=10)
    first = step(schedule, State(T0, T0), now, limit=1)
    assert first == Plan([T0 + 20 * SECOND], State(T0 + 20 * SECOND, T0 + 20 * SECOND), True)
    assert step(schedule, first.state, now, limit=1) == Plan(
        [T0 + 30 * SECOND], State(now, T0 + 30 * SECOND), False
    )


def test_overlap_allow_ignores_the_previous_job() -> None:
    result = step(every_minute(), State(T0, T0, job="old"), T0 + MINUTE, busy=True)
    assert result == Plan([T0 + MINUTE], State(T0 + MINUTE, T0 + MINUTE, job="old"), False)


def test_overlap_skip() -> None:
    schedule = Schedule("s", "* * * * *", "q", overlap=Overlap.SKIP, missed=Missed.BACKFILL)
    now = T0 + MINUTE
    # The previous job is unfinished: the firing is skipped, the watermark moves on.
    assert step(schedule, State(T0, T0, job="old"), now, busy=True) == Plan(
        [], State(now, T0, job="old"), False
    )
    # Finished: it is enqueued and becomes the tracked job.
    assert step(schedule, State(T0, T0, job="old"), now) == Plan(
        [now], State(now, now, job="next"), False
    )
    # Three due at once (backfill): the first runs, the others find it unfinished.
    later = T0 + 3 * MINUTE
    assert step(schedule, State(T0, T0, job="old"), later) == Plan(
        [T0 + MINUTE], State(later, T0 + MINUTE, job="next"), False
    )


def test_overlap_buffer_one() -> None:
    schedule = Schedule("b", "* * * * *", "q", overlap=Overlap.BUFFER_ONE)
    now = T0 + MINUTE
    # Busy: the firing waits in the buffer.
    held = step(schedule, State(T0, T0, job="old"), now, busy=True)
    assert held == Plan([], State(now, T0, job="old", buffered=now), False)
    # Still busy a minute later: the new firing is skipped, the buffered one keeps its place.
    later = now + MINUTE
    assert step(schedule, held.state, later, busy=True) == Plan(
        [], State(later, T0, job="old", buffered=now), False
    )
    # Still busy, nothing new due: nothing to do.
    assert step(schedule, held.state, now + 30_000, busy=True) is None
    # The job finished: the buffered firing is enqueued even though nothing new is due.
    released = step(schedule, held.state, now + 30_000)
    assert released == Plan([now], State(now, now, job="next"), False)
    # Finished with a firing due: the buffered one runs, the due one is buffered behind it.
    assert step(schedule, held.state, later) == Plan(
        [now], State(later, now, job="next", buffered=later), False
    )
    # Paused: nothing, not even the buffered firing.
    paused = State(now, T0, paused=True, job="old", buffered=now)
    assert step(schedule, paused, later) is None


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
    on_time = [f for f in due if f >= now - grace * 1000]
    late = [f for f in in_window if f < now - grace * 1000]
    expected = late[-1:] + on_time if missed is Missed.COALESCE else in_window

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
    for state in (State(1, None), State(2, 1, paused=True), State(3, 2, False, "j", 3)):
        assert State.decode("s", state.encode()) == state
    # Without overlap tracking the record is byte for byte the one of 0.4.
    assert State(5, 3).encode() == b'{"last":3,"paused":false,"through":5,"v":1}'
    assert State(5, 3, job="j", buffered=5).encode() == (
        b'{"buffered":5,"job":"j","last":3,"paused":false,"through":5,"v":1}'
    )
    base = '"v":1,"through":1,"last":null,"paused":false'
    for raw in (
        b"nope",
        b"[]",
        b'{"v":2}',
        b'{"v":1,"through":"x","last":null,"paused":false}',
        f'{{{base},"job":5}}'.encode(),
        f'{{{base},"job":""}}'.encode(),
        f'{{{base},"buffered":"x"}}'.encode(),
    ):
        with pytest.raises(CorruptState):
            State.decode("s", raw)
