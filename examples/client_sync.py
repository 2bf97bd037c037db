"""taquba-client from synchronous code: a Django-style view and a threaded worker.

``create_report`` is shaped like a Django (or Flask) view: it runs in a worker thread of a
WSGI server, enqueues a job with the module's one `Client` (thread-safe, one connection pool
per process) and waits for its result. ``make_report`` is the handler a `ThreadedWorker` runs
in threads. Run it against a server (``TAQUBA_SERVER``, default ``http://127.0.0.1:8700``)::

    taquba-server --store ./store
    python examples/client_sync.py          # starts a worker thread, calls the view, prints
"""

from __future__ import annotations

import hashlib
import json
import os
import threading

import taquba_client

client = taquba_client.Client(os.environ.get("TAQUBA_SERVER", "http://127.0.0.1:8700"))
QUEUE = "reports"


def create_report(request: dict[str, str]) -> dict[str, str]:
    """A view: enqueue the report, wait up to 30 s, answer with its digest."""
    enqueued = client.enqueue(QUEUE, request["body"].encode(), headers={"user": request["user"]})
    try:
        job = client.wait_for_completion(enqueued.id, timeout=30)
    except taquba_client.WaitTimeout:
        return {"status": "pending", "id": enqueued.id}
    if job is None or job.status is not taquba_client.JobStatus.DONE:
        return {"status": "failed", "id": enqueued.id}
    digest = client.kv_get(f"reports/{job.id}".encode()) or b""
    return {"status": "done", "id": job.id, "digest": digest.decode()}


def make_report(job: taquba_client.Job, lease: taquba_client.ThreadLease) -> taquba_client.Effects:
    """The worker's handler (CPU-bound work in a thread; hashlib releases the GIL)."""
    digest = hashlib.sha256(job.payload * 1000).hexdigest()
    return taquba_client.Effects(kv_writes={f"reports/{job.id}".encode(): digest.encode()})


def main() -> None:
    """Run a worker in a thread, call the view once, print its answer, stop the worker."""
    worker = taquba_client.ThreadedWorker(client, QUEUE, make_report, concurrency=2, poll_wait=1)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        print(json.dumps(create_report({"user": "ada", "body": "quarterly numbers"})))
    finally:
        worker.shutdown()
        thread.join()
        client.close()


if __name__ == "__main__":
    main()
