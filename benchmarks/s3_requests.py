"""s3_requests: what the S3 defaults cost in requests, dollars and latency, counted.

The S3 defaults (``open_queue("s3://...")``: durability on demand with a 10 ms flush linger)
were chosen from a model of requests per flush. This counts the requests instead: an
S3-compatible server (moto, `benchmarks._s3_server`) runs in its own process on loopback,
counts every request by method and object kind, and holds each one for a fixed time
(``--put-ms`` 25, ``--get-ms`` 15, ``--list-ms`` 25), so the queue meets an object store that
answers in tens of milliseconds, as S3 does.

For each ``--lingers`` value (``default`` is the S3 default; numbers are seconds) and each
``--rates`` value (offered jobs/s), one fresh store: a `taquba.Worker` (``--concurrency`` 64)
runs no-op handlers while an open-loop producer offers the rate; after ``--warmup`` seconds
the request counts are read, then again after ``--seconds``. Reported per run: acked jobs/s,
e2e latency p50/p99 (enqueue call start to handler start), requests per second by method,
WAL PUTs per second, requests per job, and dollars per million jobs and per hour at S3
Standard's request prices (``--put-price`` per 1,000 PUT, POST and LIST; ``--get-price`` per
1,000 GET and HEAD; DELETE is free). Storage and transfer are not priced.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import trio

from benchmarks import _harness as h

if TYPE_CHECKING:
    import argparse

NAME = "s3_requests"
DESCRIPTION = "the S3 defaults counted: requests/s, $ per million jobs, latency (held moto)"

QUEUE = "bench"
BUCKET = "taquba-bench"
KEY = "testing"
PRICED = ("PUT", "POST", "LIST")
CHEAP = ("GET", "HEAD")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    h.add(parser, "--rates", "20,200,1000", "offered jobs/s, one run each")
    h.add(parser, "--lingers", "0,default,0.05", "flush lingers in seconds (default: S3's)")
    h.add(parser, "--seconds", 30.0, "measured seconds per run (after the warm-up)")
    h.add(parser, "--warmup", 5.0, "seconds of load before the counts are read")
    h.add(parser, "--concurrency", 64, "worker concurrency")
    h.add(parser, "--payload", 64, "payload bytes")
    h.add(parser, "--put-ms", 25.0, "ms the server holds each PUT and POST")
    h.add(parser, "--get-ms", 15.0, "ms the server holds each GET and HEAD")
    h.add(parser, "--list-ms", 25.0, "ms the server holds each listing")
    h.add(parser, "--put-price", 0.005, "dollars per 1,000 PUT, POST, LIST (S3 Standard)")
    h.add(parser, "--get-price", 0.0004, "dollars per 1,000 GET, HEAD (S3 Standard)")


class HeldS3:
    """The counting, holding S3 server in a child process."""

    def __init__(self, args: argparse.Namespace) -> None:
        spec = {"put_ms": args.put_ms, "get_ms": args.get_ms, "list_ms": args.list_ms}
        argv = [sys.executable, "-m", "benchmarks._s3_server", json.dumps(spec)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=str(h.ROOT), text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            self.proc.kill()
            raise SystemExit(f"the S3 server did not start: {line!r}")
        self.endpoint = f"http://127.0.0.1:{int(line.split()[1])}"
        import boto3

        client: Any = boto3.client(  # pyright: ignore[reportUnknownMemberType]
            "s3",
            endpoint_url=self.endpoint,
            region_name=h.MOTO_REGION,
            aws_access_key_id=KEY,
            aws_secret_access_key=KEY,
        )
        client.create_bucket(Bucket=BUCKET)

    def options(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "region": h.MOTO_REGION,
            "access_key_id": KEY,
            "secret_access_key": KEY,
            "allow_http": True,
        }

    async def counts(self) -> dict[str, int]:
        import urllib.request

        def read() -> dict[str, int]:
            with urllib.request.urlopen(f"{self.endpoint}/__counts", timeout=10) as r:
                return dict(json.loads(r.read()))

        return await trio.to_thread.run_sync(read)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


async def one_run(
    ctx: h.Context, s3: HeldS3, linger: float | None, rate: float, label: str
) -> dict[str, Any]:
    import taquba

    args = ctx.args
    store = taquba.Store.from_url(f"s3://{BUCKET}/{label}", **s3.options())
    payload = b"x" * args.payload
    started: dict[str, float] = {}
    latencies: list[float] = []
    measuring = False
    acked = 0
    total = int(rate * (args.warmup + args.seconds))

    async def handler(job: Any, lease: Any) -> None:
        nonlocal acked
        begun = started.pop(job.id, None)
        if measuring:
            acked += 1
            if begun is not None:
                latencies.append(time.perf_counter() - begun)

    async def enqueue_one(job_id: str) -> None:
        started[job_id] = time.perf_counter()
        await queue.enqueue(QUEUE, payload, job_id=job_id)

    async with taquba.open_queue(store, flush_linger=linger) as queue:
        worker = taquba.Worker(queue, QUEUE, handler, concurrency=args.concurrency)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)

            async def produce() -> None:
                t0 = time.perf_counter()
                async with trio.open_nursery() as producers:
                    for i in range(total):
                        await trio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
                        producers.start_soon(enqueue_one, f"{label}-{i:09d}")

            nursery.start_soon(produce)
            await trio.sleep(args.warmup)
            before = await s3.counts()
            measuring = True
            t_start = time.perf_counter()
            await trio.sleep(args.seconds)
            after = await s3.counts()
            elapsed = time.perf_counter() - t_start
            measuring = False
            nursery.cancel_scope.cancel()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    jobs = max(acked, 1)
    priced = sum(delta.get(k, 0) for k in PRICED)
    cheap = sum(delta.get(k, 0) for k in CHEAP)
    dollars_per_job = (priced * args.put_price + cheap * args.get_price) / 1000 / jobs
    requests = sum(v for k, v in delta.items() if " " not in k)
    result = {
        "acked": acked / elapsed,
        "p50": h.pct(latencies, 50),
        "p99": h.pct(latencies, 99),
        "per_s": {k: v / elapsed for k, v in delta.items()},
        "requests_per_job": requests / jobs,
        "wal_puts_per_s": delta.get("PUT wal", 0) / elapsed,
        "usd_per_million": dollars_per_job * 1e6,
        "usd_per_hour": (priced * args.put_price + cheap * args.get_price) / 1000 / elapsed * 3600,
    }
    print(
        f"[s3_requests] linger {label}: {result['acked']:,.0f} jobs/s acked, e2e p50 "
        f"{result['p50'] * 1000:.1f} ms p99 {result['p99'] * 1000:.1f} ms, "
        f"{requests / elapsed:,.1f} requests/s ({result['wal_puts_per_s']:.1f} WAL PUTs/s), "
        f"${result['usd_per_million']:.2f} per million jobs",
        flush=True,
    )
    return result


def parse_lingers(raw: str) -> list[tuple[str, float | None]]:
    out: list[tuple[str, float | None]] = []
    for item in (x.strip() for x in raw.split(",")):
        if not item:
            continue
        if item == "default":
            out.append(("default", None))
        else:
            out.append((f"{float(item) * 1000:g} ms", float(item)))
    return out


async def run(ctx: h.Context) -> h.Report:
    from taquba._walflush import default_linger

    args = ctx.args
    ctx.flush = 0.1
    # The entry's header: this benchmark makes its own S3 stores, whatever --store says.
    ctx.stores.kind = "s3"
    ctx.stores.description = (
        f"s3 (moto in a child process on loopback; each PUT held {args.put_ms:g} ms, "
        f"GET {args.get_ms:g} ms, LIST {args.list_ms:g} ms)"
    )
    rates = [float(x) for x in str(args.rates).split(",") if x.strip()]
    lingers = parse_lingers(str(args.lingers))
    s3_default = default_linger("s3")
    report = h.Report(
        NAME,
        {
            "rates": args.rates,
            "lingers": args.lingers,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
            "put_ms": args.put_ms,
            "get_ms": args.get_ms,
            "list_ms": args.list_ms,
            "put_price": args.put_price,
            "get_price": args.get_price,
            "s3_default_linger": s3_default,
        },
    )
    table = report.table(
        "per run",
        "linger",
        "offered jobs/s",
        "acked jobs/s",
        "e2e p50 ms",
        "e2e p99 ms",
        "requests/s",
        "PUT/s (WAL)",
        "GET/s",
        "LIST/s",
        "DELETE/s",
        "requests/job",
        "$ / million jobs",
        "$ / hour",
    )
    s3 = HeldS3(args)
    try:
        for name, linger in lingers:
            shown = f"{name} ({s3_default * 1000:g} ms)" if linger is None else name
            for rate in rates:
                label = f"{name.replace(' ', '')}-{rate:g}-{int(time.time())}"
                r = await one_run(ctx, s3, linger, rate, label)
                per_s = r["per_s"]
                total = sum(v for k, v in per_s.items() if " " not in k)
                table.add(
                    shown,
                    h.rate(rate),
                    h.rate(r["acked"]),
                    h.ms(r["p50"]),
                    h.ms(r["p99"]),
                    f"{total:,.1f}",
                    f"{per_s.get('PUT', 0.0):,.1f} ({r['wal_puts_per_s']:,.1f})",
                    f"{per_s.get('GET', 0.0):,.1f}",
                    f"{per_s.get('LIST', 0.0):,.2f}",
                    f"{per_s.get('DELETE', 0.0):,.1f}",
                    f"{r['requests_per_job']:.3f}",
                    "-" if math.isnan(r["usd_per_million"]) else f"{r['usd_per_million']:.2f}",
                    f"{r['usd_per_hour']:.3f}",
                )
    finally:
        s3.close()
    report.notes.append(
        f"the server holds each PUT/POST {args.put_ms:g} ms, GET/HEAD {args.get_ms:g} ms, "
        f"LIST {args.list_ms:g} ms; prices: ${args.put_price:g} per 1,000 PUT/POST/LIST, "
        f"${args.get_price:g} per 1,000 GET/HEAD, DELETE free; storage and transfer not priced"
    )
    return report
