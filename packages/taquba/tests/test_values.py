"""Values that overflow or make no sense fail at the call, typed, naming the argument.

Every public numeric and time argument is fed NaN, infinities, negatives, huge values and
wrong types. A rejected call raises `InvalidArgument` (a `UsageError`, a `ValueError`) whose
``argument`` and message name what was wrong, and writes nothing. Huge finite delays are
clamped to `MAX_TIMESTAMP_MS` instead of failing deep in the key encoding; a handler that
asks for one keeps its `Worker` alive.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import taquba
from taquba import (
    MAX_TIMESTAMP_MS,
    EnqueueRequest,
    InvalidArgument,
    JobRecord,
    JobStatus,
    LeaseHandle,
    MockClock,
    QueueConfig,
    QueueStats,
    Store,
    UsageError,
)
from taquba._validate import check_seconds, datetime_ms, duration_ms  # pyright: ignore[reportPrivateUsage]

FAST = {"flush_interval": 0.005, "reaper_interval": 3600.0, "scheduler_interval": 3600.0}
HANG = 10  # seconds: only catches hangs

NAN, INF = math.nan, math.inf
# Values no duration accepts: (value, id).
BAD_DURATIONS = [NAN, INF, -INF, -1, -0.001, "1", b"1", True, False, [1], 1j]
BAD_INTS_COMMON = [True, 1.0, 1.5, "1", NAN, INF, None]


@pytest.fixture
def clock() -> MockClock:
    return MockClock()


@pytest.fixture
async def queue(memory_store: Store, clock: MockClock) -> AsyncIterator[taquba.Queue]:
    config = QueueConfig(lease_duration=10, retry_backoff_base=1, retry_backoff_max=60)
    async with taquba.open_queue(memory_store, "v", config=config, clock=clock, **FAST) as q:
        yield q


def rejected(exc: pytest.ExceptionInfo[InvalidArgument], argument: str) -> None:
    """The error is typed, names the argument, and stays a UsageError/ValueError."""
    assert exc.value.argument == argument
    assert str(exc.value).startswith(argument)
    assert isinstance(exc.value, UsageError)
    assert isinstance(exc.value, ValueError)


async def nothing_written(queue: taquba.Queue) -> None:
    assert await queue.list_queues() == []
    assert await queue.stats("w") == QueueStats("w")


# ------------------------------------------------------------------ enqueue

ENQUEUE_CASES: list[tuple[str, object]] = [
    *[("delay", v) for v in BAD_DURATIONS],
    ("run_at", datetime(2030, 1, 1)),  # naive
    ("run_at", "2030-01-01T00:00:00Z"),
    ("run_at", 1_900_000_000),
    ("run_at", 1.5),
    *[("priority", v) for v in [-1, 2**32, 2**70, *BAD_INTS_COMMON[:-1]]],
    *[("max_attempts", v) for v in [0, -1, 2**63, 2**70, *BAD_INTS_COMMON[:-1]]],
]


@pytest.mark.parametrize(("argument", "value"), ENQUEUE_CASES)
async def test_enqueue_rejects_bad_values_and_writes_nothing(
    queue: taquba.Queue, argument: str, value: object
) -> None:
    with pytest.raises(InvalidArgument) as exc:
        await queue.enqueue("w", b"x", **{argument: value})
    rejected(exc, argument)
    await nothing_written(queue)


@pytest.mark.parametrize(("argument", "value"), ENQUEUE_CASES)
async def test_enqueue_batch_rejects_bad_values_and_writes_nothing(
    queue: taquba.Queue, argument: str, value: object
) -> None:
    good = EnqueueRequest(queue_name="w", payload=b"ok")
    bad = EnqueueRequest(queue_name="w", payload=b"x", **{argument: value})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument) as exc:
        await queue.enqueue_batch([good, bad])
    rejected(exc, argument)
    await nothing_written(queue)


@pytest.mark.parametrize("item", [b"x", "x", {"queue_name": "w", "payload": b"x"}, None, 3])
async def test_enqueue_batch_type_checks_its_requests(queue: taquba.Queue, item: object) -> None:
    with pytest.raises(InvalidArgument) as exc:
        await queue.enqueue_batch([EnqueueRequest(queue_name="w", payload=b"ok"), item])  # type: ignore[list-item]
    rejected(exc, "requests")
    assert "EnqueueRequest" in str(exc.value)
    await nothing_written(queue)


async def test_effects_enqueues_are_checked_before_anything_is_settled(
    queue: taquba.Queue,
) -> None:
    await queue.enqueue("w", b"x")
    claim = await queue.claim("w")
    assert claim is not None
    with pytest.raises(InvalidArgument) as exc:
        await queue.ack_with(claim, taquba.Effects(enqueues=[b"y"]))  # type: ignore[list-item]
    rejected(exc, "requests")
    assert await queue.stats("w") == QueueStats("w", claimed=1)


@pytest.mark.parametrize("delay", [1e17, 1e300, 2**70, 10**400, 1.7e308])
async def test_a_huge_finite_delay_is_clamped_to_the_latest_storable_time(
    queue: taquba.Queue, delay: float
) -> None:
    job = await queue.enqueue("w", b"x", delay=delay)
    record = await queue.get_job(job.id)
    assert record is not None and record.status is JobStatus.SCHEDULED
    assert record.run_at == MAX_TIMESTAMP_MS
    assert await queue.stats("w") == QueueStats("w", scheduled=1)
    assert await queue.promote_scheduled_now() == 0


@pytest.mark.parametrize(
    ("run_at", "expected"),
    [
        (datetime.max.replace(tzinfo=UTC), MAX_TIMESTAMP_MS),
        # Later than datetime.max in UTC: still clamped, never an overflow.
        (datetime.max.replace(tzinfo=timezone(-timedelta(hours=23))), MAX_TIMESTAMP_MS),
        (datetime(9000, 1, 1, tzinfo=UTC), 221_845_392_000_000),
    ],
)
async def test_far_future_run_at_is_stored_exactly_or_clamped(
    queue: taquba.Queue, run_at: datetime, expected: int
) -> None:
    job = await queue.enqueue("w", b"x", run_at=run_at)
    record = await queue.get_job(job.id)
    assert record is not None and record.run_at == expected


@pytest.mark.parametrize(
    "run_at",
    [
        datetime.min.replace(tzinfo=UTC),
        datetime.min.replace(tzinfo=timezone(timedelta(hours=23))),
        datetime(1969, 12, 31, tzinfo=UTC),
    ],
)
async def test_far_past_run_at_means_now(queue: taquba.Queue, run_at: datetime) -> None:
    await queue.enqueue("w", b"x", run_at=run_at)
    assert await queue.stats("w") == QueueStats("w", pending=1)


# ------------------------------------------------------------------ claims and settlements


@pytest.mark.parametrize("lease", [*BAD_DURATIONS, 0, 0.0])
async def test_claim_rejects_bad_leases(queue: taquba.Queue, lease: object) -> None:
    await queue.enqueue("w", b"x")
    for call in (
        lambda: queue.claim("w", lease=lease),  # type: ignore[arg-type]
        lambda: queue.claim_batch("w", 5, lease=lease),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidArgument) as exc:
            await call()
        rejected(exc, "lease")
    assert await queue.stats("w") == QueueStats("w", pending=1)


@pytest.mark.parametrize("max_jobs", [-1, 2**40, True, 1.0, "2", None, NAN])
async def test_claim_batch_rejects_bad_sizes(queue: taquba.Queue, max_jobs: object) -> None:
    await queue.enqueue("w", b"x")
    with pytest.raises(InvalidArgument) as exc:
        await queue.claim_batch("w", max_jobs)  # type: ignore[arg-type]
    rejected(exc, "max_jobs")
    assert await queue.stats("w") == QueueStats("w", pending=1)


async def test_huge_leases_are_clamped(queue: taquba.Queue) -> None:
    await queue.enqueue("w", b"x")
    claim = await queue.claim("w", lease=1e306)
    assert claim is not None
    assert queue.lease_expiry(claim) == MAX_TIMESTAMP_MS
    assert queue.renew_lease(claim, 1e308) == MAX_TIMESTAMP_MS
    LeaseHandle(queue, claim).ensure_at_least(1.7e308)
    assert queue.lease_expiry(claim) == MAX_TIMESTAMP_MS


@pytest.mark.parametrize("extension", [*BAD_DURATIONS, 0])
async def test_renew_lease_rejects_bad_extensions(
    queue: taquba.Queue, extension: object, clock: MockClock
) -> None:
    await queue.enqueue("w", b"x")
    claim = await queue.claim("w")
    assert claim is not None
    before = queue.lease_expiry(claim)
    with pytest.raises(InvalidArgument) as exc:
        queue.renew_lease(claim, extension)  # type: ignore[arg-type]
    rejected(exc, "extension")
    assert queue.lease_expiry(claim) == before


@pytest.mark.parametrize("remaining", BAD_DURATIONS)
async def test_ensure_at_least_rejects_bad_durations(
    queue: taquba.Queue, remaining: object
) -> None:
    await queue.enqueue("w", b"x")
    claim = await queue.claim("w")
    assert claim is not None
    with pytest.raises(InvalidArgument) as exc:
        LeaseHandle(queue, claim).ensure_at_least(remaining)  # type: ignore[arg-type]
    rejected(exc, "remaining")


@pytest.mark.parametrize("retry_after", BAD_DURATIONS)
async def test_nack_rejects_bad_retry_after_and_writes_nothing(
    queue: taquba.Queue, retry_after: object
) -> None:
    await queue.enqueue("w", b"x")
    claim = await queue.claim("w")
    assert claim is not None
    with pytest.raises(InvalidArgument) as exc:
        await queue.nack(claim, "boom", retry_after=retry_after)  # type: ignore[arg-type]
    rejected(exc, "retry_after")
    assert await queue.stats("w") == QueueStats("w", claimed=1)
    await queue.ack(claim)  # the claim is untouched


@pytest.mark.parametrize("retry_after", [1e17, 1e300, 10**400])
async def test_nack_with_a_huge_retry_after_schedules_at_the_latest_storable_time(
    queue: taquba.Queue, retry_after: float
) -> None:
    job = await queue.enqueue("w", b"x")
    claim = await queue.claim("w")
    assert claim is not None
    assert not (await queue.nack(claim, "later", retry_after=retry_after)).dead
    record = await queue.get_job(job.id)
    assert record is not None and record.run_at == MAX_TIMESTAMP_MS


async def test_uncapped_huge_backoff_is_clamped(memory_store: Store, clock: MockClock) -> None:
    config = QueueConfig(retry_backoff_base=1e300, retry_backoff_max=INF)
    async with taquba.open_queue(memory_store, "b", config=config, clock=clock, **FAST) as queue:
        job = await queue.enqueue("w", b"x")
        claim = await queue.claim("w")
        assert claim is not None
        await queue.nack(claim, "boom")
        record = await queue.get_job(job.id)
        assert record is not None and record.run_at == MAX_TIMESTAMP_MS


@pytest.mark.parametrize("retry_after", BAD_DURATIONS)
def test_retry_later_checks_its_delay_where_it_is_raised(retry_after: object) -> None:
    with pytest.raises(InvalidArgument) as exc:
        taquba.RetryLater("x", retry_after=retry_after)  # type: ignore[arg-type]
    rejected(exc, "retry_after")


@pytest.mark.parametrize("concurrency", [1, 8], ids=["one-at-a-time", "concurrent"])
async def test_a_handler_asking_for_a_huge_delay_does_not_kill_the_worker(
    queue: taquba.Queue, concurrency: int
) -> None:
    """The attempt is nacked with the delay clamped; the loop goes on to the next job."""
    far = await queue.enqueue("w", b"far")
    asked, finished = trio.Event(), trio.Event()
    done: list[bytes] = []

    async def handler(job: JobRecord, lease: LeaseHandle) -> None:
        if job.payload == b"far":
            asked.set()
            raise taquba.RetryLater("much later", retry_after=1e17)
        done.append(job.payload)
        finished.set()

    worker = taquba.Worker(queue, "w", handler, concurrency=concurrency, poll_interval=0.01)
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            await asked.wait()
            await queue.enqueue("w", b"next")
            await finished.wait()  # the worker outlived the huge delay
            worker.shutdown()
    record = await queue.get_job(far.id)
    assert record is not None and record.status is JobStatus.SCHEDULED
    assert (record.run_at, record.last_error) == (MAX_TIMESTAMP_MS, "much later")
    assert done == [b"next"]


# ------------------------------------------------------------------ worker arguments

WORKER_CASES: list[tuple[str, object]] = [
    *[("poll_interval", v) for v in [*BAD_DURATIONS, 0]],
    *[("concurrency", v) for v in [0, -1, 2**40, *BAD_INTS_COMMON[:-1]]],
    *[("shutdown_grace", v) for v in [NAN, -1, "1", True]],
]


@pytest.mark.parametrize(("argument", "value"), WORKER_CASES)
async def test_worker_checks_its_arguments_when_it_is_built(
    queue: taquba.Queue, argument: str, value: object
) -> None:
    async def handler(job: JobRecord, lease: LeaseHandle) -> None:
        raise AssertionError("never called")

    await queue.enqueue("w", b"x")
    with pytest.raises(InvalidArgument) as exc:
        taquba.Worker(queue, "w", handler, **{argument: value})  # pyright: ignore[reportArgumentType]
    rejected(exc, argument)
    assert await queue.stats("w") == QueueStats("w", pending=1)


# ------------------------------------------------------------------ QueueConfig

CONFIG_CASES: list[tuple[str, object]] = [
    *[("max_attempts", v) for v in [0, -1, 2**63, *BAD_INTS_COMMON]],
    *[("lease_duration", v) for v in [*BAD_DURATIONS, 0, None]],
    *[("default_priority", v) for v in [-1, 2**32, *BAD_INTS_COMMON]],
    *[("retry_backoff_base", v) for v in [*BAD_DURATIONS, None]],
    *[("retry_backoff_max", v) for v in [NAN, -INF, -1, "1", True, None]],
    *[("keep_done", v) for v in [NAN, -INF, -1, "1", True]],
    *[("dead_retention", v) for v in [NAN, -INF, -1, "1", True]],
]


@pytest.mark.parametrize(("argument", "value"), CONFIG_CASES)
def test_queue_config_rejects_bad_fields(argument: str, value: object) -> None:
    with pytest.raises(InvalidArgument) as exc:
        QueueConfig(**{argument: value})
    rejected(exc, argument)


def test_queue_config_errors_are_still_value_errors() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        QueueConfig(max_attempts=0)


async def test_infinite_retention_means_forever(memory_store: Store, clock: MockClock) -> None:
    """``keep_done``/``dead_retention`` of ``math.inf`` keep records forever; sweeps work."""
    config = QueueConfig(keep_done=INF, dead_retention=INF, max_attempts=1)
    async with taquba.open_queue(memory_store, "r", config=config, clock=clock, **FAST) as queue:
        kept = await queue.enqueue("w", b"done")
        dead = await queue.enqueue("w", b"dead")
        claims = await queue.claim_batch("w", 2)
        await queue.ack(claims[0])
        await queue.dead_letter(claims[1], "bad")
        for _ in range(3):
            assert await queue.sweep_now() == 0
            clock.advance(1e9)
        for job_id, status in ((kept.id, JobStatus.DONE), (dead.id, JobStatus.DEAD)):
            record = await queue.get_job(job_id)
            assert record is not None and record.status is status


async def test_open_queue_survives_infinite_retention_in_its_background_sweep(
    memory_store: Store, clock: MockClock
) -> None:
    """The first background sweep used to raise OverflowError and take the queue down."""
    config = QueueConfig(keep_done=INF, dead_retention=INF)
    fast = {**FAST, "reaper_interval": 0.01}
    with trio.fail_after(HANG):
        async with taquba.open_queue(memory_store, "r", config=config, clock=clock, **fast) as q:
            await q.enqueue("w", b"x")
            claim = await q.claim("w")
            assert claim is not None
            await q.ack(claim)
            await trio.sleep(0.1)  # several background sweeps
            assert q.failure is None
            assert (await q.stats("w")).done == 1


# ------------------------------------------------------------------ open_queue

OPEN_CASES: list[tuple[str, object]] = [
    ("config", {"max_attempts": 3}),
    ("config", QueueConfig),
    ("queues", [("w", QueueConfig())]),
    ("queues['w']", {"w": {"max_attempts": 3}}),
    ("clock", 1_700_000_000_000),
    ("clock", object()),
    *[("flush_interval", v) for v in [*BAD_DURATIONS, 0, 1e300, 86_401]],
    *[("reaper_interval", v) for v in [*BAD_DURATIONS, 0, None]],
    *[("scheduler_interval", v) for v in [*BAD_DURATIONS, 0, None]],
]


@pytest.mark.parametrize(("argument", "value"), OPEN_CASES)
async def test_open_queue_checks_its_arguments_before_creating_anything(
    tmp_path: Path, argument: str, value: object
) -> None:
    path = tmp_path / "store"
    parameter = "queues" if argument.startswith("queues") else argument
    if argument.startswith("queues["):
        value = {"w": value["w"]}  # type: ignore[index]
    with pytest.raises(InvalidArgument) as exc:
        async with taquba.open_queue(path, "q", **{parameter: value}):
            raise AssertionError("opened")
    rejected(exc, argument)
    assert not path.exists() or not any(path.iterdir())


# ------------------------------------------------------------------ MockClock


@pytest.mark.parametrize("seconds", [NAN, INF, "1", True])
def test_mock_clock_rejects_bad_steps(seconds: object) -> None:
    clock = MockClock(0)
    with pytest.raises(InvalidArgument) as exc:
        clock.advance(seconds)  # type: ignore[arg-type]
    rejected(exc, "seconds")
    assert clock.now_ms() == 0


def test_mock_clock_stops_at_the_latest_storable_time() -> None:
    clock = MockClock(MAX_TIMESTAMP_MS - 5)
    assert clock.advance(1e300) == MAX_TIMESTAMP_MS
    with pytest.raises(InvalidArgument):
        MockClock(MAX_TIMESTAMP_MS + 1)


# ------------------------------------------------------------------ the pure checks

ANYTHING = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)


@given(value=ANYTHING, positive=st.booleans(), allow_inf=st.booleans())
def test_durations_are_checked_or_rejected_never_crash(
    value: object, positive: bool, allow_inf: bool
) -> None:
    error: InvalidArgument | None = None
    try:
        seconds = check_seconds("d", value, positive=positive, allow_inf=allow_inf)
    except InvalidArgument as exc:
        error = exc
    if error is not None:
        assert error.argument == "d"
        return
    assert not isinstance(value, (bool, str)) and value is not None
    assert seconds >= 0 and not math.isnan(seconds)
    assert 0 <= duration_ms(seconds) <= MAX_TIMESTAMP_MS


@given(
    moment=st.datetimes(
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=23, minutes=59)), timezone(-timedelta(hours=23))]
        )
    )
)
def test_aware_datetimes_map_to_storable_times_exactly(moment: datetime) -> None:
    ms = datetime_ms("run_at", moment)
    assert ms <= MAX_TIMESTAMP_MS
    if ms < MAX_TIMESTAMP_MS:
        exact = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
        assert ms == exact


@pytest.mark.parametrize("poll_interval", [*BAD_DURATIONS, 0, 1e300])
async def test_open_reader_checks_its_poll_interval(
    memory_store: Store, poll_interval: object
) -> None:
    with pytest.raises(InvalidArgument) as exc:
        async with taquba.open_reader(memory_store, "q", poll_interval=poll_interval):  # type: ignore[arg-type]
            raise AssertionError("opened")
    rejected(exc, "poll_interval")
