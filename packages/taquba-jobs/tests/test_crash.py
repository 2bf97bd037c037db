"""Crash tests: a runner process (``crash_child.py``) is SIGKILLed while jobs run, then the
store is reopened and the same batch resubmitted.

Whatever the child printed was durable when printed. After the restart every submission finds
its job (no duplicates), every handle resolves exactly once with the right value, a job whose
result was stored before the kill never runs again, and a job runs again only if its earlier
execution was cut short (or finished without its result reaching the store).
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

import taquba
from taquba import JobStatus, QueueConfig
from taquba.testing import open_child
from taquba_jobs import Job, JobContext, JobHandle, JobRunner
from taquba_jobs._records import decode_result

CHILD = Path(__file__).with_name("crash_child.py")
# Must match crash_child.py.
CONCURRENCY = 8
FAST = {"flush_interval": 0.01, "reaper_interval": 3600.0, "scheduler_interval": 0.05}
CONFIG = QueueConfig(lease_duration=600, retry_backoff_base=0, max_attempts=10)
COUNT = 60

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")


def parent_job(log_fd: int) -> Job[int, int]:
    """The child's job, as the restarted process defines it (same name and types)."""

    async def work(ctx: JobContext, index: int) -> int:
        os.write(log_fd, f"{ctx.job_id} {ctx.attempt} start parent\n".encode())
        await trio.lowlevel.checkpoint()
        os.write(log_fd, f"{ctx.job_id} {ctx.attempt} done parent\n".encode())
        return 3 * index

    return Job(work, name="crash.work")


@pytest.mark.parametrize("kill_after", [COUNT // 4, COUNT // 2])
async def test_sigkill_while_jobs_run_then_restart_resolves_every_handle_once(
    tmp_path: Path, kill_after: int, serving: Any
) -> None:
    store_dir = tmp_path / "store"
    log = tmp_path / "executions.log"
    log.touch()

    with trio.fail_after(60):
        async with open_child(CHILD, store_dir, log, str(COUNT), cwd=tmp_path) as child:
            await child.read_until(lambda: len(child.tagged("RESULT")) >= kill_after)
            await child.kill()

    submitted = {int(index): job_id for index, job_id, _ in child.tagged("SUB")}
    stored_before_kill = {job_id: int(value) for job_id, value in child.tagged("RESULT")}
    assert len(stored_before_kill) >= kill_after
    child_lines = log.read_text().splitlines()
    assert any(line.endswith("start child") for line in child_lines)

    log_fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    work = parent_job(log_fd)
    try:
        with trio.fail_after(60):
            async with taquba.open_queue(store_dir, "crash", config=CONFIG, **FAST) as queue:
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
                            assert index not in resolved  # each handle resolves exactly once
                            resolved[index] = value

                        nursery.start_soon(resubmit)
                stats = await queue.stats("jobs")
                outcomes = {
                    i: decode_result(blob)
                    for i, h in handles.items()
                    if (blob := await queue.store.get_blob(runner.result_path(h.job_id)))
                }
                dead = await queue.list_jobs("jobs", JobStatus.DEAD)
    finally:
        os.close(log_fd)

    # Every handle resolved once, with its own value; nothing failed or was duplicated.
    assert resolved == {i: 3 * i for i in range(COUNT)}
    assert dead.jobs == []
    assert stats.pending == stats.claimed == stats.scheduled == 0
    # A submission the child saw return durably is found again, never enqueued twice.
    for index, job_id in submitted.items():
        assert handles[index].job_id == job_id
        assert not handles[index].newly_submitted
    job_ids = {h.job_id for h in handles.values()}
    assert len(job_ids) == COUNT

    executions: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for line in log.read_text().splitlines():
        job_id, attempt, phase, who = line.split()
        assert job_id in job_ids
        executions[job_id].append((int(attempt), phase, who))
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


STATE_CHILD = Path(__file__).with_name("state_crash_child.py")


async def test_sigkill_keeps_the_state_of_the_last_retried_attempt_and_the_headers(
    tmp_path: Path, serving: Any
) -> None:
    """State stored before a retry survives a SIGKILL; staging of the killed attempt does not.

    The child's attempt 1 stages ``["fetched"]`` and fails; attempt 2 loads it, stages more
    and is killed. After the restart, the next attempt loads attempt 1's state (the killed
    attempt's staging was never stored), sees the submission's headers (not those of the
    resubmission), and the job's end deletes the state.
    """
    store_dir = tmp_path / "store"
    with trio.fail_after(60):
        async with open_child(STATE_CHILD, store_dir, cwd=tmp_path) as child:
            await child.read_until(lambda: len(child.tagged("ATTEMPT")) >= 2)
            await child.kill()
    ((job_id,),) = child.tagged("SUB")
    assert child.tagged("ATTEMPT") == [
        ["1", "null", '{"tenant":', '"acme"}'],
        ["2", '["fetched"]', '{"tenant":', '"acme"}'],
    ]

    seen: list[tuple[int, list[str] | None, dict[str, str]]] = []

    async def work(ctx: JobContext, value: int) -> list[str]:
        loaded = await ctx.load_state(list[str])
        seen.append((ctx.attempt, loaded, dict(ctx.headers)))
        return [*(loaded or []), "parsed"]

    job = Job(work, name="crash.state")
    with trio.fail_after(60):
        async with taquba.open_queue(store_dir, "crash", config=CONFIG, **FAST) as queue:
            runner = JobRunner(queue, [job], poll_interval=0.05)
            async with serving(runner):
                again = await runner.submit(
                    job, 1, idempotency_key="state/1", headers={"tenant": "other"}
                )
                assert again.job_id == job_id
                assert not again.newly_submitted
                assert await again.result() == ["fetched", "parsed"]
            assert (await queue.kv_scan(b"taquba-jobs/state/")).entries == []
    # Attempt 3, or 2 again: claims are not awaited to be durable, so the kill may undo it.
    ((attempt, loaded, headers),) = seen
    assert attempt in (2, 3)
    assert (loaded, headers) == (["fetched"], {"tenant": "acme"})
