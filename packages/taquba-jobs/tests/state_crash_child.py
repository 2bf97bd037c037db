"""A runner process for the per-job state crash test: ``python state_crash_child.py STORE``.

It submits one call of job ``crash.state`` (idempotency key ``state/1``, header
``tenant=acme``) and serves it. Attempt 1 stages ``["fetched"]`` and fails (retried at once);
attempt 2 stages ``["fetched", "parsed"]`` and hangs, so the test can SIGKILL the process
with that staging never stored. One flushed stdout line per event, printed only after the
call it reports returned:

- ``SUB <job_id>`` after ``submit`` returned (durable);
- ``ATTEMPT <n> <loaded state as JSON> <headers as JSON>`` once an attempt loaded its state
  (and, for attempt 2, staged its own).

It exits on its own after `SAFETY_EXIT` seconds in case the test dies without killing it.
"""

from __future__ import annotations

import json
import sys

import trio

import taquba
from taquba import QueueConfig
from taquba_jobs import Job, JobContext, JobRunner

SAFETY_EXIT = 120.0
FAST = {"flush_interval": 0.01, "reaper_interval": 3600.0, "scheduler_interval": 0.05}
CONFIG = QueueConfig(lease_duration=600, retry_backoff_base=0, max_attempts=5)


def say(*words: object) -> None:
    print(*words, flush=True)


async def work(ctx: JobContext, value: int) -> list[str]:
    loaded = await ctx.load_state(list[str])
    if ctx.attempt == 1:
        ctx.stage_state(["fetched"])
        say("ATTEMPT", ctx.attempt, json.dumps(loaded), json.dumps(dict(ctx.headers)))
        raise ConnectionError("first attempt fails")
    ctx.stage_state([*(loaded or []), "parsed"])  # lost with the process
    say("ATTEMPT", ctx.attempt, json.dumps(loaded), json.dumps(dict(ctx.headers)))
    await trio.sleep_forever()
    raise AssertionError("unreachable")


async def main(store_dir: str) -> None:
    job = Job(work, name="crash.state")
    async with taquba.open_queue(store_dir, "crash", config=CONFIG, **FAST) as queue:
        runner = JobRunner(queue, [job], poll_interval=0.05)
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.serve)
            handle = await runner.submit(
                job, 1, idempotency_key="state/1", headers={"tenant": "acme"}
            )
            say("SUB", handle.job_id)


async def run(argv: list[str]) -> None:
    with trio.move_on_after(SAFETY_EXIT):
        await main(argv[0])


if __name__ == "__main__":
    trio.run(run, sys.argv[1:])
