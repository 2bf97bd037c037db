"""`Bulk`: runs one pipeline over many inputs, one workflow run per item, in one process."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterable, Sized
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import trio

from taquba import (
    ClaimLost,
    Fenced,
    JobNotFound,
    QueueClosed,
    StorageFatal,
    TaqubaError,
    UsageError,
)
from taquba_workflow import (
    RESERVED_HEADER_PREFIX,
    InputMismatch,
    PermanentStepError,
    RunNotRetryable,
    RunOutcome,
    RunSpec,
    RunState,
    RunStatus,
    Runtime,
    Step,
    StepError,
    StepOutcome,
    Succeed,
    TerminalStatus,
    TransientStepError,
    WorkflowDataError,
    WorkflowError,
    read_run_outcome,
)

from . import _codec as codec  # pyright: ignore[reportPrivateUsage]
from ._cost import CostReport
from ._display import LiveProgress, stderr_is_terminal
from ._errors import FailureThresholdExceeded, ItemInputMismatch, OutputError
from ._pipeline import BulkCtx, Pipeline, describe
from ._sinks import NullSink, OutputSink
from ._tally import Observation, Tally
from ._types import BulkReport, ProgressSnapshot

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Mapping

    from taquba import LeaseHandle, QueueLike

__all__ = ["DEFAULT_MEMO_PREFIX", "DEFAULT_QUEUE_NAME", "Bulk"]

log = logging.getLogger("taquba_bulk")

InT = TypeVar("InT")
OutT = TypeVar("OutT")

DEFAULT_QUEUE_NAME: Final = "bulk-items"
"""The queue items run on unless `Bulk` is given another ``queue_name``."""

DEFAULT_MEMO_PREFIX: Final = "bulk-memo"
"""The blob prefix of item memos and outcomes unless `Bulk` is given another ``memo_prefix``."""

BULK_KV_PREFIX: Final = "bulk/"
"""The queue user-KV namespace of taquba-bulk (one durability-barrier key per queue name)."""

_FATAL = (Fenced, QueueClosed, StorageFatal)
_SINK_FLUSH_INTERVAL = 1.0
_DISPLAY_INTERVAL = 0.2
_TERMINAL = {
    RunState.SUCCEEDED: TerminalStatus.SUCCEEDED,
    RunState.FAILED: TerminalStatus.FAILED,
    RunState.CANCELLED: TerminalStatus.CANCELLED,
}


@dataclass(eq=False)
class _Batch:
    """The state of one `Bulk.run` call."""

    tally: Tally
    started: float
    finished: float | None = None
    submit_elapsed: float | None = None
    settling: dict[str, None] = field(default_factory=dict[str, None])  # ordered set
    job_ids: dict[str, str] = field(default_factory=dict[str, str])
    # Run ids whose step this process ran (or cancelled) in this batch run: an end of theirs
    # happened here, so it reaches the terminal hook; see `Bulk._admit`.
    acted_on: set[str] = field(default_factory=set[str])
    attempt_costs: dict[str, CostReport] = field(default_factory=dict[str, CostReport])
    wake: trio.Event = field(default_factory=trio.Event)
    stop: trio.Event = field(default_factory=trio.Event)
    submit_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    failure: BaseException | None = None
    unflushed: bool = False
    last_flush: float = 0.0

    def halt(self) -> None:
        self.stop.set()
        self.submit_scope.cancel()

    def fail(self, error: BaseException) -> None:
        if self.failure is None:
            self.failure = error
        self.halt()


def _check_count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be a positive int, not {value!r}")
    return value


def _check_seconds(value: object, name: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise UsageError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


def _check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    checked: dict[str, str] = {}
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not isinstance(value, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError("headers must map str to str")
        if name.startswith(RESERVED_HEADER_PREFIX):
            raise UsageError(f"header {name!r} is in the reserved 'workflow.' namespace")
        checked[name] = value
    return checked


async def _items(inputs: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(inputs, AsyncIterable):
        async for item in inputs:
            yield item
    else:
        for item in inputs:
            yield item
            await trio.lowlevel.checkpoint()


class Bulk(Generic[InT, OutT]):
    """Runs one `Pipeline` over many inputs: one durable workflow run per item.

        async with taquba.open_queue("./data", "bulk") as queue:
            with JsonlSink("out.jsonl") as sink:
                bulk = Bulk(queue, Summarize(), output=sink, key=key_by_content)
                report = await bulk.run(read_jsonl("in.jsonl"))

    `run` submits every input (bounded-concurrency submission, while the items already
    submitted are processing), runs the items with up to ``concurrency`` at once,
    writes each item's `OutputRecord` to the sink once its end commits, and returns a
    `BulkReport` when every item has completed. Run it again with the same inputs to resume:
    items that succeeded are not run again (their records are written again from the store),
    items still running carry on, and failed or cancelled items run again, resuming from
    their memos. `shutdown` stops a batch early (on a signal, say), draining the items in
    flight; `run` then returns the partial report.

    One `Bulk` runs one batch at a time, in the process that opened the queue or, over any
    `taquba.QueueLike` that reaches the owner (a remote queue), in another one.

    Args:
        queue: the open queue (a `taquba.Queue` or any `taquba.QueueLike`); its ``store``
            also holds the memos and outcomes.
        pipeline: what to do with each item.
        output: where item records go (default `NullSink`).
        key: the item's key, which becomes its run id: a stable function of the item,
            returning 1 to 128 of ``[A-Za-z0-9_-]`` (see `key_by_content`). Default: the
            item's position, ``item-<index>``, so a rerun must present the same inputs in the
            same order.
        headers: metadata every item's `BulkCtx.headers` shows (not ``workflow.*``).
        concurrency: items processed at once.
        submit_concurrency: submissions in flight at once (each waits for a durable commit;
            concurrent ones share the database's group commits).
        poll_interval: the longest idle wait between claim attempts, in seconds.
        queue_name: the queue the items run on; one batch per queue name at a time.
        memo_prefix: the blob prefix of the items' memos and outcomes.
        failure_threshold: fail the batch with `FailureThresholdExceeded` once more than this
            fraction of its items failed (0.0: any failure; 1.0: never); None: no threshold.
        max_attempts: attempts per item before it fails (default: the queue's
            ``max_attempts``); transient errors are retried with the queue's backoff.
        shutdown_grace: after `shutdown`, seconds the items in flight get to finish before
            they are cancelled and handed back to the queue (None: wait for them).
        progress: draw a live progress bar on standard error: True, False, or None (the
            default) to draw it only when standard error is a terminal.
    """

    def __init__(
        self,
        queue: QueueLike,
        pipeline: Pipeline[InT, OutT],
        *,
        output: OutputSink | None = None,
        key: Callable[[InT], str] | None = None,
        headers: Mapping[str, str] | None = None,
        concurrency: int = 200,
        submit_concurrency: int = 32,
        poll_interval: float = 0.25,
        queue_name: str = DEFAULT_QUEUE_NAME,
        memo_prefix: str = DEFAULT_MEMO_PREFIX,
        failure_threshold: float | None = None,
        max_attempts: int | None = None,
        shutdown_grace: float | None = None,
        progress: bool | None = None,
    ) -> None:
        if not isinstance(pipeline, Pipeline):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError("pipeline must be a Pipeline (see as_pipeline for functions)")
        if output is None:
            output = NullSink()
        if not isinstance(output, OutputSink):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError("output must have write(record) and flush() methods")
        if key is not None and not callable(key):
            raise UsageError("key must be a function of the item")
        if failure_threshold is not None and (
            isinstance(failure_threshold, bool)
            or not isinstance(failure_threshold, (int, float))  # pyright: ignore[reportUnnecessaryIsInstance]
            or not 0.0 <= failure_threshold <= 1.0
        ):
            raise UsageError(
                f"failure_threshold is a fraction from 0.0 to 1.0, not {failure_threshold!r}"
            )
        if max_attempts is not None:
            _check_count(max_attempts, "max_attempts")
        self._queue = queue
        self._pipeline = pipeline
        self._output = output
        self._key = key
        self._headers = _check_headers(headers)
        self._submit_concurrency = _check_count(submit_concurrency, "submit_concurrency")
        self._poll_interval = _check_seconds(poll_interval, "poll_interval") or 0.25
        self._threshold = None if failure_threshold is None else float(failure_threshold)
        self._max_attempts = max_attempts
        self._grace = _check_seconds(shutdown_grace, "shutdown_grace", optional=True)
        self._progress = progress
        self._concurrency = _check_count(concurrency, "concurrency")
        self._queue_name = queue_name
        self._memo_prefix = memo_prefix
        self._runtime = self._new_runtime()  # checks queue_name and memo_prefix
        self._served = False  # a Runtime serves once (its shutdown is sticky)
        self._barrier_key = f"{BULK_KV_PREFIX}{self._runtime.queue_name}/barrier".encode()
        self._batch: _Batch | None = None
        self._running = False
        self._stop = trio.Event()

    def _new_runtime(self) -> Runtime[bytes, bytes]:
        return Runtime(
            self._queue,
            self._run_step,
            self._on_end,
            payload_type=bytes,  # the item payloads and result envelopes are bulk's own
            result_type=bytes,
            queue_name=self._queue_name,
            concurrency=self._concurrency,
            poll_interval=self._poll_interval,
            shutdown_grace=self._grace,
            memo_prefix=self._memo_prefix,
        )

    # ------------------------------------------------------------------------ properties

    @property
    def queue(self) -> QueueLike:
        """The queue the bulk runs on."""
        return self._queue

    @property
    def pipeline(self) -> Pipeline[InT, OutT]:
        """The pipeline each item runs."""
        return self._pipeline

    @property
    def runtime(self) -> Runtime[bytes, bytes]:
        """The workflow runtime underneath: ``runtime.status(run_id)``, ``runtime.outcome``.

        Its payloads and results are taquba-bulk's own encodings (bytes).
        """
        return self._runtime

    @property
    def queue_name(self) -> str:
        """The queue the items run on."""
        return self._runtime.queue_name

    def progress(self) -> ProgressSnapshot:
        """A snapshot of the current (or the last) batch run; all zeros before the first."""
        batch = self._batch
        if batch is None:
            return Tally().snapshot(0.0)
        end = batch.finished if batch.finished is not None else trio.current_time()
        return batch.tally.snapshot(end - batch.started)

    async def cancel(self, run_id: str) -> bool:
        """Cancel an item: it ends ``cancelled`` (see `taquba_workflow.Runtime.cancel`).

        Returns:
            False if the item is not active (unknown, or already ended).
        """
        run_id = codec.validate_key(run_id)
        cancelled = await self._runtime.cancel(run_id)
        batch = self._batch
        if cancelled and batch is not None and self._running:
            batch.acted_on.add(run_id)  # it ends in this process: the hook reports it
        return cancelled

    # ------------------------------------------------------------------------------ run

    async def run(
        self, inputs: Iterable[InT] | AsyncIterable[InT], *, expected_total: int | None = None
    ) -> BulkReport:
        """Run every input to completion; return the report.

        Args:
            inputs: the items: any iterable or async iterable (read lazily).
            expected_total: how many items to expect, for progress and ETA before every
                input is read (default ``len(inputs)`` when it has one).

        Raises:
            FailureThresholdExceeded: more than ``failure_threshold`` of the items failed.
            InvalidItemKey: the key function returned an invalid run id.
            DuplicateItemKey: two different items share a key.
            ItemInputMismatch: a key names a different input than on an earlier run.
            UnserializableItem: an item cannot be serialized.
            OutputError: the output sink failed.
            taquba.UsageError: the bulk is already running a batch.

        To stop a batch early (a signal, a spot-preemption notice), call `shutdown`:
        submission stops and the items in flight drain: they finish (within
        ``shutdown_grace``, if set; the rest are handed back to the queue) and are counted.
        Everything else stays durable; running the batch again (with a new `Bulk`) resumes
        it. The report then has ``complete=False`` and the unfinished items in ``pending``;
        `FailureThresholdExceeded` is still raised if the failures alone already exceed the
        threshold of the whole batch.
        """
        if self._running:
            raise UsageError("this Bulk is already running a batch")
        if expected_total is None and isinstance(inputs, Sized):
            expected_total = len(inputs)
        if expected_total is not None and (
            isinstance(expected_total, bool)
            or not isinstance(expected_total, int)  # pyright: ignore[reportUnnecessaryIsInstance]
            or expected_total < 0
        ):
            raise UsageError(f"expected_total must be a non-negative int, not {expected_total!r}")
        batch = _Batch(Tally(expected_total=expected_total), trio.current_time())
        self._batch = batch
        if self._stop.is_set():  # shut down before it started: nothing runs
            batch.finished = batch.started
            return self._report(batch)
        self._running = True
        if self._served:
            self._runtime = self._new_runtime()
        self._served = True
        try:
            await self._run_batch(batch, inputs)
        finally:
            self._running = False
            batch.finished = trio.current_time()
        report = self._report(batch)
        if batch.failure is not None:
            raise batch.failure
        if batch.tally.sealed and codec.threshold_exceeded(
            report.failed, report.total, self._threshold
        ):
            assert self._threshold is not None
            raise FailureThresholdExceeded(report, self._threshold)
        return report

    def shutdown(self) -> None:
        """Stop the running batch gracefully: `run` returns once the items in flight drain.

        Submission stops; items in flight get ``shutdown_grace`` seconds to finish, the rest
        are handed back to the queue (they run again when the batch is run again). Idempotent
        and sticky: after it, `run` returns at once (build a new `Bulk` to resume the batch).
        From another thread: ``trio.from_thread.run_sync(bulk.shutdown)``.
        """
        self._stop.set()

    @property
    def shutting_down(self) -> bool:
        """Whether `shutdown` has been called."""
        return self._stop.is_set()

    def _report(self, batch: _Batch) -> BulkReport:
        tally = batch.tally
        end = batch.finished if batch.finished is not None else trio.current_time()
        return BulkReport(
            total=tally.admitted,
            succeeded=tally.succeeded,
            failed=tally.failed,
            cancelled=tally.cancelled,
            skipped=tally.skipped,
            pending=tally.pending,
            complete=tally.done,
            elapsed=end - batch.started,
            submit_elapsed=batch.submit_elapsed
            if batch.submit_elapsed is not None
            else end - batch.started,
            cost=tally.cost.copy(),
            failed_run_ids=tuple(tally.failed_run_ids),
        )

    async def _run_batch(self, batch: _Batch, inputs: Iterable[InT] | AsyncIterable[InT]) -> None:
        runtime = self._runtime
        runtime_done = trio.Event()
        show = self._progress if self._progress is not None else stderr_is_terminal()

        async def serve() -> None:
            try:
                await runtime.serve()
            except Exception as exc:  # Fenced, QueueClosed, ...: reported by run()
                batch.fail(exc)
            finally:
                runtime_done.set()

        async def on_shutdown() -> None:
            await self._stop.wait()
            batch.halt()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            nursery.start_soon(on_shutdown)
            nursery.start_soon(self._confirm_loop, batch)
            if show:
                nursery.start_soon(self._display_loop, batch)
            try:
                with batch.submit_scope:
                    await self._submit_all(batch, inputs)
                if not batch.stop.is_set():  # stopped before the end: interrupted or failed
                    batch.tally.seal()
                    self._after_count(batch)
            except Exception as exc:
                batch.fail(exc)
            batch.submit_elapsed = trio.current_time() - batch.started
            await batch.stop.wait()
            runtime.shutdown()
            await runtime_done.wait()  # the items in flight have drained
            try:
                await self._confirm_pass(batch)
                self._flush(batch)
            except Exception as exc:
                if batch.failure is None:
                    batch.fail(exc)
            nursery.cancel_scope.cancel()

    # ------------------------------------------------------------------------ submission

    async def _submit_all(self, batch: _Batch, inputs: Iterable[InT] | AsyncIterable[InT]) -> None:
        slots = trio.Semaphore(self._submit_concurrency)
        async with trio.open_nursery() as nursery:
            try:
                index = 0
                async for item in _items(inputs):
                    await slots.acquire()
                    nursery.start_soon(self._admit, batch, index, item, slots)
                    index += 1
            except Exception as exc:  # the input iterator failed (e.g. a bad JSON line)
                batch.fail(exc)

    async def _admit(self, batch: _Batch, index: int, item: InT, slots: trio.Semaphore) -> None:
        try:
            run_id = codec.validate_key(
                self._key(item) if self._key is not None else codec.positional_key(index)
            )
            payload = codec.encode_item(self._pipeline.encode_input(item))
            input_digest = codec.digest(payload)
            tally = batch.tally
            if not tally.admit(run_id, input_digest):
                return  # the same item again: it runs and counts once
            self._after_count(batch)
            if tally.has_ended(run_id):
                return  # this run already ended it (an item left running earlier)
            status = await self._runtime.status(run_id)
            if tally.has_ended(run_id):
                return
            if status is not None and status.state.terminal and run_id in batch.acted_on:
                # It ended in this process (the runtime ran it before the submitter got here),
                # and its terminal notification is on the way: the hook counts it. Ends are
                # visible before they are notified, so the status alone cannot tell an end of
                # this run of the batch from one of an earlier run.
                return
            if status is not None and status.state is RunState.SUCCEEDED:
                problem = await self._finish_earlier(batch, run_id, input_digest)
                if problem is not None and not tally.has_ended(run_id):
                    # Submission is idempotent: the succeeded run cannot run again.
                    tally.confirm(
                        run_id,
                        TerminalStatus.FAILED,
                        f"its earlier success cannot be read back: {problem}",
                    )
                    self._after_count(batch)
                return
            try:
                submitted = await self._runtime.submit(
                    RunSpec(
                        input=payload,
                        run_id=run_id,
                        headers=self._headers,
                        max_attempts_per_step=self._max_attempts,
                    )
                )
            except InputMismatch as exc:
                raise ItemInputMismatch(run_id) from exc
            if (
                not submitted.newly_submitted
                and status is not None
                and status.state in (RunState.FAILED, RunState.CANCELLED)
            ):
                # It ended in an earlier run of the batch (the resubmission returned that
                # run): run it again from the step where it stopped, with its memos.
                try:
                    await self._runtime.retry(run_id)
                except RunNotRetryable as exc:
                    if not tally.has_ended(run_id):
                        tally.confirm(run_id, TerminalStatus.FAILED, str(exc))
                        self._after_count(batch)
        except Exception as exc:
            batch.fail(exc)
        finally:
            slots.release()

    async def _finish_earlier(self, batch: _Batch, run_id: str, input_digest: str) -> str | None:
        """Count an item that succeeded in an earlier run; else say why its output is lost."""
        try:
            outcome = await read_run_outcome(
                self._queue.store, run_id, memo_prefix=self._runtime.memos.prefix
            )
        except WorkflowDataError as exc:
            log.warning("item %s: its stored outcome is unreadable (%s)", run_id, exc)
            return f"its stored outcome is unreadable ({exc})"
        if outcome is None or outcome.status is not TerminalStatus.SUCCEEDED:
            return "its stored outcome is missing"
        try:
            envelope = codec.decode_envelope(outcome.result or b"")
        except ValueError as exc:
            log.warning("item %s: %s", run_id, exc)
            return str(exc)
        if envelope.input_digest != input_digest:
            raise ItemInputMismatch(run_id)
        if not batch.tally.has_ended(run_id):
            batch.tally.finish_earlier(run_id, envelope.output, envelope.cost)
            self._after_count(batch)
        return None

    # ------------------------------------------------------------------------ execution

    async def _run_step(self, step: Step[bytes]) -> StepOutcome[bytes, bytes]:
        """The workflow step runner: one attempt at one item."""
        if step.number != 0:
            raise PermanentStepError(f"run {step.run_id} is not a taquba-bulk item")
        batch = self._batch
        if batch is not None:
            batch.acted_on.add(step.run_id)  # before anything can end the run
        input_digest = codec.digest(step.payload)
        try:
            item = self._pipeline.decode_input(codec.decode_item(step.payload))
        except Exception as exc:
            raise PermanentStepError(f"undecodable input: {describe(exc)}") from exc
        ctx = BulkCtx(
            input=item,
            run_id=step.run_id,
            headers=step.headers,
            attempt=step.attempt,
            memo=step.memo,
            input_digest=input_digest,
            lease=step.lease,
        )
        if batch is not None:
            batch.job_ids[step.run_id] = step.job_id
        error: Exception | None = None
        output: Any = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep_lease, step.lease)
            try:
                output = await self._pipeline.run(ctx)
            except Exception as exc:
                error = exc
            finally:
                nursery.cancel_scope.cancel()
        try:
            if error is not None:
                raise self._classify(error)
            try:
                plain = self._pipeline.encode_output(output)
            except Exception as exc:
                raise PermanentStepError(f"encode_output failed: {describe(exc)}") from exc
            problem = codec.json_problem(plain)
            if problem is not None:
                raise PermanentStepError(f"the output is not JSON data: {problem}")
            try:
                envelope = codec.encode_envelope(input_digest, plain, ctx.cost)
            except Exception as exc:
                raise PermanentStepError(f"cannot serialize the output: {exc}") from exc
        except StepError:
            if batch is not None:
                batch.attempt_costs[step.run_id] = ctx.cost.copy()
            raise
        if batch is not None:
            batch.attempt_costs.pop(step.run_id, None)
        return Succeed(envelope)

    def _classify(self, error: Exception) -> StepError:
        try:
            mapped = self._pipeline.step_error(error)
        except Exception as exc:
            log.error("step_error raised %s; retrying the item", describe(exc))
            mapped = None
        if not isinstance(mapped, StepError):
            mapped = TransientStepError(describe(error))
        if mapped is not error:
            mapped.__cause__ = error
        return mapped

    async def _keep_lease(self, lease: LeaseHandle) -> None:
        """Keep the delivery's lease alive while the pipeline runs (it may be slow)."""
        duration = self._queue.config(self.queue_name).lease_duration
        interval = max(duration / 3, 0.01)
        while True:
            await trio.sleep(interval)
            try:
                lease.ensure_at_least(duration)
            except ClaimLost:
                return
            except TaqubaError as exc:
                log.warning("could not extend a lease: %s", exc)
                return

    async def _on_end(self, outcome: RunOutcome[bytes]) -> None:
        """The terminal hook: note the item's end (it has committed). Never raises."""
        batch = self._batch
        if batch is None:
            return
        try:
            tally = batch.tally
            run_id = outcome.run_id
            if tally.sealed and not tally.is_member(run_id):
                batch.attempt_costs.pop(run_id, None)
                return
            output: Any = None
            cost: CostReport | None = None
            if outcome.status is TerminalStatus.SUCCEEDED:
                try:
                    envelope = codec.decode_envelope(outcome.result or b"")
                    output, cost = envelope.output, envelope.cost
                except ValueError as exc:
                    log.error("item %s: %s", run_id, exc)
            else:
                cost = batch.attempt_costs.pop(run_id, None)
            tally.observe(run_id, Observation(outcome.status, output, outcome.error, cost))
            batch.settling[run_id] = None
            batch.wake.set()
        except Exception:
            log.exception("taquba-bulk: the terminal hook failed on %s", outcome.run_id)

    # ----------------------------------------------------------------- confirmation

    async def _confirm_loop(self, batch: _Batch) -> None:
        """Count observed ends once they have committed (read back from the database)."""
        while True:
            if not batch.settling:
                await batch.wake.wait()
                batch.wake = trio.Event()
                continue
            # Wait for the oldest settling item's job to complete (its ack commits, usually
            # with others in one group commit), then read back every settling item.
            job_id = next((batch.job_ids[r] for r in batch.settling if r in batch.job_ids), None)
            try:
                with trio.move_on_after(self._poll_interval):
                    if job_id is None:  # ended by a control job: no job of ours to follow
                        await trio.sleep(min(self._poll_interval, 0.02))
                    else:
                        with contextlib.suppress(JobNotFound):  # already acknowledged
                            await self._queue.wait_for_completion(job_id)
                confirmed = await self._confirm_pass(batch)
            except _FATAL as exc:
                batch.fail(exc)
                return
            except (TaqubaError, WorkflowError) as exc:
                log.warning("confirming item ends: %s; retrying", exc)
                confirmed = 0
            if not confirmed:
                await trio.sleep(self._poll_interval)

    async def _confirm_pass(self, batch: _Batch) -> int:
        ended: list[tuple[str, RunStatus | None]] = []
        for run_id in list(batch.settling):
            status = await self._runtime.status(run_id)
            if status is None or status.state.terminal:
                ended.append((run_id, status))
            # else: not committed yet (or its settlement failed and it will run again)
        if ended:
            # A read can see a commit before it is durable; a durable write that returns
            # after the reads makes every earlier commit durable too (the WAL is ordered),
            # so no item is reported done and then lost to a crash.
            await self._queue.kv_put(self._barrier_key, b"")
        for run_id, status in ended:
            batch.settling.pop(run_id, None)
            batch.job_ids.pop(run_id, None)
            if status is None:
                batch.tally.confirm(run_id, None)
            else:
                batch.tally.confirm(run_id, _TERMINAL[status.state], status.error)
        self._after_count(batch)
        return len(ended)

    def _after_count(self, batch: _Batch) -> None:
        """Write newly counted records to the sink; stop when done or over the threshold."""
        records = batch.tally.take_records()
        if records:
            try:
                for record in records:
                    self._output.write(record)
            except Exception as exc:
                error = OutputError(f"the output sink failed: {describe(exc)}")
                error.__cause__ = exc
                batch.fail(error)
                return
            batch.unflushed = True
            now = trio.current_time()
            if now - batch.last_flush >= _SINK_FLUSH_INTERVAL:
                self._flush(batch)
        tally = batch.tally
        over = tally.sealed and codec.threshold_exceeded(
            tally.failed, tally.admitted, self._threshold
        )
        if over or tally.done:  # over the threshold: certain once the total is known
            batch.halt()

    def _flush(self, batch: _Batch) -> None:
        batch.last_flush = trio.current_time()
        batch.unflushed = False
        try:
            self._output.flush()
        except Exception as exc:
            error = OutputError(f"the output sink failed to flush: {describe(exc)}")
            error.__cause__ = exc
            batch.fail(error)

    # ------------------------------------------------------------------------ display

    async def _display_loop(self, batch: _Batch) -> None:
        with LiveProgress(f"bulk {self.queue_name}") as display:
            try:
                while True:
                    display.update(self.progress())
                    await trio.sleep(_DISPLAY_INTERVAL)
            finally:
                display.update(self.progress())
