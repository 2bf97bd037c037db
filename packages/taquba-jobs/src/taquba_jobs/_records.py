"""What taquba-jobs stores, and where: pure encoding of keys, names and records.

Layout (``<prefix>`` is the runner's ``result_prefix``, ``<queue>`` its queue name)::

    user KV  taquba-jobs/dedup/<queue><NUL><key>    dedup record of an idempotency key
    user KV  taquba-jobs/state/<queue><NUL><job_id> per-job state staged for the next attempt
    blob     <prefix>/<job_id>                      the job's outcome (result record)
    blob     <prefix>/terminals/<inv>_<job_id>      retention marker (only with retention)

where ``<inv>`` is ``2**64 - 1 - finished_at_ms`` in 20 zero-padded digits. Queue names hold
no control characters, so the NUL ends the queue name unambiguously. Job ids are ULIDs, which
never equal the literal ``terminals`` segment.

Why an *inverted* timestamp: object stores list names in ascending order and can only skip
a *prefix* of that order (S3 ``StartAfter``, object_store ``list_with_offset``,
`taquba.Store.list_blobs` ``start_after``); none can stop at an upper bound. The sweep wants
exactly the markers older than a cut-off. With inverted timestamps the newest markers sort
first and the oldest last, so "older than the cut-off" is a *suffix* of the listing, which
one ``start_after`` reaches without touching a younger marker: the listing cost is
proportional to the expired set, however many live markers there are. (With ascending
timestamps the expired markers would be the prefix, and a ``start_after`` listing would have
to walk every live marker after them.)

Records are MessagePack maps with a format version under ``"v"``. A record (or a job header
of ours) that does not decode raises `taquba.DataError`: stored data this version cannot read,
not a payload value (payload values go through `taquba.Codec` and its errors).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import ormsgpack

from taquba import DataError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEDUP_PREFIX",
    "FORMAT_VERSION",
    "HEADER_FORMAT",
    "HEADER_JOB",
    "HEADER_KEY",
    "HEADER_TIME_LIMIT",
    "MARKER_DIR",
    "MAX_STATE_SIZE",
    "RESERVED_HEADER_PREFIX",
    "STATE_PREFIX",
    "DedupRecord",
    "Marker",
    "ResultRecord",
    "StateRecord",
    "decode_dedup",
    "decode_marker",
    "decode_result",
    "decode_state",
    "decode_time_limit",
    "dedup_key",
    "encode_dedup",
    "encode_marker",
    "encode_result",
    "encode_state",
    "encode_time_limit",
    "expired_start_after",
    "input_hash",
    "marker_name",
    "parse_marker_name",
    "state_key",
    "user_headers",
]

FORMAT_VERSION = 1
RESERVED_HEADER_PREFIX = "taquba_jobs."
"""Job headers whose names start with this are the runner's own (``taquba_jobs.job``, ...).

`JobRunner.submit` refuses user headers with this prefix (`ReservedHeader`), and
`JobContext.headers` leaves them out.
"""
HEADER_JOB = "taquba_jobs.job"
"""Job header naming the registered job (function) to run."""
HEADER_KEY = "taquba_jobs.key"
"""Job header carrying the submission's idempotency key, if any."""
HEADER_FORMAT = "taquba_jobs.format"
"""Job header carrying the payload format version."""
HEADER_TIME_LIMIT = "taquba_jobs.time_limit"
"""Job header carrying a per-submission time limit in seconds (``"inf"``: none)."""
DEDUP_PREFIX = b"taquba-jobs/dedup/"
STATE_PREFIX = b"taquba-jobs/state/"
MAX_STATE_SIZE = 64 * 1024
"""The most bytes a job's staged state may encode to (`JobContext.stage_state`): 64 KiB.

Per-job state is for small things (a cursor, the ids of steps already done), kept in the
queue's user KV next to the job; larger data belongs in blobs (`taquba.Store`), with its
path in the state.
"""
MARKER_DIR = "terminals"
_MAX_MS = 2**64 - 1
_DIGITS = 20

