"""Deliveries against a real HTTP receiver on loopback: success, classification, retries."""

from __future__ import annotations

import email.utils
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

import taquba
import taquba_webhooks as tw
from taquba.testing import MockClock, open_test_queue
from webhooks_support import LOOPBACK, Receiver, Reply, run_worker, wait_until, webhook_worker


def worker(queue: taquba.Queue, **options: object) -> tw.WebhookWorker:
    return webhook_worker(queue, policy=LOOPBACK, **options)


async def test_delivers_a_post_with_body_headers_and_webhook_id(
    queue: taquba.Queue, receiver: Receiver
) -> None:
    request = tw.WebhookRequest.json(
        receiver.url(), {"type": "invoice.paid", "n": 1}, headers={"x-tenant": "acme"}
    )
    result = await tw.enqueue_webhook(queue, request)
    await run_worker(queue, worker(queue))
    [got] = receiver.received()
    assert got.method == "POST"
    assert json.loads(got.body) == {"type": "invoice.paid", "n": 1}
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-tenant"] == "acme"
    assert got.headers["webhook-id"] == result.id
    assert abs(int(got.headers["webhook-timestamp"]) - queue.clock.now_ms() / 1000) < 10
    assert "webhook-signature" not in got.headers  # no signing key named
    assert got.headers["user-agent"].startswith("taquba-webhooks/")
    assert got.headers["host"] == f"127.0.0.1:{receiver.port}"
    assert (await queue.stats(tw.DEFAULT_QUEUE_NAME)).done == 1
    assert await tw.get_attempt(queue, result.id) is None  # deleted with the ack


async def test_method_custom_id_and_user_agent(queue: taquba.Queue, receiver: Receiver) -> None:
    request = tw.WebhookRequest(
        receiver.url("/put"),
        b"raw",
        method="PUT",
        id="evt_123",
        headers={"User-Agent": "acme-hooks/2"},
    )
    await tw.enqueue_webhook(queue, request)
    await run_worker(queue, worker(queue))
    [got] = receiver.received("/put")
    assert (got.method, got.body) == ("PUT", b"raw")
    assert got.headers["webhook-id"] == "evt_123"
    assert got.headers["user-agent"] == "acme-hooks/2"


async def test_webhook_id_is_stable_across_retries(queue: taquba.Queue, receiver: Receiver) -> None:
    receiver.script("/hook", Reply(503), Reply(500), Reply(200))
    result = await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url(), b"x"))
    await run_worker(queue, worker(queue))
    ids = {r.headers["webhook-id"] for r in receiver.received()}
    assert len(receiver.received()) == 3
    assert ids == {result.id}
    assert (await queue.stats(tw.DEFAULT_QUEUE_NAME)).done == 1


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
async def test_retryable_statuses_are_retried(
    queue: taquba.Queue, receiver: Receiver, status: int
) -> None:
    receiver.script("/hook", Reply(status, body=b"busy"), Reply(204))
    result = await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url(), b"x"))
    await run_worker(queue, worker(queue))
    assert len(receiver.received()) == 2
    assert (await queue.stats(tw.DEFAULT_QUEUE_NAME)).done == 1
    assert await queue.get_job(result.id) is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])  # 410: test_webhooks_health
async def test_other_4xx_dead_letter_at_once(
    queue: taquba.Queue, receiver: Receiver, status: int
) -> None:
    receiver.script("/hook", Reply(status, body=b'{"error": "no such tenant"}'))
    result = await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url(), b"x"))
    await run_worker(queue, worker(queue))
    assert len(receiver.received()) == 1
    job = await queue.get_job(result.id)
    assert job is not None and job.status is taquba.JobStatus.DEAD
    assert job.attempts == 1
    assert job.last_error == f'HTTP {status}: {{"error": "no such tenant"}}'
    attempt = await tw.get_attempt(queue, result.id)
    assert attempt is not None
    assert attempt.outcome is tw.AttemptOutcome.DEAD
    assert attempt.status == status
    assert attempt.response_body == b'{"error": "no such tenant"}'
    assert attempt.error == job.last_error
    assert attempt.webhook_id == result.id
    assert attempt.attempt == 1
    assert attempt.url == receiver.url()


