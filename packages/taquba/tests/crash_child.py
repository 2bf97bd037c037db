"""A queue process for the crash and fencing tests, run as ``python crash_child.py MODE ...``.

It is started with ``sys.executable`` (never forked from the test process) and talks to the
test through stdout, one flushed line per event. A line is printed only *after* the call it
reports has returned, so everything the test reads was acknowledged as durable by taquba.

Modes:

``hold STORE_DIR LOG``
    Serve queue ``w`` of database ``crash`` with a `taquba.Worker` (concurrency
    `HOLD_CONCURRENCY`). Each execution appends ``"<id> child\\n"`` to ``LOG``. Jobs whose
    payload starts with ``b"slow"`` print ``HOLD <id>`` and sleep forever; the others are acked
    with a KV marker ``ack/<id>/<attempt>`` written atomically with the ack.
``storm STORE_DIR [fold]``
    Open database ``storm`` (done records kept) and run producers (``enqueue`` and
    ``enqueue_batch``, printing ``ENQ <id>`` after each call returns) and workers (claim,
    print ``RUN <id>`` as a handler would start, then ``ack_with`` a KV marker ``ack/<id>``
    concurrently, printing ``ACK <id>`` after it returns) until killed. With ``fold``, the
    counters are also folded every few milliseconds.
``fence STORE_DIR COUNT``
    Open database ``fence`` as a second writer (fencing the test's queue), enqueue ``COUNT``
    jobs printing ``ENQ <id>`` each, close cleanly and print ``CLOSED``.

``orphan STORE_DIR``
    Open database ``orphan`` (payloads over `ORPHAN_THRESHOLD` bytes offloaded), enqueue a
    large job, claim it and ack it; the delete of its payload object that follows the ack's
    durable commit prints ``DELETING <ref>`` and then hangs, to be killed there: the object
    is orphaned by a real crash between the commit and the delete.

Every mode prints ``READY`` once its queue is open, and exits on its own after
`SAFETY_EXIT` seconds in case the test dies without killing it.
"""

from __future__ import annotations

import os
import sys

import trio

import taquba
from taquba import Effects, EnqueueRequest, JobRecord, LeaseHandle, QueueConfig

HOLD_CONCURRENCY = 8
SAFETY_EXIT = 120.0
FAST = {"flush_interval": 0.01, "reaper_interval": 3600.0, "scheduler_interval": 3600.0}
HOLD_CONFIG = QueueConfig(lease_duration=600, retry_backoff_base=0)
STORM_CONFIG = QueueConfig(lease_duration=600, retry_backoff_base=0, keep_done=86_400)
ORPHAN_THRESHOLD = 16


def say(*words: object) -> None:
    print(*words, flush=True)


async def hold(store_dir: str, log_path: str) -> None:
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def handler(job: JobRecord, lease: LeaseHandle) -> Effects | None:
        os.write(log_fd, f"{job.id} child\n".encode())  # one atomic append per execution
        if job.payload.startswith(b"slow"):
            say("HOLD", job.id)
            await trio.sleep_forever()
        return Effects(kv_writes={f"ack/{job.id}/{job.attempts}".encode(): b"child"})

    async with taquba.open_queue(store_dir, "crash", config=HOLD_CONFIG, **FAST) as queue:
        say("READY")
        worker = taquba.Worker(
            queue, "w", handler, concurrency=HOLD_CONCURRENCY, poll_interval=0.05
        )
        await worker.serve()


async def storm(store_dir: str, fold: bool = False) -> None:
    async with taquba.open_queue(store_dir, "storm", config=STORM_CONFIG, **FAST) as queue:
        say("READY")

        async def producer(batches: bool) -> None:
            n = 0
            while True:
                n += 1
                if batches:
                    requests = [
                        EnqueueRequest(queue_name="w", payload=b"b%d-%d" % (n, i)) for i in range(3)
                    ]
                    for result in await queue.enqueue_batch(requests):
                        say("ENQ", result.id)
                else:
                    say("ENQ", (await queue.enqueue("w", b"s%d" % n)).id)

        async def ack(claim: taquba.Claim) -> None:
            marker = {f"ack/{claim.id}".encode(): b"%d" % claim.attempts}
            await queue.ack_with(claim, Effects(kv_writes=marker))
            say("ACK", claim.id)

        async def worker() -> None:
            async with trio.open_nursery() as acks:
                while True:
                    claims = await queue.claim_batch("w", 4)
                    if not claims:
                        await trio.sleep(0.002)
                    for claim in claims:
                        say("RUN", claim.id)  # the "handler" runs it
                        acks.start_soon(ack, claim)
                    await trio.lowlevel.checkpoint()

        async def folder() -> None:
            while True:
                await queue.fold_stats_now()
                await trio.sleep(0.005)

        async with trio.open_nursery() as nursery:
            if fold:
                nursery.start_soon(folder)
            nursery.start_soon(producer, False)
            nursery.start_soon(producer, False)
            nursery.start_soon(producer, True)
            nursery.start_soon(worker)
            nursery.start_soon(worker)


async def fence(store_dir: str, count: int) -> None:
    async with taquba.open_queue(store_dir, "fence", **FAST) as queue:
        say("READY")
        for i in range(count):
            say("ENQ", (await queue.enqueue("w", b"second writer %d" % i)).id)
    say("CLOSED")


async def orphan(store_dir: str) -> None:
    async def hang(self: taquba.Store, path: str) -> bool:
        say("DELETING", path.rsplit("/", 1)[-1])
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    config = QueueConfig(payload_offload_threshold=ORPHAN_THRESHOLD)
    async with taquba.open_queue(store_dir, "orphan", config=config, **FAST) as queue:
        say("READY")
        job = await queue.enqueue("w", b"B" * 100)
        say("ENQ", job.id)
        claim = await queue.claim("w")
        assert claim is not None
        taquba.Store.delete_blob = hang  # type: ignore[method-assign]
        await queue.ack(claim)


async def main(argv: list[str]) -> None:
    mode, store_dir, *rest = argv
    with trio.move_on_after(SAFETY_EXIT):
        if mode == "hold":
            await hold(store_dir, rest[0])
        elif mode == "storm":
            await storm(store_dir, fold=rest == ["fold"])
        elif mode == "fence":
            await fence(store_dir, int(rest[0]))
        elif mode == "orphan":
            await orphan(store_dir)
        else:
            raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    trio.run(main, sys.argv[1:])
