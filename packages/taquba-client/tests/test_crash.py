"""Crash tests: a remote worker process SIGKILLed mid-batch; the server SIGKILLed and restarted."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import taquba_client as tc
from client_support import ServerHandle, ServerProcess

CHILD = str(Path(__file__).with_name("worker_child.py"))


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
async def test_a_killed_worker_loses_nothing(server: ServerHandle, backend: str) -> None:
    async with tc.AsyncClient(server.url) as client:
        ids = {
            r.id
            for r in await client.enqueue_batch(
                [tc.EnqueueRequest(queue_name="crash", payload=bytes([i])) for i in range(6)]
            )
        }
        process = await trio.lowlevel.open_process(
            [sys.executable, CHILD, server.url, "crash", backend], stdout=subprocess.PIPE
        )
        assert process.stdout is not None
        tokens: dict[str, str] = {}
        buffer = b""
        with trio.fail_after(20):
            while len(tokens) < 4:  # a batch of 4 in flight
                chunk = await process.stdout.receive_some()
                assert chunk, "the worker exited"
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    _, job_id, token = line.decode().split()
                    tokens[job_id] = token
        process.kill()
        await process.wait()
        await process.stdout.aclose()
        # the 4 jobs come back after their 1 s lease; the other 2 were never claimed
        with trio.fail_after(20):
            claims = []
            while len(claims) < 6:
                claims += await client.claim_batch("crash", 6, wait=5)
        assert {c.id for c in claims} == ids
        assert sorted(c.job.attempts for c in claims) == [1, 1, 2, 2, 2, 2]
        # a late ack with the dead worker's token is refused
        victim = next(iter(tokens))
        job = next(c.job for c in claims if c.id == victim)
        with pytest.raises(tc.ClaimLost):
            await client.ack(tc.Claim(job, tokens[victim], 0))
        assert all(r.ok for r in await client.settle([tc.Ack(claim=c) for c in claims]))


@pytest.mark.slow
async def test_a_killed_server_restarts_and_nothing_is_lost(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    done: list[str] = []

    async def handler(job: tc.Job, lease: tc.Lease) -> None:
        await trio.sleep(0.01)
        done.append(job.id)

    async with trio.open_nursery() as nursery:
        server = ServerProcess(store)
        url = await server.start(nursery)
        patient = tc.RetryPolicy(attempts=100, initial_delay=0.05, max_delay=0.2)
        async with tc.AsyncClient(url, retry=patient) as client:
            ids = [(await client.enqueue("durable", bytes([i]))).id for i in range(20)]
            worker = tc.Worker(client, "durable", handler, concurrency=4, lease=1.0, poll_wait=1)
            nursery.start_soon(worker.run)
            server.kill()
            await server.wait()
            # the producer's enqueue retries until the restarted server answers
            restarted = ServerProcess(store, port=server.port)

            async def restart() -> None:
                await trio.sleep(0.5)
                await restarted.start(nursery)

            nursery.start_soon(restart)
            ids.append((await client.enqueue("durable", b"late")).id)
            with trio.fail_after(40):
                # the server's default configuration deletes done jobs: None means done here
                jobs = [await client.wait_for_completion(i) for i in ids]
            worker.shutdown()
            stats = await client.stats("durable")
        assert all(j is None or j.status is tc.JobStatus.DONE for j in jobs)
        assert set(done) >= set(ids)
        assert (stats.done, stats.pending, stats.claimed, stats.dead) == (21, 0, 0, 0)
        restarted.kill()
        await restarted.wait()


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
async def test_ctrl_c_stops_a_worker_promptly_and_hands_its_jobs_back(
    server: ServerHandle, backend: str
) -> None:
    async with tc.AsyncClient(server.url) as client:
        ids = [(await client.enqueue("sigint", bytes([i]))).id for i in range(2)]
        process = await trio.lowlevel.open_process(
            [sys.executable, CHILD, server.url, "sigint", backend],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert process.stdout is not None
        seen = b""
        with trio.fail_after(20):
            while seen.count(b"claimed") < 2:
                chunk = await process.stdout.receive_some()
                assert chunk, "the worker exited"
                seen += chunk
        process.send_signal(signal.SIGINT)
        with trio.fail_after(10):  # promptly: well within the 1 s lease's redelivery
            assert await process.wait() != 0
        await process.stdout.aclose()
        for job_id in ids:
            job = await client.get_job(job_id)
            assert job.last_error == "the worker stopped before the job finished"
            assert job.status is not tc.JobStatus.CLAIMED
