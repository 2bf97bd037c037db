"""A job-runner process for the crash tests, run as ``python crash_child.py STORE_DIR LOG N``.

It is started with ``sys.executable`` (never forked from the test process) and talks to the
test through stdout, one flushed line per event, printed only *after* the call it reports
returned, so every line is a promise the store must keep after a SIGKILL:

- ``READY`` once the queue is open and the runner serves;
- ``SUB <index> <job_id> <new>`` after ``submit`` of input ``index`` returned (durable);
- ``RESULT <job_id> <value>`` after the job's handle resolved (its result blob is stored).

It submits ``N`` calls of job ``crash.work`` (idempotency key ``crash/<index>``) while serving
them, 8 at a time. Each execution appends ``<job_id> <attempt> start child`` and, once done,
``<job_id> <attempt> done child`` to ``LOG`` (one atomic ``O_APPEND`` write per line). It exits
on its own after `SAFETY_EXIT` seconds in case the test dies without killing it.
"""

from __future__ import annotations

import os
import random
import sys

import trio

import taquba
from taquba import QueueConfig
from taquba_jobs import Job, JobContext, JobHandle, JobRunner

SAFETY_EXIT = 120.0
CONCURRENCY = 8
FAST = {"flush_interval": 0.01, "reaper_interval": 3600.0, "scheduler_interval": 0.05}
CONFIG = QueueConfig(lease_duration=600, retry_backoff_base=0, max_attempts=10)


def say(*words: object) -> None:
    print(*words, flush=True)


def make_job(log_fd: int, tag: str) -> Job[int, int]:
    """The job both processes run: log, work a little, log again, return ``3 * index``."""

    async def work(ctx: JobContext, index: int) -> int:
        os.write(log_fd, f"{ctx.job_id} {ctx.attempt} start {tag}\n".encode())
        await trio.sleep(random.uniform(0.01, 0.05))
        os.write(log_fd, f"{ctx.job_id} {ctx.attempt} done {tag}\n".encode())
        return 3 * index

    return Job(work, name="crash.work")


async def main(store_dir: str, log_path: str, count: int) -> None:
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    work = make_job(log_fd, "child")
    async with taquba.open_queue(store_dir, "crash", config=CONFIG, **FAST) as queue:
        runner = JobRunner(queue, [work], concurrency=CONCURRENCY, poll_interval=0.05)
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.serve)
            say("READY")

            async def submit_and_wait(index: int) -> None:
                handle: JobHandle[int] = await runner.submit(
                    work, index, idempotency_key=f"crash/{index}"
                )
                say("SUB", index, handle.job_id, int(handle.newly_submitted))
                say("RESULT", handle.job_id, await handle.result())

            async with trio.open_nursery() as submitters:
                for index in range(count):
                    submitters.start_soon(submit_and_wait, index)
                    await trio.sleep(0.002)
            runner.shutdown()


async def run(argv: list[str]) -> None:
    with trio.move_on_after(SAFETY_EXIT):
        await main(argv[0], argv[1], int(argv[2]))


if __name__ == "__main__":
    trio.run(run, sys.argv[1:])
