"""cold_start: reopen a queue with a long history; first claim vs warm claims.

A child process (``sys.executable -m benchmarks._child``, never a fork) builds the history:
``--history`` jobs enqueued and acked (their tombstones stay in the pending range), then
``--live`` pending jobs. Arm ``clean``: the child closes the queue and exits. Arm ``crash``:
the child is SIGKILLed once the live jobs are durable, so the reopen replays the WAL.

This process then measures: the reopen (``open_queue`` until its body runs: SlateDB open,
claim-cursor restore, recovery of abandoned claims), the first ``claim_batch(q, 1)``, and the
remaining live jobs claimed one by one (warm claims). It then closes cleanly and reopens once
more (a clean reopen of the same history). A memory store cannot outlive a process: there
the clean arm is built in-process on the same `Store` object and the crash arm is skipped.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from benchmarks import _harness as h

if TYPE_CHECKING:
    import argparse

NAME = "cold_start"
DESCRIPTION = "reopen time after clean close / SIGKILL with N jobs of history; first claim"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    h.add(parser, "--history", 20000, "acked jobs of history")
    h.add(parser, "--live", 100, "pending jobs left at the end")
    h.add(parser, "--payload", 64, "payload bytes")
    h.add(parser, "--arms", "clean,crash", "which arms: clean, crash")


def _files(path: str) -> tuple[int, int, int]:
    """(bytes, files, WAL objects) under a local store directory."""
    total = files = wal = 0
    for base, _dirs, names in os.walk(path):
        for name in names:
            files += 1
            total += os.path.getsize(os.path.join(base, name))
            if f"{os.sep}wal" in base:
                wal += 1
    return total, files, wal


async def _measure(store: Any, ctx: h.Context, live: int) -> dict[str, Any]:
    import taquba

    out: dict[str, Any] = {}
    start = time.perf_counter()
    async with taquba.open_queue(store, "cold", flush_interval=ctx.flush) as queue:
        out["open"] = time.perf_counter() - start
        t = time.perf_counter()
        first = await queue.claim_batch("q", 1)
        out["first"] = time.perf_counter() - t
        warm: list[float] = []
        claims = list(first)
        keep = min(10, live // 2)  # left pending for the second reopen's first claim
        for _ in range(live - 1 - keep):
            t = time.perf_counter()
            got = await queue.claim_batch("q", 1)
            warm.append(time.perf_counter() - t)
            claims += got
        out["warm"] = warm
        out["claimed"] = len(claims)
        for claim in claims:  # settle so the next reopen starts from the same shape
            await queue.ack(claim)
        t = time.perf_counter()
    out["close"] = time.perf_counter() - t
    # a second reopen, after this process's clean close
    start = time.perf_counter()
    async with taquba.open_queue(store, "cold", flush_interval=ctx.flush) as queue:
        out["reopen2"] = time.perf_counter() - start
        t = time.perf_counter()
        await queue.claim_batch("q", 1)
        out["first2"] = time.perf_counter() - t
    return out


async def _arm(ctx: h.Context, arm: str) -> dict[str, Any] | None:
    import taquba

    args = ctx.args
    spec = ctx.stores.spec(f"cold-{arm}")
    t = time.perf_counter()
    if ctx.stores.kind == "memory":
        if arm == "crash":
            return None
        from benchmarks._child import drain, enqueue_many

        store = h.store_from_spec(spec)
        payload = b"h" * args.payload
        async with taquba.open_queue(store, "cold", flush_interval=ctx.flush) as queue:
            await enqueue_many(queue, args.history, payload)
            await drain(queue, args.history)
            await enqueue_many(queue, args.live, payload, chunk=1)
        built = time.perf_counter() - t
    else:
        params = {
            "db": "cold",
            "history": args.history,
            "live": args.live,
            "payload": args.payload,
            "flush": ctx.flush,
            "close": arm == "clean",
        }
        child = h.Child("history", spec, **params)
        info = await h.in_thread(lambda: child.wait_for("BUILT"))
        built = float(info["seconds"])
        if arm == "clean":
            await h.in_thread(lambda: child.wait_for("CLOSED"))
            await h.in_thread(child.wait)
        else:
            await h.in_thread(child.kill)
        store = h.store_from_spec(spec)
    print(f"[cold_start] {arm}: history built in {built:.1f} s", flush=True)
    disk = _files(spec["url"]) if ctx.stores.kind == "file" else None
    result = await _measure(store, ctx, args.live)
    result["built"] = built
    result["disk"] = disk
    print(
        f"[cold_start] {arm}: reopen {result['open'] * 1000:.0f} ms, first claim "
        f"{result['first'] * 1000:.1f} ms",
        flush=True,
    )
    return result


async def run(ctx: h.Context) -> h.Report:
    args = ctx.args
    report = h.Report(NAME, {"history": args.history, "live": args.live, "payload": args.payload})
    table = report.table(
        "Reopen and claims (ms)",
        "arm",
        "reopen",
        "first claim",
        "warm claim p50",
        "warm claim p99",
        "claimed",
        "close",
        "2nd reopen (clean)",
        "its first claim",
        "store MiB / files / WAL objects",
        "build s",
    )
    for arm in [a.strip() for a in args.arms.split(",") if a.strip()]:
        r = await _arm(ctx, arm)
        if r is None:
            report.notes.append(f"arm {arm} skipped: a memory store does not outlive a process")
            continue
        disk = r["disk"]
        table.add(
            "clean close" if arm == "clean" else "SIGKILL",
            h.ms(r["open"]),
            h.ms(r["first"]),
            h.ms(h.pct(r["warm"], 50)),
            h.ms(h.pct(r["warm"], 99)),
            r["claimed"],
            h.ms(r["close"]),
            h.ms(r["reopen2"]),
            h.ms(r["first2"]),
            f"{disk[0] / 2**20:.1f} / {disk[1]} / {disk[2]}" if disk else "-",
            f"{r['built']:.1f}",
        )
        report.headline.append(
            f"{arm}: reopen {h.ms(r['open'])} ms, first claim {h.ms(r['first'])} ms vs warm "
            f"p50 {h.ms(h.pct(r['warm'], 50))} ms"
        )
    report.notes.append(
        "warm claims take the remaining live jobs one per claim_batch(q, 1) call; the first "
        "claim after a reopen has no in-memory claim cursor unless a clean close saved one."
    )
    return report
