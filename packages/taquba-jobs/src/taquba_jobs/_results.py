"""Runner-free reads of stored outcomes: list them a page at a time, or read one.

These need only the store (any `taquba.BlobStore`: ``queue.store`` of a `taquba.Queue` or of
a remote queue), not the job functions, so a process that has the queue but not the jobs (an
operator's dashboard, a script) can show what the jobs did.

Paging is in ascending job-id order. Object stores list names in ascending order only and can
skip a prefix of that order but not stop at an upper bound (see ``_records``); result blobs are
named by job id, and the ids the queue generates are ULIDs, so ascending id order is the order
the jobs were *submitted*, oldest first. Newest first would need a full listing per page (or
the retention markers, which exist only with ``result_retention``), so it is not offered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from taquba import DataError, UsageError, validate_job_id

from ._records import MARKER_DIR, ResultRecord, decode_result

if TYPE_CHECKING:
    from taquba import BlobStore

__all__ = [
    "DEFAULT_RESULT_PREFIX",
    "ResultPage",
    "ResultSummary",
    "StoredResult",
    "list_results",
    "read_result",
]

log = logging.getLogger("taquba_jobs")

DEFAULT_RESULT_PREFIX = "jobs-results"
"""The ``result_prefix`` of a `JobRunner` built with the defaults (queue ``"jobs"``)."""

_MAX_LIMIT = 1000
# Every retention marker is named "terminals/<digits>_<id>" with ASCII after the slash, so all
# of them sort before this: one listing call skips the whole marker directory.
_PAST_MARKERS = f"{MARKER_DIR}/\x7f"


@dataclass(frozen=True, slots=True)
class ResultSummary:
    """One stored outcome, without its output value (see `StoredResult` for that)."""

    job_id: str
    """The job's id (also the name of its result blob)."""
    job_name: str | None
    """The registered job (function) name the job ran as, or None if none was recorded."""
    outcome: Literal["succeeded", "failed", "cancelled"]
    """How the job ended."""
    finished_at_ms: int
    """When the outcome was recorded, in ms since the epoch (the runner's clock)."""
    error_type: str | None
    """The failure's qualified exception type (``failed``, ``cancelled``), else None."""
    error: str | None
    """The failure's message (``failed``, and ``cancelled`` with a reason), else None."""
    permanent: bool
    """Whether a failure was permanent (it was not retried); False for other outcomes."""
    attempts: int
    """How many attempts the job had when its outcome was recorded."""
    size: int
    """The encoded output's size in bytes (`taquba.Codec` MessagePack); 0 without one."""


@dataclass(frozen=True, slots=True)
class StoredResult(ResultSummary):
    """One stored outcome with its output value, as `read_result` returns it."""

    value: bytes | None
    """The encoded output (``succeeded`` only): `taquba.Codec` bytes of the job's output type.

    Decode it with the job's output type (``taquba.Codec(OutputType).decode(value)``) where
    the job is known; without it, it is plain MessagePack.
    """


@dataclass(frozen=True, slots=True)
class ResultPage:
    """One page of `list_results`."""

    results: tuple[ResultSummary, ...]
    """The outcomes on this page, in ascending job-id order (oldest submission first)."""
    skipped: int
    """Result blobs on this page that did not decode (logged, not listed)."""
    next_after: str | None
    """The ``after`` of the next page, or None when this page is the last."""


def _path(result_prefix: str, job_id: str) -> str:
    return f"{result_prefix}/{job_id}"


