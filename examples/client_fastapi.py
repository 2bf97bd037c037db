"""taquba-client in a FastAPI app (asyncio): enqueue a job, await its result, answer.

The web process only needs ``taquba-client``; the owner of the store is a ``taquba-server``
(``TAQUBA_SERVER``, default ``http://127.0.0.1:8700``). Run the pieces with::

    taquba-server --store ./store                       # the owner
    python examples/client_fastapi.py worker            # a remote worker (asyncio)
    hypercorn examples.client_fastapi:app               # the web app (asyncio)
    curl -X POST localhost:8000/shout/hello             # {"id": "...", "result": "HELLO!"}

The worker acknowledges each job together with its result, written to the user KV under
``results/<job id>`` in the same transaction; the endpoint waits for the job and reads it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
from fastapi import FastAPI, HTTPException

import taquba_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

SERVER = os.environ.get("TAQUBA_SERVER", "http://127.0.0.1:8700")
QUEUE = "shout"


def result_key(job_id: str) -> bytes:
    """Where the worker leaves a job's result."""
    return f"results/{job_id}".encode()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """One AsyncClient (one connection pool) for the app's lifetime."""
    async with taquba_client.AsyncClient(SERVER) as client:
        app.state.taquba = client
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/shout/{text}")
async def shout(text: str) -> dict[str, str]:
    """Enqueue a job, wait (at most 30 s) for a worker to finish it, return its result."""
    client: taquba_client.AsyncClient = app.state.taquba
    enqueued = await client.enqueue(QUEUE, text.encode())
    with anyio.move_on_after(30):
        job = await client.wait_for_completion(enqueued.id)
        if job is not None and job.status is taquba_client.JobStatus.DONE:
            result = await client.kv_get(result_key(job.id))
            return {"id": job.id, "result": (result or b"").decode()}
        raise HTTPException(500, f"job {enqueued.id} failed")
    raise HTTPException(504, f"job {enqueued.id} is still running")


async def handle(job: taquba_client.Job, lease: taquba_client.Lease) -> taquba_client.Effects:
    """The worker's handler: the result goes to the KV with the ack, atomically."""
    await asyncio.sleep(0)  # real work would await I/O here
    return taquba_client.Effects(kv_writes={result_key(job.id): job.payload.upper() + b"!"})


async def run_worker() -> None:
    """Run a remote worker for the ``shout`` queue until Ctrl-C."""
    async with taquba_client.AsyncClient(SERVER) as client:
        await taquba_client.run_worker(client, QUEUE, handle, concurrency=8)


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        asyncio.run(run_worker())
    else:
        print(__doc__)
