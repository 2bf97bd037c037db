"""Every transition under injected storage faults: nothing is lost, nothing is hidden.

Each scenario first moves the claim cursor past the keys it will touch (it claims and acks a
few jobs and proves the queue empty), then runs one transition while `inject_faults` makes
its write fail in one way:

- ``unknown``: applied, then reported as `StorageUnavailable` ("commit outcome unknown");
- ``lost``: reported the same way, not applied;
- ``unavailable``: refused, not applied;
- ``conflict``: refused as a write conflict (retried inside taquba, so the call succeeds);
- ``slow``: applied, then the durability wait outlives a short ``commit_deadline`` (unknown).

Then the test drains the queue (expires leases, reaps, promotes, claims and acks until
nothing is left) and checks that no pending, scheduled or claimed record is left behind (a
pending record no claim returns is a hidden job), that every job ends in the state its
write's outcome allows (a job whose write returned is never lost), and that `Queue.stats`
equals a recount of the records before and after the drain.

Also here: a reopen after an unknown outcome (the cursor saved at close must not hide the
job), and the visibility rule: a claim sees only jobs whose enqueue is durable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

import taquba
from taquba import (
    Claim,
    Effects,
    EnqueueRequest,
    JobStatus,
    MockClock,
    QueueConfig,
    QueueStats,
    StorageUnavailable,
    Store,
)
from taquba.testing import Fault, inject_faults

Q = "q"
CONFIG = QueueConfig(
    max_attempts=10, lease_duration=10, retry_backoff_base=0, keep_done=86_400, dead_retention=60
)
QUIET = {"flush_interval": 0.005, "reaper_interval": 10_000.0, "scheduler_interval": 10_000.0}
SLOW_DEADLINE = 1.0  # the commit deadline of the ``slow`` scenarios, in seconds

FAULTS = {
    "unknown": Fault.unknown(),
    "lost": Fault.lost(),
    "unavailable": Fault.unavailable(),
    "conflict": Fault.conflict(),
    "slow": Fault.slow(60.0),
}
APPLIED = {"unknown", "conflict", "slow"}  # the write took effect
RAISES = {"unknown", "lost", "unavailable", "slow"}  # the call reports StorageUnavailable

DONE, DEAD, GONE = JobStatus.DONE, JobStatus.DEAD, None


@asynccontextmanager
async def open_faulty(
    store: Store, clock: MockClock, *, fault: str = "", name: str = "sf"
) -> AsyncIterator[taquba.Queue]:
    deadline = SLOW_DEADLINE if fault == "slow" else None
    async with taquba.open_queue(
        store, name, config=CONFIG, clock=clock, commit_deadline=deadline, **QUIET
    ) as queue:
        yield queue


async def recount(queue: taquba.Queue) -> QueueStats:
    counts: dict[JobStatus, int] = {}
    for status in JobStatus:
        page = await queue.list_jobs(Q, status, limit=10_000)
        assert page.next_cursor is None
        counts[status] = len(page.jobs)
    # Done records are kept (keep_done) and never swept here, so they count every ack.
    return QueueStats(
        Q,
        pending=counts[JobStatus.PENDING],
        scheduled=counts[JobStatus.SCHEDULED],
        claimed=counts[JobStatus.CLAIMED],
        done=counts[JobStatus.DONE],
        dead=counts[JobStatus.DEAD],
    )


async def assert_stats_match(queue: taquba.Queue) -> None:
    assert await queue.stats(Q) == await recount(queue)


async def drain(queue: taquba.Queue, clock: MockClock) -> set[str]:
    """Make everything claimable and ack it all; return the ids acked."""
    acked: set[str] = set()
    while True:
        clock.advance(3600)  # past every lease and retry delay
        await queue.reap_now()
        await queue.promote_scheduled_now()
        claims = await queue.claim_batch(Q, 100)
        for claim in claims:
            await queue.ack(claim)
            acked.add(claim.id)
        if not claims:
            break
    stats = await queue.stats(Q)
    # Nothing hidden: no record is left that a claim should have returned.
    assert (stats.pending, stats.scheduled, stats.claimed) == (0, 0, 0), stats
    assert await recount(queue) == stats
    return acked


@dataclass
class Scenario:
    """One transition under test: what to set up, the faulted call, and the allowed ends."""

    queue: taquba.Queue
    clock: MockClock
    ends: dict[str, set[JobStatus | None]] = field(default_factory=dict)

    async def prelude(self) -> None:
        """Claim and ack a few jobs, then prove the queue empty: the cursor is past them."""
        await self.queue.enqueue_batch(
            [EnqueueRequest(queue_name=Q, payload=b"base") for _ in range(3)]
        )
        for claim in await self.queue.claim_batch(Q, 10):
            await self.queue.ack(claim)
            self.ends[claim.id] = {DONE}
        assert await self.queue.claim(Q) is None

    async def claimed(self, job_id: str) -> Claim:
        """Claim ``job_id``, whose key lies behind the cursor; the queue is then empty."""
        await self.prelude()
        await self.queue.enqueue(Q, b"job", job_id=job_id)
        claim = await self.queue.claim(Q)
        assert claim is not None and claim.id == job_id
        return claim


Setup = Callable[[Scenario], Awaitable[Callable[[], Awaitable[object]]]]


def applied_or(
    applied: set[JobStatus | None], not_applied: set[JobStatus | None]
) -> Callable[[str], set[JobStatus | None]]:
    def ends(fault: str) -> set[JobStatus | None]:
        return applied if fault in APPLIED else not_applied

    return ends


# Each setup prepares the scenario and returns the faulted call; ``END`` says which final
# states of job "00job" (an id that sorts before every generated one, so its key lies behind
# the cursor) the fault allows.


async def setup_enqueue(s: Scenario) -> Callable[[], Awaitable[object]]:
    await s.prelude()
    return lambda: s.queue.enqueue(Q, b"x", job_id="00job")


async def setup_enqueue_batch(s: Scenario) -> Callable[[], Awaitable[object]]:
    await s.prelude()
    return lambda: s.queue.enqueue_batch(
        [EnqueueRequest(queue_name=Q, payload=b"x", job_id="00job")]
    )


async def setup_claim(s: Scenario) -> Callable[[], Awaitable[object]]:
    await s.queue.enqueue(Q, b"x", job_id="00job")
    return lambda: s.queue.claim_batch(Q, 5)


async def setup_ack(s: Scenario) -> Callable[[], Awaitable[object]]:
    claim = await s.claimed("00job")
    return lambda: s.queue.ack(claim)


async def setup_ack_with(s: Scenario) -> Callable[[], Awaitable[object]]:
    claim = await s.claimed("01job")
    s.ends["01job"] = {DONE}
    follow_up = EnqueueRequest(queue_name=Q, payload=b"follow-up", job_id="00job")
    return lambda: s.queue.ack_with(claim, Effects(enqueues=[follow_up]))


async def setup_nack_now(s: Scenario) -> Callable[[], Awaitable[object]]:
    claim = await s.claimed("00job")
    return lambda: s.queue.nack(claim, "boom")  # retry_backoff_base=0: pending at once


async def setup_nack_later(s: Scenario) -> Callable[[], Awaitable[object]]:
    claim = await s.claimed("00job")
    return lambda: s.queue.nack(claim, "boom", retry_after=5)


async def setup_dead_letter(s: Scenario) -> Callable[[], Awaitable[object]]:
    claim = await s.claimed("00job")
    return lambda: s.queue.dead_letter(claim, "poison")


async def setup_requeue_dead(s: Scenario) -> Callable[[], Awaitable[object]]:
    claim = await s.claimed("00job")
    await s.queue.dead_letter(claim, "poison")
    (dead,) = await s.queue.dead_jobs(Q)
    return lambda: s.queue.requeue_dead_job(dead)


async def setup_cancel(s: Scenario) -> Callable[[], Awaitable[object]]:
    await s.prelude()
    await s.queue.enqueue(Q, b"x", job_id="00job")
    return lambda: s.queue.cancel("00job")


async def setup_reap(s: Scenario) -> Callable[[], Awaitable[object]]:
    await s.claimed("00job")
    s.clock.advance(CONFIG.lease_duration + 1)
    return s.queue.reap_now


async def setup_promote(s: Scenario) -> Callable[[], Awaitable[object]]:
    await s.queue.enqueue(Q, b"x", job_id="00job", delay=5)
    await s.prelude()
    s.clock.advance(10)
    return s.queue.promote_scheduled_now


async def setup_sweep(s: Scenario) -> Callable[[], Awaitable[object]]:
    claim = await s.claimed("00job")
    await s.queue.dead_letter(claim, "poison")
    s.clock.advance(CONFIG.dead_retention + 1)  # type: ignore[operator]
    return s.queue.sweep_now


TRANSITIONS: dict[str, tuple[Setup, bool, Callable[[str], set[JobStatus | None]]]] = {
    # name: (setup, durable write?, allowed ends of "00job" by fault)
    "enqueue": (setup_enqueue, True, applied_or({DONE}, {GONE})),
    "enqueue_batch": (setup_enqueue_batch, True, applied_or({DONE}, {GONE})),
    "claim": (setup_claim, False, applied_or({DONE}, {DONE})),
    "ack": (setup_ack, True, applied_or({DONE}, {DONE})),
    "ack_with": (setup_ack_with, True, applied_or({DONE}, {GONE})),
    "nack_now": (setup_nack_now, True, applied_or({DONE}, {DONE})),
    "nack_later": (setup_nack_later, True, applied_or({DONE}, {DONE})),
    "dead_letter": (setup_dead_letter, True, applied_or({DEAD}, {DONE})),
    "requeue_dead": (setup_requeue_dead, True, applied_or({DONE}, {DEAD})),
    "cancel": (setup_cancel, True, applied_or({GONE}, {DONE})),
    "reap": (setup_reap, False, applied_or({DONE}, {DONE})),
    "promote": (setup_promote, False, applied_or({DONE}, {DONE})),
    "sweep": (setup_sweep, False, applied_or({GONE}, {DEAD})),
}
# reap_now logs a failed page and retries it on the next tick instead of raising.
SWALLOWS = {"reap"}


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("transition", list(TRANSITIONS))
async def test_a_faulty_write_loses_and_hides_nothing(transition: str, fault: str) -> None:
    setup, durable, allowed = TRANSITIONS[transition]
    clock = MockClock()
    with trio.fail_after(60):
        async with open_faulty(Store.memory(), clock, fault=fault) as queue:
            scenario = Scenario(queue, clock)
            call = await setup(scenario)
            with inject_faults() as faults:
                faults.on_write(FAULTS[fault], durable=durable)
                if fault in RAISES and transition not in SWALLOWS:
                    with pytest.raises(StorageUnavailable):
                        await call()
                else:
                    await call()
            assert [f.fault.kind for f in faults.injected] == [FAULTS[fault].kind]
            await assert_stats_match(queue)

            acked = await drain(queue, clock)
            record = await queue.get_job("00job")
            end = record.status if record else None
            assert end in allowed(fault), f"00job ended {end}"
            assert (end is DONE) == ("00job" in acked) or transition in ("ack", "ack_with")
            for job_id, ends in scenario.ends.items():
                found = await queue.get_job(job_id)
                assert (found.status if found else None) in ends, job_id


@pytest.mark.parametrize("transition", ["enqueue", "nack_now", "reap"])
async def test_a_reopen_after_an_unknown_outcome_still_claims_the_job(
    tmp_path: Path, transition: str
) -> None:
    """The cursor saved at close must not lie past a key whose write had an unknown outcome."""
    setup, durable, _ = TRANSITIONS[transition]
    clock = MockClock()
    store = Store.from_url(tmp_path / "store")
    with trio.fail_after(60):
        async with open_faulty(store, clock) as queue:
            call = await setup(Scenario(queue, clock))
            with inject_faults() as faults:
                faults.on_write(Fault.unknown(), durable=durable)
                if transition in SWALLOWS:
                    await call()
                else:
                    with pytest.raises(StorageUnavailable):
                        await call()
            assert faults.injected
        async with open_faulty(store, clock) as queue:
            claim = await queue.claim(Q)
            assert claim is not None and claim.id == "00job"
            await queue.ack(claim)
            await assert_stats_match(queue)
            assert await queue.claim(Q) is None


@pytest.mark.parametrize("transition", ["ack", "dead_letter"])
async def test_forced_conflicts_on_settlement_retry_and_settle_once(transition: str) -> None:
    """Conflicts on the ack (group commit) and dead-letter paths are retried deterministically."""
    setup, _, _ = TRANSITIONS[transition]
    clock = MockClock()
    async with open_faulty(Store.memory(), clock) as queue:
        call = await setup(Scenario(queue, clock))
        with inject_faults() as faults:
            faults.on_write(Fault.conflict(), times=3, durable=True)
            await call()
        assert [f.fault.kind for f in faults.injected] == ["conflict"] * 3
        record = await queue.get_job("00job")
        assert record is not None
        assert record.status is (DONE if transition == "ack" else DEAD)
        await assert_stats_match(queue)
        stats = await queue.stats(Q)
        assert (stats.done, stats.dead) == ((4, 0) if transition == "ack" else (3, 1))


# ------------------------------------------------------------------ visible only when durable


async def wait_applied(queue: taquba.Queue, job_id: str) -> None:
    """Wait until ``job_id``'s write is applied (reads see writes before they are durable)."""
    while await queue.get_job(job_id) is None:  # noqa: ASYNC110 - polling storage
        await trio.sleep(0.001)


