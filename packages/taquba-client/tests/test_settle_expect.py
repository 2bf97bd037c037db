"""``Effects.kv_expect`` over HTTP: the client, `RemoteQueue` and the remote `Worker`.

A settlement whose KV precondition fails writes nothing and the server keeps the claim, so
the same claim can be settled again; a worker retries the job, as the core's `Worker` does.
"""

from __future__ import annotations

import pytest
import trio

import taquba
import taquba_client as tc
from client_support import ServerHandle
from taquba_client.remote import open_remote_queue


async def test_a_failed_expectation_writes_nothing_and_keeps_the_claim(
    server: ServerHandle,
) -> None:
    async with tc.AsyncClient(server.url) as client:
        await client.kv_put(b"gate", b"closed")
        job = await client.enqueue("q", b"x")
        [claim] = await client.claim_batch("q", 1)
        effects = tc.Effects(
            enqueues=[tc.EnqueueRequest(queue_name="next", payload=b"n", job_id="n-1")],
            kv_writes={b"out": b"1"},
            kv_expect={b"gate": b"open"},
        )
        with pytest.raises(tc.KvConflict) as info:
            await client.ack(claim, effects)
        assert info.value.status == 409
        assert await client.kv_get(b"out") is None
        with pytest.raises(tc.JobNotFound):
            await client.get_job("n-1")
        assert (await client.get_job(job.id)).status is tc.JobStatus.CLAIMED
        with pytest.raises(tc.KvConflict):
            await client.dead_letter(claim, "no", effects=effects)
        results = await client.ack(
            claim, tc.Effects(kv_writes={b"out": b"1"}, kv_expect={b"gate": b"closed"})
        )
        assert results == []
        assert await client.kv_get(b"out") == b"1"
        assert (await client.stats("q")).done == 1


async def test_remote_queue_keeps_a_claim_whose_settlement_conflicted(
    server: ServerHandle,
) -> None:
    async with open_remote_queue(server.url) as remote:
        await remote.enqueue("r", b"x")
        [claim] = await remote.claim_batch("r", 1)
        guarded = taquba.Effects(kv_writes={b"owner": b"me"}, kv_expect={b"owner": b"you"})
        with pytest.raises(taquba.KvConflict):
            await remote.ack_with(claim, guarded)
        assert await remote.kv_get(b"owner") is None
        outcome = await remote.nack(claim, "try again")  # still ours to settle
        assert not outcome.dead
        with pytest.raises(taquba.ClaimLost):  # settled now: the claim is gone
            await remote.ack_with(claim, None)


async def test_workers_retry_a_job_whose_effects_conflict(server: ServerHandle) -> None:
    """Both worker loops: the core's `taquba.Worker` on a `RemoteQueue`, and `tc.Worker`."""
    async with tc.AsyncClient(server.url) as client:
        await client.kv_put(b"seen", b"stale")
        first = await client.enqueue("core", b"a")
        second = await client.enqueue("remote", b"b")
        runs: list[tuple[str, int]] = []

        async def remote_handler(job: tc.Job, lease: tc.Lease) -> tc.Effects:
            runs.append((job.queue_name, job.attempts))
            current = await client.kv_get(b"seen")
            if job.attempts == 1:
                await client.kv_put(b"seen", b"moved")
            return tc.Effects(kv_writes={b"seen": b"remote"}, kv_expect={b"seen": current})

        async with open_remote_queue(server.url) as remote:

            async def core_handler(
                job: taquba.JobRecord, lease: taquba.LeaseHandle
            ) -> taquba.Effects:
                runs.append((job.queue_name, job.attempts))
                current = await remote.kv_get(b"seen")
                if job.attempts == 1:
                    await remote.kv_put(b"seen", b"moved")
                return taquba.Effects(kv_writes={b"seen": b"core"}, kv_expect={b"seen": current})

            core = taquba.Worker(remote, "core", core_handler, poll_interval=0.05)
            async with trio.open_nursery() as nursery:
                await nursery.start(core.serve)
                with trio.fail_after(20):
                    done = await remote.wait_for_completion(first.id)
                core.shutdown()
        assert done is not None and done.attempts == 2
        assert await client.kv_get(b"seen") == b"core"

        worker = tc.Worker(client, "remote", remote_handler, concurrency=1, poll_wait=1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.run)
            with trio.fail_after(20):
                finished = await client.wait_for_completion(second.id)
            worker.shutdown()
        assert finished is not None and finished.attempts == 2
        assert "kv_expect" in (finished.last_error or "")
        assert await client.kv_get(b"seen") == b"remote"
        assert runs == [("core", 1), ("core", 2), ("remote", 1), ("remote", 2)]
