"""Dead-letter inspection and replay, attempt records, and per-endpoint statistics."""

from __future__ import annotations

import math

import pytest
import trio

import taquba
import taquba_webhooks as tw
from taquba.testing import open_test_queue
from taquba_webhooks._inspect import add_endpoint_stats
from webhooks_support import FAST, LOOPBACK, Receiver, Reply, run_worker, webhook_worker


def worker(queue: taquba.Queue, **options: object) -> tw.WebhookWorker:
    return webhook_worker(queue, policy=LOOPBACK, **options)


async def test_dead_deliveries_and_replay(queue: taquba.Queue, receiver: Receiver) -> None:
    receiver.script("/a", Reply(404, body=b"unknown hook"))
    receiver.script("/b", Reply(410, body=b"gone"))
    a = await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url("/a"), b"A", id="evt_a"))
    b = await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url("/b"), b"B"))
    await run_worker(queue, worker(queue))

    dead = await tw.dead_deliveries(queue)
    assert [d.job_id for d in dead] == sorted([a.id, b.id])
    by_id = {d.job_id: d for d in dead}
    assert by_id[a.id].request is not None and by_id[a.id].request.body == b"A"
    assert by_id[a.id].last_attempt is not None
    assert by_id[a.id].last_attempt.status == 404
    assert by_id[a.id].last_attempt.response_body == b"unknown hook"
    assert by_id[a.id].job.last_error == "HTTP 404: unknown hook"
    assert [d.job_id for d in await tw.dead_deliveries(queue, after=dead[0].job_id)] == [
        dead[1].job_id
    ]

    # The receiver is fixed: replaying sends the same webhook-id again, attempts reset.
    await tw.replay_delivery(queue, a.id)
    await run_worker(queue, worker(queue))
    ids = [r.headers["webhook-id"] for r in receiver.received("/a")]
    assert ids == ["evt_a", "evt_a"]
    assert await queue.get_job(a.id) is None
    assert await tw.get_attempt(queue, a.id) is None
    assert [d.job_id for d in await tw.dead_deliveries(queue)] == [b.id]

    with pytest.raises(taquba.JobNotFound):
        await tw.replay_delivery(queue, a.id)
    await queue.enqueue(tw.DEFAULT_QUEUE_NAME, b"x", job_id="pending-one", delay=60)
    with pytest.raises(taquba.InvalidState):
        await tw.replay_delivery(queue, "pending-one")
    await queue.cancel("pending-one")


async def test_replay_dead_deliveries_by_endpoint(
    queue: taquba.Queue, nursery: trio.Nursery
) -> None:
    from webhooks_support import start_receiver

    first = await start_receiver(nursery)
    second = await start_receiver(nursery)
    first.default = Reply(400)
    second.default = Reply(400)
    for _ in range(3):
        await tw.enqueue_webhook(queue, tw.WebhookRequest(first.url(), b"1"))
    for _ in range(2):
        await tw.enqueue_webhook(queue, tw.WebhookRequest(second.url(), b"2"))
    await queue.enqueue(tw.DEFAULT_QUEUE_NAME, b"junk")  # unreadable: never replayed
    await run_worker(queue, worker(queue))
    assert len(await tw.dead_deliveries(queue)) == 6

    first.default = Reply(200)
    assert await tw.replay_dead_deliveries(queue, endpoint=tw.endpoint_of(first.url())) == 3
    await run_worker(queue, worker(queue))
    assert len(first.received()) == 6
    assert len(await tw.dead_deliveries(queue)) == 3

    second.default = Reply(200)
    assert await tw.replay_dead_deliveries(queue) == 2
    await run_worker(queue, worker(queue))
    assert len(second.received()) == 4
    [junk] = await tw.dead_deliveries(queue)
    assert junk.request is None