async def test_a_claim_does_not_see_an_enqueue_until_it_is_durable() -> None:
    async with open_faulty(Store.memory(), MockClock()) as queue:
        with inject_faults() as faults:
            faults.on_write(Fault.slow(0.3), durable=True)  # applied, durability stalled
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(queue.enqueue, Q, b"x", job_id="j1"))
                await wait_applied(queue, "j1")
                assert (await queue.stats(Q)).pending == 1  # written and counted...
                assert await queue.claim_batch(Q, 10) == []  # ...but not durable: unclaimable
        assert faults.injected
        claim = await queue.claim(Q)  # the enqueue returned: durable, claimable
        assert claim is not None and claim.id == "j1"


async def test_a_waiting_worker_gets_the_job_when_its_flush_completes() -> None:
    async with open_faulty(Store.memory(), MockClock()) as queue:
        got: list[str] = []

        async def worker(task_status: trio.TaskStatus[None]) -> None:
            task_status.started()
            claim = await queue.claim_with_wait(Q)
            got.append(claim.id)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(worker)
                with inject_faults() as faults:
                    faults.on_write(Fault.slow(0.3), durable=True)
                    async with trio.open_nursery() as producers:
                        producers.start_soon(partial(queue.enqueue, Q, b"x", job_id="j1"))
                        await wait_applied(queue, "j1")
                        await trio.testing.wait_all_tasks_blocked()
                        assert got == []  # applied, stalled before durability: unseen
                assert faults.injected
        assert got == ["j1"]  # woken once the flush completed


