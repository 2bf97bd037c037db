"""Endpoint health: 410 Gone, disabling after consecutive failures, enabling again."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import taquba
import taquba_webhooks as tw
from taquba_webhooks._health import health_after
from taquba_webhooks._records import EndpointHealth
from webhooks_support import LOOPBACK, Receiver, Reply, run_worker, webhook_worker

GONE_REASON = "HTTP 410 Gone (the receiver asks to stop sending to this endpoint)"


def worker(queue: taquba.Queue, **options: Any) -> tw.WebhookWorker:
    return webhook_worker(queue, policy=LOOPBACK, **options)


async def enqueue(queue: taquba.Queue, receiver: Receiver, count: int, **options: Any) -> list[str]:
    ids: list[str] = []
    for n in range(count):
        request = tw.WebhookRequest(receiver.url(), str(n).encode())
        ids.append((await tw.enqueue_webhook(queue, request, **options)).id)
    return ids


async def job(queue: taquba.Queue, job_id: str) -> taquba.JobRecord:
    record = await queue.get_job(job_id)
    assert record is not None
    return record


async def test_410_dead_letters_at_once_and_says_the_receiver_is_gone(
    queue: taquba.Queue, receiver: Receiver
) -> None:
    """Without health tracking the endpoint stays enabled; later deliveries are sent."""
    receiver.script("/hook", Reply(410, body=b"unsubscribed"))
    first, second = await enqueue(queue, receiver, 2)
    await run_worker(queue, worker(queue, concurrency=1))
    dead = await job(queue, first)
    assert dead.status is taquba.JobStatus.DEAD and dead.attempts == 1
    assert dead.last_error == f"{GONE_REASON}: unsubscribed"
    assert await queue.get_job(second) is None  # delivered and acknowledged
    assert len(receiver.received()) == 2
    stats = await tw.endpoint_stats(queue, tw.endpoint_of(receiver.url()))
    assert (stats.delivered, stats.dead, stats.last_status) == (1, 1, 200)
    assert not stats.disabled and stats.disabled_at is None


@pytest.mark.parametrize("options", [{"disable_on_gone": True}, {"disable_after": 5}])
async def test_410_disables_a_tracked_endpoint(
    queue: taquba.Queue, receiver: Receiver, options: dict[str, Any]
) -> None:
    receiver.script("/hook", Reply(410, body=b"unsubscribed"))
    first, *others = await enqueue(queue, receiver, 4)
    await run_worker(queue, worker(queue, **options, concurrency=1))
    assert len(receiver.received()) == 1  # the others were never sent
    gone = await job(queue, first)
    assert gone.status is taquba.JobStatus.DEAD
    assert gone.last_error == f"{GONE_REASON}: unsubscribed; the endpoint is now disabled"
    endpoint = tw.endpoint_of(receiver.url())
    stats = await tw.endpoint_stats(queue, endpoint)
    attempt = await tw.get_attempt(queue, first)
    assert attempt is not None and stats.disabled_at == attempt.at
    assert stats.disabled_reason == f"{GONE_REASON}: unsubscribed"
    assert (stats.consecutive_failures, stats.last_status) == (1, 410)
    assert stats.dead == 1  # deliveries skipped while disabled are not attempts
    assert await tw.list_endpoint_stats(queue) == [stats]
    for job_id in others:
        skipped = await job(queue, job_id)
        assert skipped.status is taquba.JobStatus.DEAD and skipped.attempts == 1
        assert skipped.last_error == f"endpoint disabled: {GONE_REASON}: unsubscribed"
        attempt = await tw.get_attempt(queue, job_id)
        assert attempt is not None and attempt.status is None
        assert attempt.outcome is tw.AttemptOutcome.DEAD
        assert attempt.error == skipped.last_error


async def test_410_does_not_disable_when_disable_on_gone_is_false(
    queue: taquba.Queue, receiver: Receiver
) -> None:
    receiver.script("/hook", Reply(410))
    await enqueue(queue, receiver, 2)
    await run_worker(queue, worker(queue, disable_after=5, disable_on_gone=False, concurrency=1))
    assert len(receiver.received()) == 2
    stats = await tw.endpoint_stats(queue, tw.endpoint_of(receiver.url()))
    assert not stats.disabled and stats.consecutive_failures == 0


async def test_disable_after_consecutive_failures(queue: taquba.Queue, receiver: Receiver) -> None:
    receiver.default = Reply(503, body=b"down")
    first, *others = await enqueue(queue, receiver, 3, max_attempts=10)
    await run_worker(queue, worker(queue, disable_after=3, concurrency=1))
    # The first delivery failed three times (retried twice), which disabled the endpoint.
    assert [r.body for r in receiver.received()] == [b"0", b"0", b"0"]
    failed = await job(queue, first)
    assert failed.status is taquba.JobStatus.DEAD and failed.attempts == 3
    assert failed.last_error == "gave up, the endpoint is now disabled: HTTP 503: down"
    stats = await tw.endpoint_stats(queue, tw.endpoint_of(receiver.url()))
    assert stats.disabled and stats.consecutive_failures == 3
    assert stats.disabled_reason == "3 consecutive failures, the latest: HTTP 503: down"
    assert (stats.retried, stats.dead, stats.last_status) == (2, 1, 503)
    for job_id in others:
        skipped = await job(queue, job_id)
        assert skipped.status is taquba.JobStatus.DEAD
        assert skipped.last_error is not None
        assert skipped.last_error.startswith("endpoint disabled: 3 consecutive failures")


async def test_a_delivered_attempt_resets_the_consecutive_failures(
    queue: taquba.Queue, receiver: Receiver
) -> None:
    receiver.script("/hook", Reply(500), Reply(500), Reply(200), Reply(500), Reply(500))
    await enqueue(queue, receiver, 2, max_attempts=10)
    endpoint = tw.endpoint_of(receiver.url())
    await run_worker(queue, worker(queue, disable_after=3, concurrency=1))
    assert len(receiver.received()) == 6  # 500 500 200, then 500 500 200 (default)
    stats = await tw.endpoint_stats(queue, endpoint)
    assert not stats.disabled
    assert (stats.consecutive_failures, stats.delivered, stats.retried) == (0, 2, 4)


async def test_enable_endpoint_then_replay(queue: taquba.Queue, receiver: Receiver) -> None:
    receiver.script("/hook", Reply(410))
    ids = await enqueue(queue, receiver, 3)
    endpoint = tw.endpoint_of(receiver.url())
    await run_worker(queue, worker(queue, disable_after=2, concurrency=1))
    assert (await tw.endpoint_stats(queue, endpoint)).disabled
    assert await tw.enable_endpoint(queue, endpoint) is True
    assert await tw.enable_endpoint(queue, endpoint) is False  # already enabled
    stats = await tw.endpoint_stats(queue, endpoint)
    assert not stats.disabled and stats.consecutive_failures == 0
    assert stats.disabled_reason is None
    assert await tw.replay_dead_deliveries(queue, endpoint=endpoint) == 3
    await run_worker(queue, worker(queue, disable_after=2))
    for job_id in ids:
        assert await queue.get_job(job_id) is None  # all delivered
    assert len(receiver.received()) == 4


async def test_disable_endpoint_by_hand(queue: taquba.Queue, receiver: Receiver) -> None:
    endpoint = tw.endpoint_of(receiver.url())
    assert await tw.disable_endpoint(queue, endpoint, "tenant offboarded") is True
    assert await tw.disable_endpoint(queue, endpoint, "again") is False  # keeps the first
    [held] = await enqueue(queue, receiver, 1)
    await run_worker(queue, worker(queue, disable_on_gone=True))
    assert receiver.received() == []
    dead = await job(queue, held)
    assert dead.last_error == "endpoint disabled: tenant offboarded"
    stats = await tw.endpoint_stats(queue, endpoint)
    assert stats.disabled_reason == "tenant offboarded"
    assert stats.attempts == 0
    # A worker that does not track endpoint health does not read the state.
    await tw.replay_delivery(queue, held)
    await run_worker(queue, worker(queue))
    assert len(receiver.received()) == 1


async def test_health_of_other_endpoints_is_untouched(
    queue: taquba.Queue, receiver: Receiver
) -> None:
    receiver.script("/gone", Reply(410))
    gone = tw.WebhookRequest(receiver.url("/gone"), b"x", endpoint="tenant-a")
    fine = tw.WebhookRequest(receiver.url("/fine"), b"y", endpoint="tenant-b")
    await tw.enqueue_webhook(queue, gone)
    await tw.enqueue_webhook(queue, fine)
    await run_worker(queue, worker(queue, disable_on_gone=True, concurrency=1))
    a, b = await tw.list_endpoint_stats(queue)
    assert (a.endpoint, a.disabled, b.endpoint, b.disabled) == (
        "tenant-a",
        True,
        "tenant-b",
        False,
    )
    assert b.delivered == 1


async def test_worker_checks_disable_after(queue: taquba.Queue) -> None:
    for bad in (0, -1, True, 2.0):
        with pytest.raises(taquba.InvalidArgument, match="disable_after"):
            tw.WebhookWorker(queue, disable_after=bad)  # type: ignore[arg-type]
    assert tw.WebhookWorker(queue).disable_after is None
    assert tw.WebhookWorker(queue).disable_on_gone is False
    assert tw.WebhookWorker(queue, disable_after=3).disable_on_gone is True
    assert tw.WebhookWorker(queue, disable_after=3, disable_on_gone=False).disable_on_gone is False
    assert frozenset({410}) == tw.DISABLING_STATUSES


outcomes = st.lists(st.sampled_from(["ok", "fail", "gone"]), max_size=30)


@given(outcomes, st.none() | st.integers(1, 6), st.booleans())
def test_health_after_is_a_run_length_with_a_sticky_disable(
    steps: list[str], disable_after: int | None, disable_on_gone: bool
) -> None:
    health = EndpointHealth()
    run = 0
    disabled_at: int | None = None
    for at, step in enumerate(steps):
        health = health_after(
            health,
            failed=step != "ok",
            gone=step == "gone",
            at=at,
            summary=step,
            disable_after=disable_after,
            disable_on_gone=disable_on_gone,
        )
        run = 0 if step == "ok" else run + 1
        if disabled_at is None and (
            (step == "gone" and disable_on_gone)
            or (step != "ok" and disable_after is not None and run >= disable_after)
        ):
            disabled_at = at
        assert health.consecutive_failures == run
        assert health.disabled_at == disabled_at  # once disabled, it stays, with its time
