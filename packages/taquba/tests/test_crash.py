"""Crash tests: a real queue process (``crash_child.py``) is killed with SIGKILL, then reopened.

The child is a fresh interpreter (`taquba.testing.open_child`), never a fork of the test
process. It prints a line only after the call it reports returned (i.e. after durability), so
whatever the test read from it is a promise the store must keep after the kill.
"""

from __future__ import annotations

import os
import random
import sys
from collections import Counter
from pathlib import Path

import pytest
import trio

import taquba
from taquba import Effects, EnqueueRequest, JobRecord, JobStatus, LeaseHandle, QueueConfig
from taquba.testing import Child, open_child

CHILD = Path(__file__).with_name("crash_child.py")
FAST = {"flush_interval": 0.01, "reaper_interval": 3600.0, "scheduler_interval": 3600.0}
# Must match crash_child.py.
HOLD_CONCURRENCY = 8
HOLD_CONFIG = QueueConfig(lease_duration=600, retry_backoff_base=0)
STORM_CONFIG = QueueConfig(lease_duration=600, retry_backoff_base=0, keep_done=86_400)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")


def reported(child: Child, tag: str) -> list[str]:
    """The job ids of the child's ``<tag> <id>`` lines."""
    return [words[0] for words in child.tagged(tag)]


async def kv_keys(queue: taquba.Queue, prefix: bytes) -> dict[bytes, bytes]:
    entries: dict[bytes, bytes] = {}
    cursor = None
    while True:
        page = await queue.kv_scan(prefix, cursor=cursor, limit=500)
        entries.update(page.entries)
        if page.next_cursor is None:
            return entries
        cursor = page.next_cursor


async def all_jobs(queue: taquba.Queue, name: str, status: JobStatus) -> list[JobRecord]:
    page = await queue.list_jobs(name, status, limit=100_000)
    assert page.next_cursor is None
    return page.jobs


async def serve_until(queue: taquba.Queue, handler: taquba.Handler, done: int) -> None:
    """Run a worker on queue ``w`` until its stats report ``done`` acks (then cancel it)."""
    async with trio.open_nursery() as nursery:
        await nursery.start(taquba.Worker(queue, "w", handler, poll_interval=0.02).serve)
        while (await queue.stats("w")).done < done:  # noqa: ASYNC110 - polling storage
            await trio.sleep(0.02)
        nursery.cancel_scope.cancel()