async def test_pipelined_batches_release_their_keys_independently() -> None:
    """A later batch durable first is claimable first; the stalled one is not lost after."""
    async with open_faulty(Store.memory(), MockClock()) as queue:
        with inject_faults() as faults:
            faults.on_write(Fault.slow(0.3), durable=True, times=1)  # the first batch only
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(queue.enqueue, Q, b"first", job_id="a"))
                await wait_applied(queue, "a")
                await queue.enqueue(Q, b"second", job_id="b")  # the next, pipelined batch
                claims = await queue.claim_batch(Q, 10)
                assert [c.id for c in claims] == ["b"]  # "a" is not durable yet
                await queue.ack(claims[0])
                assert await queue.claim(Q) is None  # "ran dry", with "a" still held
        claim = await queue.claim(Q)  # "a" sorts before "b", behind the cursor: not hidden
        assert claim is not None and claim.id == "a"


async def test_follow_up_enqueues_of_an_ack_are_claimable_only_once_durable() -> None:
    async with open_faulty(Store.memory(), MockClock()) as queue:
        await queue.enqueue(Q, b"x", job_id="parent")
        claim = await queue.claim(Q)
        assert claim is not None
        await queue.enqueue(Q, b"x", job_id="zzz")  # sorts after "child": the scan reaches it
        with inject_faults() as faults:
            faults.on_write(Fault.slow(0.3), durable=True)
            async with trio.open_nursery() as nursery:
                child_request = EnqueueRequest(queue_name=Q, payload=b"child", job_id="child")
                nursery.start_soon(queue.ack_with, claim, Effects(enqueues=[child_request]))
                await wait_applied(queue, "child")
                other = await queue.claim(Q)
                assert other is not None and other.id == "zzz"  # "child" is skipped
        assert faults.injected
        child = await queue.claim(Q)
        assert child is not None and child.id == "child"
