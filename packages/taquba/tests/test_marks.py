"""Promotion and the retention sweeps skip tombstones and idle ticks, and never skip a record.

The scans are counted through `Database.scan` (the real one runs underneath): an idle tick
reads nothing, a busy one starts at the low-water mark, past the tombstones earlier passes
left. A state machine checks the `Mark` protocol itself against every interleaving of
writers (hold, commit, release) and passes (begin, scan, end).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import taquba
from taquba import Effects, EnqueueRequest, MockClock, QueueConfig, Store, _adapter, _keys  # pyright: ignore[reportPrivateUsage]
from taquba._marks import Mark  # pyright: ignore[reportPrivateUsage]

FAST = {"flush_interval": 0.005, "reaper_interval": 3600.0, "scheduler_interval": 3600.0}
MANY = 600  # more than two scan pages of 256


@pytest.fixture
def clock() -> MockClock:
    return MockClock()


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> dict[int, list[bytes | None]]:
    """The start bound of every scan, by key-space tag."""
    seen: dict[int, list[bytes | None]] = {}
    real = _adapter.Database.scan

    async def counting(self: Any, prefix: bytes, **kwargs: Any) -> Any:
        seen.setdefault(prefix[0], []).append(kwargs.get("start"))
        return await real(self, prefix, **kwargs)

    monkeypatch.setattr(_adapter.Database, "scan", counting)
    return seen


@pytest.fixture
async def queue(memory_store: Store, clock: MockClock) -> AsyncIterator[taquba.Queue]:
    config = QueueConfig(retry_backoff_base=1, retry_backoff_max=60, keep_done=10)
    queues = {"long": QueueConfig(keep_done=3600)}
    async with taquba.open_queue(
        memory_store, "m", config=config, queues=queues, clock=clock, **FAST
    ) as q:
        yield q


SCHEDULED = _keys.Space.SCHEDULED
DONE = _keys.Space.DONE


def key_time(start: bytes | None) -> int:
    assert start is not None, "the scan started at the front of the space"
    return _keys.key_time(start)


async def test_an_idle_promotion_tick_after_many_promotions_reads_nothing(
    queue: taquba.Queue, clock: MockClock, scans: dict[int, list[bytes | None]]
) -> None:
    for _ in range(MANY // 200):
        await queue.enqueue_batch([EnqueueRequest(queue_name="w", payload=b"x", delay=1)] * 200)
    promoted_until = clock.advance(1)
    assert await queue.promote_scheduled_now() == MANY
    scans.clear()
    for _ in range(5):
        clock.advance(1)
        assert await queue.promote_scheduled_now() == 0
    assert scans.get(SCHEDULED, []) == []  # idle: not a single read of the scheduled space

    # A job due later: its pass starts past the tombstones of the 600 promotions.
    await queue.enqueue("w", b"later", delay=5)
    clock.advance(5)
    assert await queue.promote_scheduled_now() == 1
    assert all(key_time(start) > promoted_until for start in scans[SCHEDULED])


async def test_jobs_scheduled_before_the_mark_are_still_promoted(
    queue: taquba.Queue, clock: MockClock
) -> None:
    """Every writer of a scheduled key lowers the mark, whichever way the key is written."""
    far = await queue.enqueue("w", b"far", delay=1000)
    await queue.enqueue("w", b"soon", delay=1)
    clock.advance(1)
    assert await queue.promote_scheduled_now() == 1  # the mark is now at "far"
    # enqueue, enqueue_batch, a follow-up enqueue of an ack, a nack's backoff: all earlier.
    await queue.enqueue("w", b"a", delay=10)
    await queue.enqueue_batch([EnqueueRequest(queue_name="w", payload=b"b", delay=10)])
    claims = await queue.claim_batch("w", 10)
    assert len(claims) == 1  # "soon"
    await queue.ack_with(
        claims[0], Effects(enqueues=[EnqueueRequest(queue_name="w", payload=b"c", delay=10)])
    )
    await queue.enqueue("w", b"d")
    claim = await queue.claim("w")
    assert claim is not None and claim.payload == b"d"
    await queue.nack(claim, "boom")  # backoff 1 s
    clock.advance(10)
    assert await queue.promote_scheduled_now() == 4
    assert (await queue.stats("w")).scheduled == 1
    record = await queue.get_job(far.id)
    assert record is not None and record.status is taquba.JobStatus.SCHEDULED


async def test_a_failed_pass_scans_again_from_where_it_started(
    queue: taquba.Queue, clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await queue.enqueue("w", b"x", delay=1)
    clock.advance(1)

    async def broken(*args: Any) -> bool:
        raise taquba.StorageUnavailable("down")

    maintenance = queue._maintenance  # pyright: ignore[reportPrivateUsage]
    promote_one = maintenance._promote_one  # pyright: ignore[reportPrivateUsage]
    monkeypatch.setattr(maintenance, "_promote_one", broken)
    with pytest.raises(taquba.StorageUnavailable):
        await queue.promote_scheduled_now()
    monkeypatch.setattr(maintenance, "_promote_one", promote_one)
    assert await queue.promote_scheduled_now() == 1


async def test_the_done_sweep_reads_only_when_a_record_can_have_expired(
    queue: taquba.Queue, clock: MockClock, scans: dict[int, list[bytes | None]]
) -> None:
    """Kept for an hour on "long", 10 s elsewhere: the long history is not reread per tick."""

    async def ack_all(name: str, count: int) -> int:
        await queue.enqueue_batch([EnqueueRequest(queue_name=name, payload=b"x")] * count)
        for claim in await queue.claim_batch(name, count):
            await queue.ack(claim)
        return clock.now_ms()

    await ack_all("long", 300)
    swept_until = await ack_all("w", MANY)
    clock.advance(11)
    assert await queue.sweep_now() == MANY
    scans.clear()
    for _ in range(5):
        clock.advance(5)
        assert await queue.sweep_now() == 0
    assert scans.get(DONE, []) == []  # idle ticks: nothing can have expired

    # A new short-lived record: its pass starts at the oldest kept record, not at the front.
    await ack_all("w", 1)
    clock.advance(11)
    assert await queue.sweep_now() == 1
    assert all(start is not None for start in scans[DONE])
    assert (await queue.stats("long")).done == 300
    assert len((await queue.list_jobs("long", taquba.JobStatus.DONE, limit=1000)).jobs) == 300
    assert swept_until <= clock.now_ms()


async def test_long_kept_done_records_expire_on_time(queue: taquba.Queue, clock: MockClock) -> None:
    await queue.enqueue("long", b"x")
    claim = await queue.claim("long")
    assert claim is not None
    await queue.ack(claim)
    assert await queue.sweep_now() == 0
    clock.advance(3599)
    assert await queue.sweep_now() == 0
    clock.advance(2)
    assert await queue.sweep_now() == 1


class MarkMachine(RuleBasedStateMachine):
    """`Mark` against a model: a pass may skip only what is not committed or not due.

    Writers hold their time, commit (or fail) and release in any interleaving with passes;
    a pass begins (clearing the mark), scans a snapshot of the committed keys from its start
    to ``now`` (so keys committed meanwhile are missed, as with a real scan), then notes the
    first committed key past ``now``. Whenever a pass begins, no committed key may lie
    before its start, and a skipped tick must have nothing due.
    """

    def __init__(self) -> None:
        super().__init__()
        self.mark = Mark()
        self.now = 0
        self.committed: set[int] = set()
        self.writers: dict[int, tuple[int, bool]] = {}  # handle -> (time, committed)
        self.pass_: tuple[int, int, set[int]] | None = None  # start, now, snapshot

    @rule(delay=st.integers(min_value=0, max_value=20))
    def hold(self, delay: int) -> None:
        at = self.now + delay
        self.writers[self.mark.hold(at, at)] = (at, False)

    @precondition(lambda self: any(not done for _, done in self.writers.values()))
    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        handle = data.draw(st.sampled_from([h for h, w in self.writers.items() if not w[1]]))
        at, _ = self.writers[handle]
        self.writers[handle] = (at, True)
        self.committed.add(at)

    @precondition(lambda self: bool(self.writers))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        handle = data.draw(st.sampled_from(sorted(self.writers)))
        del self.writers[handle]  # uncommitted: the write failed
        self.mark.release(handle)

    @rule(step=st.integers(min_value=0, max_value=10))
    def advance(self, step: int) -> None:
        self.now += step

    @precondition(lambda self: self.pass_ is None)
    @rule()
    def begin(self) -> None:
        start = self.mark.begin(self.now)
        if start is None:
            assert not any(at <= self.now for at in self.committed), "skipped a due key"
            return
        assert not any(at < start for at in self.committed), "started past a live key"
        self.pass_ = (start, self.now, set(self.committed))

    @precondition(lambda self: self.pass_ is not None)
    @rule(fail=st.booleans())
    def end(self, fail: bool) -> None:
        assert self.pass_ is not None
        start, now, snapshot = self.pass_
        self.pass_ = None
        if fail:
            self.mark.abort(start)
            return
        self.committed -= {at for at in snapshot if start <= at <= now}
        later = [at for at in self.committed if at > now]
        if later:
            self.mark.note(min(later), min(later))

    @invariant()
    def nothing_due_is_unmarked(self) -> None:
        if self.pass_ is None:
            for at in self.committed:
                assert self.mark.start <= at
                assert self.mark.due is not None and self.mark.due <= at


TestMarkMachine = MarkMachine.TestCase
TestMarkMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
