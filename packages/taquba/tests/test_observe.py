"""`taquba.Observer`: what a queue reports, and that a failing observer breaks nothing."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Generator, Mapping, Sequence
from typing import Any

import pytest
import trio

import taquba
from taquba import (
    Claim,
    Effects,
    EnqueueRequest,
    JobRecord,
    MockClock,
    Observer,
    PermanentFailure,
    QueueConfig,
    SettleOutcome,
    StorageError,
    Store,
)
from taquba.testing import Fault, inject_faults

FAST = {"flush_interval": 0.005, "reaper_interval": 3600.0, "scheduler_interval": 3600.0}
CONFIG = QueueConfig(max_attempts=2, lease_duration=10, retry_backoff_base=1, keep_done=60)


class Recorder(Observer):
    """Records every call as a tuple."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.commits: list[tuple[float, float | None]] = []
        self.errors: list[str] = []
        self.handled: list[str] = []

    def enqueued(self, queue_name: str, jobs: Sequence[JobRecord]) -> None:
        self.events.append(("enqueued", queue_name, [j.id for j in jobs]))

    def claimed(self, queue_name: str, jobs: Sequence[JobRecord]) -> None:
        assert all(j.claimed_at is not None for j in jobs)
        self.events.append(("claimed", queue_name, [j.id for j in jobs]))

    def settled(
        self,
        queue_name: str,
        job: JobRecord,
        outcome: SettleOutcome,
        *,
        dead: bool,
        handler_seconds: float,
        latency_seconds: float,
    ) -> None:
        assert handler_seconds >= 0
        assert latency_seconds >= handler_seconds
        self.events.append(("settled", queue_name, job.id, outcome, dead))

    def claim_abandoned(self, queue_name: str, job: JobRecord, *, dead: bool, reason: str) -> None:
        self.events.append(("abandoned", queue_name, job.id, dead, reason))

    def promoted(self, count: int) -> None:
        self.events.append(("promoted", count))

    def reaped(self, count: int) -> None:
        self.events.append(("reaped", count))

    def swept(self, count: int) -> None:
        self.events.append(("swept", count))

    def committed(self, apply_seconds: float, durable_seconds: float | None) -> None:
        assert apply_seconds >= 0
        assert durable_seconds is None or durable_seconds >= 0
        self.commits.append((apply_seconds, durable_seconds))

    def storage_error(self, error: StorageError) -> None:
        self.errors.append(type(error).__name__)

    def conflicted(self) -> None:
        self.errors.append("conflict")

    def enqueue_headers(self, queue_name: str, job_id: str) -> Mapping[str, str] | None:
        return {"x-observed": f"{queue_name}/{job_id}", "x-mine": "observer"}

    @contextlib.contextmanager
    def handling(self, claim: Claim) -> Generator[None]:
        self.handled.append(f"start {claim.id}")
        try:
            yield
        finally:
            self.handled.append(f"end {claim.id}")


class Raising(Observer):
    """Raises from every method."""

    def __init__(self) -> None:
        self.calls = 0

    def __getattribute__(self, name: str) -> Any:
        if name in {"calls", "__class__", "__dict__", "__repr__"}:
            return super().__getattribute__(name)
        if not name.startswith("_"):

            def boom(*args: object, **kwargs: object) -> Any:
                self.calls += 1
                raise RuntimeError(f"observer bug in {name}")

            return boom
        return super().__getattribute__(name)


class RaisingOnExit(Observer):
    @contextlib.contextmanager
    def handling(self, claim: Claim) -> Generator[None]:
        yield
        raise RuntimeError("exit bug")


@pytest.fixture
def clock() -> MockClock:
    return MockClock()


@pytest.fixture
async def recorded(
    memory_store: Store, clock: MockClock
) -> AsyncIterator[tuple[taquba.Queue, Recorder]]:
    recorder = Recorder()
    async with taquba.open_queue(
        memory_store, "ob", config=CONFIG, clock=clock, observers=[recorder], **FAST
    ) as queue:
        yield queue, recorder


def kinds(recorder: Recorder, kind: str) -> list[tuple[Any, ...]]:
    return [e for e in recorder.events if e[0] == kind]


async def test_lifecycle_is_reported(
    recorded: tuple[taquba.Queue, Recorder], clock: MockClock
) -> None:
    queue, rec = recorded
    a = await queue.enqueue("q", b"a", job_id="a", headers={"x-mine": "caller"})
    await queue.enqueue("q", b"a-again", dedup_key="d", job_id="dd")
    await queue.enqueue("q", b"a-dup", dedup_key="d", job_id="dup")  # deduplicated
    assert kinds(rec, "enqueued") == [("enqueued", "q", ["a"]), ("enqueued", "q", ["dd"])]
    job = await queue.get_job(a.id)
    assert job is not None
    assert job.headers == {"x-mine": "caller", "x-observed": "q/a"}  # the caller's header wins

    claims = await queue.claim_batch("q", 2)
    assert kinds(rec, "claimed") == [("claimed", "q", ["a", "dd"])]
    by_id = {c.id: c for c in claims}
    follow_up = EnqueueRequest(queue_name="next", payload=b"n", job_id="n")
    await queue.ack_with(by_id["a"], Effects(enqueues=[follow_up]))
    await queue.nack(by_id["dd"], "boom")
    assert kinds(rec, "settled") == [
        ("settled", "q", "a", "acked", False),
        ("settled", "q", "dd", "nacked", False),
    ]
    assert ("enqueued", "next", ["n"]) in rec.events

    clock.advance(3600)
    assert await queue.promote_scheduled_now() == 1
    assert ("promoted", 1) in rec.events
    retry = await queue.claim("q")
    assert retry is not None
    await queue.nack(retry, "again")  # the last attempt: dead
    assert kinds(rec, "settled")[-1] == ("settled", "q", "dd", "nacked", True)

    follow = await queue.claim("next")
    assert follow is not None
    await queue.dead_letter(follow, "no")
    assert kinds(rec, "settled")[-1] == ("settled", "next", "n", "dead_lettered", True)

    # A lease that expires is reported by the reaper.
    await queue.enqueue("q", b"x", job_id="x")
    assert await queue.claim("q") is not None
    clock.advance(60)
    assert await queue.reap_now() == 1
    assert kinds(rec, "abandoned") == [("abandoned", "q", "x", False, "lease expired")]
    assert kinds(rec, "reaped") == [("reaped", 1)]

    clock.advance(7200)
    swept = await queue.sweep_now()
    assert ("swept", swept) in rec.events
    # Durable commits report a durability wait; claims (non-durable) do not.
    assert any(d is not None for _, d in rec.commits)
    assert any(d is None for _, d in rec.commits)


