"""The synchronous Client from a thread, and AsyncClient under asyncio (in a thread)."""

from __future__ import annotations

import asyncio
import threading

import pytest
import trio

import taquba_client as tc
from client_support import ServerHandle


async def test_sync_client_from_threads(server: ServerHandle) -> None:
    def produce_and_work() -> list[tc.Job | None]:
        with tc.Client(server.url) as client:
            ids: list[str] = []

            def enqueue(n: int) -> None:
                ids.extend(client.enqueue("sync", f"{n}-{i}".encode()).id for i in range(5))

            threads = [threading.Thread(target=enqueue, args=(n,)) for n in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert client.stats("sync").pending == 20
            claims = client.claim_batch("sync", 20)
            assert len(claims) == 20
            results = client.settle([tc.Ack(claim=c) for c in claims])
            assert all(r.ok for r in results)
            with pytest.raises(tc.WaitTimeout):
                client.wait_for_completion(client.enqueue("other", b"x").id, timeout=0.2)
            return [client.wait_for_completion(i, timeout=5) for i in ids[:3]]

    jobs = await trio.to_thread.run_sync(produce_and_work)
    assert all(j is not None and j.status is tc.JobStatus.DONE for j in jobs)


async def test_sync_client_worker_calls(server: ServerHandle) -> None:
    def run() -> None:
        with tc.Client(server.url) as client:
            job_id = client.enqueue("s", b"x").id
            claim = client.claim_batch("s", 1, wait=2, lease=10)[0]
            assert client.renew(claim, 20).expires_at is not None
            assert not client.nack(claim, "again").dead
            claim = client.claim_batch("s", 1, wait=5)[0]
            assert claim.job.attempts == 2
            client.dead_letter(claim, "done with it")
            assert client.get_job(job_id).status is tc.JobStatus.DEAD
            client.requeue(job_id)
            claim = client.claim_batch("s", 1, wait=5)[0]
            client.ack(claim)
            assert client.kv_get(b"nothing") is None
            assert client.wait_for_jobs("s", wait=0) in (True, False)

    await trio.to_thread.run_sync(run)


async def test_sync_client_history_and_wake(server: ServerHandle) -> None:
    def run() -> None:
        with tc.Client(server.url) as client:
            job_id = client.enqueue("sh", b"x", delay=3600).id
            assert client.wake_scheduled(job_id, b"go") is tc.WakeOutcome.WOKEN
            assert client.wake_scheduled(job_id) is tc.WakeOutcome.NOT_SCHEDULED
            assert client.wake_scheduled("unknown") is tc.WakeOutcome.NOT_FOUND
            claim = client.claim_batch("sh", 1, wait=2)[0]
            assert (claim.id, claim.job.wake_payload) == (job_id, b"go")
            client.dead_letter(claim, "no good")
            history = client.get_job_history(job_id)
            assert history is not None
            assert [(a.attempt, a.outcome, a.error) for a in history] == [
                (1, tc.AttemptOutcome.DEAD_LETTERED, "no good")
            ]
            assert client.get_job(job_id).history_size == 1
            assert client.get_job_history("unknown") is None

    await trio.to_thread.run_sync(run)


async def test_async_client_under_asyncio(server: ServerHandle) -> None:
    async def main() -> tuple[bool, tc.Job | None]:
        async with tc.AsyncClient(server.url) as client:
            result = await client.enqueue("aio", b"payload")

            async def work() -> None:
                claims = await client.claim_batch("aio", 1, wait=5)
                await client.ack(claims[0])

            task = asyncio.create_task(work())
            async with asyncio.timeout(10):
                job = await client.wait_for_completion(result.id)
            await task
            return result.created, job

    created, job = await trio.to_thread.run_sync(asyncio.run, main())
    assert created
    assert job is not None
    assert job.status is tc.JobStatus.DONE
