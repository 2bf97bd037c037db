"""Remote workers of a server whose queue offloads payloads (``payload_offload_threshold``).

The server reads offloaded payloads back before it answers, so a client sees whole payloads
everywhere (`taquba_client.Job.payload`, claims, listings, dead letters) and never where they
live; `taquba_client.remote.RemoteQueue` hands `taquba.Worker` handlers whole payloads too.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator

import pytest
import trio

import taquba
import taquba_client as tc
from client_support import FAST, ServerHandle
from taquba_client.remote import open_remote_queue

pytestmark = pytest.mark.skipif(
    "payload_offload_threshold" not in {f.name for f in dataclasses.fields(taquba.QueueConfig)},
    reason="payload offload needs taquba >= 0.10",
)

THRESHOLD = 64
BIG = bytes(range(256)) * 40
HANG = 20  # seconds: bounds that only catch hangs


@pytest.fixture
async def queue() -> AsyncIterator[taquba.Queue]:
    """The conftest's queue, with offload on for every queue name."""
    config = dataclasses.replace(FAST, payload_offload_threshold=THRESHOLD, keep_done=math.inf)
    async with taquba.open_queue(
        taquba.Store.memory(), config=config, reaper_interval=0.1, flush_interval=0.01
    ) as q:
        yield q


async def assert_offloaded(queue: taquba.Queue, job_id: str) -> None:
    record = await queue.get_job(job_id)
    assert record is not None and record.payload_ref is not None


async def test_a_client_worker_gets_whole_payloads_and_requeues_a_dead_one(
    server: ServerHandle,
) -> None:
    seen: list[tuple[bytes, int]] = []

    async def handler(job: tc.Job, lease: tc.Lease) -> tc.Effects | None:
        seen.append((job.payload, job.attempts))
        if job.payload.startswith(b"dead"):
            raise tc.PermanentFailure("no")
        if job.attempts == 1:
            raise tc.RetryLater("again", retry_after=0)
        return tc.Effects(enqueues=[tc.EnqueueRequest(queue_name="next", payload=BIG[::-1])])

    async with tc.AsyncClient(server.url) as client:
        ok = (await client.enqueue("t", BIG)).id
        dead = (await client.enqueue("t", b"dead" + BIG)).id
        await assert_offloaded(server.queue, ok)
        assert (await client.get_job(ok)).payload == BIG
        page = await client.list_jobs("t", "pending")
        assert {j.id: j.payload for j in page.jobs} == {ok: BIG, dead: b"dead" + BIG}
        worker = tc.Worker(client, "t", handler, concurrency=2, poll_wait=1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.run)
            with trio.fail_after(HANG):
                done = await client.wait_for_completion(ok)
                died = await client.wait_for_completion(dead)
            worker.shutdown()
        assert done is not None and done.payload == BIG  # the kept done record
        assert died is not None and died.status is tc.JobStatus.DEAD
        assert sorted(seen) == sorted([(BIG, 1), (BIG, 2), (b"dead" + BIG, 1)])
        [dead_job] = await client.dead_jobs("t")
        assert dead_job.payload == b"dead" + BIG
        await client.requeue(dead)
        [claim] = await client.claim_batch("t", 1, wait=5)
        assert (claim.job.id, claim.job.payload) == (dead, b"dead" + BIG)
        await client.ack(claim)
        [follow_up] = (await client.list_jobs("next", "pending")).jobs
        assert follow_up.payload == BIG[::-1]
        await assert_offloaded(server.queue, follow_up.id)


async def test_a_taquba_worker_over_a_remote_queue_gets_whole_payloads(
    server: ServerHandle,
) -> None:
    seen: list[bytes] = []

    async def handler(job: taquba.JobRecord, lease: taquba.LeaseHandle) -> taquba.Effects:
        seen.append(job.payload)
        return taquba.Effects(kv_writes={b"len/" + job.id.encode(): str(len(job.payload)).encode()})

    async with open_remote_queue(server.url) as remote:
        ids = [(await remote.enqueue("jobs", BIG + bytes([i]))).id for i in range(3)]
        for job_id in ids:
            await assert_offloaded(server.queue, job_id)
        record = await remote.get_job(ids[0])
        assert record is not None and record.payload == BIG + b"\x00"
        assert record.payload_ref is None  # the wire does not say where a payload lives
        worker = taquba.Worker(remote, "jobs", handler, concurrency=3, poll_interval=0.2)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            with trio.fail_after(HANG):
                jobs = [await remote.wait_for_completion(i) for i in ids]
            worker.shutdown()
        assert [j.payload if j else None for j in jobs] == [BIG + bytes([i]) for i in range(3)]
        assert sorted(seen) == [BIG + bytes([i]) for i in range(3)]
        assert await remote.kv_get(b"len/" + ids[0].encode()) == str(len(BIG) + 1).encode()
