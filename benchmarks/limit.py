"""limit: the physical ceiling, raw SlateDB through the same trio adapter the queue uses.

1. Durable transactions: ``begin / get / put / commit + await durable`` at each concurrency
   (default 1, 8, 64), every task on its own keys. The 64-way figure is "the ceiling" every
   other benchmark reports its ratio against.
2. Claim-like transactions: one claimer (the queue serialises claims per queue) repeatedly
   scans the next N rows of a prefilled prefix from a cursor, deletes each row and puts a
   "claimed" row, in one transaction; durable and non-durable commits. Rows/s is the most a
   single queue could claim at that batch size if claiming were all it did.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import trio

from benchmarks import _harness as h

if TYPE_CHECKING:
    import argparse

NAME = "limit"
DESCRIPTION = "raw SlateDB durable txns (1/8/64-way) and batched claim-like txns"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    h.add(parser, "--concurrency", "1,8,64", "concurrency levels of the durable txn test")
    h.add(parser, "--seconds", 3.0, "seconds per level")
    h.add(parser, "--batches", "1,16,64,256", "claim-like batch sizes")
    h.add(parser, "--rows", 12000, "rows prefilled per claim-like level")
    h.add(parser, "--value-size", 200, "value bytes")


async def _prefill(db: Any, prefix: bytes, rows: int, value: bytes) -> None:
    from taquba._adapter import run_transaction

    chunk = 1000
    for base in range(0, rows, chunk):

        async def body(txn: Any, base: int = base) -> None:
            for i in range(base, min(base + chunk, rows)):
                await txn.put(prefix + b"%08d" % i, value)

        await run_transaction(db, body, durable=False)
    await db.flush()


async def _claim_like(
    db: Any, prefix: bytes, batch: int, seconds: float, durable: bool
) -> tuple[int, float, list[float]]:
    """Claim rows in batches until the prefix is empty or time is up."""
    from taquba._adapter import run_transaction

    claimed_prefix = b"c" + prefix[1:]
    cursor: bytes | None = None
    total = 0
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        taken: list[bytes] = []

        async def body(txn: Any, taken: list[bytes] = taken, cursor: bytes | None = cursor) -> None:
            taken.clear()
            rows = await txn.scan(
                prefix, start=cursor, start_inclusive=False, limit=batch, cache_blocks=True
            )
            for key, value in rows:
                await txn.delete(key)
                await txn.put(claimed_prefix + key[len(prefix) :], value)
                taken.append(key)

        t0 = time.perf_counter()
        await run_transaction(db, body, durable=durable)
        if not taken:
            break
        latencies.append(time.perf_counter() - t0)
        total += len(taken)
        cursor = taken[-1]
    return total, time.perf_counter() - start, latencies


async def run(ctx: h.Context) -> h.Report:
    from taquba._adapter import Database

    args = ctx.args
    levels = h.int_list(args.concurrency)
    batches = h.int_list(args.batches)
    report = h.Report(
        NAME,
        {
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "batches": args.batches,
            "rows": args.rows,
            "value_size": args.value_size,
        },
    )
    store = ctx.stores.make("limit")
    db = await Database.open(store, "limit", flush_interval=ctx.flush)
    try:
        await h.raw_durable_txns(db, 8, 0.5, value_size=args.value_size)  # warm up
        table = report.table(
            "Durable transactions (begin/get/put/commit + await durable)",
            "concurrency",
            "txn/s",
            "p50 ms",
            "p99 ms",
            "txns",
        )
        for c in levels:
            n, elapsed, lat = await h.raw_durable_txns(
                db, c, args.seconds, value_size=args.value_size
            )
            table.add(c, h.rate(n / elapsed), h.ms(h.pct(lat, 50)), h.ms(h.pct(lat, 99)), n)
            if c == 64 or (c == max(levels) and 64 not in levels):
                ctx.ceiling = n / elapsed
                ctx.ceiling_note = f"({c}-way, measured by this benchmark)"
            print(f"[limit] conc {c}: {n / elapsed:,.0f} txn/s", flush=True)

        claim = report.table(
            "Claim-like transactions, one claimer (scan N from a cursor + delete + put per row, "
            "one commit)",
            "batch",
            "commit",
            "rows/s",
            "txn/s",
            "txn p50 ms",
            "txn p99 ms",
            "rows",
        )
        value = os.urandom(args.value_size)
        for durable in (True, False):
            for batch in batches:
                prefix = b"p/%d/%d/" % (batch, int(durable))
                await _prefill(db, prefix, args.rows, value)
                rows, elapsed, lat = await _claim_like(db, prefix, batch, args.seconds, durable)
                claim.add(
                    batch,
                    "durable" if durable else "non-durable",
                    h.rate(rows / elapsed),
                    h.rate(len(lat) / elapsed),
                    h.ms(h.pct(lat, 50)),
                    h.ms(h.pct(lat, 99)),
                    rows,
                )
                print(
                    f"[limit] claim-like batch {batch} durable={durable}: "
                    f"{rows / elapsed:,.0f} rows/s",
                    flush=True,
                )
                await trio.lowlevel.checkpoint()
    finally:
        await db.close()
    if ctx.ceiling:
        report.headline.append(f"ceiling {h.rate(ctx.ceiling)} durable txn/s (64-way)")
    report.notes.append(
        "A claim-like row that has to become durable before it counts costs one flush "
        "interval per batch; rows/s at batch N approaches N / flush interval until CPU binds."
    )
    return report
