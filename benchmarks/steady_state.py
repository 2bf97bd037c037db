"""steady_state: producers at an offered rate while workers claim and ack.

Producers are open-loop: a pacer starts one ``enqueue`` task per job at its scheduled time
(at most ``--max-inflight`` enqueues in flight; when that many are waiting the pacer blocks and
the achieved rate falls behind the offered one). Each payload carries the ``perf_counter`` at
the start of its enqueue call; the no-op handler of a `taquba.Worker` records the
end-to-end latency (enqueue call start -> handler start). ``ack_with`` and ``claim_batch`` are
timed by wrapping them on the `Queue` instance. Backlog = jobs whose enqueue returned but
whose ack has not.

Default: search for the maximum sustainable rate (steps of ``--step-seconds``, growing by
``--growth`` until a step is not sustained, then ``--refine`` bisection steps), then run at
half that rate and at ``--low-rate``. A step is sustained when acks kept up with the offered
rate (>= 95 %), the backlog at its end is under a quarter second of work, and the pacer never
fell more than 5 % of the step behind its schedule (rates are per second of the step's real
duration, so a blocked pacer cannot pass off a longer step as a faster one). With
``--schedule "secs:rate,..."`` (or ``--rate``/``--duration``) it runs that schedule instead.
Between steps the backlog is drained.
"""

from __future__ import annotations

import math
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from benchmarks import _harness as h
from benchmarks.claim_drain import ClaimLog, instrument

if TYPE_CHECKING:
    import argparse

NAME = "steady_state"
DESCRIPTION = "offered rate (or schedule) vs achieved; e2e p50/p99; max sustainable rate"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    h.add(parser, "--workers", 64, "worker concurrency")
    h.add(parser, "--payload", 64, "payload bytes")
    h.add(parser, "--max-inflight", 1024, "most enqueue calls in flight")
    h.add(parser, "--step-seconds", 4.0, "seconds per search step")
    h.add(parser, "--start-rate", 200.0, "first rate of the search")
    h.add(parser, "--growth", 1.5, "rate factor between search steps")
    h.add(parser, "--refine", 2, "bisection steps after the first unsustained rate")
    h.add(parser, "--low-rate", 200.0, "also run this rate after the search (0: skip)")
    h.add(parser, "--schedule", "", 'run "secs:rate,secs:rate,..." instead of the search')
    h.add(parser, "--rate", 0.0, "run this one rate for --duration instead of the search")
    h.add(parser, "--duration", 20.0, "seconds of --rate")


@dataclass
class Step:
    label: str
    offered: float
    seconds: float
    elapsed: float = 0.0  # wall time of the step, in-flight enqueues included
    spawn_lag: float = 0.0  # how far the producer fell behind its schedule (max_inflight)
    enq_lat: list[float] = field(default_factory=list[float])
    e2e: list[float] = field(default_factory=list[float])
    enqueued: int = 0
    acked: int = 0
    started: int = 0
    backlog: list[int] = field(default_factory=list[int])
    claims_before: int = 0
    claims_after: int = 0
    acks_before: int = 0
    acks_after: int = 0

    def sustained(self) -> bool:
        want = self.offered * self.seconds
        limit = max(self.offered * 0.25, 100)
        return (
            self.acked >= 0.95 * want
            and (self.backlog[-1] if self.backlog else 0) < limit
            and self.spawn_lag <= 0.05 * self.seconds + 0.1
        )

    def rate(self, count: int) -> float:
        """`count` per second of the step's real duration (not its nominal one)."""
        return count / max(self.elapsed, self.seconds)


