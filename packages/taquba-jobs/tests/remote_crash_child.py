"""A remote job runner for the remote crash tests: ``remote_crash_child.py URL LOG N [patient]``.

`crash_child.py`'s runner, unchanged (same job, same `JobRunner`), over
``taquba_client.remote.open_remote_queue(URL)`` instead of the store: the owner is a
``taquba-server`` process. It prints the same lines (``READY``, ``SUB``, ``RESULT``), each only
after the call it reports returned, and appends the same execution lines to ``LOG``. With
``patient``, its client retries for long enough to outlast a restart of the server.
"""

from __future__ import annotations

import os
import sys

import trio

from crash_child import CONCURRENCY, SAFETY_EXIT, make_job, say
from taquba_client import RetryPolicy
from taquba_client.remote import open_remote_queue
from taquba_jobs import JobHandle, JobRunner

PATIENT = RetryPolicy(attempts=200, initial_delay=0.05, max_delay=0.2)


async def main(url: str, log_path: str, count: int, patient: bool) -> None:
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    work = make_job(log_fd, "child")
    async with open_remote_queue(url, retry=PATIENT if patient else None) as queue:
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
        await main(argv[0], argv[1], int(argv[2]), argv[3:] == ["patient"])


if __name__ == "__main__":
    trio.run(run, sys.argv[1:])
