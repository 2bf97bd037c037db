"""Core queue semantics, run on memory, local-disk and S3 (moto) stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

import taquba
from taquba import (
    CancelOutcome,
    ClaimLost,
    DuplicateJobId,
    Effects,
    EnqueueRequest,
    InvalidId,
    InvalidQueueName,
    InvalidState,
    JobNotFound,
    JobStatus,
    KvValueTooLarge,
    MockClock,
    QueueConfig,
    Store,
    UsageError,
)

FAST = {"flush_interval": 0.005, "reaper_interval": 3600.0, "scheduler_interval": 3600.0}


@pytest.fixture
def clock() -> MockClock:
    return MockClock()


@pytest.fixture
async def queue(store: Store, clock: MockClock) -> AsyncIterator[taquba.Queue]:
    config = QueueConfig(lease_duration=10, retry_backoff_base=1, retry_backoff_max=60)
    async with taquba.open_queue(store, "q", config=config, clock=clock, **FAST) as q:
        yield q


async def recount(queue: taquba.Queue, name: str) -> taquba.QueueStats:
    counts = {}
    for status in (JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.CLAIMED, JobStatus.DEAD):
        page = await queue.list_jobs(name, status, limit=10_000)
        counts[status.value] = len(page.jobs)
    stats = await queue.stats(name)
    return taquba.QueueStats(name, done=stats.done, **counts)


async def test_enqueue_claim_ack_round_trip(queue: taquba.Queue) -> None:
    result = await queue.enqueue("work", b"payload", headers={"k": "v"})
    assert result.created
    assert (await queue.stats("work")).pending == 1
    claim = await queue.claim("work")
    assert claim is not None
    assert (claim.id, claim.payload, claim.attempts) == (result.id, b"payload", 1)
    assert claim.job.headers == {"k": "v"}
    assert (await queue.get_job(result.id)).status is JobStatus.CLAIMED  # type: ignore[union-attr]
    await queue.ack(claim)
    assert await queue.get_job(result.id) is None
    assert await queue.stats("work") == taquba.QueueStats("work", done=1)
    assert await queue.claim("work") is None
    assert await queue.list_queues() == ["work"]


async def test_claim_order_is_priority_then_fifo(queue: taquba.Queue) -> None:
    low = [await queue.enqueue("w", b"l%d" % i, priority=taquba.PRIORITY_LOW) for i in range(3)]
    normal = [await queue.enqueue("w", b"n%d" % i) for i in range(3)]
    high = await queue.enqueue("w", b"h", priority=taquba.PRIORITY_HIGH)
    claims = await queue.claim_batch("w", 10)
    assert [c.id for c in claims] == [high.id] + [r.id for r in normal] + [r.id for r in low]
    expiries = {queue.lease_expiry(c) for c in claims}
    assert len(expiries) == 1  # one shared lease


async def test_many_enqueues_in_one_millisecond_are_claimed_fifo(queue: taquba.Queue) -> None:
    """Reference §16 item 10 (the mock clock does not move)."""
    results = await queue.enqueue_batch(
        [EnqueueRequest(queue_name="w", payload=b"%d" % i) for i in range(200)]
    )
    claims = await queue.claim_batch("w", 200)
    assert [c.id for c in claims] == [r.id for r in results]


async def test_dedup_key_returns_the_existing_job_and_writes_nothing(queue: taquba.Queue) -> None:
    first = await queue.enqueue("w", b"a", dedup_key="k", kv_writes={b"x": b"1"})
    second = await queue.enqueue("w", b"b", dedup_key="k", kv_writes={b"y": b"2"})
    assert first.created and not second.created and second.id == first.id
    assert await queue.kv_get(b"x") == b"1" and await queue.kv_get(b"y") is None
    assert (await queue.stats("w")).pending == 1
    # The key is released at the first claim.
    claim = await queue.claim("w")
    assert claim is not None
    third = await queue.enqueue("w", b"c", dedup_key="k")
    assert third.created and third.id != first.id


async def test_nack_then_reenqueue_does_not_corrupt_dedup(
    queue: taquba.Queue, clock: MockClock
) -> None:
    """Reference §16 item 17: a retry of the old job must not delete the new job's dedup entry."""
    old = await queue.enqueue("w", b"old", dedup_key="k")
    claim = await queue.claim("w")
    assert claim is not None
    new = await queue.enqueue("w", b"new", dedup_key="k")
    assert new.created
    await queue.nack(claim, "boom")
    clock.advance(5)
    await queue.promote_scheduled_now()
    again = await queue.enqueue("w", b"newer", dedup_key="k")
    assert not again.created and again.id == new.id
    del old


async def test_concurrent_enqueues_under_contention_all_succeed(queue: taquba.Queue) -> None:
    """Reference §16 item 2: conflicts are retried, never surfaced."""
    results: list[taquba.EnqueueResult] = []

    async def one(i: int) -> None:
        results.append(await queue.enqueue("w", b"%d" % i, dedup_key="same" if i % 2 else None))

    async with trio.open_nursery() as nursery:
        for i in range(60):
            nursery.start_soon(one, i)
    created = [r for r in results if r.created]
    assert len(results) == 60
    assert len(created) == 31  # 30 distinct + one winner of the shared dedup key
    assert (await queue.stats("w")).pending == 31


