"""claim_drain: prefill N jobs, drain them with C concurrent no-op handlers.

Two drain loops, each on its own freshly prefilled database:

- ``worker``: a `taquba.Worker` with concurrency C. Its ``claim_batch`` and ``ack_with``
  calls are timed by wrapping those two methods on the `Queue` instance (the core is not
  modified). The drain ends when the worker has been shut down after the N-th handler call
  and has settled every job in flight, so jobs/s counts claim + durable ack.
- ``manual``: this module's own loop, the same shape as the worker loop: claim a batch sized
  to the free slots, ack every claim concurrently in its own task, claim again as acks finish.

Claim latency is per ``claim_batch`` call; it is reported for the calls that took the first,
middle and last thousand jobs, and per tenth of the drain, to show whether it stays flat while
claimed jobs leave tombstones behind the claim cursor.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import trio

from benchmarks import _harness as h

if TYPE_CHECKING:
    import argparse

NAME = "claim_drain"
DESCRIPTION = "prefill N jobs, drain with C workers: jobs/s and flat claim latency"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    h.add(parser, "--jobs", 20000, "jobs to prefill and drain")
    h.add(parser, "--concurrency", 64, "jobs in flight (worker concurrency)")
    h.add(parser, "--mode", "both", "worker, manual or both", choices=["worker", "manual", "both"])
    h.add(parser, "--payload", 64, "payload bytes")
    h.add(parser, "--prefill-batch", 500, "jobs per enqueue_batch call while prefilling")


class ClaimLog:
    """Per claim_batch call: (jobs claimed before it, jobs it got, latency)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, float]] = []
        self.claimed = 0
        self.acks: list[float] = []

    def add(self, got: int, latency: float) -> None:
        if got:
            self.calls.append((self.claimed, got, latency))
            self.claimed += got

    def between(self, lo: int, hi: int) -> list[float]:
        """Latencies of the calls whose first job index lies in [lo, hi)."""
        return [lat for first, _, lat in self.calls if lo <= first < hi]


async def prefill(queue: Any, name: str, jobs: int, payload: bytes, chunk: int) -> float:
    from taquba import EnqueueRequest

    start = time.perf_counter()
    for base in range(0, jobs, chunk):
        n = min(chunk, jobs - base)
        await queue.enqueue_batch([EnqueueRequest(queue_name=name, payload=payload)] * n)
    return time.perf_counter() - start


def instrument(queue: Any, log: ClaimLog) -> None:
    """Time ``claim_batch`` and ``ack_with`` by wrapping them on this Queue instance."""
    claim_batch = queue.claim_batch
    ack_with = queue.ack_with

    async def timed_claim(name: str, max_jobs: int, **kw: Any) -> Any:
        start = time.perf_counter()
        claims = await claim_batch(name, max_jobs, **kw)
        log.add(len(claims), time.perf_counter() - start)
        return claims

    async def timed_ack(claim: Any, effects: Any) -> Any:
        start = time.perf_counter()
        try:
            return await ack_with(claim, effects)
        finally:
            log.acks.append(time.perf_counter() - start)

    queue.claim_batch = timed_claim
    queue.ack_with = timed_ack


async def drain_worker(queue: Any, name: str, jobs: int, concurrency: int, log: ClaimLog) -> float:
    import taquba

    instrument(queue, log)
    handled = 0

    async def handler(job: Any, lease: Any) -> None:
        nonlocal handled
        handled += 1
        if handled >= jobs:
            worker.shutdown()

    worker = taquba.Worker(queue, name, handler, concurrency=concurrency, poll_interval=0.05)
    start = time.perf_counter()
    await worker.serve()
    return time.perf_counter() - start


async def drain_manual(queue: Any, name: str, jobs: int, concurrency: int, log: ClaimLog) -> float:
    in_flight = 0
    done = 0
    freed = trio.Event()

    async def ack(claim: Any) -> None:
        nonlocal in_flight, done, freed
        t0 = time.perf_counter()
        await queue.ack(claim)
        log.acks.append(time.perf_counter() - t0)
        in_flight -= 1
        done += 1
        freed.set()
        freed = trio.Event()

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        while log.claimed < jobs:
            free = concurrency - in_flight
            if free == 0:
                await freed.wait()
                continue
            t0 = time.perf_counter()
            claims = await queue.claim_batch(name, free)
            log.add(len(claims), time.perf_counter() - t0)
            for claim in claims:
                in_flight += 1
                nursery.start_soon(ack, claim)
            if not claims:
                await trio.sleep(0.001)
    return time.perf_counter() - start