def _check(result_prefix: object, limit: object = 1) -> str:
    if not isinstance(result_prefix, str) or not result_prefix.strip("/"):
        raise UsageError(f"result_prefix must be a non-empty blob path, not {result_prefix!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_LIMIT:
        raise UsageError(f"limit must be an int from 1 to {_MAX_LIMIT}, not {limit!r}")
    return result_prefix.strip("/")


def _summary(record: ResultRecord) -> ResultSummary:
    return ResultSummary(
        job_id=record.job_id,
        job_name=record.job_name or None,
        outcome=record.status,
        finished_at_ms=record.finished_at,
        error_type=record.error_type,
        error=record.error_message,
        permanent=record.permanent,
        attempts=record.attempts,
        size=len(record.value) if record.value is not None else 0,
    )


async def list_results(
    store: BlobStore,
    *,
    result_prefix: str = DEFAULT_RESULT_PREFIX,
    after: str | None = None,
    limit: int = 50,
) -> ResultPage:
    """One page of the outcomes stored under ``result_prefix``, in ascending job-id order.

    Needs no `JobRunner` and no job functions: only the store the results live in
    (``queue.store``). Ids the queue generates are ULIDs, so the order is submission order,
    oldest first; object stores list in ascending order only, so newest-first paging would
    read every name each page. Retention markers (``<prefix>/terminals/``) are not results
    and are skipped without being read.

    Each listed result blob is read once (to learn its outcome); the output values are not
    kept. A blob that does not decode as a result record is skipped, counted in
    `ResultPage.skipped` and logged (at warning level, once per listing that meets it): a
    listing never fails on one bad record.

    Args:
        store: where the results live: ``queue.store`` of the queue the runner used.
        result_prefix: the runner's ``result_prefix`` (default: `DEFAULT_RESULT_PREFIX`, the
            default runner's).
        after: list only the jobs whose id sorts after this one (`ResultPage.next_after` of
            the previous page); None for the first page.
        limit: the most outcomes (and skipped records) on one page, 1 to 1000.

    Returns:
        The page, and where the next one starts.

    Raises:
        taquba.UsageError: a ``limit`` out of range or an empty ``result_prefix``.
        taquba.StorageError: the store failed (not wrapped).
    """
    prefix = _check(result_prefix, limit)
    results: list[ResultSummary] = []
    skipped = 0
    cursor = after
    exhausted = False
    while len(results) + skipped < limit and not exhausted:
        want = limit - len(results) - skipped
        names = await store.list_blobs(prefix, start_after=cursor, limit=want)
        exhausted = len(names) < want
        for name in names:
            cursor = name
            if "/" in name:  # a retention marker (or a stranger in a subdirectory)
                if name.startswith(MARKER_DIR + "/") and not exhausted:
                    cursor = _PAST_MARKERS  # list on from past the markers, unread
                    break
                continue
            raw = await store.get_blob(_path(prefix, name))
            if raw is None:
                continue  # swept between the listing and the read
            try:
                record = decode_result(raw)
            except DataError as exc:
                if not skipped:
                    log.warning(
                        "skipping result blob(s) that do not decode, first %s/%s: %s",
                        prefix,
                        name,
                        exc,
                    )
                skipped += 1
                continue
            results.append(_summary(record))
    return ResultPage(tuple(results), skipped, None if exhausted else cursor)


async def read_result(
    store: BlobStore, job_id: str, *, result_prefix: str = DEFAULT_RESULT_PREFIX
) -> StoredResult | None:
    """The stored outcome of job ``job_id``, with its encoded output; None if there is none.

    Needs no `JobRunner`: one read of the job's result blob. None means no outcome is stored:
    the job is still pending or running, ended without one (cancelled with
    ``taquba.Queue.cancel``, or dead-lettered after a crash on its last attempt), was swept
    by retention, or never existed. (`JobHandle.result` tells these apart through the queue.)

    Args:
        store: where the results live: ``queue.store`` of the queue the runner used.
        job_id: the job's id.
        result_prefix: the runner's ``result_prefix`` (default: `DEFAULT_RESULT_PREFIX`).

    Raises:
        taquba.InvalidId: ``job_id`` is not a valid job id (a `taquba.UsageError`).
        taquba.UsageError: an empty ``result_prefix``.
        taquba.DataError: the stored blob is not a result record this version can read.
        taquba.StorageError: the store failed (not wrapped).
    """
    prefix = _check(result_prefix)
    validate_job_id(job_id)
    raw = await store.get_blob(_path(prefix, job_id))
    if raw is None:
        return None
    record = decode_result(raw)
    summary = _summary(record)
    return StoredResult(
        job_id=summary.job_id,
        job_name=summary.job_name,
        outcome=summary.outcome,
        finished_at_ms=summary.finished_at_ms,
        error_type=summary.error_type,
        error=summary.error,
        permanent=summary.permanent,
        attempts=summary.attempts,
        size=summary.size,
        value=record.value,
    )