async def test_id_override_validation_and_duplicates(queue: taquba.Queue) -> None:
    """Reference §16 item 5: a duplicate override writes nothing and leaves the original intact."""
    with pytest.raises(InvalidId):
        await queue.enqueue("w", b"x", job_id="bad id")
    first = await queue.enqueue("w", b"original", job_id="order-42")
    assert first.id == "order-42"
    with pytest.raises(DuplicateJobId):
        await queue.enqueue("w", b"other", job_id="order-42", kv_writes={b"side": b"effect"})
    assert await queue.kv_get(b"side") is None
    job = await queue.get_job("order-42")
    assert job is not None and job.payload == b"original"
    assert (await queue.stats("w")).pending == 1


async def test_batch_enqueue_is_all_or_nothing(queue: taquba.Queue) -> None:
    await queue.enqueue("w", b"x", job_id="taken")
    batch = [
        EnqueueRequest(queue_name="w", payload=b"a"),
        EnqueueRequest(queue_name="w", payload=b"b", job_id="taken"),
    ]
    with pytest.raises(DuplicateJobId):
        await queue.enqueue_batch(batch)
    assert (await queue.stats("w")).pending == 1
    results = await queue.enqueue_batch(
        [
            EnqueueRequest(queue_name="w", payload=b"a"),
            EnqueueRequest(queue_name="other", payload=b"b", delay=60),
        ]
    )
    assert all(r.created for r in results)
    assert (await queue.stats("other")).scheduled == 1


async def test_queue_names_are_passed_as_queue_name(queue: taquba.Queue) -> None:
    """Keyword callers name a queue ``queue_name`` (``queue`` is always a `Queue` object)."""
    result = await queue.enqueue(queue_name="kw", payload=b"x")
    assert (await queue.get_job(result.id)).queue_name == "kw"  # type: ignore[union-attr]
    assert (await queue.stats(queue_name="kw")).queue_name == "kw"
    page = await queue.list_jobs(queue_name="kw", status=JobStatus.PENDING)
    assert [job.queue_name for job in page.jobs] == ["kw"]
    assert queue.config(queue_name="kw") == queue.config("kw")
    claim = await queue.claim(queue_name="kw")
    assert claim is not None and claim.queue_name == "kw"
    await queue.dead_letter(claim, "poison")
    assert [job.id for job in await queue.dead_jobs(queue_name="kw")] == [result.id]
    assert await queue.quarantined(queue_name="kw") == []
    assert await queue.claim_batch(queue_name="kw", max_jobs=1) == []
    with pytest.raises(InvalidQueueName) as raised:
        await queue.stats(queue_name="")
    assert raised.value.queue_name == ""


async def test_bad_input_is_rejected_with_typed_errors(queue: taquba.Queue) -> None:
    with pytest.raises(InvalidQueueName):
        await queue.enqueue("", b"x")
    with pytest.raises(UsageError, match="payload must be bytes"):
        await queue.enqueue("w", "text")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="priority"):
        await queue.enqueue("w", b"x", priority=-1)
    with pytest.raises(UsageError, match="timezone"):
        await queue.enqueue("w", b"x", run_at=datetime(2030, 1, 1))
    with pytest.raises(UsageError, match="either"):
        await queue.enqueue("w", b"x", run_at=datetime.now(UTC), delay=1)
    with pytest.raises(KvValueTooLarge):
        await queue.kv_put(b"k", b"x" * (taquba.MAX_KV_VALUE_SIZE + 1))
    with pytest.raises(InvalidState, match="takes a Claim"):
        await queue.ack(await queue.get_job("nope"))  # type: ignore[arg-type]
    assert (await queue.stats("w")).pending == 0


async def test_scheduled_jobs_wait_for_their_time(queue: taquba.Queue, clock: MockClock) -> None:
    run_at = datetime.fromtimestamp(clock.now_ms() / 1000, UTC) + timedelta(seconds=30)
    job = await queue.enqueue("w", b"later", run_at=run_at)
    assert (await queue.get_job(job.id)).status is JobStatus.SCHEDULED  # type: ignore[union-attr]
    assert await queue.claim("w") is None
    assert await queue.promote_scheduled_now() == 0
    clock.advance(30)
    assert await queue.promote_scheduled_now() == 1
    claim = await queue.claim("w")
    assert claim is not None and claim.id == job.id
    assert claim.job.run_at is None


async def test_nack_backs_off_then_dead_letters(store: Store, clock: MockClock) -> None:
    config = QueueConfig(max_attempts=3, retry_backoff_base=2, retry_backoff_max=3)
    async with taquba.open_queue(store, "b", config=config, clock=clock, **FAST) as queue:
        job = await queue.enqueue("w", b"x")
        delays = []
        for attempt in (1, 2):
            claim = await queue.claim("w")
            assert claim is not None and claim.attempts == attempt
            await queue.nack(claim, f"fail {attempt}")
            record = await queue.get_job(job.id)
            assert record is not None and record.status is JobStatus.SCHEDULED
            assert record.last_error == f"fail {attempt}"
            delays.append((record.run_at or 0) - clock.now_ms())
            clock.advance(delays[-1] / 1000)
            assert await queue.promote_scheduled_now() == 1
        assert delays == [2000, 3000]  # 2 s, then 4 s capped at 3 s
        claim = await queue.claim("w")
        assert claim is not None
        await queue.nack(claim, "last")
        dead = await queue.get_job(job.id)
        assert (
            dead is not None and dead.status is JobStatus.DEAD and dead.failed_at == clock.now_ms()
        )
        assert await recount(queue, "w") == taquba.QueueStats("w", dead=1)
        # Requeue revives it with attempts reset.
        await queue.requeue_dead_job(dead)
        revived = await queue.claim("w")
        assert revived is not None and revived.attempts == 1
        with pytest.raises(InvalidState):
            await queue.requeue_dead_job(revived.job)


