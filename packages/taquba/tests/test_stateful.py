"""The real queue against a simple in-memory model of its semantics (hypothesis).

Hypothesis draws a whole *program*, a list of operations, and one trio run executes it against
a queue on a memory store and against `Model`, checking after every step that the two agree:

- every job the model created is in exactly the state the model says (pending, scheduled,
  claimed, dead, kept-done, or gone), with the same attempts, priority, errors and flags, and
  appears in exactly one listing (nothing lost, nothing duplicated);
- ``queue.stats(q)`` equals a recount through ``list_jobs`` for each state, and ``done`` equals
  the model's cumulative ack count;
- a claim returns the first ready pending jobs in (priority, id) order;
- a stale claim (superseded by the reaper, already settled, or held across a restart) settles
  with `ClaimLost` and writes nothing.

Time is a `MockClock`; the background loops never tick (huge intervals), so only explicit
``reap_now`` / ``promote_scheduled_now`` / ``sweep_now`` move jobs. A ``restart`` closes the
queue and reopens it on the same `Store`: claims held across it become stale and the reopened
queue must have recovered their jobs.

Why a drawn program rather than a ``RuleBasedStateMachine``: the queue must stay open across
steps inside one trio run, which the synchronous rule methods cannot host.

A second test races operations concurrently in one nursery (conflicts are retried inside
taquba) and checks the invariants that hold whatever the interleaving: stats equal a recount,
the job index agrees with the records, a claim settles at most once, a delivery is handed
out once, each claimed job has exactly one live lease, a dedup key has at most one holder.
Then it drains the queue (expiring leases, reaping, promoting, claiming and acking until
nothing is left): every pending job must be claimable, none hidden behind the claim cursor.

Knobs for longer runs: ``TAQUBA_HYPOTHESIS_EXAMPLES`` (default 60; the race test runs a third
as many) and ``TAQUBA_HYPOTHESIS_STEPS`` (default 50: programs of 25 to 50 operations), e.g.
``TAQUBA_HYPOTHESIS_EXAMPLES=2000 uv run pytest packages/taquba/tests/test_stateful.py
-o faulthandler_timeout=0`` (the option silences pytest's 300 s stack dump).
"""

from __future__ import annotations

import math
import os
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

import taquba
from taquba import (
    PRIORITY_HIGH,
    PRIORITY_LOW,
    PRIORITY_NORMAL,
    AttemptOutcome,
    CancelOutcome,
    Claim,
    ClaimLost,
    DuplicateJobId,
    Effects,
    EnqueueRequest,
    EnqueueResult,
    InvalidState,
    JobNotFound,
    JobRecord,
    JobStatus,
    MockClock,
    QueueConfig,
    QueueStats,
    Store,
)

EXAMPLES = int(os.environ.get("TAQUBA_HYPOTHESIS_EXAMPLES", "60"))
STEPS = int(os.environ.get("TAQUBA_HYPOTHESIS_STEPS", "50"))

QUEUES = ("a", "b")
CONFIGS = {
    # Retries back off (scheduled), dead jobs are swept after a minute, acks delete the record.
    "a": QueueConfig(
        max_attempts=3,
        lease_duration=10,
        retry_backoff_base=1,
        retry_backoff_max=4,
        keep_done=None,
        dead_retention=60,
    ),
    # Retries are immediate (pending), done jobs are kept 30 s, dead jobs forever.
    "b": QueueConfig(
        max_attempts=2,
        lease_duration=5,
        retry_backoff_base=0,
        keep_done=30,
        dead_retention=None,
    ),
}
OPEN = {
    "config": QueueConfig(dead_retention=None),
    "queues": CONFIGS,
    "flush_interval": 0.005,
    "reaper_interval": 10_000.0,
    "scheduler_interval": 10_000.0,
}
OPEN_RACE = {k: v for k, v in OPEN.items() if k not in ("config", "queues")}
# Explicit ids that sort before, among and after generated ULIDs ("01H...").
EXPLICIT_IDS = ("00ZZ", "7ZZZZZZZZZZZZZZZZZZZZZZZZZ", "A1", "j2", "zz")
KV_KEYS = (b"k1", b"k2", b"k3")
LIVE = (JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.CLAIMED, JobStatus.DEAD)


# ------------------------------------------------------------------------------- the model


@dataclass(eq=False)
class MJob:
    """The model's view of one job. ``status`` None means gone (acked unkept, cancelled, swept)."""

    id: str
    queue: str
    payload: bytes
    priority: int
    max_attempts: int
    status: JobStatus | None
    attempts: int = 0
    run_at: int | None = None
    dedup: str | None = None
    cancel_requested: bool = False
    last_error: str | None = None
    failed_at: int | None = None
    completed_at: int | None = None
    claimed_at: int | None = None
    delivery: int = 0
    history: list[tuple[int, AttemptOutcome, str | None]] = field(
        default_factory=lambda: list[tuple[int, AttemptOutcome, str | None]]()
    )


