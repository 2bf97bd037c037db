"""Runtime-free operations on runs: list them, cancel one, count its memo entries.

An operator's process (the taquba-server dashboard, a script) holds the queue but not the
application's step functions, so it cannot build a `Runtime`. These functions need only a
`taquba.QueueLike` (and a `taquba.BlobStore` for memos) and read the same records the runtime
writes (the key layout is in ``_keys``). `Runtime.cancel` is `cancel_run`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from taquba import (
    Fenced,
    JobStatus,
    KvConflict,
    QueueClosed,
    StorageFatal,
    TaqubaError,
    UsageError,
    validate_queue_name,
)

from . import _keys as keys  # pyright: ignore[reportPrivateUsage]
from . import _records as records  # pyright: ignore[reportPrivateUsage]
from ._errors import WorkflowDataError
from ._types import RunState, TerminalStatus

if TYPE_CHECKING:
    from collections.abc import Mapping

    from taquba import BlobStore, Clock, QueueLike

__all__ = ["RunPage", "RunSummary", "cancel_run", "get_run", "list_memos", "list_runs"]

log = logging.getLogger("taquba_workflow")

CONTROL_CANCEL: Final = "cancel"
"""The `HEADER_CONTROL` value of a cancellation control job."""
CONTROL_PRIORITY: Final = 0
"""Control jobs are claimed before any step."""
STATE_OF: Final = {
    TerminalStatus.SUCCEEDED: RunState.SUCCEEDED,
    TerminalStatus.FAILED: RunState.FAILED,
    TerminalStatus.CANCELLED: RunState.CANCELLED,
}
_FATAL = (Fenced, QueueClosed, StorageFatal)


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One run of a `list_runs` page, read from the queue database."""

    run_id: str
    """The run's id."""
    state: RunState
    """Where the run is, as `Runtime.status` reports it."""
    step: int
    """The current step (active runs) or the final step (ended runs)."""
    submitted_at_ms: int | None = None
    """When the run was submitted (ms since the epoch, runtime clock); None for ended runs
    (their outcome record does not keep it)."""
    finished_at_ms: int | None = None
    """When the run ended (ms since the epoch, runtime clock); None while active."""
    error: str | None = None
    """Why the run failed or was cancelled, if known (ended runs)."""
    job_id: str | None = None
    """The id of the job carrying the current step (active runs); None for ended runs."""
    headers: Mapping[str, str] = field(default_factory=dict[str, str])
    """The run's headers (active runs; ended runs keep theirs in the outcome blob, see
    `read_run_outcome`)."""


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of `list_runs`."""

    runs: list[RunSummary]
    """The runs of the page, in run-id order."""
    next_after: str | None
    """Pass as ``after`` to read the next page; None when the listing is exhausted."""
    skipped: int = 0
    """Records of the page that could not be decoded and were left out (and logged)."""


def _run_prefix(queue_name: str, ended: bool) -> bytes:
    kind = "outcomes" if ended else "runs"
    return f"workflow/{queue_name}/{kind}/".encode()


async def cancel_pending(queue: QueueLike, queue_name: str, record: records.RunRecord) -> bool:
    """Whether a cancellation request of ``record``'s incarnation is pending.

    An undecodable request is honoured (logged): cancelling is what someone asked for.
    """
    raw = await queue.kv_get(keys.cancel_key(queue_name, record.run_id))
    if raw is None:
        return False
    try:
        return records.decode_cancel_incarnation(raw) == record.incarnation
    except WorkflowDataError:
        log.error("undecodable cancellation request of run %s; honouring it", record.run_id)
        return True


def _active(run_id: str, record: records.RunRecord, pending: bool) -> RunSummary:
    return RunSummary(
        run_id,
        RunState.CANCELLING if pending else RunState.RUNNING,
        record.step,
        submitted_at_ms=record.submitted_at_ms,
        job_id=record.job_id,
        headers=dict(record.headers),
    )


def _ended(run_id: str, outcome: records.OutcomeRecord) -> RunSummary:
    return RunSummary(
        run_id,
        STATE_OF[outcome.status],
        outcome.final_step,
        finished_at_ms=outcome.finished_at_ms,
        error=outcome.error,
    )


async def get_run(queue: QueueLike, queue_name: str, run_id: str) -> RunSummary | None:
    """One run of ``queue_name`` as `list_runs` shows it, or None if no such run is known.

    `Runtime.status` without a runtime, with the details of `RunSummary`: an active run is
    reported as active even when an earlier end of its id is still recorded.

    Raises:
        InvalidRunId: ``run_id`` is not a valid run id.
        taquba.UsageError: ``queue_name`` is invalid.
        WorkflowDataError: the run's record cannot be decoded.
    """
    queue_name = validate_queue_name(queue_name)
    run_id = keys.validate_run_id(run_id)
    raw = await queue.kv_get(keys.run_key(queue_name, run_id))
    if raw is not None:
        record = records.decode_run(raw)
        return _active(run_id, record, await cancel_pending(queue, queue_name, record))
    raw = await queue.kv_get(keys.outcome_key(queue_name, run_id))
    return None if raw is None else _ended(run_id, records.decode_outcome_record(raw))


async def list_runs(
    queue: QueueLike,
    queue_name: str,
    *,
    ended: bool = False,
    after: str | None = None,
    limit: int = 50,
) -> RunPage:
    """One page of the active (or, with ``ended``, the ended) runs of ``queue_name``.

    Needs no `Runtime`: it reads the records the runtime keeps in the queue database's user
    KV (``workflow/<queue_name>/runs/`` for active runs, ``.../outcomes/`` for ended ones), so
    an operator's process lists the runs of any runtime on that queue. Active runs report
    `RunState.RUNNING` or `RunState.CANCELLING` as `Runtime.status` does; ended runs their
    terminal state, until memo retention (if set) forgets them. A run that was retried or
    whose id was submitted again is active and still has its previous outcome: it appears in
    both listings until it ends again.

    A record that cannot be decoded is left out and counted in `RunPage.skipped` (and logged
    once per page), so one bad record never breaks an operator's listing.

    Args:
        queue: the queue the runtime runs on (any `taquba.QueueLike`).
        queue_name: the runtime's ``queue_name``.
        ended: list ended runs instead of active ones.
        after: continue after this run id (`RunPage.next_after` of the previous page).
        limit: the most records one page reads (skipped ones included).

    Raises:
        taquba.UsageError: ``queue_name``, ``after`` or ``limit`` is invalid.
    """
    queue_name = validate_queue_name(queue_name)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise UsageError("limit must be a positive int")
    if after is not None and not isinstance(after, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise UsageError("after must be a run id (str) or None")
    prefix = _run_prefix(queue_name, ended)
    cursor = None if after is None else prefix + after.encode("utf-8", "surrogateescape")
    page = await queue.kv_scan(prefix, cursor=cursor, limit=limit)
    runs: list[RunSummary] = []
    bad: list[str] = []
    last: str | None = None
    for key, value in page.entries:
        last = key[len(prefix) :].decode("utf-8", "surrogateescape")
        try:
            run_id = keys.validate_run_id(last)
            if ended:
                runs.append(_ended(run_id, records.decode_outcome_record(value)))
                continue
            record = records.decode_run(value)
        except (WorkflowDataError, UsageError) as exc:
            bad.append(f"{key!r} ({exc})")
            continue
        runs.append(_active(run_id, record, await cancel_pending(queue, queue_name, record)))
    if bad:
        log.warning(
            "listing the runs of %s skipped %d undecodable record(s): %s",
            queue_name,
            len(bad),
            "; ".join(bad[:5]),
        )
    return RunPage(runs, last if page.next_cursor is not None else None, len(bad))


async def cancel_run(
    queue: QueueLike, queue_name: str, run_id: str, *, clock: Clock | None = None
) -> bool:
    """Request the cancellation of an active run; return whether one was requested.

    `Runtime.cancel` without a runtime (it calls this): a durable cancellation request and a
    control job commit together; a runtime serving ``queue_name`` then ends the run
    ``cancelled`` whatever its step is doing (a pending or sleeping step is removed, a running
    step sees `Step.cancel_requested`, a step about to start never runs), and the terminal
    hook fires as for any other end. A running step's cancel signal is fired at once.

    Args:
        queue: the queue the runtime runs on (any `taquba.QueueLike`).
        queue_name: the runtime's ``queue_name``.
        run_id: the run to cancel.
        clock: the clock of the request's timestamp (default ``queue.clock``).

    Returns:
        False if no run with this id is active (unknown, or already ended); True
        otherwise, including when a cancellation was already requested.

    Raises:
        InvalidRunId: ``run_id`` is not a valid run id.
        taquba.UsageError: ``queue_name`` is invalid.
    """
    queue_name = validate_queue_name(queue_name)
    run_id = keys.validate_run_id(run_id)
    clock = clock if clock is not None else queue.clock
    key = keys.cancel_key(queue_name, run_id)
    while True:
        raw_run = await queue.kv_get(keys.run_key(queue_name, run_id))
        if raw_run is None:
            return False
        record = records.decode_run(raw_run)
        raw = await queue.kv_get(key)
        if raw is not None:
            try:
                current = records.decode_cancel_incarnation(raw) == record.incarnation
            except WorkflowDataError:
                current = False
            if current:
                break
            # A request aimed at an earlier run that reused this id: drop it.
            await queue.kv_compare_and_set(key, raw, None)
            continue
        request = records.encode_cancel(record.incarnation, clock.now_ms())
        try:
            await queue.enqueue(
                queue_name,
                request,
                priority=CONTROL_PRIORITY,
                headers={keys.HEADER_RUN_ID: run_id, keys.HEADER_CONTROL: CONTROL_CANCEL},
                kv_writes={key: request},
                kv_expect={key: None},
            )
        except KvConflict:
            continue
        break
    # Fast path (the control job is the durable one): fire a running step's cancel signal
    # now. A pending step is left to the control job, which records its payload (for
    # `Runtime.retry`) before removing it.
    try:
        step_job = await queue.get_job(record.job_id)
        if step_job is not None and step_job.status is JobStatus.CLAIMED:
            await queue.cancel(record.job_id)
    except _FATAL:
        raise
    except TaqubaError as exc:
        log.warning("run %s: cancellation requested; its step not reached yet: %s", run_id, exc)
    return True


async def list_memos(
    store: BlobStore, run_id: str, *, memo_prefix: str = keys.DEFAULT_MEMO_PREFIX
) -> dict[int, int]:
    """How many memo entries each step of a run holds: ``{step: entries}``, by step.

    These are what a retry or a redelivery of that step finds in `Step.memo` (memo retention,
    if set, deletes them some time after the run ended). Needs no `Runtime`: it lists the
    blobs under ``<memo_prefix>/memos/<run_id>/``; a blob name that is not ``<step>/<hash>``
    is ignored.

    Raises:
        InvalidRunId: ``run_id`` is not a valid run id.
        taquba.UsageError: ``memo_prefix`` is not a usable blob directory.
    """
    prefix = keys.validate_memo_prefix(memo_prefix)
    counts: dict[int, int] = {}
    for name in await store.list_blobs(keys.memo_dir(prefix, keys.validate_run_id(run_id))):
        step, slash, _ = name.partition("/")
        if not slash or not (step.isascii() and step.isdigit()):
            continue
        counts[int(step)] = counts.get(int(step), 0) + 1
    return dict(sorted(counts.items()))
