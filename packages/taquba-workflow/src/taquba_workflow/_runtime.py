"""The workflow runtime: submission, step execution, cancellation, status and retention."""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

import trio

from taquba import (
    CancelOutcome,
    Effects,
    EnqueueRequest,
    Fenced,
    JobNotFound,
    JobRecord,
    JobStatus,
    KvConflict,
    LeaseHandle,
    PermanentFailure,
    QueueClosed,
    RetryLater,
    StorageFatal,
    TaqubaError,
    run_worker_concurrent,
    validate_queue_name,
)

from . import _keys as keys  # pyright: ignore[reportPrivateUsage]
from . import _records as records  # pyright: ignore[reportPrivateUsage]
from ._errors import (
    InputMismatch,
    PermanentStepError,
    ReservedHeader,
    StepError,
    TransientStepError,
    WorkflowDataError,
    WorkflowError,
    WorkflowUsageError,
)
from ._memo import MemoStore, TerminalMarker
from ._types import (
    Cancel,
    Continue,
    ContinueAfter,
    Fail,
    RunOutcome,
    RunSpec,
    RunState,
    RunStatus,
    Step,
    StepOutcome,
    SubmitOutcome,
    Succeed,
    TerminalStatus,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping

    from taquba import Clock, Queue, Store

__all__ = [
    "Hook",
    "HookFunction",
    "Runner",
    "RuntimeStatistics",
    "StepFunction",
    "StepRunner",
    "SweepReport",
    "TerminalHook",
    "WorkflowRuntime",
    "read_run_outcome",
]

log = logging.getLogger("taquba_workflow")

_CONTROL_CANCEL = "cancel"
_CONTROL_PRIORITY = 0  # control jobs are claimed before any step
_SWEEP_PAGE = 256
_MAX_SWEEP_INTERVAL = 3600.0
_FATAL = (Fenced, QueueClosed, StorageFatal)
_STATE_OF = {
    TerminalStatus.SUCCEEDED: RunState.SUCCEEDED,
    TerminalStatus.FAILED: RunState.FAILED,
    TerminalStatus.CANCELLED: RunState.CANCELLED,
}


StepFunction: TypeAlias = Callable[[Step], Awaitable[StepOutcome]]
"""An async function running one step and returning what happens to the run next."""


@runtime_checkable
class StepRunner(Protocol):
    """An object whose ``run_step`` method runs steps (an alternative to a plain function)."""

    async def run_step(self, step: Step) -> StepOutcome:
        """Run one step; return `Continue`, `ContinueAfter`, `Succeed`, `Fail` or `Cancel`."""
        ...


Runner: TypeAlias = StepFunction | StepRunner
"""What `WorkflowRuntime` accepts as its step runner.

Return a `StepOutcome`. Raise `PermanentStepError` to fail the run now; raise
`TransientStepError` (or any other exception) to retry the step with the queue's backoff. On
the step's last attempt a transient error fails the run.
"""

HookFunction: TypeAlias = Callable[[RunOutcome], Awaitable[None]]
"""An async function told how a run ended."""


@runtime_checkable
class TerminalHook(Protocol):
    """An object whose ``on_termination`` method is told how each run ended."""

    async def on_termination(self, outcome: RunOutcome) -> None:
        """React to a run's end (at least once per run; make it idempotent)."""
        ...


Hook: TypeAlias = HookFunction | TerminalHook
"""What `WorkflowRuntime` accepts as its terminal hook.

Called with the `RunOutcome` of every run's end, before that end commits: at least once per
run, so make it idempotent. Raising retries the ending step (on its last attempt the end
commits anyway and the failure is logged).
"""


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one memo-retention sweep did."""

    listed: int
    """Terminal markers the sweep listed: only expired ones, never the retained."""
    runs_cleared: int
    """Runs whose memos were deleted (and whose marker was removed)."""
    blobs_deleted: int
    """Memo entries, step-output records and outcome blobs deleted."""


@dataclass(frozen=True, slots=True)
class RuntimeStatistics:
    """A snapshot of a runtime's in-process state."""

    steps_in_flight: int
    """Steps (and control jobs) being processed by this runtime now."""
    submit_locks: int
    """Run ids with a submission in progress (per-run-id locks currently held or awaited)."""


@dataclass(slots=True)
class _RunLock:
    lock: trio.Lock
    users: int = 0


def _resolve_runner(runner: Runner) -> StepFunction:
    if isinstance(runner, StepRunner):
        return runner.run_step
    if callable(runner):
        return runner
    raise WorkflowUsageError("runner must be an async callable or an object with run_step()")


def _resolve_hook(hook: Hook | None) -> HookFunction | None:
    if hook is None:
        return None
    if isinstance(hook, TerminalHook):
        return hook.on_termination
    if callable(hook):
        return hook
    raise WorkflowUsageError("hook must be an async callable or an object with on_termination()")


def _positive(value: float | None, name: str, *, minimum: float = 0.0) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= minimum:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise WorkflowUsageError(f"{name} must be a number of seconds above {minimum}")
    return float(value)


def _user_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if not k.startswith(keys.RESERVED_HEADER_PREFIX)}


