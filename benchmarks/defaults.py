"""defaults: what ``open_queue(path)`` gives without a single knob.

The three figures of issue #19, on one fresh database per round and mode:

- **enqueue**: ``--producers`` (16) closed-loop producers, each awaiting one `Queue.enqueue`
  after another, until ``--jobs`` (10 000) jobs are in;
- **drain**: a `taquba.Worker` at ``--concurrency`` (64) with a no-op handler drains those
  jobs (claim + durable ack);
- **e2e**: an open-loop producer offers ``--rate`` (200) jobs/s for ``--e2e-seconds`` (10)
  while a worker (same concurrency) runs; a job's latency is from the start of its enqueue
  call to the start of its handler.

Modes: ``demand`` is the product (durability on demand, the store kind's linger), ``timer``
the durability of taquba 0.9.2 and before (the WAL flush timer only, SlateDB's 100 ms), by
switching the database's flusher off, and ``pgqueuer`` the Postgres-backed peer of issue #19
(PgQueuer on a throwaway PostgreSQL cluster with fsync on, one fresh database per round, the
same three phases in a child process: `benchmarks._pgqueuer_child`; needs ``uv sync --group
peer`` and PostgreSQL's server binaries). With the peer in the run, the headline states each
of taquba's figures as a ratio to the peer's of the same run. Rounds interleave the modes; the
table shows the median of the rounds. Each of taquba's modes is also stated as a ratio to the
raw SlateDB ceiling of the same run with the same durability (64-way
begin/get/put/commit+durable on a fresh database), measured first; the `--flush-interval` flag
and the common ceiling do not apply here.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from typing import TYPE_CHECKING, Any, Self

import trio

from benchmarks import _harness as h

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator

NAME = "defaults"
DESCRIPTION = "the defaults, no knobs: enqueue (16 producers), drain (64), e2e at 200 jobs/s"

QUEUE = "bench"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    h.add(parser, "--jobs", 10000, "jobs enqueued, then drained, per round and mode")
    h.add(parser, "--producers", 16, "closed-loop producers of the enqueue phase")
    h.add(parser, "--concurrency", 64, "worker concurrency (drain and e2e)")
    h.add(parser, "--rate", 200.0, "offered jobs/s of the e2e phase")
    h.add(parser, "--e2e-seconds", 10.0, "length of the e2e phase")
    h.add(parser, "--rounds", 3, "interleaved rounds (the table shows medians)")
    h.add(
        parser,
        "--modes",
        "demand,timer",
        "demand (the product), timer (0.9.2 and before), pgqueuer (the Postgres-backed peer)",
    )
    h.add(parser, "--pg-bin", "", "directory of PostgreSQL's initdb/pg_ctl (else from PATH)")
    h.add(parser, "--payload", 64, "payload bytes")


class BindingCalls:
    """Counts the binding calls of taquba's storage adapter (each awaits a SlateDB future).

    Every binding call of the queue goes through ``taquba._binding.call``, which the adapter
    modules import by name; the counter replaces that name in each of them while it is open.
    """

    MODULES = ("taquba._database", "taquba._dbscan", "taquba._walflush")

    def __init__(self) -> None:
        self.count = 0
        self._saved: list[tuple[Any, Any]] = []

    def __enter__(self) -> Self:
        import importlib

        for name in self.MODULES:
            module = importlib.import_module(name)
            original = module.call

            async def counted(fn: Any, *args: Any, _original: Any = original) -> Any:
                self.count += 1
                return await _original(fn, *args)

            self._saved.append((module, original))
            setattr(module, "call", counted)  # noqa: B010 - a module attribute by name
        return self

    def __exit__(self, *exc: object) -> None:
        for module, original in self._saved:
            module.call = original
        self._saved.clear()


def set_mode(queue: Any, mode: str) -> None:
    if mode == "timer":
        queue._database.flusher = None


async def ceiling(ctx: h.Context, mode: str, seconds: float) -> float:
    from taquba._adapter import Database

    db = await Database.open(ctx.stores.make(f"ceiling-{mode}"), "ceiling")
    if mode == "timer":
        db.flusher = None
    try:
        await h.raw_durable_txns(db, 64, min(0.5, seconds))  # warm up
        n, elapsed, _ = await h.raw_durable_txns(db, 64, seconds)
    finally:
        await db.close()
    return n / elapsed


async def enqueue_phase(queue: Any, jobs: int, producers: int, payload: bytes) -> float:
    remaining = jobs

    async def producer() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await queue.enqueue(QUEUE, payload)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(producers):
            nursery.start_soon(producer)
    return jobs / (time.perf_counter() - start)


async def drain_phase(queue: Any, jobs: int, concurrency: int) -> float:
    import taquba

    handled = 0

    async def handler(job: Any, lease: Any) -> None:
        nonlocal handled
        handled += 1
        if handled >= jobs:
            worker.shutdown()

    worker = taquba.Worker(queue, QUEUE, handler, concurrency=concurrency)
    start = time.perf_counter()
    await worker.serve()
    return jobs / (time.perf_counter() - start)


async def e2e_phase(
    queue: Any, rate: float, seconds: float, concurrency: int, payload: bytes
) -> tuple[list[float], list[float]]:
    import taquba

    started: dict[str, float] = {}
    latencies: list[float] = []
    enqueues: list[float] = []  # enqueue call to return (durable)
    total = int(rate * seconds)
    all_done = trio.Event()

    async def handler(job: Any, lease: Any) -> None:
        begun = started.pop(job.id, None)
        if begun is not None:
            latencies.append(time.perf_counter() - begun)
        if len(latencies) >= total:
            all_done.set()

    async def enqueue_one(job_id: str) -> None:
        begun = started[job_id] = time.perf_counter()
        await queue.enqueue(QUEUE, payload, job_id=job_id)
        enqueues.append(time.perf_counter() - begun)

    worker = taquba.Worker(queue, QUEUE, handler, concurrency=concurrency)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.serve)
        t0 = time.perf_counter()
        async with trio.open_nursery() as producers:
            for i in range(total):
                delay = t0 + i / rate - time.perf_counter()
                await trio.sleep(max(0.0, delay))
                producers.start_soon(enqueue_one, f"e2e-{i:08d}")
        with trio.move_on_after(60):
            await all_done.wait()
        worker.shutdown()
    return latencies, enqueues


async def peer_round(ctx: h.Context, pg: Any, rnd: int) -> dict[str, Any]:
    """One round of the peer in a child process, on a fresh database of the run's cluster."""
    args = ctx.args
    spec = {
        "dsn": pg.create_database(f"round{rnd}"),
        "jobs": args.jobs,
        "producers": args.producers,
        "concurrency": args.concurrency,
        "rate": args.rate,
        "e2e_seconds": args.e2e_seconds,
        "payload": args.payload,
    }
    argv = [sys.executable, "-m", "benchmarks._pgqueuer_child", json.dumps(spec)]
    done = await trio.run_process(argv, capture_stdout=True, cwd=str(h.ROOT))
    line = next(x for x in done.stdout.decode().splitlines() if x.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    result["enqueue_calls"] = result["drain_calls"] = float("nan")
    print(
        f"[defaults] round {rnd} pgqueuer: enqueue {result['enqueue']:,.0f}/s, drain "
        f"{result['drain']:,.0f}/s, e2e p50 {result['p50'] * 1000:.1f} ms p99 "
        f"{result['p99'] * 1000:.1f} ms (enqueue p50 {result['enq_p50'] * 1000:.1f} p99 "
        f"{result['enq_p99'] * 1000:.1f})",
        flush=True,
    )
    return result


async def one_round(ctx: h.Context, mode: str, rnd: int, pg: Any = None) -> dict[str, Any]:
    import taquba

    if mode == "pgqueuer":
        return await peer_round(ctx, pg, rnd)
    args = ctx.args
    payload = b"x" * args.payload
    store = ctx.stores.make(f"{mode}-{rnd}")
    async with taquba.open_queue(store) as queue:
        set_mode(queue, mode)
        with BindingCalls() as calls:
            enq = await enqueue_phase(queue, args.jobs, args.producers, payload)
        enqueue_calls = calls.count / args.jobs
        with BindingCalls() as calls:
            drain = await drain_phase(queue, args.jobs, args.concurrency)
        drain_calls = calls.count / args.jobs
        lat, enq_lat = await e2e_phase(
            queue, args.rate, args.e2e_seconds, args.concurrency, payload
        )
    result = {
        "enqueue": enq,
        "drain": drain,
        "p50": h.pct(lat, 50),
        "p99": h.pct(lat, 99),
        "e2e_jobs": len(lat),
        "enq_p50": h.pct(enq_lat, 50),
        "enq_p99": h.pct(enq_lat, 99),
        "enqueue_calls": enqueue_calls,
        "drain_calls": drain_calls,
    }
    print(
        f"[defaults] round {rnd} {mode}: enqueue {enq:,.0f}/s, drain {drain:,.0f}/s, "
        f"e2e p50 {result['p50'] * 1000:.1f} ms p99 {result['p99'] * 1000:.1f} ms (enqueue "
        f"p50 {result['enq_p50'] * 1000:.1f} p99 {result['enq_p99'] * 1000:.1f}); binding calls "
        f"per job: enqueue {enqueue_calls:.2f}, drain {drain_calls:.2f}",
        flush=True,
    )
    return result


async def run(ctx: h.Context) -> h.Report:
    args = ctx.args
    ctx.flush = 0.1  # SlateDB's default timer, which both modes keep (the entry's header)
    modes = [m.strip() for m in str(args.modes).split(",") if m.strip()]
    report = h.Report(
        NAME,
        {
            "jobs": args.jobs,
            "producers": args.producers,
            "concurrency": args.concurrency,
            "rate": args.rate,
            "e2e_seconds": args.e2e_seconds,
            "rounds": args.rounds,
            "payload": args.payload,
        },
    )
    unknown = set(modes) - {"demand", "timer", "pgqueuer"}
    if unknown:
        raise SystemExit(f"--modes: unknown {sorted(unknown)}; use demand, timer, pgqueuer")
    ceilings = {
        mode: await ceiling(ctx, mode, args.ceiling_seconds) for mode in modes if mode != "pgqueuer"
    }
    ceilings["pgqueuer"] = float("nan")
    for mode, value in ceilings.items():
        if mode in modes and mode != "pgqueuer":
            print(f"[defaults] ceiling {mode}: {value:,.0f} txn/s", flush=True)
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    with contextlib.ExitStack() as stack:
        pg = None
        if "pgqueuer" in modes:
            pg = stack.enter_context(peer_cluster(ctx))
            report.params["peer"] = peer_versions(pg)
        for rnd in range(1, args.rounds + 1):
            for mode in modes if rnd % 2 else reversed(modes):
                results[mode].append(await one_round(ctx, mode, rnd, pg))

    table = report.table(
        f"Medians of {args.rounds} interleaved rounds",
        "mode",
        "ceiling txn/s",
        "enqueue jobs/s",
        "x ceiling",
        "drain jobs/s",
        "x ceiling",
        "e2e p50",
        "e2e p99",
        "enqueue p50 / p99 at that rate",
        "calls/enqueue",
        "calls/drained job",
    )
    med: dict[str, dict[str, float]] = {}
    for mode in modes:
        rows = results[mode]
        keys = ("enqueue", "drain", "p50", "p99", "enq_p50", "enq_p99")
        keys += ("enqueue_calls", "drain_calls")
        med[mode] = {k: h.median([r[k] for r in rows]) for k in keys}
        m = med[mode]
        table.add(
            mode,
            h.rate(ceilings[mode]),
            h.rate(m["enqueue"]),
            h.ratio(m["enqueue"], ceilings[mode]),
            h.rate(m["drain"]),
            h.ratio(m["drain"], ceilings[mode]),
            h.ms(m["p50"]),
            h.ms(m["p99"]),
            f"{h.ms(m['enq_p50'])} / {h.ms(m['enq_p99'])}",
            calls(m["enqueue_calls"]),
            calls(m["drain_calls"]),
        )
    rounds = report.table("Every round", "round", "mode", "enqueue/s", "drain/s", "p50", "p99")
    for mode in modes:
        for i, r in enumerate(results[mode], 1):
            rounds.add(
                i, mode, h.rate(r["enqueue"]), h.rate(r["drain"]), h.ms(r["p50"]), h.ms(r["p99"])
            )
    if "demand" in med and "pgqueuer" in med:
        d, p = med["demand"], med["pgqueuer"]
        report.headline.append(
            f"demand vs the peer (PgQueuer) in this run: enqueue {d['enqueue'] / p['enqueue']:.2f}x"
            f" and drain {d['drain'] / p['drain']:.2f}x the peer's rate; e2e p50 "
            f"{d['p50'] / p['p50']:.2f}x and p99 {d['p99'] / p['p99']:.2f}x the peer's latency"
        )
    if "demand" in med and "timer" in med:
        d, t = med["demand"], med["timer"]
        report.headline.append(
            f"demand vs timer: enqueue {d['enqueue'] / t['enqueue']:.1f}x, drain "
            f"{d['drain'] / t['drain']:.1f}x, e2e p50 {t['p50'] / d['p50']:.1f}x lower, "
            f"p99 {t['p99'] / d['p99']:.1f}x lower"
        )
    return report


def calls(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


@contextlib.contextmanager
def peer_cluster(ctx: h.Context) -> Iterator[Any]:
    """The run's PostgreSQL cluster, or a clear exit when the peer cannot run here."""
    from benchmarks._postgres import PostgresUnavailable, TempPostgres

    try:
        import pgqueuer  # noqa: F401  (the child imports it; fail here, before any round)
    except ImportError:
        raise SystemExit(
            "--modes pgqueuer needs the peer group: uv sync --group peer (and PostgreSQL)"
        ) from None
    cluster = TempPostgres(str(ctx.args.pg_bin), ctx.args.store_dir or None)
    try:
        cluster.__enter__()
    except PostgresUnavailable as exc:
        raise SystemExit(f"--modes pgqueuer: {exc}") from None
    try:
        yield cluster
    finally:
        cluster.__exit__(None, None, None)


def peer_versions(pg: Any) -> str:
    import importlib.metadata as md

    return f"pgqueuer {md.version('pgqueuer')}, asyncpg {md.version('asyncpg')}, {pg.version}"
