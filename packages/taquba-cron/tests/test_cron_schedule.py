"""`Schedule` and `Scheduler` construction: every invalid definition is a typed error."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

import taquba
from taquba_cron import (
    CronError,
    DuplicateName,
    InvalidCronExpression,
    InvalidSchedule,
    Missed,
    Schedule,
    Scheduler,
    UnknownTimeZone,
)


def test_defaults() -> None:
    schedule = Schedule("daily", "0 9 * * *", "reports")
    assert (schedule.tz, schedule.missed, schedule.payload) == ("UTC", Missed.SKIP, b"")
    assert schedule.grace == 60.0
    assert schedule.lookback == 86_400.0
    assert dict(schedule.headers) == {}
    assert str(schedule.zone) == "UTC"


def test_valid_posix_expressions_are_accepted() -> None:
    for expression in ("0 9 * * *", "0 * * * *", "0 9 * * 1-5"):
        Schedule("s", expression, "q")


def test_missed_accepts_its_string_values() -> None:
    assert Schedule("s", "@daily", "q", missed="coalesce").missed is Missed.COALESCE  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"cron": "not cron"}, InvalidCronExpression),
        ({"cron": "0 0 30 2 *"}, InvalidCronExpression),
        ({"tz": "Mars/Olympus_Mons"}, UnknownTimeZone),
        ({"tz": "../../etc/passwd"}, UnknownTimeZone),
        ({"tz": ""}, UnknownTimeZone),
        ({"name": ""}, InvalidSchedule),
        ({"name": "a\nb"}, InvalidSchedule),
        ({"name": "x" * 201}, InvalidSchedule),
        ({"queue": ""}, InvalidSchedule),
        ({"queue": "q" * 300}, InvalidSchedule),
        ({"payload": b"x", "payload_factory": lambda fire: b""}, InvalidSchedule),
        ({"payload": "text"}, InvalidSchedule),
        ({"payload_factory": "not callable"}, InvalidSchedule),
        ({"missed": "sometimes"}, InvalidSchedule),
        ({"grace": 0}, InvalidSchedule),
        ({"lookback": -1}, InvalidSchedule),
        ({"lookback": float("inf")}, InvalidSchedule),
        ({"priority": -1}, InvalidSchedule),
        ({"priority": 2**32}, InvalidSchedule),
        ({"max_attempts": 0}, InvalidSchedule),
        ({"headers": {"cron.fire_ms": "1"}}, InvalidSchedule),
        ({"headers": {"k": 1}}, InvalidSchedule),
    ],
)
def test_invalid_definitions_raise_typed_errors(kwargs: dict[str, Any], error: type) -> None:
    base: dict[str, Any] = {"name": "s", "cron": "0 9 * * *", "queue": "q"}
    with pytest.raises(error) as info:
        Schedule(**(base | kwargs))
    assert isinstance(info.value, CronError)
    assert isinstance(info.value, ValueError)


def test_unknown_time_zone_names_the_zone() -> None:
    with pytest.raises(UnknownTimeZone) as info:
        Schedule("s", "0 9 * * *", "q", tz="Europe/Atlantis")
    assert info.value.tz == "Europe/Atlantis"


async def test_duplicate_names_are_rejected(queue: taquba.Queue) -> None:
    schedules = [Schedule("a", "@daily", "q"), Schedule("a", "@hourly", "q")]
    with pytest.raises(DuplicateName) as info:
        Scheduler(queue, schedules)
    assert info.value.name == "a"


async def test_scheduler_options_are_checked(queue: taquba.Queue) -> None:
    with pytest.raises(InvalidSchedule):
        Scheduler(queue, [], poll_interval=0)
    with pytest.raises(InvalidSchedule):
        Scheduler(queue, [], batch_size=0)
    with pytest.raises(InvalidSchedule):
        Scheduler(queue, ["0 9 * * *"])  # type: ignore[list-item]


def test_next_fire_times_in_the_schedule_zone() -> None:
    schedule = Schedule("s", "30 2 * * *", "q", tz="America/New_York")
    times = schedule.next_fire_times(datetime(2024, 3, 9, tzinfo=UTC), 3)
    assert [t.isoformat() for t in times] == [
        "2024-03-09T02:30:00-05:00",
        "2024-03-10T03:00:00-04:00",  # 02:30 does not exist: the first instant after the gap
        "2024-03-11T02:30:00-04:00",
    ]
    assert schedule.next_fire_times(datetime(2024, 3, 9, tzinfo=UTC), 0) == []
    with pytest.raises(ValueError, match="aware"):
        schedule.next_fire_times(datetime(2024, 3, 9), 1)
    with pytest.raises(ValueError, match="negative"):
        schedule.next_fire_times(datetime(2024, 3, 9, tzinfo=UTC), -1)
