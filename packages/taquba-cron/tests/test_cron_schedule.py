"""`Schedule` and `Scheduler` construction: every invalid definition is a typed error."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict

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
        ({"queue_name": ""}, InvalidSchedule),
        ({"queue_name": "q" * 300}, InvalidSchedule),
        ({"payload": b"x", "payload_factory": lambda fire: b""}, InvalidSchedule),
        ({"payload": "text", "payload_factory": lambda fire: b""}, InvalidSchedule),
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
    base: dict[str, Any] = {"name": "s", "cron": "0 9 * * *", "queue_name": "q"}
    with pytest.raises(error) as info:
        Schedule(**(base | kwargs))
    assert isinstance(info.value, CronError)
    assert isinstance(info.value, taquba.UsageError)
    assert isinstance(info.value, ValueError)


@dataclass(frozen=True)
class Report:
    kind: str
    days: int = 1


class Ping(TypedDict):
    n: int


def test_bytes_payloads_are_stored_as_they_are() -> None:
    fire = datetime(2026, 1, 1, tzinfo=UTC)
    assert Schedule("s", "@daily", "q").encode_payload(fire) == b""
    schedule = Schedule("s", "@daily", "q", payload=bytearray(b"tick"))
    assert schedule.payload == b"tick"
    assert schedule.payload_type is bytes
    assert schedule.encode_payload(fire) == b"tick"
    factory = Schedule("s", "@daily", "q", payload_factory=lambda at: at.isoformat().encode())
    assert factory.payload_type is bytes
    assert factory.encode_payload(fire) == b"2026-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    ("payload", "payload_type"),
    [
        (Report("daily"), None),
        (Report("weekly", 7), Report),
        ({"n": 3}, Ping),
        ({"a": [1, 2]}, None),
        ("text", None),
        (["x", "y"], list[str]),
        (None, None),
    ],
)
def test_typed_payloads_round_trip_through_the_codec(payload: object, payload_type: Any) -> None:
    schedule = Schedule("s", "@daily", "q", payload=payload, payload_type=payload_type)
    expected_type = type(payload) if payload_type is None else payload_type
    assert schedule.payload_type == expected_type
    raw = schedule.encode_payload(datetime(2026, 1, 1, tzinfo=UTC))
    codec = taquba.Codec(expected_type)
    assert raw == codec.encode(payload)
    assert codec.decode(raw) == payload


class Opaque:
    """A class the codec cannot store."""


def test_payloads_the_codec_rejects_raise_the_core_codec_errors() -> None:
    with pytest.raises(taquba.UnsupportedType):
        Schedule("s", "@daily", "q", payload=Opaque())
    with pytest.raises(taquba.UnsupportedType):
        Schedule("s", "@daily", "q", payload_factory=lambda at: Opaque(), payload_type=Opaque)
    with pytest.raises(taquba.TypeMismatch):
        Schedule("s", "@daily", "q", payload="text", payload_type=bytes)
    with pytest.raises(taquba.TypeMismatch) as info:
        Schedule("s", "@daily", "q", payload={"n": "three"}, payload_type=Ping)
    assert info.value.path == "payload['n']"


def test_unknown_time_zone_names_the_zone() -> None:
    with pytest.raises(UnknownTimeZone) as info:
        Schedule("s", "0 9 * * *", "q", tz="Europe/Atlantis")
    assert info.value.tz == "Europe/Atlantis"


async def test_duplicate_names_are_rejected(queue: taquba.Queue) -> None:
    schedules = [Schedule("a", "@daily", "q"), Schedule("a", "@hourly", "q")]
    with pytest.raises(DuplicateName) as info:
        Scheduler(queue, schedules)
    assert info.value.name == "a"


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": float("nan")}, "poll_interval"),
        ({"poll_interval": True}, "poll_interval"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 1.5}, "batch_size"),
        ({"shutdown_grace": -1}, "shutdown_grace"),
        ({"shutdown_grace": float("nan")}, "shutdown_grace"),
        ({"shutdown_grace": "30"}, "shutdown_grace"),
        ({"schedules": ["0 9 * * *"]}, "schedules"),
    ],
)
async def test_scheduler_options_are_checked(
    queue: taquba.Queue, kwargs: dict[str, Any], argument: str
) -> None:
    base: dict[str, Any] = {"schedules": []}
    with pytest.raises(taquba.InvalidArgument) as info:
        Scheduler(queue, **(base | kwargs))
    assert info.value.argument == argument


async def test_scheduler_accepts_every_valid_shutdown_grace(queue: taquba.Queue) -> None:
    for grace in (None, 0, 2.5, float("inf")):
        Scheduler(queue, [], shutdown_grace=grace)


def test_next_fire_times_in_the_schedule_zone() -> None:
    schedule = Schedule("s", "30 2 * * *", "q", tz="America/New_York")
    times = schedule.next_fire_times(datetime(2024, 3, 9, tzinfo=UTC), 3)
    assert [t.isoformat() for t in times] == [
        "2024-03-09T02:30:00-05:00",
        "2024-03-10T03:00:00-04:00",  # 02:30 does not exist: the first instant after the gap
        "2024-03-11T02:30:00-04:00",
    ]
    assert schedule.next_fire_times(datetime(2024, 3, 9, tzinfo=UTC), 0) == []
    with pytest.raises(taquba.InvalidArgument, match="aware"):
        schedule.next_fire_times(datetime(2024, 3, 9), 1)
    with pytest.raises(taquba.InvalidArgument, match=">= 0"):
        schedule.next_fire_times(datetime(2024, 3, 9, tzinfo=UTC), -1)
    with pytest.raises(taquba.InvalidArgument, match="int"):
        schedule.next_fire_times(datetime(2024, 3, 9, tzinfo=UTC), 1.5)  # type: ignore[arg-type]
