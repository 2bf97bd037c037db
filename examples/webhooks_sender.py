"""Send signed webhooks durably with taquba-webhooks, then show what happened.

Start ``examples/webhooks_receiver.py`` first (same ``WEBHOOK_SECRET``), then::

    python examples/webhooks_sender.py --url http://127.0.0.1:8000/hooks --count 6

Deliveries are jobs in a queue on local disk (``./webhooks-demo`` by default), so a crash or
restart of this script loses none of them: run it again and the worker picks up where it
stopped. The receiver refuses some first attempts with 503 + ``Retry-After``; the worker
retries them. The SSRF guard refuses loopback by default, so this example allows it.
"""

from __future__ import annotations

import argparse
import os

import trio

import taquba
import taquba_webhooks

QUEUE = taquba_webhooks.DEFAULT_QUEUE_NAME
LOCAL = taquba_webhooks.DestinationPolicy(allow=["127.0.0.0/8", "::1/128"])


async def run(
    url: str,
    secret: str,
    *,
    store: str | taquba.Store,
    count: int,
    max_attempts: int = 5,
    quiet: bool = False,
) -> list[taquba_webhooks.EndpointStats]:
    """Enqueue ``count`` events for ``url``, deliver them all, return the endpoint counters."""

    def say(text: str) -> None:
        if not quiet:
            print(text, flush=True)

    config = taquba.QueueConfig(max_attempts=max_attempts, retry_backoff_base=0.5)
    async with taquba.open_queue(store, "demo", queues={QUEUE: config}) as queue:
        for n in range(count):
            event = {"type": "invoice.paid", "n": n, "amount": 100 * (n + 1)}
            request = taquba_webhooks.WebhookRequest.json(url, event, signing_key="receiver")
            result = await taquba_webhooks.enqueue_webhook(queue, request)
            say(f"enqueued {result.id}: {event}")

        worker = taquba_webhooks.WebhookWorker(
            queue,
            secrets={"receiver": secret},
            policy=LOCAL,
            default_timeout=10,
            poll_interval=0.2,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)  # returns once the worker is delivering
            while True:  # wait until nothing is left to deliver
                stats = await queue.stats(QUEUE)
                if stats.pending + stats.scheduled + stats.claimed == 0:
                    break
                await trio.sleep(0.1)
            worker.shutdown()  # graceful: deliveries in flight finish first

        for dead in await taquba_webhooks.dead_deliveries(queue):
            say(f"dead: {dead.job_id}: {dead.job.last_error}")
        endpoints = await taquba_webhooks.list_endpoint_stats(queue)
        for stats in endpoints:
            say(
                f"{stats.endpoint}: delivered {stats.delivered}, "
                f"retried {stats.retried}, dead {stats.dead}"
            )
        return endpoints


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000/hooks")
    parser.add_argument("--secret", default=os.environ.get("WEBHOOK_SECRET"))
    parser.add_argument("--store", default="./webhooks-demo")
    parser.add_argument("--count", type=int, default=6)
    args = parser.parse_args()
    if not args.secret:
        parser.error("pass --secret or set WEBHOOK_SECRET (the receiver's secret)")
    trio.run(lambda: run(args.url, args.secret, store=args.store, count=args.count))


if __name__ == "__main__":
    main()
