"""Helpers shared by the test modules (imported as ``wf_support``; conftest puts it on the path)."""

from __future__ import annotations

from collections import Counter
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

import taquba
from taquba import JobStatus, QueueConfig
from taquba.testing import drain, open_test_queue
from taquba_workflow import RunOutcome, Runtime

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

# Immediate retries so `drain` sees them; long leases so nothing is reaped unless a test says so.
CONFIG = QueueConfig(retry_backoff_base=0, lease_duration=60)


class Hook:
    """A terminal hook that records every call; ``fail`` makes the next calls raise."""

    def __init__(self) -> None:
        self.outcomes: list[RunOutcome] = []
        self.fail = 0
        self.seen_status: list[Any] = []
        self.runtime: Runtime | None = None
        self.called = trio.Event()

    async def on_termination(self, outcome: RunOutcome) -> None:
        self.outcomes.append(outcome)
        self.called.set()
        if self.runtime is not None:  # what the database says while the hook runs
            self.seen_status.append(await self.runtime.status(outcome.run_id))
        if self.fail:
            self.fail -= 1
            raise RuntimeError("hook failed")

    async def wait_calls(self, n: int = 1) -> None:
        """Wait until the hook was called ``n`` times (notifications run on their own)."""
        while len(self.outcomes) < n:
            await self.called.wait()
            self.called = trio.Event()

    def calls(self, run_id: str) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.run_id == run_id]


async def run_all(runtime: Runtime) -> int:
    """Process every claimable step, control and notification job, one at a time.

    Returns how many step and control jobs it handled (notifications are not counted).
    """
    total = 0
    while True:
        steps = await drain(runtime.queue, runtime.queue_name, runtime.process)
        hooks = await drain(runtime.queue, runtime.hook_queue_name, runtime.process)
        total += steps
        if not steps and not hooks:
            return total


async def run_steps(runtime: Runtime) -> int:
    """Process every claimable step and control job (not the terminal notifications)."""
    return await drain(runtime.queue, runtime.queue_name, runtime.process)


async def live_jobs(queue: taquba.Queue, name: str = "workflow") -> Counter[str]:
    """How many jobs of ``name`` are in each state (done is cumulative)."""
    stats = await queue.stats(name)
    return Counter(
        {
            "pending": stats.pending,
            "scheduled": stats.scheduled,
            "claimed": stats.claimed,
            "dead": stats.dead,
            "done": stats.done,
        }
    )


@asynccontextmanager
async def opened(store: taquba.Store | None = None, **kwargs: Any) -> AsyncIterator[taquba.Queue]:
    kwargs.setdefault("config", CONFIG)
    async with open_test_queue(store, **kwargs) as queue:
        yield queue


async def jobs_in(queue: taquba.Queue, status: JobStatus, name: str = "workflow") -> list[Any]:
    page = await queue.list_jobs(name, status, limit=1000)
    return page.jobs
