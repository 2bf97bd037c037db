"""Delivery ids come from the queue: monotonic, on its clock, claimed in staging order."""

from __future__ import annotations

import pytest

import taquba
import taquba_webhooks as tw
from taquba.testing import MockClock, open_test_queue
from webhooks_support import FAST, LOOPBACK, Receiver, Reply, run_worker, webhook_worker

COUNT = 2_000
START_MS = 1_800_000_000_123  # a MockClock instant no wall clock will read during the test
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid_ms(job_id: str) -> int:
    """The millisecond timestamp of a ULID (its first 10 Crockford base32 characters)."""
    value = 0
    for char in job_id[:10]:
        value = value * 32 + _CROCKFORD.index(char)
    return value


def requests(count: int = COUNT) -> list[tw.WebhookRequest]:
    url = "https://hooks.example.com/in"
    return [tw.WebhookRequest(url, str(n).encode()) for n in range(count)]


def _body(claim: taquba.Claim) -> int:
    return int(tw.decode_request(claim.payload).body)


async def claim_all(queue: taquba.Queue) -> list[tuple[str, int]]:
    claimed: list[tuple[str, int]] = []
    while claims := await queue.claim_batch(tw.DEFAULT_QUEUE_NAME, 250):
        claimed.extend((claim.id, _body(claim)) for claim in claims)
    return claimed


def assert_in_staging_order(claimed: list[tuple[str, int]], staged_ids: list[str]) -> None:
    count = len(staged_ids)
    assert [body for _id, body in claimed] == list(range(count))  # claimed in staging order
    ids = [job_id for job_id, _body in claimed]
    assert ids == staged_ids
    assert ids == sorted(ids) and len(set(ids)) == count  # strictly increasing
    assert {ulid_ms(job_id) for job_id in ids} == {START_MS}  # the queue's clock, not the wall


async def test_a_batch_of_staged_deliveries_is_claimed_in_staging_order() -> None:
    async with open_test_queue(config=FAST, clock=MockClock(START_MS)) as queue:
        staged = [request.to_enqueue_request() for request in requests()]
        assert all(enqueue.job_id is None for enqueue in staged)  # the queue assigns the id
        results = await queue.enqueue_batch(staged)
        assert_in_staging_order(await claim_all(queue), [result.id for result in results])


async def test_deliveries_staged_as_settlement_effects_are_claimed_in_staging_order() -> None:
    async with open_test_queue(config=FAST, clock=MockClock(START_MS)) as queue:
        await queue.enqueue("orders", b"order-1")
        claim = await queue.claim("orders")
        assert claim is not None
        effects = taquba.Effects(enqueues=[request.to_enqueue_request() for request in requests()])
        results = await queue.ack_with(claim, effects)
        assert_in_staging_order(await claim_all(queue), [result.id for result in results])


# One commit per enqueue: enqueue_webhook (which always took the queue's ids) runs fewer.
@pytest.mark.parametrize(("how", "count"), [("enqueue_webhook", 300), ("enqueue_batch", COUNT)])
async def test_deliveries_staged_in_a_tight_loop_are_claimed_in_staging_order(
    how: str, count: int
) -> None:
    async with open_test_queue(config=FAST, clock=MockClock(START_MS)) as queue:
        ids: list[str] = []
        for request in requests(count):
            if how == "enqueue_webhook":
                ids.append((await tw.enqueue_webhook(queue, request)).id)
            else:
                [result] = await queue.enqueue_batch([request.to_enqueue_request()])
                ids.append(result.id)
        assert_in_staging_order(await claim_all(queue), ids)


async def test_ids_follow_the_queue_clock() -> None:
    clock = MockClock(START_MS)
    async with open_test_queue(config=FAST, clock=clock) as queue:
        request = tw.WebhookRequest("https://hooks.example.com/in", b"x")
        first = await tw.enqueue_webhook(queue, request)
        clock.advance(1.5)
        [second] = await queue.enqueue_batch([request.to_enqueue_request()])
        assert (ulid_ms(first.id), ulid_ms(second.id)) == (START_MS, START_MS + 1500)
        assert first.id < second.id


async def test_webhook_id_of_a_delivery_staged_without_an_id_is_its_job_id(
    queue: taquba.Queue, receiver: Receiver
) -> None:
    """The id is assigned when the job is staged; retries and replays keep it."""
    receiver.script("/hook", Reply(503), Reply(404), Reply(200))
    [result] = await queue.enqueue_batch(
        [tw.WebhookRequest(receiver.url(), b"x").to_enqueue_request()]
    )
    await run_worker(queue, webhook_worker(queue, policy=LOOPBACK))  # 503 (retried), 404 (dead)
    [dead] = await tw.dead_deliveries(queue)
    assert dead.job_id == result.id
    assert dead.request is not None and dead.request.id == result.id
    assert dead.last_attempt is not None and dead.last_attempt.webhook_id == result.id
    await tw.replay_delivery(queue, result.id)
    await run_worker(queue, webhook_worker(queue, policy=LOOPBACK))
    assert [r.headers["webhook-id"] for r in receiver.received()] == [result.id] * 3


def test_decode_request_fills_in_the_job_id() -> None:
    request = tw.WebhookRequest("https://hooks.example.com/in", b"x")
    payload = request.to_enqueue_request().payload
    assert tw.decode_request(payload).id is None
    assert tw.decode_request(payload, job_id="job-7").id == "job-7"
    fixed = tw.WebhookRequest(request.url, id="evt_1").to_enqueue_request().payload
    assert tw.decode_request(fixed, job_id="job-7").id == "evt_1"