async def test_zero_backoff_requeues_immediately(store: Store, clock: MockClock) -> None:
    config = QueueConfig(retry_backoff_base=0)
    async with taquba.open_queue(store, "z", config=config, clock=clock, **FAST) as queue:
        await queue.enqueue("w", b"x")
        claim = await queue.claim("w")
        assert claim is not None
        await queue.nack(claim, "again")
        again = await queue.claim("w")
        assert again is not None and again.attempts == 2 and again.job.last_error == "again"


async def test_dead_letter_is_immediate(queue: taquba.Queue) -> None:
    job = await queue.enqueue("w", b"x")
    claim = await queue.claim("w")
    assert claim is not None
    await queue.dead_letter(claim, "poison")
    dead = await queue.dead_jobs("w")
    assert [(d.id, d.last_error, d.attempts) for d in dead] == [(job.id, "poison", 1)]


async def test_requeue_of_a_swept_dead_job_is_job_not_found(store: Store, clock: MockClock) -> None:
    """Reference §16 item 8: a stale dead record must not recreate the job."""
    config = QueueConfig(dead_retention=60)
    async with taquba.open_queue(store, "s", config=config, clock=clock, **FAST) as queue:
        await queue.enqueue("w", b"x")
        claim = await queue.claim("w")
        assert claim is not None
        await queue.dead_letter(claim, "bad")
        (stale,) = await queue.dead_jobs("w")
        clock.advance(59)
        assert await queue.sweep_now() == 0
        clock.advance(2)
        assert await queue.sweep_now() == 1
        with pytest.raises(JobNotFound):
            await queue.requeue_dead_job(stale)
        assert await queue.stats("w") == taquba.QueueStats("w")
        assert await queue.get_job(stale.id) is None