async def test_sigkill_with_claims_held_recovers_every_job_and_acks_each_once(
    tmp_path: Path,
) -> None:
    """A worker process dies holding claims: every job is redelivered, and acked exactly once.

    24 jobs; every third is "slow" (its handler sleeps forever). With 8 slots the child ends
    up holding the 8 slow jobs, having acked the 14 fast jobs claimed before them (each ack
    writes a KV marker in the same transaction), with the last 2 fast jobs never claimed. The
    test waits for the 8 HOLD lines, kills the child, and reopens the store.
    """
    store_dir = tmp_path / "store"
    log = tmp_path / "executions.log"
    log.touch()
    payloads = [b"slow-%d" % i if i % 3 == 0 else b"fast-%d" % i for i in range(24)]
    async with taquba.open_queue(store_dir, "crash", config=HOLD_CONFIG, **FAST) as queue:
        results = await queue.enqueue_batch(
            [EnqueueRequest(queue_name="w", payload=p) for p in payloads]
        )
    ids = [r.id for r in results]
    slow = {i for i, p in zip(ids, payloads, strict=True) if p.startswith(b"slow")}
    fast = [i for i in ids if i not in slow]

    with trio.fail_after(60):
        async with open_child(CHILD, "hold", store_dir, log, cwd=tmp_path) as child:
            await child.expect("READY")
            await child.read_until(lambda: len(child.tagged("HOLD")) >= HOLD_CONCURRENCY)
            await child.kill()
    assert set(reported(child, "HOLD")) == slow

    executions = Counter(line.split()[0] for line in log.read_text().splitlines())
    assert set(executions) == set(ids[:-2])  # the last two fast jobs were never claimed

    async with taquba.open_queue(store_dir, "crash", config=HOLD_CONFIG, **FAST) as queue:
        # Open-time recovery requeued the 8 abandoned claims (one attempt consumed each).
        stats = await queue.stats("w")
        assert stats == taquba.QueueStats("w", pending=10, done=14)
        pending = {j.id: j for j in await all_jobs(queue, "w", JobStatus.PENDING)}
        assert set(pending) == slow | set(fast[-2:])
        # Claims commit without waiting for durability: a claim the kill caught before the
        # next WAL flush is simply lost (attempts 0), which is as safe as a recovered one.
        assert all(pending[i].attempts in (0, 1) and pending[i].claimed_at is None for i in slow)
        assert sum(pending[i].attempts for i in slow) >= len(slow) - 2
        assert await all_jobs(queue, "w", JobStatus.CLAIMED) == []
        # Each child ack committed with its marker, and only those.
        markers = await kv_keys(queue, b"ack/")
        assert set(markers) == {f"ack/{i}/1".encode() for i in fast[:-2]}

        log_fd = os.open(log, os.O_WRONLY | os.O_APPEND)

        async def handler(job: JobRecord, lease: LeaseHandle) -> Effects:
            os.write(log_fd, f"{job.id} parent\n".encode())
            return Effects(kv_writes={f"ack/{job.id}/{job.attempts}".encode(): b"parent"})

        with trio.fail_after(30):
            await serve_until(queue, handler, done=24)
        os.close(log_fd)
        assert await queue.stats("w") == taquba.QueueStats("w", done=24)
        markers = await kv_keys(queue, b"ack/")

    # Acked exactly once: one marker per job, written by the delivery that won.
    acked = Counter(key.decode().split("/")[1] for key in markers)
    assert acked == dict.fromkeys(ids, 1)
    assert all(markers[f"ack/{i}/{pending[i].attempts + 1}".encode()] == b"parent" for i in slow)
    # At-least-once: the slow jobs ran twice (child, then parent); the acked ones never re-ran.
    lines = log.read_text().splitlines()
    executions = Counter(line.split()[0] for line in lines)
    assert all(executions[i] == 2 for i in slow)
    assert all(executions[i] == 1 for i in fast)
    assert {line.split()[0] for line in lines if line.endswith("parent")} == slow | set(fast[-2:])


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_sigkill_during_a_storm_of_durable_commits_loses_nothing_acknowledged(
    tmp_path: Path, seed: int
) -> None:
    """Producers and workers commit concurrently; SIGKILL lands at a random moment.

    Every enqueue the child reported must exist after reopen (pending or done: a claim in
    flight is recovered to pending), and so must every job a worker ran (claims see only
    durable enqueues); every reported ack must be a done record with its KV marker, and no
    job whose ack returned is delivered again.
    """
    rng = random.Random(seed)
    store_dir = tmp_path / "store"
    want_enqueued = rng.randrange(40, 200)
    want_acked = rng.randrange(5, 40)
    with trio.fail_after(60):
        async with open_child(CHILD, "storm", store_dir, cwd=tmp_path) as child:
            await child.expect("READY")
            await child.read_until(
                lambda: (
                    len(child.tagged("ENQ")) >= want_enqueued
                    and len(child.tagged("ACK")) >= want_acked
                )
            )
            with trio.move_on_after(rng.uniform(0, 0.05)):
                while await child.next_line() is not None:
                    pass
            await child.kill()
    enqueued = reported(child, "ENQ")
    acked = reported(child, "ACK")
    ran = reported(child, "RUN")
    assert len(set(enqueued)) == len(enqueued)
    assert len(set(acked)) == len(acked)
    # An ACK may be reported for a job whose ENQ never was: a worker can claim and ack a job
    # once its enqueue is durable, before its producer's task has run again to report it, and
    # the kill can land between the two reports. Claims see only durable enqueues, so every
    # job a worker ran survives the kill (the checks below: RUN implies pending or done).

    redelivered: list[str] = []

    async def handler(job: JobRecord, lease: LeaseHandle) -> Effects:
        redelivered.append(job.id)
        return Effects(kv_writes={f"ack/{job.id}".encode(): b"parent"})

    async with taquba.open_queue(store_dir, "storm", config=STORM_CONFIG, **FAST) as queue:
        assert await all_jobs(queue, "w", JobStatus.CLAIMED) == []
        pending = {j.id for j in await all_jobs(queue, "w", JobStatus.PENDING)}
        done = {j.id for j in await all_jobs(queue, "w", JobStatus.DONE)}
        assert not pending & done
        missing = set(enqueued) - pending - done
        assert not missing, f"{len(missing)} acknowledged enqueues lost after SIGKILL"
        vanished = set(ran) - pending - done
        assert not vanished, f"{len(vanished)} jobs a worker ran are gone after SIGKILL"
        assert set(acked) <= done, "an acknowledged ack was lost"
        markers = await kv_keys(queue, b"ack/")
        assert {key.decode()[4:] for key in markers} == done  # marker iff done, atomically
        stats = await queue.stats("w")
        assert stats == taquba.QueueStats("w", pending=len(pending), done=len(done))

        with trio.fail_after(30):
            await serve_until(queue, handler, done=len(pending) + len(done))
        assert set(redelivered) == pending
        assert not set(redelivered) & set(acked), "a job whose ack returned was redelivered"
        assert len(redelivered) == len(set(redelivered))
        assert await queue.stats("w") == taquba.QueueStats("w", done=len(pending) + len(done))
