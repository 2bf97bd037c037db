"""Durability on demand: durable writes request WAL flushes instead of waiting for the timer.

Every test opens its database with a one-minute flush timer, so a durable write that returns
at all returned because a requested flush made it durable (or, where a test breaks the
requested flushes, because the test shortened the timer). The `trio.fail_after` bounds only
keep a broken build from hanging; nothing here measures time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

import taquba
from taquba import Store
from taquba._database import Database
from taquba._walflush import DEFAULT_LINGER, WalFlusher, default_linger
from taquba.testing import Fault, inject_faults, open_test_queue

HANG = 30  # seconds: far below the one-minute timer, far above any real flush


def flusher_of(db: Database) -> WalFlusher:
    assert db.flusher is not None
    return db.flusher


async def test_a_lone_durable_write_requests_its_flush(store: Store) -> None:
    db = await Database.open(store, "lone", flush_interval=60.0)
    try:
        with trio.fail_after(HANG):
            await db.put(b"k", b"v")
            await db.delete(b"gone")
            txn = await db.begin()
            await txn.put(b"t", b"x")
            await txn.commit(durable=True)
        assert flusher_of(db).flushes == 3
        # A write that does not wait for durability requests nothing.
        await db.put(b"lazy", b"v", durable=False)
        assert flusher_of(db).flushes == 3
    finally:
        await db.close()
    reopened = await Database.open(store, "lone")
    try:
        assert await reopened.get(b"k") == b"v"
        assert await reopened.get(b"t") == b"x"
    finally:
        await reopened.close()


class GatedFlushes:
    """The real database, whose requested WAL flushes wait for the test to open a gate."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self.gate = trio.Event()
        self.reached = trio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    async def flush_with_options(self, options: Any) -> None:
        self.reached.set()
        await self.gate.wait()
        await self._db.flush_with_options(options)


async def until(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 - the state lives in binding calls, not events
        await trio.sleep(0.001)


async def test_writes_applied_during_a_flush_share_the_next_one(memory_store: Store) -> None:
    db = await Database.open(memory_store, "shared", flush_interval=60.0)
    flusher = flusher_of(db)
    gated = GatedFlushes(flusher._db)  # pyright: ignore[reportPrivateUsage]
    flusher._db = gated  # pyright: ignore[reportPrivateUsage]
    done: list[int] = []

    async def put(i: int) -> None:
        await db.put(b"k%d" % i, b"v")
        done.append(i)

    try:
        with trio.fail_after(HANG):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(put, 0)
                await gated.reached.wait()  # the first write's flush is held
                for i in range(1, 64):
                    nursery.start_soon(put, i)
                await until(lambda: flusher._applied == 64)  # pyright: ignore[reportPrivateUsage]
                await trio.testing.wait_all_tasks_blocked()
                assert done == []  # all applied; none durable while the one flush is held
                assert flusher.flushes == 0
                gated.gate.set()
        # The held flush covered the first write only; the 63 applied while it was in flight
        # shared one more.
        assert flusher.flushes == 2
        assert done[0] == 0 and sorted(done) == list(range(64))
    finally:
        await db.close()


async def test_a_slow_flush_stalls_its_writers_without_losing_them(memory_store: Store) -> None:
    db = await Database.open(memory_store, "slow", flush_interval=60.0)
    try:
        with inject_faults() as faults, trio.fail_after(HANG):
            faults.on_flush(Fault.slow(0.05), times=None)
            async with trio.open_nursery() as nursery:
                for i in range(8):
                    nursery.start_soon(db.put, b"k%d" % i, b"v")
        assert faults.injected and all(f.site == "flush" for f in faults.injected)
        assert len(faults.injected) == flusher_of(db).flushes
        for i in range(8):
            assert await db.get(b"k%d" % i) == b"v"
    finally:
        await db.close()


async def test_a_failing_flush_falls_back_to_the_timer(
    memory_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    db = await Database.open(memory_store, "failing", flush_interval=0.01)
    try:
        with (
            inject_faults() as faults,
            caplog.at_level(logging.WARNING, logger="taquba.storage"),
            trio.fail_after(HANG),
        ):
            faults.on_flush(Fault.unavailable(), times=None)
            await db.put(b"k", b"v")  # durable by the timer's flush
            await db.put(b"k2", b"v")
        assert flusher_of(db).flushes == 0
        assert "requested WAL flush failed" in caplog.text
        assert await db.get(b"k") == b"v"
    finally:
        await db.close()


async def test_a_queue_on_a_slow_timer_answers_with_requested_flushes(memory_store: Store) -> None:
    async with open_test_queue(memory_store, flush_interval=60.0) as queue:
        with trio.fail_after(HANG):
            job = await queue.enqueue("q", b"x")
            claim = await queue.claim("q")
            assert claim is not None and claim.id == job.id
            await queue.ack(claim)
        assert (await queue.stats("q")).done == 1


async def test_flush_linger_defaults_by_store_kind_and_is_checked(memory_store: Store) -> None:
    assert DEFAULT_LINGER == {"memory": 0.0, "file": 0.0, "s3": 0.01}
    assert default_linger("s3") == 0.01
    async with open_test_queue(memory_store, flush_linger=0.002) as queue:
        assert flusher_of(queue._database).linger == 0.002  # pyright: ignore[reportPrivateUsage]
    for bad in (-1, float("nan"), 61.0, "1"):
        with pytest.raises(taquba.InvalidArgument, match="flush_linger"):
            async with open_test_queue(memory_store, flush_linger=bad):  # pyright: ignore[reportArgumentType]
                pass


def test_a_flush_fault_must_be_one_a_flush_can_have() -> None:
    with inject_faults() as faults, pytest.raises(taquba.UsageError, match="flush cannot"):
        faults.on_flush(Fault.lost())
