"""Batched writes: group commit of enqueues; reaping and sweeping a page at a time."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

import taquba
from taquba import (
    DuplicateJobId,
    EnqueueRequest,
    EnqueueResult,
    KvConflict,
    QueueClosed,
    Store,
    _adapter,  # pyright: ignore[reportPrivateUsage]
    _batch,  # pyright: ignore[reportPrivateUsage]
    _maintenance,  # pyright: ignore[reportPrivateUsage]
    _recovery,  # pyright: ignore[reportPrivateUsage]
)
from taquba.testing import Fault, inject_faults, open_test_queue


@pytest.fixture
async def queue(memory_store: Store) -> AsyncIterator[taquba.Queue]:
    async with open_test_queue(memory_store) as q:
        yield q


def _count_transactions(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[int]:
    """Count the transactions `module` runs (the real ones run underneath)."""
    counted: list[int] = []
    real = _adapter.run_transaction

    async def counting(*args: Any, **kwargs: Any) -> Any:
        counted.append(1)
        return await real(*args, **kwargs)

    monkeypatch.setattr(module, "run_transaction", counting)
    return counted


@pytest.fixture
def transactions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the group-commit transactions."""
    return _count_transactions(monkeypatch, _batch)


async def _gather(*calls: Any) -> list[Any]:
    """Run the zero-argument async callables concurrently; collect results or exceptions."""
    outcomes: list[Any] = [None] * len(calls)

    async def one(i: int) -> None:
        try:
            outcomes[i] = await calls[i]()
        except taquba.TaqubaError as exc:
            outcomes[i] = exc

    async with trio.open_nursery() as nursery:
        for i in range(len(calls)):
            nursery.start_soon(one, i)
    return outcomes


async def test_concurrent_enqueues_share_transactions(
    queue: taquba.Queue, transactions: list[int]
) -> None:
    results = await _gather(*[lambda i=i: queue.enqueue("q", b"%d" % i) for i in range(100)])
    assert all(isinstance(r, EnqueueResult) and r.created for r in results)
    assert len({r.id for r in results}) == 100
    assert (await queue.stats("q")).pending == 100
    # 100 callers, far fewer commits: every caller that arrives while a batch is being
    # committed joins the next one.
    assert len(transactions) <= 10
    # One stats delta record per transaction, and the fold bookkeeping counts exactly those.
    assert queue._context.unfolded["q"] == len(transactions)  # pyright: ignore[reportPrivateUsage]


async def test_each_request_in_a_batch_gets_its_own_outcome(queue: taquba.Queue) -> None:
    await queue.kv_put(b"guard", b"held")
    taken = await queue.enqueue("q", b"first", job_id="taken")
    outcomes = await _gather(
        lambda: queue.enqueue("q", b"a"),
        lambda: queue.enqueue("q", b"dup id", job_id="taken"),
        lambda: queue.enqueue("q", b"needs absent", kv_expect={b"guard": None}),
        lambda: queue.enqueue("q", b"needs held", kv_expect={b"guard": b"held"}),
        lambda: queue.enqueue("q", b"d1", dedup_key="same"),
        lambda: queue.enqueue("q", b"d2", dedup_key="same"),
        lambda: queue.enqueue("q", b"b", kv_writes={b"written": b"yes"}),
    )
    plain, dup_id, absent, held, d1, d2, with_writes = outcomes
    assert isinstance(plain, EnqueueResult) and plain.created
    assert isinstance(dup_id, DuplicateJobId)
    assert isinstance(absent, KvConflict)
    assert isinstance(held, EnqueueResult) and held.created
    assert isinstance(with_writes, EnqueueResult) and with_writes.created
    # Two requests with one dedup key: exactly one job, and both name it.
    assert isinstance(d1, EnqueueResult) and isinstance(d2, EnqueueResult)
    assert d1.id == d2.id and sorted([d1.created, d2.created]) == [False, True]
    assert await queue.kv_get(b"written") == b"yes"
    stats = await queue.stats("q")
    assert stats.pending == 5  # taken, plain, held, one of d1/d2, with_writes
    job = await queue.get_job(taken.id)
    assert job is not None and job.payload == b"first"


