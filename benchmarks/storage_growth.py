"""storage_growth: how big a store gets under steady load, and whether it comes back.

Per ``--settings`` mode, on a fresh local-disk database opened with the defaults
(``open_queue(path)``, no knobs): an open-loop producer offers ``--rate`` jobs/s of
``--payload`` bytes for ``--seconds`` while a `taquba.Worker` (``--concurrency``) drains them.
Every ``--sample`` seconds it records the store's bytes and object count (a directory walk,
split by SlateDB's folders: ``wal/``, ``compacted/``, ``manifest/``, ...), the live data (the
key and value bytes of every live key, by a full scan) and this process's RSS. Then the queue
is closed, the store measured, reopened (idle) and measured again at once and after
``--after-reopen`` seconds, time for the garbage collector to run.

Modes: ``taquba`` is the product (`taquba._database.STORAGE_SETTINGS`), ``default`` SlateDB's
own settings (the store of taquba 0.9.2 and before), by emptying that mapping while the mode's
database is open. Rounds interleave the modes. Needs ``--store file``; the common ceiling is
not measured (nothing here is a throughput).

The short default shows the shape; the issue's long run is ``--seconds 600 --after-reopen
400`` (past SlateDB's own 300 s minimum age and its 600 s collector interval after a reopen).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import trio

from benchmarks import _harness as h

if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping

NAME = "storage_growth"
DESCRIPTION = "store bytes and objects under steady load, at close and after a reopen"

QUEUE = "bench"
MODES = ("taquba", "default")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    h.add(parser, "--rate", 500.0, "offered jobs/s")
    h.add(parser, "--payload", 256, "payload bytes")
    h.add(parser, "--seconds", 90.0, "seconds of steady load")
    h.add(parser, "--sample", 5.0, "seconds between samples")
    h.add(parser, "--after-reopen", 75.0, "seconds the reopened, idle store is watched")
    h.add(parser, "--concurrency", 32, "worker concurrency")
    h.add(parser, "--settings", "taquba,default", "taquba (the product) and/or default (SlateDB)")
    h.add(parser, "--rounds", 1, "interleaved rounds (the summary shows medians)")


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def walk(path: str) -> tuple[int, int, Counter[str], Counter[str]]:
    """Bytes, objects, and both per SlateDB folder (the parent directory's name)."""
    nbytes: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for base, _dirs, files in os.walk(path):
        folder = os.path.basename(base)
        for name in files:
            try:
                size = os.lstat(os.path.join(base, name)).st_size
            except OSError:
                continue  # collected while we walked
            nbytes[folder] += size
            count[folder] += 1
    return sum(nbytes.values()), sum(count.values()), nbytes, count


async def live_bytes(queue: Any) -> int:
    """Key and value bytes of every live key (a full scan of the database)."""
    rows = await queue._database.scan(b"")
    return sum(len(k) + len(v) for k, v in rows)


def folders(count: Counter[str], nbytes: Counter[str]) -> str:
    return ", ".join(
        f"{name} {count[name]}/{h.size(nbytes[name])}" for name in sorted(count, key=str)
    )


class Mode:
    """Use SlateDB's default settings (``default``) or taquba's while a database opens."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._saved: Mapping[str, str] | None = None

    def __enter__(self) -> None:
        from taquba import _database

        if self.mode == "default":
            self._saved = _database.STORAGE_SETTINGS
            _database.STORAGE_SETTINGS = {}  # pyright: ignore[reportConstantRedefinition]

    def __exit__(self, *exc: object) -> None:
        from taquba import _database

        if self._saved is not None:
            _database.STORAGE_SETTINGS = self._saved  # pyright: ignore[reportConstantRedefinition]


async def one_round(ctx: h.Context, mode: str, rnd: int, report: h.Report) -> dict[str, Any]:
    import taquba

    args = ctx.args
    spec = ctx.stores.spec(f"{mode}-{rnd}")
    path = spec["url"]
    payload = b"x" * args.payload
    samples: list[dict[str, Any]] = []
    acked = 0
    offered = 0
    total = int(args.rate * args.seconds)
    all_acked = trio.Event()

    async def handler(job: Any, lease: Any) -> None:
        nonlocal acked
        acked += 1
        if acked >= total:
            all_acked.set()

    async def sample(queue: Any, t0: float, phase: str, *, scan: bool = True) -> dict[str, Any]:
        total, objects, nbytes, count = await trio.to_thread.run_sync(walk, path)
        live = await live_bytes(queue) if scan and queue is not None else None
        row: dict[str, Any] = {
            "t": time.perf_counter() - t0,
            "phase": phase,
            "bytes": total,
            "objects": objects,
            "live": live,
            "rss": rss_bytes(),
            "detail": folders(count, nbytes),
            "acked": acked,
            "offered": offered,
        }
        samples.append(row)
        print(
            f"[{NAME}] {mode} {phase} t={row['t']:.0f}s {h.size(total)} {objects} objects "
            f"live {h.size(live or 0)} ({row['detail']})",
            flush=True,
        )
        return row

    with Mode(mode):
        store = h.store_from_spec(spec)
        t0 = time.perf_counter()
        async with taquba.open_queue(store) as queue:
            worker = taquba.Worker(queue, QUEUE, handler, concurrency=args.concurrency)
            async with trio.open_nursery() as nursery:
                await nursery.start(worker.serve)

                async def sampler() -> None:
                    while True:
                        await trio.sleep(args.sample)
                        await sample(queue, t0, "load")

                nursery.start_soon(sampler)
                start = time.perf_counter()
                async with trio.open_nursery() as producers:
                    for i in range(total):
                        await trio.sleep(max(0.0, start + i / args.rate - time.perf_counter()))
                        producers.start_soon(queue.enqueue, QUEUE, payload)
                        offered += 1
                with trio.move_on_after(30):
                    await all_acked.wait()
                nursery.cancel_scope.cancel()
            load_end = await sample(queue, t0, "drained")
        closed = await sample(None, t0, "closed", scan=False)
        async with taquba.open_queue(h.store_from_spec(spec)) as queue:
            t1 = time.perf_counter()
            reopened = await sample(queue, t0, "reopened")
            while time.perf_counter() - t1 < args.after_reopen:
                await trio.sleep(min(args.sample, args.after_reopen))
                await sample(queue, t0, "idle")
            after = samples[-1]
    under_load = [s for s in samples if s["phase"] == "load"]
    peak = max(under_load, key=lambda s: s["bytes"]) if under_load else load_end
    excess = max(s["bytes"] - 2 * (s["live"] or 0) for s in under_load) if under_load else 0
    table = report.table(
        f"{mode}, round {rnd + 1}: samples",
        "t s",
        "phase",
        "store",
        "objects",
        "live",
        "RSS",
        "acked",
        "per folder (objects/bytes)",
    )
    for s in samples:
        table.add(
            f"{s['t']:.0f}",
            s["phase"],
            h.size(s["bytes"]),
            s["objects"],
            "-" if s["live"] is None else h.size(s["live"]),
            h.size(s["rss"]),
            s["acked"],
            s["detail"],
        )
    return {
        "peak": peak["bytes"],
        "peak_objects": max(s["objects"] for s in under_load) if under_load else 0,
        "excess": excess,
        "end": load_end["bytes"],
        "end_objects": load_end["objects"],
        "closed": closed["bytes"],
        "closed_objects": closed["objects"],
        "reopened": reopened["bytes"],
        "reopened_objects": reopened["objects"],
        "after": after["bytes"],
        "after_objects": after["objects"],
        "acked_rate": acked / args.seconds,
    }


async def run(ctx: h.Context) -> h.Report:
    args = ctx.args
    ctx.flush = 0.1  # the defaults: SlateDB's 100 ms timer (the entry's header)
    if ctx.stores.kind != "file":
        raise SystemExit("storage_growth needs --store file (it walks the store's directory)")
    modes = [m.strip() for m in str(args.settings).split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            raise SystemExit(f"unknown --settings mode {m!r} (taquba, default)")
    report = h.Report(
        NAME,
        {
            "rate": args.rate,
            "payload": args.payload,
            "seconds": args.seconds,
            "sample": args.sample,
            "after_reopen": args.after_reopen,
            "concurrency": args.concurrency,
            "settings": ",".join(modes),
            "rounds": args.rounds,
        },
    )
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for rnd in range(args.rounds):
        for m in modes:
            results[m].append(await one_round(ctx, m, rnd, report))

    def med(m: str, key: str) -> float:
        return h.median([r[key] for r in results[m]])

    summary = report.table(
        "summary (median of rounds)",
        "settings",
        "acked jobs/s",
        "peak under load",
        "max(store - 2 x live)",
        "drained",
        "closed",
        "reopened",
        f"{args.after_reopen:g} s after reopen",
    )
    for m in modes:
        summary.add(
            m,
            h.rate(med(m, "acked_rate")),
            f"{h.size(med(m, 'peak'))} / {med(m, 'peak_objects'):.0f}",
            h.size(med(m, "excess")),
            f"{h.size(med(m, 'end'))} / {med(m, 'end_objects'):.0f}",
            f"{h.size(med(m, 'closed'))} / {med(m, 'closed_objects'):.0f}",
            f"{h.size(med(m, 'reopened'))} / {med(m, 'reopened_objects'):.0f}",
            f"{h.size(med(m, 'after'))} / {med(m, 'after_objects'):.0f}",
        )
    tables = report.tables
    report.tables = [tables[-1], *tables[:-1]]  # the summary first
    if "taquba" in results and "default" in results:
        report.headline.append(
            "taquba / default: peak "
            f"{med('taquba', 'peak') / max(1.0, med('default', 'peak')):.2f}x, after reopen "
            f"{med('taquba', 'after') / max(1.0, med('default', 'after')):.2f}x (bytes)"
        )
    report.notes.append(
        "the defaults throughout: the --flush-interval flag does not apply (SlateDB's 100 ms "
        "timer is the backstop of durability on demand)"
    )
    report.notes.append(
        "sizes as bytes / objects; live = key + value bytes of every live key (full scan)"
    )
    return report