def _run_at(at_ms: int) -> datetime:
    # Half a millisecond past ``at_ms`` so the queue's ``floor(timestamp * 1000)`` lands on it.
    return datetime.fromtimestamp(at_ms // 1000, UTC) + timedelta(
        microseconds=(at_ms % 1000) * 1000 + 500
    )


def _is_bytes(value: object) -> bool:
    return isinstance(value, (bytes, bytearray, memoryview))


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _check_outcome(outcome: object) -> str | None:
    """What is wrong with what a runner returned, or None if it is a valid `StepOutcome`."""
    match outcome:
        case Continue(payload) | ContinueAfter(_, payload) if not _is_bytes(payload):
            return f"a payload of type {type(payload).__name__}, expected bytes"
        case Succeed(result) if not _is_bytes(result):
            return f"a result of type {type(result).__name__}, expected bytes"
        case Fail(error) if not _is_str(error):
            return f"an error of type {type(error).__name__}, expected str"
        case Cancel(reason) if reason is not None and not _is_str(reason):
            return f"a reason of type {type(reason).__name__}, expected str or None"
        case Continue() | ContinueAfter() | Succeed() | Fail() | Cancel():
            return None
        case _:
            return f"{type(outcome).__name__}, expected a StepOutcome"


def _normalised(outcome: StepOutcome) -> StepOutcome:
    """The outcome with bytes-like payloads as `bytes` (what records and the queue store)."""
    match outcome:
        case Continue(payload):
            return Continue(bytes(payload))
        case ContinueAfter(delay, payload):
            return ContinueAfter(delay, bytes(payload))
        case Succeed(result):
            return Succeed(bytes(result))
        case _:
            return outcome


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def read_run_outcome(
    store: Store, run_id: str, *, memo_prefix: str = keys.DEFAULT_MEMO_PREFIX
) -> RunOutcome | None:
    """Read a run's terminal outcome from the store's blobs, from any process.

    The runtime writes ``<memo_prefix>/outcomes/<run_id>`` just before the terminal settlement
    commits (like the terminal hook, it may be written again by a redelivery whose outcome then
    wins). Another process that cannot open the queue database (one writer per store) polls
    this. Returns None while the run has no outcome (or after memo retention removed it). A
    resubmitted run id keeps its previous outcome here until the new run ends: compare
    ``finished_at_ms`` with the submission time if that matters.

    Raises:
        WorkflowDataError: the blob cannot be decoded.
    """
    prefix = keys.validate_memo_prefix(memo_prefix)
    raw = await store.get_blob(keys.outcome_path(prefix, keys.validate_run_id(run_id)))
    return None if raw is None else records.decode_outcome_blob(raw)[0]