async def test_the_dead_space_is_scanned_only_once_a_dead_record_can_have_expired(
    memory_store: Store, clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A dead-letter inbox is kept for days by default; rereading it on every reaper tick cost
    # ~0.4 s of event loop per tick for 20k dead jobs. Every way a job dies lowers the due time.
    queues = {"short": QueueConfig(dead_retention=10, max_attempts=1, lease_duration=5)}
    config = QueueConfig(dead_retention=60)
    async with taquba.open_queue(
        memory_store, "s", config=config, queues=queues, clock=clock, **FAST
    ) as queue:
        scans: list[int] = []
        maintenance = queue._maintenance  # pyright: ignore[reportPrivateUsage]
        sweep = maintenance._sweep  # pyright: ignore[reportPrivateUsage]

        async def counting_sweep(*args: Any) -> tuple[int, int | None]:
            if args[-1] is JobStatus.DEAD:
                scans.append(clock.now_ms())
            return await sweep(*args)

        monkeypatch.setattr(maintenance, "_sweep", counting_sweep)

        async def dead_letter(name: str) -> str:
            job = await queue.enqueue(name, b"x")
            claim = await queue.claim(name)
            assert claim is not None and claim.id == job.id
            await queue.dead_letter(claim, "bad")
            return job.id

        long_lived = await dead_letter("w")
        assert await queue.sweep_now() == 0  # the first sweep of an open queue scans
        assert len(scans) == 1
        for _ in range(5):
            clock.advance(10)
            assert await queue.sweep_now() == 0  # the only dead record expires at 60 s
        assert len(scans) == 1

        # Dead by nack (out of attempts) in a 10 s queue: due before the long-lived one.
        await queue.enqueue("short", b"y")
        claim = await queue.claim("short")
        assert claim is not None
        assert (await queue.nack(claim, "boom")).dead
        clock.advance(9)
        assert await queue.sweep_now() == 0
        assert len(scans) == 1
        clock.advance(2)  # 61 s after the first, 11 s after the nack
        assert await queue.sweep_now() == 2
        assert len(scans) == 2
        assert await queue.get_job(long_lived) is None

        # Dead by the reaper (lease expired on the last attempt).
        await queue.enqueue("short", b"z")
        assert await queue.claim("short") is not None
        clock.advance(6)
        assert await queue.reap_now() == 1
        assert await queue.sweep_now() == 0
        assert len(scans) == 2
        clock.advance(11)
        assert await queue.sweep_now() == 1
        assert len(scans) == 3
        assert await queue.stats("short") == taquba.QueueStats("short")


async def test_keep_done_retains_then_sweeps(store: Store, clock: MockClock) -> None:
    config = QueueConfig(keep_done=100)
    async with taquba.open_queue(store, "d", config=config, clock=clock, **FAST) as queue:
        job = await queue.enqueue("w", b"x")
        claim = await queue.claim("w")
        assert claim is not None
        clock.advance(5)
        await queue.ack(claim)
        done = await queue.get_job(job.id)
        assert (
            done is not None
            and done.status is JobStatus.DONE
            and done.completed_at == clock.now_ms()
        )
        assert [j.id for j in (await queue.list_jobs("w", JobStatus.DONE)).jobs] == [job.id]
        clock.advance(99)
        assert await queue.sweep_now() == 0
        clock.advance(2)
        assert await queue.sweep_now() == 1
        assert await queue.get_job(job.id) is None
        assert (await queue.stats("w")).done == 1  # done is cumulative


async def test_settling_after_the_reaper_requeued_is_claim_lost(
    queue: taquba.Queue, clock: MockClock
) -> None:
    """Reference §16 item 6: ack, nack, dead_letter and renew all refuse a reaped claim."""
    await queue.enqueue("w", b"x")
    stale = await queue.claim("w")
    assert stale is not None
    clock.advance(11)
    assert await queue.reap_now() == 1
    assert stale.cancel_requested  # a still-running handler learns its delivery is over
    before = await queue.stats("w")
    for settle in (queue.ack(stale), queue.nack(stale, "x"), queue.dead_letter(stale, "x")):
        with pytest.raises(ClaimLost):
            await settle
    with pytest.raises(ClaimLost):
        queue.renew_lease(stale, 30)
    assert await queue.stats("w") == before
    fresh = await queue.claim("w")
    assert fresh is not None and fresh.attempts == 2
    await queue.ack(fresh)
    assert await queue.stats("w") == taquba.QueueStats("w", done=1)


async def test_ack_after_expiry_but_before_the_reaper_succeeds(
    queue: taquba.Queue, clock: MockClock
) -> None:
    await queue.enqueue("w", b"x")
    claim = await queue.claim("w")
    assert claim is not None
    clock.advance(60)
    await queue.ack(claim)
    assert await queue.reap_now() == 0


async def test_renewal_keeps_the_claim_alive(queue: taquba.Queue, clock: MockClock) -> None:
    await queue.enqueue("w", b"x")
    claim = await queue.claim("w")
    assert claim is not None
    clock.advance(8)
    expiry = queue.renew_lease(claim, 30)
    assert expiry == clock.now_ms() + 30_000
    clock.advance(20)
    assert await queue.reap_now() == 0
    await queue.ack(claim)


async def test_reaper_dead_letters_when_attempts_run_out(store: Store, clock: MockClock) -> None:
    config = QueueConfig(max_attempts=1, lease_duration=1)
    async with taquba.open_queue(store, "r", config=config, clock=clock, **FAST) as queue:
        job = await queue.enqueue("w", b"x")
        assert await queue.claim("w") is not None
        clock.advance(2)
        assert await queue.reap_now() == 1
        dead = await queue.get_job(job.id)
        assert (
            dead is not None
            and dead.status is JobStatus.DEAD
            and dead.last_error == "lease expired"
        )


@pytest.mark.parametrize("settle_with", ["nack", "ack"])
async def test_late_settlement_racing_the_reaper_resolves_to_claim_lost(
    queue: taquba.Queue, clock: MockClock, settle_with: str
) -> None:
    """Reference §16 item 7: the first commit wins; the loser sees ClaimLost, not a conflict.

    The ack variant is the drain's path: an ack of a queue that keeps no done records deletes
    the claimed record without reading it, so every job must still be counted exactly once.
    """
    for _ in range(20):
        await queue.enqueue("race", b"x")
    claims = await queue.claim_batch("race", 20)
    clock.advance(11)
    outcomes: list[str] = []

    async def settle(claim: taquba.Claim) -> None:
        try:
            if settle_with == "ack":
                await queue.ack(claim)
            else:
                await queue.nack(claim, "late")
            outcomes.append("settled")
        except ClaimLost:
            outcomes.append("lost")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.reap_now)
        for claim in claims:
            nursery.start_soon(settle, claim)
    assert len(outcomes) == 20
    stats = await recount(queue, "race")
    assert stats.claimed == 0
    if settle_with == "ack":  # acked jobs are gone (no done records kept); the rest requeued
        assert stats.pending == outcomes.count("lost")
        assert (await queue.stats("race")).done == outcomes.count("settled")
    else:
        assert stats.pending + stats.scheduled == 20
    assert await queue.stats("race") == stats


async def test_ack_with_applies_effects_atomically(queue: taquba.Queue, clock: MockClock) -> None:
    await queue.kv_put(b"gone", b"1")
    await queue.enqueue("w", b"parent")
    claim = await queue.claim("w")
    assert claim is not None
    effects = Effects(
        enqueues=[
            EnqueueRequest(queue_name="next", payload=b"child", job_id="child-1", priority=7),
            EnqueueRequest(queue_name="next", payload=b"later", delay=30),
            EnqueueRequest(queue_name="next", payload=b"dup", dedup_key="d"),
            EnqueueRequest(queue_name="next", payload=b"dup2", dedup_key="d"),
        ],
        kv_writes={b"state": b"done"},
        kv_deletes=[b"gone"],
    )
    results = await queue.ack_with(claim, effects)
    assert [r.created for r in results] == [True, True, True, False]
    assert results[3].id == results[2].id
    assert results[0].id == "child-1"
    assert await queue.kv_get(b"state") == b"done" and await queue.kv_get(b"gone") is None
    stats = await queue.stats("next")
    assert (stats.pending, stats.scheduled) == (2, 1)
    child = await queue.claim("next")
    assert child is not None and child.id == "child-1" and child.job.priority == 7


async def test_ack_with_on_a_lost_claim_applies_nothing(
    queue: taquba.Queue, clock: MockClock
) -> None:
    await queue.enqueue("w", b"x")
    claim = await queue.claim("w")
    assert claim is not None
    clock.advance(11)
    await queue.reap_now()
    effects = Effects(
        enqueues=[EnqueueRequest(queue_name="next", payload=b"c")], kv_writes={b"k": b"v"}
    )
    with pytest.raises(ClaimLost):
        await queue.ack_with(claim, effects)
    assert await queue.kv_get(b"k") is None
    assert await queue.stats("next") == taquba.QueueStats("next")


