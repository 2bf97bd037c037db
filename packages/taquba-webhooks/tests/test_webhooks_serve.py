"""The family convention for `WebhookWorker`: start with `nursery.start`, stop with `shutdown`,
cancel as the hard stop, one `serve` at a time, fatal errors raised as themselves."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

import taquba
import taquba_webhooks as tw
from taquba.testing import Fault, inject_faults, open_test_queue
from webhooks_support import FAST, LOOPBACK, Receiver, Reply, settled, wait_until, webhook_worker

HANG = 10.0


def worker(queue: taquba.Queue, **options: object) -> tw.WebhookWorker:
    return webhook_worker(queue, policy=LOOPBACK, prune_interval=None, **options)


async def test_one_serve_at_a_time(queue: taquba.Queue) -> None:
    running = worker(queue)
    async with trio.open_nursery() as nursery:
        await nursery.start(running.serve)
        with pytest.raises(taquba.UsageError, match="already serving"):
            await running.serve()
        running.shutdown()
    assert running.shutting_down


async def test_shutdown_before_serve_is_sticky(queue: taquba.Queue, receiver: Receiver) -> None:
    await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url(), b"x"))
    stopped = worker(queue)
    stopped.shutdown()
    stopped.shutdown()  # idempotent
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            await nursery.start(stopped.serve)  # started, then returns at once
        await stopped.serve()  # and again: shutdown stays set
    assert receiver.received() == []
    assert (await queue.stats(tw.DEFAULT_QUEUE_NAME)).pending == 1


async def test_serve_returns_after_shutdown_once_deliveries_finish(
    queue: taquba.Queue, receiver: Receiver
) -> None:
    receiver.default = Reply(200, delay=0.3)
    result = await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url(), b"x"))
    running = worker(queue)  # shutdown_grace None: the delivery in flight finishes
    async with trio.open_nursery() as nursery:
        await nursery.start(running.serve)
        await wait_until(lambda: bool(receiver.received()), 3)
        running.shutdown()
    assert await queue.get_job(result.id) is None  # acknowledged, not handed back
    assert (await tw.endpoint_stats(queue, tw.endpoint_of(receiver.url()))).delivered == 1


async def test_cancellation_is_the_hard_stop(queue: taquba.Queue, receiver: Receiver) -> None:
    receiver.default = Reply(200, delay=5.0)
    result = await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url(), b"x"))
    running = worker(queue)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(running.serve)
            await wait_until(lambda: bool(receiver.received()), 3)
            scope.cancel()
    assert scope.cancelled_caught
    job = await queue.get_job(result.id)
    assert job is not None and job.status is taquba.JobStatus.PENDING
    assert job.last_error == "the worker stopped before the delivery finished"


async def test_a_transient_claim_error_is_retried(
    queue: taquba.Queue, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "taquba_webhooks")
    result = await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url(), b"x"))
    running = worker(queue)
    with inject_faults() as faults, trio.fail_after(HANG):
        faults.on_write(Fault.unavailable(), times=3, durable=False)  # the claim transactions
        async with trio.open_nursery() as nursery:
            await nursery.start(running.serve)
            await wait_until(lambda: settled(queue))
            running.shutdown()
    assert faults.armed == 0 and len(faults.injected) == 3
    assert len(receiver.received()) == 1
    assert await queue.get_job(result.id) is None
    assert any("retrying" in record.getMessage() for record in caplog.records)


async def test_a_permanent_claim_error_is_raised_as_itself(
    queue: taquba.Queue, receiver: Receiver
) -> None:
    await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url(), b"x"))
    with inject_faults() as faults, trio.fail_after(HANG):
        faults.on_write(Fault.permanent(), durable=False)
        with pytest.raises(taquba.StorageError) as caught:
            await worker(queue).serve()
    assert type(caught.value) is taquba.StorageError
    assert not caught.value.transient
    assert receiver.received() == []


async def test_a_queue_closed_under_a_serving_worker_ends_serve_with_queue_closed() -> None:
    # The queue closes once every task is blocked, which is (almost always) the worker
    # waiting for jobs, so the error comes from that wait; either way it is raised as itself.
    close = trio.Event()

    async def own_queue(task_status: trio.TaskStatus[taquba.Queue]) -> None:
        async with open_test_queue(config=FAST) as queue:
            task_status.started(queue)
            await close.wait()

    async def close_once_idle() -> None:
        await trio.testing.wait_all_tasks_blocked(cushion=0.001)
        close.set()

    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            queue = await nursery.start(own_queue)
            nursery.start_soon(close_once_idle)
            with pytest.raises(taquba.QueueClosed):
                await worker(queue, poll_interval=60.0).serve()
