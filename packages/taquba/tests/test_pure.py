"""Ids, backoff, records and the clock."""

from __future__ import annotations

import ormsgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taquba import InvalidId, JobRecord, JobStatus, MockClock, QueueConfig, backoff_delay
from taquba._errors import DataError
from taquba._ids import IdGenerator, validate_job_id
from taquba._records import FORMAT_VERSION, decode_job, encode_job


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
    queue_name=st.text(min_size=1, max_size=10),
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


# A dead job with every optional field, as encoded by taquba 0.x before the field was renamed
# ``JobRecord.queue`` -> ``JobRecord.queue_name``: the stored map key stays ``"queue"``.
OLD_DEAD_JOB = bytes.fromhex(
    "8fa17601a26964ba30314a5130303030303030303030303030303030303030303030a57175657565a6656d6169"
    "6c73a77061796c6f6164c403006869a6737461747573a464656164a87072696f72697479cd03e8a8617474656d"
    "70747303ac6d61785f617474656d70747303ab656e7175657565645f6174cf0000018bcfe56800a76865616465"
    "727381a57472616365a3742d31aa636c61696d65645f6174cf0000018bcfe56be8aa6c6173745f6572726f72a4"
    "626f6f6da964656475705f6b6579a36b2d31a96661696c65645f6174cf0000018bcfe56fd0b063616e63656c5f"
    "726571756573746564c3"
)
OLD_PENDING_JOB = bytes.fromhex(
    "89a17601a26964a26a31a57175657565a171a77061796c6f6164c400a6737461747573a770656e64696e67a870"
    "72696f7269747900a8617474656d70747300ac6d61785f617474656d70747301ab656e7175657565645f617400"
)


def test_records_stored_before_the_queue_name_rename_decode_and_encode_identically() -> None:
    dead = JobRecord(
        id="01JQ0000000000000000000000",
        queue_name="emails",
        payload=b"\x00hi",
        status=JobStatus.DEAD,
        priority=1000,
        attempts=3,
        max_attempts=3,
        enqueued_at=1_700_000_000_000,
        headers={"trace": "t-1"},
        claimed_at=1_700_000_001_000,
        last_error="boom",
        dedup_key="k-1",
        failed_at=1_700_000_002_000,
        cancel_requested=True,
    )
    pending = JobRecord(
        id="j1",
        queue_name="q",
        payload=b"",
        status=JobStatus.PENDING,
        priority=0,
        attempts=0,
        max_attempts=1,
        enqueued_at=0,
    )
    for job, old in [(dead, OLD_DEAD_JOB), (pending, OLD_PENDING_JOB)]:
        assert decode_job(old) == job
        assert encode_job(job) == old  # byte-identical: the stored format did not change
        stored = ormsgpack.unpackb(old)
        assert stored["queue"] == job.queue_name
        assert "queue_name" not in stored


@given(records)
def test_job_records_encode_as_the_old_map(job: JobRecord) -> None:
    """The encoding is the map the pre-rename code built, key for key and in the same order."""
    old: dict[str, object] = {
        "v": FORMAT_VERSION,
        "id": job.id,
        "queue": job.queue_name,
        "payload": job.payload,
        "status": job.status.value,
        "priority": job.priority,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "enqueued_at": job.enqueued_at,
    }
    if job.headers:
        old["headers"] = dict(job.headers)
    for name in ("claimed_at", "run_at", "last_error", "dedup_key", "completed_at", "failed_at"):
        if getattr(job, name) is not None:
            old[name] = getattr(job, name)
    if job.cancel_requested:
        old["cancel_requested"] = True
    assert encode_job(job) == ormsgpack.packb(old)
    assert decode_job(ormsgpack.packb(old)) == job


@pytest.mark.parametrize("raw", [b"", b"\xc1", b"\x93\x01\x02\x03", b"\x81\xa1v\x02"])
def test_undecodable_records_raise_data_error(raw: bytes) -> None:
    with pytest.raises(DataError):
        decode_job(raw)


def test_mock_clock_never_goes_back() -> None:
    clock = MockClock(0)
    assert clock.advance(1.5) == 1_500
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
