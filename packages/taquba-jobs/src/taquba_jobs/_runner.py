"""The runner: submit typed jobs, serve them, and await their durable results."""

from __future__ import annotations

import logging
import math
import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, cast

import trio

import taquba
from taquba import (
    CancelOutcome,
    ClaimLost,
    Clock,
    Codec,
    DataError,
    Effects,
    Fenced,
    InvalidArgument,
    JobNotFound,
    JobRecord,
    JobStatus,
    KvConflict,
    LeaseHandle,
    PermanentFailure,
    QueueClosed,
    QueueLike,
    RetryLater,
    SerializationError,
    StorageFatal,
    TaqubaError,
    TypeMismatch,
    UsageError,
    Worker,
    validate_job_id,
)

from ._errors import (
    InputMismatch,
    JobCancelled,
    JobFailed,
    JobsError,
    ReservedHeader,
    ResultNotFound,
    StateTooLarge,
    UnknownJob,
)
from ._job import Job, check_time_limit
from ._records import (
    FORMAT_VERSION,
    HEADER_FORMAT,
    HEADER_JOB,
    HEADER_KEY,
    HEADER_TIME_LIMIT,
    MARKER_DIR,
    MAX_STATE_SIZE,
    RESERVED_HEADER_PREFIX,
    DedupRecord,
    Marker,
    ResultRecord,
    StateRecord,
    decode_dedup,
    decode_marker,
    decode_result,
    decode_state,
    decode_time_limit,
    dedup_key,
    encode_dedup,
    encode_marker,
    encode_result,
    encode_state,
    encode_time_limit,
    expired_start_after,
    input_hash,
    marker_name,
    parse_marker_name,
    state_key,
    user_headers,
)

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

__all__ = [
    "JobContext",
    "JobHandle",
    "JobRunner",
    "RunnerStatistics",
    "SweepReport",
]

log = logging.getLogger("taquba_jobs")

InT = TypeVar("InT")
OutT = TypeVar("OutT")
StateT = TypeVar("StateT")

_FATAL = (Fenced, QueueClosed, StorageFatal)
_MAX_KEY_LENGTH = 1024
_SUBMIT_ROUNDS = 32
_SWEEP_PAGE = 500
_STOP_GRACE = 10.0
_PREFIX_SEGMENT = re.compile(r"^(?!\.{1,2}$)(?!\.taquba-tmp-)[^\x00/]+$")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_headers(headers: object) -> dict[str, str]:
    """A submission's own headers, checked: a mapping of str to str, no reserved name.

    Raises:
        taquba.InvalidArgument: not a mapping, or a name or value that is not a str.
        ReservedHeader: a name starting with `RESERVED_HEADER_PREFIX`.
    """
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise InvalidArgument("headers", headers, "must be None or a mapping of str to str")
    checked: dict[str, str] = {}
    for name, value in cast("Mapping[object, object]", headers).items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidArgument("headers", {name: value}, "must map str names to str values")
        if name.startswith(RESERVED_HEADER_PREFIX):
            raise ReservedHeader(name)
        checked[name] = value
    return checked


def _qualified(exc: BaseException) -> str:
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


# ---------------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class RunnerStatistics:
    """Counters of one `JobRunner` in this process (see `JobRunner.statistics`)."""

    executions: int
    """Job function calls started by this runner."""
    succeeded: int
    """Outcomes this runner recorded as succeeded."""
    failed: int
    """Outcomes this runner recorded as failed."""
    cancelled: int
    """Outcomes this runner recorded as cancelled."""
    in_flight: int
    """Job functions running right now."""
    waiting_handles: int
    """Handles of this queue currently waiting in `JobHandle.wait` / `JobHandle.result`."""


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one result-retention sweep did (see `JobRunner.sweep_results_now`)."""

    listed: int
    """Marker names the listing returned: the expired markers only, never the live ones."""
    swept: int
    """Jobs whose result, retention marker and dedup record were deleted."""


# ---------------------------------------------------------------------------------- waiters


class _Slot:
    __slots__ = ("error", "event", "record", "users")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.record: ResultRecord | None = None
        self.error: BaseException | None = None
        self.users = 0


class _Registry:
    """In-process completion notifications, per queue, keyed by job id.

    A dispatcher that records an outcome resolves the job's slot, waking every handle
    waiting on it with the outcome itself: awaiting many handles costs no storage reads
    beyond each handle's first look.
    """

    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}

    def acquire(self, job_id: str) -> _Slot:
        slot = self._slots.get(job_id)
        if slot is None:
            slot = self._slots[job_id] = _Slot()
        slot.users += 1
        return slot

    def release(self, job_id: str, slot: _Slot) -> None:
        slot.users -= 1
        if slot.users == 0 and self._slots.get(job_id) is slot:
            del self._slots[job_id]

    def resolve(self, record: ResultRecord) -> None:
        slot = self._slots.get(record.job_id)
        if slot is not None and not slot.event.is_set():
            slot.record = record
            slot.event.set()

    def fail_all(self, error: BaseException) -> None:
        for slot in self._slots.values():
            if not slot.event.is_set():
                slot.error = error
                slot.event.set()

    @property
    def waiting(self) -> int:
        return sum(slot.users for slot in self._slots.values())


_REGISTRIES: weakref.WeakKeyDictionary[QueueLike, _Registry] = weakref.WeakKeyDictionary()


def _registry(queue: QueueLike) -> _Registry:
    """The registry shared by every runner on the same queue object in this process."""
    try:
        registry = _REGISTRIES.get(queue)
        if registry is None:
            registry = _REGISTRIES[queue] = _Registry()
    except TypeError:  # a QueueLike that cannot be weakly referenced: the runner's own
        return _Registry()
    return registry


class _Gone:
    """Neither a result nor a job: the id is unknown, or its result was swept."""


_GONE = _Gone()


class _DeliveryLost(Exception):
    """The claim was taken away (lease expired) while the job ran: nothing to settle."""


class TimeLimitExceeded(Exception):
    """An attempt ran past its time limit: raised to the queue, which retries the job.

    Its name starts the queue's ``last_error`` (``"TimeLimitExceeded: timed out after 300 s"``).
    """


# ---------------------------------------------------------------------------------- handles


class JobHandle(Generic[OutT]):
    """A submitted job: its id, and ways to get its outcome.

    Returned by `JobRunner.submit` (and `JobRunner.handle` for an id kept from earlier). The
    outcome is read from the result blob in the store, so a handle works after a restart and
    from a new runner; waiting for a job that has not finished uses in-process notifications
    (the runner's, and the queue's `taquba.Queue.wait_for_completion`), not storage polling.
    """

    __slots__ = ("_job", "_job_id", "_newly", "_runner")

    def __init__(
        self, runner: JobRunner, job: Job[Any, OutT], job_id: str, *, newly_submitted: bool
    ) -> None:
        """Library-internal: use `JobRunner.submit` or `JobRunner.handle`."""
        self._runner = runner
        self._job = job
        self._job_id = job_id
        self._newly = newly_submitted

    @property
    def job_id(self) -> str:
        """The job's id (a ULID)."""
        return self._job_id

    @property
    def job(self) -> Job[Any, OutT]:
        """The job definition the outcome is decoded with."""
        return self._job

    @property
    def newly_submitted(self) -> bool:
        """Whether the submission that produced this handle created the job.

        False if it found an existing job for its idempotency key (pending, running or
        finished) and enqueued nothing, and for handles made by `JobRunner.handle`.
        """
        return self._newly

    async def done(self) -> bool:
        """Whether the job has ended (succeeded, failed or cancelled), without waiting.

        One look at the store. False while the job is pending, scheduled or running, and also
        when there is no outcome to read: none was ever stored under this id, or result
        retention swept it (`result` then raises `ResultNotFound`). Once true, `result`
        returns (or raises the job's failure) without waiting.

        Raises:
            taquba.DataError: the stored result record cannot be read.
        """
        state = await self._runner._probe(self._job_id)  # pyright: ignore[reportPrivateUsage]
        return isinstance(state, ResultRecord)

    async def wait(self) -> None:
        """Wait until the job has ended, without raising its failure.

        Every end of the job wakes the wait: an outcome a runner of this process records
        (delivered in-process, with no storage read), and the ends the queue decides alone
        (a lease that expired on the last attempt, `taquba.Queue.cancel`, a crash recovered
        on the last attempt), which `taquba.Queue.wait_for_completion` reports. Then `result`
        gives the value or raises why there is none. Bound the wait with
        `trio.move_on_after`.

        Raises:
            ResultNotFound: there is no job and no result under this id, or the job ended
                without a stored outcome (cancelled with `taquba.Queue.cancel`, or its result
                was swept by result retention before it could be read).
            taquba.DataError: the stored result record cannot be read.
            taquba.Fenced: the queue stopped (the same error as the serving runner's).
        """
        await self._runner._await_outcome(self._job_id)  # pyright: ignore[reportPrivateUsage]

    async def result(self) -> OutT:
        """Wait for the job and return its output: a plain value, or its failure raised.

        Returns at once for a job that has ended (one read of its stored outcome). Waiting
        works as in `wait`.

        Returns:
            The job's output, decoded into its output type (None if the job returned None).

        Raises:
            JobFailed: the job failed (its error type, message, permanence and attempts are
                attached).
            JobCancelled: the job was cancelled.
            ResultNotFound: there is no job and no result under this id, or the job ended
                without a stored outcome (see `wait`).
            taquba.TypeMismatch: the stored result does not decode into the job's output type
                (or is the result of another job).
            taquba.DataError: the stored result record cannot be read.
            taquba.Fenced: the queue stopped (the same error as the serving runner's).
        """
        record = await self._runner._await_outcome(self._job_id)  # pyright: ignore[reportPrivateUsage]
        return _value(self._job, record)

    def __repr__(self) -> str:
        return f"<JobHandle {self._job.name!r} {self._job_id}>"