async def test_a_failed_batch_request_writes_nothing(queue: taquba.Queue) -> None:
    await queue.kv_put(b"guard", b"changed")
    outcomes = await _gather(
        lambda: queue.enqueue_batch(
            [
                EnqueueRequest(queue_name="q", payload=b"x"),
                EnqueueRequest(queue_name="q", payload=b"y", job_id="y-id"),
            ],
            kv_writes={b"side": b"effect"},
            kv_expect={b"guard": b"original"},
        ),
        lambda: queue.enqueue("q", b"bystander"),
    )
    assert isinstance(outcomes[0], KvConflict)
    assert isinstance(outcomes[1], EnqueueResult) and outcomes[1].created
    assert await queue.get_job("y-id") is None
    assert await queue.kv_get(b"side") is None
    assert (await queue.stats("q")).pending == 1


async def test_a_cancelled_enqueue_runs_to_its_end(queue: taquba.Queue) -> None:
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(queue.enqueue, "q", b"one", job_id="c1"))
            # In its batch (a cancel before that withdraws it: see the tests below).
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
    # Its outcome is known: it was committed, not left half-done.
    job = await queue.get_job("c1")
    assert job is not None and job.payload == b"one"


async def test_enqueues_on_a_closed_queue_fail_alike(memory_store: Store) -> None:
    async with open_test_queue(memory_store) as queue:
        pass
    outcomes = await _gather(*[lambda: queue.enqueue("q", b"late") for _ in range(5)])
    assert all(isinstance(o, QueueClosed) for o in outcomes)


async def test_a_batch_commits_while_the_one_before_waits_for_its_flush(
    memory_store: Store,
) -> None:
    # A long flush interval holds the first batch in its durability wait; the second must not
    # wait for that flush to be committed (pipelining), though neither returns before it.
    # Durability on demand would end the wait at once: this test waits for the timer.
    async with open_test_queue(memory_store, flush_interval=60.0) as queue:
        queue._database.flusher = None  # pyright: ignore[reportPrivateUsage]
        returned: list[str] = []

        async def enqueue(job_id: str) -> None:
            await queue.enqueue("q", b"x", job_id=job_id)
            returned.append(job_id)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(enqueue, "first")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(enqueue, "second")
            # Without pipelining the second commit would wait for the first one's flush, a
            # minute away; the bound only keeps a broken build from hanging.
            with trio.fail_after(30):
                while await queue.get_job("second") is None:  # noqa: ASYNC110 - polls storage
                    await trio.sleep(0.01)
            assert returned == []  # both still wait for the WAL flush
            await queue._database.flush()  # pyright: ignore[reportPrivateUsage]
        assert sorted(returned) == ["first", "second"]