OutcomeStatus = Literal["succeeded", "failed", "cancelled"]


def encode_time_limit(seconds: float) -> str:
    """The header value of a time limit: ``repr`` of the float (``"300.0"``, ``"inf"``)."""
    return repr(float(seconds))


def decode_time_limit(text: str) -> float | None:
    """The time limit a header value carries: seconds, or None for no limit.

    Raises:
        DataError: the value is not a positive number of seconds (or ``"inf"``).
    """
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not seconds > 0:  # also refuses NaN
        raise DataError(f"invalid time limit header {text!r}")
    return None if math.isinf(seconds) else seconds


def dedup_key(queue_name: str, key: str) -> bytes:
    """The user-KV key of the dedup record for idempotency key ``key`` on ``queue_name``."""
    return DEDUP_PREFIX + queue_name.encode() + b"\x00" + key.encode()


def state_key(queue_name: str, job_id: str) -> bytes:
    """The user-KV key of the per-job state of ``job_id`` on ``queue_name``."""
    return STATE_PREFIX + queue_name.encode() + b"\x00" + job_id.encode()


def user_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers of a job record that are not the runner's own (`RESERVED_HEADER_PREFIX`)."""
    return {
        name: value
        for name, value in headers.items()
        if not name.startswith(RESERVED_HEADER_PREFIX)
    }


def input_hash(job_name: str, payload: bytes) -> bytes:
    """SHA-256 over the job name and the encoded input: what a resubmission must match."""
    digest = hashlib.sha256()
    digest.update(job_name.encode())
    digest.update(b"\x00")
    digest.update(payload)
    return digest.digest()


def _load(raw: bytes, what: str) -> dict[str, Any]:
    try:
        data: object = ormsgpack.unpackb(raw)
    except (TypeError, ValueError) as exc:
        raise DataError(f"undecodable {what}: {exc}") from exc
    if not isinstance(data, dict):
        raise DataError(f"malformed {what}")
    mapping = cast("dict[str, Any]", data)
    if mapping.get("v") != FORMAT_VERSION:
        raise DataError(f"unsupported {what} format: {mapping.get('v')!r}")
    return mapping


@dataclass(frozen=True, slots=True)
class DedupRecord:
    """Binds an idempotency key to the job it created and to that job's input."""

    job_id: str
    job_name: str
    input_hash: bytes


def encode_dedup(record: DedupRecord) -> bytes:
    """Encode a dedup record for the user KV."""
    return ormsgpack.packb(
        {
            "v": FORMAT_VERSION,
            "job_id": record.job_id,
            "job": record.job_name,
            "input_hash": record.input_hash,
        }
    )


def decode_dedup(raw: bytes) -> DedupRecord:
    """Decode a dedup record; raise `DataError` if it cannot be read."""
    data = _load(raw, "dedup record")
    try:
        return DedupRecord(str(data["job_id"]), str(data["job"]), bytes(data["input_hash"]))
    except (KeyError, TypeError) as exc:
        raise DataError(f"malformed dedup record: {exc}") from exc


@dataclass(frozen=True, slots=True)
class StateRecord:
    """A job's per-job state: what one attempt staged for the attempts after it."""

    attempt: int
    """The attempt that staged it; only later attempts of the job read it."""
    value: bytes
    """The state, encoded with `taquba.Codec` (at most `MAX_STATE_SIZE` bytes)."""


def encode_state(record: StateRecord) -> bytes:
    """Encode a state record for the user KV."""
    return ormsgpack.packb({"v": FORMAT_VERSION, "attempt": record.attempt, "value": record.value})


