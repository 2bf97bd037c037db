"""The settlement guard: one settlement per claim, and an ack that deletes without reading.

An ack of a queue that keeps no done records deletes the claimed record without reading it
first. What makes that safe is the in-memory settling mark on the claim's lease (a second
settlement of the same claim is refused before it stages anything) and, after a settlement
whose outcome is unknown, a read of the record by the next one. These tests break each of
those on purpose: without the mark or without the read, a job would be counted done twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

import taquba
from taquba import ClaimLost, MockClock, QueueConfig, StorageUnavailable, Store
from taquba.testing import Fault, inject_faults

Q = "q"
CONFIG = QueueConfig(lease_duration=10, retry_backoff_base=0)  # keeps no done records
QUIET = {"reaper_interval": 10_000.0, "scheduler_interval": 10_000.0}


@asynccontextmanager
async def open_quiet(clock: MockClock) -> AsyncIterator[taquba.Queue]:
    async with taquba.open_queue(
        Store.memory(), "settle", config=CONFIG, clock=clock, **QUIET
    ) as q:
        yield q


async def counted(queue: taquba.Queue) -> tuple[int, int, int, int]:
    """(pending, claimed, done, dead) as the counters say; `done` counts acks."""
    stats = await queue.stats(Q)
    assert stats.scheduled == 0
    return stats.pending, stats.claimed, stats.done, stats.dead


async def claim_one(queue: taquba.Queue) -> taquba.Claim:
    await queue.enqueue(Q, b"x", job_id="j1")
    claim = await queue.claim(Q)
    assert claim is not None
    return claim


async def test_a_plain_ack_reads_nothing() -> None:
    """The drain's cost: an ack is writes only (the claimed record and the index entry)."""
    async with open_quiet(MockClock()) as queue:
        claim = await claim_one(queue)
        with inject_faults() as faults:
            faults.on_read(Fault.slow(0.0))  # records every read, delays none
            await queue.ack(claim)
        assert faults.injected == []
        assert await counted(queue) == (0, 0, 1, 0)
        assert await queue.get_job("j1") is None


@pytest.mark.parametrize("second", ["ack", "nack", "dead_letter"])
async def test_concurrent_settlements_of_one_claim_settle_it_once(second: str) -> None:
    async with open_quiet(MockClock()) as queue:
        for i in range(20):
            await queue.enqueue(Q, b"x", job_id=f"j{i:02}")
        claims = await queue.claim_batch(Q, 20)
        assert len(claims) == 20
        won: list[str] = []
        lost: list[str] = []

        async def settle(name: str, claim: taquba.Claim) -> None:
            try:
                if name == "ack":
                    await queue.ack(claim)
                elif name == "nack":
                    await queue.nack(claim, "again")
                else:
                    await queue.dead_letter(claim, "no")
            except ClaimLost:
                lost.append(name)
            else:
                won.append(name)

        async with trio.open_nursery() as nursery:
            for claim in claims:
                nursery.start_soon(settle, "ack", claim)
                nursery.start_soon(settle, second, claim)
        assert len(won) == 20 and len(lost) == 20
        pending, claimed, done, dead = await counted(queue)
        assert claimed == 0
        assert done == won.count("ack")
        assert pending == won.count("nack") and dead == won.count("dead_letter")
        assert pending + done + dead == 20


@pytest.mark.parametrize("fault", ["unknown", "lost"])
async def test_an_ack_after_an_unknown_outcome_reads_before_it_deletes(fault: str) -> None:
    """``unknown``: the first ack was applied; ``lost``: it was not. Either way, done once."""
    async with open_quiet(MockClock()) as queue:
        claim = await claim_one(queue)
        with inject_faults() as faults:
            faults.on_write(Fault.unknown() if fault == "unknown" else Fault.lost(), times=1)
            with pytest.raises(StorageUnavailable):
                await queue.ack(claim)
        assert len(faults.injected) == 1
        if fault == "unknown":
            with pytest.raises(ClaimLost):
                await queue.ack(claim)  # a blind delete here would count the job twice
        else:
            await queue.ack(claim)  # nothing was written: the retry settles it
        assert await counted(queue) == (0, 0, 1, 0)
        with pytest.raises(ClaimLost):
            await queue.ack(claim)


async def test_a_rejected_settlement_lets_the_next_one_through() -> None:
    """A settlement refused before its commit wrote nothing and leaves no mark behind."""
    async with open_quiet(MockClock()) as queue:
        claim = await claim_one(queue)
        await queue.enqueue(Q, b"y", job_id="j2")
        with pytest.raises(taquba.UsageError):
            await queue.nack(claim, "x", retry_after=-1)
        taken = taquba.EnqueueRequest(queue_name=Q, payload=b"z", job_id="j2")
        with pytest.raises(taquba.DuplicateJobId):
            await queue.ack_with(claim, taquba.Effects(enqueues=[taken]))  # dropped from its batch
        await queue.ack(claim)
        assert await counted(queue) == (1, 0, 1, 0)
