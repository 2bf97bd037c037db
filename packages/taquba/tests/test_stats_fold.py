"""The stats fold starts from a floor (`DeltaSeqs`) and still folds every delta.

Folds skip the tombstones of deltas they folded before by scanning from a per-queue floor.
These tests check the property that makes it safe: after any mix of writes, including one
whose transaction is still in flight while a fold runs, a final fold leaves no delta behind,
and the counters equal a recount of the records.
"""

from __future__ import annotations

import dataclasses
import random

import trio

import taquba
from taquba import JobStatus, MockClock, QueueConfig, Store
from taquba import _keys as keys  # pyright: ignore[reportPrivateUsage]
from taquba._adapter import Transaction, run_transaction  # pyright: ignore[reportPrivateUsage]
from taquba._context import Deltas  # pyright: ignore[reportPrivateUsage]

Q = "q"
QUIET = {"reaper_interval": 10_000.0, "scheduler_interval": 10_000.0}


async def deltas_left(queue: taquba.Queue, name: str) -> list[bytes]:
    """The delta keys a transaction sees (writes applied, durable or not, like the fold's)."""
    txn = await queue._database.begin()  # pyright: ignore[reportPrivateUsage]
    try:
        return [key for key, _ in await txn.scan(keys.stats_delta_prefix(name))]
    finally:
        await txn.rollback()


async def recount(queue: taquba.Queue, name: str) -> taquba.QueueStats:
    counts = {
        status: len((await queue.list_jobs(name, status, limit=10_000)).jobs)
        for status in JobStatus
    }
    return taquba.QueueStats(
        name,
        pending=counts[JobStatus.PENDING],
        scheduled=counts[JobStatus.SCHEDULED],
        claimed=counts[JobStatus.CLAIMED],
        done=0,  # not kept: the counter counts acks, checked separately
        dead=counts[JobStatus.DEAD],
    )


async def test_a_delta_in_flight_during_a_fold_is_folded_by_the_next() -> None:
    async with taquba.open_queue(Store.memory(), "f", clock=MockClock(), **QUIET) as queue:
        context = queue._context  # pyright: ignore[reportPrivateUsage]
        for _ in range(5):
            await queue.enqueue(Q, b"x")
        await queue.fold_stats_now()
        floor = context.delta_seqs.floor(Q)
        assert floor is not None and await deltas_left(queue, Q) == []

        staged = trio.Event()
        release = trio.Event()

        async def slow_writer() -> None:
            async def body(txn: Transaction) -> None:
                deltas = Deltas()
                deltas.add(Q, "pending", 7)
                await deltas.stage(txn, context.delta_seqs)  # its number is taken here...
                staged.set()
                await release.wait()  # ...and its commit comes after the fold below

            await run_transaction(queue._database, body, durable=False)  # pyright: ignore[reportPrivateUsage]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_writer)
            await staged.wait()
            for _ in range(3):
                await queue.enqueue(Q, b"y")  # later numbers, committed first
            await queue.fold_stats_now()  # folds those three; must not pass the one in flight
            assert await deltas_left(queue, Q) == []
            release.set()
        assert len(await deltas_left(queue, Q)) == 1
        await queue.fold_stats_now()
        assert await deltas_left(queue, Q) == []
        assert (await queue.stats(Q)).pending == 5 + 3 + 7


async def test_folds_amid_random_work_leave_no_delta_and_keep_counts_exact() -> None:
    rng = random.Random(7)
    clock = MockClock()
    config = QueueConfig(lease_duration=10, retry_backoff_base=0, max_attempts=2)
    async with taquba.open_queue(Store.memory(), "f", config=config, clock=clock, **QUIET) as queue:
        acked = 0
        claims: list[taquba.Claim] = []

        async def step() -> None:
            nonlocal acked
            roll = rng.random()
            if roll < 0.35:
                await queue.enqueue(rng.choice([Q, "other"]), b"x")
            elif roll < 0.6:
                claims.extend(await queue.claim_batch(Q, rng.randint(1, 5)))
            elif roll < 0.8 and claims:
                claim = claims.pop(rng.randrange(len(claims)))
                await queue.ack(claim)
                acked += 1
            elif roll < 0.9 and claims:
                await queue.nack(claims.pop(rng.randrange(len(claims))), "again")
            else:
                await queue.fold_stats_now()

        for _ in range(40):
            async with trio.open_nursery() as nursery:
                for _ in range(rng.randint(1, 12)):  # concurrent: batches, conflicts, folds
                    nursery.start_soon(step)
            await queue.promote_scheduled_now()
        await queue.fold_stats_now()
        for name in (Q, "other"):
            assert await deltas_left(queue, name) == []
            stats = await queue.stats(name)
            expected = await recount(queue, name)
            assert stats == dataclasses.replace(expected, done=stats.done)
        assert (await queue.stats(Q)).done == acked


async def test_the_first_fold_finds_deltas_an_earlier_process_left() -> None:
    store = Store.memory()
    async with taquba.open_queue(store, "f", maintenance=False) as queue:
        for name in ("a", "b", "c"):
            await queue.enqueue(name, b"x")
    async with taquba.open_queue(store, "f", **QUIET) as queue:
        await queue.enqueue("b", b"x")  # this process touched only "b"
        await queue.fold_stats_now()
        for name in ("a", "b", "c"):
            assert await deltas_left(queue, name) == []
        assert [(await queue.stats(n)).pending for n in ("a", "b", "c")] == [1, 2, 1]
