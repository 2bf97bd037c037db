"""`taquba.QueueLike`: `Worker` and `LeaseHandle` need nothing of a queue beyond the protocol.

They run here over `taquba.testing.ForwardingQueue` (the protocol's members and nothing
else, each forwarding to a real `Queue`), over a QueueLike that makes its own claims (its
own tokens and `CancelToken`s, as a remote queue does), and over one whose claims fail
transiently (as a remote queue's do while its server is unreachable).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Mapping

import pytest
import trio

import taquba
from taquba import (
    BlobStore,
    CancelOutcome,
    CancelToken,
    Claim,
    ClaimLost,
    Effects,
    EnqueueResult,
    JobRecord,
    JobStatus,
    LeaseHandle,
    MockClock,
    NackResult,
    PermanentFailure,
    QueueConfig,
    QueueLike,
    StorageUnavailable,
    Store,
)
from taquba.testing import ForwardingQueue

CONFIG = QueueConfig(
    max_attempts=2, lease_duration=10, retry_backoff_base=0, retry_backoff_max=0, keep_done=3600
)
HANG = 10  # seconds: bounds that only catch hangs


@pytest.fixture
async def queue(memory_store: Store) -> AsyncIterator[taquba.Queue]:
    async with taquba.open_queue(
        memory_store,
        "proto",
        config=CONFIG,
        clock=MockClock(),
        flush_interval=0.005,
        reaper_interval=3600.0,
        scheduler_interval=3600.0,
    ) as q:
        yield q


def _protocol_members(protocol: type) -> set[str]:
    return {
        name
        for name, value in vars(protocol).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }


async def _serve_until_settled(
    queue: QueueLike, handler: taquba.Handler, job_ids: list[str], *, concurrency: int = 2
) -> list[JobRecord]:
    """Serve queue ``w`` over ``queue`` until every job in ``job_ids`` is settled."""
    worker = taquba.Worker(queue, "w", handler, concurrency=concurrency, poll_interval=0.02)
    records: list[JobRecord] = []
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            for job_id in job_ids:
                record = await queue.wait_for_completion(job_id)
                assert record is not None
                records.append(record)
            worker.shutdown()
    return records


# ------------------------------------------------------------------ the protocols


async def test_queue_and_store_satisfy_the_protocols(queue: taquba.Queue) -> None:
    assert isinstance(queue, QueueLike)
    assert isinstance(queue.store, BlobStore)
    forwarding = ForwardingQueue(queue)
    assert isinstance(forwarding, QueueLike)
    assert isinstance(forwarding.store, BlobStore)
    # Static proof too (pyright checks the same in taquba._protocol for the src tree).
    as_protocol: QueueLike = queue
    assert as_protocol is queue


def test_the_protocol_is_a_subset_of_queue_with_the_same_signatures() -> None:
    for name in _protocol_members(QueueLike):
        ours = getattr(QueueLike, name)
        theirs = getattr(taquba.Queue, name)
        if isinstance(ours, property):
            assert isinstance(theirs, property), name
            continue
        assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(theirs), name
        assert list(inspect.signature(ours).parameters) == list(
            inspect.signature(theirs).parameters
        ), name
    for name in _protocol_members(BlobStore):
        assert list(inspect.signature(getattr(BlobStore, name)).parameters) == list(
            inspect.signature(getattr(Store, name)).parameters
        ), name


async def test_forwarding_queue_exposes_only_the_protocol(queue: taquba.Queue) -> None:
    forwarding = ForwardingQueue(queue)
    public = {name for name in dir(forwarding) if not name.startswith("_")}
    assert public == _protocol_members(QueueLike) | {"calls"}
    for name in ("health", "claim", "ack", "list_jobs", "reap_now", "_health"):
        assert not hasattr(forwarding, name), name
    for name in ("url", "fs", "db_path", "kind"):
        assert not hasattr(forwarding.store, name), name
    # every forwarded call reaches the real queue
    result = await forwarding.enqueue("w", b"x")
    assert (await queue.get_job(result.id)) is not None
    assert forwarding.calls["enqueue"] == 1


# ------------------------------------------------------------------ Worker over the protocol


async def test_worker_acks_nacks_and_dead_letters_over_the_protocol(queue: taquba.Queue) -> None:
    forwarding = ForwardingQueue(queue)
    ok = await forwarding.enqueue("w", b"ok")
    flaky = await forwarding.enqueue("w", b"flaky")
    doomed = await forwarding.enqueue("w", b"doomed")
    attempts: dict[bytes, int] = {}

    async def handler(job: JobRecord, lease: LeaseHandle) -> Effects | None:
        attempts[job.payload] = attempts.get(job.payload, 0) + 1
        assert lease.expires_at is not None
        lease.ensure_at_least(60)
        assert lease.renew(30) == lease.expires_at
        if job.payload == b"flaky" and job.attempts == 1:
            raise RuntimeError("first attempt fails")
        if job.payload == b"doomed":
            raise PermanentFailure("no")
        return Effects(enqueues=[taquba.EnqueueRequest(queue_name="after", payload=job.payload)])

    records = await _serve_until_settled(forwarding, handler, [ok.id, flaky.id, doomed.id])
    assert [r.status for r in records] == [JobStatus.DONE, JobStatus.DONE, JobStatus.DEAD]
    assert attempts == {b"ok": 1, b"flaky": 2, b"doomed": 1}
    assert (await queue.stats("after")).pending == 2
    calls = forwarding.calls
    assert calls["claim_batch"] >= 1
    assert calls["ack_with"] == 2
    assert calls["nack"] == 1
    assert calls["dead_letter"] == 1
    assert calls["renew_lease"] >= 3
    assert calls["lease_expiry"] >= 3


async def test_worker_sees_a_cancel_over_the_protocol(queue: taquba.Queue) -> None:
    forwarding = ForwardingQueue(queue)
    job = await forwarding.enqueue("w", b"long")
    started = trio.Event()

    async def handler(job: JobRecord, lease: LeaseHandle) -> None:
        started.set()
        await lease.wait_cancel_requested()
        assert lease.cancel_requested
        raise PermanentFailure("cancelled")

    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:

            async def cancel_once_started() -> None:
                await started.wait()
                assert await forwarding.cancel(job.id) is CancelOutcome.REQUESTED

            nursery.start_soon(cancel_once_started)
            records = await _serve_until_settled(forwarding, handler, [job.id])
    assert records[0].status is JobStatus.DEAD


class _FlakyClaims(ForwardingQueue):
    """Its first ``failures`` claims fail as a remote queue's do when the server is down."""

    __slots__ = ("failures",)

    def __init__(self, queue: QueueLike, failures: int) -> None:
        super().__init__(queue)
        self.failures = failures

    async def claim_batch(
        self, queue_name: str, max_jobs: int, *, lease: float | None = None
    ) -> list[Claim]:
        if self.failures:
            self.failures -= 1
            await trio.lowlevel.checkpoint()
            raise StorageUnavailable("connection refused (injected)")
        return await super().claim_batch(queue_name, max_jobs, lease=lease)