@dataclass(eq=False)
class Held:
    """A claim the program holds (valid or stale)."""

    claim: Claim
    job: MJob
    delivery: int
    epoch: int
    expires_at: int


@dataclass
class Model:
    clock: MockClock
    jobs: dict[str, MJob] = field(default_factory=dict)
    dedup: dict[tuple[str, str], str] = field(default_factory=dict)
    kv: dict[bytes, bytes] = field(default_factory=dict)
    acks: dict[str, int] = field(default_factory=lambda: dict.fromkeys(QUEUES, 0))
    held: list[Held] = field(default_factory=list)
    epoch: int = 0
    dead_snapshots: list[JobRecord] = field(default_factory=list)

    @property
    def now(self) -> int:
        return self.clock.now_ms()

    def indexed(self, job_id: str) -> bool:
        job = self.jobs.get(job_id)
        return job is not None and job.status is not None

    def valid(self, held: Held) -> bool:
        job = held.job
        return (
            held.epoch == self.epoch
            and self.jobs.get(job.id) is job
            and job.status is JobStatus.CLAIMED
            and job.delivery == held.delivery
        )

    def prune(self, stale_kept: int = 8) -> None:
        """Drop the oldest stale claims beyond ``stale_kept`` (valid ones always stay)."""
        stale = [h for h in self.held if not self.valid(h)]
        drop = set(map(id, stale[: max(len(stale) - stale_kept, 0)]))
        self.held = [h for h in self.held if id(h) not in drop]

    def in_state(self, queue: str, status: JobStatus) -> list[MJob]:
        return [j for j in self.jobs.values() if j.queue == queue and j.status is status]

    def ready(self, queue: str) -> list[MJob]:
        """Pending jobs in claim order: priority, then id bytes."""
        jobs = self.in_state(queue, JobStatus.PENDING)
        return sorted(jobs, key=lambda j: (j.priority, j.id.encode()))

    def expect_duplicate(self, requests: list[EnqueueRequest]) -> bool:
        """Whether enqueueing ``requests`` together must fail with `DuplicateJobId`."""
        explicit = [r.job_id for r in requests if r.job_id is not None]
        return len(set(explicit)) != len(explicit) or any(self.indexed(i) for i in explicit)

    def apply_enqueues(
        self, requests: list[EnqueueRequest], results: list[EnqueueResult]
    ) -> list[str]:
        assert len(results) == len(requests)
        touched: list[str] = []
        now = self.now
        for request, result in zip(requests, results, strict=True):
            touched.append(result.id)
            dedup = (request.queue_name, request.dedup_key) if request.dedup_key else None
            if dedup is not None and dedup in self.dedup:
                assert not result.created, f"dedup key {dedup} is held; {request} created a job"
                assert result.id == self.dedup[dedup]
                continue
            assert result.created, f"{request} should have created a job, got {result}"
            if request.job_id is not None:
                assert result.id == request.job_id
            assert not self.indexed(result.id), f"id {result.id} handed out twice"
            config = CONFIGS[request.queue_name]
            delay_ms = math.ceil(request.delay * 1000) if request.delay else 0
            job = MJob(
                id=result.id,
                queue=request.queue_name,
                payload=request.payload,
                priority=config.default_priority if request.priority is None else request.priority,
                max_attempts=request.max_attempts or config.max_attempts,
                status=JobStatus.SCHEDULED if delay_ms else JobStatus.PENDING,
                run_at=now + delay_ms if delay_ms else None,
                dedup=request.dedup_key,
            )
            self.jobs[job.id] = job
            if dedup is not None:
                self.dedup[dedup] = job.id
        return touched

    def release_dedup(self, job: MJob) -> None:
        if job.dedup is not None and self.dedup.get((job.queue, job.dedup)) == job.id:
            del self.dedup[(job.queue, job.dedup)]
        job.dedup = None

    def requeue_or_kill(self, job: MJob, error: str, ended: AttemptOutcome) -> None:
        """What the reaper and open-time recovery do with a claim they end."""
        job.claimed_at = None
        if job.attempts >= job.max_attempts:
            job.status = JobStatus.DEAD
            job.last_error = error
            job.failed_at = self.now
            job.history.append((job.attempts, AttemptOutcome.DEAD_LETTERED, error))
        else:
            job.status = JobStatus.PENDING
            job.history.append((job.attempts, ended, None))

    def check_record(self, record: JobRecord, where: str) -> None:
        job = self.jobs.get(record.id)
        assert job is not None, f"{where}: unknown job {record.id} in the store"
        expected = {
            "status": job.status,
            "queue_name": job.queue,
            "payload": job.payload,
            "priority": job.priority,
            "attempts": job.attempts,
            "max_attempts": job.max_attempts,
            "run_at": job.run_at,
            "dedup_key": job.dedup,
            "cancel_requested": job.cancel_requested,
            "last_error": job.last_error,
            "failed_at": job.failed_at if job.status is JobStatus.DEAD else None,
            "completed_at": job.completed_at if job.status is JobStatus.DONE else None,
            "claimed_at": job.claimed_at,
            "history_size": len(job.history),
        }
        actual = {name: getattr(record, name) for name in expected}
        assert actual == expected, f"{where}: record {record.id} differs from the model"