async def test_exhausted_retries_dead_letter_with_the_last_error(
    queue: taquba.Queue, receiver: Receiver
) -> None:
    receiver.default = Reply(503, body=b"down for maintenance")
    result = await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url(), b"x"))
    await run_worker(queue, worker(queue))
    assert len(receiver.received()) == 3  # max_attempts
    job = await queue.get_job(result.id)
    assert job is not None and job.status is taquba.JobStatus.DEAD
    assert job.last_error == "gave up after 3 attempts: HTTP 503: down for maintenance"
    attempt = await tw.get_attempt(queue, result.id)
    assert attempt is not None and attempt.outcome is tw.AttemptOutcome.DEAD
    assert attempt.attempt == 3


async def test_response_body_is_truncated_on_the_record(
    queue: taquba.Queue, receiver: Receiver
) -> None:
    receiver.script("/hook", Reply(400, body=b"e" * 5000))
    result = await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url(), b"x"))
    await run_worker(queue, worker(queue, response_body_limit=100))
    attempt = await tw.get_attempt(queue, result.id)
    assert attempt is not None
    assert attempt.response_body == b"e" * 100
    assert attempt.response_truncated
    job = await queue.get_job(result.id)
    assert job is not None and job.last_error is not None and len(job.last_error) < 250


async def test_timeout_is_retried_and_bounded(queue: taquba.Queue, receiver: Receiver) -> None:
    # The first reply never comes within the test (an hour), so the job can only be delivered
    # if the timeout ends the first attempt and the retry gets the second reply.
    receiver.script("/hook", Reply(200, delay=3600), Reply(200))
    result = await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url(), b"x", timeout=0.3))
    await run_worker(queue, worker(queue))
    assert len(receiver.received()) == 2
    assert await queue.get_job(result.id) is None


async def test_timeout_failure_is_recorded(queue: taquba.Queue, receiver: Receiver) -> None:
    receiver.default = Reply(200, delay=5.0)
    result = await tw.enqueue_webhook(
        queue, tw.WebhookRequest(receiver.url(), b"x", timeout=0.2), max_attempts=1
    )
    await run_worker(queue, worker(queue))
    attempt = await tw.get_attempt(queue, result.id)
    assert attempt is not None
    assert attempt.status is None
    assert attempt.error == "gave up after 1 attempts: timed out after 0.2 s"
    assert attempt.duration_ms >= 200


async def test_worker_default_timeout_applies(queue: taquba.Queue, receiver: Receiver) -> None:
    receiver.default = Reply(200, delay=5.0)
    result = await tw.enqueue_webhook(
        queue, tw.WebhookRequest(receiver.url(), b"x"), max_attempts=1
    )
    await run_worker(queue, worker(queue, default_timeout=0.2))
    attempt = await tw.get_attempt(queue, result.id)
    assert attempt is not None and attempt.error is not None
    assert "timed out after 0.2 s" in attempt.error


async def test_lease_is_extended_to_cover_the_timeout(receiver: Receiver) -> None:
    # A 0.3 s lease and a 0.8 s response: without the extension the reaper would take the
    # job back mid-request and the receiver would see a second delivery.
    config = taquba.QueueConfig(lease_duration=0.3, max_attempts=3, retry_backoff_base=0)
    async with open_test_queue(config=config, reaper_interval=0.02) as queue:
        receiver.script("/hook", Reply(200, delay=0.8))
        result = await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url(), b"x", timeout=5))
        await run_worker(queue, worker(queue))
        assert len(receiver.received()) == 1
        assert await queue.get_job(result.id) is None
        assert (await queue.stats(tw.DEFAULT_QUEUE_NAME)).done == 1