class WorkflowRuntime:
    """Durable multi-step runs on a taquba queue.

    A run is a sequence of steps. Each step is a job on ``queue_name``; the runner returns what
    happens next (`Continue`, `ContinueAfter`, `Succeed`, `Fail`, `Cancel`), and that decision
    commits atomically with the step's acknowledgement: the next step's job exists if and only
    if the step's settlement committed. Steps are delivered at least once; memoize expensive
    side effects with `Step.memo`.

        runtime = WorkflowRuntime(queue, run_step, on_done, memo_retention=7 * 86400)
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.run)
            outcome = await runtime.submit(RunSpec(input=b"...", run_id="order-42"))

    State: the active run's record, a pending cancellation and the committed outcome live in
    the queue database's user KV (``workflow/<queue_name>/...``); memos, replay records,
    outcome blobs and retention markers live in the store's blobs under ``memo_prefix``.

    Args:
        queue: the open queue.
        runner: the step runner (see `Runner`).
        hook: told how each run ended (see `TerminalHook`), before that end commits; at least
            once per run.
        store: where memos live; default the queue's store.
        queue_name: the queue steps run on (one runtime per queue name).
        concurrency: steps processed at once by `run`.
        poll_interval: the longest idle wait of `run` between claim attempts, in seconds.
        memo_prefix: the blob prefix of memos, replay records, outcomes and markers; use a
            distinct one per runtime sharing a store.
        memo_retention: delete a run's memos this many seconds after it ended (None: keep
            them forever).
        sweep_interval: seconds between retention sweeps (default ``memo_retention``, at most
            one hour).
        step_output_replay: persist every outcome the runner returns before applying it, and
            replay it instead of calling the runner when the step is delivered again.
        clock: the clock of every timestamp the runtime writes; default the queue's.
    """

    def __init__(
        self,
        queue: Queue,
        runner: Runner,
        hook: Hook | None = None,
        *,
        store: Store | None = None,
        queue_name: str = "workflow",
        concurrency: int = 16,
        poll_interval: float = 1.0,
        memo_prefix: str = keys.DEFAULT_MEMO_PREFIX,
        memo_retention: float | None = None,
        sweep_interval: float | None = None,
        step_output_replay: bool = False,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(concurrency, int) or concurrency < 1:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise WorkflowUsageError("concurrency must be a positive int")
        self._queue = queue
        self._runner = _resolve_runner(runner)
        self._hook = _resolve_hook(hook)
        self._store = store if store is not None else queue.store
        self._queue_name = validate_queue_name(queue_name)
        self._concurrency = concurrency
        self._poll_interval = _positive(poll_interval, "poll_interval") or 1.0
        self._memos = MemoStore(self._store, memo_prefix)
        self._retention = _positive(memo_retention, "memo_retention", minimum=0.0)
        if self._retention is not None and self._retention < 0.001:
            raise WorkflowUsageError("memo_retention must be at least one millisecond")
        default_interval = (
            min(self._retention, _MAX_SWEEP_INTERVAL) if self._retention is not None else None
        )
        self._sweep_interval = _positive(sweep_interval, "sweep_interval") or default_interval
        self._replay = bool(step_output_replay)
        self._clock = clock if clock is not None else queue.clock
        self._locks: dict[str, _RunLock] = {}
        self._in_flight = 0

    # ------------------------------------------------------------------------ properties

    @property
    def queue(self) -> Queue:
        """The queue the runtime runs on."""
        return self._queue

    @property
    def queue_name(self) -> str:
        """The queue steps run on."""
        return self._queue_name

    @property
    def memos(self) -> MemoStore:
        """The memo store (its prefix holds memos, replay records, outcomes and markers)."""
        return self._memos

    @property
    def clock(self) -> Clock:
        """The clock of every timestamp the runtime writes."""
        return self._clock

    def statistics(self) -> RuntimeStatistics:
        """A snapshot of the runtime's in-process state."""
        return RuntimeStatistics(self._in_flight, len(self._locks))

    # ---------------------------------------------------------------------------- keys

    def _run_key(self, run_id: str) -> bytes:
        return keys.run_key(self._queue_name, run_id)

    def _cancel_key(self, run_id: str) -> bytes:
        return keys.cancel_key(self._queue_name, run_id)

    def _outcome_key(self, run_id: str) -> bytes:
        return keys.outcome_key(self._queue_name, run_id)

    async def _read_run(self, run_id: str) -> records.RunRecord | None:
        raw = await self._queue.kv_get(self._run_key(run_id))
        return None if raw is None else records.decode_run(raw)

    async def _cancel_pending(self, record: records.RunRecord) -> bool:
        raw = await self._queue.kv_get(self._cancel_key(record.run_id))
        if raw is None:
            return False
        try:
            return records.decode_cancel_incarnation(raw) == record.incarnation
        except WorkflowDataError:
            log.error("undecodable cancellation request of run %s; honouring it", record.run_id)
            return True

    # -------------------------------------------------------------------------- submit

    @asynccontextmanager
    async def _run_lock(self, run_id: str) -> AsyncGenerator[None]:
        entry = self._locks.get(run_id)
        if entry is None:
            entry = self._locks[run_id] = _RunLock(trio.Lock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[run_id]

    async def submit(self, spec: RunSpec) -> SubmitOutcome:
        """Start a run, or recognise one already active; return once durable.

        The run record and step 0 commit in one transaction. Resubmitting the id of an active
        run with the same input (compared by SHA-256) is a no-op reported with
        ``newly_submitted=False``; with another input it raises `InputMismatch`. The check
        reads the durable run record, so it holds across restarts. A run that ended released
        its id: submitting it again starts a new run that shares the old run's memos (so it
        resumes from them). Submissions of distinct run ids proceed in parallel (the lock is
        per run id) and share the database's group commits.

        Raises:
            InvalidRunId: the run id is not 1 to 128 of ``[A-Za-z0-9_-]``.
            ReservedHeader: a header name starts with ``workflow.``.
            InputMismatch: the run is active with a different input.
        """
        if not isinstance(spec, RunSpec):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise WorkflowUsageError("submit takes a RunSpec")
        if not isinstance(spec.input, (bytes, bytearray, memoryview)):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise WorkflowUsageError(f"input must be bytes, not {type(spec.input).__name__}")
        payload = bytes(spec.input)
        run_id = (
            self._queue.next_job_id() if spec.run_id is None else keys.validate_run_id(spec.run_id)
        )
        headers = dict(spec.headers)
        for name, value in headers.items():
            if not isinstance(name, str) or not isinstance(value, str):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise WorkflowUsageError("headers must map str to str")
            if name.startswith(keys.RESERVED_HEADER_PREFIX):
                raise ReservedHeader(name)
        input_hash = hashlib.sha256(payload).hexdigest()
        key = self._run_key(run_id)
        async with self._run_lock(run_id):
            while True:
                existing = await self._read_run(run_id)
                if existing is not None:
                    if existing.input_hash != input_hash:
                        raise InputMismatch(run_id)
                    return SubmitOutcome(run_id, newly_submitted=False)
                job_id = self._queue.next_job_id()
                record = records.RunRecord(
                    run_id=run_id,
                    incarnation=job_id,
                    input_hash=input_hash,
                    submitted_at_ms=self._clock.now_ms(),
                    step=0,
                    job_id=job_id,
                    headers=headers,
                )
                try:
                    await self._queue.enqueue(
                        self._queue_name,
                        payload,
                        priority=spec.priority,
                        headers={**headers, keys.HEADER_RUN_ID: run_id, keys.HEADER_STEP: "0"},
                        max_attempts=spec.max_attempts_per_step,
                        job_id=job_id,
                        kv_writes={key: record.encode()},
                        kv_expect={key: None},
                    )
                except KvConflict:
                    continue  # created meanwhile (another runtime on this queue): compare
                return SubmitOutcome(run_id, newly_submitted=True)

    # ------------------------------------------------------------------ status, cancel

    async def status(self, run_id: str) -> RunStatus | None:
        """The run's state, or None if no run with this id is known.

        Read from the queue database, so it reflects runs of earlier processes too. An ended
        run reports its terminal state until memo retention (if set) forgets it.
        """
        run_id = keys.validate_run_id(run_id)
        record = await self._read_run(run_id)
        if record is not None:
            state = RunState.CANCELLING if await self._cancel_pending(record) else RunState.RUNNING
            return RunStatus(run_id, state, record.step)
        raw = await self._queue.kv_get(self._outcome_key(run_id))
        if raw is None:
            return None
        outcome = records.decode_outcome_record(raw)
        state = _STATE_OF[outcome.status]
        return RunStatus(run_id, state, outcome.final_step, outcome.error, outcome.finished_at_ms)

    async def outcome(self, run_id: str) -> RunOutcome | None:
        """The ended run's full outcome (with its result), or None while it is active.

        Reads the outcome blob (see `read_run_outcome`) once `status` reports an end.
        """
        status = await self.status(run_id)
        if status is None or not status.state.terminal:
            return None
        return await read_run_outcome(self._store, run_id, memo_prefix=self._memos.prefix)

    async def wait_finished(self, run_id: str) -> RunStatus | None:
        """Wait until the run has ended; return its final status (None if it is unknown).

        Follows the run's step jobs with `taquba.Queue.wait_for_completion`. Bound it with
        `trio.move_on_after`. A run whose step was dead-lettered outside the runtime (its lease
        expired on the last attempt) only ends once that step is requeued or the run cancelled.
        """
        run_id = keys.validate_run_id(run_id)
        while True:
            record = await self._read_run(run_id)
            if record is None:
                return await self.status(run_id)
            try:
                job = await self._queue.wait_for_completion(record.job_id)
            except JobNotFound:
                continue  # the run moved on between the two reads
            if job is not None and job.status is JobStatus.DEAD:
                again = await self._read_run(run_id)
                if again is not None and again.job_id == record.job_id:
                    await trio.sleep(self._poll_interval)

    async def cancel(self, run_id: str) -> bool:
        """Request the cancellation of an active run; return whether one was requested.

        A durable cancellation request and a control job commit together; the run then ends
        ``cancelled`` whatever its step is doing: a pending or sleeping step is removed, a
        running step sees `Step.cancel_requested` (cancellation is cooperative; whatever it
        returns, the run ends cancelled), a step about to start never runs. The terminal hook
        fires as for any other end. Works for runs of earlier processes.

        Returns:
            False if no run with this id is active (unknown, or already ended); True
            otherwise, including when a cancellation was already requested.
        """
        run_id = keys.validate_run_id(run_id)
        key = self._cancel_key(run_id)
        while True:
            record = await self._read_run(run_id)
            if record is None:
                return False
            raw = await self._queue.kv_get(key)
            if raw is not None:
                try:
                    current = records.decode_cancel_incarnation(raw) == record.incarnation
                except WorkflowDataError:
                    current = False
                if current:
                    break
                # A request aimed at an earlier run that reused this id: drop it.
                await self._queue.kv_compare_and_set(key, raw, None)
                continue
            request = records.encode_cancel(record.incarnation, self._clock.now_ms())
            try:
                await self._queue.enqueue(
                    self._queue_name,
                    request,
                    priority=_CONTROL_PRIORITY,
                    headers={keys.HEADER_RUN_ID: run_id, keys.HEADER_CONTROL: _CONTROL_CANCEL},
                    kv_writes={key: request},
                    kv_expect={key: None},
                )
            except KvConflict:
                continue
            break
        # Fast path (the control job is the durable one): fire a running step's cancel signal
        # now, or remove a pending step so the control job ends the run without a step.
        try:
            await self._queue.cancel(record.job_id)
        except _FATAL:
            raise
        except TaqubaError as exc:
            log.warning("run %s: cancellation requested; its step not reached yet: %s", run_id, exc)
        return True

    # ---------------------------------------------------------------------------- run

    async def run(
        self,
        *,
        shutdown: trio.Event | None = None,
        shutdown_grace: float | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Process steps until ``shutdown`` is set (serve-style; use with ``nursery.start``).

        Runs `taquba.run_worker_concurrent` over ``queue_name`` and, with ``memo_retention``
        set, the retention sweeper (first sweep at once, then every ``sweep_interval``). On
        shutdown it stops claiming and lets the steps in flight finish (with
        ``shutdown_grace``, those still running after that many seconds are cancelled and
        retried later); the sweeper stops with it.

        Raises:
            taquba.Fenced: another process opened the store as writer.
            taquba.QueueClosed: the queue was closed under the runtime.
        """
        stop = shutdown if shutdown is not None else trio.Event()
        error: BaseException | None = None
        async with trio.open_nursery() as nursery:
            if self._retention is not None:
                nursery.start_soon(self._sweeper)
            try:
                await run_worker_concurrent(
                    self._queue,
                    self._queue_name,
                    self.process,
                    concurrency=self._concurrency,
                    poll_interval=self._poll_interval,
                    shutdown=stop,
                    shutdown_grace=shutdown_grace,
                    task_status=task_status,
                )
            except BaseException as exc:  # re-raised below, outside the nursery, unwrapped
                error = exc
            finally:
                nursery.cancel_scope.cancel()  # the sweeper stops with the worker loop
        if error is not None:
            raise error

    # ---------------------------------------------------------------------- processing

    async def process(self, job: JobRecord, lease: LeaseHandle) -> Effects | None:
        """Handle one claimed job of ``queue_name`` (a `taquba.JobHandler`).

        `run` uses this; call it from your own worker loop to drive the runtime by hand
        (e.g. with `taquba.testing.drain`). Returns the settlement effects.
        """
        self._in_flight += 1
        try:
            if job.headers.get(keys.HEADER_CONTROL) is not None:
                return await self._process_control(job, lease)
            return await self._process_step(job, lease)
        finally:
            self._in_flight -= 1

    def _parse_step(self, job: JobRecord) -> tuple[str, int]:
        run_id = job.headers.get(keys.HEADER_RUN_ID)
        step = job.headers.get(keys.HEADER_STEP)
        try:
            keys.validate_run_id(run_id)
            assert run_id is not None
            if step is None or not step.isdecimal() or not step.isascii():
                raise ValueError(step)
            return run_id, int(step)
        except (WorkflowUsageError, ValueError, AssertionError) as exc:
            raise PermanentFailure(
                f"not a workflow step: headers {keys.HEADER_RUN_ID}={run_id!r} "
                f"{keys.HEADER_STEP}={step!r}"
            ) from exc

    async def _process_step(self, job: JobRecord, lease: LeaseHandle) -> Effects | None:
        run_id, number = self._parse_step(job)
        try:
            record = await self._read_run(run_id)
        except WorkflowDataError as exc:
            raise PermanentFailure(f"run {run_id}: {exc}") from exc
        if record is None or record.job_id != job.id:
            log.warning(
                "job %s (run %s, step %d) is not the run's current step; acknowledged unrun",
                job.id,
                run_id,
                number,
            )
            return None
        headers = _user_headers(job.headers)
        last = job.attempts >= job.max_attempts
        if lease.cancel_requested or await self._cancel_pending(record):
            if lease.expires_at is None:
                return None  # the claim is gone; the redelivery settles
            return await self._terminate(
                record, headers, TerminalStatus.CANCELLED, number, last=last
            )

        outcome: StepOutcome | None = None
        replayed = False
        if self._replay:
            outcome = await self._replayed(run_id, number, job.payload)
            replayed = outcome is not None
        if outcome is None:
            step = Step(
                run_id=run_id,
                number=number,
                payload=job.payload,
                headers=headers,
                attempt=job.attempts,
                max_attempts=job.max_attempts,
                job_id=job.id,
                memo=self._memos.memo(run_id, number),
                lease=lease,
            )
            try:
                outcome = await self._runner(step)
            except Exception as exc:
                return await self._after_error(record, headers, number, lease, exc, last=last)
            problem = _check_outcome(outcome)
            if problem is not None:
                error = PermanentStepError(f"the step runner returned {problem}")
                return await self._after_error(record, headers, number, lease, error, last=last)
            outcome = _normalised(outcome)

        if lease.expires_at is None:
            return None  # the claim is gone: never settle (or notify) from a stale delivery
        external = lease.cancel_requested or await self._cancel_pending(record)
        if self._replay and not replayed and not external:
            await self._store.put_blob(
                keys.step_output_path(self._memos.prefix, run_id, number, job.payload),
                records.encode_replay(outcome, self._clock.now_ms()),
            )
        match outcome:
            case Cancel(reason):
                return await self._terminate(
                    record, headers, TerminalStatus.CANCELLED, number, error=reason, last=last
                )
            case _ if external:
                return await self._terminate(
                    record, headers, TerminalStatus.CANCELLED, number, last=last
                )
            case Continue(payload):
                return self._advance(job, record, headers, payload, 0)
            case ContinueAfter(delay, payload):
                return self._advance(job, record, headers, payload, math.ceil(delay * 1000))
            case Succeed(result):
                return await self._terminate(
                    record, headers, TerminalStatus.SUCCEEDED, number, result=result, last=last
                )
            case Fail(error):
                return await self._terminate(
                    record, headers, TerminalStatus.FAILED, number, error=error, last=last
                )

    async def _after_error(
        self,
        record: records.RunRecord,
        headers: Mapping[str, str],
        number: int,
        lease: LeaseHandle,
        exc: Exception,
        *,
        last: bool,
    ) -> Effects | None:
        """Settle a step whose runner raised: cancel wins, then fail the run, else retry.

        A `PermanentStepError` fails the run now; any other error only on the last attempt.
        """
        if lease.expires_at is None:
            raise exc  # the claim is gone; the nack fails harmlessly and the redelivery runs
        if lease.cancel_requested or await self._cancel_pending(record):
            return await self._terminate(
                record, headers, TerminalStatus.CANCELLED, number, last=last
            )
        permanent = isinstance(exc, PermanentStepError)
        if not permanent and not last:
            if isinstance(exc, TransientStepError) and exc.retry_after is not None:
                raise RetryLater(exc.message, retry_after=exc.retry_after) from exc
            raise exc  # the worker loop nacks: retry with the queue's backoff
        message = exc.message if isinstance(exc, StepError) else _describe(exc)
        if not permanent:
            log.info("run %s step %d failed on its last attempt: %s", record.run_id, number, exc)
        return await self._terminate(
            record, headers, TerminalStatus.FAILED, number, error=message, last=last
        )

    async def _replayed(self, run_id: str, number: int, payload: bytes) -> StepOutcome | None:
        raw = await self._store.get_blob(
            keys.step_output_path(self._memos.prefix, run_id, number, payload)
        )
        if raw is None:
            return None
        try:
            outcome, stored_at, delay_ms = records.decode_replay(raw)
        except WorkflowDataError as exc:
            log.warning("ignoring step-output record of run %s step %d: %s", run_id, number, exc)
            return None
        if isinstance(outcome, ContinueAfter):
            left = keys.remaining_delay(stored_at, self._clock.now_ms(), delay_ms)
            outcome = ContinueAfter(left / 1000, outcome.payload)
        return outcome

    def _advance(
        self,
        job: JobRecord,
        record: records.RunRecord,
        headers: Mapping[str, str],
        payload: bytes,
        delay_ms: int,
    ) -> Effects:
        """The effects of a transition: the next step's job and the advanced run record."""
        next_id = self._queue.next_job_id()
        run_at = _run_at(self._clock.now_ms() + delay_ms) if delay_ms > 0 else None
        request = EnqueueRequest(
            queue=self._queue_name,
            payload=bytes(payload),
            priority=job.priority,
            run_at=run_at,
            headers={
                **headers,
                keys.HEADER_RUN_ID: record.run_id,
                keys.HEADER_STEP: str(record.step + 1),
            },
            max_attempts=job.max_attempts,
            job_id=next_id,
        )
        return Effects(
            enqueues=[request],
            kv_writes={self._run_key(record.run_id): record.advance(next_id).encode()},
        )

    async def _terminate(
        self,
        record: records.RunRecord,
        headers: Mapping[str, str],
        status: TerminalStatus,
        final_step: int,
        *,
        result: bytes | None = None,
        error: str | None = None,
        last: bool,
    ) -> Effects:
        """Write the outcome blob and marker, call the hook, and return the terminal effects.

        Everything here happens before the settlement commits. A failure retries the delivery
        (so the hook is called at least once), except on the last attempt, where the run's end
        commits anyway and the failure is logged.
        """
        now = self._clock.now_ms()
        run_id = record.run_id
        outcome = RunOutcome(
            run_id=run_id,
            status=status,
            result=bytes(result) if result is not None else None,
            error=error,
            headers=dict(headers),
            final_step=final_step,
            finished_at_ms=now,
        )

        async def outcome_blob() -> None:
            await self._store.put_blob(
                keys.outcome_path(self._memos.prefix, run_id),
                records.encode_outcome_blob(outcome, record.incarnation),
            )

        async def marker() -> None:
            if self._retention is not None:
                await self._memos.write_terminal_marker(run_id, now)

        async def hook() -> None:
            if self._hook is not None:
                await self._hook(outcome)

        for action, what in ((outcome_blob, "outcome blob"), (marker, "marker"), (hook, "hook")):
            try:
                await action()
            except Exception as exc:
                if not last:
                    raise
                log.error(
                    "run %s: the %s failed on the last attempt (%s); ending the run %s anyway",
                    run_id,
                    what,
                    _describe(exc),
                    status.value,
                )
        return Effects(
            kv_writes={
                self._outcome_key(run_id): records.OutcomeRecord(
                    run_id, record.incarnation, status, final_step, error, now
                ).encode()
            },
            kv_deletes=[self._run_key(run_id), self._cancel_key(run_id)],
        )

    async def _process_control(self, job: JobRecord, lease: LeaseHandle) -> Effects | None:
        kind = job.headers.get(keys.HEADER_CONTROL)
        run_id = job.headers.get(keys.HEADER_RUN_ID)
        if kind != _CONTROL_CANCEL or run_id is None:
            raise PermanentFailure(f"unknown workflow control job {kind!r}")
        try:
            keys.validate_run_id(run_id)
            incarnation = records.decode_cancel_incarnation(job.payload)
        except WorkflowError as exc:
            raise PermanentFailure(f"malformed cancellation: {exc}") from exc
        last = job.attempts >= job.max_attempts
        while True:
            record = await self._read_run(run_id)
            if record is None or record.incarnation != incarnation:
                await self._drop_cancel(run_id, incarnation)
                return None
            if await self._queue.cancel(record.job_id) is CancelOutcome.REQUESTED:
                return None  # the running step sees the request and ends the run cancelled
            again = await self._read_run(run_id)
            if again is None or again.incarnation != incarnation:
                await self._drop_cancel(run_id, incarnation)
                return None
            if again.job_id != record.job_id:
                continue  # the run moved to its next step meanwhile
            if lease.expires_at is None:
                return None
            # The current step's job is gone (removed now, or dead-lettered): end the run here.
            return await self._terminate(
                again, again.headers, TerminalStatus.CANCELLED, again.step, last=last
            )

    async def _drop_cancel(self, run_id: str, incarnation: str) -> None:
        key = self._cancel_key(run_id)
        raw = await self._queue.kv_get(key)
        if raw is None:
            return
        try:
            stale = records.decode_cancel_incarnation(raw) == incarnation
        except WorkflowDataError:
            stale = True
        if stale:
            await self._queue.kv_compare_and_set(key, raw, None)

    # ------------------------------------------------------------------------ retention

    async def sweep_now(self) -> SweepReport:
        """Run one memo-retention sweep now; return what it did.

        Lists only the terminal markers older than ``memo_retention`` (newest first), and for
        each deletes the run's memo entries and step-output records, its outcome blob and KV
        outcome (unless a later end of the same run id wrote them), then the marker. A failure
        leaves the marker for the next sweep.

        Raises:
            WorkflowUsageError: the runtime has no ``memo_retention``.
        """
        if self._retention is None:
            raise WorkflowUsageError("sweep_now needs memo_retention")
        cutoff = self._clock.now_ms() - math.ceil(self._retention * 1000)
        listed = cleared = deleted = 0
        start_after: str | None = None
        while True:
            markers = await self._memos.list_expired_terminal_markers(
                cutoff, start_after=start_after, limit=_SWEEP_PAGE
            )
            listed += len(markers)
            for marker in markers:
                try:
                    deleted += await self._memos.clear_run(marker.run_id)
                    deleted += await self._forget_outcome(marker)
                    await self._memos.delete_terminal_marker(marker)
                except _FATAL:
                    raise
                except (TaqubaError, WorkflowError) as exc:
                    log.error("retention sweep: run %s: %s", marker.run_id, exc)
                    continue
                cleared += 1
            if len(markers) < _SWEEP_PAGE:
                return SweepReport(listed, cleared, deleted)
            start_after = markers[-1].name

    async def _forget_outcome(self, marker: TerminalMarker) -> int:
        deleted = 0
        path = keys.outcome_path(self._memos.prefix, marker.run_id)
        raw = await self._store.get_blob(path)
        if raw is not None:
            try:
                outcome, _ = records.decode_outcome_blob(raw)
                expired = outcome.finished_at_ms <= marker.terminal_at_ms
            except WorkflowDataError:
                expired = True
            if expired and await self._store.delete_blob(path):
                deleted += 1
        key = self._outcome_key(marker.run_id)
        raw = await self._queue.kv_get(key)
        if raw is not None:
            try:
                expired = records.decode_outcome_record(raw).finished_at_ms <= marker.terminal_at_ms
            except WorkflowDataError:
                expired = True
            if expired:
                await self._queue.kv_compare_and_set(key, raw, None)
        return deleted

    async def _sweeper(self) -> None:
        interval = self._sweep_interval
        assert interval is not None
        while True:
            try:
                report = await self.sweep_now()
                if report.runs_cleared:
                    log.info("retention sweep cleared %d runs", report.runs_cleared)
            except _FATAL:
                return  # the worker loop reports it
            except Exception:
                log.exception("retention sweep failed; retrying at the next interval")
            await trio.sleep(interval)
