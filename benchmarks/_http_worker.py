"""A remote worker process for the ``http`` benchmark: ``python -m benchmarks._http_worker ARGS``.

Arguments (one JSON object): ``url``, ``queue``, ``slots``, ``cpu_ms`` (busy-loop milliseconds
per job, 0 for a no-op handler). It connects, prints ``READY``, waits for ``GO`` on stdin,
then serves the queue with a `taquba_client.Worker` of ``slots`` slots until stdin says ``STOP``
(or closes), and prints ``DONE {"cpu": <process CPU seconds>, "jobs": <handled>}``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import trio

import taquba_client


def burn(ms: float) -> None:
    end = time.process_time() + ms / 1000
    while time.process_time() < end:
        pass


async def main(params: dict[str, Any]) -> None:
    handled = 0
    cpu_ms = float(params["cpu_ms"])

    async def handler(job: Any, lease: Any) -> None:
        nonlocal handled
        if cpu_ms:
            burn(cpu_ms)
        handled += 1

    async with taquba_client.AsyncClient(params["url"]) as client:
        await client.list_queues()  # connected
        print("READY", flush=True)
        line = await trio.to_thread.run_sync(sys.stdin.readline)
        if line.strip() != "GO":
            return
        cpu0 = time.process_time()
        worker = taquba_client.Worker(
            client, params["queue"], handler, concurrency=int(params["slots"]), poll_wait=1.0
        )

        async def stop_on_stdin() -> None:
            await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            worker.shutdown()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_on_stdin)
            await worker.run()
            nursery.cancel_scope.cancel()
    print("DONE " + json.dumps({"cpu": time.process_time() - cpu0, "jobs": handled}), flush=True)


if __name__ == "__main__":
    trio.run(main, json.loads(sys.argv[1]))
