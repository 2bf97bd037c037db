"""A live owner for the CLI owner-check tests: ``python owner_child.py STORE DB INTERVAL [URL]``.

It opens the database as its writer with a heartbeat every INTERVAL seconds (advertising URL,
if given) and enqueues a job on queue ``beat`` every 50 ms, reporting on stdout, one flushed
line per event:

- ``READY`` once the queue is open and its owner record is durable;
- ``ENQ <n>`` after each enqueue returned (so the owner still writes: it is not fenced);
- ``FENCED`` if the queue was fenced (then exit status 3);
- ``CLOSED`` after a clean close on SIGTERM (exit status 0).
"""

from __future__ import annotations

import signal
import sys

import trio

import taquba

SAFETY_EXIT = 60.0


def say(*words: object) -> None:
    sys.stdout.write(" ".join(map(str, words)) + "\n")
    sys.stdout.flush()


async def main(store: str, db: str, interval: float, url: str | None) -> int:
    with trio.move_on_after(SAFETY_EXIT), trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with taquba.open_queue(
            store, db, flush_interval=0.01, heartbeat_interval=interval
        ) as queue:
            queue.set_owner_address(url)
            await queue.enqueue("beat", b"0")  # a durable write: the owner record is flushed
            say("READY")
            async with trio.open_nursery() as nursery:

                async def stop_on_signal() -> None:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()

                nursery.start_soon(stop_on_signal)
                count = 0
                while True:
                    count += 1
                    try:
                        await queue.enqueue("beat", str(count).encode())
                    except taquba.Fenced:
                        say("FENCED")
                        nursery.cancel_scope.cancel()
                        return 3
                    say("ENQ", count)
                    await trio.sleep(0.05)
        say("CLOSED")
    return 0


if __name__ == "__main__":
    argv = sys.argv[1:]
    sys.exit(trio.run(main, argv[0], argv[1], float(argv[2]), argv[3] if len(argv) > 3 else None))