async def test_endpoint_statistics(queue: taquba.Queue, nursery: trio.Nursery) -> None:
    from webhooks_support import start_receiver

    ok = await start_receiver(nursery)
    flaky = await start_receiver(nursery)
    flaky.script("/hook", Reply(503), Reply(503), Reply(503), Reply(500), Reply(200))
    flaky.script("/gone", Reply(410))
    for _ in range(4):
        await tw.enqueue_webhook(queue, tw.WebhookRequest(ok.url(), b"x"))
    await tw.enqueue_webhook(queue, tw.WebhookRequest(flaky.url(), b"x"))  # 3 attempts: dead
    await tw.enqueue_webhook(queue, tw.WebhookRequest(flaky.url(), b"x"))  # 500 then 200
    await tw.enqueue_webhook(queue, tw.WebhookRequest(flaky.url("/gone"), b"x"))
    await tw.enqueue_webhook(
        queue, tw.WebhookRequest(ok.url("/custom"), b"x", endpoint="customer-42")
    )
    await run_worker(queue, worker(queue, concurrency=1))

    ok_stats = await tw.endpoint_stats(queue, tw.endpoint_of(ok.url()))
    assert (ok_stats.delivered, ok_stats.retried, ok_stats.dead) == (4, 0, 0)
    assert ok_stats.last_delivered_at is not None and ok_stats.last_failed_at is None
    flaky_stats = await tw.endpoint_stats(queue, tw.endpoint_of(flaky.url()))
    assert (flaky_stats.delivered, flaky_stats.retried, flaky_stats.dead) == (1, 3, 2)
    assert flaky_stats.attempts == 6
    assert flaky_stats.last_attempt_at is not None
    custom = await tw.endpoint_stats(queue, "customer-42")
    assert custom.delivered == 1
    assert await tw.endpoint_stats(queue, "https://never.example") == tw.EndpointStats(
        "https://never.example"
    )
    listed = await tw.list_endpoint_stats(queue)
    assert [s.endpoint for s in listed] == sorted(
        [tw.endpoint_of(ok.url()), tw.endpoint_of(flaky.url()), "customer-42"]
    )


async def test_concurrent_counter_updates_are_not_lost(queue: taquba.Queue) -> None:
    # Two writers racing on one endpoint's record: compare-and-set keeps every increment.
    async with trio.open_nursery() as nursery:
        for i in range(40):
            delta = tw.EndpointStats("https://race.example", delivered=1, retried=i % 2)
            nursery.start_soon(add_endpoint_stats, queue, delta)
    stats = await tw.endpoint_stats(queue, "https://race.example")
    assert (stats.delivered, stats.retried) == (40, 20)


async def test_attempt_record_kept_with_done_jobs(receiver: Receiver) -> None:
    config = taquba.QueueConfig(keep_done=3600, max_attempts=3, retry_backoff_base=0)
    async with open_test_queue(config=config) as queue:
        receiver.script("/hook", Reply(201, body=b'{"ok":true}'))
        result = await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url(), b"x"))
        await run_worker(queue, worker(queue))
        attempt = await tw.get_attempt(queue, result.id)
        assert attempt is not None
        assert attempt.outcome is tw.AttemptOutcome.DELIVERED
        assert (attempt.status, attempt.response_body, attempt.error) == (201, b'{"ok":true}', None)


async def test_prune_attempts_removes_records_of_deleted_jobs(
    queue: taquba.Queue, receiver: Receiver
) -> None:
    receiver.default = Reply(400)
    kept = await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url(), b"x"))
    await run_worker(queue, worker(queue))
    from taquba_webhooks._records import attempt_key

    orphan = attempt_key("01GONEGONEGONEGONEGONEGONE")
    await queue.kv_put(orphan, b"whatever")
    assert await tw.prune_attempts(queue) == 1
    assert await queue.kv_get(orphan) is None
    assert await tw.get_attempt(queue, kept.id) is not None


async def test_serve_prunes_periodically(queue: taquba.Queue) -> None:
    from taquba_webhooks._records import attempt_key

    orphan = attempt_key("01GONEGONEGONEGONEGONEGONE")
    await queue.kv_put(orphan, b"whatever")

    async def pruned() -> bool:
        return await queue.kv_get(orphan) is None

    await run_worker(queue, worker(queue, prune_interval=0.05), pruned)


async def test_worker_argument_checks(queue: taquba.Queue) -> None:
    for kwargs in (
        {"concurrency": 0},
        {"concurrency": 1.5},
        {"poll_interval": 0},
        {"poll_interval": float("inf")},
        {"prune_interval": -1},
        {"shutdown_grace": -1},
        {"shutdown_grace": float("nan")},
    ):
        [name] = kwargs
        with pytest.raises(taquba.InvalidArgument, match=f"^{name} must be") as caught:
            tw.WebhookWorker(queue, **kwargs)  # type: ignore[arg-type]
        assert caught.value.argument == name
    with pytest.raises(taquba.InvalidQueueName):
        tw.WebhookWorker(queue, queue_name="")
    with pytest.raises(taquba.InvalidArgument, match=r"^queue must be"):
        tw.WebhookWorker("memory://")  # type: ignore[arg-type]
    built = tw.WebhookWorker(queue, queue_name="hooks", concurrency=3, shutdown_grace=math.inf)
    assert (built.queue_name, built.concurrency, built.shutting_down) == ("hooks", 3, False)
    assert "hooks" in repr(built)


async def test_serve_ends_with_the_queue(receiver: Receiver) -> None:
    async with open_test_queue(config=FAST) as queue:
        await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url(), b"x"))
        await run_worker(queue, worker(queue))
    with pytest.raises(taquba.QueueClosed):
        await worker(queue).serve()
