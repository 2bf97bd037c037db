"""Child process of the crash benchmarks: ``python -m benchmarks._child JSON``.

Started with ``sys.executable`` (never forked). It prints one flushed line per event,
``WORD {json}``, each only after the calls it reports have returned (so everything reported
is durable). Modes:

``history``
    Open database ``db``; enqueue ``history`` jobs on queue ``q`` and drain them (claim in
    batches, ack concurrently), then enqueue ``live`` jobs. Print ``BUILT``. Then, with
    ``close`` true, close cleanly and print ``CLOSED``; otherwise wait to be killed.
``hold``
    Open database ``db``; enqueue ``jobs`` jobs on queue ``q``, claim them all (long lease),
    make the claims durable (a durable KV write after them), print ``HELD`` and wait to be
    killed.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import trio

import taquba
from benchmarks._harness import store_from_spec

SAFETY_EXIT = 900.0


def say(word: str, **info: Any) -> None:
    print(word, json.dumps(info), flush=True)


async def enqueue_many(queue: taquba.Queue, n: int, payload: bytes, chunk: int = 500) -> None:
    for base in range(0, n, chunk):
        requests = [taquba.EnqueueRequest(queue_name="q", payload=payload)] * min(chunk, n - base)
        await queue.enqueue_batch(requests)


async def drain(queue: taquba.Queue, n: int, concurrency: int = 64) -> None:
    done = 0
    async with trio.open_nursery() as nursery:
        limiter = trio.Semaphore(concurrency)

        async def ack(claim: taquba.Claim) -> None:
            nonlocal done
            try:
                await queue.ack(claim)
                done += 1
            finally:
                limiter.release()

        while done < n:
            claims = await queue.claim_batch("q", max(1, limiter.value))
            if not claims:
                await trio.sleep(0.005)
                continue
            for claim in claims:
                await limiter.acquire()
                nursery.start_soon(ack, claim)


async def history(params: dict[str, Any]) -> None:
    store = store_from_spec(params["store"])
    payload = b"h" * params["payload"]
    flush = params["flush"]
    start = time.perf_counter()
    async with taquba.open_queue(
        store, params["db"], flush_interval=flush, reaper_interval=3600.0
    ) as queue:
        await enqueue_many(queue, params["history"], payload)
        await drain(queue, params["history"])
        await enqueue_many(queue, params["live"], payload, chunk=1)
        say("BUILT", seconds=time.perf_counter() - start)
        if not params["close"]:
            await trio.sleep(SAFETY_EXIT)
        t = time.perf_counter()
    say("CLOSED", close_seconds=time.perf_counter() - t)


async def hold(params: dict[str, Any]) -> None:
    store = store_from_spec(params["store"])
    payload = b"s" * params["payload"]
    config = taquba.QueueConfig(lease_duration=3600.0)
    async with taquba.open_queue(
        store,
        params["db"],
        flush_interval=params["flush"],
        config=config,
        reaper_interval=3600.0,
    ) as queue:
        start = time.perf_counter()
        await enqueue_many(queue, params["jobs"], payload)
        held = 0
        while held < params["jobs"]:
            claims = await queue.claim_batch("q", 256)
            if not claims:
                break
            held += len(claims)
        await queue.kv_put(b"bench/held", b"%d" % held)  # durable, after every claim
        say("HELD", held=held, seconds=time.perf_counter() - start)
        await trio.sleep(SAFETY_EXIT)


def main() -> None:
    params = json.loads(sys.argv[1])
    mode = params["mode"]
    fn = {"history": history, "hold": hold}[mode]
    trio.run(fn, params)


if __name__ == "__main__":
    main()