async def test_ack_retries_through_conflicts(queue: taquba.Queue) -> None:
    """Reference §16 item 1: a conflicting concurrent commit must not fail the ack."""
    for _ in range(30):
        await queue.enqueue("w", b"x")
    claims = await queue.claim_batch("w", 30)

    async with trio.open_nursery() as nursery:
        for claim in claims:
            # cancel() rewrites the claimed record while ack deletes it: they conflict.
            nursery.start_soon(queue.cancel, claim.id)
            nursery.start_soon(queue.ack, claim)
    assert await queue.stats("w") == taquba.QueueStats("w", done=30)


async def test_cancel_pending_and_claimed_jobs(queue: taquba.Queue, clock: MockClock) -> None:
    pending = await queue.enqueue("w", b"p", dedup_key="k")
    assert await queue.cancel(pending.id) is CancelOutcome.REMOVED
    assert await queue.get_job(pending.id) is None
    assert (await queue.enqueue("w", b"p2", dedup_key="k")).created  # dedup released
    claim = await queue.claim("w")
    assert claim is not None and not claim.cancel_requested
    assert await queue.cancel(claim.id) is CancelOutcome.REQUESTED
    assert claim.cancel_requested
    with trio.fail_after(1):
        await claim.wait_cancel_requested()
    assert await queue.cancel("missing") is CancelOutcome.NOT_FOUND
    # Reference §16 item 15: the cancel survives a nack, and the next delivery starts cancelled.
    await queue.nack(claim, "stopping")
    clock.advance(5)
    await queue.promote_scheduled_now()
    again = await queue.claim("w")
    assert again is not None and again.cancel_requested and again.job.cancel_requested
    await queue.dead_letter(again, "cancelled")
    (dead,) = await queue.dead_jobs("w")
    assert dead.cancel_requested


async def test_wait_for_completion(queue: taquba.Queue) -> None:
    with pytest.raises(JobNotFound):
        await queue.wait_for_completion("nope")
    job = await queue.enqueue("w", b"x")
    results: list[taquba.JobRecord | None] = []

    async def waiter() -> None:
        results.append(await queue.wait_for_completion(job.id))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(0.01)
        claim = await queue.claim("w")
        assert claim is not None
        await queue.dead_letter(claim, "x")
    assert results[0] is not None and results[0].status is JobStatus.DEAD


async def test_a_completion_wakes_only_the_waiters_of_that_job(
    memory_store: Store, clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 100 jobs with two waiters each, completed one by one: each waiter reads its job once at
    # the start and once after its own completion. A broadcast would cost ~100 reads per
    # completion (every waiter rereads), 10,000 in all.
    async with taquba.open_queue(memory_store, "q", clock=clock, **FAST) as queue:
        jobs = [await queue.enqueue("w", b"%d" % i) for i in range(100)]
        reads = 0
        first_reads_done = trio.Event()
        get_job = queue.get_job

        async def counting_get_job(job_id: str) -> taquba.JobRecord | None:
            nonlocal reads
            job = await get_job(job_id)
            reads += 1  # counted once done: the acks below start after every first read
            if reads == 200:
                first_reads_done.set()
            return job

        monkeypatch.setattr(queue, "get_job", counting_get_job)
        done: list[str] = []

        async def waiter(job_id: str) -> None:
            assert await queue.wait_for_completion(job_id) is None  # acked, not kept
            done.append(job_id)

        async with trio.open_nursery() as nursery:
            for job in jobs:
                nursery.start_soon(waiter, job.id)
                nursery.start_soon(waiter, job.id)
            await first_reads_done.wait()
            for _ in jobs:
                claim = await queue.claim("w")
                assert claim is not None
                await queue.ack(claim)
        assert sorted(done) == sorted([job.id for job in jobs] * 2)
        assert reads == 400
        assert queue._context.completion_waiters == {}  # pyright: ignore[reportPrivateUsage]


async def test_waiters_wake_on_every_kind_of_completion(memory_store: Store) -> None:
    clock = MockClock()
    config = QueueConfig(lease_duration=10, max_attempts=1)
    async with taquba.open_queue(memory_store, "q", config=config, clock=clock, **FAST) as queue:
        reaped = await queue.enqueue("w", b"reaped")  # out of attempts when its lease expires
        nacked = await queue.enqueue("w", b"nacked")
        cancelled = await queue.enqueue("w", b"cancelled")  # still pending: removed
        results: dict[str, taquba.JobRecord | None] = {}

        async def waiter(job_id: str) -> None:
            results[job_id] = await queue.wait_for_completion(job_id)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for job in (reaped, nacked, cancelled):
                    nursery.start_soon(waiter, job.id)
                first = await queue.claim("w")
                second = await queue.claim("w")
                assert first is not None and second is not None
                assert (first.id, second.id) == (reaped.id, nacked.id)
                await queue.nack(second, "boom")  # one attempt allowed: dead
                assert await queue.cancel(cancelled.id) is CancelOutcome.REMOVED
                clock.advance(60)
                assert await queue.reap_now() == 1
        dead_reaped, dead_nacked = results[reaped.id], results[nacked.id]
        assert dead_reaped is not None and dead_reaped.status is JobStatus.DEAD
        assert dead_nacked is not None and dead_nacked.last_error == "boom"
        assert results[cancelled.id] is None


async def test_a_cancelled_wait_leaves_no_registration(memory_store: Store) -> None:
    async with taquba.open_queue(memory_store, "q", **FAST) as queue:
        job = await queue.enqueue("w", b"x")
        with trio.move_on_after(0.05):
            await queue.wait_for_completion(job.id)
        assert queue._context.completion_waiters == {}  # pyright: ignore[reportPrivateUsage]
        with pytest.raises(taquba.InvalidId):
            await queue.wait_for_completion("not a ulid!")
        assert queue._context.completion_waiters == {}  # pyright: ignore[reportPrivateUsage]


async def test_claim_with_wait_wakes_on_insert_and_waits_out_its_deadline(
    queue: taquba.Queue,
) -> None:
    """Reference §16 item 9 (second half): a lost race does not end the wait early."""
    got: list[taquba.Claim] = []

    async def worker() -> None:
        with trio.move_on_after(0.3):
            got.append(await queue.claim_with_wait("w"))

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker)
        await trio.sleep(0.02)
        await queue.enqueue("w", b"x")
    assert len(got) == 1
    # Now a waiter that loses every race keeps waiting until its own deadline.
    start = trio.current_time()
    with trio.move_on_after(0.2) as scope:
        await queue.claim_with_wait("empty")
    assert scope.cancelled_caught
    assert trio.current_time() - start >= 0.2


