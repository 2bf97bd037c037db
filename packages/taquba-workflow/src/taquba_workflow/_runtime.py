"""The workflow runtime: submission, step execution, cancellation, status and retention."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeAlias, TypeVar, runtime_checkable

import trio

import taquba
from taquba import (
    CancelOutcome,
    ClaimLost,
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
    SerializationError,
    StorageFatal,
    TaqubaError,
    UsageError,
    Worker,
    validate_queue_name,
)

from . import _keys as keys  # pyright: ignore[reportPrivateUsage]
from . import _records as records  # pyright: ignore[reportPrivateUsage]
from ._effects import TerminalEffects, check_kv_writes, seal_terminal
from ._errors import (
    InputMismatch,
    PermanentStepError,
    ReservedHeader,
    RunNotRetryable,
    StepError,
    TransientStepError,
    WorkflowDataError,
    WorkflowError,
)
from ._memo import MemoStore, TerminalMarker, counted_memo
from ._operate import CONTROL_CANCEL, CONTROL_PRIORITY, STATE_OF, cancel_pending, cancel_run
from ._payload import UNSET, PayloadCodec, declared_types
from ._types import (
    Cancel,
    Continue,
    Fail,
    P,
    R,
    RunOutcome,
    RunSpec,
    RunState,
    RunStatus,
    SignalOutcome,
    Step,
    StepOutcome,
    Succeed,
    TerminalStatus,
    step_kv,
    validate_signal_key,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping

    from taquba import BlobStore, Clock, QueueLike, WakeOutcome  # WakeOutcome: taquba >= 0.10

__all__ = [
    "Hook",
    "HookFunction",
    "RunHandle",
    "Runner",
    "Runtime",
    "RuntimeStatistics",
    "StepFunction",
    "StepRunner",
    "SweepReport",
    "TerminalHook",
    "read_run_outcome",
]

log = logging.getLogger("taquba_workflow")

_CONTROL_END = "end"  # end a run whose step job was dead-lettered outside the runtime
_SWEEP_PAGE = 256
_MAX_SWEEP_INTERVAL = 3600.0
_FATAL = (Fenced, QueueClosed, StorageFatal)
_SIGNAL_POLLS = 10  # reads of a missing waiter entry: a registration may be committing
_SIGNAL_POLL_INTERVAL = 0.025
_T = TypeVar("_T")


StepFunction: TypeAlias = Callable[[Step[P]], Awaitable[StepOutcome[P, R]]]
"""An async function running one step and returning what happens to the run next.

Its annotations may declare the runtime's payload and result types:
``async def run_step(step: Step[Order]) -> StepOutcome[Order, Receipt]``.
"""


@runtime_checkable
class StepRunner(Protocol[P, R]):
    """An object whose ``run_step`` method runs steps (an alternative to a plain function)."""

    async def run_step(self, step: Step[P]) -> StepOutcome[P, R]:
        """Run one step; return `Continue`, `Succeed`, `Fail` or `Cancel`."""
        ...


Runner: TypeAlias = StepFunction[P, R] | StepRunner[P, R]
"""What `Runtime` accepts as its step runner.

Return a `StepOutcome`. Raise `PermanentStepError` to fail the run now; raise
`TransientStepError` (or any other exception) to retry the step with the queue's backoff. On
the step's last attempt a transient error fails the run.
"""

HookFunction: TypeAlias = Callable[[RunOutcome[R]], Awaitable[TerminalEffects | None]]
"""An async function told how a run ended (the result decoded as the runtime's type).

It may return `TerminalEffects`: KV writes, deletes and follow-up jobs committed with the
acknowledgement of the notification.
"""


@runtime_checkable
class TerminalHook(Protocol[R]):
    """An object whose ``on_termination`` method is told how each run ended."""

    async def on_termination(self, outcome: RunOutcome[R]) -> TerminalEffects | None:
        """React to a run's end (at least once per run; make it idempotent).

        Return `TerminalEffects` to commit KV effects and follow-up jobs with the
        notification's acknowledgement, or None.
        """
        ...


Hook: TypeAlias = HookFunction[R] | TerminalHook[R]
"""What `Runtime` accepts as its terminal hook.

Called with the `RunOutcome` of every run's end, after that end committed. Each end enqueues
a notification job on the runtime's ``hook_queue_name`` in the same transaction as the end
itself, and `Runtime.serve` delivers it: at least once per run (make the hook
idempotent), also after a crash. The end is visible (`Runtime.status`) before the
hook is told of it. Raising `PermanentStepError` dead-letters the notification;
raising anything else retries it with the hook queue's backoff until its attempts run out,
then dead-letters it. The run's end is never affected.

The hook may return `TerminalEffects` (application KV puts and deletes, follow-up jobs on any
queue): they commit atomically with the notification's acknowledgement, only when the hook
returned them (not when it raised), once per committed acknowledgement.
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
    notifications_in_flight: int = 0
    """Terminal notifications being delivered to the hook by this runtime now."""


class _TimeLimitExceeded(Exception):
    """The attempt ran past its time limit and was cancelled (internal signal)."""


@dataclass(slots=True)
class _RunLock:
    lock: trio.Lock
    users: int = 0


def _resolve_runner(runner: Runner[P, R]) -> StepFunction[P, R]:
    if isinstance(runner, StepRunner):
        method: StepFunction[P, R] = runner.run_step  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        return method  # pyright: ignore[reportUnknownVariableType]
    if callable(runner):
        return runner
    raise UsageError("runner must be an async callable or an object with run_step()")


def _resolve_hook(hook: Hook[R] | None) -> HookFunction[R] | None:
    if hook is None:
        return None
    if isinstance(hook, TerminalHook):
        method: HookFunction[R] = hook.on_termination  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        return method  # pyright: ignore[reportUnknownVariableType]
    if callable(hook):
        return hook
    raise UsageError("hook must be an async callable or an object with on_termination()")


def _positive(value: float | None, name: str, *, minimum: float = 0.0) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= minimum:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise UsageError(f"{name} must be a number of seconds above {minimum}")
    return float(value)


def _user_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if not k.startswith(keys.RESERVED_HEADER_PREFIX)}


def _run_at(at_ms: int) -> datetime:
    # Half a millisecond past ``at_ms`` so the queue's ``floor(timestamp * 1000)`` lands on it.
    return datetime.fromtimestamp(at_ms // 1000, UTC) + timedelta(
        microseconds=(at_ms % 1000) * 1000 + 500
    )


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _encoded(
    outcome: object, payloads: PayloadCodec[Any], results: PayloadCodec[Any]
) -> records.EncodedOutcome:
    """What a runner returned, with its payload or result encoded to the stored bytes.

    Raises:
        PermanentStepError: it is not a valid `StepOutcome`, or its payload or result does not
            fit the runtime's type (a bug of the runner: retrying would not help).
    """
    try:
        match outcome:
            case Continue(payload=payload, delay=delay, on_signal=key, timeout=timeout):  # pyright: ignore[reportUnknownVariableType]
                encoded = payloads.encode(payload, path="Continue.payload")
                return Continue(encoded, delay=delay, on_signal=key, timeout=timeout)
            case Succeed(result=result):  # pyright: ignore[reportUnknownVariableType]
                return Succeed(results.encode(result, path="Succeed.result"))  # pyright: ignore[reportUnknownArgumentType]
            case Fail(error) if not _is_str(error):
                problem = f"an error of type {type(error).__name__}, expected str"
            case Cancel(reason) if reason is not None and not _is_str(reason):
                problem = f"a reason of type {type(reason).__name__}, expected str or None"
            case Fail() | Cancel():
                return outcome
            case _:
                problem = f"{type(outcome).__name__}, expected a StepOutcome"
    except SerializationError as exc:  # TypeMismatch included
        problem = f"a value that does not fit its type: {exc}"
    raise PermanentStepError(f"the step runner returned {problem}")


_Staged: TypeAlias = tuple[dict[bytes, bytes], list[bytes]]
_NOTHING_STAGED: _Staged = ({}, [])


