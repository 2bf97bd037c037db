"""Retries against injected faults: answers lost after the server acted, a server not up yet."""

from __future__ import annotations

import pytest
import trio

import taquba
import taquba_client as tc
from client_support import DroppingProxy, ServerHandle, start_server

FAST_RETRY = tc.RetryPolicy(attempts=4, initial_delay=0.01, max_delay=0.05)


async def _proxy(nursery: trio.Nursery, server: ServerHandle) -> DroppingProxy:
    proxy = DroppingProxy(int(server.url.rsplit(":", 1)[1]))
    await nursery.start(proxy.serve)
    return proxy


async def test_a_lost_enqueue_answer_is_retried_into_one_job(
    nursery: trio.Nursery, server: ServerHandle
) -> None:
    proxy = await _proxy(nursery, server)
    async with tc.AsyncClient(proxy.url, retry=FAST_RETRY) as client:
        proxy.drop_answers = 1
        result = await client.enqueue("idem", b"x")
        assert proxy.dropped == 1
        assert not result.created  # the first attempt made the job; the retry found it
        proxy.drop_answers = 1
        batch = await client.enqueue_batch(
            [tc.EnqueueRequest(queue_name="idem", payload=bytes([i])) for i in range(3)]
        )
        assert [r.created for r in batch] == [False, False, False]
        proxy.drop_answers = 1
        guarded = await client.enqueue(
            "idem", b"kv", kv_writes={b"k": b"1"}, kv_expect={b"k": None}
        )
        assert not guarded.created  # the retry's kv_expect failed on its own first write
        assert (await client.stats("idem")).pending == 5
        assert (await client.get_job(result.id)).payload == b"x"


async def test_a_lost_claim_answer_is_not_retried(
    nursery: trio.Nursery, server: ServerHandle
) -> None:
    proxy = await _proxy(nursery, server)
    async with tc.AsyncClient(proxy.url, retry=FAST_RETRY) as client:
        job_id = (await client.enqueue("claims", b"x")).id
        proxy.drop_answers = 1
        with pytest.raises(tc.ServerUnavailable, match="not retried"):
            await client.claim_batch("claims", 1, lease=0.3)
        # the claim the lost answer held comes back after its lease
        claims = await client.claim_batch("claims", 1, wait=10)
        assert [(c.id, c.job.attempts) for c in claims] == [(job_id, 2)]


async def test_a_lost_wake_answer_is_not_retried_and_a_lost_history_answer_is(
    nursery: trio.Nursery, server: ServerHandle
) -> None:
    proxy = await _proxy(nursery, server)
    async with tc.AsyncClient(proxy.url, retry=FAST_RETRY) as client:
        job_id = (await client.enqueue("wake", b"x", delay=3600)).id
        proxy.drop_answers = 1
        with pytest.raises(tc.ServerUnavailable, match="not retried"):
            await client.wake_scheduled(job_id, b"go")
        assert proxy.dropped == 1
        # the wake landed; the record tells, since a repeat would answer NOT_SCHEDULED
        job = await client.get_job(job_id)
        assert (job.status, job.wake_payload) == (tc.JobStatus.PENDING, b"go")
        proxy.drop_answers = 1
        assert await client.get_job_history(job_id) == []
        assert proxy.dropped == 2


async def test_the_sync_client_retries_a_lost_answer(
    nursery: trio.Nursery, server: ServerHandle
) -> None:
    proxy = await _proxy(nursery, server)

    def run() -> tc.EnqueueResult:
        with tc.Client(proxy.url, retry=FAST_RETRY) as client:
            proxy.drop_answers = 1
            return client.enqueue("sync-idem", b"x", job_id="fixed-id")

    result = await trio.to_thread.run_sync(run)
    assert result == tc.EnqueueResult("fixed-id", False)


async def test_enqueue_waits_for_a_server_that_is_starting(
    nursery: trio.Nursery, queue: taquba.Queue
) -> None:
    with trio.socket.socket() as sock:  # a free port, released for the server to take
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    patient = tc.RetryPolicy(attempts=50, initial_delay=0.05, max_delay=0.1)
    async with tc.AsyncClient(f"http://127.0.0.1:{port}", retry=patient) as client:
        async with trio.open_nursery() as inner:

            async def start_later() -> None:
                await trio.sleep(0.3)  # the server comes up while the client retries
                await start_server(nursery, queue, port=port)

            inner.start_soon(start_later)
            result = await client.enqueue("late", b"x")
        assert result.created
