"""Pure naming rules: run ids, headers, user-KV keys, blob paths and terminal-marker names.

Nothing here does I/O. The layout (also in the guide):

User KV of the queue database, per runtime ``queue_name``::

    workflow/<queue_name>/runs/<run_id>      the active run's record (deleted when it ends)
    workflow/<queue_name>/cancel/<run_id>    a pending cancellation request of the active run
    workflow/<queue_name>/outcomes/<run_id>  the committed terminal outcome (status, error)
    workflow/<queue_name>/ending/<run_id>    a pending request to end a run whose step job
                                             was dead-lettered outside the runtime
    workflow/<queue_name>/signal-wait/<key>  the waiter on a signal key: {run id, job id}
    workflow/<queue_name>/signal-buf/<key>   a buffered signal: {signal id, payload}
    workflow/<queue_name>/signal-got/<incarnation>/<step>  the signal a step reads (pinned for its
                                             redeliveries; deleted with its settlement)

Blobs of the store, under the memo prefix (default ``workflow-memo``)::

    <prefix>/memos/<run_id>/<step>/<sha256(key)>           Memo entries
    <prefix>/step-outputs/<run_id>/<step>/<sha256(payload)> step-output replay records
    <prefix>/outcomes/<run_id>                             terminal outcome, for other processes
    <prefix>/terminals/<inverted ms:020>_<run_id>          memo-retention terminal markers

A run id is 1 to 128 of ``[A-Za-z0-9_-]``: never empty, never ``.``/``..``, never holding ``/``,
so it is always exactly one path segment and one key segment.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from taquba import UsageError

from ._errors import InvalidRunId

__all__ = [
    "DEFAULT_MEMO_PREFIX",
    "HEADER_CONTROL",
    "HEADER_RUN_ID",
    "HEADER_SIGNAL_WAIT",
    "HEADER_STEP",
    "HEADER_TERMINAL",
    "MAX_RUN_ID_LENGTH",
    "RESERVED_HEADER_PREFIX",
    "RESERVED_KV_PREFIX",
]

MAX_RUN_ID_LENGTH = 128
"""The longest run id, in characters."""

RESERVED_HEADER_PREFIX = "workflow."
"""Job headers starting with this belong to the runtime; runs cannot set them."""

HEADER_RUN_ID = "workflow.run_id"
"""The job header naming the run a step (or control job) belongs to."""

HEADER_STEP = "workflow.step"
"""The job header holding a step's number (decimal, 0 for the first step)."""

HEADER_CONTROL = "workflow.control"
"""The job header marking a runtime control job (``"cancel"``, ``"end"``) instead of a step."""

HEADER_TERMINAL = "workflow.terminal"
"""The job header marking a terminal notification job (value: the run's terminal status)."""

HEADER_SIGNAL_WAIT = "workflow.signal_wait"
"""The job header of a step that follows a wait for a signal (value: the correlation key)."""

RESERVED_KV_PREFIX = b"workflow/"
"""User-KV keys starting with this belong to the runtime."""

DEFAULT_MEMO_PREFIX = "workflow-memo"
"""The blob prefix memos, replay records, outcomes and terminal markers live under."""

_RUN_ID = re.compile(r"[A-Za-z0-9_-]+")
MARKER_TS_MAX: Final = 2**64 - 1  # the timestamp is stored as MARKER_TS_MAX - ms, 20 digits
_MARKER = re.compile(r"(\d{20})_([A-Za-z0-9_-]{1,128})")
_SEGMENT_FORBIDDEN = ("", ".", "..")


def validate_run_id(run_id: object) -> str:
    """Return ``run_id`` if it is 1 to 128 of ``[A-Za-z0-9_-]``, else raise `InvalidRunId`."""
    if not isinstance(run_id, str):
        raise InvalidRunId(run_id, "run id must be a str")
    if not run_id:
        raise InvalidRunId(run_id, "run id must not be empty")
    if len(run_id) > MAX_RUN_ID_LENGTH:
        raise InvalidRunId(
            run_id, f"run id exceeds the maximum length of {MAX_RUN_ID_LENGTH} characters"
        )
    if not _RUN_ID.fullmatch(run_id):
        raise InvalidRunId(run_id, "run id must contain only [A-Za-z0-9_-]")
    return run_id


def validate_memo_prefix(prefix: object) -> str:
    """Return ``prefix`` without surrounding slashes if it is a usable blob directory."""
    if not isinstance(prefix, str):
        raise UsageError("memo_prefix must be a str")
    stripped = prefix.strip("/")
    segments = stripped.split("/")
    if any(s in _SEGMENT_FORBIDDEN or s.startswith(".") for s in segments):
        raise UsageError(
            f"invalid memo_prefix {prefix!r}: use '/'-separated names without empty, '.' or "
            "'..' segments (and none starting with '.')"
        )
    return stripped


