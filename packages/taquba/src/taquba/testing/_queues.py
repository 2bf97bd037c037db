"""Stores and queues for tests: a private memory store, a fast test queue, and `drain`."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from .._queue import Queue, open_queue
from .._store import Store
from .._worker import Handler, _process, _resolve  # pyright: ignore[reportPrivateUsage]

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping

    from .._clock import Clock
    from .._config import QueueConfig
    from .._protocol import QueueLike


def memory_store() -> Store:
    """A fresh, private in-memory store."""
    return Store.memory()


@asynccontextmanager
async def open_test_queue(
    store: Store | None = None,
    name: str = "test",
    *,
    config: QueueConfig | None = None,
    queues: Mapping[str, QueueConfig] | None = None,
    clock: Clock | None = None,
    flush_interval: float = 0.005,
    reaper_interval: float = 0.05,
    scheduler_interval: float = 0.05,
    commit_deadline: float | None = None,
    flush_linger: float | None = None,
) -> AsyncGenerator[Queue]:
    """`open_queue` with test-friendly defaults: a memory store, 5 ms flushes, fast ticks.

    ``commit_deadline`` (default: `open_queue`'s) lets a test turn slow writes into unknown
    outcomes quickly (with `inject_faults`); ``flush_linger`` is `open_queue`'s.
    """
    # Passed only when given: the compatibility matrix runs this support against older taquba
    # releases, whose `open_queue` has no such parameter.
    extra: dict[str, Any] = {} if commit_deadline is None else {"commit_deadline": commit_deadline}
    if flush_linger is not None:
        extra["flush_linger"] = flush_linger
    async with open_queue(
        store or Store.memory(),
        name,
        config=config,
        queues=queues,
        clock=clock,
        flush_interval=flush_interval,
        reaper_interval=reaper_interval,
        scheduler_interval=scheduler_interval,
        **extra,
    ) as queue:
        yield queue


async def drain(
    queue: QueueLike, queue_name: str, handler: Handler, *, max_jobs: int | None = None
) -> int:
    """Claim and handle jobs of ``queue_name`` one by one until none is ready; return how many.

    ``queue`` is a `Queue` or any `taquba.QueueLike`.

    Scheduled jobs that are not yet due are left alone. Settlement follows the worker loops'
    rules (return: ack; `PermanentFailure`: dead-letter; other errors: nack).
    """
    fn = _resolve(handler)
    handled = 0
    while max_jobs is None or handled < max_jobs:
        claims = await queue.claim_batch(queue_name, 1)
        if not claims:
            break
        await _process(queue, claims[0], fn)
        handled += 1
    await trio.lowlevel.checkpoint()
    return handled
