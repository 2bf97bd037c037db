"""http_remote: the owner behind taquba-server, as a ratio to the same work done in-process.

Each round measures, on fresh databases of the same store:

- ``enqueue``: ``--producers`` concurrent producers enqueue ``--enqueue-jobs`` single jobs.
  In-process: tasks calling `Queue.enqueue` in this process. HTTP: tasks calling
  `taquba_client.AsyncClient.enqueue` (one client, keep-alive connections) against a
  ``taquba-server`` process on the store.
- ``drain``: ``--jobs`` prefilled jobs with no-op handlers. In-process: one `taquba.Worker` of
  ``workers x slots`` slots. Remote: ``--workers`` worker processes (`taquba_client.Worker`)
  of ``--slots`` slots each against a ``taquba-server`` process; timed from the moment every
  worker is connected until the server reports nothing pending or claimed.
- ``cpu``: the drain again, ``--cpu-jobs`` jobs whose handler burns ``--cpu-ms`` of CPU: one
  event loop in-process, against the remote worker processes; reports the cores they used
  (their CPU seconds / wall seconds).

Ratios are remote / in-process of the same round; the headline quotes medians over rounds.
The server and workers run as separate processes, so ``--store memory`` is refused.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import trio

from benchmarks import _harness as h

if TYPE_CHECKING:
    import argparse

NAME = "http_remote"
DESCRIPTION = "HTTP enqueue and remote-worker drain through taquba-server, vs in-process"
QUEUE = "bench"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    h.add(parser, "--rounds", 3, "rounds (the headline quotes medians)")
    h.add(parser, "--enqueue-jobs", 4000, "single-job enqueues per enqueue measurement")
    h.add(parser, "--producers", 16, "concurrent producers")
    h.add(parser, "--jobs", 20000, "prefilled jobs per drain")
    h.add(parser, "--workers", 4, "remote worker processes")
    h.add(parser, "--slots", 16, "slots (concurrency) per remote worker")
    h.add(parser, "--cpu-jobs", 300, "jobs of the CPU-bound drain")
    h.add(parser, "--cpu-ms", 20.0, "CPU milliseconds each CPU-bound job burns")
    h.add(parser, "--payload", 64, "payload bytes")


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


class ServerProcess:
    """``taquba-server`` on a store, in its own process, on a free loopback port."""

    def __init__(self, spec: dict[str, Any]) -> None:
        if spec["options"]:
            raise SystemExit("http_remote: S3 options are not passed to the server process yet")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "taquba_server", "--store", spec["url"], "--port", "0"],
            cwd=h.ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"taquba-server did not start ({self.proc.wait()}): {line!r}")
        self.url = line.strip().rsplit(" ", 1)[-1]

    def stop(self) -> None:
        self.proc.send_signal(2)  # SIGINT: graceful
        self.proc.wait(60)


class WorkerProcess:
    def __init__(self, url: str, slots: int, cpu_ms: float) -> None:
        params = {"url": url, "queue": QUEUE, "slots": slots, "cpu_ms": cpu_ms}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._http_worker", json.dumps(params)],
            cwd=h.ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def expect(self, word: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            head, _, rest = line.strip().partition(" ")
            if head == word:
                return json.loads(rest) if rest else {}
        raise RuntimeError(f"worker exited ({self.proc.wait()}) before {word}")

    def say(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


async def prefill(store: Any, jobs: int, payload: bytes) -> None:
    import taquba

    async with taquba.open_queue(store, "taquba") as queue:
        for base in range(0, jobs, 500):
            n = min(500, jobs - base)
            await queue.enqueue_batch(
                [taquba.EnqueueRequest(queue_name=QUEUE, payload=payload)] * n
            )


async def producers(enqueue: Any, jobs: int, count: int, payload: bytes) -> float:
    per = [jobs // count + (1 if i < jobs % count else 0) for i in range(count)]

    async def produce(n: int) -> None:
        for _ in range(n):
            await enqueue(QUEUE, payload)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for n in per:
            nursery.start_soon(produce, n)
    return jobs / (time.perf_counter() - start)


async def enqueue_inprocess(ctx: h.Context, payload: bytes) -> float:
    import taquba

    args = ctx.args
    async with taquba.open_queue(ctx.stores.make("enq-local"), "taquba") as queue:
        await producers(queue.enqueue, 64, args.producers, payload)  # warm up
        return await producers(queue.enqueue, args.enqueue_jobs, args.producers, payload)


async def enqueue_http(ctx: h.Context, payload: bytes) -> float:
    import taquba_client

    args = ctx.args
    server = ServerProcess(ctx.stores.spec("enq-http"))
    try:
        async with taquba_client.AsyncClient(server.url) as client:
            await producers(client.enqueue, 64, args.producers, payload)  # warm up
            return await producers(client.enqueue, args.enqueue_jobs, args.producers, payload)
    finally:
        await trio.to_thread.run_sync(server.stop)


def burn(ms: float) -> None:
    end = time.process_time() + ms / 1000
    while time.process_time() < end:
        pass


async def drain_inprocess(ctx: h.Context, jobs: int, cpu_ms: float, payload: bytes) -> float:
    import taquba

    args = ctx.args
    store = ctx.stores.make("drain-local")
    await prefill(store, jobs, payload)
    handled = 0

    async def handler(job: Any, lease: Any) -> None:
        nonlocal handled
        if cpu_ms:
            burn(cpu_ms)
        handled += 1
        if handled >= jobs:
            worker.shutdown()

    async with taquba.open_queue(store, "taquba") as queue:
        worker = taquba.Worker(queue, QUEUE, handler, concurrency=args.workers * args.slots)
        start = time.perf_counter()
        await worker.serve()
        return jobs / (time.perf_counter() - start)


async def drain_remote(
    ctx: h.Context, jobs: int, cpu_ms: float, payload: bytes
) -> tuple[float, float]:
    """(jobs/s, cores used by the worker processes)."""
    import taquba_client

    args = ctx.args
    spec = ctx.stores.spec("drain-http")
    store = h.store_from_spec(spec)
    await prefill(store, jobs, payload)
    server = ServerProcess(spec)
    workers: list[WorkerProcess] = []
    try:
        workers = [WorkerProcess(server.url, args.slots, cpu_ms) for _ in range(args.workers)]
        for worker in workers:
            await trio.to_thread.run_sync(worker.expect, "READY")
        async with taquba_client.AsyncClient(server.url) as client:
            start = time.perf_counter()
            for worker in workers:
                worker.say("GO")
            while True:
                stats = await client.stats(QUEUE)
                if stats.pending == 0 and stats.claimed == 0 and stats.scheduled == 0:
                    break
                await trio.sleep(0.02)
            elapsed = time.perf_counter() - start
        cpu = 0.0
        for worker in workers:
            worker.say("STOP")
        for worker in workers:
            cpu += (await trio.to_thread.run_sync(worker.expect, "DONE"))["cpu"]
        return jobs / elapsed, cpu / elapsed
    finally:
        for worker in workers:
            worker.proc.kill()
            worker.proc.wait()
        await trio.to_thread.run_sync(server.stop)


async def run(ctx: h.Context) -> h.Report:
    args = ctx.args
    if ctx.stores.kind == "memory":
        raise SystemExit(
            "http_remote: the server runs in its own process; use --store file or s3://"
        )
    payload = b"x" * args.payload
    report = h.Report(
        NAME,
        {
            "rounds": args.rounds,
            "enqueue_jobs": args.enqueue_jobs,
            "producers": args.producers,
            "jobs": args.jobs,
            "workers": args.workers,
            "slots": args.slots,
            "cpu_jobs": args.cpu_jobs,
            "cpu_ms": args.cpu_ms,
            "payload": args.payload,
        },
    )
    table = report.table(
        "Per round (jobs/s; ratio = remote / in-process)",
        "round",
        "enqueue local",
        "enqueue http",
        "ratio",
        "drain local",
        "drain remote",
        "ratio",
        "cpu local",
        "cpu remote",
        "ratio",
        "remote cores",
    )
    ratios: dict[str, list[float]] = {"enqueue": [], "drain": [], "cpu": [], "cores": []}
    for r in range(1, args.rounds + 1):
        el = await enqueue_inprocess(ctx, payload)
        eh = await enqueue_http(ctx, payload)
        dl = await drain_inprocess(ctx, args.jobs, 0.0, payload)
        dr, _ = await drain_remote(ctx, args.jobs, 0.0, payload)
        cl = await drain_inprocess(ctx, args.cpu_jobs, args.cpu_ms, payload)
        cr, cores = await drain_remote(ctx, args.cpu_jobs, args.cpu_ms, payload)
        ratios["enqueue"].append(eh / el)
        ratios["drain"].append(dr / dl)
        ratios["cpu"].append(cr / cl)
        ratios["cores"].append(cores)
        row = (r, h.rate(el), h.rate(eh), f"{eh / el:.2f}", h.rate(dl), h.rate(dr))
        table.add(*row, f"{dr / dl:.2f}", h.rate(cl), h.rate(cr), f"{cr / cl:.2f}", f"{cores:.2f}")
        print(f"[http_remote] round {r}: " + " | ".join(table.rows[-1][1:]), flush=True)
    med = {k: statistics.median(v) for k, v in ratios.items()}
    report.headline.append(
        f"median ratios: HTTP enqueue {med['enqueue']:.2f}x in-process (target >= 0.7), "
        f"remote drain {med['drain']:.2f}x (target >= 0.5), CPU-bound remote drain "
        f"{med['cpu']:.2f}x using {med['cores']:.2f} cores (target > 1)"
    )
    report.notes.append(
        "In-process and remote use the defaults of `open_queue` / `taquba-server` (no knobs); "
        "the in-process drain has workers x slots slots in one event loop."
    )
    report.notes.append(
        "Both sides run with taquba's defaults: from taquba 0.9.3 a durable write requests its "
        "own WAL flush (before, SlateDB's 100 ms timer bounded 16 single-job producers at about "
        "160 jobs/s on either side); the flush interval in this entry's heading applies to the "
        "ceiling measurement only."
    )
    return report