def _with_kv(effects: Effects, staged: _Staged) -> Effects:
    """``effects`` plus a step's staged application KV effects.

    The keys never overlap: application keys cannot start with ``workflow/``, and every key
    the runtime writes or deletes does.
    """
    writes, deletes = staged
    if not writes and not deletes:
        return effects
    return dataclasses.replace(
        effects,
        kv_writes={**writes, **effects.kv_writes},
        kv_deletes=[*effects.kv_deletes, *deletes],
    )


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def read_run_outcome(
    store: BlobStore,
    run_id: str,
    *,
    memo_prefix: str = keys.DEFAULT_MEMO_PREFIX,
    result_type: Any = bytes,
) -> RunOutcome[Any] | None:
    """Read a run's terminal outcome from the store's blobs, from any process.

    The runtime writes ``<memo_prefix>/outcomes/<run_id>`` just before the terminal settlement
    commits (like the terminal hook, it may be written again by a redelivery whose outcome then
    wins). Another process that cannot open the queue database (one writer per store) polls
    this. Returns None while the run has no outcome (or after memo retention removed it). A
    resubmitted run id keeps its previous outcome here until the new run ends: compare
    ``finished_at_ms`` with the submission time if that matters. The result is decoded as
    ``result_type`` (the runtime's; default ``bytes``, returned as stored).

    Raises:
        WorkflowDataError: the blob cannot be decoded.
        taquba.TypeMismatch: the result does not decode as ``result_type``.
    """
    prefix = keys.validate_memo_prefix(memo_prefix)
    raw = await store.get_blob(keys.outcome_path(prefix, keys.validate_run_id(run_id)))
    if raw is None:
        return None
    return _decoded_outcome(records.decode_outcome_blob(raw)[0], PayloadCodec(result_type))


def _decoded_outcome(outcome: RunOutcome[bytes], results: PayloadCodec[_T]) -> RunOutcome[_T]:
    """``outcome`` with its stored result decoded (raises `taquba.TypeMismatch`)."""
    if results.verbatim:
        return outcome  # pyright: ignore[reportReturnType] - bytes is the type
    result = None if outcome.result is None else results.decode(outcome.result, path="result")
    return RunOutcome(
        run_id=outcome.run_id,
        status=outcome.status,
        result=result,
        error=outcome.error,
        headers=outcome.headers,
        final_step=outcome.final_step,
        finished_at_ms=outcome.finished_at_ms,
    )


class RunHandle(Generic[R]):
    """A submitted run: its id, whether the submission created it, and its outcome.

    Returned by `Runtime.submit`. Works across restarts (it reads the queue database and the
    outcome blob, not process state).
    """

    __slots__ = ("_newly", "_run_id", "_runtime")

    def __init__(self, runtime: Runtime[Any, R], run_id: str, *, newly_submitted: bool) -> None:
        """Library-internal: `Runtime.submit` returns one."""
        self._runtime = runtime
        self._run_id = run_id
        self._newly = newly_submitted

    @property
    def run_id(self) -> str:
        """The run's id (the generated one when the spec had none)."""
        return self._run_id

    @property
    def newly_submitted(self) -> bool:
        """Whether the submission created the run.

        False when a run with this id and the same input was already known (active, or ended
        and still remembered) and the submission wrote nothing.
        """
        return self._newly

    async def status(self) -> RunStatus | None:
        """The run's state now (see `Runtime.status`)."""
        return await self._runtime.status(self._run_id)

    async def wait(self) -> RunOutcome[R] | None:
        """Wait until the run has ended; return its outcome, its result decoded.

        Bound it with `trio.move_on_after`. Returns None if the run is unknown or its outcome
        is no longer stored (memo retention forgot it).
        """
        await self._runtime.wait_finished(self._run_id)
        return await self._runtime.outcome(self._run_id)

    def __repr__(self) -> str:
        new = "new" if self._newly else "known"
        return f"<RunHandle {self._run_id} ({new})>"


