"""Ids, backoff, records and the clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taquba import InvalidId, JobRecord, JobStatus, MockClock, QueueConfig, backoff_delay
from taquba._errors import DataError
from taquba._ids import IdGenerator, validate_job_id
from taquba._records import decode_job, encode_job


def test_ids_are_monotonic_within_one_millisecond() -> None:
    """Reference §16 item 10: same-millisecond ids sort in generation order."""
    gen = IdGenerator(MockClock(1_000))
    ids = [gen.next_id() for _ in range(5_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_ids_stay_monotonic_when_the_clock_goes_back() -> None:
    clock = MockClock(10_000)
    gen = IdGenerator(clock)
    first = gen.next_id()
    gen._clock = MockClock(5_000)  # a regressed clock
    assert gen.next_id() > first


@pytest.mark.parametrize(
    ("job_id", "reason"),
    [
        ("", "empty"),
        ("a" * 129, "maximum length"),
        ("a/b", r"\[A-Za-z0-9_-\]"),
        ("é", "only"),
        (5, "str"),
    ],
)
def test_invalid_ids(job_id: object, reason: str) -> None:
    with pytest.raises(InvalidId, match=reason):
        validate_job_id(job_id)


def test_valid_ids() -> None:
    assert validate_job_id("a" * 128) == "a" * 128
    assert validate_job_id("run_1-A") == "run_1-A"


@given(st.integers(1, 200), st.floats(0, 100), st.floats(0, 1000))
def test_backoff_is_doubling_and_capped(attempt: int, base: float, cap: float) -> None:
    delay = backoff_delay(attempt, base, cap)
    if base == 0:
        assert delay == 0
    else:
        assert 0 <= delay <= cap
        assert delay == min(base * 2 ** (attempt - 1), cap)


def test_backoff_defaults() -> None:
    config = QueueConfig()
    schedule = [
        backoff_delay(a, config.retry_backoff_base, config.retry_backoff_max) for a in range(1, 12)
    ]
    assert schedule[:4] == [1, 2, 4, 8]
    assert schedule[-1] == 300


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        QueueConfig(max_attempts=0)
    with pytest.raises(ValueError, match="lease"):
        QueueConfig(lease_duration=0)


records = st.builds(
    JobRecord,
    id=st.text("ABC123_-", min_size=1, max_size=20),
    queue=st.text(min_size=1, max_size=10),
    payload=st.binary(max_size=200),
    status=st.sampled_from(JobStatus),
    priority=st.integers(0, 2**32 - 1),
    attempts=st.integers(0, 10),
    max_attempts=st.integers(1, 10),
    enqueued_at=st.integers(0, 2**60),
    headers=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    claimed_at=st.none() | st.integers(0, 2**60),
    run_at=st.none() | st.integers(0, 2**60),
    last_error=st.none() | st.text(max_size=20),
    dedup_key=st.none() | st.text(min_size=1, max_size=10),
    completed_at=st.none() | st.integers(0, 2**60),
    failed_at=st.none() | st.integers(0, 2**60),
    cancel_requested=st.booleans(),
)


@given(records)
def test_job_records_round_trip(job: JobRecord) -> None:
    assert decode_job(encode_job(job)) == job


@pytest.mark.parametrize("raw", [b"", b"\xc1", b"\x93\x01\x02\x03", b"\x81\xa1v\x02"])
def test_undecodable_records_raise_data_error(raw: bytes) -> None:
    with pytest.raises(DataError):
        decode_job(raw)


def test_mock_clock_never_goes_back() -> None:
    clock = MockClock(0)
    assert clock.advance(1.5) == 1_500
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