async def test_connection_refused_is_retried(queue: taquba.Queue) -> None:
    with trio.socket.socket() as sock:  # a free port with nothing listening
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await tw.enqueue_webhook(
        queue, tw.WebhookRequest(f"http://127.0.0.1:{port}/hook", b"x"), max_attempts=2
    )
    await run_worker(queue, worker(queue))
    job = await queue.get_job(result.id)
    assert job is not None and job.status is taquba.JobStatus.DEAD and job.attempts == 2
    assert job.last_error is not None and "connection failed: ConnectError" in job.last_error


async def test_retry_after_seconds_schedules_the_retry() -> None:
    clock = MockClock()
    config = taquba.QueueConfig(retry_backoff_base=1.0, max_attempts=3)
    async with open_test_queue(config=config, clock=clock) as queue:
        receiver_ok = await _receiver_with(Reply(429, headers={"Retry-After": "120"}), Reply(200))
        async with receiver_ok as receiver:
            result = await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url(), b"x"))
            await run_worker(queue, worker(queue), _scheduled(queue))
            job = await queue.get_job(result.id)
            assert job is not None and job.status is taquba.JobStatus.SCHEDULED
            assert job.run_at == clock.now_ms() + 120_000  # max(backoff 1 s, Retry-After)
            assert job.last_error == "HTTP 429: ok (Retry-After 120 s)"
            attempt = await tw.get_attempt(queue, result.id)
            assert attempt is not None and attempt.retry_after == 120
            assert attempt.outcome is tw.AttemptOutcome.RETRY
            clock.advance(120)
            await queue.promote_scheduled_now()
            await run_worker(queue, worker(queue))
            assert len(receiver.received()) == 2


async def test_retry_after_http_date_and_cap() -> None:
    clock = MockClock()
    config = taquba.QueueConfig(retry_backoff_base=1.0, max_attempts=3)
    when = email.utils.formatdate(clock.now_ms() / 1000 + 90, usegmt=True)
    async with open_test_queue(config=config, clock=clock) as queue:
        replies = (
            Reply(503, headers={"Retry-After": when}),
            Reply(503, headers={"Retry-After": "99999"}),
        )
        async with await _receiver_with(*replies) as receiver:
            first = await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url(), b"x"))
            await run_worker(queue, worker(queue), _scheduled(queue))
            job = await queue.get_job(first.id)
            assert job is not None and job.run_at == clock.now_ms() + 90_000
            await queue.cancel(first.id)
            second = await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url(), b"y"))
            await run_worker(queue, worker(queue, max_retry_after=600), _scheduled(queue))
            job = await queue.get_job(second.id)
            assert job is not None and job.run_at == clock.now_ms() + 600_000


async def test_redirects_are_not_followed_by_default(
    queue: taquba.Queue, receiver: Receiver
) -> None:
    receiver.script("/old", Reply(308, headers={"location": receiver.url("/new")}))
    result = await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url("/old"), b"x"))
    await run_worker(queue, worker(queue))
    assert receiver.received("/new") == []
    job = await queue.get_job(result.id)
    assert job is not None and job.status is taquba.JobStatus.DEAD
    assert job.last_error is not None
    assert job.last_error.startswith(f"HTTP 308 (redirect to {receiver.url('/new')} not followed)")


async def test_redirects_followed_when_configured(queue: taquba.Queue, receiver: Receiver) -> None:
    receiver.script("/old", Reply(307, headers={"location": receiver.url("/new")}))
    await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url("/old"), b"payload"))
    await run_worker(queue, worker(queue, follow_redirects=True))
    [moved] = receiver.received("/new")
    assert (moved.method, moved.body) == ("POST", b"payload")
    assert (await queue.stats(tw.DEFAULT_QUEUE_NAME)).done == 1