async def test_insert_behind_the_cursor_is_claimable(queue: taquba.Queue) -> None:
    """Reference §16 items 3 and 4: ids A < B, B commits and is claimed, then A commits."""
    a, b = queue.next_job_id(), queue.next_job_id()
    assert a < b
    await queue.enqueue("w", b"b", job_id=b)
    first = await queue.claim("w")
    assert first is not None and first.id == b
    assert await queue.claim("w") is None  # the queue is now known empty
    await queue.enqueue("w", b"a", job_id=a)
    second = await queue.claim("w")
    assert second is not None and second.id == a
    # A higher-priority insert behind the bound.
    await queue.enqueue("w", b"n1")
    await queue.enqueue("w", b"n2")
    assert (await queue.claim("w")) is not None
    urgent = await queue.enqueue("w", b"urgent", priority=taquba.PRIORITY_HIGH)
    nxt = await queue.claim("w")
    assert nxt is not None and nxt.id == urgent.id


async def test_kv_namespace(queue: taquba.Queue) -> None:
    for i in range(5):
        await queue.kv_put(b"a/%d" % i, b"v%d" % i)
    await queue.kv_put(b"b/0", b"other")
    page = await queue.kv_scan(b"a/", limit=3)
    assert [k for k, _ in page.entries] == [b"a/0", b"a/1", b"a/2"]
    rest = await queue.kv_scan(b"a/", cursor=page.next_cursor, limit=3)
    assert [k for k, _ in rest.entries] == [b"a/3", b"a/4"] and rest.next_cursor is None
    assert await queue.kv_compare_and_set(b"c", None, b"1")
    assert not await queue.kv_compare_and_set(b"c", None, b"2")
    assert await queue.kv_compare_and_set(b"c", b"1", b"3")
    assert await queue.kv_get(b"c") == b"3"
    assert await queue.kv_compare_and_set(b"c", b"3", None)
    assert await queue.kv_get(b"c") is None
    await queue.kv_delete(b"a/0")
    assert await queue.kv_get(b"a/0") is None
    # Internal records never show through the user namespace.
    await queue.enqueue("w", b"x")
    assert all(k.startswith((b"a/", b"b/")) for k, _ in (await queue.kv_scan()).entries)


async def test_list_jobs_pages_through_each_state(queue: taquba.Queue, clock: MockClock) -> None:
    ids = [(await queue.enqueue("w", b"%d" % i)).id for i in range(7)]
    await queue.enqueue("other", b"x", delay=5)
    for i in range(3):
        await queue.enqueue("w", b"s%d" % i, delay=10 + i)
    seen: list[str] = []
    cursor = None
    while True:
        page = await queue.list_jobs("w", JobStatus.PENDING, cursor=cursor, limit=3)
        seen += [j.id for j in page.jobs]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ids
    scheduled = await queue.list_jobs("w", JobStatus.SCHEDULED, limit=2)
    assert len(scheduled.jobs) == 2 and all(j.queue_name == "w" for j in scheduled.jobs)
    rest = await queue.list_jobs("w", JobStatus.SCHEDULED, cursor=scheduled.next_cursor, limit=2)
    assert len(rest.jobs) == 1
    assert sorted(await queue.list_queues()) == ["other", "w"]


async def test_stats_survive_folding_and_restart(store: Store, clock: MockClock) -> None:
    async with taquba.open_queue(store, "st", clock=clock, **FAST) as queue:
        for i in range(25):
            await queue.enqueue("w", b"%d" % i)
        for claim in await queue.claim_batch("w", 10):
            await queue.ack(claim)
        await queue.fold_stats_now()
        await queue.enqueue("w", b"more")
        assert await queue.stats("w") == taquba.QueueStats("w", pending=16, done=10)
    async with taquba.open_queue(store, "st", clock=clock, **FAST) as queue:
        assert await queue.stats("w") == taquba.QueueStats("w", pending=16, done=10)


