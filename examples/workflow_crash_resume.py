"""Kill it, start it again, it resumes: ``uv run python examples/workflow_crash_resume.py``.

One run of five slow stages on a local-disk store (default ``./workflow-crash-demo``). Each
stage does one second of "expensive work" and memoizes its result. Interrupt the process at any
point (Ctrl-C, or ``kill -9``) and run the same command again: the run resumes at the stage that
was in progress, reusing its memoized work, and ends exactly once. Run it once more after the
end and it only reports the outcome. The payloads are raw ``bytes`` (the runner declares
``Step[bytes]``): stored as is, with no encoding. ``--reset`` deletes the store and starts over.

``--crash-at N`` makes the process SIGKILL itself in stage ``N`` after memoizing its work, and
``--work-seconds`` shortens the work (the tests use both to script the demo).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import time
from pathlib import Path

import trio

import taquba
from taquba_workflow import (
    Continue,
    RunOutcome,
    RunSpec,
    Runtime,
    Step,
    StepFunction,
    StepOutcome,
    Succeed,
)

RUN_ID = "crash-demo"
STAGES = ["fetch", "parse", "enrich", "summarise", "publish"]


def make_runner(crash_at: int | None, work_seconds: float) -> StepFunction[bytes, bytes]:
    """The step runner: each stage memoizes its work, so a restarted stage reuses it."""

    async def run_step(step: Step[bytes]) -> StepOutcome[bytes, bytes]:
        stage = STAGES[step.number]
        result = await step.memo.get("result")
        if result is None:
            print(f"[{stage}] working (attempt {step.attempt}) ...", flush=True)
            await trio.sleep(work_seconds)  # the expensive part: an LLM call, a paid API, ...
            result = f"{stage}@{time.strftime('%H:%M:%S')}".encode()
            await step.memo.put("result", result)  # durable before we go on
            print(f"[{stage}] done, result memoized", flush=True)
        else:
            print(f"[{stage}] memo hit after a restart: {result.decode()}", flush=True)
        if crash_at == step.number:
            print(f"[{stage}] crashing now (SIGKILL)", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        trail = step.payload + result + b" "
        if step.number + 1 < len(STAGES):
            return Continue(trail)
        return Succeed(trail)

    return run_step


async def on_end(outcome: RunOutcome[bytes]) -> None:
    """The terminal hook: report how the run ended."""
    print(f"run {outcome.run_id} {outcome.status.value}: {(outcome.result or b'').decode()}")


async def main(directory: Path, crash_at: int | None, work_seconds: float) -> None:
    """Submit the run (or resume it) and serve it until it has ended."""
    async with taquba.open_queue(directory, "demo", flush_interval=0.02) as queue:
        runtime = Runtime(queue, make_runner(crash_at, work_seconds), on_end, poll_interval=0.1)
        status = await runtime.status(RUN_ID)
        if status is not None and status.state.terminal:
            print(f"run {RUN_ID} already {status.state.value} (use --reset to start over)")
            return
        if status is None:
            await runtime.submit(RunSpec(input=b"", run_id=RUN_ID))
            print(f"submitted run {RUN_ID}: {len(STAGES)} stages; interrupt me and rerun")
        else:
            print(f"resuming run {RUN_ID} at stage {STAGES[status.step]}")
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.serve)
            final = await runtime.wait_finished(RUN_ID)
            assert final is not None
            print(f"finished: {final.state.value} at stage {STAGES[final.step]}")
            runtime.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("directory", nargs="?", default="workflow-crash-demo", type=Path)
    parser.add_argument("--reset", action="store_true", help="delete the store first")
    parser.add_argument("--crash-at", type=int, choices=range(len(STAGES)), default=None)
    parser.add_argument("--work-seconds", type=float, default=1.0, help="each stage's work")
    args = parser.parse_args()
    if args.reset:
        shutil.rmtree(args.directory, ignore_errors=True)
    try:
        trio.run(main, args.directory.resolve(), args.crash_at, args.work_seconds)
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume")
