"""A remote worker process for the crash tests: prints each claim, then hangs in its handler.

Usage: ``python worker_child.py URL QUEUE BACKEND`` (BACKEND: trio or asyncio). Each handler
prints ``claimed <job id> <token>`` and blocks, so the parent can SIGKILL the process with a
batch in flight.
"""

from __future__ import annotations

import asyncio
import sys

import anyio

import taquba_client as tc


async def handler(job: tc.Job, lease: tc.Lease) -> None:
    print(f"claimed {job.id} {lease.claim.token}", flush=True)
    await anyio.sleep_forever()


async def main(url: str, queue_name: str) -> None:
    async with tc.AsyncClient(url) as client:
        await tc.run_worker(client, queue_name, handler, concurrency=4, lease=1.0, poll_wait=1)


if __name__ == "__main__":
    url, queue_name, backend = sys.argv[1:4]
    if backend == "asyncio":
        asyncio.run(main(url, queue_name))
    else:
        import trio

        trio.run(main, url, queue_name)
