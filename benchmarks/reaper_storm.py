"""reaper_storm: many abandoned claims recovered while another queue carries live load.

Arm ``crash`` (not on memory stores): a child process (``sys.executable``, never a fork)
enqueues ``--expired`` jobs on database ``storm``, claims them all with a long lease, makes
the claims durable and is SIGKILLed. This process runs live load (open-loop producers at
``--rate`` plus ``--workers`` no-op workers) on database ``live`` of the same store; after
``--before`` seconds it reopens ``storm``: the open requeues every abandoned claim (recovery),
then a worker redelivers and acks them all (the storm drain). Live load goes on ``--after``
seconds more.

Arm ``lease`` (every store): one database. ``--expired`` jobs of queue ``storm`` are claimed
with a ``--lease`` second lease and never settled, while queue ``live`` carries the live load;
the reaper (every ``--reaper-interval`` s) requeues them when the leases expire and a worker on
``storm`` redelivers and acks them.

For both, the live queue's end-to-end latency (enqueue call start -> handler start) is
reported before, during and after the storm.
"""

from __future__ import annotations

import math
import struct
import time
from typing import TYPE_CHECKING, Any

import trio

from benchmarks import _harness as h

if TYPE_CHECKING:
    import argparse

NAME = "reaper_storm"
DESCRIPTION = "recover many expired/abandoned claims while another queue carries live load"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    h.add(parser, "--expired", 5000, "abandoned claims")
    h.add(parser, "--rate", 300.0, "live load offered rate (jobs/s)")
    h.add(parser, "--workers", 32, "worker concurrency (live queue, and storm drain)")
    h.add(parser, "--payload", 64, "payload bytes")
    h.add(parser, "--before", 2.0, "seconds of live load before the storm")
    h.add(parser, "--after", 2.0, "seconds of live load after the storm drained")
    h.add(parser, "--lease", 3.0, "lease of the abandoned claims (lease arm)")
    h.add(parser, "--reaper-interval", 0.5, "reaper interval (lease arm)")
    h.add(parser, "--arms", "crash,lease", "which arms: crash, lease")


class Live:
    """Open-loop live load on one named queue, with e2e samples stamped by time."""

    def __init__(self, queue: Any, name: str, rate: float, payload: int) -> None:
        self.queue = queue
        self.name = name
        self.rate = rate
        self.pad = b"x" * max(0, payload - 8)
        self.samples: list[tuple[float, float]] = []  # (handler start, e2e)
        self.stop = trio.Event()

    async def handler(self, job: Any, lease: Any) -> None:
        (t0,) = struct.unpack_from("<d", job.payload)
        now = time.perf_counter()
        self.samples.append((now, now - t0))

    async def _one(self, slots: trio.Semaphore) -> None:
        try:
            await self.queue.enqueue(self.name, struct.pack("<d", time.perf_counter()) + self.pad)
        finally:
            slots.release()

    async def pacer(self) -> None:
        slots = trio.Semaphore(1024)
        start = time.perf_counter()
        spawned = 0
        async with trio.open_nursery() as nursery:
            while not self.stop.is_set():
                due = math.floor((time.perf_counter() - start) * self.rate) + 1
                while spawned < due:
                    await slots.acquire()
                    nursery.start_soon(self._one, slots)
                    spawned += 1
                await trio.sleep(max(0.0, start + spawned / self.rate - time.perf_counter()))

    def between(self, lo: float, hi: float) -> list[float]:
        return [e2e for t, e2e in self.samples if lo <= t < hi]


async def _serve(
    nursery: trio.Nursery, queue: Any, name: str, handler: Any, workers: int, shutdown: trio.Event
) -> None:

    await h.start_worker(nursery, queue, name, handler, concurrency=workers, shutdown=shutdown)


class Counter:
    def __init__(self, target: int) -> None:
        self.n = 0
        self.target = target
        self.first: float | None = None
        self.done = trio.Event()

    async def handler(self, job: Any, lease: Any) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        self.n += 1
        if self.n >= self.target:
            self.done.set()


async def crash_arm(ctx: h.Context) -> dict[str, Any] | None:
    import taquba

    args = ctx.args
    if ctx.stores.kind == "memory":
        return None
    spec = ctx.stores.spec("storm")
    child = h.Child(
        "hold", spec, db="storm", jobs=args.expired, payload=args.payload, flush=ctx.flush
    )
    info = await h.in_thread(lambda: child.wait_for("HELD"))
    await h.in_thread(child.kill)
    print(f"[reaper_storm] crash: child held {info['held']} claims, killed", flush=True)
    store = h.store_from_spec(spec)
    marks: dict[str, float] = {}
    counter = Counter(int(info["held"]))
    async with taquba.open_queue(store, "live", flush_interval=ctx.flush) as live_queue:
        live = Live(live_queue, "live", args.rate, args.payload)
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            await _serve(nursery, live_queue, "live", live.handler, args.workers, shutdown)
            nursery.start_soon(live.pacer)
            marks["start"] = time.perf_counter()
            await trio.sleep(args.before)
            marks["storm"] = time.perf_counter()
            async with taquba.open_queue(store, "storm", flush_interval=ctx.flush) as storm:
                marks["recovered"] = time.perf_counter()
                async with trio.open_nursery() as inner:
                    await _serve(inner, storm, "q", counter.handler, args.workers, shutdown)
                    with trio.move_on_after(120):
                        await counter.done.wait()
                    marks["drained"] = time.perf_counter()
                    inner.cancel_scope.cancel()
            await trio.sleep(args.after)
            marks["end"] = time.perf_counter()
            live.stop.set()
            shutdown.set()
            nursery.cancel_scope.cancel()
    return {"marks": marks, "live": live, "storm": counter, "held": int(info["held"])}