class Runtime(Generic[P, R]):
    """Durable multi-step runs on a taquba queue.

    A run is a sequence of steps. Each step is a job on ``queue_name``; the runner returns what
    happens next (`Continue`, `Succeed`, `Fail`, `Cancel`), and that decision commits
    atomically with the step's acknowledgement: the next step's job exists if and only if the
    step's settlement committed. Steps are delivered at least once; memoize expensive side
    effects with `Step.memo`.

        runtime = Runtime(queue, run_step, on_done, memo_retention=7 * 86400)
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.serve)
            handle = await runtime.submit(RunSpec(input=order, run_id="order-42"))
            outcome = await handle.wait()
            runtime.shutdown()

    Payloads are typed: run inputs and step payloads have the runtime's ``payload_type``,
    `Succeed` results its ``result_type``. Declare them once, on the runner
    (``async def run_step(step: Step[Order]) -> StepOutcome[Order, Receipt]``) or here
    (``payload_type=Order, result_type=Receipt``); anything `taquba.Codec` supports works.
    Undeclared, both are ``bytes``, stored as is (as taquba-workflow 0.7 stored them).

    State: the active run's record, a pending cancellation and the committed outcome live in
    the queue database's user KV (``workflow/<queue_name>/...``); memos, replay records,
    outcome blobs and retention markers live in the store's blobs under ``memo_prefix``.

    A run whose step job was dead-lettered outside the runtime (its lease expired on its last
    attempt, or its process died then) ends ``failed`` with the reason: the runtime notices
    when the step's claim is lost, `wait_finished` notices when the job dies, and `serve` scans
    the dead letters at startup and every ``dead_step_scan_interval``.

    Args:
        queue: the open queue: a `taquba.Queue`, or any `taquba.QueueLike` (such as a remote
            queue whose owner is another process).
        runner: the step runner (see `Runner`).
        hook: told how each run ended (see `TerminalHook`), after that end committed, through
            a notification job on ``hook_queue_name``; at least once per run.
        store: where memos live (a `taquba.Store` or any `taquba.BlobStore`); default the
            queue's ``store``.
        queue_name: the queue steps run on (one runtime per queue name).
        hook_queue_name: the queue terminal notifications run on; default
            ``"<queue_name>-hooks"``. Configure its attempts and backoff like any queue's.
        payload_type: the type of run inputs and step payloads; default: what the runner's
            annotations declare (``Step[X]``), else ``bytes``.
        result_type: the type of `Succeed` results; default: what the runner's return
            annotation declares (``StepOutcome[X, Y]``), else ``bytes``.
        concurrency: steps processed at once by `serve` (and, separately, notifications).
        poll_interval: the longest idle wait of `serve` between claim attempts, in seconds.
        shutdown_grace: after `shutdown`, seconds the steps (and notifications) in flight get
            to finish before they are cancelled and handed back (retried later); None (the
            default) waits as long as they take.
        memo_prefix: the blob prefix of memos, replay records, outcomes and markers; use a
            distinct one per runtime sharing a store.
        memo_retention: delete a run's memos this many seconds after it ended (None: keep
            them forever).
        sweep_interval: seconds between retention sweeps (default ``memo_retention``, at most
            one hour).
        step_output_replay: persist every outcome the runner returns before applying it, and
            replay it instead of calling the runner when the step is delivered again.
        clock: the clock of every timestamp the runtime writes; default the queue's.
        lease_keep_alive: renew a step's (and a notification's) lease every third of the
            queue's ``lease_duration`` while it runs, so a step may run for as long as it
            needs; False leaves renewal to the runner (``step.lease``).
        step_time_limit: seconds an attempt of a step may run before it is cancelled and
            counted as a failed attempt (retried per policy; the run fails with the reason
            once attempts run out); None for no limit. A run may set its own
            (`RunSpec.step_time_limit`).
        dead_step_scan_interval: seconds between `serve`'s scans of the dead letters for runs
            whose step job died outside the runtime (the first scan runs at startup).

    Raises:
        taquba.UsageError: an argument is invalid (checked here, before anything runs).
        taquba.UnsupportedType: a payload or result type cannot be stored.
    """

    def __init__(
        self,
        queue: QueueLike,
        runner: Runner[P, R],
        hook: Hook[R] | None = None,
        *,
        payload_type: Any = UNSET,
        result_type: Any = UNSET,
        store: BlobStore | None = None,
        queue_name: str = "workflow",
        concurrency: int = 16,
        poll_interval: float = 1.0,
        shutdown_grace: float | None = None,
        memo_prefix: str = keys.DEFAULT_MEMO_PREFIX,
        memo_retention: float | None = None,
        sweep_interval: float | None = None,
        step_output_replay: bool = False,
        clock: Clock | None = None,
        hook_queue_name: str | None = None,
        lease_keep_alive: bool = True,
        step_time_limit: float | None = None,
        dead_step_scan_interval: float = 60.0,
    ) -> None:
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError("concurrency must be a positive int")
        self._queue = queue
        self._runner = _resolve_runner(runner)
        self._hook = _resolve_hook(hook)
        if payload_type is UNSET or result_type is UNSET:
            declared_payload, declared_result = declared_types(self._runner)
            if payload_type is UNSET:
                payload_type = bytes if declared_payload is UNSET else declared_payload
            if result_type is UNSET:
                result_type = bytes if declared_result is UNSET else declared_result
        self._payloads: PayloadCodec[P] = PayloadCodec(payload_type)
        self._results: PayloadCodec[R] = PayloadCodec(result_type)
        self._store = store if store is not None else queue.store
        self._queue_name = validate_queue_name(queue_name)
        self._hook_queue_name = validate_queue_name(
            keys.default_hook_queue_name(self._queue_name)
            if hook_queue_name is None
            else hook_queue_name
        )
        if self._hook_queue_name == self._queue_name:
            raise UsageError("hook_queue_name must differ from queue_name")
        self._keep_alive = bool(lease_keep_alive)
        self._step_time_limit = _positive(step_time_limit, "step_time_limit")
        self._dead_scan_interval = (
            _positive(dead_step_scan_interval, "dead_step_scan_interval") or 60.0
        )
        self._concurrency = concurrency
        self._poll_interval = _positive(poll_interval, "poll_interval") or 1.0
        if shutdown_grace is not None and (
            not isinstance(shutdown_grace, (int, float))  # pyright: ignore[reportUnnecessaryIsInstance]
            or isinstance(shutdown_grace, bool)
            or shutdown_grace != shutdown_grace  # NaN
            or shutdown_grace < 0
        ):
            raise UsageError("shutdown_grace must be a non-negative number of seconds or None")
        self._grace = shutdown_grace
        self._memos = MemoStore(self._store, memo_prefix)
        self._retention = _positive(memo_retention, "memo_retention", minimum=0.0)
        if self._retention is not None and self._retention < 0.001:
            raise UsageError("memo_retention must be at least one millisecond")
        default_interval = (
            min(self._retention, _MAX_SWEEP_INTERVAL) if self._retention is not None else None
        )
        self._sweep_interval = _positive(sweep_interval, "sweep_interval") or default_interval
        self._replay = bool(step_output_replay)
        self._clock = clock if clock is not None else queue.clock
        self._locks: dict[str, _RunLock] = {}
        self._in_flight = 0
        self._hooks_in_flight = 0
        self._stop = trio.Event()
        self._serving = False

    # ------------------------------------------------------------------------ properties

    @property
    def queue(self) -> QueueLike:
        """The queue the runtime runs on."""
        return self._queue

    @property
    def queue_name(self) -> str:
        """The queue steps run on."""
        return self._queue_name

    @property
    def hook_queue_name(self) -> str:
        """The queue terminal notifications run on."""
        return self._hook_queue_name

    @property
    def payload_type(self) -> object:
        """The type of run inputs and step payloads (``bytes``: stored as is)."""
        return self._payloads.type

    @property
    def result_type(self) -> object:
        """The type of `Succeed` results (``bytes``: stored as is)."""
        return self._results.type

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
        return RuntimeStatistics(
            steps_in_flight=self._in_flight,
            submit_locks=len(self._locks),
            notifications_in_flight=self._hooks_in_flight,
        )

    # ---------------------------------------------------------------------------- keys

    def _run_key(self, run_id: str) -> bytes:
        return keys.run_key(self._queue_name, run_id)

    def _cancel_key(self, run_id: str) -> bytes:
        return keys.cancel_key(self._queue_name, run_id)

    def _outcome_key(self, run_id: str) -> bytes:
        return keys.outcome_key(self._queue_name, run_id)

    def _ending_key(self, run_id: str) -> bytes:
        return keys.ending_key(self._queue_name, run_id)

    async def _read_run(self, run_id: str) -> records.RunRecord | None:
        raw = await self._queue.kv_get(self._run_key(run_id))
        return None if raw is None else records.decode_run(raw)

    async def _read_run_raw(self, run_id: str) -> tuple[bytes, records.RunRecord] | None:
        raw = await self._queue.kv_get(self._run_key(run_id))
        return None if raw is None else (raw, records.decode_run(raw))

    async def _cancel_pending(self, record: records.RunRecord) -> bool:
        return await cancel_pending(self._queue, self._queue_name, record)

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

    async def submit(self, spec: RunSpec[P]) -> RunHandle[R]:
        """Start a run, or recognise a known one; return its handle once durable.

        The run record, step 0 and the spec's ``kv_writes`` commit in one transaction (a
        submission that finds the run known writes none of them). Submission is idempotent by run
        id: resubmitting the id of a known run (active, or ended and still remembered) with
        the same input (compared by the SHA-256 of its deterministic encoding) does nothing
        and returns a handle whose ``newly_submitted`` is False; with another input it raises
        `InputMismatch`. The check
        reads the durable run record and outcome, so it holds across restarts. Resubmission
        never runs an ended run again: use `retry` to rerun a failed or cancelled run from
        the step where it stopped. An ended run's id is released only when memo retention
        forgets its outcome. Submissions of distinct run ids proceed in parallel (the lock is
        per run id) and share the database's group commits.

        Raises:
            InvalidRunId: the run id is not 1 to 128 of ``[A-Za-z0-9_-]``.
            ReservedHeader: a header name starts with ``workflow.``.
            InputMismatch: the run is known with a different input.
            taquba.TypeMismatch: the input does not fit the runtime's ``payload_type``.
            ReservedKvKey: a ``kv_writes`` key starts with ``workflow/``.
            taquba.KvValueTooLarge: a ``kv_writes`` value is above `taquba.MAX_KV_VALUE_SIZE`.
            taquba.UsageError: ``spec`` is not a `RunSpec`, or has malformed headers or
                ``kv_writes``.
        """
        if not isinstance(spec, RunSpec):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError("submit takes a RunSpec")
        user_writes = check_kv_writes(spec.kv_writes)
        payload = self._payloads.encode(spec.input, path="input")
        run_id = (
            self._queue.next_job_id() if spec.run_id is None else keys.validate_run_id(spec.run_id)
        )
        headers = dict(spec.headers)
        for name, value in headers.items():
            if not isinstance(name, str) or not isinstance(value, str):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise UsageError("headers must map str to str")
            if name.startswith(keys.RESERVED_HEADER_PREFIX):
                raise ReservedHeader(name)
        limit = _positive(spec.step_time_limit, "step_time_limit")
        limit_ms = None if limit is None else math.ceil(limit * 1000)
        input_hash = hashlib.sha256(payload).hexdigest()
        key = self._run_key(run_id)
        async with self._run_lock(run_id):
            while True:
                existing = await self._read_run(run_id)
                if existing is not None:
                    if existing.input_hash != input_hash:
                        raise InputMismatch(run_id)
                    return RunHandle(self, run_id, newly_submitted=False)
                ended = await self._read_outcome_record(run_id)
                if ended is not None:
                    if ended.input_hash is not None and ended.input_hash != input_hash:
                        raise InputMismatch(run_id)
                    return RunHandle(self, run_id, newly_submitted=False)
                job_id = self._queue.next_job_id()
                record = records.RunRecord(
                    run_id=run_id,
                    incarnation=job_id,
                    input_hash=input_hash,
                    submitted_at_ms=self._clock.now_ms(),
                    step=0,
                    job_id=job_id,
                    headers=headers,
                    step_time_limit_ms=limit_ms,
                )
                try:
                    await self._queue.enqueue(
                        self._queue_name,
                        payload,
                        priority=spec.priority,
                        headers={**headers, keys.HEADER_RUN_ID: run_id, keys.HEADER_STEP: "0"},
                        max_attempts=spec.max_attempts_per_step,
                        job_id=job_id,
                        kv_writes={**user_writes, key: record.encode()},
                        kv_expect={key: None},
                    )
                except KvConflict:
                    continue  # created meanwhile (another runtime on this queue): compare
                labels = {"queue": self._queue_name, "state": "submitted"}
                taquba.count_event(self._queue, "workflow_runs", labels)
                return RunHandle(self, run_id, newly_submitted=True)

    async def _read_outcome_record(self, run_id: str) -> records.OutcomeRecord | None:
        raw = await self._queue.kv_get(self._outcome_key(run_id))
        if raw is None:
            return None
        try:
            return records.decode_outcome_record(raw)
        except WorkflowDataError as exc:
            log.error(
                "run %s: undecodable outcome record (%s); treating the id as free", run_id, exc
            )
            return None

    async def retry(self, run_id: str) -> bool:
        """Run a failed or cancelled run again from the step where it stopped.

        The run keeps its id, headers, options and memos; steps before the one that failed
        (or was cancelled) are not run again, and that step reruns with the payload it had,
        with fresh attempts (a step-output replay record of its recorded end is discarded, so
        a replayed `Fail` is not replayed again). The run is active again at once (`status`
        reports it running) and ends as any run does, notifying the terminal hook again.

        Concurrent retries of one run are idempotent: exactly one restarts it.

        Returns:
            True if this call restarted the run; False if the run is active (for instance
            because a concurrent retry restarted it first).

        Raises:
            InvalidRunId: the run id is not 1 to 128 of ``[A-Za-z0-9_-]``.
            RunNotRetryable: no ended run with this id is known, it succeeded, or where it
                stopped was not recorded (a run that ended under taquba-workflow 0.6).
        """
        run_id = keys.validate_run_id(run_id)
        outcome_key = self._outcome_key(run_id)
        async with self._run_lock(run_id):
            while True:
                if await self._read_run(run_id) is not None:
                    return False
                raw = await self._queue.kv_get(outcome_key)
                if raw is None:
                    raise RunNotRetryable(run_id, "no ended run with this id is known")
                ended = records.decode_outcome_record(raw)
                if ended.status is TerminalStatus.SUCCEEDED:
                    raise RunNotRetryable(run_id, "it succeeded")
                blob = await self._store.get_blob(keys.outcome_path(self._memos.prefix, run_id))
                if blob is None:
                    raise RunNotRetryable(run_id, "its outcome is no longer stored")
                outcome, incarnation, resume = records.decode_outcome_blob_resume(blob)
                if resume is None or incarnation != ended.incarnation:
                    raise RunNotRetryable(run_id, "the step where it stopped was not recorded")
                # The rerun must run the step, not replay the end recorded for it.
                await self._store.delete_blob(
                    keys.step_output_path(self._memos.prefix, run_id, resume.step, resume.payload)
                )
                job_id = self._queue.next_job_id()
                record = records.RunRecord(
                    run_id=run_id,
                    incarnation=job_id,
                    input_hash=resume.input_hash,
                    submitted_at_ms=self._clock.now_ms(),
                    step=resume.step,
                    job_id=job_id,
                    headers=dict(outcome.headers),
                    step_time_limit_ms=resume.step_time_limit_ms,
                )
                try:
                    await self._queue.enqueue(
                        self._queue_name,
                        resume.payload,
                        priority=resume.priority,
                        headers={
                            **outcome.headers,
                            keys.HEADER_RUN_ID: run_id,
                            keys.HEADER_STEP: str(resume.step),
                        },
                        max_attempts=resume.max_attempts,
                        job_id=job_id,
                        kv_writes={self._run_key(run_id): record.encode()},
                        kv_expect={self._run_key(run_id): None, outcome_key: raw},
                    )
                except KvConflict:
                    continue  # retried (or ended again) meanwhile: look again
                if self._retention is not None:
                    # The earlier end's marker must not clear the memos of the rerun.
                    name = keys.marker_name(ended.finished_at_ms, run_id)
                    with suppress(TaqubaError):
                        await self._memos.delete_terminal_marker(
                            TerminalMarker(name, run_id, ended.finished_at_ms)
                        )
                log.info("run %s: retried from step %d", run_id, resume.step)
                return True

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
        state = STATE_OF[outcome.status]
        return RunStatus(run_id, state, outcome.final_step, outcome.error, outcome.finished_at_ms)

    async def outcome(self, run_id: str) -> RunOutcome[R] | None:
        """The ended run's full outcome (its result decoded), or None while it is active.

        Reads the outcome blob (see `read_run_outcome`) once `status` reports an end.

        Raises:
            taquba.TypeMismatch: the stored result does not decode as ``result_type``.
        """
        status = await self.status(run_id)
        if status is None or not status.state.terminal:
            return None
        raw = await self._store.get_blob(keys.outcome_path(self._memos.prefix, run_id))
        if raw is None:
            return None
        return _decoded_outcome(records.decode_outcome_blob(raw)[0], self._results)

    async def wait_finished(self, run_id: str) -> RunStatus | None:
        """Wait until the run has ended; return its final status (None if it is unknown).

        Follows the run's step jobs with `taquba.Queue.wait_for_completion`. Bound it with
        `trio.move_on_after`. When the run's step job is dead-lettered outside the runtime
        (its lease expired on its last attempt, or its process died then), the wait asks for
        the run's end as failed and follows that; every waiter wakes once a runtime's `serve`
        (or `process`) has ended the run.
        """
        run_id = keys.validate_run_id(run_id)
        while True:
            record = await self._read_run(run_id)
            if record is None:
                return await self.status(run_id)
            try:
                job = await self._queue.wait_for_completion(record.job_id)
            except JobNotFound:
                job = None  # removed (a cancellation) or the run moved on: look again
            if job is None or job.status is not JobStatus.DEAD:
                again = await self._read_run(run_id)
                if again is not None and again.job_id == record.job_id:
                    await trio.sleep(min(self._poll_interval, 0.05))  # its end is on the way
                continue
            request = await self._request_end(run_id, job)
            if request is None:
                continue  # the run moved on (or ended) meanwhile
            try:
                settled = await self._queue.wait_for_completion(request[0])
            except JobNotFound:
                settled = None
            if settled is not None and settled.status is JobStatus.DEAD:
                await trio.sleep(self._poll_interval)  # the end request failed; an operator acts

    async def _request_end(self, run_id: str, dead: JobRecord) -> tuple[str, bool] | None:
        """Ask for the end of a run whose step job ``dead`` was dead-lettered; idempotent.

        Commits a durable end request (user KV) with a control job that ends the run as
        failed. Returns that control job's id and whether this call made the request (False
        when an earlier call did), or None if ``dead`` is not the run's current step.
        """
        key = self._ending_key(run_id)
        while True:
            current = await self._read_run_raw(run_id)
            if current is None or current[1].job_id != dead.id:
                return None
            raw_run, record = current
            existing = await self._queue.kv_get(key)
            if existing is not None:
                try:
                    request = records.decode_end_request(existing)
                except WorkflowDataError:
                    request = None
                if (
                    request is not None
                    and request.incarnation == record.incarnation
                    and request.dead_job_id == dead.id
                ):
                    return request.control_job_id, False
                await self._queue.kv_compare_and_set(key, existing, None)  # a stale request
                continue
            control = self._queue.next_job_id()
            request = records.EndRequest(record.incarnation, dead.id, control).encode()
            try:
                await self._queue.enqueue(
                    self._queue_name,
                    request,
                    priority=CONTROL_PRIORITY,
                    headers={keys.HEADER_RUN_ID: run_id, keys.HEADER_CONTROL: _CONTROL_END},
                    job_id=control,
                    kv_writes={key: request},
                    kv_expect={key: None, self._run_key(run_id): raw_run},
                )
            except KvConflict:
                continue
            log.warning(
                "run %s: its step %d (job %s) was dead-lettered outside the runtime (%s); "
                "ending the run as failed",
                run_id,
                record.step,
                dead.id,
                dead.last_error,
            )
            return control, True

    async def end_dead_step_runs_now(self) -> int:
        """End every run whose current step job is dead; return how many requests it made.

        Lists the dead letters of ``queue_name`` and, for each step job that is still its
        run's current step, commits a request to end that run as failed (processed by the
        runtime's worker loop; `serve` does this at startup and every
        ``dead_step_scan_interval``). Idempotent.
        """
        return await self._end_dead_step_runs(set())

    async def _end_dead_step_runs(self, seen: set[str]) -> int:
        requested = 0
        after: str | None = None
        while True:
            jobs = await self._queue.dead_jobs(self._queue_name, after=after, limit=_SWEEP_PAGE)
            for job in jobs:
                if job.id in seen:
                    continue
                run_id = job.headers.get(keys.HEADER_RUN_ID)
                if run_id is not None and keys.HEADER_CONTROL not in job.headers:
                    with suppress(UsageError):
                        request = await self._request_end(keys.validate_run_id(run_id), job)
                        if request is not None and request[1]:
                            requested += 1
                seen.add(job.id)  # a dead job's run never moves on by itself
            if len(jobs) < _SWEEP_PAGE:
                return requested
            after = jobs[-1].id

    async def _dead_step_watcher(self) -> None:
        seen: set[str] = set()
        while True:
            try:
                await self._end_dead_step_runs(seen)
            except _FATAL:
                return  # the worker loop reports it
            except Exception:
                log.exception("scanning dead step jobs failed; retrying at the next interval")
            await trio.sleep(self._dead_scan_interval)

    async def cancel(self, run_id: str) -> bool:
        """Request the cancellation of an active run; return whether one was requested.

        A durable cancellation request and a control job commit together; the run then ends
        ``cancelled`` whatever its step is doing: a pending or sleeping step is removed, a
        running step sees `Step.cancel_requested` (cancellation is cooperative; whatever it
        returns, the run ends cancelled), a step about to start never runs. The terminal hook
        fires as for any other end. Works for runs of earlier processes; `cancel_run` does
        the same without a runtime.

        Returns:
            False if no run with this id is active (unknown, or already ended); True
            otherwise, including when a cancellation was already requested.
        """
        return await cancel_run(self._queue, self._queue_name, run_id, clock=self._clock)

    # ---------------------------------------------------------------------------- signals

    def _wake(self) -> Callable[[str, bytes | None], Awaitable[WakeOutcome]] | None:
        """The queue's ``wake_scheduled`` (taquba >= 0.10; the package admits 0.9 otherwise)."""
        wake: Callable[[str, bytes | None], Awaitable[WakeOutcome]] | None = getattr(
            self._queue, "wake_scheduled", None
        )
        return wake

    async def signal(self, key: str, payload: bytes) -> SignalOutcome:
        """Send a signal: hand ``payload`` to the run waiting on correlation key ``key``.

        A run waits with ``Continue(next_payload, on_signal=key, timeout=seconds)``; its next
        step reads the payload as `Step.signal`. If a run waits on ``key`` now, its next step
        becomes due at once (`SignalOutcome.DELIVERED`). Otherwise the signal is buffered under
        the key (`SignalOutcome.BUFFERED`): the next run that waits on ``key`` takes it at once,
        and a waiter whose registration raced this call takes it at its deadline at the
        latest. One signal is buffered per key: a later signal replaces an unconsumed one.
        Durable when it returns; delivery is at least once (a redelivered step reads the same
        signal). Signals go through the process owning the queue (one writer per store).

        Raises:
            taquba.UsageError: ``key`` is not a non-empty str of at most 256 characters, or
                ``payload`` is not bytes.
        """
        validate_signal_key(key)
        if not isinstance(payload, (bytes, bytearray, memoryview)):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError("a signal payload must be bytes")
        wake = self._wake()
        if wake is None:
            raise UsageError("signals need a queue with wake_scheduled (taquba >= 0.10)")
        wait_key = keys.signal_wait_key(self._queue_name, key)
        buffer_key = keys.signal_buffer_key(self._queue_name, key)
        signal = records.encode_signal(self._queue.next_job_id(), bytes(payload))
        # Buffer first: a run registering concurrently reads the buffer, and a waiter whose
        # deadline passes before the wake lands takes it from there.
        await self._queue.kv_put(buffer_key, signal)
        for poll in range(_SIGNAL_POLLS):
            raw = await self._queue.kv_get(wait_key)
            if raw is None:
                if poll + 1 < _SIGNAL_POLLS:
                    await trio.sleep(_SIGNAL_POLL_INTERVAL)  # a registration may be committing
                continue
            waiter = self._decoded_waiter(raw)
            if waiter is None:
                await self._queue.kv_compare_and_set(wait_key, raw, None)
                continue
            pin = keys.signal_got_key(self._queue_name, waiter.incarnation, waiter.step)
            if await self._queue.kv_get(pin) is not None:
                # The waiter resolved its signal already (and died before removing its entry;
                # its job may be scheduled again for a retry): waking it would hand it nothing.
                await self._queue.kv_compare_and_set(wait_key, raw, None)
                return SignalOutcome.BUFFERED
            outcome = await wake(waiter.job_id, signal)
            if outcome == "woken":  # WakeOutcome.WOKEN (a StrEnum), without importing it
                # The woken step reads the wake's payload; these two are clean-up (the step
                # redoes them if this process dies here).
                await self._queue.kv_compare_and_set(buffer_key, signal, None)
                await self._queue.kv_compare_and_set(wait_key, raw, None)
                return SignalOutcome.DELIVERED
            # The waiter is past its wait (its deadline fired first, or it is gone): stale.
            await self._queue.kv_compare_and_set(wait_key, raw, None)
            return SignalOutcome.BUFFERED
        return SignalOutcome.BUFFERED

    async def clear_signal(self, key: str) -> bool:
        """Discard the signal buffered under ``key``; return whether there was one.

        A run already waiting on ``key`` keeps waiting (there is nothing to clear: a signal
        delivered to it is not buffered).

        Raises:
            taquba.UsageError: ``key`` is not a valid correlation key.
        """
        validate_signal_key(key)
        buffer_key = keys.signal_buffer_key(self._queue_name, key)
        while True:
            raw = await self._queue.kv_get(buffer_key)
            if raw is None:
                return False
            if await self._queue.kv_compare_and_set(buffer_key, raw, None):
                return True

    def _decoded_waiter(self, raw: bytes) -> records.Waiter | None:
        try:
            return records.decode_waiter(raw)
        except WorkflowDataError as exc:
            log.warning("ignoring an undecodable signal waiter: %s", exc)
            return None

    async def _register(
        self,
        job: JobRecord,
        record: records.RunRecord,
        headers: Mapping[str, str],
        payload: bytes,
        key: str,
        timeout_ms: int,
    ) -> Effects:
        """The effects of ``Continue(on_signal=key)``: take a buffered signal, or wait for one.

        Raises:
            PermanentStepError: another run is waiting on ``key`` (its job is scheduled).
        """
        if self._wake() is None:
            raise PermanentStepError("waiting for a signal needs taquba >= 0.10 (wake_scheduled)")
        wait_key = keys.signal_wait_key(self._queue_name, key)
        buffer_key = keys.signal_buffer_key(self._queue_name, key)
        pin = keys.signal_got_key(self._queue_name, record.incarnation, record.step + 1)
        raw = await self._queue.kv_get(wait_key)
        waiter = None if raw is None else self._decoded_waiter(raw)
        if waiter is not None and waiter.run_id != record.run_id:
            other = await self._queue.get_job(waiter.job_id)
            if other is not None and other.status is JobStatus.SCHEDULED:
                raise PermanentStepError(
                    f"run {waiter.run_id} is already waiting for a signal on key {key!r}: "
                    "one waiter per correlation key"
                )
        # A signal this step took on an earlier delivery is pinned for its next step already.
        pinned = await self._queue.kv_get(pin)
        if pinned is None:
            buffered = await self._queue.kv_get(buffer_key)
            if buffered is not None:
                # Pin it for the next step, then take it out of the buffer (compare-delete: a
                # newer signal stays buffered). A crash in between: the redelivery finds the pin.
                if not await self._queue.kv_compare_and_set(
                    pin, None, records.encode_got(buffered)
                ):
                    raise TransientStepError("a concurrent delivery pinned a signal; retrying")
                pinned = records.encode_got(buffered)
        if pinned is not None:
            signal = records.pinned_signal(pinned)
            if signal is not None:
                await self._queue.kv_compare_and_set(buffer_key, signal, None)
            return self._advance(job, record, headers, payload, 0, signal_key=key)
        effects = self._advance(job, record, headers, payload, timeout_ms, signal_key=key)
        next_id = effects.enqueues[0].job_id
        assert next_id is not None
        waiting = records.Waiter(record.run_id, next_id, record.incarnation, record.step + 1)
        waiting = waiting.encode()
        # The waiter entry is written only if it still holds what was read above: a second
        # run registering on ``key`` meanwhile makes this settlement fail with `KvConflict`
        # (nothing written), the step runs again and finds that run waiting.
        return dataclasses.replace(
            effects,
            kv_writes={**effects.kv_writes, wait_key: waiting},
            kv_expect={**effects.kv_expect, wait_key: raw},
        )

    async def _resolve_signal(
        self, job: JobRecord, record: records.RunRecord, key: str
    ) -> bytes | None:
        """The signal the step after a wait reads (None: the wait timed out).

        Pinned on the first resolution, so every delivery of the step reads the same one.
        """
        pin = keys.signal_got_key(self._queue_name, record.incarnation, record.step)
        buffer_key = keys.signal_buffer_key(self._queue_name, key)
        wait_key = keys.signal_wait_key(self._queue_name, key)
        pinned = await self._queue.kv_get(pin)
        if pinned is None:
            woken: bytes | None = getattr(job, "wake_payload", None)  # taquba >= 0.10
            if woken is not None:
                signal: bytes | None = woken  # woken by `signal`
            else:
                # The deadline fired: a signal buffered after the registration read the buffer
                # (or whose wake lost to the deadline) is taken now.
                signal = await self._queue.kv_get(buffer_key)
            pinned = records.encode_got(signal)
            if not await self._queue.kv_compare_and_set(pin, None, pinned):
                pinned = await self._queue.kv_get(pin)
                if pinned is None:
                    raise TransientStepError("the step's signal pin vanished; retrying")
        # Done waiting: drop the consumed buffer entry and this step's waiter entry (either
        # may be left over by a signaller that died after its wake).
        signal = records.pinned_signal(pinned)
        if signal is not None:
            await self._queue.kv_compare_and_set(buffer_key, signal, None)
        raw = await self._queue.kv_get(wait_key)
        waiter = None if raw is None else self._decoded_waiter(raw)
        if raw is not None and (waiter is None or waiter.job_id == job.id):
            await self._queue.kv_compare_and_set(wait_key, raw, None)
        try:
            return records.decode_got(pinned)
        except WorkflowDataError as exc:
            log.warning("run %s: ignoring an undecodable signal: %s", record.run_id, exc)
            return None

    # ---------------------------------------------------------------------------- run

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Process steps and terminal notifications until `shutdown` (use with ``nursery.start``).

        Serves ``queue_name`` with a `taquba.Worker` and, when the runtime has a terminal
        hook, ``hook_queue_name`` (the terminal notifications) with a second one; runs the scan
        for runs whose step job died outside the runtime (at once, then every
        ``dead_step_scan_interval``) and, with ``memo_retention`` set, the retention sweeper
        (first sweep at once, then every ``sweep_interval``). Reports readiness through
        ``task_status`` once both workers are ready.

        After `shutdown`, the step worker stops claiming and lets the steps in flight finish
        (those still running after ``shutdown_grace`` seconds are cancelled and retried
        later); then the notification worker delivers the notifications that are due (those
        waiting for a retry stay queued) and stops the same way; the background tasks stop
        with them. Cancelling the surrounding scope is the hard stop: steps in flight are
        cancelled and handed back to the queue.

        Returns:
            None, after a graceful `shutdown` (at once if it was called before).

        Error handling: the workers retry transient storage errors with backoff (see
        `taquba.Worker.serve`); a fatal error of either worker (`taquba.Fenced`,
        `taquba.QueueClosed`, `taquba.StorageFatal`, a permanent `taquba.StorageError`)
        stops the other and is raised as itself, not inside an exception group.

        Raises:
            taquba.UsageError: this runtime is already serving (one `serve` at a time).
        """
        if self._serving:
            raise UsageError("this Runtime is already serving; one serve at a time")
        self._serving = True
        try:
            await self._serve(task_status)
        finally:
            self._serving = False

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        if self._stop.is_set():
            task_status.started()
            return

        def worker(name: str) -> Worker:
            return Worker(
                self._queue,
                name,
                self.process,
                concurrency=self._concurrency,
                poll_interval=self._poll_interval,
                shutdown_grace=self._grace,
            )

        steps = worker(self._queue_name)
        hooks = worker(self._hook_queue_name) if self._hook is not None else None
        failures: list[Exception] = []
        steps_stopped = trio.Event()

        async def serve_one(
            loops: trio.Nursery,
            one: Worker,
            stopped: trio.Event,
            *,
            task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
        ) -> None:
            try:
                await one.serve(task_status=task_status)
            except Exception as exc:  # raised below, outside the nurseries, unwrapped
                failures.append(exc)
                loops.cancel_scope.cancel()
            finally:
                stopped.set()

        async def stop_steps() -> None:
            await self._stop.wait()
            steps.shutdown()

        async def stop_hooks(hooks: Worker) -> None:
            # Notifications outlive the steps: the ends the step worker committed while
            # draining are delivered before `serve` returns.
            await steps_stopped.wait()
            while True:
                if (await self._queue.stats(self._hook_queue_name)).pending == 0:
                    break
                await trio.sleep(min(self._poll_interval, 0.05))
            hooks.shutdown()

        async with trio.open_nursery() as background:
            try:
                async with trio.open_nursery() as loops:
                    await loops.start(serve_one, loops, steps, steps_stopped)
                    if hooks is not None:
                        await loops.start(serve_one, loops, hooks, trio.Event())
                        loops.start_soon(stop_hooks, hooks)
                    background.start_soon(stop_steps)
                    task_status.started()
                    background.start_soon(self._dead_step_watcher)
                    if self._retention is not None:
                        background.start_soon(self._sweeper)
            finally:
                background.cancel_scope.cancel()  # the background tasks stop with the loops
        if failures:
            raise failures[0]

    def shutdown(self) -> None:
        """Stop gracefully: `serve` returns once the work in flight is done.

        See ``shutdown_grace``. Idempotent and sticky: called before `serve`, `serve` returns
        at once. From another thread: ``trio.from_thread.run_sync(runtime.shutdown)``.
        """
        self._stop.set()

    @property
    def shutting_down(self) -> bool:
        """Whether `shutdown` has been called."""
        return self._stop.is_set()

    # ---------------------------------------------------------------------- processing

    async def process(self, job: JobRecord, lease: LeaseHandle) -> Effects | None:
        """Handle one claimed job of ``queue_name`` or ``hook_queue_name`` (a `taquba.JobHandler`).

        `serve` uses this; call it from your own worker loops to drive the runtime by hand
        (e.g. with `taquba.testing.drain` over both queues). Returns the settlement effects.
        """
        if job.queue_name == self._hook_queue_name:
            self._hooks_in_flight += 1
            try:
                return await self._process_notification(job, lease)
            finally:
                self._hooks_in_flight -= 1
        self._in_flight += 1
        try:
            if job.headers.get(keys.HEADER_CONTROL) is not None:
                return await self._process_control(job, lease)
            return await self._process_step(job, lease)
        finally:
            self._in_flight -= 1

    async def _process_notification(self, job: JobRecord, lease: LeaseHandle) -> Effects | None:
        """Deliver one terminal notification to the hook; raise to retry or dead-letter it.

        Returns the `TerminalEffects` the hook returned, committed with the acknowledgement.
        """
        try:
            stored, _ = records.decode_outcome_blob(job.payload)
            outcome = _decoded_outcome(stored, self._results)
        except (WorkflowDataError, SerializationError) as exc:
            raise PermanentFailure(f"malformed terminal notification: {exc}") from exc
        hook = self._hook
        if hook is None:
            raise PermanentFailure("this runtime has no terminal hook; requeue it for one that has")
        try:
            returned = await self._guarded(
                lambda: hook(outcome), lease, self._hook_queue_name, None
            )
        except PermanentStepError as exc:
            raise PermanentFailure(f"the terminal hook failed: {exc.message}") from exc
        except TransientStepError as exc:
            if exc.retry_after is not None:
                raise RetryLater(exc.message, retry_after=exc.retry_after) from exc
            raise
        if job.attempts > 1:
            log.info(
                "run %s: the terminal hook succeeded on attempt %d", outcome.run_id, job.attempts
            )
        if isinstance(returned, TerminalEffects):
            writes, deletes, enqueues = seal_terminal(returned)
            if writes or deletes or enqueues:
                return Effects(enqueues=enqueues, kv_writes=writes, kv_deletes=deletes)
        elif returned is not None:
            log.warning(
                "run %s: the terminal hook returned a %s, ignored (return TerminalEffects or None)",
                outcome.run_id,
                type(returned).__name__,
            )
        return None

    async def _guarded(
        self,
        call: Callable[[], Awaitable[_T]],
        lease: LeaseHandle,
        queue_name: str,
        time_limit: float | None,
    ) -> _T:
        """Await ``call()`` with the lease kept alive, cancelled after ``time_limit`` seconds.

        Raises what ``call`` raised, or `_TimeLimitExceeded`.
        """
        results: list[_T] = []
        errors: list[Exception] = []
        async with trio.open_nursery() as nursery:
            if self._keep_alive:
                nursery.start_soon(self._keep_lease_alive, lease, queue_name)
            with trio.move_on_after(math.inf if time_limit is None else time_limit) as scope:
                try:
                    results.append(await call())
                except Exception as exc:  # raised below, outside the nursery, unwrapped
                    errors.append(exc)
            nursery.cancel_scope.cancel()
        if errors:
            raise errors[0]
        if not results:
            assert scope.cancelled_caught
            raise _TimeLimitExceeded
        return results[0]

    async def _keep_lease_alive(self, lease: LeaseHandle, queue_name: str) -> None:
        """Renew the lease every third of the queue's lease duration until cancelled."""
        duration = self._queue.config(queue_name).lease_duration
        while True:
            await trio.sleep(max(duration / 3, 0.01))
            try:
                lease.ensure_at_least(duration)
            except ClaimLost:
                return  # reaped already: the delivery is over
            except TaqubaError as exc:
                log.warning("could not renew a lease: %s", exc)
                return

    def _parse_step(self, job: JobRecord) -> tuple[str, int]:
        run_id = job.headers.get(keys.HEADER_RUN_ID)
        step = job.headers.get(keys.HEADER_STEP)
        try:
            keys.validate_run_id(run_id)
            assert run_id is not None
            if step is None or not step.isdecimal() or not step.isascii():
                raise ValueError(step)
            return run_id, int(step)
        except (UsageError, ValueError, AssertionError) as exc:
            raise PermanentFailure(
                f"not a workflow step: headers {keys.HEADER_RUN_ID}={run_id!r} "
                f"{keys.HEADER_STEP}={step!r}"
            ) from exc

    async def _process_step(self, job: JobRecord, lease: LeaseHandle) -> Effects | None:
        effects = await self._process_step_settling(job, lease)
        if job.headers.get(keys.HEADER_SIGNAL_WAIT) is None or lease.expires_at is None:
            return effects
        # The step after a wait: its pinned signal goes with its settlement (any outcome).
        try:
            run_id, number = self._parse_step(job)
            record = await self._read_run(run_id)
        except (PermanentFailure, WorkflowDataError):
            return effects
        if record is None or record.job_id != job.id:
            return effects
        pin = keys.signal_got_key(self._queue_name, record.incarnation, number)
        if effects is None:
            return Effects(kv_deletes=[pin])
        return dataclasses.replace(effects, kv_deletes=[*effects.kv_deletes, pin])

    async def _process_step_settling(self, job: JobRecord, lease: LeaseHandle) -> Effects | None:
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
        resume = self._resume(record, job)
        if lease.cancel_requested or await self._cancel_pending(record):
            if lease.expires_at is None:
                return await self._claim_lost(run_id, job)
            return await self._terminate(
                record, headers, TerminalStatus.CANCELLED, number, last=last, resume=resume
            )

        signal_key = job.headers.get(keys.HEADER_SIGNAL_WAIT)
        signal: bytes | None = None
        if signal_key is not None:
            signal = await self._resolve_signal(job, record, signal_key)

        outcome: records.EncodedOutcome | None = None
        staged = _NOTHING_STAGED
        replayed = False
        if self._replay:
            found = await self._replayed(run_id, number, job.payload)
            if found is not None:
                outcome, staged = found
                replayed = True
        if outcome is None:
            try:
                payload = self._payloads.decode(job.payload, path=f"step {number}'s payload")
            except SerializationError as exc:
                error = PermanentStepError(f"undecodable payload: {exc}")
                return await self._after_error(record, job, lease, error, resume=resume)
            step = Step(
                run_id=run_id,
                number=number,
                payload=payload,
                headers=headers,
                attempt=job.attempts,
                max_attempts=job.max_attempts,
                job_id=job.id,
                memo=counted_memo(self._memos.memo(run_id, number), self._queue, self._queue_name),
                lease=lease,
                signal_key=signal_key,
                signal=signal,
            )
            limit = (
                record.step_time_limit_ms / 1000
                if record.step_time_limit_ms is not None
                else self._step_time_limit
            )
            kv = step_kv(step)
            try:
                returned = await self._guarded(
                    lambda: self._runner(step), lease, self._queue_name, limit
                )
            except _TimeLimitExceeded:
                kv.seal()  # a failed attempt commits none of its staged effects
                assert limit is not None
                error = TransientStepError(
                    f"step {number} exceeded its time limit of {limit:g} s "
                    f"(attempt {job.attempts} of {job.max_attempts})"
                )
                return await self._after_error(record, job, lease, error, resume=resume)
            except Exception as exc:
                kv.seal()  # a failed attempt commits none of its staged effects
                return await self._after_error(record, job, lease, exc, resume=resume)
            staged = kv.seal()
            try:
                outcome = _encoded(returned, self._payloads, self._results)
            except PermanentStepError as error:
                return await self._after_error(record, job, lease, error, resume=resume)

        if lease.expires_at is None:
            # The claim is gone: never settle (or notify) from a stale delivery.
            return await self._claim_lost(run_id, job)
        external = lease.cancel_requested or await self._cancel_pending(record)
        if self._replay and not replayed and not external:
            await self._store.put_blob(
                keys.step_output_path(self._memos.prefix, run_id, number, job.payload),
                records.encode_replay(outcome, self._clock.now_ms(), *staged),
            )
        # The staged KV effects commit with the runner's outcome; an external cancellation
        # overrides the outcome and drops them.
        match outcome:
            case Cancel(reason):
                ended = await self._terminate(
                    record,
                    headers,
                    TerminalStatus.CANCELLED,
                    number,
                    error=reason,
                    last=last,
                    resume=resume,
                )
                return _with_kv(ended, staged)
            case _ if external:
                return await self._terminate(
                    record, headers, TerminalStatus.CANCELLED, number, last=last, resume=resume
                )
            case Continue(payload=payload, on_signal=str(key), timeout=timeout):
                timeout_ms = math.ceil((timeout or 0) * 1000)
                try:
                    waiting = await self._register(job, record, headers, payload, key, timeout_ms)
                except PermanentStepError as error:
                    return await self._after_error(record, job, lease, error, resume=resume)
                return _with_kv(waiting, staged)
            case Continue(payload=payload, delay=delay):
                delay_ms = 0 if delay is None else math.ceil(delay * 1000)
                return _with_kv(self._advance(job, record, headers, payload, delay_ms), staged)
            case Succeed(result):
                ended = await self._terminate(
                    record, headers, TerminalStatus.SUCCEEDED, number, result=result, last=last
                )
                return _with_kv(ended, staged)
            case Fail(error):
                ended = await self._terminate(
                    record,
                    headers,
                    TerminalStatus.FAILED,
                    number,
                    error=error,
                    last=last,
                    resume=resume,
                )
                return _with_kv(ended, staged)

    def _resume(self, record: records.RunRecord, job: JobRecord) -> records.Resume:
        """Where the run stands at ``job``: what `retry` enqueues if the run ends here."""
        return records.Resume(
            step=record.step,
            payload=job.payload,
            priority=job.priority,
            max_attempts=job.max_attempts,
            input_hash=record.input_hash,
            step_time_limit_ms=record.step_time_limit_ms,
        )

    async def _claim_lost(self, run_id: str, job: JobRecord) -> None:
        """The step's claim was lost while it ran: if the job died of it, end its run.

        The reaper dead-letters a step whose lease expired on its last attempt; nothing else
        would ever end its run.
        """
        try:
            current = await self._queue.get_job(job.id)
            if current is not None and current.status is JobStatus.DEAD:
                await self._request_end(run_id, current)
        except _FATAL:
            raise
        except (TaqubaError, WorkflowError) as exc:
            log.warning("run %s: could not check its lost step %s: %s", run_id, job.id, exc)

    async def _after_error(
        self,
        record: records.RunRecord,
        job: JobRecord,
        lease: LeaseHandle,
        exc: Exception,
        *,
        resume: records.Resume,
    ) -> Effects | None:
        """Settle a step whose runner raised: cancel wins, then fail the run, else retry.

        A `PermanentStepError` fails the run now; any other error only on the last attempt.
        """
        headers = _user_headers(job.headers)
        number = record.step
        last = job.attempts >= job.max_attempts
        if lease.expires_at is None:
            await self._claim_lost(record.run_id, job)
            raise exc  # the claim is gone; the nack fails harmlessly and the redelivery runs
        if lease.cancel_requested or await self._cancel_pending(record):
            return await self._terminate(
                record, headers, TerminalStatus.CANCELLED, number, last=last, resume=resume
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
            record, headers, TerminalStatus.FAILED, number, error=message, last=last, resume=resume
        )

    async def _replayed(
        self, run_id: str, number: int, payload: bytes
    ) -> tuple[records.EncodedOutcome, _Staged] | None:
        raw = await self._store.get_blob(
            keys.step_output_path(self._memos.prefix, run_id, number, payload)
        )
        if raw is None:
            return None
        try:
            outcome, stored_at, delay_ms = records.decode_replay(raw)
            staged = records.decode_replay_kv(raw)
        except WorkflowDataError as exc:
            log.warning("ignoring step-output record of run %s step %d: %s", run_id, number, exc)
            return None
        if isinstance(outcome, Continue) and outcome.on_signal is not None:
            left = keys.remaining_delay(stored_at, self._clock.now_ms(), delay_ms)
            outcome = Continue(outcome.payload, on_signal=outcome.on_signal, timeout=left / 1000)
        elif isinstance(outcome, Continue) and outcome.delay is not None:
            left = keys.remaining_delay(stored_at, self._clock.now_ms(), delay_ms)
            outcome = Continue(outcome.payload, delay=left / 1000)
        return outcome, staged

    def _advance(
        self,
        job: JobRecord,
        record: records.RunRecord,
        headers: Mapping[str, str],
        payload: bytes,
        delay_ms: int,
        *,
        signal_key: str | None = None,
    ) -> Effects:
        """The effects of a transition: the next step's job and the advanced run record."""
        next_id = self._queue.next_job_id()
        waits = {} if signal_key is None else {keys.HEADER_SIGNAL_WAIT: signal_key}
        run_at = _run_at(self._clock.now_ms() + delay_ms) if delay_ms > 0 else None
        request = EnqueueRequest(
            queue_name=self._queue_name,
            payload=bytes(payload),
            priority=job.priority,
            run_at=run_at,
            headers={
                **headers,
                keys.HEADER_RUN_ID: record.run_id,
                keys.HEADER_STEP: str(record.step + 1),
                **waits,
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
        resume: records.Resume | None = None,
    ) -> Effects:
        """Write the outcome blob and marker, and return the terminal effects.

        The blob and marker are written before the settlement commits; a failure retries the
        delivery, except on the last attempt, where the run's end commits anyway and the
        failure is logged. The effects record the outcome, delete the run's records and, when
        the runtime has a hook, enqueue the terminal notification: it exists if and only if
        the end committed. ``resume`` (for a failed or cancelled end) is what `retry` needs.
        """
        now = self._clock.now_ms()
        run_id = record.run_id
        outcome: RunOutcome[bytes] = RunOutcome(
            run_id=run_id,
            status=status,
            result=result,
            error=error,
            headers=dict(headers),
            final_step=final_step,
            finished_at_ms=now,
        )

        async def outcome_blob() -> None:
            await self._store.put_blob(
                keys.outcome_path(self._memos.prefix, run_id),
                records.encode_outcome_blob(
                    outcome,
                    record.incarnation,
                    None if status is TerminalStatus.SUCCEEDED else resume,
                ),
            )

        async def marker() -> None:
            if self._retention is not None:
                await self._memos.write_terminal_marker(run_id, now)

        for action, what in ((outcome_blob, "outcome blob"), (marker, "marker")):
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
        notifications: list[EnqueueRequest] = []
        if self._hook is not None:
            notifications.append(
                EnqueueRequest(
                    queue_name=self._hook_queue_name,
                    payload=records.encode_outcome_blob(outcome, record.incarnation),
                    headers={keys.HEADER_RUN_ID: run_id, keys.HEADER_TERMINAL: status.value},
                )
            )
        # Counted when the end is decided: a settlement that then fails is counted again
        # when the step is redelivered (at least once).
        labels = {"queue": self._queue_name, "state": status.value}
        taquba.count_event(self._queue, "workflow_runs", labels)
        return Effects(
            enqueues=notifications,
            kv_writes={
                self._outcome_key(run_id): records.OutcomeRecord(
                    run_id, record.incarnation, status, final_step, error, now, record.input_hash
                ).encode()
            },
            kv_deletes=[
                self._run_key(run_id),
                self._cancel_key(run_id),
                self._ending_key(run_id),
            ],
        )

    async def _process_control(self, job: JobRecord, lease: LeaseHandle) -> Effects | None:
        kind = job.headers.get(keys.HEADER_CONTROL)
        run_id = job.headers.get(keys.HEADER_RUN_ID)
        if kind == _CONTROL_END and run_id is not None:
            return await self._process_end(job, lease, run_id)
        if kind != CONTROL_CANCEL or run_id is None:
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
            step_job = await self._queue.get_job(record.job_id)  # for `retry`, before removal
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
                again,
                again.headers,
                TerminalStatus.CANCELLED,
                again.step,
                last=last,
                resume=None if step_job is None else self._resume(again, step_job),
            )

    async def _process_end(self, job: JobRecord, lease: LeaseHandle, run_id: str) -> Effects | None:
        """End a run as failed because its step job was dead-lettered outside the runtime."""
        try:
            keys.validate_run_id(run_id)
            request = records.decode_end_request(job.payload)
        except WorkflowError as exc:
            raise PermanentFailure(f"malformed end request: {exc}") from exc
        record = await self._read_run(run_id)
        dead = None if record is None else await self._queue.get_job(request.dead_job_id)
        if (
            record is None
            or record.incarnation != request.incarnation
            or record.job_id != request.dead_job_id
            or dead is None
            or dead.status is not JobStatus.DEAD  # requeued meanwhile: the step runs again
        ):
            key = self._ending_key(run_id)
            raw = await self._queue.kv_get(key)
            if raw is not None and raw == job.payload:
                await self._queue.kv_compare_and_set(key, raw, None)
            return None
        if lease.expires_at is None:
            return None
        reason = (
            f"step {record.step} dead-lettered: {dead.last_error or 'no reason recorded'} "
            f"after {dead.attempts} attempt{'s' if dead.attempts != 1 else ''}"
        )
        return await self._terminate(
            record,
            record.headers,
            TerminalStatus.FAILED,
            record.step,
            error=reason,
            last=job.attempts >= job.max_attempts,
            resume=self._resume(record, dead),
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
            taquba.UsageError: the runtime has no ``memo_retention``.
        """
        if self._retention is None:
            raise UsageError("sweep_now needs memo_retention")
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