def sha256_hex(data: bytes) -> str:
    """The lowercase hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------ user KV


def _kv(queue_name: str, kind: str, run_id: str) -> bytes:
    return f"workflow/{queue_name}/{kind}/{run_id}".encode()


def run_key(queue_name: str, run_id: str) -> bytes:
    """The user-KV key of an active run's record."""
    return _kv(queue_name, "runs", run_id)


def cancel_key(queue_name: str, run_id: str) -> bytes:
    """The user-KV key of a run's pending cancellation request."""
    return _kv(queue_name, "cancel", run_id)


def outcome_key(queue_name: str, run_id: str) -> bytes:
    """The user-KV key of a run's committed terminal outcome."""
    return _kv(queue_name, "outcomes", run_id)


def ending_key(queue_name: str, run_id: str) -> bytes:
    """The user-KV key of a request to end a run whose step job was dead-lettered."""
    return _kv(queue_name, "ending", run_id)


def signal_wait_key(queue_name: str, key: str) -> bytes:
    """The user-KV key of the waiter registered on signal correlation key ``key``."""
    return f"workflow/{queue_name}/signal-wait/{key}".encode()


def signal_buffer_key(queue_name: str, key: str) -> bytes:
    """The user-KV key of the signal buffered under correlation key ``key``."""
    return f"workflow/{queue_name}/signal-buf/{key}".encode()


def signal_got_key(queue_name: str, incarnation: str, step: int) -> bytes:
    """The user-KV key of the signal step ``step`` of the run ``incarnation`` reads (its pin)."""
    return f"workflow/{queue_name}/signal-got/{incarnation}/{step}".encode()


def default_hook_queue_name(queue_name: str) -> str:
    """The queue terminal notifications go to unless configured: ``<queue_name>-hooks``."""
    return f"{queue_name}-hooks"


# -------------------------------------------------------------------------------------- blobs


def memo_dir(prefix: str, run_id: str) -> str:
    """The blob directory of every memo entry of a run."""
    return f"{prefix}/memos/{run_id}"


def memo_path(prefix: str, run_id: str, step: int, key: str) -> str:
    """The blob path of one memo entry (the user key is hashed into one safe segment)."""
    return f"{prefix}/memos/{run_id}/{step}/{sha256_hex(key.encode())}"


def step_output_dir(prefix: str, run_id: str) -> str:
    """The blob directory of every step-output replay record of a run."""
    return f"{prefix}/step-outputs/{run_id}"


def step_output_path(prefix: str, run_id: str, step: int, payload: bytes) -> str:
    """The blob path of the replay record of ``(run, step, payload)``."""
    return f"{prefix}/step-outputs/{run_id}/{step}/{sha256_hex(payload)}"


def outcome_path(prefix: str, run_id: str) -> str:
    """The blob path of a run's terminal outcome."""
    return f"{prefix}/outcomes/{run_id}"


def terminals_dir(prefix: str) -> str:
    """The blob directory of terminal markers."""
    return f"{prefix}/terminals"


def marker_name(terminal_at_ms: int, run_id: str) -> str:
    """The name of a terminal marker: ``<inverted timestamp, 20 digits>_<run id>``.

    The timestamp is inverted (``2**64 - 1 - ms``) so names sort newest first and every marker
    older than a cut-off sorts after `expired_after`.
    """
    if not 0 <= terminal_at_ms <= MARKER_TS_MAX:
        raise UsageError("terminal_at_ms out of range")
    return f"{MARKER_TS_MAX - terminal_at_ms:020d}_{validate_run_id(run_id)}"


def parse_marker_name(name: str) -> tuple[int, str] | None:
    """``(terminal_at_ms, run_id)`` of a marker name, or None if it is not one."""
    match = _MARKER.fullmatch(name)
    if match is None:
        return None
    inverted = int(match.group(1))
    if inverted > MARKER_TS_MAX:
        return None
    return MARKER_TS_MAX - inverted, match.group(2)


def expired_after(cutoff_ms: int) -> str:
    """The listing offset past which every marker name has ``terminal_at_ms < cutoff_ms``.

    A marker of time ``t`` is named ``f"{MAX - t:020d}_<run>"``; ``t < cutoff`` is
    ``MAX - t > MAX - cutoff``. ``"~"`` sorts after ``"_"``, so the markers of exactly
    ``cutoff`` (``"<MAX - cutoff>_..."``) sort before the offset and are kept.
    """
    cutoff = min(max(cutoff_ms, 0), MARKER_TS_MAX)
    return f"{MARKER_TS_MAX - cutoff:020d}~"


# ------------------------------------------------------------------------------------- timing


def remaining_delay(stored_at_ms: int, now_ms: int, delay_ms: int) -> int:
    """What is left of ``delay_ms`` decided at ``stored_at_ms``, read at ``now_ms``.

    Saturates at zero; a clock reading earlier than the stored time keeps the full delay.
    """
    if now_ms < stored_at_ms:
        return delay_ms
    return max(delay_ms - (now_ms - stored_at_ms), 0)
