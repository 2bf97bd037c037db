"""The benchmark runner: ``python -m benchmarks NAME [flags]`` (``--help`` per benchmark)."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import logging
import sys
import time

import trio

from benchmarks import _harness as h

BENCHMARKS = (
    "limit",
    "claim_drain",
    "steady_state",
    "cold_start",
    "reaper_storm",
    "payload_sweep",
    "payload_offload",
    "sharding",
    "http_remote",
    "defaults",
    "storage_growth",
    "soak",
    "s3_requests",
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in BENCHMARKS:
        print("usage: python -m benchmarks {" + ",".join(BENCHMARKS) + "} [flags] (--help)")
        for name in BENCHMARKS:
            module = importlib.import_module(f"benchmarks.{name}")
            print(f"  {name:14} {module.DESCRIPTION}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    name = argv[0]
    module = importlib.import_module(f"benchmarks.{name}")
    parser = argparse.ArgumentParser(
        prog=f"python -m benchmarks {name}",
        description=module.DESCRIPTION,
    )
    module.add_arguments(parser)
    h.add_common(parser)
    args = parser.parse_args(argv[1:])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    stores = h.Stores(args)
    ctx = h.Context(args=args, stores=stores, flush=float(args.flush_interval))
    ctx.started = f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
    ctx.load_start = h.loadavg()
    start = time.perf_counter()
    print(
        f"[{name}] store {stores.description}, flush {ctx.flush * 1000:g} ms, "
        f"load {ctx.load_start}",
        file=sys.stderr,
    )

    async def go() -> h.Report:
        if name not in ("limit", "defaults", "storage_growth", "soak", "s3_requests"):  # no ceiling
            if args.ceiling > 0:
                ctx.ceiling = float(args.ceiling)
                ctx.ceiling_note = "(given with --ceiling)"
            else:
                ctx.ceiling = await h.measure_ceiling(ctx, args.ceiling_seconds)
                ctx.ceiling_note = (
                    f"(64-way begin/get/put/commit+durable, {args.ceiling_seconds:g} s, "
                    "measured first in this run)"
                )
                print(f"[{name}] ceiling {ctx.ceiling:,.0f} txn/s", file=sys.stderr)
        return await module.run(ctx)

    try:
        report = trio.run(go)
    finally:
        stores.close()
    entry = h.render(ctx, report, time.perf_counter() - start, h.loadavg())
    print()
    print(entry)
    if args.record:
        h.record(entry)
        print(f"(recorded in {h.RESULTS.relative_to(h.ROOT)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
