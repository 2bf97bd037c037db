"""`Effects.kv_expect`: KV preconditions checked in a settlement's own transaction.

A settlement whose expectation fails writes nothing (no ack, no follow-up, no KV entry) and
leaves the claim held, so it can be settled again. The check and the writes are one step:
racing settlements that expect the same absent key and write it commit exactly once, also
when the group commit puts them in one transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

import taquba
from taquba import Effects, EnqueueRequest, JobStatus, KvConflict, MockClock, QueueConfig, Store
from taquba.testing import drain

FAST = {"flush_interval": 0.005, "reaper_interval": 10_000.0, "scheduler_interval": 10_000.0}
CONFIG = QueueConfig(lease_duration=30, retry_backoff_base=0, max_attempts=3)


@pytest.fixture
async def queue(store: Store) -> AsyncIterator[taquba.Queue]:
    async with taquba.open_queue(store, "x", config=CONFIG, clock=MockClock(), **FAST) as q:
        yield q


async def claimed(queue: taquba.Queue, n: int = 1) -> list[taquba.Claim]:
    for i in range(n):
        await queue.enqueue("w", b"%d" % i)
    claims = await queue.claim_batch("w", n)
    assert len(claims) == n
    return claims


def follow_up(tag: str) -> EnqueueRequest:
    return EnqueueRequest(queue_name="next", payload=tag.encode(), job_id=f"next-{tag}")


async def test_an_ack_whose_expectation_fails_writes_nothing_and_keeps_the_claim(
    queue: taquba.Queue,
) -> None:
    (claim,) = await claimed(queue)
    await queue.kv_put(b"state", b"v2")
    effects = Effects(
        enqueues=[follow_up("a")],
        kv_writes={b"out": b"1"},
        kv_deletes=[b"state"],
        kv_expect={b"state": b"v1"},
    )
    with pytest.raises(KvConflict) as raised:
        await queue.ack_with(claim, effects)
    assert raised.value.key == b"state"
    assert await queue.kv_get(b"out") is None
    assert await queue.kv_get(b"state") == b"v2"
    assert await queue.get_job("next-a") is None
    record = await queue.get_job(claim.id)
    assert record is not None and record.status is JobStatus.CLAIMED
    # The claim is still good: settle it with what holds now.
    results = await queue.ack_with(
        claim, Effects(enqueues=[follow_up("b")], kv_expect={b"state": b"v2", b"none": None})
    )
    assert [r.created for r in results] == [True]
    assert await queue.get_job(claim.id) is None
    assert (await queue.stats("next")).pending == 1


async def test_dead_letter_and_a_dying_nack_check_expectations(queue: taquba.Queue) -> None:
    first, second = await claimed(queue, 2)
    wrong = Effects(kv_writes={b"k": b"v"}, kv_expect={b"k": b"present"})
    with pytest.raises(KvConflict):
        await queue.dead_letter(first, "bad", effects=wrong)
    assert (await queue.stats("w")).dead == 0
    await queue.dead_letter(first, "bad", effects=Effects(kv_expect={b"k": None}))
    assert (await queue.stats("w")).dead == 1

    # A nack that retries does not apply effects_if_dead, so it does not check them either.
    result = await queue.nack(second, "boom", effects_if_dead=wrong)
    assert not result.dead
    claim = None
    for _ in range(CONFIG.max_attempts - 1):
        claim = await queue.claim("w")
        assert claim is not None
        if claim.job.attempts < CONFIG.max_attempts:
            await queue.nack(claim, "boom", effects_if_dead=wrong)
    assert claim is not None and claim.job.attempts == CONFIG.max_attempts
    with pytest.raises(KvConflict):
        await queue.nack(claim, "boom", effects_if_dead=wrong)
    assert await queue.kv_get(b"k") is None
    record = await queue.get_job(claim.id)
    assert record is not None and record.status is JobStatus.CLAIMED
    outcome = await queue.nack(claim, "boom", effects_if_dead=Effects(kv_writes={b"k": b"v"}))
    assert outcome.dead
    assert await queue.kv_get(b"k") == b"v"


async def test_racing_acks_guarded_by_one_key_commit_once(queue: taquba.Queue) -> None:
    """Sixteen acks that each claim the same absent key: one wins, the others conflict.

    They are submitted together, so the group commit stages several in one transaction: the
    later ones must see the earlier one's write there, not only in committed state.
    """
    claims = await claimed(queue, 16)
    won: list[str] = []
    lost: list[taquba.Claim] = []

    async def settle(claim: taquba.Claim) -> None:
        effects = Effects(kv_writes={b"owner": claim.id.encode()}, kv_expect={b"owner": None})
        try:
            await queue.ack_with(claim, effects)
            won.append(claim.id)
        except KvConflict:
            lost.append(claim)

    async with trio.open_nursery() as nursery:
        for claim in claims:
            nursery.start_soon(settle, claim)
    assert len(won) == 1
    assert len(lost) == 15
    assert await queue.kv_get(b"owner") == won[0].encode()
    for claim in lost:  # every loser still holds its claim
        await queue.ack(claim)
    assert (await queue.stats("w")).claimed == 0


async def test_a_batch_drops_only_the_ack_whose_expectation_fails(queue: taquba.Queue) -> None:
    claims = await claimed(queue, 8)
    await queue.kv_put(b"gate", b"closed")
    outcomes: dict[str, str] = {}

    async def settle(i: int, claim: taquba.Claim) -> None:
        expect = {b"gate": b"open"} if i == 3 else {}
        effects = Effects(kv_writes={b"done-%d" % i: b"1"}, kv_expect=expect)
        try:
            await queue.ack_with(claim, effects)
            outcomes[claim.id] = "acked"
        except KvConflict:
            outcomes[claim.id] = "conflict"

    async with trio.open_nursery() as nursery:
        for i, claim in enumerate(claims):
            nursery.start_soon(settle, i, claim)
    assert [outcomes[c.id] for c in claims] == ["acked"] * 3 + ["conflict"] + ["acked"] * 4
    assert [await queue.kv_get(b"done-%d" % i) for i in range(8)] == [b"1"] * 3 + [None] + [
        b"1"
    ] * 4


async def test_a_worker_retries_a_job_whose_effects_conflict(queue: taquba.Queue) -> None:
    """The handler's effects lose their precondition: the job is nacked, then runs again."""
    await queue.enqueue("w", b"job", job_id="j")
    await queue.kv_put(b"seen", b"stale")
    runs: list[int] = []

    async def handler(job: taquba.JobRecord, lease: taquba.LeaseHandle) -> Effects:
        runs.append(job.attempts)
        current = await queue.kv_get(b"seen")
        if job.attempts == 1:
            await queue.kv_put(b"seen", b"changed under it")  # a concurrent writer
        return Effects(kv_writes={b"seen": b"handled"}, kv_expect={b"seen": current})

    assert await drain(queue, "w", handler, max_jobs=1) == 1
    retried = await queue.get_job("j")
    assert retried is not None and retried.status is JobStatus.PENDING
    assert retried.last_error is not None and "kv_expect" in retried.last_error
    assert await queue.kv_get(b"seen") == b"changed under it"
    assert await drain(queue, "w", handler) == 1
    assert runs == [1, 2]
    assert await queue.kv_get(b"seen") == b"handled"
    assert await queue.get_job("j") is None


async def test_expectations_are_validated_before_anything_happens(queue: taquba.Queue) -> None:
    (claim,) = await claimed(queue)
    with pytest.raises(taquba.UsageError):
        await queue.ack_with(claim, Effects(kv_expect={b"k": "text"}))  # type: ignore[dict-item]
    with pytest.raises(taquba.UsageError):
        await queue.ack_with(claim, Effects(kv_expect={"key": None}))  # type: ignore[dict-item]
    await queue.ack(claim)
