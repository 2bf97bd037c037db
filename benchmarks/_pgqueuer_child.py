"""The peer's round of `defaults`: ``python -m benchmarks._pgqueuer_child JSON``.

PgQueuer on PostgreSQL, the fastest durable Python queue measured on these machines (issue
#19), run through the same three phases as taquba's round, in its own process on its own
event loop (asyncio; uvloop, as PgQueuer's own CLI runs it, when installed):

- **enqueue**: ``producers`` closed-loop producers, each with its own connection, awaiting
  one ``Queries.enqueue`` after another (a committed, durable insert) until ``jobs`` are in;
- **drain**: a `QueueManager` with a no-op entrypoint and ``max_concurrent_tasks`` of
  ``concurrency`` (PgQueuer's default dequeue batch of 10) until all are done;
- **e2e**: an open-loop producer offers ``rate`` jobs/s for ``e2e_seconds`` while a queue
  manager runs; latency from the start of the enqueue call to the start of the entrypoint.

It prints one line, ``RESULT {json}``. PgQueuer and asyncpg come from the ``peer``
dependency group (``uv sync --group peer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any

import asyncpg
from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager

ENTRYPOINT = "bench"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def connect(dsn: str) -> Any:
    return await asyncpg.connect(dsn)


async def enqueue_phase(dsn: str, jobs: int, producers: int, payload: bytes) -> float:
    connections = [await connect(dsn) for _ in range(producers)]
    remaining = jobs

    async def producer(queries: Queries) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await queries.enqueue(ENTRYPOINT, payload, 0)

    start = time.perf_counter()
    await asyncio.gather(*(producer(Queries(AsyncpgDriver(c))) for c in connections))
    elapsed = time.perf_counter() - start
    for c in connections:
        await c.close()
    return jobs / elapsed


async def drain_phase(dsn: str, jobs: int, concurrency: int) -> float:
    connection = await connect(dsn)
    manager = QueueManager(Queries(AsyncpgDriver(connection)))
    handled = 0

    @manager.entrypoint(ENTRYPOINT)
    async def handler(job: Job) -> None:
        nonlocal handled
        handled += 1
        if handled >= jobs:
            manager.shutdown.set()

    start = time.perf_counter()
    await manager.run(max_concurrent_tasks=concurrency)
    elapsed = time.perf_counter() - start
    await connection.close()
    return jobs / elapsed


async def e2e_phase(
    dsn: str, rate: float, seconds: float, concurrency: int, payload: bytes
) -> tuple[list[float], list[float]]:
    total = int(rate * seconds)
    started: dict[int, float] = {}
    latencies: list[float] = []
    enqueues: list[float] = []
    all_done = asyncio.Event()
    worker_connection = await connect(dsn)
    manager = QueueManager(Queries(AsyncpgDriver(worker_connection)))

    @manager.entrypoint(ENTRYPOINT)
    async def handler(job: Job) -> None:
        begun = started.pop(int((job.payload or b"0").split(b":", 1)[0]), None)
        if begun is not None:
            latencies.append(time.perf_counter() - begun)
        if len(latencies) >= total:
            all_done.set()

    # One connection per job in flight at once would be unfair to nobody and costly to set
    # up; a small pool of producer connections keeps enqueues concurrent, as taquba's are.
    connections = [await connect(dsn) for _ in range(16)]
    producer_connections: asyncio.Queue[Queries] = asyncio.Queue()
    for c in connections:
        producer_connections.put_nowait(Queries(AsyncpgDriver(c)))

    async def enqueue_one(i: int) -> None:
        begun = started[i] = time.perf_counter()
        queries = await producer_connections.get()
        try:
            await queries.enqueue(ENTRYPOINT, b"%d:" % i + payload, 0)
            enqueues.append(time.perf_counter() - begun)
        finally:
            producer_connections.put_nowait(queries)

    runner = asyncio.create_task(manager.run(max_concurrent_tasks=concurrency))
    await asyncio.sleep(0.5)  # the manager's LISTEN is set up (taquba's worker is started)
    t0 = time.perf_counter()
    tasks: list[asyncio.Task[None]] = []
    for i in range(total):
        await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(enqueue_one(i)))
    await asyncio.gather(*tasks)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_done.wait(), 60)
    manager.shutdown.set()
    await runner
    for c in connections:
        await c.close()
    await worker_connection.close()
    return latencies, enqueues


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    dsn = spec["dsn"]
    payload = b"x" * int(spec["payload"])
    setup = await connect(dsn)
    await Queries(AsyncpgDriver(setup)).install()
    await setup.close()
    enqueue = await enqueue_phase(dsn, spec["jobs"], spec["producers"], payload)
    drain = await drain_phase(dsn, spec["jobs"], spec["concurrency"])
    lat, enq = await e2e_phase(dsn, spec["rate"], spec["e2e_seconds"], spec["concurrency"], payload)
    return {
        "enqueue": enqueue,
        "drain": drain,
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "e2e_jobs": len(lat),
        "enq_p50": pct(enq, 50),
        "enq_p99": pct(enq, 99),
    }


def run(spec: dict[str, Any]) -> dict[str, Any]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main(spec))
    return uvloop.run(main(spec))


if __name__ == "__main__":
    result = run(json.loads(sys.argv[1]))
    print("RESULT", json.dumps(result), flush=True)
