"""Remote crash tests: the owner is a ``taquba-server`` process, the runners are not.

`test_crash.py`'s scenario with every runner in a process other than the owner: a
``taquba-server`` owns a local-disk store, the runner of ``remote_crash_child.py`` (the same
job and `JobRunner` as ``crash_child.py``, over `taquba_client.remote.open_remote_queue`)
submits and serves, and is SIGKILLed mid-run. The test process then resubmits the same
idempotency keys through its own remote runner and resolves every handle: each resolves once
with the right value, nothing is duplicated, stored results are not run again, and only the
jobs caught in flight run again (after their lease, as the server's reaper hands them out).

The server itself is SIGKILLed and restarted (same store, same port) while a remote runner
works: it reconnects, every handle it holds still resolves once, and a second remote runner
resubmitting the same keys finds every job and result without running anything.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from taquba.testing import Child, open_child
from taquba_jobs import Job, JobContext, JobHandle, JobRunner
from taquba_jobs._records import decode_result

# A compatibility-matrix row installs taquba-jobs with its own dependencies only.
REASON = "the remote crash tests need taquba-server and taquba-client"
pytest.importorskip("taquba_server", reason=REASON)
pytest.importorskip("taquba_client", reason=REASON)

from taquba_client.remote import RemoteQueue, open_remote_queue  # noqa: E402

CHILD = Path(__file__).with_name("remote_crash_child.py")
# Must match crash_child.py.
CONCURRENCY = 8
COUNT = 60
LEASE = 2.0
"""The server's lease: jobs caught in flight by a kill come back after it."""
PREFIX = "taquba-server listening on "

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL"),
    pytest.mark.slow,
]


@asynccontextmanager
async def open_server(store: Path, port: int = 0) -> AsyncIterator[tuple[Child, str]]:
    """A ``taquba-server`` process on ``store`` with a short lease and a quick reaper."""
    argv = ["-m", "taquba_server", "--store", store.as_uri(), "--port", str(port)]
    options = ["--lease-duration", str(LEASE), "--reaper-interval", "0.1"]
    async with open_child(*argv, *options) as server:
        with trio.fail_after(90):
            line = await server.expect(lambda line: line.startswith(PREFIX))
        yield server, line.removeprefix(PREFIX)


def parent_job(log_fd: int) -> Job[int, int]:
    """The child's job, as the test process defines it (same name and types)."""

    async def work(ctx: JobContext, index: int) -> int:
        os.write(log_fd, f"{ctx.job_id} {ctx.attempt} start parent\n".encode())
        await trio.lowlevel.checkpoint()
        os.write(log_fd, f"{ctx.job_id} {ctx.attempt} done parent\n".encode())
        return 3 * index

    return Job(work, name="crash.work")


def read_executions(log: Path, job_ids: set[str]) -> dict[str, list[tuple[int, str, str]]]:
    executions: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for line in log.read_text().splitlines():
        job_id, attempt, phase, who = line.split()
        assert job_id in job_ids
        executions[job_id].append((int(attempt), phase, who))
    return executions


async def settled(queue: RemoteQueue) -> None:
    """Nothing is left in the jobs queue: no pending, claimed, scheduled or dead job."""
    stats = await queue.stats("jobs")
    assert stats.pending == stats.claimed == stats.scheduled == stats.dead == 0
    assert await queue.dead_jobs("jobs") == []