async def lease_arm(ctx: h.Context) -> dict[str, Any]:
    import taquba
    from benchmarks._child import enqueue_many

    args = ctx.args
    store = ctx.stores.make("lease")
    marks: dict[str, float] = {}
    counter = Counter(args.expired)
    async with taquba.open_queue(
        store, "lease", flush_interval=ctx.flush, reaper_interval=args.reaper_interval
    ) as queue:
        # the storm jobs: enqueued on queue "q" and claimed with a short lease, never settled
        await enqueue_many(queue, args.expired, b"s" * args.payload)
        held = 0
        first_claim = time.perf_counter()
        while held < args.expired:
            claims = await queue.claim_batch("q", 256, lease=args.lease)
            if not claims:
                break
            held += len(claims)
        expiry = first_claim + args.lease  # the first leases expire then
        counter.target = held
        live = Live(queue, "live", args.rate, args.payload)
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            await _serve(nursery, queue, "live", live.handler, args.workers, shutdown)
            nursery.start_soon(live.pacer)
            marks["start"] = time.perf_counter()
            await _serve(nursery, queue, "q", counter.handler, args.workers, shutdown)
            await trio.sleep_until(trio.current_time() + max(0.0, expiry - time.perf_counter()))
            marks["storm"] = time.perf_counter()
            with trio.move_on_after(120):
                await counter.done.wait()
            marks["drained"] = time.perf_counter()
            marks["recovered"] = counter.first or marks["drained"]
            await trio.sleep(args.after)
            marks["end"] = time.perf_counter()
            live.stop.set()
            shutdown.set()
            nursery.cancel_scope.cancel()
    return {"marks": marks, "live": live, "storm": counter, "held": held}


async def run(ctx: h.Context) -> h.Report:
    args = ctx.args
    report = h.Report(
        NAME,
        {
            "expired": args.expired,
            "rate": args.rate,
            "workers": args.workers,
            "payload": args.payload,
            "lease": args.lease,
            "reaper_interval": args.reaper_interval,
        },
    )
    table = report.table(
        "Live queue during the storm",
        "arm",
        "phase",
        "seconds",
        "live handled/s",
        "live e2e p50 ms",
        "live e2e p99 ms",
        "live e2e max ms",
    )
    summary = report.table(
        "Storm",
        "arm",
        "abandoned claims",
        "recovery s",
        "recovered/s",
        "redelivered+acked by s",
        "storm jobs/s (end to end)",
        "x ceiling",
    )
    for arm in [a.strip() for a in args.arms.split(",") if a.strip()]:
        result = await (crash_arm(ctx) if arm == "crash" else lease_arm(ctx))
        if result is None:
            report.notes.append(f"arm {arm} skipped: a memory store does not outlive a process")
            continue
        m = result["marks"]
        live: Live = result["live"]
        phase_names = (
            ("before", "start", "storm"),
            (
                "recovery (reopen)" if arm == "crash" else "expiry -> first redelivery",
                "storm",
                "recovered",
            ),
            ("redelivery + acks", "recovered", "drained"),
            ("after", "drained", "end"),
        )
        for label, a, b in phase_names:
            secs = m[b] - m[a]
            e2e = live.between(m[a], m[b])
            table.add(
                arm,
                label,
                f"{secs:.2f}",
                h.rate(len(e2e) / secs) if secs > 0 else "-",
                h.ms(h.pct(e2e, 50)),
                h.ms(h.pct(e2e, 99)),
                h.ms(max(e2e)) if e2e else "-",
            )
        recovery = m["recovered"] - m["storm"]
        total = m["drained"] - m["storm"]
        held = result["held"]
        summary.add(
            arm,
            held,
            f"{recovery:.2f}",
            h.rate(held / recovery) if recovery > 0 and arm == "crash" else "-",
            f"{total:.2f}",
            h.rate(held / total),
            h.ratio(held / total, ctx.ceiling),
        )
        report.headline.append(
            f"{arm}: {held} abandoned claims, recovery {recovery:.2f} s, all redelivered and "
            f"acked {total:.2f} s after the storm began; live e2e p99 "
            f"{h.ms(h.pct(live.between(m['start'], m['storm']), 99))} ms before vs "
            f"{h.ms(h.pct(live.between(m['storm'], m['drained']), 99))} ms during"
        )
        print(f"[reaper_storm] {report.headline[-1]}", flush=True)
    report.notes.append(
        "crash arm: recovery happens inside open_queue (each abandoned claim requeued in its own "
        "non-durable transaction) before the storm database serves; the live database keeps "
        "serving meanwhile. lease arm: 'recovery' is lease expiry -> first redelivery."
    )
    return report