async def test_too_many_redirects_dead_letter(queue: taquba.Queue, receiver: Receiver) -> None:
    receiver.default = Reply(307, headers={"location": receiver.url("/loop")})
    result = await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url("/loop"), b"x"))
    await run_worker(queue, worker(queue, follow_redirects=True, max_redirects=2))
    job = await queue.get_job(result.id)
    assert job is not None and job.status is taquba.JobStatus.DEAD
    assert job.last_error is not None and job.last_error.startswith("too many redirects")
    assert len(receiver.received()) == 3


async def test_cancel_during_delivery_abandons_it(queue: taquba.Queue, receiver: Receiver) -> None:
    receiver.default = Reply(200, delay=5.0)
    result = await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url(), b"x"))

    async def cancel_when_sent() -> bool:
        if receiver.received():
            assert await queue.cancel(result.id) is taquba.CancelOutcome.REQUESTED
            return True
        return False

    async def dead() -> bool:
        job = await queue.get_job(result.id)
        return job is not None and job.status is taquba.JobStatus.DEAD

    running = worker(queue)
    async with trio.open_nursery() as nursery:
        await nursery.start(running.serve)
        await wait_until(cancel_when_sent, 3)
        await wait_until(dead, 3)
        running.shutdown()
    job = await queue.get_job(result.id)
    assert job is not None and job.last_error == "cancelled while delivering"
    assert (await tw.endpoint_stats(queue, tw.endpoint_of(receiver.url()))).attempts == 0


async def test_shutdown_grace_hands_back_the_delivery(
    queue: taquba.Queue, receiver: Receiver
) -> None:
    receiver.default = Reply(200, delay=5.0)
    result = await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url(), b"x"))
    running = worker(queue, shutdown_grace=0.1)
    async with trio.open_nursery() as nursery:
        await nursery.start(running.serve)
        await wait_until(lambda: bool(receiver.received()), 3)
        running.shutdown()
    job = await queue.get_job(result.id)
    assert job is not None and job.status is taquba.JobStatus.PENDING
    assert job.last_error == "the worker stopped before the delivery finished"


async def test_unreadable_payload_is_dead_lettered(queue: taquba.Queue) -> None:
    result = await queue.enqueue(tw.DEFAULT_QUEUE_NAME, b"not a delivery")
    await run_worker(queue, worker(queue))
    job = await queue.get_job(result.id)
    assert job is not None and job.status is taquba.JobStatus.DEAD
    assert job.last_error is not None and job.last_error.startswith("invalid delivery:")
    [dead] = await tw.dead_deliveries(queue)
    assert dead.request is None
    assert dead.last_attempt is not None and dead.last_attempt.url == ""


async def test_enqueue_as_a_settlement_effect(queue: taquba.Queue, receiver: Receiver) -> None:
    await queue.enqueue("orders", b"order-1")

    async def handle(job: taquba.JobRecord, lease: taquba.LeaseHandle) -> taquba.Effects:
        request = tw.WebhookRequest.json(receiver.url(), {"order": job.payload.decode()})
        return taquba.Effects(enqueues=[request.to_enqueue_request(job_id="order-1-hook")])

    from taquba.testing import drain

    assert await drain(queue, "orders", handle) == 1
    await run_worker(queue, worker(queue))
    [got] = receiver.received()
    assert json.loads(got.body) == {"order": "order-1"}
    assert got.headers["webhook-id"] == "order-1-hook"


async def test_concurrent_deliveries(queue: taquba.Queue, receiver: Receiver) -> None:
    # The receiver holds its replies until 8 requests wait at once: one delivery at a time
    # never gets there (counted, not timed).
    receiver.gather = 8
    for i in range(16):
        await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url(f"/c{i}"), b"x"))
    await run_worker(queue, worker(queue, concurrency=8), limit=60)
    assert len(receiver.received()) == 16
    assert receiver.most_in_flight == 8


# --------------------------------------------------------------------------- helpers


