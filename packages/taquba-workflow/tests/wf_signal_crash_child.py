"""A process for the signal crash tests: ``python wf_signal_crash_child.py STORE_DIR POINT``.

It opens a local-disk store, starts a run that waits for a signal (unless one is waiting
already), and sends a signal that stops at ``POINT`` (printing ``AT <POINT>``) until the test
kills it with SIGKILL: ``wake`` stops after the buffer write, before the wake; ``cleanup``
stops after the wake, before the signal's clean-up.
"""

from __future__ import annotations

import sys
from typing import Any

import trio

import taquba
from taquba.testing import drain
from taquba_workflow import Continue, RunSpec, Runtime, Step, StepOutcome, Succeed

KEY = "approval:crash"
FAST = {"flush_interval": 0.01, "reaper_interval": 3600.0, "scheduler_interval": 3600.0}


async def run_step(step: Step[bytes]) -> StepOutcome[bytes, bytes]:
    if step.number == 0:
        return Continue(b"", on_signal=KEY, timeout=60)
    return Succeed(step.signal if step.signal is not None else b"<timed out>")


async def main(store_dir: str, point: str) -> None:
    async with taquba.open_queue(store_dir, "signals", **FAST) as queue:
        runtime = Runtime(queue, run_step)
        await runtime.submit(RunSpec(input=b"", run_id="waiting"))
        await drain(queue, runtime.queue_name, runtime.process)  # now waiting
        real_wake = queue.wake_scheduled

        async def stop() -> None:
            print(f"AT {point}", flush=True)
            await trio.sleep_forever()

        async def wake(job_id: str, payload: bytes | None = None) -> Any:
            if point == "wake":
                await stop()
            woken = await real_wake(job_id, payload)
            if point == "cleanup":
                await stop()
            return woken

        queue.wake_scheduled = wake  # type: ignore[method-assign]
        await runtime.signal(KEY, b"sent before the crash")


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