async def test_worker_enters_handling_around_handler_and_settlement(
    recorded: tuple[taquba.Queue, Recorder],
) -> None:
    queue, rec = recorded
    seen: list[str] = []

    async def handler(job: JobRecord, lease: taquba.LeaseHandle) -> Effects | None:
        assert f"end {job.id}" not in rec.handled
        seen.append(next(h for h in rec.handled if h == f"start {job.id}"))
        if job.id == "bad":
            raise PermanentFailure("bad job")
        after = EnqueueRequest(queue_name="after", payload=b"", job_id=f"after-{job.id}")
        return Effects(enqueues=[after])

    await queue.enqueue("w", b"", job_id="good")
    await queue.enqueue("w", b"", job_id="bad")
    worker = taquba.Worker(queue, "w", handler, poll_interval=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.serve)
        with trio.fail_after(10):
            await queue.wait_for_completion("bad")
            await queue.wait_for_completion("good")
        worker.shutdown()
    # Each handler runs inside its own context, exited after its settlement.
    assert sorted(seen) == ["start bad", "start good"]
    assert sorted(rec.handled) == ["end bad", "end good", "start bad", "start good"]
    for job_id in ("bad", "good"):
        assert rec.handled.index(f"start {job_id}") < rec.handled.index(f"end {job_id}")
    outcomes = {e[2]: e[3] for e in kinds(rec, "settled")}
    assert outcomes == {"good": "acked", "bad": "dead_lettered"}
    assert ("enqueued", "after", ["after-good"]) in rec.events


async def test_recovery_at_open_is_reported(memory_store: Store, clock: MockClock) -> None:
    async with taquba.open_queue(memory_store, "rc", config=CONFIG, clock=clock, **FAST) as queue:
        await queue.enqueue("q", b"", job_id="held")
        assert await queue.claim("q") is not None
    rec = Recorder()
    async with taquba.open_queue(
        memory_store, "rc", config=CONFIG, clock=clock, observers=[rec], **FAST
    ):
        pass
    assert kinds(rec, "abandoned") == [
        ("abandoned", "q", "held", False, "claim interrupted by process exit")
    ]


async def test_storage_errors_are_reported_by_kind(
    recorded: tuple[taquba.Queue, Recorder],
) -> None:
    queue, rec = recorded
    with inject_faults() as faults:
        faults.on_write(Fault.conflict(), durable=True)
        await queue.enqueue("q", b"", job_id="c")  # retried inside the queue
        faults.on_write(Fault.unavailable(), durable=True)
        with pytest.raises(taquba.StorageUnavailable):
            await queue.enqueue("q", b"", job_id="u")
    assert rec.errors == ["conflict", "StorageUnavailable"]


async def test_raising_observer_breaks_nothing(
    memory_store: Store, clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    raising, rec = Raising(), Recorder()
    async with taquba.open_queue(
        memory_store, "rx", config=CONFIG, clock=clock, observers=[raising], **FAST
    ) as queue:
        queue.add_observer(RaisingOnExit())
        queue.add_observer(rec)  # called after the raising ones
        assert queue.observers[-1] is rec

        async def handler(job: JobRecord, lease: taquba.LeaseHandle) -> None:
            pass

        with caplog.at_level(logging.ERROR, logger="taquba.observe"):
            for n in range(3):
                await queue.enqueue("q", b"", job_id=f"j{n}")
            worker = taquba.Worker(queue, "q", handler, poll_interval=0.01)
            async with trio.open_nursery() as nursery:
                await nursery.start(worker.serve)
                with trio.fail_after(10):
                    for n in range(3):
                        await queue.wait_for_completion(f"j{n}")
                worker.shutdown()
            assert (await queue.stats("q")).done == 3
            await queue.reap_now()
    assert raising.calls > 6
    assert len(kinds(rec, "settled")) == 3
    # One log record per failing observer (and per exit failure), however often it fails.
    messages = [r.getMessage() for r in caplog.records]
    assert sum("Raising object" in m for m in messages) == 1
    assert sum("RaisingOnExit" in m for m in messages) == 1


async def test_observers_must_be_observers(memory_store: Store) -> None:
    with pytest.raises(taquba.InvalidArgument):
        async with taquba.open_queue(memory_store, observers=[object()]):  # type: ignore[list-item]
            pass
    async with taquba.open_queue(memory_store) as queue:
        with pytest.raises(taquba.InvalidArgument):
            queue.add_observer(object())  # type: ignore[arg-type]
        assert queue.observers == ()