def decode_state(raw: bytes) -> StateRecord:
    """Decode a state record; raise `DataError` if it cannot be read."""
    data = _load(raw, "job state record")
    try:
        attempt = data["attempt"]
        value = data["value"]
        if not isinstance(attempt, int) or not isinstance(value, bytes):
            raise TypeError("attempt must be an int and value bytes")
        return StateRecord(attempt, value)
    except (KeyError, TypeError) as exc:
        raise DataError(f"malformed job state record: {exc}") from exc


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """A job's terminal outcome as stored in its result blob."""

    job_id: str
    job_name: str
    status: OutcomeStatus
    value: bytes | None
    """The encoded output (``succeeded`` only): `taquba.Codec` bytes of the output type."""
    error_type: str | None
    error_message: str | None
    permanent: bool
    attempts: int
    finished_at: int
    """When the outcome was recorded (ms since the epoch, from the runner's clock)."""


def encode_result(record: ResultRecord) -> bytes:
    """Encode a result record for its blob."""
    data: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "job_id": record.job_id,
        "job": record.job_name,
        "status": record.status,
        "attempts": record.attempts,
        "finished_at": record.finished_at,
    }
    if record.status == "succeeded":
        data["value"] = record.value
    else:
        data["error"] = {
            "type": record.error_type,
            "message": record.error_message,
            "permanent": record.permanent,
        }
    return ormsgpack.packb(data)


def decode_result(raw: bytes) -> ResultRecord:
    """Decode a result record; raise `DataError` if it cannot be read."""
    data = _load(raw, "result record")
    try:
        status = data["status"]
        if status not in ("succeeded", "failed", "cancelled"):
            raise DataError(f"unknown result status {status!r}")
        error = cast("dict[str, Any]", data.get("error") or {})
        value = data.get("value")
        return ResultRecord(
            job_id=str(data["job_id"]),
            job_name=str(data["job"]),
            status=status,
            value=bytes(value) if value is not None else None,
            error_type=error.get("type"),
            error_message=error.get("message"),
            permanent=bool(error.get("permanent", False)),
            attempts=int(data["attempts"]),
            finished_at=int(data["finished_at"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"malformed result record: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Marker:
    """What a retention marker blob holds: enough to clean up after its job."""

    job_id: str
    idempotency_key: str | None


def encode_marker(marker: Marker) -> bytes:
    """Encode a retention marker's content."""
    return ormsgpack.packb(
        {"v": FORMAT_VERSION, "job_id": marker.job_id, "key": marker.idempotency_key}
    )


def decode_marker(raw: bytes) -> Marker:
    """Decode a retention marker's content."""
    data = _load(raw, "retention marker")
    try:
        key = data.get("key")
        return Marker(str(data["job_id"]), str(key) if key is not None else None)
    except (KeyError, TypeError) as exc:
        raise DataError(f"malformed retention marker: {exc}") from exc


def marker_name(finished_at_ms: int, job_id: str) -> str:
    """The marker's name inside ``<prefix>/terminals``: inverted timestamp, then the id."""
    if not 0 <= finished_at_ms <= _MAX_MS:
        raise ValueError(f"timestamp out of range: {finished_at_ms}")
    return f"{_MAX_MS - finished_at_ms:0{_DIGITS}d}_{job_id}"


def parse_marker_name(name: str) -> tuple[int, str] | None:
    """``(finished_at_ms, job_id)`` of a marker name, or None if it is not one."""
    digits, sep, job_id = name.partition("_")
    if not sep or len(digits) != _DIGITS or not digits.isdigit() or not job_id:
        return None
    if "/" in job_id or int(digits) > _MAX_MS:
        return None
    return _MAX_MS - int(digits), job_id


def expired_start_after(cutoff_ms: int) -> str | None:
    """The ``start_after`` that lists exactly the markers with ``finished_at < cutoff_ms``.

    Those markers have inverted timestamps ``>= 2**64 - cutoff_ms``; every such name sorts
    after that number's digits alone (a name continues with ``_``), and every younger marker's
    digits are smaller, so it sorts before. None when nothing can be expired (cutoff <= 0).
    """
    if cutoff_ms <= 0:
        return None
    return f"{_MAX_MS - cutoff_ms + 1:0{_DIGITS}d}"