async def test_expired_claims_are_reaped_a_page_per_transaction(
    memory_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = taquba.MockClock()
    config = taquba.QueueConfig(lease_duration=5, max_attempts=2)
    async with open_test_queue(
        memory_store, clock=clock, config=config, reaper_interval=3600, scheduler_interval=3600
    ) as queue:
        await queue.enqueue_batch(
            [EnqueueRequest(queue_name="q", payload=b"%d" % i) for i in range(600)]
        )
        claims = await queue.claim_batch("q", 600)
        assert len(claims) == 600
        await queue.ack(claims[0])  # settled before expiry: the reaper must leave it alone
        clock.advance(10)
        counted = _count_transactions(monkeypatch, _recovery)
        assert await queue.reap_now() == 599
        assert len(counted) == 3  # 599 expired claims, 256 per page
        monkeypatch.undo()
        stats = await queue.stats("q")
        assert (stats.pending, stats.claimed, stats.done) == (599, 0, 1)
        again = await queue.claim_batch("q", 1000)
        assert len(again) == 599 and all(c.attempts == 2 for c in again)
        with pytest.raises(taquba.ClaimLost):
            await queue.ack(claims[1])  # the first delivery's claim is over


async def test_expired_records_are_swept_a_page_per_transaction(
    memory_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = taquba.MockClock()
    config = taquba.QueueConfig(dead_retention=60, keep_done=60)
    async with open_test_queue(
        memory_store, clock=clock, config=config, reaper_interval=3600, scheduler_interval=3600
    ) as queue:
        await queue.enqueue_batch(
            [EnqueueRequest(queue_name="q", payload=b"%d" % i) for i in range(700)]
        )
        claims = await queue.claim_batch("q", 700)
        async with trio.open_nursery() as nursery:
            for claim in claims[:300]:
                nursery.start_soon(queue.ack, claim)
            for claim in claims[300:]:
                nursery.start_soon(functools.partial(queue.dead_letter, claim, "bad"))
        clock.advance(61)
        counted = _count_transactions(monkeypatch, _maintenance)
        assert await queue.sweep_now() == 700
        assert len(counted) == 4  # 300 done records in 2 pages, 400 dead ones in 2
        monkeypatch.undo()
        stats = await queue.stats("q")
        assert (stats.done, stats.dead, stats.pending, stats.claimed) == (300, 0, 0, 0)
        assert [await queue.get_job(c.id) for c in claims[::37]] == [None] * len(claims[::37])
        assert (await queue.list_jobs("q", taquba.JobStatus.DEAD)).jobs == []


# ------------------------------------------------------------------ cancellation


async def test_a_cancelled_producer_loop_stops_before_staging(queue: taquba.Queue) -> None:
    """A cancelled caller's next enqueue raises `Cancelled` and writes nothing."""
    written: list[int] = []
    with trio.CancelScope() as scope:
        for i in range(100):
            if i == 3:
                scope.cancel()
            await queue.enqueue("q", b"%d" % i, job_id=f"j{i}")
            written.append(i)
    assert scope.cancelled_caught
    assert written == [0, 1, 2]
    assert (await queue.stats("q")).pending == 3
    assert await queue.get_job("j3") is None


async def test_a_producer_loop_under_move_on_after_ends(queue: taquba.Queue) -> None:
    count = 0
    with trio.move_on_after(0.05) as scope:
        while count < 2_000:  # about 10 s of enqueues if cancellation went unseen
            await queue.enqueue("q", b"x")
            count += 1
    assert scope.cancelled_caught
    assert count < 2_000
    # Every enqueue that returned is there; the cancelled one wrote nothing.
    assert (await queue.stats("q")).pending == count


async def test_a_cancelled_request_waiting_for_a_leader_is_withdrawn(queue: taquba.Queue) -> None:
    """A request still queued behind a leader is withdrawn on cancel: nothing of it is written."""
    finished: list[str] = []

    async def enqueue(job_id: str, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await queue.enqueue("q", b"x", job_id=job_id, kv_writes={b"k-" + job_id.encode(): b"v"})
            finished.append(job_id)

    with inject_faults() as faults:
        faults.on_read(Fault.slow(0.2))  # the leader stalls while staging (its id check)
        async with trio.open_nursery() as nursery:
            await nursery.start(enqueue, "leader")
            await trio.testing.wait_all_tasks_blocked()  # the leader sleeps inside its batch
            follower = await nursery.start(enqueue, "follower")
            await trio.testing.wait_all_tasks_blocked()  # the follower waits in the queue
            follower.cancel()
    assert [f.site for f in faults.injected] == ["get"]
    assert finished == ["leader"]
    assert await queue.get_job("follower") is None
    assert await queue.kv_get(b"k-follower") is None
    assert await queue.kv_get(b"k-leader") == b"v"
    assert (await queue.stats("q")).pending == 1


async def test_a_cancelled_worker_still_records_its_ack(queue: taquba.Queue) -> None:
    """Settlements stay shielded: an ack submitted under a cancelled scope is recorded."""
    await queue.enqueue("q", b"x")
    claim = await queue.claim("q")
    assert claim is not None
    with trio.CancelScope() as scope:
        scope.cancel()
        await queue.ack(claim)
    assert (await queue.stats("q")).done == 1


async def test_an_enqueue_cancelled_before_it_starts_writes_nothing(queue: taquba.Queue) -> None:
    # A cancelled caller looping on enqueue must meet a cancellation point (it used to loop
    # forever: every enqueue ran shielded to its end and none raised Cancelled).
    with trio.CancelScope() as scope:
        scope.cancel()
        for n in range(3):
            await queue.enqueue("q", b"late", job_id=f"late{n}")
    assert scope.cancelled_caught
    assert await queue.get_job("late0") is None
