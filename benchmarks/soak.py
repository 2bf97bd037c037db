"""soak: a steady offered rate for a long time, with the defaults; does anything drift?

On one fresh database opened with the defaults (``open_queue(path)``, no knobs), an open-loop
producer offers ``--rate`` (1000) jobs/s of ``--payload`` bytes for ``--seconds`` while a
`taquba.Worker` (``--concurrency``) runs no-op handlers. Per ``--window`` (10 s): the achieved
rate (acks per second), claim latency p50/p99 per ``claim_batch`` call (timed by wrapping it
on the `Queue` instance, as ``claim_drain`` does), end-to-end latency p50/p99 (enqueue call
start to handler start), and at the window's end this process's RSS and the store's bytes and
objects (file stores). Flatness is the last full window against the first (after a warm-up
window is skipped): a ratio near 1 is flat.

The short default shows the shape; the issue's run is ``--seconds 600``. The common ceiling
is not measured: the rate is offered, not a maximum.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any

import trio

from benchmarks import _harness as h
from benchmarks.storage_growth import rss_bytes, walk

if TYPE_CHECKING:
    import argparse

NAME = "soak"
DESCRIPTION = "a steady rate (1000 jobs/s) for a long time: flat rate, latency, RSS, store?"

QUEUE = "bench"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    h.add(parser, "--rate", 1000.0, "offered jobs/s")
    h.add(parser, "--seconds", 60.0, "seconds of load (the issue's run: 600)")
    h.add(parser, "--window", 10.0, "seconds per reported window")
    h.add(parser, "--payload", 64, "payload bytes")
    h.add(parser, "--concurrency", 64, "worker concurrency")


async def run(ctx: h.Context) -> h.Report:
    import taquba

    args = ctx.args
    ctx.flush = 0.1  # the defaults: SlateDB's 100 ms timer (the entry's header)
    spec = ctx.stores.spec("soak")
    path = spec["url"] if ctx.stores.kind == "file" else None
    payload = b"x" * args.payload
    total = int(args.rate * args.seconds)
    started: dict[str, float] = {}
    windows: h.Windows | None = None
    gauges: list[dict[str, float]] = []
    done = trio.Event()
    acked = 0

    async def handler(job: Any, lease: Any) -> None:
        nonlocal acked
        begun = started.pop(job.id, None)
        if begun is not None and windows is not None:
            windows.sample("e2e", time.perf_counter() - begun)
        acked += 1
        if windows is not None:
            windows.count("acked")
        if acked >= total:
            done.set()

    async def enqueue_one(job_id: str) -> None:
        started[job_id] = time.perf_counter()
        await queue.enqueue(QUEUE, payload, job_id=job_id)

    async with taquba.open_queue(h.store_from_spec(spec)) as queue:
        claim_batch = queue.claim_batch

        async def timed_claim(name: str, max_jobs: int, **kw: Any) -> Any:
            t = time.perf_counter()
            claims = await claim_batch(name, max_jobs, **kw)
            if claims and windows is not None:
                windows.sample("claim", time.perf_counter() - t)
            return claims

        setattr(queue, "claim_batch", timed_claim)  # noqa: B010 (wrap this instance's method)
        worker = taquba.Worker(queue, QUEUE, handler, concurrency=args.concurrency)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            t0 = time.perf_counter()
            windows = h.Windows(t0, args.window)

            async def gauge() -> None:
                assert windows is not None
                i = 0
                while True:
                    i += 1
                    await trio.sleep(max(0.0, t0 + i * args.window - time.perf_counter()))
                    row: dict[str, float] = {
                        "rss": rss_bytes(),
                        "blocks": float(sys.getallocatedblocks()),
                    }
                    if path is not None:
                        nbytes, objects, _, _ = await trio.to_thread.run_sync(walk, path)
                        row.update(bytes=nbytes, objects=objects)
                    gauges.append(row)

            nursery.start_soon(gauge)
            async with trio.open_nursery() as producers:
                for i in range(total):
                    await trio.sleep(max(0.0, t0 + i / args.rate - time.perf_counter()))
                    producers.start_soon(enqueue_one, f"soak-{i:09d}")
            with trio.move_on_after(60):
                await done.wait()
            nursery.cancel_scope.cancel()

    report = h.Report(
        NAME,
        {
            "rate": args.rate,
            "seconds": args.seconds,
            "window": args.window,
            "payload": args.payload,
            "concurrency": args.concurrency,
        },
    )
    assert windows is not None
    n_windows = int(args.seconds // args.window)
    table = report.table(
        "per window",
        "window s",
        "acked jobs/s",
        "claim p50 ms",
        "claim p99 ms",
        "e2e p50 ms",
        "e2e p99 ms",
        "RSS",
        "py blocks k",
        "store",
        "objects",
    )
    rows: list[dict[str, float]] = []
    for i in range(n_windows):
        claims = windows.get_samples("claim", i, i)
        e2e = windows.get_samples("e2e", i, i)
        g = gauges[i] if i < len(gauges) else {}
        row = {
            "rate": windows.get_count("acked", i, i) / args.window,
            "claim50": h.pct(claims, 50),
            "claim99": h.pct(claims, 99),
            "e2e50": h.pct(e2e, 50),
            "e2e99": h.pct(e2e, 99),
            "rss": g.get("rss", float("nan")),
            "blocks": g.get("blocks", float("nan")),
            "bytes": g.get("bytes", float("nan")),
            "objects": g.get("objects", float("nan")),
        }
        rows.append(row)
        table.add(
            f"{i * args.window:g}-{(i + 1) * args.window:g}",
            h.rate(row["rate"]),
            h.ms(row["claim50"]),
            h.ms(row["claim99"]),
            h.ms(row["e2e50"]),
            h.ms(row["e2e99"]),
            h.size(row["rss"]) if row["rss"] == row["rss"] else "-",
            f"{row['blocks'] / 1000:.0f}" if row["blocks"] == row["blocks"] else "-",
            h.size(row["bytes"]) if row["bytes"] == row["bytes"] else "-",
            f"{row['objects']:.0f}" if row["objects"] == row["objects"] else "-",
        )
    all_e2e = windows.get_samples("e2e", 0, n_windows - 1)
    achieved = windows.get_count("acked", 0, n_windows - 1) / (n_windows * args.window)
    report.headline.append(
        f"offered {h.rate(args.rate)} jobs/s, acked {h.rate(achieved)} jobs/s while offered "
        f"({achieved / args.rate:.2f}); e2e p50 {h.ms(h.pct(all_e2e, 50))} ms, "
        f"p99 {h.ms(h.pct(all_e2e, 99))} ms; backlog at the end of the load "
        f"{total - windows.get_count('acked', 0, n_windows - 1)} jobs"
    )
    if len(rows) >= 3:
        first, last = rows[1], rows[-1]  # window 0 is the warm-up

        def flat(key: str) -> str:
            a, b = first[key], last[key]
            return f"{b / a:.2f}" if a and a == a and b == b else "-"

        report.headline.append(
            "flatness (last window / second window; the first is warm-up): "
            f"rate {flat('rate')}x, claim p50 {flat('claim50')}x, "
            f"p99 {flat('claim99')}x, e2e p50 {flat('e2e50')}x, p99 {flat('e2e99')}x, "
            f"RSS {flat('rss')}x (Python heap blocks {flat('blocks')}x), "
            f"store {flat('bytes')}x, objects {flat('objects')}x"
        )
    report.notes.append(
        "the defaults throughout: the --flush-interval flag and the common ceiling do not apply"
    )
    report.notes.append(
        "RSS and store are sampled at each window's end; py blocks = the interpreter's "
        "allocated blocks (sys.getallocatedblocks: flat blocks with a growing RSS is native "
        "memory, SlateDB's memtables and caches); claim latency per claim_batch call that "
        "got jobs; store = bytes / objects of the store directory (file stores)"
    )
    if os.environ.get("BENCH_SOAK_DEBUG"):
        report.notes.append(f"gauges: {gauges}")
    return report
