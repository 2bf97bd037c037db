"""Attempt history (`Queue.get_job_history`) and early wake-ups (`Queue.wake_scheduled`).

Run on memory, local-disk and S3 (moto) stores. The history's promise: every end of an
attempt is one entry, written by the transition that ends it (no read-modify-write), and the
history lives exactly as long as the job's record. The wake's promise: a scheduled job becomes
pending at once with the wake's payload on its record, every later delivery sees that payload,
and of a wake racing the scheduler or a cancel exactly one wins.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

import taquba
from taquba import (
    AttemptOutcome,
    CancelOutcome,
    DataError,
    InvalidId,
    JobAttempt,
    JobStatus,
    MockClock,
    QueueConfig,
    Store,
    UsageError,
    WakeOutcome,
)

FAST = {"flush_interval": 0.005, "reaper_interval": 3600.0, "scheduler_interval": 3600.0}
CONFIG = QueueConfig(lease_duration=10, retry_backoff_base=0, max_attempts=3)
KEEP = QueueConfig(lease_duration=10, retry_backoff_base=0, max_attempts=3, keep_done=60)
HOUR = 3600.0


@pytest.fixture
def clock() -> MockClock:
    return MockClock()


@pytest.fixture
async def queue(store: Store, clock: MockClock) -> AsyncIterator[taquba.Queue]:
    async with taquba.open_queue(
        store, "h", config=CONFIG, queues={"kept": KEEP}, clock=clock, **FAST
    ) as q:
        yield q


async def history_keys(queue: taquba.Queue) -> list[bytes]:
    """Every attempt-history key in the database (to prove nothing is left behind)."""
    prefix = taquba._keys.space_prefix(taquba._keys.Space.HISTORY)
    return [key for key, _ in await queue._database.scan(prefix)]


async def claim(queue: taquba.Queue, name: str = "w") -> taquba.Claim:
    got = await queue.claim(name)
    assert got is not None
    return got


def outcomes(history: list[JobAttempt] | None) -> list[tuple[int, AttemptOutcome, str | None]]:
    assert history is not None
    return [(a.attempt, a.outcome, a.error) for a in history]


# ---------------------------------------------------------------------------- history


async def test_each_failed_attempt_is_one_entry_and_an_ack_removes_them(
    queue: taquba.Queue, clock: MockClock
) -> None:
    job = await queue.enqueue("w", b"x")
    assert await queue.get_job_history(job.id) == []
    first = await claim(queue)
    clock.advance(1.5)
    await queue.nack(first, "boom")
    second = await claim(queue)
    await queue.nack(second, "again")
    history = await queue.get_job_history(job.id)
    assert outcomes(history) == [
        (1, AttemptOutcome.RETRIED, "boom"),
        (2, AttemptOutcome.RETRIED, "again"),
    ]
    assert history is not None
    assert history[0].claimed_at == first.job.claimed_at
    assert history[0].recorded_at == history[0].claimed_at + 1500  # type: ignore[operator]
    record = await queue.get_job(job.id)
    assert record is not None and record.history_size == 2
    third = await claim(queue)
    await queue.ack(third)  # no done records kept: the job and its history go
    assert await queue.get_job_history(job.id) is None
    assert await history_keys(queue) == []


async def test_a_kept_done_job_ends_with_completed_and_the_sweep_removes_it(
    queue: taquba.Queue, clock: MockClock
) -> None:
    job = await queue.enqueue("kept", b"x")
    await queue.nack(await claim(queue, "kept"), "once")
    await queue.ack(await claim(queue, "kept"))
    assert outcomes(await queue.get_job_history(job.id)) == [
        (1, AttemptOutcome.RETRIED, "once"),
        (2, AttemptOutcome.COMPLETED, None),
    ]
    assert len(await history_keys(queue)) == 2
    clock.advance(61)
    assert await queue.sweep_now() == 1
    assert await queue.get_job(job.id) is None
    assert await queue.get_job_history(job.id) is None
    assert await history_keys(queue) == []


async def test_dead_letter_requeue_and_purge(queue: taquba.Queue) -> None:
    job = await queue.enqueue("w", b"x")
    for i in range(3):
        await queue.nack(await claim(queue), f"e{i}")  # the third is out of attempts
    dead = await queue.get_job(job.id)
    assert dead is not None and dead.status is JobStatus.DEAD
    await queue.requeue_dead_job(dead)
    await queue.dead_letter(await claim(queue), "poison")
    assert outcomes(await queue.get_job_history(job.id)) == [
        (1, AttemptOutcome.RETRIED, "e0"),
        (2, AttemptOutcome.RETRIED, "e1"),
        (3, AttemptOutcome.DEAD_LETTERED, "e2"),
        (0, AttemptOutcome.REQUEUED, None),
        (1, AttemptOutcome.DEAD_LETTERED, "poison"),
    ]
    assert await queue.purge("w", JobStatus.DEAD) == 1
    assert await queue.get_job_history(job.id) is None
    assert await history_keys(queue) == []


async def test_an_expired_lease_is_recorded_and_so_is_one_out_of_attempts(
    store: Store, clock: MockClock
) -> None:
    config = QueueConfig(lease_duration=10, max_attempts=2)
    async with taquba.open_queue(store, "r", config=config, clock=clock, **FAST) as queue:
        job = await queue.enqueue("w", b"x")
        await claim(queue)
        clock.advance(11)
        assert await queue.reap_now() == 1
        await claim(queue)
        clock.advance(11)
        assert await queue.reap_now() == 1
        assert outcomes(await queue.get_job_history(job.id)) == [
            (1, AttemptOutcome.LEASE_EXPIRED, None),
            (2, AttemptOutcome.DEAD_LETTERED, "lease expired"),
        ]


async def test_a_claim_left_by_a_dead_process_is_recorded_as_interrupted(
    store: Store, clock: MockClock
) -> None:
    async with taquba.open_queue(store, "i", config=CONFIG, clock=clock, **FAST) as queue:
        job = await queue.enqueue("w", b"x")
        await queue.nack(await claim(queue), "first")
        await claim(queue)
        await queue.enqueue("w", b"flush")  # a durable commit makes the claim durable
        # Leaving without settling abandons the claim, as a killed process would.
    async with taquba.open_queue(store, "i", config=CONFIG, clock=clock, **FAST) as queue:
        assert outcomes(await queue.get_job_history(job.id)) == [
            (1, AttemptOutcome.RETRIED, "first"),
            (2, AttemptOutcome.INTERRUPTED, None),
        ]
    async with taquba.open_reader(store, "i") as reader:
        assert outcomes(await reader.get_job_history(job.id)) == [
            (1, AttemptOutcome.RETRIED, "first"),
            (2, AttemptOutcome.INTERRUPTED, None),
        ]
        assert await reader.get_job_history("unknown") is None


async def test_cancel_removes_the_history_of_a_retrying_job(queue: taquba.Queue) -> None:
    job = await queue.enqueue("w", b"x")
    await queue.nack(await claim(queue), "boom", retry_after=HOUR)  # scheduled for backoff
    assert len(await history_keys(queue)) == 1
    assert await queue.cancel(job.id) is CancelOutcome.REMOVED
    assert await queue.get_job_history(job.id) is None
    assert await history_keys(queue) == []


async def test_history_of_unknown_and_malformed_ids(queue: taquba.Queue) -> None:
    assert await queue.get_job_history("nope") is None
    with pytest.raises(InvalidId):
        await queue.get_job_history("not an id!")


async def test_an_undecodable_entry_is_a_data_error(queue: taquba.Queue) -> None:
    job = await queue.enqueue("w", b"x")
    await queue.nack(await claim(queue), "boom")
    [key] = await history_keys(queue)
    await queue._database.put(key, b"\xc1 garbage", durable=True)
    with pytest.raises(DataError):
        await queue.get_job_history(job.id)
    # The job itself is unharmed: it is claimed, acked, and its history deleted.
    await queue.ack(await claim(queue))
    assert await history_keys(queue) == []


# ---------------------------------------------------------------------------- wake


async def test_a_woken_job_is_due_now_and_every_delivery_sees_the_payload(
    queue: taquba.Queue, clock: MockClock
) -> None:
    job = await queue.enqueue("w", b"x", delay=HOUR)
    assert await queue.claim("w") is None
    clock.advance(5)
    assert await queue.wake_scheduled(job.id, b"approved") is WakeOutcome.WOKEN
    record = await queue.get_job(job.id)
    assert record is not None and record.status is JobStatus.PENDING
    assert (record.woken_at, record.wake_payload, record.run_at) == (
        clock.now_ms(),
        b"approved",
        None,
    )
    assert await queue.stats("w") == taquba.QueueStats("w", pending=1)
    first = await claim(queue)
    assert first.job.wake_payload == b"approved"
    await queue.nack(first, "retry me")
    second = await claim(queue)
    assert (second.job.wake_payload, second.job.woken_at) == (b"approved", record.woken_at)
    # Pending or claimed is not scheduled: a second wake changes nothing.
    assert await queue.wake_scheduled(job.id, b"late") is WakeOutcome.NOT_SCHEDULED
    await queue.ack(second)
    assert await queue.wake_scheduled(job.id) is WakeOutcome.NOT_FOUND


async def test_a_wake_survives_a_restart(store: Store, clock: MockClock) -> None:
    async with taquba.open_queue(store, "wk", config=CONFIG, clock=clock, **FAST) as queue:
        job = await queue.enqueue("w", b"x", delay=HOUR)
        assert await queue.wake_scheduled(job.id, b"go") is WakeOutcome.WOKEN
    async with taquba.open_queue(store, "wk", config=CONFIG, clock=clock, **FAST) as queue:
        got = await claim(queue)
        assert (got.id, got.job.wake_payload) == (job.id, b"go")


async def test_a_wake_without_payload_clears_an_earlier_one(
    queue: taquba.Queue, clock: MockClock
) -> None:
    job = await queue.enqueue("w", b"x", delay=HOUR)
    assert await queue.wake_scheduled(job.id, b"one") is WakeOutcome.WOKEN
    # Scheduled again by a retry's backoff, then woken again without a payload.
    await queue.nack(await claim(queue), "later", retry_after=HOUR)
    assert await queue.wake_scheduled(job.id) is WakeOutcome.WOKEN
    got = await claim(queue)
    assert got.job.wake_payload is None and got.job.woken_at is not None


async def test_bad_wake_arguments_are_refused_and_change_nothing(queue: taquba.Queue) -> None:
    job = await queue.enqueue("w", b"x", delay=HOUR)
    with pytest.raises(UsageError):
        await queue.wake_scheduled(job.id, "text")  # type: ignore[arg-type]
    with pytest.raises(InvalidId):
        await queue.wake_scheduled("bad id")
    record = await queue.get_job(job.id)
    assert record is not None and record.status is JobStatus.SCHEDULED
    assert record.woken_at is None


@pytest.mark.parametrize("rival", ["promote", "cancel"])
async def test_a_wake_racing_promotion_or_cancel_moves_each_job_once(
    queue: taquba.Queue, clock: MockClock, rival: str
) -> None:
    """The wake, the promotion and a cancel all delete the scheduled key: one commits first.

    Against the scheduler, a job is woken (payload on it) or promoted (no wake), never both.
    A cancel removes the job whichever came first (it removes pending jobs too), so the wake
    either found it (`WOKEN`) or did not (`NOT_FOUND`). The counters match either way.
    """
    ids = [(await queue.enqueue("w", b"%d" % i, delay=1)).id for i in range(20)]
    clock.advance(2)  # all due: the scheduler's promotion competes for every one
    results: dict[str, WakeOutcome] = {}

    async def wake(job_id: str) -> None:
        results[job_id] = await queue.wake_scheduled(job_id, b"w")

    async with trio.open_nursery() as nursery:
        for job_id in ids:
            nursery.start_soon(wake, job_id)
        if rival == "promote":
            nursery.start_soon(queue.promote_scheduled_now)
        else:
            for job_id in ids:
                nursery.start_soon(queue.cancel, job_id)
    stats = await queue.stats("w")
    if rival == "promote":
        assert set(results.values()) <= {WakeOutcome.WOKEN, WakeOutcome.NOT_SCHEDULED}
        for job_id, outcome in results.items():
            record = await queue.get_job(job_id)
            assert record is not None and record.status is JobStatus.PENDING
            woken = outcome is WakeOutcome.WOKEN
            assert (record.wake_payload == b"w") is woken
            assert (record.woken_at is not None) is woken
        assert (stats.pending, stats.scheduled) == (20, 0)
    else:
        assert set(results.values()) <= {WakeOutcome.WOKEN, WakeOutcome.NOT_FOUND}
        assert [await queue.get_job(job_id) for job_id in ids] == [None] * 20
        assert (stats.pending, stats.scheduled) == (0, 0)
    assert len(results) == 20