async def test_open_recovers_claims_of_a_dead_process(store: Store, clock: MockClock) -> None:
    config = QueueConfig(max_attempts=2)
    async with taquba.open_queue(store, "rec", config=config, clock=clock, **FAST) as queue:
        for i in range(3):
            await queue.enqueue("w", b"%d" % i)
        held = await queue.claim_batch("w", 3)
        await queue.nack(held[0], "x")  # back to scheduled, attempt 1 used
        await queue.enqueue("w", b"keep")
        # A durable commit flushes the claims; leaving without settling abandons them.
    async with taquba.open_queue(store, "rec", config=config, clock=clock, **FAST) as queue:
        stats = await queue.stats("w")
        assert (stats.pending, stats.claimed, stats.scheduled) == (3, 0, 1)
        assert await recount(queue, "w") == stats
        claims = await queue.claim_batch("w", 10)
        assert sorted(c.attempts for c in claims) == [1, 2, 2]


async def test_cursor_state_is_persisted_at_close_and_restored(
    store: Store, clock: MockClock
) -> None:
    async with taquba.open_queue(store, "cur", clock=clock, **FAST) as queue:
        for i in range(5):
            await queue.enqueue("w", b"%d" % i)
        for claim in await queue.claim_batch("w", 5):
            await queue.ack(claim)
        assert await queue.claim("w") is None
        bound = queue._context.states["w"].cursor.bound
        assert bound is not None
    async with taquba.open_queue(store, "cur", clock=clock, **FAST) as queue:
        cursor = queue._context.states["w"].cursor
        assert cursor.bound == bound and cursor.known_empty
        # The record was deleted on open, so a crash now cannot resurrect a stale bound.
        assert (
            await queue._database.scan(taquba._keys.space_prefix(taquba._keys.Space.CURSOR)) == []
        )
        job = await queue.enqueue("w", b"new")
        claim = await queue.claim("w")
        assert claim is not None and claim.id == job.id


async def test_settling_with_a_claim_from_another_handle_is_claim_lost(
    store: Store, clock: MockClock
) -> None:
    async with taquba.open_queue(store, "h", clock=clock, **FAST) as queue:
        await queue.enqueue("w", b"x")
        old = await queue.claim("w")
        assert old is not None
    async with taquba.open_queue(store, "h", clock=clock, **FAST) as queue:
        with pytest.raises(ClaimLost):
            await queue.ack(old)
        fresh = await queue.claim("w")
        assert fresh is not None
        await queue.ack(fresh)


async def test_closed_queue_refuses_work(store: Store) -> None:
    async with taquba.open_queue(store, "c", **FAST) as queue:
        pass
    with pytest.raises(taquba.QueueClosed):
        await queue.enqueue("w", b"x")


async def test_body_exceptions_propagate_unwrapped(store: Store) -> None:
    with pytest.raises(KeyError):
        async with taquba.open_queue(store, "e", **FAST):
            raise KeyError("mine")


async def test_kv_expect_makes_enqueue_a_compare_and_set(queue: taquba.Queue) -> None:
    """Two racing enqueuers guarded by the same watermark: exactly one wins."""
    outcomes: list[str] = []

    async def fire(i: int) -> None:
        try:
            await queue.enqueue(
                "cron", b"%d" % i, kv_expect={b"mark": None}, kv_writes={b"mark": b"%d" % i}
            )
            outcomes.append("created")
        except taquba.KvConflict:
            outcomes.append("conflict")

    async with trio.open_nursery() as nursery:
        for i in range(8):
            nursery.start_soon(fire, i)
    assert sorted(outcomes) == ["conflict"] * 7 + ["created"]
    assert (await queue.stats("cron")).pending == 1
    mark = await queue.kv_get(b"mark")
    with pytest.raises(taquba.KvConflict):
        await queue.enqueue_batch(
            [EnqueueRequest(queue_name="cron", payload=b"x")], kv_expect={b"mark": b"other"}
        )
    results = await queue.enqueue_batch(
        [EnqueueRequest(queue_name="cron", payload=b"x")],
        kv_expect={b"mark": mark},
        kv_writes={b"mark": b"next"},
    )
    assert results[0].created
    assert await queue.kv_get(b"mark") == b"next"


async def test_nack_honours_a_longer_retry_after(queue: taquba.Queue, clock: MockClock) -> None:
    job = await queue.enqueue("w", b"x")
    claim = await queue.claim("w")
    assert claim is not None
    await queue.nack(claim, "429", retry_after=45)
    record = await queue.get_job(job.id)
    assert record is not None
    assert record.run_at == clock.now_ms() + 45_000
    clock.advance(45)
    await queue.promote_scheduled_now()
    again = await queue.claim("w")
    assert again is not None
    await queue.nack(again, "503", retry_after=0.5)  # shorter than the 2 s backoff: backoff wins
    record = await queue.get_job(job.id)
    assert record is not None
    assert record.run_at == clock.now_ms() + 2_000


