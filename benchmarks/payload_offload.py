"""payload_offload: large payloads in the record vs offloaded to their own objects.

For each size (default 1 MiB and 16 MiB) and each mode (``inline``: no threshold;
``offload``: ``QueueConfig(payload_offload_threshold=--threshold)``), on a fresh database of
its own, `payload_sweep.one_size` measures:

1. Event-loop time of one ``enqueue`` on an idle queue, and of one ``claim`` + ``ack``
   (median of ``--loop-samples``): wall time of the task's steps, i.e. time the event loop
   could run nothing else. Object writes and reads run in worker threads.
2. Throughput: ``--producers`` closed-loop producers for ``--seconds`` (or ``--max-mib`` of
   payload) while a `taquba.Worker` claims and acks, then the backlog drains.
3. Bytes: ``wchar amp`` is every byte this process wrote (``/proc/self/io``; payload objects
   included) per payload byte; ``disk amp`` is the store directory's growth per payload byte
   (offloaded objects are deleted by the acks, so it counts what stays: the database).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmarks import _harness as h
from benchmarks.payload_sweep import one_size

if TYPE_CHECKING:
    import argparse

NAME = "payload_offload"
DESCRIPTION = "1 MiB / 16 MiB payloads inline vs offloaded: bytes written, loop time, jobs/s"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    h.add(parser, "--sizes", "1m,16m", "payload sizes (k/m = KiB/MiB)")
    h.add(parser, "--threshold", "256k", "offload threshold of the offload runs")
    h.add(parser, "--seconds", 4.0, "seconds of load per size and mode")
    h.add(parser, "--producers", 8, "closed-loop producers")
    h.add(parser, "--workers", 32, "worker concurrency")
    h.add(parser, "--max-mib", 256.0, "stop producing after this much payload")
    h.add(parser, "--loop-samples", 10, "serial enqueues (and claim + acks) timed")


async def run(ctx: h.Context) -> h.Report:
    import taquba

    args = ctx.args
    sizes = h.int_list(args.sizes)
    threshold = h.int_list(args.threshold)[0]
    report = h.Report(
        NAME,
        {
            "sizes": args.sizes,
            "threshold": args.threshold,
            "seconds": args.seconds,
            "producers": args.producers,
            "workers": args.workers,
            "max_mib": args.max_mib,
            "loop_samples": args.loop_samples,
        },
    )
    loop = report.table(
        "Event-loop time on an idle queue (median of samples; ms)",
        "payload",
        "mode",
        "enqueue loop",
        "enqueue longest step",
        "enqueue call",
        "claim+ack loop",
        "claim+ack longest step",
        "claim+ack call",
    )
    tput = report.table(
        "Throughput (producers closed-loop, workers claim + ack) and bytes written",
        "payload",
        "mode",
        "enqueued",
        "enq jobs/s",
        "enq MiB/s",
        "enq p50 ms",
        "enq p99 ms",
        "done jobs/s",
        "wchar amp",
        "disk amp",
    )
    for nbytes in sizes:
        for mode in ("inline", "offload"):
            config = None
            if mode == "offload":
                config = taquba.QueueConfig(payload_offload_threshold=threshold)
            r = await one_size(ctx, nbytes, config, f"-{mode}")
            c, d = r["cost"], r["drain"]
            loop.add(
                h.size(nbytes),
                mode,
                h.ms(h.median(c["wall"])),
                h.ms(h.median(c["longest"])),
                h.ms(h.median(c["call"])),
                h.ms(h.median(d["wall"])),
                h.ms(h.median(d["longest"])),
                h.ms(h.median(d["call"])),
            )
            enq_rate = r["enqueued"] / r["produced_in"]
            payload_total = r["enqueued"] * nbytes
            disk, wchar = r["disk"], r["wchar"]
            tput.add(
                h.size(nbytes),
                mode,
                r["enqueued"],
                h.rate(enq_rate),
                f"{enq_rate * nbytes / 2**20:.1f}",
                h.ms(h.pct(r["enq_lat"], 50)),
                h.ms(h.pct(r["enq_lat"], 99)),
                h.rate(r["done"] / r["elapsed"]),
                f"{wchar / payload_total:.2f}" if wchar is not None else "-",
                f"{disk / payload_total:.2f}" if disk is not None else "-",
            )
            print(
                f"[payload_offload] {h.size(nbytes)} {mode}: {enq_rate:,.1f} enq/s, "
                f"wchar amp {wchar / payload_total if wchar else 0:.2f}",
                flush=True,
            )
    report.notes.append(
        "wchar amp = bytes this process wrote (WAL, SSTs, compaction output and payload objects) "
        "/ payload bytes enqueued; disk amp = store directory growth / payload bytes (the "
        "offloaded objects are deleted by the acks, so it is what the database keeps)."
    )
    return report