@pytest.mark.parametrize("kill_after", [COUNT // 4, COUNT // 2])
async def test_a_remote_runner_killed_mid_run_then_resubmitted_resolves_every_handle_once(
    tmp_path: Path, kill_after: int, serving: Any
) -> None:
    log = tmp_path / "executions.log"
    log.touch()
    log_fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        with trio.fail_after(110):
            async with open_server(tmp_path / "store") as (_, url):
                async with open_child(CHILD, url, log, str(COUNT), cwd=tmp_path) as child:
                    await child.read_until(lambda: len(child.tagged("RESULT")) >= kill_after)
                    await child.kill()

                work = parent_job(log_fd)
                async with open_remote_queue(url) as queue:
                    runner = JobRunner(queue, [work], concurrency=CONCURRENCY, poll_interval=0.05)
                    resolved: dict[int, int] = {}
                    handles: dict[int, JobHandle[int]] = {}
                    async with serving(runner), trio.open_nursery() as nursery:
                        for index in range(COUNT):

                            async def resubmit(index: int = index) -> None:
                                handle = await runner.submit(
                                    work, index, idempotency_key=f"crash/{index}"
                                )
                                handles[index] = handle
                                value = await handle.result()
                                assert index not in resolved  # each resolves exactly once
                                resolved[index] = value
                                # A job the child stored the result of but never acknowledged
                                # stays claimed until its lease ends; then this runner
                                # settles it as recorded, without running it again.
                                await queue.wait_for_completion(handle.job_id)

                            nursery.start_soon(resubmit)
                    await settled(queue)
                    outcomes = {
                        i: decode_result(blob)
                        for i, h in handles.items()
                        if (blob := await queue.store.get_blob(runner.result_path(h.job_id)))
                    }
    finally:
        os.close(log_fd)

    submitted = {int(index): job_id for index, job_id, _ in child.tagged("SUB")}
    stored_before_kill = {job_id: int(value) for job_id, value in child.tagged("RESULT")}
    assert len(stored_before_kill) >= kill_after
    # Every handle resolved once, with its own value; nothing failed or was duplicated.
    assert resolved == {i: 3 * i for i in range(COUNT)}
    # A submission the child saw return durably is found again, never enqueued twice.
    for index, job_id in submitted.items():
        assert handles[index].job_id == job_id
        assert not handles[index].newly_submitted
    job_ids = {h.job_id for h in handles.values()}
    assert len(job_ids) == COUNT

    executions = read_executions(log, job_ids)
    for index, handle in handles.items():
        runs = executions[handle.job_id]
        done = [(attempt, who) for attempt, phase, who in runs if phase == "done"]
        outcome = outcomes[index]
        assert outcome.status == "succeeded"
        assert work.decode_output(outcome.value or b"") == 3 * index
        if handle.job_id in stored_before_kill:
            # Its result was stored before the kill: the restart did not run it again.
            assert all(who == "child" for _, _, who in runs), runs
        # The stored outcome is the last completed execution: nothing ran after it.
        assert done, runs
        assert done[-1][0] == outcome.attempts, (runs, outcome)
    # Re-execution happens only to jobs caught in flight by the kill (at most one batch).
    rerun = [
        job_id for job_id, runs in executions.items() if sum(p == "start" for _, p, _ in runs) > 1
    ]
    assert len(rerun) <= CONCURRENCY
    assert runner.statistics().executions == sum(
        1
        for runs in executions.values()
        for _, phase, who in runs
        if phase == "start" and who == "parent"
    )


async def test_the_server_killed_and_restarted_under_a_remote_runner_loses_nothing(
    tmp_path: Path, serving: Any
) -> None:
    store = tmp_path / "store"
    log = tmp_path / "executions.log"
    log.touch()
    log_fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    work = parent_job(log_fd)
    try:
        with trio.fail_after(110):
            async with open_server(store) as (server, url):
                port = int(url.rsplit(":", 1)[1])
                argv = [CHILD, url, log, str(COUNT), "patient"]
                async with open_child(*argv, cwd=tmp_path) as child:
                    await child.read_until(lambda: len(child.tagged("RESULT")) >= COUNT // 4)
                    await server.kill()
                    before_kill = len(child.tagged("RESULT"))
                    async with open_server(store, port) as (_, again):
                        assert again == url
                        # The runner reconnects: it finishes the batch and exits on its own.
                        await child.read_until(lambda: len(child.tagged("RESULT")) >= COUNT)
                        await child.expect_exit(0)
                        # Another remote runner finds every job and its stored result, and
                        # settles what the restart handed out again without running anything.
                        async with open_remote_queue(url) as queue:
                            runner = JobRunner(queue, [work], poll_interval=0.05)
                            handles: dict[int, JobHandle[int]] = {}
                            values: dict[int, int] = {}
                            async with serving(runner), trio.open_nursery() as nursery:
                                for index in range(COUNT):

                                    async def resubmit(index: int = index) -> None:
                                        handle = await runner.submit(
                                            work, index, idempotency_key=f"crash/{index}"
                                        )
                                        handles[index] = handle
                                        values[index] = await handle.result()
                                        await queue.wait_for_completion(handle.job_id)

                                    nursery.start_soon(resubmit)
                            await settled(queue)
                            stats = await queue.stats("jobs")
    finally:
        os.close(log_fd)

    subs = child.tagged("SUB")
    results = child.tagged("RESULT")
    assert before_kill < COUNT  # the server died mid-run
    # Every submission returned once and its handle resolved once, with its own value.
    assert sorted(int(index) for index, _, _ in subs) == list(range(COUNT))
    job_of = {int(index): job_id for index, job_id, _ in subs}
    assert len(set(job_of.values())) == COUNT  # no duplicate job
    assert sorted(job_id for job_id, _ in results) == sorted(job_of.values())
    value_of = {job_id: int(value) for job_id, value in results}
    assert all(value_of[job_of[i]] == 3 * i for i in range(COUNT))
    # The second runner found the same jobs and values, and ran nothing.
    assert {i: h.job_id for i, h in handles.items()} == job_of
    assert not any(h.newly_submitted for h in handles.values())
    assert values == {i: 3 * i for i in range(COUNT)}
    assert runner.statistics().executions == 0
    # Each job was acknowledged once (done records are not kept: counted, then deleted).
    assert stats.done == COUNT
    # Only jobs caught in flight when the server died ran again (at most one batch).
    executions = read_executions(log, set(job_of.values()))
    assert all(any(p == "done" for _, p, _ in runs) for runs in executions.values())
    assert all(who == "child" for runs in executions.values() for _, _, who in runs)
    rerun = [runs for runs in executions.values() if sum(p == "start" for _, p, _ in runs) > 1]
    assert len(rerun) <= CONCURRENCY, rerun
