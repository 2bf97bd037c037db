"""Deliveries on a queue that offloads payloads (`taquba.QueueConfig.payload_offload_threshold`).

A delivery's encoded request (URL, headers, body) is its job's payload: a large body puts it
in an object of its own. The receiver must get the whole body, signed over the whole body, on
every attempt and after a replay from the dead-letter inbox, whose listing must decode it too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import taquba
import taquba_webhooks as tw
from taquba import QueueConfig, Store
from taquba.testing import open_test_queue
from webhooks_support import LOOPBACK, Receiver, Reply, run_worker, webhook_worker

pytestmark = pytest.mark.skipif(
    "payload_offload_threshold" not in {f.name for f in dataclasses.fields(QueueConfig)},
    reason="payload offload needs taquba >= 0.10",
)

THRESHOLD = 64
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = b'{"blob": "' + b"z" * 20_000 + b'"}'


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "memory":
        return Store.memory()
    return Store.from_url(tmp_path / "store")


@pytest.fixture
async def queue(store: Store) -> AsyncIterator[taquba.Queue]:
    config = QueueConfig(
        max_attempts=3, retry_backoff_base=0.0, payload_offload_threshold=THRESHOLD
    )
    async with open_test_queue(store, config=config) as q:
        yield q


def worker(queue: taquba.Queue) -> tw.WebhookWorker:
    return webhook_worker(queue, policy=LOOPBACK, secrets={"acme": SECRET})


async def payload_objects(queue: taquba.Queue) -> list[str]:
    """The offloaded payload objects in the queue's store (``db/<name>/payloads/<ref>``)."""
    return [name for name in await queue.store.list_blobs("db") if "/payloads/" in name]


async def test_a_large_body_is_delivered_whole_and_signed_on_every_attempt(
    queue: taquba.Queue, receiver: Receiver
) -> None:
    receiver.script("/hook", Reply(503), Reply(200))
    request = tw.WebhookRequest(receiver.url(), BODY, signing_key="acme")
    result = await tw.enqueue_webhook(queue, request)
    record = await queue.get_job(result.id)
    assert record is not None and record.payload_ref is not None  # offloaded
    await run_worker(queue, worker(queue))
    got = receiver.received()
    assert [r.body for r in got] == [BODY, BODY]
    for r in got:
        tw.verify_webhook(r.body, r.headers, SECRET)
    assert await payload_objects(queue) == []


async def test_a_dead_large_delivery_is_listed_and_replayed_whole(
    queue: taquba.Queue, receiver: Receiver
) -> None:
    receiver.script("/hook", Reply(404, body=b"unknown hook"), Reply(200))
    request = tw.WebhookRequest(receiver.url(), BODY, id="evt_big")
    result = await tw.enqueue_webhook(queue, request)
    await run_worker(queue, worker(queue))
    [dead] = await tw.dead_deliveries(queue)
    assert dead.job_id == result.id
    assert dead.request is not None and dead.request.body == BODY
    assert len(await payload_objects(queue)) == 1  # a dead job keeps its object
    await tw.replay_delivery(queue, result.id)
    await run_worker(queue, worker(queue))
    assert [r.body for r in receiver.received()] == [BODY, BODY]
    assert [r.headers["webhook-id"] for r in receiver.received()] == ["evt_big", "evt_big"]
    assert await payload_objects(queue) == []
