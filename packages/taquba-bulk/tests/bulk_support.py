"""Helpers shared by the test modules (``bulk_support``; conftest puts it on the path)."""

from __future__ import annotations

from collections import Counter
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

import taquba
from taquba import QueueConfig
from taquba.testing import open_test_queue
from taquba_bulk import Bulk, BulkCtx, CostReport, MemorySink, Pipeline, TerminalStatus

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

# Immediate retries; long leases so nothing is reaped unless a test says so.
CONFIG = QueueConfig(retry_backoff_base=0, lease_duration=60)


@asynccontextmanager
async def opened(store: taquba.Store | None = None, **kwargs: Any) -> AsyncIterator[taquba.Queue]:
    kwargs.setdefault("config", CONFIG)
    async with open_test_queue(store, **kwargs) as queue:
        yield queue


def bulk(queue: taquba.Queue, pipeline: Pipeline[Any, Any], **kwargs: Any) -> Bulk[Any, Any]:
    """A Bulk with test defaults: a MemorySink, no progress bar, fast polling."""
    kwargs.setdefault("output", MemorySink())
    kwargs.setdefault("progress", False)
    kwargs.setdefault("poll_interval", 0.05)
    return Bulk(queue, pipeline, **kwargs)


async def until(condition: Callable[[], bool], interval: float = 0.005) -> None:
    """Wait until ``condition()`` holds (polling: it reads state no event announces)."""
    while not condition():  # noqa: ASYNC110 - polling plain state
        await trio.sleep(interval)


def sink_of(runner: Bulk[Any, Any]) -> MemorySink:
    sink = runner._output
    assert isinstance(sink, MemorySink)
    return sink


def statuses(sink: MemorySink) -> Counter[str]:
    return Counter(record.status.value for record in sink.records)


class Recorder(Pipeline[Any, Any]):
    """Counts runs and fresh computations per item; fails on command.

    ``fail_times[item]`` transient failures before succeeding; items in ``permanent`` fail
    permanently. The output is ``{"item": item, "len": len(str(item))}``; each run records
    ``calls`` cost 1 on fresh compute of its memoized phase (cached cost).
    """

    permanent_errors = (LookupError,)

    def __init__(self) -> None:
        self.runs: Counter[Any] = Counter()
        self.computed: Counter[Any] = Counter()
        self.fail_times: dict[Any, int] = {}
        self.permanent: set[Any] = set()

    async def run(self, ctx: BulkCtx[Any]) -> Any:
        item = ctx.input
        self.runs[item] += 1

        async def compute() -> tuple[int, CostReport]:
            self.computed[item] += 1
            return len(str(item)), CostReport({"calls": 1})

        length = await ctx.memoized(compute, key="len", cached_cost=True)
        if item in self.permanent:
            raise LookupError(f"no such thing as {item}")
        if self.fail_times.get(item, 0) > 0:
            self.fail_times[item] -= 1
            raise RuntimeError(f"flaky {item}")
        return {"item": item, "len": length}


def succeeded_ids(sink: MemorySink) -> set[str]:
    return {r.run_id for r in sink.records if r.status is TerminalStatus.SUCCEEDED}