class Bench:
    def __init__(self, ctx: h.Context, queue: Any) -> None:
        self.ctx = ctx
        self.queue = queue
        self.args = ctx.args
        self.log = ClaimLog()
        self.enq_done = 0
        self.acked = 0
        self.step: Step | None = None
        self.series: list[tuple[float, int, float]] = []  # (t, backlog, offered)
        self.t0 = time.perf_counter()
        self.pad = b"x" * max(0, self.args.payload - 8)

    async def handler(self, job: Any, lease: Any) -> None:
        (t_start,) = struct.unpack_from("<d", job.payload)
        step = self.step
        if step is not None:
            step.e2e.append(time.perf_counter() - t_start)
            step.started += 1

    def wrap_ack(self) -> None:
        ack_with = self.queue.ack_with

        async def counted(claim: Any, effects: Any) -> Any:
            result = await ack_with(claim, effects)
            self.acked += 1
            if self.step is not None:
                self.step.acked += 1
            return result

        self.queue.ack_with = counted

    def backlog(self) -> int:
        return self.enq_done - self.acked

    async def sampler(self) -> None:
        while True:
            await trio.sleep(0.5)
            offered = self.step.offered if self.step else 0.0
            self.series.append((time.perf_counter() - self.t0, self.backlog(), offered))

    async def enqueue_one(self, step: Step, slots: trio.Semaphore) -> None:
        try:
            start = time.perf_counter()
            await self.queue.enqueue("q", struct.pack("<d", start) + self.pad)
            step.enq_lat.append(time.perf_counter() - start)
            step.enqueued += 1
            self.enq_done += 1
        finally:
            slots.release()

    async def run_step(self, label: str, rate: float, seconds: float) -> Step:
        step = Step(label, rate, seconds)
        step.claims_before = len(self.log.calls)
        step.acks_before = len(self.log.acks)
        self.step = step
        slots = trio.Semaphore(self.args.max_inflight)
        start = time.perf_counter()
        total = math.floor(rate * seconds)
        spawned = 0
        async with trio.open_nursery() as nursery:
            while spawned < total:
                due = min(total, math.floor((time.perf_counter() - start) * rate) + 1)
                while spawned < due:
                    await slots.acquire()
                    nursery.start_soon(self.enqueue_one, step, slots)
                    spawned += 1
                    # With max_inflight enqueues outstanding the producer blocks: the offered
                    # rate is then not being offered, which counts against the step.
                    lag = time.perf_counter() - (start + (spawned - 1) / rate)
                    step.spawn_lag = max(step.spawn_lag, lag)
                await trio.sleep(max(0.0, start + spawned / rate - time.perf_counter()))
            # the schedule ends here; enqueues still in flight finish into the step
            step.backlog.append(self.backlog())
        step.elapsed = time.perf_counter() - start
        step.claims_after = len(self.log.calls)
        step.acks_after = len(self.log.acks)
        self.step = None
        return step

    async def drain(self, patience: float = 60.0) -> None:
        with trio.move_on_after(patience):
            while self.backlog() > 0:  # noqa: ASYNC110 - a benchmark may poll
                await trio.sleep(0.02)