async def test_worker_backs_off_and_retries_transient_claim_errors(
    queue: taquba.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = _FlakyClaims(queue, failures=3)
    job = await flaky.enqueue("w", b"x")

    async def handler(job: JobRecord, lease: LeaseHandle) -> None:
        await trio.lowlevel.checkpoint()

    with caplog.at_level(logging.WARNING, logger="taquba"):
        records = await _serve_until_settled(flaky, handler, [job.id])
    assert records[0].status is JobStatus.DONE
    assert flaky.failures == 0
    assert any("injected" in r.getMessage() for r in caplog.records)
    # The streak was the worker's own: the wrapped queue's health never saw it.
    assert queue.health().retried == 0


class _PermanentClaims(ForwardingQueue):
    __slots__ = ()

    async def claim_batch(
        self, queue_name: str, max_jobs: int, *, lease: float | None = None
    ) -> list[Claim]:
        await trio.lowlevel.checkpoint()
        raise taquba.StorageMisconfigured("bad token (injected)")


async def test_worker_raises_a_permanent_claim_error_over_the_protocol(
    queue: taquba.Queue,
) -> None:
    worker = taquba.Worker(_PermanentClaims(queue), "w", lambda job, lease: _none())
    with trio.fail_after(HANG), pytest.raises(taquba.StorageMisconfigured):
        await worker.serve()


async def _none() -> None:
    await trio.lowlevel.checkpoint()


# ------------------------------------------------------------------ claims made outside the core


class _OwnClaims(ForwardingQueue):
    """A QueueLike that makes its own `Claim` objects, as a remote queue does.

    Each claim gets this object as owner, a token of its own and a `CancelToken` it fires
    when `cancel` is called through it; settlements map the claim back to the real one.
    """

    __slots__ = ("_by_token", "_next_token")

    def __init__(self, queue: QueueLike) -> None:
        super().__init__(queue)
        self._by_token: dict[int, tuple[Claim, CancelToken]] = {}
        self._next_token = 1000

    def _inner(self, claim: Claim) -> Claim:
        if claim.owner is not self or claim.token not in self._by_token:
            raise ClaimLost(claim.id, "not a claim of this queue")
        return self._by_token[claim.token][0]

    async def claim_batch(
        self, queue_name: str, max_jobs: int, *, lease: float | None = None
    ) -> list[Claim]:
        claims: list[Claim] = []
        for inner in await super().claim_batch(queue_name, max_jobs, lease=lease):
            self._next_token += 1
            token = CancelToken(cancelled=inner.cancel_requested)
            self._by_token[self._next_token] = (inner, token)
            claims.append(Claim(inner.job, token=self._next_token, owner=self, cancel=token))
        return claims

    async def cancel(self, job_id: str) -> CancelOutcome:
        outcome = await super().cancel(job_id)
        for inner, token in self._by_token.values():
            if inner.id == job_id:
                token.fire()
        return outcome

    async def ack_with(self, claim: Claim, effects: Effects | None) -> list[EnqueueResult]:
        return await super().ack_with(self._inner(claim), effects)

    async def nack(
        self,
        claim: Claim,
        error: str,
        *,
        retry_after: float | None = None,
        kv_writes: Mapping[bytes, bytes] | None = None,
        effects_if_dead: Effects | None = None,
    ) -> NackResult:
        return await super().nack(
            self._inner(claim),
            error,
            retry_after=retry_after,
            kv_writes=kv_writes,
            effects_if_dead=effects_if_dead,
        )

    async def dead_letter(
        self, claim: Claim, reason: str, *, effects: Effects | None = None
    ) -> list[EnqueueResult]:
        return await super().dead_letter(self._inner(claim), reason, effects=effects)

    def renew_lease(self, claim: Claim, extension: float) -> int:
        return super().renew_lease(self._inner(claim), extension)

    def lease_expiry(self, claim: Claim) -> int | None:
        return super().lease_expiry(self._inner(claim))


async def test_worker_runs_claims_made_outside_the_core(queue: taquba.Queue) -> None:
    own = _OwnClaims(queue)
    plain = await own.enqueue("w", b"plain")
    cancelled = await own.enqueue("w", b"cancelled")

    async def handler(job: JobRecord, lease: LeaseHandle) -> None:
        lease.ensure_at_least(20)
        if job.payload == b"cancelled":
            await own.cancel(job.id)  # fires this delivery's own token
            with trio.fail_after(HANG):
                await lease.wait_cancel_requested()
            assert lease.cancel_requested
            raise PermanentFailure("stopped on request")

    records = await _serve_until_settled(own, handler, [plain.id, cancelled.id])
    assert [r.status for r in records] == [JobStatus.DONE, JobStatus.DEAD]
    assert own.calls["claim_batch"] >= 1


async def test_a_fired_cancel_token_reaches_the_claim_and_its_lease(queue: taquba.Queue) -> None:
    job = await queue.enqueue("w", b"x")
    record = await queue.get_job(job.id)
    assert record is not None
    owner = ForwardingQueue(queue)
    token = CancelToken()
    claim = Claim(record, token=42, owner=owner, cancel=token)
    assert (claim.token, claim.owner, claim.id, claim.queue_name) == (42, owner, job.id, "w")
    lease = LeaseHandle(owner, claim)
    assert not token.cancelled
    assert not claim.cancel_requested
    assert not lease.cancel_requested

    async with trio.open_nursery() as nursery:
        woke: list[bool] = []

        async def waiter() -> None:
            await lease.wait_cancel_requested()
            woke.append(True)

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert woke == []
        token.fire()
        token.fire()  # idempotent
    assert woke == [True]
    assert token.cancelled
    assert claim.cancel_requested
    assert lease.cancel_requested
    with trio.fail_after(HANG):
        await claim.wait_cancel_requested()  # at once, once fired
    assert CancelToken(cancelled=True).cancelled


async def test_a_queue_refuses_a_claim_made_by_another_queue_like(queue: taquba.Queue) -> None:
    job = await queue.enqueue("w", b"x")
    record = await queue.get_job(job.id)
    assert record is not None
    foreign = Claim(record, token=1, owner=object(), cancel=CancelToken())
    with pytest.raises(ClaimLost):
        await queue.ack_with(foreign, None)
    assert queue.lease_expiry(foreign) is None
    assert (await queue.get_job(job.id)) == record
