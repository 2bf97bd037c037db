"""sharding: several stores (each with its own queue database) in one process.

For each shard count K (default 1, 2, 4), K fresh stores are opened in this process and:

- ``enqueue``: ``--producers`` closed-loop producers per shard call ``enqueue`` for
  ``--seconds`` (durable enqueue throughput; K=1 is "N concurrent producers on one queue");
- ``drain``: each shard is prefilled with ``--jobs`` jobs and all shards are drained at once,
  ``--concurrency`` no-op workers per shard (claim + durable ack).

Throughput scales with K only if one store was bound by something other than this process's
CPU (flush interval, claim lock); on a 2-core machine with one Python thread it does not.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import trio

from benchmarks import _harness as h
from benchmarks.claim_drain import prefill

if TYPE_CHECKING:
    import argparse

NAME = "sharding"
DESCRIPTION = "K stores in one process: does enqueue / drain throughput scale with K?"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    h.add(parser, "--shards", "1,2,4", "shard counts to run")
    h.add(parser, "--producers", 16, "closed-loop producers per shard (enqueue workload)")
    h.add(parser, "--seconds", 4.0, "seconds of the enqueue workload per shard count")
    h.add(parser, "--jobs", 4000, "jobs per shard (drain workload)")
    h.add(parser, "--concurrency", 64, "workers per shard (drain workload)")
    h.add(parser, "--payload", 64, "payload bytes")
    h.add(parser, "--workloads", "enqueue,drain", "which workloads: enqueue, drain")


async def enqueue_workload(queues: list[Any], ctx: h.Context) -> tuple[float, list[float]]:
    args = ctx.args
    payload = b"x" * args.payload
    lat: list[float] = []
    count = 0
    deadline = time.perf_counter() + args.seconds

    async def producer(queue: Any) -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            await queue.enqueue("q", payload)
            lat.append(time.perf_counter() - t)
            count += 1

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for queue in queues:
            for _ in range(args.producers):
                nursery.start_soon(producer, queue)
    return count / (time.perf_counter() - start), lat


async def drain_workload(queues: list[Any], ctx: h.Context) -> tuple[float, list[float]]:
    import taquba

    args = ctx.args
    payload = b"x" * args.payload
    for queue in queues:
        await prefill(queue, "d", args.jobs, payload, 500)
    per_shard: list[float] = []

    async def drain(queue: Any) -> None:
        handled = 0

        async def handler(job: Any, lease: Any) -> None:
            nonlocal handled
            handled += 1
            if handled >= args.jobs:
                worker.shutdown()

        worker = taquba.Worker(
            queue, "d", handler, concurrency=args.concurrency, poll_interval=0.05
        )
        t = time.perf_counter()
        await worker.serve()
        per_shard.append(args.jobs / (time.perf_counter() - t))

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for queue in queues:
            nursery.start_soon(drain, queue)
    return args.jobs * len(queues) / (time.perf_counter() - start), per_shard


async def run(ctx: h.Context) -> h.Report:
    import taquba

    args = ctx.args
    shard_counts = h.int_list(args.shards)
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    report = h.Report(
        NAME,
        {
            "shards": args.shards,
            "producers_per_shard": args.producers,
            "seconds": args.seconds,
            "jobs_per_shard": args.jobs,
            "concurrency_per_shard": args.concurrency,
            "payload": args.payload,
        },
    )
    table = report.table(
        "Throughput by number of stores",
        "workload",
        "stores",
        "total jobs/s",
        "x ceiling",
        "vs 1 store",
        "per store jobs/s",
        "enqueue p50 ms",
        "enqueue p99 ms",
    )
    base: dict[str, float] = {}
    for workload in workloads:
        for k in shard_counts:
            async with AsyncExitStack() as stack:
                queues = [
                    await stack.enter_async_context(
                        taquba.open_queue(
                            ctx.stores.make(f"shard{k}-{i}"), "shard", flush_interval=ctx.flush
                        )
                    )
                    for i in range(k)
                ]
                if workload == "enqueue":
                    total, lat = await enqueue_workload(queues, ctx)
                    p50, p99 = h.ms(h.pct(lat, 50)), h.ms(h.pct(lat, 99))
                else:
                    total, _ = await drain_workload(queues, ctx)
                    p50 = p99 = "-"
            base.setdefault(workload, total)
            table.add(
                workload,
                k,
                h.rate(total),
                h.ratio(total, ctx.ceiling),
                f"{total / base[workload]:.2f}",
                h.rate(total / k),
                p50,
                p99,
            )
            print(f"[sharding] {workload} x{k}: {total:,.0f} jobs/s", flush=True)
            if k == 1 and workload == "enqueue":
                report.headline.append(
                    f"{args.producers} producers, 1 store: {h.rate(total)} durable enqueues/s"
                )
        best = max((float(r[2].replace(",", "")), r[1]) for r in table.rows if r[0] == workload)
        report.headline.append(
            f"{workload}: best {h.rate(best[0])} jobs/s with {best[1]} stores "
            f"({best[0] / base[workload]:.2f} x one store)"
        )
    return report