def backoff_ms(attempts: int, config: QueueConfig) -> int:
    if config.retry_backoff_base == 0:
        return 0
    delay = min(config.retry_backoff_base * 2 ** (attempts - 1), config.retry_backoff_max)
    return math.ceil(delay * 1000)


# ------------------------------------------------------------------------------ operations

requests = st.builds(
    EnqueueRequest,
    queue_name=st.sampled_from(QUEUES),
    payload=st.sampled_from([b"", b"x", b"payload"]),
    priority=st.sampled_from([None, None, PRIORITY_HIGH, PRIORITY_NORMAL, PRIORITY_LOW, 0]),
    delay=st.sampled_from([None, None, 0, 0.5, 3, 20]),
    dedup_key=st.one_of(st.none(), st.none(), st.sampled_from(["d1", "d2"])),
    max_attempts=st.sampled_from([None, None, None, 1, 4]),
    job_id=st.one_of(st.none(), st.none(), st.none(), st.sampled_from(EXPLICIT_IDS)),
)
kv_writes = st.dictionaries(st.sampled_from(KV_KEYS), st.sampled_from([b"1", b"2"]), max_size=2)
effects = st.one_of(
    st.none(),
    st.builds(
        Effects,
        enqueues=st.lists(requests, max_size=2),
        kv_writes=kv_writes,
        kv_deletes=st.lists(st.sampled_from(KV_KEYS), max_size=1),
    ),
)
index = st.integers(0, 63)
# Each operation: its arguments, and how often it is drawn (weights favour moving jobs).
OPERATIONS: dict[str, tuple[int, tuple[st.SearchStrategy[Any], ...]]] = {
    "enqueue": (5, (requests, st.one_of(st.just({}), kv_writes))),
    "batch": (1, (st.lists(requests, min_size=1, max_size=4),)),
    "claim": (5, (st.sampled_from(QUEUES), st.integers(1, 4), st.sampled_from([None, None, 2.0]))),
    "ack": (3, (index, effects)),
    "nack": (
        2,
        (
            index,
            st.sampled_from([None, None, 0.0, 2.5]),
            st.one_of(st.just({}), kv_writes),
            effects,
        ),
    ),
    "dead_letter": (1, (index,)),
    "renew": (1, (index, st.sampled_from([0.5, 5.0, 30.0]))),
    "advance": (3, (st.sampled_from([0.001, 0.5, 1.0, 2.0, 5.0, 11.0, 31.0, 61.0]),)),
    "reap": (2, ()),
    "promote": (2, ()),
    "sweep": (1, ()),
    "cancel": (1, (index,)),
    "requeue_dead": (1, (index,)),
    "requeue_live": (1, (index,)),
    "fold": (1, ()),
    "restart": (1, ()),
}
operation = st.sampled_from(
    [name for name, (weight, _) in OPERATIONS.items() for _ in range(weight)]
).flatmap(lambda name: st.tuples(st.just(name), *OPERATIONS[name][1]))
programs = st.lists(operation, min_size=STEPS // 2, max_size=STEPS)


# ------------------------------------------------------------------------------- the runner


class Runner:
    """Executes one program against the queue and the model."""

    def __init__(self, *, under_hypothesis: bool) -> None:
        self.under_hypothesis = under_hypothesis
        self.clock = MockClock()
        self.store = Store.memory()
        self.model = Model(self.clock)
        self.stack = AsyncExitStack()
        self.queue: taquba.Queue

    async def open(self) -> None:
        self.stack = AsyncExitStack()
        self.queue = await self.stack.enter_async_context(
            taquba.open_queue(self.store, "stateful", clock=self.clock, **OPEN)
        )

    async def close(self) -> None:
        await self.stack.aclose()

    def mark(self, what: str) -> None:
        """Record that a program reached an interesting case (``--hypothesis-show-statistics``)."""
        if self.under_hypothesis:
            event(what)

    def pick_held(self, i: int) -> Held | None:
        held = self.model.held
        return held[i % len(held)] if held else None

    def forget(self, held: Held) -> None:
        if held in self.model.held:
            self.model.held.remove(held)

    # Each op returns the ids whose `get_job` must match the model afterwards.

    async def op_enqueue(self, request: EnqueueRequest, writes: dict[bytes, bytes]) -> list[str]:
        model = self.model
        kwargs: dict[str, Any] = {
            "priority": request.priority,
            "delay": request.delay,
            "dedup_key": request.dedup_key,
            "max_attempts": request.max_attempts,
            "job_id": request.job_id,
            "kv_writes": writes,
        }
        if model.expect_duplicate([request]):
            self.mark("duplicate id refused")
            with pytest.raises(DuplicateJobId):
                await self.queue.enqueue(request.queue_name, request.payload, **kwargs)
            return [request.job_id] if request.job_id else []
        result = await self.queue.enqueue(request.queue_name, request.payload, **kwargs)
        hit = (
            request.dedup_key is not None and (request.queue_name, request.dedup_key) in model.dedup
        )
        touched = model.apply_enqueues([request], [result])
        if not hit:
            model.kv.update(writes)
        return touched

    async def op_batch(self, batch: list[EnqueueRequest]) -> list[str]:
        if self.model.expect_duplicate(batch):
            with pytest.raises(DuplicateJobId):
                await self.queue.enqueue_batch(batch)
            return [r.job_id for r in batch if r.job_id is not None]
        results = await self.queue.enqueue_batch(batch)
        return self.model.apply_enqueues(batch, results)

    async def op_claim(self, queue: str, n: int, lease: float | None) -> list[str]:
        model = self.model
        expected = model.ready(queue)[:n]
        if n == 1 and lease is None:
            one = await self.queue.claim(queue)
            claims = [one] if one is not None else []
        else:
            claims = await self.queue.claim_batch(queue, n, lease=lease)
        assert [c.id for c in claims] == [j.id for j in expected], (
            "claim order is not (priority, id) over ready pending jobs"
        )
        now = model.now
        lease_ms = math.ceil((lease or CONFIGS[queue].lease_duration) * 1000)
        for claim, job in zip(claims, expected, strict=True):
            assert claim.attempts == job.attempts + 1
            assert claim.payload == job.payload and claim.queue_name == queue
            assert claim.cancel_requested == job.cancel_requested
            assert claim.job.dedup_key is None
            model.release_dedup(job)
            job.status = JobStatus.CLAIMED
            job.attempts += 1
            job.delivery += 1
            job.claimed_at = now
            model.held.append(Held(claim, job, job.delivery, model.epoch, now + lease_ms))
            assert self.queue.lease_expiry(claim) == now + lease_ms
        model.prune()
        return [j.id for j in expected]

    async def op_ack(self, i: int, fx: Effects | None) -> list[str]:
        model = self.model
        held = self.pick_held(i)
        if held is None:
            return []
        job = held.job
        if not model.valid(held):
            self.mark("stale claim refused")
            with pytest.raises(ClaimLost):
                await self.queue.ack_with(held.claim, fx)
            self.forget(held)
            return [job.id]
        # Within the transaction the ack comes first, then the follow-ups: a follow-up may
        # reuse the acked job's id exactly when the ack deletes its index entry.
        config = CONFIGS[job.queue]
        follow = list(fx.enqueues) if fx else []
        saved = (job.status, job.completed_at)
        job.status = JobStatus.DONE if config.keep_done is not None else None
        job.completed_at = model.now  # a kept done record keeps its claimed_at
        if model.expect_duplicate(follow):
            job.status, job.completed_at = saved
            self.mark("ack refused: duplicate follow-up id")
            with pytest.raises(DuplicateJobId):
                await self.queue.ack_with(held.claim, fx)
            assert model.valid(held)  # nothing happened; the claim still holds
            return [job.id]
        results = await self.queue.ack_with(held.claim, fx)
        model.acks[job.queue] += 1
        if job.status is JobStatus.DONE:
            job.history.append((job.attempts, AttemptOutcome.COMPLETED, None))
        touched = [job.id, *model.apply_enqueues(follow, results)]
        if fx is not None:
            model.kv.update(fx.kv_writes)
            for key in fx.kv_deletes:
                model.kv.pop(key, None)
        assert self.queue.lease_expiry(held.claim) is None
        return touched

    async def op_nack(
        self,
        i: int,
        retry_after: float | None,
        writes: dict[bytes, bytes],
        if_dead: Effects | None,
    ) -> list[str]:
        """Nack: ``writes`` commit either way, ``if_dead`` only when the job dead-letters."""
        model = self.model
        held = self.pick_held(i)
        if held is None:
            return []
        job = held.job
        kwargs: dict[str, Any] = {
            "retry_after": retry_after,
            "kv_writes": writes,
            "effects_if_dead": if_dead,
        }
        if not model.valid(held):
            with pytest.raises(ClaimLost):
                await self.queue.nack(held.claim, "stale", **kwargs)
            self.forget(held)
            return [job.id]
        error = f"fail {job.attempts}"
        if job.attempts >= job.max_attempts:
            # The dead record (and its index entry) is staged before the follow-ups.
            follow = list(if_dead.enqueues) if if_dead else []
            job.status = JobStatus.DEAD
            if model.expect_duplicate(follow):
                job.status = JobStatus.CLAIMED
                self.mark("nack refused: duplicate follow-up id")
                with pytest.raises(DuplicateJobId):
                    await self.queue.nack(held.claim, error, **kwargs)
                assert model.valid(held)
                return [job.id]
            result = await self.queue.nack(held.claim, error, **kwargs)
            assert result.dead
            job.history.append((job.attempts, AttemptOutcome.DEAD_LETTERED, error))
            job.last_error = error
            job.failed_at = model.now
            job.claimed_at = None
            touched = [job.id, *model.apply_enqueues(follow, result.enqueued)]
            model.kv.update(writes)
            if if_dead is not None:
                model.kv.update(if_dead.kv_writes)
                for key in if_dead.kv_deletes:
                    model.kv.pop(key, None)
            return touched
        result = await self.queue.nack(held.claim, error, **kwargs)
        assert not result.dead and result.enqueued == []
        model.kv.update(writes)
        job.history.append((job.attempts, AttemptOutcome.RETRIED, error))
        job.last_error = error
        job.claimed_at = None
        delay = max(
            backoff_ms(job.attempts, CONFIGS[job.queue]), math.ceil((retry_after or 0) * 1000)
        )
        if delay:
            job.status = JobStatus.SCHEDULED
            job.run_at = model.now + delay
        else:
            job.status = JobStatus.PENDING
        return [job.id]

    async def op_dead_letter(self, i: int) -> list[str]:
        model = self.model
        held = self.pick_held(i)
        if held is None:
            return []
        job = held.job
        if not model.valid(held):
            with pytest.raises(ClaimLost):
                await self.queue.dead_letter(held.claim, "stale")
            self.forget(held)
            return [job.id]
        await self.queue.dead_letter(held.claim, "poison")
        job.history.append((job.attempts, AttemptOutcome.DEAD_LETTERED, "poison"))
        job.status = JobStatus.DEAD
        job.last_error = "poison"
        job.failed_at = model.now
        job.claimed_at = None
        return [job.id]

    async def op_renew(self, i: int, extension: float) -> list[str]:
        model = self.model
        held = self.pick_held(i)
        if held is None:
            return []
        if not model.valid(held):
            with pytest.raises(ClaimLost):
                self.queue.renew_lease(held.claim, extension)
            return [held.job.id]
        expiry = self.queue.renew_lease(held.claim, extension)
        assert expiry == model.now + math.ceil(extension * 1000)
        held.expires_at = expiry
        return [held.job.id]

    async def op_requeue_dead(self, i: int) -> list[str]:
        model = self.model
        if not model.dead_snapshots:
            return []
        snapshot = model.dead_snapshots[i % len(model.dead_snapshots)]
        job = model.jobs.get(snapshot.id)
        if job is None or job.status is not JobStatus.DEAD or job.queue != snapshot.queue_name:
            with pytest.raises(JobNotFound):
                await self.queue.requeue_dead_job(snapshot)
            return [snapshot.id]
        await self.queue.requeue_dead_job(snapshot)
        self.mark("dead job requeued")
        job.history.append((0, AttemptOutcome.REQUEUED, None))
        job.status = JobStatus.PENDING
        job.attempts = 0
        job.last_error = None
        job.failed_at = None
        job.cancel_requested = False
        return [job.id]

    async def op_requeue_live(self, i: int) -> list[str]:
        live = sorted(
            (j for j in self.model.jobs.values() if j.status in LIVE[:3]), key=lambda j: j.id
        )
        if not live:
            return []
        record = await self.queue.get_job(live[i % len(live)].id)
        assert record is not None
        with pytest.raises(InvalidState):
            await self.queue.requeue_dead_job(record)
        return [record.id]

    async def op_cancel(self, i: int) -> list[str]:
        model = self.model
        candidates = [*sorted(model.jobs), "unknown-id"]
        job_id = candidates[i % len(candidates)]
        job = model.jobs.get(job_id)
        outcome = await self.queue.cancel(job_id)
        if job is not None and job.status in (JobStatus.PENDING, JobStatus.SCHEDULED):
            assert outcome is CancelOutcome.REMOVED
            model.release_dedup(job)
            job.status = None
        elif job is not None and job.status is JobStatus.CLAIMED:
            assert outcome is CancelOutcome.REQUESTED
            self.mark("cancel of a claimed job")
            job.cancel_requested = True
            for held in model.held:
                if model.valid(held) and held.job is job:
                    assert held.claim.cancel_requested
        else:
            assert outcome is CancelOutcome.NOT_FOUND
        return [job_id]

    async def op_advance(self, seconds: float) -> list[str]:
        self.clock.advance(seconds)
        return []

    async def op_reap(self) -> list[str]:
        model = self.model
        now = model.now
        due = [h for h in model.held if model.valid(h) and h.expires_at <= now]
        reaped = await self.queue.reap_now()
        assert reaped == len(due)
        if due:
            self.mark("lease reaped")
        for held in due:
            model.requeue_or_kill(held.job, "lease expired", AttemptOutcome.LEASE_EXPIRED)
            assert held.claim.cancel_requested  # a still-running handler learns it lost
        return [h.job.id for h in due]

    async def op_promote(self) -> list[str]:
        model = self.model
        due = [
            j
            for j in model.jobs.values()
            if j.status is JobStatus.SCHEDULED and j.run_at is not None and j.run_at <= model.now
        ]
        assert await self.queue.promote_scheduled_now() == len(due)
        for job in due:
            job.status = JobStatus.PENDING
            job.run_at = None
        return [j.id for j in due]

    async def op_sweep(self) -> list[str]:
        model = self.model
        now = model.now
        victims: list[MJob] = []
        for job in model.jobs.values():
            config = CONFIGS[job.queue]
            if job.status is JobStatus.DONE and config.keep_done is not None:
                assert job.completed_at is not None
                if job.completed_at < now - config.keep_done * 1000:
                    victims.append(job)
            elif job.status is JobStatus.DEAD and config.dead_retention is not None:
                assert job.failed_at is not None
                if job.failed_at < now - config.dead_retention * 1000:
                    victims.append(job)
        assert await self.queue.sweep_now() == len(victims)
        if victims:
            self.mark("records swept")
        for job in victims:
            job.status = None
        return [j.id for j in victims]

    async def op_fold(self) -> list[str]:
        await self.queue.fold_stats_now()
        return []

    async def op_restart(self) -> list[str]:
        model = self.model
        await self.close()
        await self.open()
        model.epoch += 1
        recovered = [j for j in model.jobs.values() if j.status is JobStatus.CLAIMED]
        if recovered:
            self.mark("claims recovered at restart")
        for job in recovered:
            model.requeue_or_kill(
                job, "claim interrupted by process exit", AttemptOutcome.INTERRUPTED
            )
        # Claims held across the restart are stale: the new queue refuses them.
        for held in model.held[-3:]:
            with pytest.raises(ClaimLost):
                await self.queue.ack(held.claim)
        return [j.id for j in recovered]

    # -------------------------------------------------------------------------- invariants

    async def check(self, where: str, touched: list[str]) -> None:
        model = self.model
        queue = self.queue
        seen: set[str] = set()
        for name in QUEUES:
            listed: dict[JobStatus, list[JobRecord]] = {}
            for status in (*LIVE, JobStatus.DONE):
                page = await queue.list_jobs(name, status, limit=10_000)
                assert page.next_cursor is None
                listed[status] = page.jobs
                for record in page.jobs:
                    assert record.status is status and record.queue_name == name
                    assert record.id not in seen, f"{where}: job {record.id} listed twice"
                    seen.add(record.id)
                    model.check_record(record, where)
            # Claim order, and every state's membership, match the model exactly.
            assert [r.id for r in listed[JobStatus.PENDING]] == [j.id for j in model.ready(name)]
            scheduled = sorted(
                model.in_state(name, JobStatus.SCHEDULED),
                key=lambda j: (j.run_at or 0, j.id.encode()),
            )
            assert [r.id for r in listed[JobStatus.SCHEDULED]] == [j.id for j in scheduled]
            for status in (JobStatus.CLAIMED, JobStatus.DEAD):
                expected = sorted(j.id.encode() for j in model.in_state(name, status))
                assert [r.id.encode() for r in listed[status]] == expected, f"{where}: {status}"
            done = sorted(
                model.in_state(name, JobStatus.DONE),
                key=lambda j: (j.completed_at or 0, j.id.encode()),
            )
            assert [r.id for r in listed[JobStatus.DONE]] == [j.id for j in done]
            stats = await queue.stats(name)
            recount = QueueStats(
                name,
                pending=len(listed[JobStatus.PENDING]),
                scheduled=len(listed[JobStatus.SCHEDULED]),
                claimed=len(listed[JobStatus.CLAIMED]),
                done=model.acks[name],
                dead=len(listed[JobStatus.DEAD]),
            )
            assert stats == recount, f"{where}: stats {stats} != recount {recount}"
            for record in listed[JobStatus.DEAD]:
                if not any(
                    s.id == record.id and s.failed_at == record.failed_at
                    for s in model.dead_snapshots
                ):
                    model.dead_snapshots.append(record)
        alive = {j.id for j in model.jobs.values() if j.status is not None}
        assert seen == alive, f"{where}: lost {alive - seen}, unexpected {seen - alive}"
        for job_id in dict.fromkeys(touched):
            await self.check_get_job(job_id, where)

    async def check_get_job(self, job_id: str, where: str) -> None:
        if not job_id:
            return
        record = await self.queue.get_job(job_id)
        job = self.model.jobs.get(job_id)
        if job is None or job.status is None:
            assert record is None, f"{where}: get_job({job_id}) should be None, got {record}"
        else:
            assert record is not None, f"{where}: get_job({job_id}) lost the job"
            self.model.check_record(record, where)
        history = await self.queue.get_job_history(job_id)
        if job is None or job.status is None:
            assert history is None, f"{where}: history of gone job {job_id}: {history}"
        else:
            assert history is not None
            got = [(a.attempt, a.outcome, a.error) for a in history]
            assert got == job.history, f"{where}: history of {job_id} differs from the model"

    async def check_all(self) -> None:
        for job_id in self.model.jobs:
            await self.check_get_job(job_id, "final")
        page = await self.queue.kv_scan(b"", limit=1000)
        assert dict(page.entries) == self.model.kv
        # History lives exactly as long as its job: no entry of a removed job is left behind.
        prefix = taquba._keys.space_prefix(taquba._keys.Space.HISTORY)
        left: dict[str, int] = {}
        for key, _ in await self.queue._database.scan(prefix):
            job_id = key[3 : 3 + key[2]].decode("ascii")
            left[job_id] = left.get(job_id, 0) + 1
        expected = {
            j.id: len(j.history) for j in self.model.jobs.values() if j.status and j.history
        }
        assert left == expected, "history keys do not match the live jobs' histories"


async def run_program(program: list[tuple[Any, ...]], *, under_hypothesis: bool = True) -> None:
    runner = Runner(under_hypothesis=under_hypothesis)
    # One scope around every open and close: a restart reopens the queue mid-program.
    with trio.fail_after(60):
        await runner.open()
        try:
            await runner.check("start", [])
            for step, (name, *args) in enumerate(program):
                if under_hypothesis:
                    note(f"step {step}: {name} {args}")
                touched = await getattr(runner, f"op_{name}")(*args)
                await runner.check(f"after step {step} ({name})", touched)
            await runner.check_all()
        finally:
            await runner.close()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(programs)
async def test_queue_matches_the_model(program: list[tuple[Any, ...]]) -> None:
    await run_program(program)


# Named programs: scenarios the random search should always cover, and regressions.


async def test_model_smoke_program() -> None:
    request = EnqueueRequest(queue_name="a", payload=b"x", dedup_key="d1")
    later = EnqueueRequest(queue_name="b", payload=b"y", delay=3, job_id="A1")
    program: list[tuple[Any, ...]] = [
        ("enqueue", request, {b"k1": b"1"}),
        ("enqueue", request, {b"k2": b"2"}),  # dedup hit: no KV write
        ("batch", [later, EnqueueRequest(queue_name="b", payload=b"z", priority=0)]),
        ("claim", "a", 2, None),
        ("claim", "b", 4, 2.0),
        ("advance", 3.0),
        ("reap",),
        ("ack", 1, None),  # stale: reaped
        ("promote",),
        ("claim", "b", 4, None),
        ("ack", 0, Effects(enqueues=[request], kv_writes={b"k3": b"1"})),
        ("restart",),
        ("claim", "b", 4, None),
        ("nack", 2, 2.5, {b"k1": b"2"}, None),
        ("claim", "b", 1, None),
        ("nack", 3, None, {}, Effects(enqueues=[later], kv_deletes=[b"k1"])),  # dead
        ("requeue_dead", 0),
        ("cancel", 0),
        ("advance", 61.0),
        ("sweep",),
        ("fold",),
    ]
    await run_program(program, under_hypothesis=False)


# ------------------------------------------------------------- concurrent operations, raced

RACE_EXAMPLES = max(EXAMPLES // 3, 1)
RACE_CONFIG = QueueConfig(max_attempts=3, lease_duration=10, retry_backoff_base=0)
race_operation = st.one_of(
    st.tuples(st.just("claim"), st.integers(1, 3)),
    st.tuples(st.sampled_from(["ack", "nack", "dead_letter"]), index),
    st.tuples(st.just("renew"), index),
    st.tuples(st.just("cancel"), index),
    st.tuples(st.just("enqueue"), st.sampled_from([None, "d0", "d1"]), st.sampled_from([0, 1])),
    st.tuples(st.just("reap")),
    st.tuples(st.just("promote")),
    st.tuples(st.just("requeue_dead")),
    st.tuples(st.just("fold")),
)


@dataclass
class RaceLog:
    """What the concurrent operations observed."""

    claims: list[Claim] = field(default_factory=list)
    settled: dict[int, list[str]] = field(default_factory=dict)  # id(claim) -> successes
    acks: int = 0
    ids: set[str] = field(default_factory=set)
    requeued: set[str] = field(default_factory=set)  # revived dead jobs restart at attempt 0


async def race_one(
    queue: taquba.Queue, log: RaceLog, dead: list[JobRecord], op: tuple[Any, ...]
) -> None:
    name, *args = op
    if name == "claim":
        claims = await queue.claim_batch("c", args[0])
        log.claims += claims
        log.ids.update(c.id for c in claims)
    elif name in ("ack", "nack", "dead_letter", "renew"):
        if not log.claims:
            return
        claim = log.claims[args[0] % len(log.claims)]
        try:
            if name == "ack":
                await queue.ack(claim)
                log.acks += 1
            elif name == "nack":
                await queue.nack(claim, "raced")
            elif name == "dead_letter":
                await queue.dead_letter(claim, "raced")
            else:
                queue.renew_lease(claim, 30)
                return
        except ClaimLost:
            return
        log.settled.setdefault(id(claim), []).append(name)
    elif name == "cancel":
        ids = sorted(log.ids)
        await queue.cancel(ids[args[0] % len(ids)])
    elif name == "enqueue":
        result = await queue.enqueue("c", b"raced", dedup_key=args[0], delay=args[1] or None)
        log.ids.add(result.id)
    elif name == "reap":
        await queue.reap_now()
    elif name == "promote":
        await queue.promote_scheduled_now()
    elif name == "requeue_dead":
        if dead:
            with suppress(JobNotFound):
                await queue.requeue_dead_job(dead[0])
                log.requeued.add(dead[0].id)
    else:
        await queue.fold_stats_now()


async def check_race(queue: taquba.Queue, log: RaceLog) -> None:
    listed: dict[JobStatus, dict[str, JobRecord]] = {}
    for status in (*LIVE, JobStatus.DONE):
        page = await queue.list_jobs("c", status, limit=10_000)
        listed[status] = {j.id: j for j in page.jobs}
    everywhere = [i for jobs in listed.values() for i in jobs]
    assert len(everywhere) == len(set(everywhere)), "a job is in two states"
    stats = await queue.stats("c")
    recount = QueueStats(
        "c",
        pending=len(listed[JobStatus.PENDING]),
        scheduled=len(listed[JobStatus.SCHEDULED]),
        claimed=len(listed[JobStatus.CLAIMED]),
        done=log.acks,
        dead=len(listed[JobStatus.DEAD]),
    )
    assert stats == recount
    for job_id in log.ids:
        record = await queue.get_job(job_id)
        holder = next((s for s, jobs in listed.items() if job_id in jobs), None)
        assert (record.status if record else None) is holder, f"index of {job_id} is stale"
    # A claim settles at most once; a delivery is never handed out twice.
    assert all(len(wins) == 1 for wins in log.settled.values())
    deliveries = [(c.id, c.attempts) for c in log.claims if c.id not in log.requeued]
    assert len(deliveries) == len(set(deliveries)), "one delivery claimed twice"
    # Every claimed record has exactly one live lease: its latest delivery's.
    for job_id in {c.id for c in log.claims}:
        claims = [c for c in log.claims if c.id == job_id]
        live = [c for c in claims if queue.lease_expiry(c) is not None]
        assert len(live) == (job_id in listed[JobStatus.CLAIMED]), f"leases of {job_id}"
        if live and job_id not in log.requeued:
            assert live[0].attempts == max(c.attempts for c in claims)
    # A dedup key is held by at most one waiting job.
    waiting = [*listed[JobStatus.PENDING].values(), *listed[JobStatus.SCHEDULED].values()]
    keys = [j.dedup_key for j in waiting if j.dedup_key is not None]
    assert len(keys) == len(set(keys))


@settings(
    max_examples=RACE_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(race_operation, min_size=5, max_size=25), st.booleans())
async def test_concurrent_operations_keep_the_invariants(
    ops: list[tuple[Any, ...]], leases_expired: bool
) -> None:
    """Operations raced in one nursery (conflicts retried inside taquba) keep every invariant."""
    clock = MockClock()
    with trio.fail_after(60):
        async with taquba.open_queue(
            Store.memory(), "race", config=RACE_CONFIG, clock=clock, **OPEN_RACE
        ) as queue:
            log = RaceLog()
            requests = [
                EnqueueRequest(
                    queue_name="c",
                    payload=b"%d" % i,
                    dedup_key=f"d{i}" if i < 2 else None,
                    delay=1 if i in (2, 3) else None,
                )
                for i in range(12)
            ]
            log.ids.update(r.id for r in await queue.enqueue_batch(requests))
            log.claims += await queue.claim_batch("c", 6)
            await queue.dead_letter(log.claims[0], "setup")
            log.settled[id(log.claims[0])] = ["dead_letter"]
            dead = await queue.dead_jobs("c")
            clock.advance(11 if leases_expired else 1)  # scheduled jobs are due either way
            async with trio.open_nursery() as nursery:
                for op in ops:
                    nursery.start_soon(race_one, queue, log, dead, op)
            await check_race(queue, log)
            await drain_race(queue, clock, log)
            await check_race(queue, log)


async def drain_race(queue: taquba.Queue, clock: MockClock, log: RaceLog) -> None:
    """After the race, every pending job is claimable: drain until nothing is left."""
    while True:
        clock.advance(3600)  # past every lease and retry delay
        await queue.reap_now()
        await queue.promote_scheduled_now()
        claims = await queue.claim_batch("c", 100)
        log.claims += claims
        for claim in claims:
            await queue.ack(claim)
            log.acks += 1
            log.settled.setdefault(id(claim), []).append("ack")
        if not claims:
            break
    stats = await queue.stats("c")
    assert (stats.pending, stats.scheduled, stats.claimed) == (0, 0, 0), f"hidden jobs: {stats}"