async def test_nack_writes_kv_either_way_and_effects_only_when_dead(
    store: Store, clock: MockClock
) -> None:
    config = QueueConfig(max_attempts=2, retry_backoff_base=0)
    async with taquba.open_queue(store, "nk", config=config, clock=clock, **FAST) as queue:
        await queue.enqueue("w", b"x")
        follow_up = Effects(enqueues=[EnqueueRequest(queue_name="alerts", payload=b"it died")])
        first = await queue.claim("w")
        assert first is not None
        retried = await queue.nack(
            first, "once", kv_writes={b"attempt": b"1"}, effects_if_dead=follow_up
        )
        assert not retried.dead
        assert retried.enqueued == []
        assert await queue.kv_get(b"attempt") == b"1"
        assert await queue.stats("alerts") == taquba.QueueStats("alerts")
        second = await queue.claim("w")
        assert second is not None
        died = await queue.nack(
            second, "twice", kv_writes={b"attempt": b"2"}, effects_if_dead=follow_up
        )
        assert died.dead
        assert [r.created for r in died.enqueued] == [True]
        assert await queue.kv_get(b"attempt") == b"2"
        assert (await queue.stats("alerts")).pending == 1


async def test_dead_letter_applies_effects_atomically(
    queue: taquba.Queue, clock: MockClock
) -> None:
    await queue.enqueue("w", b"x")
    claim = await queue.claim("w")
    assert claim is not None
    results = await queue.dead_letter(
        claim,
        "poison",
        effects=Effects(
            kv_writes={b"why": b"poison"},
            enqueues=[EnqueueRequest(queue_name="audit", payload=b"a")],
        ),
    )
    assert [r.created for r in results] == [True]
    assert await queue.kv_get(b"why") == b"poison"
    # A lost claim applies nothing.
    await queue.enqueue("w", b"y")
    stale = await queue.claim("w")
    assert stale is not None
    clock.advance(11)
    await queue.reap_now()
    with pytest.raises(ClaimLost):
        await queue.dead_letter(stale, "late", effects=Effects(kv_writes={b"late": b"1"}))
    assert await queue.kv_get(b"late") is None


async def test_retry_later_from_a_handler_delays_the_retry() -> None:
    from taquba.testing import drain, open_test_queue

    clock = taquba.MockClock()
    config = taquba.QueueConfig(retry_backoff_base=1)
    async with open_test_queue(
        clock=clock, config=config, reaper_interval=3600, scheduler_interval=3600
    ) as queue:
        job = await queue.enqueue("w", b"x")

        async def handler(job: taquba.JobRecord, lease: taquba.LeaseHandle) -> None:
            raise taquba.RetryLater("rate limited", retry_after=90)

        assert await drain(queue, "w", handler) == 1
        record = await queue.get_job(job.id)
        assert record is not None
        assert record.status is taquba.JobStatus.SCHEDULED
        assert record.last_error == "rate limited"
        assert record.run_at == clock.now_ms() + 90_000


async def test_batch_kv_writes_apply_even_when_every_job_hits_a_dedup_key(
    queue: taquba.Queue,
) -> None:
    """taquba-cron relies on this to advance its watermark past an already-enqueued firing."""
    await queue.enqueue("w", b"first", dedup_key="fire-1")
    results = await queue.enqueue_batch(
        [EnqueueRequest(queue_name="w", payload=b"again", dedup_key="fire-1")],
        kv_expect={b"mark": None},
        kv_writes={b"mark": b"fire-1"},
    )
    assert [r.created for r in results] == [False]
    assert await queue.kv_get(b"mark") == b"fire-1"


def test_public_validators() -> None:
    assert taquba.validate_queue_name("emails") == "emails"
    assert taquba.validate_job_id("order-1") == "order-1"
    with pytest.raises(InvalidQueueName):
        taquba.validate_queue_name("")
    assert taquba.MAX_PRIORITY == 2**32 - 1


async def test_permanent_failure_effects_commit_with_the_dead_letter() -> None:
    from taquba.testing import drain, open_test_queue

    async with open_test_queue(reaper_interval=3600, scheduler_interval=3600) as queue:
        await queue.enqueue("w", b"x")

        async def handler(job: taquba.JobRecord, lease: taquba.LeaseHandle) -> None:
            raise taquba.PermanentFailure("bad", effects=Effects(kv_writes={b"why": b"bad"}))

        assert await drain(queue, "w", handler) == 1
        (dead,) = await queue.dead_jobs("w")
        assert dead.last_error == "bad"
        assert await queue.kv_get(b"why") == b"bad"


async def test_an_idle_worker_ends_with_a_bare_fenced_error(tmp_path) -> None:
    """The worker's internal nurseries must not wrap the queue's failure in exception groups."""
    store = Store.from_url(str(tmp_path / "s"))

    async def handler(job: taquba.JobRecord, lease: taquba.LeaseHandle) -> None:
        return None

    async def second_writer() -> None:
        await trio.sleep(0.2)
        async with taquba.open_queue(store, "f", flush_interval=0.005):
            await trio.sleep_forever()

    async with (
        taquba.open_queue(store, "f", flush_interval=0.005) as first,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(second_writer)
        with pytest.raises(taquba.Fenced), trio.fail_after(30):
            await taquba.Worker(first, "w", handler, poll_interval=0.05).serve()
        nursery.cancel_scope.cancel()


async def test_a_full_claim_passes_a_wakeup_on_so_a_backlog_wakes_every_waiter(
    queue: taquba.Queue,
) -> None:
    """Jobs inserted before anyone waits leave one permit; claims pass wakeups along."""
    for i in range(5):
        await queue.enqueue("w", b"%d" % i)
    claimed: list[str] = []

    async def waiter() -> None:
        await queue.wait_for_jobs_on("w")
        claim = await queue.claim("w")
        assert claim is not None
        claimed.append(claim.id)

    with trio.move_on_after(5):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(waiter)
    assert len(claimed) == 3
