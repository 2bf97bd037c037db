"""payload_sweep: throughput, bytes written and event-loop cost by payload size.

For each size, on a fresh database of its own:

1. Event-loop time of one ``enqueue`` on an idle queue, ``--loop-samples`` times: a trio
   instrument times every step of the task that runs the call (wall time of the steps = time
   the event loop could run nothing else; also the thread CPU time of those steps, and the
   longest single step). The issue's target is < 5 ms for 1 MiB.
2. Throughput: ``--producers`` closed-loop producers enqueue for ``--seconds`` (or until
   ``--max-mib`` of payload) while a `taquba.Worker` claims and acks; then the backlog
   drains and the queue is closed. Bytes written are the growth of the store directory (file
   stores only) and this process's ``/proc/self/io`` wchar delta; amplification is bytes
   written per payload byte enqueued.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import trio

from benchmarks import _harness as h

if TYPE_CHECKING:
    import argparse

NAME = "payload_sweep"
DESCRIPTION = "throughput and bytes written per payload byte, 64 B .. 4 MiB; enqueue loop time"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    h.add(parser, "--sizes", "64,1k,16k,256k,1m,4m", "payload sizes (k/m = KiB/MiB)")
    h.add(parser, "--seconds", 4.0, "seconds of load per size")
    h.add(parser, "--producers", 8, "closed-loop producers")
    h.add(parser, "--workers", 32, "worker concurrency")
    h.add(parser, "--max-mib", 256.0, "stop producing a size after this much payload")
    h.add(parser, "--loop-samples", 10, "serial enqueues timed for event-loop cost")


class StepTimer(trio.abc.Instrument):
    """Times the steps of one task: total wall, total thread CPU, longest step."""

    def __init__(self) -> None:
        self.task: trio.lowlevel.Task | None = None
        self.wall = 0.0
        self.cpu = 0.0
        self.longest = 0.0
        self.steps = 0
        self._t = 0.0
        self._c = 0.0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        # every task: the target task is only known once its first step has begun
        self._t = time.perf_counter()
        self._c = time.thread_time()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            d = time.perf_counter() - self._t
            self.wall += d
            self.cpu += time.thread_time() - self._c
            self.longest = max(self.longest, d)
            self.steps += 1


async def loop_cost(queue: Any, payload: bytes, samples: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"wall": [], "cpu": [], "longest": [], "call": []}
    for _ in range(samples):
        timer = StepTimer()

        async def one(timer: StepTimer = timer) -> None:
            timer.task = trio.lowlevel.current_task()
            t = time.perf_counter()
            await queue.enqueue("q", payload)
            out["call"].append(time.perf_counter() - t)

        trio.lowlevel.add_instrument(timer)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(one)
        finally:
            trio.lowlevel.remove_instrument(timer)
        out["wall"].append(timer.wall)
        out["cpu"].append(timer.cpu)
        out["longest"].append(timer.longest)
    return out


async def drain_cost(queue: Any, samples: int) -> dict[str, list[float]]:
    """Event-loop time of claiming and acking one job, ``samples`` times (as `loop_cost`)."""
    out: dict[str, list[float]] = {"wall": [], "cpu": [], "longest": [], "call": []}
    for _ in range(samples):
        timer = StepTimer()

        async def one(timer: StepTimer = timer) -> None:
            timer.task = trio.lowlevel.current_task()
            t = time.perf_counter()
            claim = await queue.claim("q")
            assert claim is not None
            await queue.ack(claim)
            out["call"].append(time.perf_counter() - t)

        trio.lowlevel.add_instrument(timer)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(one)
        finally:
            trio.lowlevel.remove_instrument(timer)
        out["wall"].append(timer.wall)
        out["cpu"].append(timer.cpu)
        out["longest"].append(timer.longest)
    return out


async def one_size(
    ctx: h.Context, nbytes: int, config: Any = None, label: str = ""
) -> dict[str, Any]:
    """One size on a fresh database; ``config`` (a `QueueConfig`) for the queue if given."""
    import taquba

    args = ctx.args
    spec = ctx.stores.spec(f"payload-{nbytes}{label}")
    store = h.store_from_spec(spec)
    payload = bytes(range(256)) * (nbytes // 256) + b"p" * (nbytes % 256)
    local = ctx.stores.kind == "file"
    enq_lat: list[float] = []
    done = 0
    enqueued = 0
    max_jobs = max(1, int(args.max_mib * 2**20 // nbytes))

    async def handler(job: Any, lease: Any) -> None:
        nonlocal done
        done += 1

    options: dict[str, Any] = {} if config is None else {"config": config}
    async with taquba.open_queue(store, "payload", flush_interval=ctx.flush, **options) as queue:
        cost = await loop_cost(queue, payload, args.loop_samples)
        # drain the loop-cost jobs before measuring bytes
        drain = await drain_cost(queue, args.loop_samples)
        before = h.dir_bytes(spec["url"]) if local else 0
        wchar0 = h.proc_write_chars()
        shutdown = trio.Event()
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            await h.start_worker(
                nursery, queue, "q", handler, concurrency=args.workers, shutdown=shutdown
            )
            deadline = start + args.seconds

            async def producer() -> None:
                nonlocal enqueued
                while time.perf_counter() < deadline and enqueued < max_jobs:
                    enqueued += 1
                    t = time.perf_counter()
                    await queue.enqueue("q", payload)
                    enq_lat.append(time.perf_counter() - t)

            async with trio.open_nursery() as producers:
                for _ in range(args.producers):
                    producers.start_soon(producer)
            produced_in = time.perf_counter() - start
            with trio.move_on_after(120):
                while done < enqueued:  # noqa: ASYNC110 - a benchmark may poll
                    await trio.sleep(0.01)
            elapsed = time.perf_counter() - start
            shutdown.set()
            nursery.cancel_scope.cancel()
    wchar1 = h.proc_write_chars()
    after = h.dir_bytes(spec["url"]) if local else 0
    return {
        "size": nbytes,
        "cost": cost,
        "drain": drain,
        "enqueued": enqueued,
        "done": done,
        "produced_in": produced_in,
        "elapsed": elapsed,
        "enq_lat": enq_lat,
        "disk": after - before if local else None,
        "wchar": (wchar1 - wchar0) if local and wchar0 is not None and wchar1 is not None else None,
    }


async def run(ctx: h.Context) -> h.Report:
    args = ctx.args
    sizes = h.int_list(args.sizes)
    report = h.Report(
        NAME,
        {
            "sizes": args.sizes,
            "seconds": args.seconds,
            "producers": args.producers,
            "workers": args.workers,
            "max_mib": args.max_mib,
            "loop_samples": args.loop_samples,
        },
    )
    loop = report.table(
        "Event-loop time of one enqueue on an idle queue (median of samples; ms)",
        "payload",
        "loop time",
        "thread CPU",
        "longest step",
        "call latency",
    )
    tput = report.table(
        "Throughput (producers closed-loop, workers claim + ack) and bytes written",
        "payload",
        "enqueued",
        "enq jobs/s",
        "enq MiB/s",
        "x ceiling",
        "enq p50 ms",
        "enq p99 ms",
        "done jobs/s",
        "disk bytes/job",
        "disk amp",
        "wchar amp",
    )
    for nbytes in sizes:
        r = await one_size(ctx, nbytes)
        c = r["cost"]
        loop.add(
            h.size(nbytes),
            h.ms(h.median(c["wall"])),
            h.ms(h.median(c["cpu"])),
            h.ms(h.median(c["longest"])),
            h.ms(h.median(c["call"])),
        )
        enq_rate = r["enqueued"] / r["produced_in"]
        payload_total = r["enqueued"] * nbytes
        disk = r["disk"]
        tput.add(
            h.size(nbytes),
            r["enqueued"],
            h.rate(enq_rate),
            f"{enq_rate * nbytes / 2**20:.1f}",
            h.ratio(enq_rate, ctx.ceiling),
            h.ms(h.pct(r["enq_lat"], 50)),
            h.ms(h.pct(r["enq_lat"], 99)),
            h.rate(r["done"] / r["elapsed"]),
            f"{disk / max(1, r['enqueued']):,.0f}" if disk is not None else "-",
            f"{disk / payload_total:.2f}" if disk is not None else "-",
            f"{r['wchar'] / payload_total:.2f}" if r["wchar"] is not None else "-",
        )
        print(
            f"[payload_sweep] {h.size(nbytes)}: {enq_rate:,.0f} enq/s, loop "
            f"{h.ms(h.median(c['wall']))} ms/enqueue",
            flush=True,
        )
        if nbytes == 1 << 20:
            report.headline.append(
                f"1 MiB enqueue: {h.ms(h.median(c['wall']))} ms of event-loop time (longest "
                f"step {h.ms(h.median(c['longest']))} ms; target < 5 ms)"
            )
    report.notes.append(
        "disk amp = store directory growth / payload bytes enqueued (WAL objects, L0 SSTs and "
        "compaction output; nothing is garbage-collected within a run). wchar amp counts every "
        "byte this process wrote (file stores: the same writes through the OS)."
    )
    return report
