"""Worker (under trio and asyncio) and ThreadedWorker against an in-process server."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from pathlib import Path

import pytest
import trio

import taquba
import taquba_client as tc
import taquba_server
from client_support import FAST, ServerHandle, start_server


async def _enqueue(client: tc.AsyncClient, queue_name: str, n: int) -> list[str]:
    results = await client.enqueue_batch(
        [tc.EnqueueRequest(queue_name=queue_name, payload=str(i).encode()) for i in range(n)]
    )
    return [r.id for r in results]


async def _wait_drained(client: tc.AsyncClient, queue_name: str, done: int) -> tc.QueueStats:
    with trio.fail_after(20):
        while True:
            stats = await client.stats(queue_name)
            if stats.done + stats.dead >= done and stats.claimed == 0:
                return stats
            await trio.sleep(0.05)


async def test_worker_under_trio_settles_every_outcome(server: ServerHandle) -> None:
    seen: list[bytes] = []

    async def handler(job: tc.Job, lease: tc.Lease) -> tc.Effects | None:
        seen.append(job.payload)
        assert lease.expires_at is not None
        n = int(job.payload)
        if n == 0:
            raise tc.PermanentFailure("zero")
        if n == 1 and job.attempts == 1:
            raise tc.RetryLater("later", retry_after=0.01)
        if n == 2 and job.attempts == 1:
            raise ValueError("boom")
        if n == 3:
            return tc.Effects(kv_writes={b"result-3": b"ok"})
        if n == 4:
            before = lease.expires_at
            assert await lease.renew(30) > (before or 0)
            assert not lease.cancel_requested
        return None

    async with tc.AsyncClient(server.url) as client:
        await _enqueue(client, "t", 20)
        worker = tc.Worker(client, "t", handler, concurrency=4, poll_wait=1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.run)
            stats = await _wait_drained(client, "t", 20)
            worker.shutdown()
        assert (stats.done, stats.dead) == (19, 1)
        assert await client.kv_get(b"result-3") == b"ok"
        dead = await client.dead_jobs("t")
        assert dead[0].last_error == "zero"
        assert len(seen) == 22


async def test_worker_renews_leases_and_sees_cancel(server: ServerHandle) -> None:
    cancelled = trio.Event()
    both_started = trio.Event()
    started: list[bytes] = []

    async def handler(job: tc.Job, lease: tc.Lease) -> None:
        started.append(job.payload)
        if len(started) == 2:
            both_started.set()
        if job.payload == b"slow":
            await trio.sleep(2.5)  # over twice the 1 s lease: kept alive by the renewer
            return
        await lease.wait_cancel_requested()
        cancelled.set()
        raise tc.PermanentFailure("cancelled")

    async with tc.AsyncClient(server.url) as client:
        slow = await client.enqueue("r", b"slow")
        victim = await client.enqueue("r", b"victim")
        worker = tc.Worker(client, "r", handler, lease=1.0, poll_wait=0.5)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.run)
            with trio.fail_after(10):
                await both_started.wait()
            assert await client.cancel(victim.id) is tc.CancelOutcome.REQUESTED
            with trio.fail_after(10):
                await cancelled.wait()
                job = await client.wait_for_completion(slow.id)
            worker.shutdown()
        assert job is not None
        assert (job.status, job.attempts) == (tc.JobStatus.DONE, 1)


async def test_a_restarted_server_loses_claims_and_the_worker_carries_on(
    tmp_path: Path,
) -> None:
    store = taquba.Store.from_url(str(tmp_path / "store"))
    abandoned = trio.Event()
    first_attempt = trio.Event()
    attempts: list[int] = []

    async def handler(job: tc.Job, lease: tc.Lease) -> None:
        attempts.append(job.attempts)
        first_attempt.set()
        if job.attempts == 1:
            try:
                await trio.sleep_forever()
            finally:
                abandoned.set()

    closed = trio.Event()

    async def serve(port: int, *, task_status: trio.TaskStatus[ServerHandle]) -> None:
        async with (
            taquba.open_queue(store, config=FAST, reaper_interval=0.1) as queue,
            trio.open_nursery() as nursery,
        ):
            task_status.started(await start_server(nursery, queue, port=port))
        closed.set()

    async with trio.open_nursery() as nursery:
        first: ServerHandle = await nursery.start(serve, 0)
        port = int(first.url.rsplit(":", 1)[1])
        policy = tc.RetryPolicy(attempts=2, initial_delay=0.05, max_delay=0.1)
        async with tc.AsyncClient(first.url, retry=policy) as client:
            job_id = (await client.enqueue("restart", b"x")).id
            worker = tc.Worker(client, "restart", handler, lease=1.0, poll_wait=0.5)
            nursery.start_soon(worker.run)
            with trio.fail_after(10):
                await first_attempt.wait()
            first.server.shutdown()  # its queue closes; the claim dies with the process
            await closed.wait()
            second: ServerHandle = await nursery.start(serve, port)
            with trio.fail_after(20):
                await abandoned.wait()  # the renewer learnt the claim is lost
                job = await client.wait_for_completion(job_id)
            worker.shutdown()
        assert job is not None
        assert job.status is tc.JobStatus.DONE
        assert attempts[0] == 1
        assert attempts[-1] >= 2
        second.server.shutdown()


async def test_shutdown_grace_nacks_the_rest(server: ServerHandle) -> None:
    started = trio.Event()

    async def handler(job: tc.Job, lease: tc.Lease) -> None:
        started.set()
        await trio.sleep_forever()

    async with tc.AsyncClient(server.url) as client:
        job_id = (await client.enqueue("g", b"x")).id
        worker = tc.Worker(client, "g", handler, shutdown_grace=0.1, poll_wait=0.2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.run)
            await started.wait()
            worker.shutdown()
            worker.shutdown()  # idempotent
        job = await client.get_job(job_id)
        assert job.last_error == "the worker stopped before the job finished"
        assert job.status in (tc.JobStatus.PENDING, tc.JobStatus.SCHEDULED)
        # sticky: served again, it returns at once
        with trio.fail_after(1):
            await worker.run()


async def test_worker_under_asyncio(server: ServerHandle) -> None:
    async def main() -> tc.QueueStats:
        async with tc.AsyncClient(server.url) as client:
            results = await client.enqueue_batch(
                [tc.EnqueueRequest(queue_name="aio", payload=b"x") for _ in range(10)]
            )

            async def handler(job: tc.Job, lease: tc.Lease) -> None:
                await asyncio.sleep(0.01)

            worker = tc.Worker(client, "aio", handler, concurrency=3, poll_wait=0.5)
            task = asyncio.create_task(worker.run())
            async with asyncio.timeout(20):
                for result in results:
                    await client.wait_for_completion(result.id)
            worker.shutdown()
            await task
            return await client.stats("aio")

    stats = await trio.to_thread.run_sync(asyncio.run, main())
    assert stats.done == 10


async def test_worker_backs_off_while_the_server_is_unreachable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = tc.RetryPolicy(attempts=1)

    async def handler(job: tc.Job, lease: tc.Lease) -> None:
        raise AssertionError("no job to run")

    async with tc.AsyncClient("http://127.0.0.1:9", retry=policy) as client:
        worker = tc.Worker(client, "q", handler, poll_wait=0)
        with trio.move_on_after(0.8):
            await worker.run()
    assert any("claiming from 'q' failed" in r.getMessage() for r in caplog.records)


async def test_worker_permanent_claim_error_ends_run(
    nursery: trio.Nursery, queue: taquba.Queue
) -> None:
    async def handler(job: tc.Job, lease: tc.Lease) -> None:
        return None

    tokens = taquba_server.parse_tokens("p:produce")
    handle = await start_server(nursery, queue, tokens=tokens)
    async with tc.AsyncClient(handle.url, token="p") as client:
        worker = tc.Worker(client, "q", handler)
        with pytest.raises(tc.Forbidden), trio.fail_after(10):
            await worker.run()

    def threaded() -> None:
        with tc.Client(handle.url, token="p") as client:
            tc.ThreadedWorker(client, "q", lambda job, lease: None).run()

    with pytest.raises(tc.Forbidden):
        await trio.to_thread.run_sync(threaded)


def test_worker_options_are_checked() -> None:
    async def handler(job: tc.Job, lease: tc.Lease) -> None:
        return None

    client = tc.AsyncClient("http://127.0.0.1:9")
    with pytest.raises(tc.UsageError):
        tc.Worker(client, "q", handler, concurrency=0)
    with pytest.raises(tc.UsageError):
        tc.Worker(client, "q", handler, poll_wait=61)
    with pytest.raises(tc.UsageError):
        tc.Worker(client, "q", 42)  # type: ignore[arg-type]


async def test_threaded_worker_with_cpu_bound_handlers(server: ServerHandle) -> None:
    threads: set[str] = set()

    def handler(job: tc.Job, lease: tc.ThreadLease) -> tc.Effects:
        threads.add(threading.current_thread().name)
        if job.payload == b"1":
            assert lease.renew(30) > 0
            assert not lease.wait_cancel_requested(0)
        deadline = time.monotonic() + (1.5 if job.payload == b"0" else 0.05)
        digest = job.payload
        while time.monotonic() < deadline:  # CPU-bound, past the 1 s lease for job 0
            digest = hashlib.sha256(digest).digest()
        return tc.Effects(kv_writes={b"r/" + job.payload: digest})

    def run() -> tuple[tc.QueueStats, list[tc.Job]]:
        with tc.Client(server.url) as client:
            ids = [
                r.id
                for r in client.enqueue_batch(
                    [
                        tc.EnqueueRequest(queue_name="cpu", payload=str(i).encode())
                        for i in range(12)
                    ]
                )
            ]
            worker = tc.ThreadedWorker(
                client, "cpu", handler, concurrency=4, lease=1.0, poll_wait=0.5
            )
            runner = threading.Thread(target=worker.run)
            runner.start()
            jobs = [client.wait_for_completion(i, timeout=20) for i in ids]
            worker.shutdown()
            runner.join(10)
            assert not runner.is_alive()
            return client.stats("cpu"), [j for j in jobs if j is not None]

    stats, jobs = await trio.to_thread.run_sync(run)
    assert stats.done == 12
    assert all(j.attempts == 1 for j in jobs)  # the renewer kept every lease alive
    assert len(threads) > 1


async def test_threaded_worker_shutdown_grace(server: ServerHandle) -> None:
    release = threading.Event()
    started = threading.Event()

    def handler(job: tc.Job, lease: tc.ThreadLease) -> None:
        started.set()
        release.wait(10)
        raise tc.RetryLater("never settled: abandoned")

    def run() -> tc.Job:
        with tc.Client(server.url) as client:
            job_id = client.enqueue("tg", b"x").id
            worker = tc.ThreadedWorker(client, "tg", handler, shutdown_grace=0.1, poll_wait=0.2)
            runner = threading.Thread(target=worker.run)
            runner.start()
            assert started.wait(10)
            worker.shutdown()
            runner.join(10)
            release.set()
            return client.get_job(job_id)

    job = await trio.to_thread.run_sync(run)
    assert job.last_error == "the worker stopped before the job finished"
