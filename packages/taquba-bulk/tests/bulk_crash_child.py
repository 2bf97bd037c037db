"""A bulk process for the crash test.

``python bulk_crash_child.py STORE_DIR STATE_DIR LABEL N [STALL]``.

It is started with ``sys.executable`` (never forked from the test process) and runs a batch of
``N`` items through a three-phase pipeline on a local-disk store. Each phase is memoized and
takes a little time, so a SIGKILL lands in the middle of some of them. It reports through:

- ``STATE_DIR/log``: one ``O_APPEND`` line per event (never torn by a SIGKILL):
  ``LABEL enter ITEM`` when the pipeline starts on an item, ``LABEL call ITEM PHASE`` when a
  phase's function runs (a paid call), ``LABEL stored ITEM PHASE`` once its memo is durable;
- stdout: ``DONE RUN_ID`` per output record (written once the item's end committed), then
  ``FINISHED <report as JSON>``.

With ``STALL``, items ``docSTALL`` and after never finish their last phase (it sleeps until the
kill), so a run killed after they started certainly has items stopped mid-way: with group
commit, items in flight tend to finish their phases together, and a kill can otherwise land
when none has a phase stored.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import trio

import taquba
from taquba import QueueConfig
from taquba_bulk import Bulk, BulkCtx, OutputRecord, Pipeline

PHASES = ("extract", "classify", "summarize")


class StdoutSink:
    def write(self, record: OutputRecord) -> None:
        print("DONE", record.run_id, flush=True)

    def flush(self) -> None:
        sys.stdout.flush()


class ThreePhases(Pipeline[str, dict[str, str]]):
    def __init__(self, log: Path, label: str, stall_from: int | None) -> None:
        self.log = log
        self.label = label
        self.stall_from = stall_from

    def note(self, *words: str) -> None:
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (" ".join((self.label, *words)) + "\n").encode())
        finally:
            os.close(fd)

    async def run(self, ctx: BulkCtx[str]) -> dict[str, str]:
        item = ctx.input
        self.note("enter", item)
        value = item
        for phase in PHASES:

            async def call(phase: str = phase, value: str = value) -> str:
                self.note("call", item, phase)
                stall = self.stall_from is not None and int(item[3:]) >= self.stall_from
                await trio.sleep(3600 if stall and phase == PHASES[-1] else 0.03)
                return f"{phase}({value})"

            value = await ctx.memoized(call, key=phase)
            self.note("stored", item, phase)
        return {"item": item, "result": value}


async def main(
    store_dir: str, state_dir: str, label: str, count: int, stall_from: int | None
) -> None:
    pipeline = ThreePhases(Path(state_dir) / "log", label, stall_from)
    config = QueueConfig(retry_backoff_base=0)
    async with taquba.open_queue(store_dir, "bulk", config=config, flush_interval=0.01) as queue:
        bulk = Bulk(
            queue,
            pipeline,
            output=StdoutSink(),
            key=lambda item: item,
            concurrency=6,
            poll_interval=0.05,
            progress=False,
        )
        report = await bulk.run([f"doc{i:03d}" for i in range(count)])
    summary: dict[str, Any] = {
        "total": report.total,
        "succeeded": report.succeeded,
        "failed": report.failed,
        "skipped": report.skipped,
        "complete": report.complete,
    }
    print("FINISHED", json.dumps(summary), flush=True)


if __name__ == "__main__":
    stall = int(sys.argv[5]) if len(sys.argv) > 5 else None
    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), stall)