async def run(ctx: h.Context) -> h.Report:
    import taquba

    args = ctx.args
    report = h.Report(
        NAME,
        {
            "workers": args.workers,
            "payload": args.payload,
            "max_inflight": args.max_inflight,
            **(
                {"schedule": args.schedule or f"{args.duration:g}:{args.rate:g}"}
                if (args.schedule or args.rate)
                else {
                    "step_seconds": args.step_seconds,
                    "start_rate": args.start_rate,
                    "growth": args.growth,
                    "refine": args.refine,
                    "low_rate": args.low_rate,
                }
            ),
        },
    )
    store = ctx.stores.make("steady")
    steps: list[Step] = []
    best: Step | None = None
    async with taquba.open_queue(store, "steady", flush_interval=ctx.flush) as queue:
        bench = Bench(ctx, queue)
        instrument(queue, bench.log)
        bench.wrap_ack()
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bench.sampler)
            await h.start_worker(
                nursery, queue, "q", bench.handler, concurrency=args.workers, shutdown=shutdown
            )

            async def do(label: str, rate: float, seconds: float) -> Step:
                step = await bench.run_step(label, rate, seconds)
                steps.append(step)
                print(
                    f"[steady_state] {label} {rate:,.0f}/s: acked {step.rate(step.acked):,.0f}/s "
                    f"e2e p50 {h.ms(h.pct(step.e2e, 50))} ms backlog {step.backlog[-1]} "
                    f"producer lag {h.ms(step.spawn_lag)} ms "
                    f"{'ok' if step.sustained() else 'NOT sustained'}",
                    flush=True,
                )
                await bench.drain()
                return step

            if args.schedule or args.rate:
                text = args.schedule or f"{args.duration}:{args.rate}"
                for part in text.split(","):
                    secs, rate = (float(x) for x in part.split(":"))
                    await do("schedule", rate, secs)
            else:
                rate = args.start_rate
                good: float | None = None
                bad: float | None = None
                while bad is None:
                    step = await do("search", rate, args.step_seconds)
                    if step.sustained():
                        good, best = rate, step
                        rate *= args.growth
                    else:
                        bad = rate
                lo = good or 0.0
                for _ in range(args.refine):
                    mid = (lo + bad) / 2
                    step = await do("refine", mid, args.step_seconds)
                    if step.sustained():
                        lo, best = mid, step
                    else:
                        bad = mid
                if best is not None:
                    await do("half max", best.offered / 2, 2 * args.step_seconds)
                if args.low_rate:
                    await do("low", args.low_rate, 2 * args.step_seconds)
            shutdown.set()
            nursery.cancel_scope.cancel()

    table = report.table(
        "Steps (e2e = enqueue call start -> handler start; backlog = enqueued, not yet acked)",
        "step",
        "offered/s",
        "enqueued/s",
        "acked/s",
        "x ceiling",
        "e2e p50 ms",
        "e2e p99 ms",
        "enqueue p50 ms",
        "enqueue p99 ms",
        "claim p99 ms",
        "ack p99 ms",
        "backlog at end",
        "producer lag ms",
        "sustained",
    )
    for step in steps:
        claims = [lat for _, _, lat in bench.log.calls[step.claims_before : step.claims_after]]
        acks = bench.log.acks[step.acks_before : step.acks_after]
        table.add(
            step.label,
            h.rate(step.offered),
            h.rate(step.rate(step.enqueued)),
            h.rate(step.rate(step.acked)),
            h.ratio(step.rate(step.acked), ctx.ceiling),
            h.ms(h.pct(step.e2e, 50)),
            h.ms(h.pct(step.e2e, 99)),
            h.ms(h.pct(step.enq_lat, 50)),
            h.ms(h.pct(step.enq_lat, 99)),
            h.ms(h.pct(claims, 99)),
            h.ms(h.pct(acks, 99)),
            step.backlog[-1] if step.backlog else "-",
            h.ms(step.spawn_lag),
            "yes" if step.sustained() else "no",
        )
    if best is not None:
        report.headline.append(
            f"max sustainable rate {h.rate(best.offered)} jobs/s "
            f"({h.ratio(best.offered, ctx.ceiling)} x ceiling), e2e p50 "
            f"{h.ms(h.pct(best.e2e, 50))} ms / p99 {h.ms(h.pct(best.e2e, 99))} ms there"
        )
        half = next((s for s in steps if s.label == "half max"), None)
        if half is not None:
            report.headline.append(
                f"at half that rate ({h.rate(half.offered)}/s): e2e p50 "
                f"{h.ms(h.pct(half.e2e, 50))} ms, p99 {h.ms(h.pct(half.e2e, 99))} ms "
                f"(target p50 < {3 * ctx.flush * 1000:g} ms)"
            )
    low = next((s for s in steps if s.label == "low"), None)
    if low is not None:
        report.headline.append(
            f"at {h.rate(low.offered)}/s: e2e p50 {h.ms(h.pct(low.e2e, 50))} ms, "
            f"p99 {h.ms(h.pct(low.e2e, 99))} ms"
        )
    series = " ".join(f"{int(t)}s:{b}" for t, b, _ in bench.series[::2])
    report.notes.append(f"backlog over time (every 1 s, drains between steps included): {series}")
    return report