def _value(job: Job[Any, OutT], record: ResultRecord) -> OutT:
    """The output a stored outcome holds; raise `JobFailed` / `JobCancelled` if it has none."""
    if record.job_name != job.name:
        raise TypeMismatch(
            f"result of job {record.job_id}",
            f"a result of job {job.name!r}",
            f"a result of job {record.job_name!r}",
        )
    if record.status == "succeeded":
        return job.decode_output(record.value or b"\xc0")
    if record.status == "cancelled":
        raise JobCancelled(record.job_id, record.error_message or "the job was cancelled")
    raise JobFailed(
        record.job_id,
        record.error_type or "unknown",
        record.error_message or "",
        permanent=record.permanent,
        attempts=record.attempts,
    )


# ---------------------------------------------------------------------------------- context


class JobContext:
    """What a running job gets besides its input: identity, lease, cancellation, submission.

    One is created per attempt. Use it to submit follow-up jobs (`submit`), to read the
    submission's `headers`, to carry small state from one attempt to the next (`load_state`,
    `stage_state`) and to notice a cancel request (`cancel_requested`,
    `wait_cancel_requested`, `raise_if_cancel_requested`). The runner keeps the lease alive
    while the function runs; `time_limit` bounds an attempt.
    """

    __slots__ = ("_headers", "_job", "_lease", "_record", "_runner", "_staged", "_time_limit")

    def __init__(
        self,
        runner: JobRunner,
        job: Job[Any, Any],
        record: JobRecord,
        lease: LeaseHandle,
        time_limit: float | None = None,
    ) -> None:
        """Library-internal: the runner creates one per attempt."""
        self._runner = runner
        self._job = job
        self._record = record
        self._lease = lease
        self._time_limit = time_limit
        self._headers: Mapping[str, str] = MappingProxyType(user_headers(record.headers))
        # What this attempt staged: None for nothing, (None,) to clear, (bytes,) to write.
        self._staged: tuple[bytes | None] | None = None

    @property
    def job_id(self) -> str:
        """The running job's id."""
        return self._record.id

    @property
    def job(self) -> Job[Any, Any]:
        """The running job's definition."""
        return self._job

    @property
    def attempt(self) -> int:
        """Which attempt this is (1 for the first)."""
        return self._record.attempts

    @property
    def max_attempts(self) -> int:
        """The job's attempt limit."""
        return self._record.max_attempts

    @property
    def idempotency_key(self) -> str | None:
        """The idempotency key the job was submitted with, if any."""
        return self._record.headers.get(HEADER_KEY)

    @property
    def headers(self) -> Mapping[str, str]:
        """The headers the job was submitted with (read-only).

        The ``headers`` given to `JobRunner.submit`, and any an enqueue observer added (such
        as ``traceparent`` from `taquba.otel`); not the runner's own (names starting with
        ``taquba_jobs.``). The same on every attempt and after restarts: they are stored with
        the job.
        """
        return self._headers

    async def load_state(self, type_: type[StateT], /) -> StateT | None:
        """The state an earlier attempt of this job staged, decoded as ``type_``; else None.

        None on the first attempt (without a storage read), and when no earlier attempt
        staged a value (or the last one to stage cleared it). A value staged by attempt 2
        and not replaced is still there on attempt 4. It does not return what this attempt
        staged: staging takes effect when the attempt ends in a retry. See `stage_state`.

        Raises:
            taquba.TypeMismatch: the stored state does not fit ``type_``.
            taquba.SerializationError: the stored state cannot be decoded.
            taquba.UnsupportedType: ``type_`` is not a type `taquba.Codec` can store.
            taquba.DataError: the stored state record cannot be read.
        """
        if self.attempt <= 1:  # no earlier attempt could have staged anything
            return None
        raw = await self._runner.queue.kv_get(state_key(self._runner.queue_name, self.job_id))
        if raw is None:
            return None
        record = decode_state(raw)
        if record.attempt >= self.attempt:
            # Not an earlier attempt of this run: left by a run before `requeue_dead_job`
            # reset the attempts. Treated as absent.
            return None
        return Codec(type_).decode(record.value, path="state")

    def stage_state(self, value: StateT, type_: type[StateT] | None = None, /) -> None:
        """Keep ``value`` for the next attempt, should this one end in a retry.

        The value is encoded now (with `taquba.Codec` of ``type_``, default ``type(value)``)
        and stored when the attempt ends without a result and the job will run again: the
        function raised a retryable error, its time limit expired, or the runner shut down
        and handed the job back. It is written, durably, before the queue is told of the
        retry, so the next attempt's `load_state` sees it, also after a restart. If the
        process dies before the attempt ends, nothing this attempt staged is kept (the next
        attempt sees the earlier state). The last call of an attempt wins; ``None`` clears
        the state. When the job ends (succeeded, failed, cancelled), its state is deleted in
        the same transaction as the queue's settlement.

        Raises:
            StateTooLarge: the encoded value is over `MAX_STATE_SIZE` bytes; nothing staged.
            taquba.TypeMismatch: ``value`` does not fit ``type_``.
            taquba.UnsupportedType: ``type_`` is not a type `taquba.Codec` can store.
        """
        if value is None:
            self._staged = (None,)
            return
        codec = Codec(type_ if type_ is not None else type(value))
        encoded = codec.encode(value, path="state")
        if len(encoded) > MAX_STATE_SIZE:
            raise StateTooLarge(value, len(encoded), MAX_STATE_SIZE)
        self._staged = (encoded,)

    @property
    def time_limit(self) -> float | None:
        """Seconds this attempt may run before it is cancelled and fails (None: no limit).

        The submission's ``time_limit``, else the job's.
        """
        return self._time_limit

    @property
    def lease(self) -> LeaseHandle:
        """The claim's lease.

        The runner renews it every third of the queue's ``lease_duration`` while the function
        runs, so long work needs nothing; `taquba.LeaseHandle.ensure_at_least` still extends
        it further (the runner never shortens it).
        """
        return self._lease

    @property
    def runner(self) -> JobRunner:
        """The runner executing the job."""
        return self._runner

    @property
    def queue(self) -> QueueLike:
        """The queue the job lives on."""
        return self._runner.queue

    @property
    def cancel_requested(self) -> bool:
        """Whether the job's cancellation was requested, or its lease was lost.

        Either way the job should stop: a cancelled job records a cancelled outcome, and a job
        whose lease was lost is being (or will be) delivered again.
        """
        return self._lease.cancel_requested

    async def wait_cancel_requested(self) -> None:
        """Wait until `cancel_requested` becomes true."""
        await self._lease.wait_cancel_requested()

    def raise_if_cancel_requested(self) -> None:
        """Raise `JobCancelled` if `cancel_requested` is true (for non-interruptible jobs)."""
        if self._lease.cancel_requested:
            raise JobCancelled(self.job_id)

    async def submit(
        self,
        job: Job[InT, OutT],
        value: InT,
        /,
        *,
        idempotency_key: str | None = None,
        priority: int | None = None,
        delay: float | None = None,
        run_at: datetime | None = None,
        max_attempts: int | None = None,
        time_limit: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> JobHandle[OutT]:
        """Submit another job (see `JobRunner.submit`); it runs independently of this one.

        A retried attempt submits again: pass an ``idempotency_key`` derived from this job
        (``f"{ctx.job_id}/thumbnail"``) so a retry finds the child instead of duplicating it.
        """
        return await self._runner.submit(
            job,
            value,
            idempotency_key=idempotency_key,
            priority=priority,
            delay=delay,
            run_at=run_at,
            max_attempts=max_attempts,
            time_limit=time_limit,
            headers=headers,
        )

    def __repr__(self) -> str:
        return f"<JobContext {self._job.name!r} {self.job_id} attempt {self.attempt}>"


# ---------------------------------------------------------------------------------- runner


class JobRunner:
    """Submits typed jobs to a queue, runs them, and keeps their outcomes in the store.

    ::

        runner = JobRunner(queue, [resize, notify], concurrency=8)
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.serve)
            handle = await runner.submit(resize, ResizeRequest(...), idempotency_key="img-42")
            result = await handle.result()
            runner.shutdown()

    Runners run in the process that owns the store (over its `taquba.Queue`), or in any
    other process over a `taquba.QueueLike` that reaches the owner (a remote queue), with the
    same behaviour. Jobs can be submitted whether or not `serve` is running; they wait in the
    queue until served.

    It follows the family's convention for long-running components: build it with its
    dependencies, start it with ``await nursery.start(runner.serve)``, stop it gracefully with
    `shutdown` (``shutdown_grace`` bounds the jobs in flight), or hard-stop it by cancelling the
    scope around `serve`.

    Args:
        queue: the open queue: a `taquba.Queue`, or any `taquba.QueueLike` (such as a
            remote queue whose owner is another process; results then live in the owner's
            store, reached through the queue's ``store``).
        jobs: the jobs this runner can submit and run (more with `register`).
        queue_name: the name of the queue the jobs go on.
        concurrency: the most jobs `serve` runs at once.
        result_prefix: where results live in the store's blob namespace; default
            ``"<queue_name>-results"`` (``"jobs-results"`` for the default queue).
        result_retention: seconds to keep a result after its job became terminal (None, the
            default: forever). When set, terminal markers are written and `serve` sweeps
            expired results, markers and dedup records; a swept job's `JobHandle.done`
            is False, its `JobHandle.result` raises `ResultNotFound`, and an idempotent
            resubmission runs the job again.
        sweep_interval: seconds between retention sweeps (default: the retention, at most 60).
        poll_interval: the longest idle wait between claim attempts, in seconds.
        shutdown_grace: after `shutdown`, seconds the jobs in flight get to finish before
            they are cancelled and handed back to the queue (None, the default, or
            ``math.inf``: wait as long as they take).
        clock: the clock of outcome timestamps and the retention cut-off (default:
            ``queue.clock``).

    Raises:
        taquba.InvalidArgument: an option of the wrong type or out of range (a
            `taquba.UsageError`), checked here, before anything runs.
        taquba.UsageError: two jobs with the same name, or something that is not a `Job`.
    """

    def __init__(
        self,
        queue: QueueLike,
        jobs: Iterable[Job[Any, Any]] = (),
        *,
        queue_name: str = "jobs",
        concurrency: int = 16,
        result_prefix: str | None = None,
        result_retention: float | None = None,
        sweep_interval: float | None = None,
        poll_interval: float = 1.0,
        shutdown_grace: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(queue, QueueLike):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidArgument(
                "queue", queue, "must be a taquba.QueueLike (e.g. a taquba.Queue)"
            )
        if not isinstance(queue_name, str) or not queue_name:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidArgument("queue_name", queue_name, "must be a non-empty str")
        prefix = result_prefix if result_prefix is not None else f"{queue_name}-results"
        if not isinstance(prefix, str) or not all(  # pyright: ignore[reportUnnecessaryIsInstance]
            _PREFIX_SEGMENT.match(segment) for segment in prefix.split("/")
        ):
            raise InvalidArgument(
                "result_prefix",
                prefix,
                "must be a relative '/'-separated blob path"
                + (" (pass result_prefix= explicitly)" if result_prefix is None else ""),
            )
        retention_ms: int | None = None
        if result_retention is not None:
            if not _is_number(result_retention) or not 0.001 <= result_retention < math.inf:
                raise InvalidArgument(
                    "result_retention", result_retention, "must be None or at least 0.001 seconds"
                )
            retention_ms = math.ceil(result_retention * 1000)
        if sweep_interval is not None and (
            not _is_number(sweep_interval) or not 0 < sweep_interval < math.inf
        ):
            raise InvalidArgument(
                "sweep_interval", sweep_interval, "must be None or a positive number of seconds"
            )
        self._queue = queue
        self._queue_name = queue_name
        # The core's worker loop claims, runs `_handle` and settles; it checks concurrency,
        # poll_interval and shutdown_grace here (raising taquba.InvalidArgument).
        self._worker = Worker(
            queue,
            queue_name,
            self._handle,
            concurrency=concurrency,
            poll_interval=poll_interval,
            shutdown_grace=shutdown_grace,
        )
        self._prefix = prefix
        self._retention_ms = retention_ms
        self._sweep_interval = (
            sweep_interval
            if sweep_interval is not None
            else min(result_retention, 60.0)
            if result_retention is not None
            else 60.0
        )
        self._clock = clock if clock is not None else queue.clock
        self._jobs: dict[str, Job[Any, Any]] = {}
        self._registry = _registry(queue)
        self._serving = False
        self._executions = 0
        self._in_flight = 0
        self._counts = {"succeeded": 0, "failed": 0, "cancelled": 0}
        for job in jobs:
            self.register(job)

    # ---------------------------------------------------------------- configuration

    @property
    def queue(self) -> QueueLike:
        """The queue jobs are submitted to."""
        return self._queue

    @property
    def queue_name(self) -> str:
        """The name of the queue jobs go on."""
        return self._queue_name

    @property
    def concurrency(self) -> int:
        """The most jobs `serve` runs at once."""
        return self._worker.concurrency

    @property
    def result_prefix(self) -> str:
        """Where results live in the store's blob namespace."""
        return self._prefix

    @property
    def jobs(self) -> dict[str, Job[Any, Any]]:
        """The registered jobs by name (a copy)."""
        return dict(self._jobs)

    def register(self, job: Job[Any, Any]) -> None:
        """Make ``job`` submittable and runnable by this runner.

        Raises:
            taquba.UsageError: ``job`` is not a `Job`, or another job has its name.
        """
        if not isinstance(job, Job):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError(f"register takes a Job (use @job), not {job!r}")
        existing = self._jobs.get(job.name)
        if existing is not None and existing is not job:
            raise UsageError(f"two jobs are named {job.name!r}")
        self._jobs[job.name] = job

    def result_path(self, job_id: str) -> str:
        """The blob path of a job's result."""
        return f"{self._prefix}/{job_id}"

    def statistics(self) -> RunnerStatistics:
        """A snapshot of this runner's counters."""
        return RunnerStatistics(
            executions=self._executions,
            succeeded=self._counts["succeeded"],
            failed=self._counts["failed"],
            cancelled=self._counts["cancelled"],
            in_flight=self._in_flight,
            waiting_handles=self._registry.waiting,
        )

    # ---------------------------------------------------------------- submission

    def _known(self, job: Job[Any, Any]) -> None:
        if self._jobs.get(job.name) is not job:
            raise UnknownJob(job.name)

    async def submit(
        self,
        job: Job[InT, OutT],
        value: InT,
        /,
        *,
        idempotency_key: str | None = None,
        priority: int | None = None,
        delay: float | None = None,
        run_at: datetime | None = None,
        max_attempts: int | None = None,
        time_limit: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> JobHandle[OutT]:
        """Submit a call of ``job`` with input ``value``; return once it is durable.

        With an ``idempotency_key``, the first submission binds the key to its job and input
        in a durable record written atomically with the enqueue. A later submission with the
        same key and an equal input (same job, same encoded bytes) enqueues nothing and
        returns a handle to that job, whether it is pending, running or finished
        (``newly_submitted`` is False); a different job or input raises `InputMismatch`.
        Racing submissions of one key create one job. Once result retention has swept the
        job's result (and the record with it), the key is free and the job runs again.
        ``headers`` (like ``priority`` or ``time_limit``) are not part of what the key
        compares: a resubmission with other headers returns the existing job, whose headers
        are those of the submission that created it.

        Args:
            job: a registered job.
            value: the input; it must match the job's input type.
            idempotency_key: makes the submission idempotent (1 to 1024 characters).
            priority: claim priority (lower first); default the queue's.
            delay: seconds before the job may run (exclusive with ``run_at``).
            run_at: timezone-aware time before which the job does not run.
            max_attempts: overrides the job's and the queue's attempt limit.
            time_limit: seconds one attempt of this job may run, stored with the job; it
                overrides the job's `Job.time_limit` (``math.inf``: no limit). None (the
                default): the job's limit when it runs. A limit on the work, not on this
                call: bound the call itself with `trio.move_on_after`.
            headers: string metadata stored with the job (trace ids, tenant, origin), read
                by the function as `JobContext.headers`. Names starting with
                ``taquba_jobs.`` are the runner's own.

        Raises:
            UnknownJob: ``job`` is not registered with this runner (a `taquba.UsageError`).
            ReservedHeader: a ``headers`` name starts with ``taquba_jobs.``; nothing was
                enqueued.
            taquba.TypeMismatch: ``value`` does not match the job's input type.
            InputMismatch: ``idempotency_key`` is bound to another job or input.
            taquba.InvalidArgument: an invalid ``idempotency_key``, ``time_limit``,
                ``headers`` (not a mapping of str to str) or queue option (``priority``,
                ``delay``, ``run_at``, ``max_attempts``).
            taquba.DataError: the stored idempotency record of the key cannot be read.
        """
        self._known(job)
        stored = _check_headers(headers)
        payload = job.encode_input(value)
        stored[HEADER_JOB] = job.name
        stored[HEADER_FORMAT] = str(FORMAT_VERSION)
        if time_limit is not None:
            checked = check_time_limit(time_limit)
            stored[HEADER_TIME_LIMIT] = encode_time_limit(
                checked if checked is not None else math.inf
            )
        options: dict[str, Any] = {
            "priority": priority,
            "delay": delay,
            "run_at": run_at,
            "max_attempts": max_attempts if max_attempts is not None else job.max_attempts,
        }
        if idempotency_key is None:
            result = await self._queue.enqueue(self._queue_name, payload, headers=stored, **options)
            return JobHandle(self, job, result.id, newly_submitted=True)
        if (
            not isinstance(idempotency_key, str)  # pyright: ignore[reportUnnecessaryIsInstance]
            or not 1 <= len(idempotency_key) <= _MAX_KEY_LENGTH
        ):
            raise InvalidArgument(
                "idempotency_key", idempotency_key, "must be a str of 1 to 1024 characters"
            )
        stored[HEADER_KEY] = idempotency_key
        key = dedup_key(self._queue_name, idempotency_key)
        digest = input_hash(job.name, payload)
        for _ in range(_SUBMIT_ROUNDS):
            current = await self._queue.kv_get(key)
            if current is not None:
                record = decode_dedup(current)
                if record.input_hash != digest:
                    raise InputMismatch(idempotency_key, record.job_id)
                if await self._exists(record.job_id):
                    return JobHandle(self, job, record.job_id, newly_submitted=False)
                # A stale record: its job and result are gone (e.g. a sweep that stopped
                # between the result and the record). Replace it, compare-and-set.
            job_id = self._queue.next_job_id()
            new = encode_dedup(DedupRecord(job_id, job.name, digest))
            try:
                await self._queue.enqueue(
                    self._queue_name,
                    payload,
                    job_id=job_id,
                    headers=stored,
                    kv_writes={key: new},
                    kv_expect={key: current},
                    **options,
                )
            except KvConflict:
                continue  # a concurrent submission (or sweep) changed the record: re-read
            return JobHandle(self, job, job_id, newly_submitted=True)
        raise JobsError(  # pragma: no cover - needs 32 lost races in a row
            f"could not settle the submission of idempotency key {idempotency_key!r}"
        )

    async def _exists(self, job_id: str) -> bool:
        """Whether the job still exists or has a stored result (checked in that order)."""
        if await self._queue.get_job(job_id) is not None:
            return True
        return await self._queue.store.get_blob(self.result_path(job_id)) is not None

    def handle(self, job: Job[Any, OutT], job_id: str) -> JobHandle[OutT]:
        """A handle for a job submitted earlier (e.g. by a previous process), by its id."""
        return JobHandle(self, job, job_id, newly_submitted=False)

    async def cancel(self, job_id: str) -> CancelOutcome:
        """Cancel a job.

        A pending or scheduled job is removed and its outcome recorded as cancelled
        (`CancelOutcome.REMOVED`). A running job is asked to stop
        (`CancelOutcome.REQUESTED`): an interruptible job is cancelled at its next
        checkpoint, other jobs see `JobContext.cancel_requested`; if the job stops, its
        outcome is cancelled, if it finishes anyway, its result stands. A finished or
        unknown job is left alone (`CancelOutcome.NOT_FOUND`).
        """
        record = await self._queue.get_job(job_id)
        if (
            record is not None
            and record.queue_name == self._queue_name
            and record.status in (JobStatus.PENDING, JobStatus.SCHEDULED)
        ):
            # Record the cancellation before the queue's cancel wakes the waiters, so they find
            # it. If a worker claims the job meanwhile, it finds this outcome and settles the
            # job as cancelled without running it (or, already running, is asked to stop and
            # its own outcome loses to this one: the first outcome stands).
            await self._store_outcome(
                self._terminal(record, "cancelled", "taquba_jobs.JobCancelled", None), record
            )
        outcome = await self._queue.cancel(job_id)
        if outcome is CancelOutcome.REMOVED and record is not None and record.attempts > 0:
            await self._discard_state(job_id)  # an earlier attempt may have staged some
        return outcome

    # ---------------------------------------------------------------- outcomes in storage

    async def _read_result(self, job_id: str) -> ResultRecord | None:
        raw = await self._queue.store.get_blob(self.result_path(job_id))
        return decode_result(raw) if raw is not None else None

    async def _probe(self, job_id: str) -> ResultRecord | _Gone | None:
        """The job's outcome, `_GONE` if it has none and never will, None if still running.

        The queue record is read before the blob: a job's result blob is written before its
        settlement removes the record, so "no record, then no blob" really means gone.
        """
        job = await self._queue.get_job(job_id)
        result = await self._read_result(job_id)
        if result is not None:
            return result
        if job is None or job.status is JobStatus.DONE:
            return _GONE
        if job.status is JobStatus.DEAD:
            return _dead_lettered(job)
        return None

    async def _await_outcome(self, job_id: str) -> ResultRecord:
        """Wait for the job's outcome: the stored one, or what its end in the queue says.

        One read when the outcome is already stored. Otherwise the wait ends on whichever
        comes first: the outcome a runner of this process records (delivered with the wake:
        no read), or the queue's end of the job (`Queue.wait_for_completion`: one read in the
        queue, then one of the result blob), which covers the ends no runner records.
        """
        validate_job_id(job_id)
        slot = self._registry.acquire(job_id)  # before the read: no outcome slips between
        try:
            stored = await self._read_result(job_id)
            if stored is not None:
                return stored
            end = await self._wait_for_end(job_id, slot)
            if isinstance(end, ResultRecord):
                return end
            stored = await self._read_result(job_id)
            if stored is not None:
                return stored
            if isinstance(end, JobRecord) and end.status is JobStatus.DEAD:
                return _dead_lettered(end)
            if isinstance(end, _Gone):
                raise ResultNotFound(job_id)
            raise ResultNotFound(
                job_id,
                f"job {job_id} ended without a stored outcome: it was cancelled with "
                "taquba.Queue.cancel (not JobRunner.cancel), or retention swept it (its "
                "result, or its dead-lettered queue record) before it was read",
            )
        finally:
            self._registry.release(job_id, slot)

    async def _wait_for_end(
        self, job_id: str, slot: _Slot
    ) -> ResultRecord | JobRecord | _Gone | None:
        """Wait for the slot (an in-process outcome) or the queue's end of the job.

        Returns the in-process outcome, else what `Queue.wait_for_completion` returned (the
        done or dead record, or None), or `_GONE` if the job did not exist when it started.
        Raises the error the slot carries (the serving runner failed) or the queue's failure.
        """
        ended: list[JobRecord | _Gone | None] = []
        failure: list[TaqubaError] = []
        async with trio.open_nursery() as nursery:

            async def watch_queue() -> None:
                try:
                    ended.append(await self._queue.wait_for_completion(job_id))
                except JobNotFound:
                    ended.append(_GONE)  # finished (and acked) meanwhile, or never existed
                except TaqubaError as exc:  # the queue stopped: raised below, not in a group
                    failure.append(exc)
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_queue)
            await slot.event.wait()
            nursery.cancel_scope.cancel()
        if slot.record is not None:
            return slot.record
        if slot.error is not None:
            raise slot.error
        if failure:
            raise failure[0]
        return ended[0]

    def _terminal(
        self,
        record: JobRecord,
        status: Literal["succeeded", "failed", "cancelled"],
        error_type: str | None,
        message: str | None,
        *,
        value: bytes | None = None,
        permanent: bool = True,
    ) -> ResultRecord:
        return ResultRecord(
            job_id=record.id,
            job_name=record.headers.get(HEADER_JOB, ""),
            status=status,
            value=value,
            error_type=error_type,
            error_message=message,
            permanent=permanent,
            attempts=record.attempts,
            finished_at=self._clock.now_ms(),
        )

    async def _store_outcome(self, outcome: ResultRecord, record: JobRecord) -> ResultRecord:
        """Persist ``outcome`` unless the job already has one; return the one that stands.

        The first outcome written wins (a conditional create), so a job's result never
        changes once a caller could have seen it, even if a stale delivery finishes later.
        """
        path = self.result_path(outcome.job_id)
        if not await self._queue.store.put_blob(path, encode_result(outcome), create_only=True):
            existing = await self._read_result(outcome.job_id)
            if existing is not None:
                outcome = existing
            else:  # pragma: no cover - deleted between the two calls (a sweep)
                await self._queue.store.put_blob(path, encode_result(outcome))
        await self._after_outcome(outcome, record)
        self._counts[outcome.status] += 1
        taquba.count_event(
            self._queue, "jobs_results", {"queue": self.queue_name, "status": outcome.status}
        )
        return outcome

    async def _after_outcome(self, outcome: ResultRecord, record: JobRecord) -> None:
        """Write the retention marker (idempotent: named from the outcome) and notify."""
        if self._retention_ms is not None:
            name = marker_name(outcome.finished_at, outcome.job_id)
            marker = Marker(outcome.job_id, record.headers.get(HEADER_KEY))
            await self._queue.store.put_blob(
                f"{self._prefix}/{MARKER_DIR}/{name}", encode_marker(marker)
            )
        self._registry.resolve(outcome)

    # ---------------------------------------------------------------- serving

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run submitted jobs until `shutdown` is called or the surrounding scope is cancelled.

        Runs the worker loop (a `taquba.Worker` on ``queue_name`` with this runner's
        ``concurrency``, ``poll_interval`` and ``shutdown_grace``) and, with result retention,
        the sweeper (its first sweep runs at once). ``task_status.started()`` is called once
        jobs are being claimed, so ``await nursery.start(runner.serve)`` returns when the
        runner is ready. One `serve` at a time per runner.

        `shutdown` is the graceful stop: no new claims; the jobs in flight get
        ``shutdown_grace`` seconds to finish, then the ones still running are cancelled and
        handed back to the queue; the sweeper stops; `serve` returns. A runner that was shut
        down (also before `serve` started) returns at once when served. Cancelling the scope
        around `serve` is the hard stop: the jobs in flight are cancelled and handed back, and
        `serve` raises `trio.Cancelled`. A job cancelled on its last attempt either way is
        recorded as failed with ``error_type="taquba_jobs.WorkerStopped"`` (the queue
        dead-letters it).

        Returns:
            None, after `shutdown` once the jobs in flight have finished or been handed back.

        Error handling: a failing job is the queue's business (retried with its backoff, or
        recorded as failed); a transient storage error on the claim path is retried with
        backoff and shown by `taquba.Queue.health`; a failed retention sweep is logged and
        retried at the next ``sweep_interval``. A fatal queue error (`taquba.Fenced`,
        `taquba.QueueClosed`, `taquba.StorageFatal`, a permanent `taquba.StorageError`) ends
        `serve`: the jobs in flight are cancelled, handles still waiting on this queue raise
        the same error, and `serve` raises it as itself, not inside an exception group.

        Raises:
            taquba.UsageError: this runner is already serving (one `serve` at a time).
        """
        if self._serving:
            raise UsageError("this JobRunner is already serving (one serve at a time)")
        self._serving = True
        failure: list[TaqubaError] = []
        try:
            if self._worker.shutting_down:  # shutdown is sticky: nothing to start
                task_status.started()
                return
            async with trio.open_nursery() as nursery:
                await nursery.start(self._work, failure, nursery.cancel_scope)
                if self._retention_ms is not None:
                    nursery.start_soon(self._sweep_loop)
                task_status.started()
        finally:
            self._serving = False
        if failure:
            self._registry.fail_all(failure[0])
            raise failure[0]

    async def _work(
        self,
        failure: list[TaqubaError],
        scope: trio.CancelScope,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await self._worker.serve(task_status=task_status)
        except TaqubaError as exc:  # the queue failed (fenced, closed, storage): stop serving
            failure.append(exc)
        finally:
            scope.cancel()  # stop the sweeper with the worker

    def shutdown(self) -> None:
        """Stop `serve` gracefully: no new claims; the jobs in flight get ``shutdown_grace``.

        Idempotent and sticky: once called, `serve` (running or later) returns after the jobs
        in flight, or at once if none run; build a new runner to serve again. Safe before
        `serve` starts, from any task of the same trio run; from another thread, use
        ``trio.from_thread.run_sync(runner.shutdown)``. Submitting and awaiting still work on
        a runner that was shut down: the jobs wait in the queue for a runner that serves.
        """
        self._worker.shutdown()

    @property
    def shutting_down(self) -> bool:
        """Whether `shutdown` has been called."""
        return self._worker.shutting_down

    async def _handle(self, record: JobRecord, lease: LeaseHandle) -> Effects | None:
        """The queue handler: run one delivery of a job and record its terminal outcome."""
        existing = await self._read_result(record.id)
        if existing is not None:
            # An earlier delivery recorded the outcome but did not settle (a crash, a lost
            # lease): do not run the job again, settle it as recorded.
            await self._after_outcome(existing, record)
            return self._settle(existing, record)
        job = self._jobs.get(record.headers.get(HEADER_JOB, ""))
        if record.cancel_requested:
            outcome = self._terminal(record, "cancelled", "taquba_jobs.JobCancelled", None)
        elif record.headers.get(HEADER_FORMAT, str(FORMAT_VERSION)) != str(FORMAT_VERSION):
            outcome = self._terminal(
                record,
                "failed",
                "taquba_jobs.SerializationError",
                f"unsupported payload format {record.headers.get(HEADER_FORMAT)!r}",
            )
        elif job is None:
            outcome = self._terminal(
                record,
                "failed",
                "taquba_jobs.UnknownJob",
                f"no job named {record.headers.get(HEADER_JOB)!r} is registered",
            )
        else:
            try:
                value = job.decode_input(record.payload)
                limit = record.headers.get(HEADER_TIME_LIMIT)
                time_limit = decode_time_limit(limit) if limit is not None else job.time_limit
            except (SerializationError, DataError) as exc:
                outcome = self._terminal(record, "failed", _failure_kind(exc), str(exc))
            else:
                outcome = await self._execute(job, value, record, lease, time_limit)
        return self._settle(await self._store_outcome(outcome, record), record)

    async def _execute(
        self,
        job: Job[Any, Any],
        value: object,
        record: JobRecord,
        lease: LeaseHandle,
        time_limit: float | None,
    ) -> ResultRecord:
        """Call the job function; return its terminal outcome, or raise to retry it.

        While the function runs, its lease is renewed (`_keep_lease`); a cancel request
        interrupts it (if interruptible) and ``time_limit`` cancels it in any case.
        """
        ctx = JobContext(self, job, record, lease, time_limit)
        results: list[object] = []
        errors: list[Exception] = []
        interrupt = trio.CancelScope()  # cancelled by a cancel request
        limit = trio.CancelScope()  # cancelled at the time limit
        self._executions += 1
        self._in_flight += 1
        try:
            async with trio.open_nursery() as nursery:

                async def run() -> None:
                    if time_limit is not None:
                        limit.deadline = trio.current_time() + time_limit
                    try:
                        with interrupt, limit:
                            results.append(await job.fn(ctx, value))
                    except Exception as exc:
                        errors.append(exc)
                    finally:
                        nursery.cancel_scope.cancel()  # stop the lease keeper and the watcher

                async def interrupt_on_cancel() -> None:
                    await lease.wait_cancel_requested()
                    interrupt.cancel()

                nursery.start_soon(self._keep_lease, lease)
                if job.interruptible:
                    nursery.start_soon(interrupt_on_cancel)
                nursery.start_soon(run)
        except BaseException:
            # The worker is stopping under us (shutdown grace, outer cancel). On the last
            # attempt the queue dead-letters the job: record why, so waiters learn it.
            # Otherwise the job is handed back for a retry: keep what it staged.
            with trio.move_on_after(_STOP_GRACE, shield=True):
                try:
                    if record.attempts >= record.max_attempts:
                        await self._store_outcome(
                            self._terminal(
                                record,
                                "failed",
                                "taquba_jobs.WorkerStopped",
                                "the worker stopped before the job finished",
                                permanent=False,
                            ),
                            record,
                        )
                        await self._discard_state(record.id)
                    else:
                        await self._commit_state(ctx, lease)
                except (TaqubaError, JobsError) as exc:
                    log.warning("could not record the stop of job %s: %s", record.id, exc)
            raise
        finally:
            self._in_flight -= 1
        last = record.attempts >= record.max_attempts
        attempt = f"attempt {record.attempts} of {record.max_attempts}"
        if lease.expires_at is None:
            # The lease expired while the function ran (the loop stalled past it) and the
            # reaper ended the claim: before the last attempt it requeued the job, on the
            # last one it dead-lettered it, and waiters learnt that from the queue.
            if last:
                log.warning(
                    "job %s (%s) outlived its lease on its last attempt (%s): the queue "
                    "dead-lettered it and will not deliver it again%s",
                    record.id,
                    job.name,
                    attempt,
                    "; its late result is discarded" if results else "",
                )
                await self._discard_state(record.id)
                raise _DeliveryLost(f"the lease on job {record.id} expired on its last attempt")
            log.warning(
                "job %s (%s) outlived its lease on %s: the queue delivers it again",
                record.id,
                job.name,
                attempt,
            )
            if interrupt.cancelled_caught or isinstance(
                errors[0] if errors else None, JobCancelled
            ):
                # Stopped by the lease loss itself, not a cancel request: nothing to record.
                raise _DeliveryLost(f"the lease on job {record.id} expired while it ran")
            # Otherwise its outcome is recorded as usual: a late result or permanent failure
            # is stored first and the redelivery settles as recorded without running again.
        if results:
            try:
                encoded = job.encode_output(results[0])
            except SerializationError as exc:
                return self._terminal(record, "failed", _failure_kind(exc), str(exc))
            return self._terminal(record, "succeeded", None, None, value=encoded)
        error = errors[0] if errors else None
        if limit.cancelled_caught:
            assert time_limit is not None
            message = f"timed out after {time_limit:g} s"
            if last:
                log.warning(
                    "job %s (%s) %s on its last %s: it fails",
                    record.id,
                    job.name,
                    message,
                    attempt,
                )
                return self._terminal(
                    record, "failed", "taquba_jobs.TimeLimitExceeded", message, permanent=False
                )
            log.warning(
                "job %s (%s) %s on %s: the queue retries it",
                record.id,
                job.name,
                message,
                attempt,
            )
            await self._clear_state_for_retry(ctx, lease)
            # Nacked: last_error "TimeLimitExceeded: ...", with the staged state.
            raise self._retry(ctx, lease, TimeLimitExceeded(message))
        if interrupt.cancelled_caught or isinstance(error, JobCancelled):
            message = error.message if isinstance(error, JobCancelled) else None
            return self._terminal(record, "cancelled", "taquba_jobs.JobCancelled", message)
        assert error is not None
        if isinstance(error, PermanentFailure):
            cause = error.__cause__
            kind = _qualified(cause) if cause is not None else _qualified(error)
            return self._terminal(record, "failed", kind, error.reason)
        if isinstance(error, job.permanent_errors):
            return self._terminal(record, "failed", _qualified(error), str(error))
        if last:
            return self._terminal(record, "failed", _qualified(error), str(error), permanent=False)
        await self._clear_state_for_retry(ctx, lease)
        retry = self._retry(ctx, lease, error)
        if retry is error:
            raise error  # retried by the queue (nack with backoff)
        raise retry from error  # the same nack, with the staged state in its transaction

    async def _keep_lease(self, lease: LeaseHandle) -> None:
        """Keep the lease alive while the job runs: top it up every third of its length.

        Renewal is in-process (a lease is process state: no write). It never shortens a
        lease the job extended further itself (``ctx.lease.ensure_at_least``), and stops
        once the lease is lost (the reaper ended the claim, or the queue stopped).
        """
        length = self._queue.config(self._queue_name).lease_duration
        length_ms = math.ceil(length * 1000)
        while True:
            await trio.sleep(length / 3)
            current = lease.expires_at
            if current is None:
                return
            if current < self._queue.clock.now_ms() + length_ms:
                try:
                    lease.renew(length)
                except ClaimLost:
                    return

    # ---------------------------------------------------------------- per-job state

    async def _commit_state(self, ctx: JobContext, lease: LeaseHandle) -> None:
        """Store what the attempt staged, before the retry it ends in is settled.

        Durable before the queue's nack, so the retried attempt (or the delivery after a
        crash, which counts as the retry) reads it. Skipped once the lease is lost: the
        queue has handed the job out again, and the state belongs to that delivery. A
        storage failure is logged and the retry goes ahead with the state as it was.
        """
        staged = ctx._staged  # pyright: ignore[reportPrivateUsage]
        if staged is None or lease.expires_at is None:
            return
        key = state_key(self._queue_name, ctx.job_id)
        try:
            if staged[0] is None:
                await self._queue.kv_delete(key)
            else:
                await self._queue.kv_put(key, encode_state(StateRecord(ctx.attempt, staged[0])))
        except _FATAL:
            raise
        except TaqubaError as exc:
            log.warning("could not store the state of job %s for its retry: %s", ctx.job_id, exc)

    def _retry(self, ctx: JobContext, lease: LeaseHandle, error: BaseException) -> BaseException:
        """What to raise so the queue retries this attempt, with the state it staged.

        With a staged value (and the lease still held), a `taquba.RetryLater` whose KV write
        commits in the nack's own transaction: the state is stored exactly when the retry is
        recorded, never without it. Its reason is what the worker would record for ``error``
        itself, and its ``retry_after`` of 0 leaves the queue's backoff as it is (a
        `RetryLater` raised by the function keeps its own reason, delay and writes).
        """
        staged = ctx._staged  # pyright: ignore[reportPrivateUsage]
        if staged is None or staged[0] is None or lease.expires_at is None:
            return error
        key = state_key(self._queue_name, ctx.job_id)
        value = encode_state(StateRecord(ctx.attempt, staged[0]))
        if isinstance(error, RetryLater):  # the function's own: keep its reason and delay
            writes = {**error.kv_writes, key: value}
            return RetryLater(error.reason, retry_after=error.retry_after, kv_writes=writes)
        text = str(error)
        reason = f"{type(error).__name__}: {text}" if text else type(error).__name__
        return RetryLater(reason, retry_after=0.0, kv_writes={key: value})

    async def _clear_state_for_retry(self, ctx: JobContext, lease: LeaseHandle) -> None:
        """A staged clear (``stage_state(None)``) deletes the state before the retry's nack.

        A nack can write KV entries but not delete them, so a clear is the one staging that
        goes first; a crash in between leaves the state cleared for an attempt that did end.
        """
        staged = ctx._staged  # pyright: ignore[reportPrivateUsage]
        if staged is not None and staged[0] is None:
            await self._commit_state(ctx, lease)

    async def _discard_state(self, job_id: str) -> None:
        """Delete a job's state outside a settlement (best effort: a failure is logged)."""
        key = state_key(self._queue_name, job_id)
        try:
            if await self._queue.kv_get(key) is not None:
                await self._queue.kv_delete(key)
        except _FATAL:
            raise
        except TaqubaError as exc:
            log.warning("could not delete the state of job %s: %s", job_id, exc)

    def _settle(self, outcome: ResultRecord, record: JobRecord) -> Effects | None:
        """How the queue settles a job with this recorded outcome: ack, or dead-letter.

        Either way the job's state is deleted in the settlement's transaction, if an earlier
        attempt may have staged some (never on a first attempt: no extra write).
        """
        cleanup = (
            Effects(kv_deletes=[state_key(self._queue_name, record.id)])
            if record.attempts > 1
            else None
        )
        if outcome.status == "failed":
            raise PermanentFailure(
                f"{outcome.error_type}: {outcome.error_message}", effects=cleanup
            )
        return cleanup

    # ---------------------------------------------------------------- retention

    async def sweep_results_now(self) -> SweepReport:
        """Delete expired results now; `serve` calls this every ``sweep_interval``.

        Lists only the expired markers (see the design notes in the guide), then per job
        deletes the dedup record (if it still names the job), the result blob, then the
        marker, so an interrupted sweep is finished by the next one.

        Raises:
            taquba.UsageError: the runner has no ``result_retention``.
        """
        if self._retention_ms is None:
            raise UsageError("this runner has no result_retention: there is nothing to sweep")
        cutoff = self._clock.now_ms() - self._retention_ms
        cursor = expired_start_after(cutoff)
        if cursor is None:
            return SweepReport(0, 0)
        directory = f"{self._prefix}/{MARKER_DIR}"
        listed = swept = 0
        while True:
            names = await self._queue.store.list_blobs(
                directory, start_after=cursor, limit=_SWEEP_PAGE
            )
            listed += len(names)
            for name in names:
                parsed = parse_marker_name(name)
                if parsed is None:
                    log.warning("skipping an unrecognised retention marker %s/%s", directory, name)
                    continue
                finished_at, job_id = parsed
                if finished_at >= cutoff:  # pragma: no cover - excluded by the listing
                    continue
                await self._sweep_one(f"{directory}/{name}", job_id)
                swept += 1
            if len(names) < _SWEEP_PAGE:
                return SweepReport(listed, swept)
            cursor = names[-1]

    async def _sweep_one(self, marker_path: str, job_id: str) -> None:
        raw = await self._queue.store.get_blob(marker_path)
        key: str | None = None
        if raw is not None:
            try:
                key = decode_marker(raw).idempotency_key
            except DataError as exc:
                log.warning("unreadable retention marker %s: %s", marker_path, exc)
        if key is not None:
            kv_key = dedup_key(self._queue_name, key)
            current = await self._queue.kv_get(kv_key)
            if current is not None:
                try:
                    bound = decode_dedup(current).job_id
                except DataError:
                    bound = None
                if bound == job_id:  # a newer submission may have taken the key over
                    await self._queue.kv_compare_and_set(kv_key, current, None)
        await self._discard_state(job_id)  # left by a job the queue dead-lettered itself
        await self._queue.store.delete_blob(self.result_path(job_id))
        await self._queue.store.delete_blob(marker_path)

    async def _sweep_loop(self) -> None:
        while True:
            try:
                report = await self.sweep_results_now()
                if report.swept:
                    log.debug("result retention swept %d jobs", report.swept)
            except _FATAL:
                return  # the worker loop reports the queue's failure
            except (TaqubaError, JobsError) as exc:
                log.error("result retention sweep failed: %s", exc)
            await trio.sleep(self._sweep_interval)

    def __repr__(self) -> str:
        return f"<JobRunner {self._queue_name!r} jobs={sorted(self._jobs)}>"


def _dead_lettered(job: JobRecord) -> ResultRecord:
    """The outcome of a job the queue dead-lettered without a recorded outcome.

    A lease that expired on the last attempt, or a crash during it: the queue's reason is the
    message, and the dead-letter time the finish time.
    """
    return ResultRecord(
        job_id=job.id,
        job_name=job.headers.get(HEADER_JOB, ""),
        status="failed",
        value=None,
        error_type="taquba.DeadLettered",
        error_message=job.last_error or "dead-lettered by the queue",
        permanent=False,
        attempts=job.attempts,
        finished_at=job.failed_at or 0,
    )


def _failure_kind(exc: SerializationError | DataError) -> str:
    """The stored ``error_type`` of an input, output or job header that does not decode.

    Stable names of failure kinds, not Python paths: ``taquba_jobs.TypeMismatch`` for a value
    that does not fit its type, ``taquba_jobs.SerializationError`` for anything else that
    cannot be encoded or read (the codec's other errors, a malformed job header). Result
    records written by earlier versions use the same two names.
    """
    if isinstance(exc, TypeMismatch):
        return "taquba_jobs.TypeMismatch"
    return "taquba_jobs.SerializationError"
