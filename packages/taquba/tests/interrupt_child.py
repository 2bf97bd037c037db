"""A small taquba app for the interrupt tests, run as ``python interrupt_child.py MODE STORE``.

It enqueues and works continuously on a local-disk store until it gets SIGINT. It talks to
the test through stdout, one flushed line per event, printed only *after* the call it reports
returned:

- ``READY`` once the queue is open;
- ``ENQ <id>`` after each enqueue returned (the job is durable: the store must keep it);
- ``CLOSED`` once `open_queue`'s block has exited (the store is shut down);
- ``INTERRUPTED`` when `trio.run` raised a plain `KeyboardInterrupt` (exit status 130);
- ``GROUP`` when it raised an exception group holding only `KeyboardInterrupt` (and
  `trio.Cancelled`): allowed only in the ``nursery`` mode, whose own nursery makes one.

Anything else escaping `trio.run` is a traceback and exit status 1.

Modes:

``chain``
    No nursery of its own: the main task opens the queue and serves a `taquba.Worker`,
    whose handler enqueues the next job of its chain (so enqueues, claims, acks and the
    queue's background tasks all run at once). Seeded with a few jobs.
``nursery``
    The app's own nursery runs two producers (``enqueue`` and ``enqueue_batch``) next to a
    worker.
"""

from __future__ import annotations

import signal
import sys

import trio

import taquba
from taquba import EnqueueRequest, JobRecord, LeaseHandle, QueueConfig

SAFETY_EXIT = 60.0
DB = "intr"
QUEUE = "w"
# Every run on a store may interrupt the jobs in flight, and each interrupted delivery (nacked
# on the way out, or recovered at the next open) counts as an attempt: with the default three
# attempts, a job at the head of the queue could be dead-lettered by bad luck over 20 runs.
CONFIG = QueueConfig(max_attempts=1_000, lease_duration=600, retry_backoff_base=0, keep_done=86_400)
# Short background intervals, so the reaper, scheduler and folder run while the signal lands.
OPTIONS = {"flush_interval": 0.01, "reaper_interval": 0.05, "scheduler_interval": 0.05}
CHAINS = 6


def say(*words: object) -> None:
    # One write call per line: `print` writes its arguments one by one, and a Ctrl-C landing
    # between two of them (this is unprotected app code) left half a line ("ENQ" without its
    # id) followed by the next one. A line written whole is flushed at exit if not before.
    sys.stdout.write(" ".join(map(str, words)) + "\n")
    sys.stdout.flush()


@trio.lowlevel.enable_ki_protection
def say_closed() -> None:
    """Report that the store is closed, protected from a late second Ctrl-C.

    A second SIGINT landing in the app's own ``finally`` (unprotected app code) interrupted
    the report itself: the app ended INTERRUPTED without CLOSED although the store was closed.
    Under KI protection trio defers that interrupt and raises it when the run ends.
    """
    say("CLOSED")


def is_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is an exception group of KeyboardInterrupts (and Cancelled) only."""
    if isinstance(exc, BaseExceptionGroup):
        group: BaseExceptionGroup[BaseException] = exc
        leaves = list(group.exceptions)
        return any(map(is_interrupt, leaves)) and all(
            is_interrupt(leaf) or isinstance(leaf, trio.Cancelled) for leaf in leaves
        )
    return isinstance(exc, KeyboardInterrupt)


async def chain(store_dir: str) -> None:
    async def handler(job: JobRecord, lease: LeaseHandle) -> None:
        say("ENQ", (await queue.enqueue(QUEUE, job.payload)).id)

    try:
        async with taquba.open_queue(store_dir, DB, config=CONFIG, **OPTIONS) as queue:
            say("READY")
            for i in range(CHAINS):
                say("ENQ", (await queue.enqueue(QUEUE, b"chain-%d" % i)).id)
            worker = taquba.Worker(queue, QUEUE, handler, concurrency=CHAINS, poll_interval=0.05)
            await worker.serve()
    finally:
        say_closed()


async def nursery(store_dir: str) -> None:
    async def producer(queue: taquba.Queue, batches: bool) -> None:
        n = 0
        while True:
            n += 1
            if batches:
                requests = [
                    EnqueueRequest(queue_name=QUEUE, payload=b"b%d-%d" % (n, i)) for i in range(3)
                ]
                for result in await queue.enqueue_batch(requests):
                    say("ENQ", result.id)
            else:
                say("ENQ", (await queue.enqueue(QUEUE, b"s%d" % n)).id)

    async def handler(job: JobRecord, lease: LeaseHandle) -> None:
        await trio.lowlevel.checkpoint()

    try:
        async with (
            taquba.open_queue(store_dir, DB, config=CONFIG, **OPTIONS) as queue,
            trio.open_nursery() as tasks,
        ):
            say("READY")
            tasks.start_soon(producer, queue, False)
            tasks.start_soon(producer, queue, True)
            tasks.start_soon(taquba.Worker(queue, QUEUE, handler, poll_interval=0.05).serve)
    finally:
        say_closed()


def main(mode: str, store_dir: str) -> int:
    app = {"chain": chain, "nursery": nursery}[mode]
    # Behave like a program started from a terminal even when the test runner was started as
    # a shell's background job: such jobs inherit SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler (nor does trio).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    async def bounded() -> None:
        with trio.move_on_after(SAFETY_EXIT):
            await app(store_dir)

    try:
        trio.run(bounded)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # taquba is done: a late Ctrl-C is moot
        say("INTERRUPTED")
        return 130
    except BaseExceptionGroup as group:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if mode == "nursery" and is_interrupt(group):
            say("GROUP")
            return 130
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
