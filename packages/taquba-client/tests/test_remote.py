"""RemoteQueue: taquba.Worker and friends over a server, through taquba.QueueLike."""

from __future__ import annotations

import pytest
import trio

import taquba
from client_support import ServerHandle, start_server
from taquba_client.remote import RemoteQueue, open_remote_queue


async def test_remote_queue_is_queue_like(server: ServerHandle) -> None:
    async with open_remote_queue(server.url) as remote:
        assert isinstance(remote, taquba.QueueLike)
        assert isinstance(remote.store, taquba.BlobStore)
        assert remote.config("any").lease_duration == 2.0
        assert remote.failure is None
    assert isinstance(remote.failure, taquba.QueueClosed)


async def test_remote_config_carries_the_payload_offload_threshold(
    nursery: trio.Nursery,
) -> None:
    offloading = taquba.QueueConfig(payload_offload_threshold=1024)
    async with taquba.open_queue(taquba.Store.memory(), queues={"big": offloading}) as queue:
        await queue.enqueue("big", b"x")  # /v1/config lists the queues that held a job
        server = await start_server(nursery, queue)
        async with open_remote_queue(server.url) as remote:
            assert remote.config("big").payload_offload_threshold == 1024
            assert remote.config("other").payload_offload_threshold is None
        server.server.shutdown()


async def test_taquba_worker_over_a_remote_queue(server: ServerHandle) -> None:
    seen: list[bytes] = []

    async def handler(job: taquba.JobRecord, lease: taquba.LeaseHandle) -> taquba.Effects:
        lease.ensure_at_least(5)  # the synchronous renew_lease, pushed by the renewer
        assert lease.expires_at is not None
        await trio.sleep(2.5)  # longer than the 2 s lease: the renewer keeps it
        seen.append(job.payload)
        return taquba.Effects(kv_writes={b"out/" + job.payload: b"done"})

    async with open_remote_queue(server.url) as remote:
        ids = [(await remote.enqueue("jobs", bytes([65 + i]))).id for i in range(3)]
        worker = taquba.Worker(remote, "jobs", handler, concurrency=3, poll_interval=0.2)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            with trio.fail_after(20):
                jobs = [await remote.wait_for_completion(i) for i in ids]
            worker.shutdown()
        assert all(j is not None and j.attempts == 1 for j in jobs)
        assert await remote.kv_get(b"out/A") == b"done"
        assert sorted(seen) == [b"A", b"B", b"C"]
        stats = await remote.stats("jobs")
        assert stats.done == 3


async def test_remote_claims_cancel_and_claim_lost(server: ServerHandle) -> None:
    async with open_remote_queue(server.url) as remote:
        job_id = (await remote.enqueue("c", b"x")).id
        [claim] = await remote.claim_batch("c", 1, lease=1.0)
        assert remote.lease_expiry(claim) is not None
        assert await remote.cancel(job_id) is taquba.CancelOutcome.REQUESTED
        with trio.fail_after(5):
            await claim.wait_cancel_requested()
        await remote.dead_letter(claim, "cancelled")
        assert remote.lease_expiry(claim) is None
        with pytest.raises(taquba.ClaimLost):
            await remote.ack_with(claim, None)
        assert await remote.get_job("missing") is None
        assert isinstance(remote, RemoteQueue)


async def test_remote_history_and_wake_are_the_cores_types(server: ServerHandle) -> None:
    async with open_remote_queue(server.url) as remote:
        job_id = (await remote.enqueue("rw", b"x", delay=3600, max_attempts=2)).id
        assert await remote.wake_scheduled(job_id, b"go") is taquba.WakeOutcome.WOKEN
        assert await remote.wake_scheduled(job_id) is taquba.WakeOutcome.NOT_SCHEDULED
        assert await remote.wake_scheduled("unknown") is taquba.WakeOutcome.NOT_FOUND
        [claim] = await remote.claim_batch("rw", 1)
        assert (claim.job.wake_payload, claim.job.history_size) == (b"go", 0)
        assert claim.job.woken_at is not None
        assert not (await remote.nack(claim, "boom")).dead
        history = await remote.get_job_history(job_id)
        assert history is not None
        [entry] = history
        assert isinstance(entry, taquba.JobAttempt)
        assert (entry.attempt, entry.outcome, entry.error) == (
            1,
            taquba.AttemptOutcome.RETRIED,
            "boom",
        )
        job = await remote.get_job(job_id)
        assert job is not None
        assert (job.history_size, job.wake_payload) == (1, b"go")
        assert await remote.get_job_history("unknown") is None


async def test_a_claim_the_server_lost_is_claim_lost_with_one_message(
    server: ServerHandle,
) -> None:
    async with open_remote_queue(server.url) as remote:
        job_id = (await remote.enqueue("c", b"x")).id
        [claim] = await remote.claim_batch("c", 1)
        # settled behind the remote queue's back: the server no longer holds the claim
        held = remote._held[claim.token]  # pyright: ignore[reportPrivateUsage]
        await remote.client.ack(held.claim)
        with pytest.raises(taquba.ClaimLost) as info:
            await remote.ack_with(claim, None)
        assert info.value.job_id == job_id
        assert str(info.value).count("lost:") == 1, str(info.value)
        assert str(info.value).startswith(f"claim on job {job_id!r} lost: ")


async def test_unreachable_server_is_storage_unavailable() -> None:
    with pytest.raises(taquba.StorageUnavailable):
        async with open_remote_queue("http://127.0.0.1:9"):
            pass


async def test_remote_blob_store(server: ServerHandle) -> None:
    async with open_remote_queue(server.url) as remote:
        store = remote.store
        assert await store.put_blob("a/b", b"1")
        assert not await store.put_blob("a/b", b"2", create_only=True)
        assert await store.get_blob("a/b") == b"1"
        assert await store.list_blobs("a") == ["b"]
        assert await store.delete_blob("a/b")