def _scheduled(queue: taquba.Queue):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return (await queue.stats(tw.DEFAULT_QUEUE_NAME)).scheduled == 1

    return check


class _ReceiverScope:
    def __init__(self, *replies: Reply) -> None:
        self._replies = replies
        self._cm: trio.Nursery | None = None

    async def __aenter__(self) -> Receiver:
        from webhooks_support import start_receiver

        self._nursery_cm = trio.open_nursery()
        nursery = await self._nursery_cm.__aenter__()
        self._nursery = nursery
        receiver = await start_receiver(nursery)
        receiver.script("/hook", *self._replies)
        return receiver

    async def __aexit__(self, *exc: object) -> None:
        self._nursery.cancel_scope.cancel()
        await self._nursery_cm.__aexit__(None, None, None)


async def _receiver_with(*replies: Reply) -> _ReceiverScope:
    await trio.lowlevel.checkpoint()
    return _ReceiverScope(*replies)


async def test_large_response_bodies_are_abandoned_not_downloaded(
    queue: taquba.Queue, receiver: Receiver
) -> None:
    receiver.script("/big", Reply(500, body=b"z" * 2_000_000), Reply(200, body=b"y" * 300_000))
    result = await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url("/big"), b"x"))
    await run_worker(queue, worker(queue))
    assert len(receiver.received("/big")) == 2
    assert await queue.get_job(result.id) is None
    stats = await tw.endpoint_stats(queue, tw.endpoint_of(receiver.url()))
    assert (stats.retried, stats.delivered) == (1, 1)


async def test_a_lost_lease_is_logged_and_the_job_delivered_again(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    clock = MockClock()
    config = taquba.QueueConfig(max_attempts=3, retry_backoff_base=0)
    async with open_test_queue(config=config, clock=clock) as queue:
        receiver.script("/hook", Reply(200, delay=0.5), Reply(200))
        result = await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url(), b"x"))
        async with _serving_with_the_first_attempt_reaped(queue, clock, receiver):
            await wait_until(lambda: len(receiver.received()) == 2, 3)
            await wait_until(lambda: _done(queue), 3)
        assert await queue.get_job(result.id) is None
        assert "lost the claim" in caplog.text


async def _done(queue: taquba.Queue) -> bool:
    return (await queue.stats(tw.DEFAULT_QUEUE_NAME)).done == 1


@asynccontextmanager
async def _serving_with_the_first_attempt_reaped(
    queue: taquba.Queue, clock: MockClock, receiver: Receiver
) -> AsyncIterator[None]:
    """Serve ``queue``; once the first attempt reaches the receiver, expire and reap its lease."""

    async def reap_mid_request() -> bool:
        if not receiver.received():
            return False
        clock.advance(3600)  # far past the extended lease
        assert await queue.reap_now() == 1
        return True

    running = worker(queue)
    async with trio.open_nursery() as nursery:
        await nursery.start(running.serve)
        await wait_until(reap_mid_request, 3)
        yield
        running.shutdown()


async def test_a_worker_that_lost_its_claim_writes_no_attempt_record(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # Attempt 1 hangs and its lease is reaped, which abandons it; attempt 2 is under way.
    # Attempt 1's settlement fails with ClaimLost and must write nothing: the attempt record
    # commits with the settlement, so no record claims the delivery ended while it is running.
    clock = MockClock()
    config = taquba.QueueConfig(max_attempts=3, retry_backoff_base=0)
    async with open_test_queue(config=config, clock=clock) as queue:
        receiver.script("/hook", Reply(500, delay=5), Reply(200, delay=0.5))
        result = await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url(), b"x"))
        async with _serving_with_the_first_attempt_reaped(queue, clock, receiver):
            await wait_until(lambda: "lost the claim" in caplog.text, 3)
            assert await tw.get_attempt(queue, result.id) is None
            await wait_until(lambda: _done(queue), 3)
        assert len(receiver.received()) == 2
        assert await queue.get_job(result.id) is None
