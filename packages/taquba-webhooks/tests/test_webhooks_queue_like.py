"""Producer and operator calls over any `taquba.QueueLike` (`taquba.testing.ForwardingQueue`:
the protocol's members and nothing else, each forwarding to a real `taquba.Queue`).

`WebhookWorker` keeps taking a `taquba.Queue` (its health-record writes rely on a lock inside
the owner process); everything a web app or an operator calls works over the protocol.
"""

from __future__ import annotations

import pytest

import taquba
import taquba_webhooks as tw
from taquba.testing import ForwardingQueue
from webhooks_support import LOOPBACK, Receiver, Reply, run_worker, webhook_worker


async def test_enqueue_inspect_and_replay_over_the_protocol(
    queue: taquba.Queue, receiver: Receiver
) -> None:
    remote = ForwardingQueue(queue)
    receiver.script("/a", Reply(404, body=b"unknown hook"))
    dead = await tw.enqueue_webhook(remote, tw.WebhookRequest(receiver.url("/a"), b"A"))
    ok = await tw.enqueue_webhook(remote, tw.WebhookRequest(receiver.url("/b"), b"B"))
    await run_worker(queue, webhook_worker(queue, policy=LOOPBACK))  # the owner delivers

    assert [d.job_id for d in await tw.dead_deliveries(remote)] == [dead.id]
    attempt = await tw.get_attempt(remote, dead.id)
    assert attempt is not None
    assert attempt.status == 404
    stats = await tw.endpoint_stats(remote, tw.endpoint_of(receiver.url("/b")))
    assert stats.delivered >= 1
    assert [s.endpoint for s in await tw.list_endpoint_stats(remote)] != []
    receiver.script("/a", Reply(200))
    await tw.replay_delivery(remote, dead.id)
    await run_worker(queue, webhook_worker(queue, policy=LOOPBACK))
    assert await tw.dead_deliveries(remote) == []
    assert await tw.replay_dead_deliveries(remote) == 0
    assert await tw.prune_attempts(remote) >= 0
    assert await queue.get_job(ok.id) is None
    for member in ("enqueue", "dead_jobs", "requeue_dead_job", "kv_get", "kv_scan"):
        assert remote.calls[member] >= 1, member


async def test_the_webhook_worker_still_needs_the_owner_queue(queue: taquba.Queue) -> None:
    with pytest.raises(taquba.InvalidArgument, match=r"taquba\.Queue"):
        tw.WebhookWorker(ForwardingQueue(queue), policy=LOOPBACK)  # type: ignore[arg-type]