async def one_drain(ctx: h.Context, mode: str, report: h.Report) -> dict[str, Any]:
    import taquba

    args = ctx.args
    store = ctx.stores.make(f"drain-{mode}")
    payload = b"x" * args.payload
    log = ClaimLog()
    async with taquba.open_queue(store, "drain", flush_interval=ctx.flush) as queue:
        fill = await prefill(queue, "q", args.jobs, payload, args.prefill_batch)
        print(f"[claim_drain] {mode}: prefilled {args.jobs} in {fill:.1f} s", flush=True)
        fn = drain_worker if mode == "worker" else drain_manual
        elapsed = await fn(queue, "q", args.jobs, args.concurrency, log)
        stats = await queue.stats("q")
    rate = args.jobs / elapsed
    print(f"[claim_drain] {mode}: {rate:,.0f} jobs/s", flush=True)
    return {
        "mode": mode,
        "rate": rate,
        "elapsed": elapsed,
        "fill": args.jobs / fill,
        "log": log,
        "left": stats.pending + stats.claimed,
    }


async def run(ctx: h.Context) -> h.Report:
    args = ctx.args
    modes = ["worker", "manual"] if args.mode == "both" else [args.mode]
    report = h.Report(
        NAME,
        {
            "jobs": args.jobs,
            "concurrency": args.concurrency,
            "payload": args.payload,
            "prefill_batch": args.prefill_batch,
        },
    )
    results = [await one_drain(ctx, mode, report) for mode in modes]

    summary = report.table(
        "Drain",
        "mode",
        "jobs/s",
        "x ceiling",
        "drain s",
        "claim calls",
        "jobs/call",
        "claim p50 ms",
        "claim p99 ms",
        "ack p50 ms",
        "ack p99 ms",
        "prefill jobs/s",
    )
    n = args.jobs
    mid = n // 2
    segments: list[tuple[str, int, int]] = [
        ("first 1000 jobs", 0, min(1000, n)),
        ("middle 1000", max(0, mid - 500), mid + 500),
        ("last 1000", max(0, n - 1000), n),
    ] + [(f"{10 * i}-{10 * i + 10}%", n * i // 10, n * (i + 1) // 10) for i in range(10)]
    headers = ["jobs claimed"]
    for r in results:
        headers += [f"{r['mode']} calls", f"{r['mode']} p50 ms", f"{r['mode']} p99 ms"]
    along = report.table(
        "Claim latency per claim_batch call along the drain (calls whose first job falls in "
        "the segment)",
        *headers,
    )
    for label, lo, hi in segments:
        cells: list[str] = [label]
        for r in results:
            values = r["log"].between(lo, hi)
            cells += [str(len(values)), h.ms(h.pct(values, 50)), h.ms(h.pct(values, 99))]
        along.add(*cells)
    for r in results:
        log: ClaimLog = r["log"]
        lats = [lat for _, _, lat in log.calls]
        summary.add(
            r["mode"],
            h.rate(r["rate"]),
            h.ratio(r["rate"], ctx.ceiling),
            f"{r['elapsed']:.1f}",
            len(log.calls),
            f"{log.claimed / max(1, len(log.calls)):.1f}",
            h.ms(h.pct(lats, 50)),
            h.ms(h.pct(lats, 99)),
            h.ms(h.pct(log.acks, 50)),
            h.ms(h.pct(log.acks, 99)),
            h.rate(r["fill"]),
        )
        if r["left"]:
            report.notes.append(f"{r['mode']}: {r['left']} jobs left pending/claimed after drain")
    best = max(results, key=lambda r: r["rate"])
    report.headline.append(
        f"drain {h.rate(best['rate'])} jobs/s ({best['mode']}), "
        f"{h.ratio(best['rate'], ctx.ceiling)} x ceiling"
    )
    report.notes.append(
        "claim_batch calls are batched to the free slots, so jobs/call shows how many acks "
        "finished together (one WAL flush settles many acks: group commit)."
    )
    return report
