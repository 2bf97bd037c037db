"""Stored records: MessagePack maps with a format version ``v``. Pure encode/decode.

Every decoder raises `WorkflowDataError` on anything it cannot read, so callers handle one
error for corruption and for records of an unknown future format.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

import ormsgpack

from ._errors import WorkflowDataError
from ._types import (
    Cancel,
    Continue,
    Fail,
    RunOutcome,
    StepOutcome,
    Succeed,
    TerminalStatus,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

FORMAT: Final = 1
MAX_KV_ERROR_CHARS: Final = 8 * 1024  # the KV outcome keeps the error's head, far below 256 KiB


def _pack(data: dict[str, Any]) -> bytes:
    return ormsgpack.packb({"v": FORMAT, **data})


def _unpack(raw: bytes, what: str) -> dict[str, Any]:
    try:
        data: Any = ormsgpack.unpackb(raw)
    except (ormsgpack.MsgpackDecodeError, ValueError, TypeError) as exc:
        raise WorkflowDataError(f"undecodable {what}: {exc}") from exc
    if not isinstance(data, dict):
        raise WorkflowDataError(f"malformed {what}: not a map")
    fields: dict[str, Any] = data  # pyright: ignore[reportUnknownVariableType]
    if fields.get("v") != FORMAT:
        raise WorkflowDataError(f"{what} has unknown format version {fields.get('v')!r}")
    return fields


def _str(data: dict[str, Any], name: str, what: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise WorkflowDataError(f"malformed {what}: {name!r} is not a str")
    return value


def _opt_str(data: dict[str, Any], name: str, what: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise WorkflowDataError(f"malformed {what}: {name!r} is not a str")
    return value


def _int(data: dict[str, Any], name: str, what: str) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise WorkflowDataError(f"malformed {what}: {name!r} is not an int")
    return value


def _opt_int(data: dict[str, Any], name: str, what: str) -> int | None:
    return None if data.get(name) is None else _int(data, name, what)


def _bytes(data: dict[str, Any], name: str, what: str) -> bytes:
    value = data.get(name)
    if not isinstance(value, bytes):
        raise WorkflowDataError(f"malformed {what}: {name!r} is not bytes")
    return value


def _headers(data: dict[str, Any], what: str) -> dict[str, str]:
    value = data.get("headers", {})
    if not isinstance(value, dict):
        raise WorkflowDataError(f"malformed {what}: headers is not a map")
    headers: dict[str, str] = {}
    for k, v in value.items():  # pyright: ignore[reportUnknownVariableType]
        if not isinstance(k, str) or not isinstance(v, str):
            raise WorkflowDataError(f"malformed {what}: a header is not str -> str")
        headers[k] = v
    return headers


# ------------------------------------------------------------------------------- run record


@dataclass(frozen=True, slots=True)
class RunRecord:
    """The durable record of an active run (user KV ``workflow/<queue>/runs/<id>``)."""

    run_id: str
    incarnation: str  # the step-0 job id: tells two runs that reused one run id apart
    input_hash: str
    submitted_at_ms: int
    step: int
    job_id: str  # the job carrying the current step
    headers: Mapping[str, str]
    step_time_limit_ms: int | None = None  # the run's own per-step time limit, if it set one

    def encode(self) -> bytes:
        return _pack(
            {
                "run_id": self.run_id,
                "incarnation": self.incarnation,
                "input_hash": self.input_hash,
                "submitted_at_ms": self.submitted_at_ms,
                "step": self.step,
                "job_id": self.job_id,
                "headers": dict(self.headers),
                "step_time_limit_ms": self.step_time_limit_ms,
            }
        )

    def advance(self, job_id: str) -> RunRecord:
        return replace(self, step=self.step + 1, job_id=job_id)


def decode_run(raw: bytes) -> RunRecord:
    what = "run record"
    data = _unpack(raw, what)
    return RunRecord(
        run_id=_str(data, "run_id", what),
        incarnation=_str(data, "incarnation", what),
        input_hash=_str(data, "input_hash", what),
        submitted_at_ms=_int(data, "submitted_at_ms", what),
        step=_int(data, "step", what),
        job_id=_str(data, "job_id", what),
        headers=_headers(data, what),
        step_time_limit_ms=_opt_int(data, "step_time_limit_ms", what),
    )


# --------------------------------------------------------------------------- cancel request


def encode_cancel(incarnation: str, requested_at_ms: int) -> bytes:
    """The cancellation request (KV value, and the control job's payload)."""
    return _pack({"incarnation": incarnation, "requested_at_ms": requested_at_ms})


def decode_cancel_incarnation(raw: bytes) -> str:
    """The incarnation a cancellation request (KV value or control payload) targets."""
    what = "cancellation request"
    return _str(_unpack(raw, what), "incarnation", what)


# ------------------------------------------------------------------- dead-step end request


@dataclass(frozen=True, slots=True)
class EndRequest:
    """A request to end a run whose step job was dead-lettered outside the runtime.

    Stored in user KV (``workflow/<queue>/ending/<run_id>``) and as the control job's payload.
    """

    incarnation: str
    dead_job_id: str  # the dead step job
    control_job_id: str  # the control job that ends the run

    def encode(self) -> bytes:
        return _pack(
            {
                "incarnation": self.incarnation,
                "dead_job_id": self.dead_job_id,
                "control_job_id": self.control_job_id,
            }
        )


def decode_end_request(raw: bytes) -> EndRequest:
    what = "end request"
    data = _unpack(raw, what)
    return EndRequest(
        incarnation=_str(data, "incarnation", what),
        dead_job_id=_str(data, "dead_job_id", what),
        control_job_id=_str(data, "control_job_id", what),
    )


# ------------------------------------------------------------------------------- outcomes


@dataclass(frozen=True, slots=True)
class Resume:
    """Where an ended run stopped: what `Runtime.retry` enqueues again."""

    step: int
    payload: bytes
    priority: int
    max_attempts: int
    input_hash: str
    step_time_limit_ms: int | None

    def pack(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "payload": self.payload,
            "priority": self.priority,
            "max_attempts": self.max_attempts,
            "input_hash": self.input_hash,
            "step_time_limit_ms": self.step_time_limit_ms,
        }


def _resume(data: dict[str, Any], what: str) -> Resume | None:
    body = data.get("resume")
    if body is None:
        return None
    if not isinstance(body, dict):
        raise WorkflowDataError(f"malformed {what}: resume is not a map")
    fields: dict[str, Any] = body  # pyright: ignore[reportUnknownVariableType]
    return Resume(
        step=_int(fields, "step", what),
        payload=_bytes(fields, "payload", what),
        priority=_int(fields, "priority", what),
        max_attempts=_int(fields, "max_attempts", what),
        input_hash=_str(fields, "input_hash", what),
        step_time_limit_ms=_opt_int(fields, "step_time_limit_ms", what),
    )


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    """The committed terminal outcome in user KV (small: no result bytes)."""

    run_id: str
    incarnation: str
    status: TerminalStatus
    final_step: int
    error: str | None
    finished_at_ms: int
    input_hash: str | None = None  # absent from records written before 0.7

    def encode(self) -> bytes:
        error = self.error
        if error is not None and len(error) > MAX_KV_ERROR_CHARS:
            error = error[:MAX_KV_ERROR_CHARS] + "..."
        return _pack(
            {
                "run_id": self.run_id,
                "incarnation": self.incarnation,
                "status": self.status.value,
                "final_step": self.final_step,
                "error": error,
                "finished_at_ms": self.finished_at_ms,
                "input_hash": self.input_hash,
            }
        )


def _status(data: dict[str, Any], what: str) -> TerminalStatus:
    try:
        return TerminalStatus(_str(data, "status", what))
    except ValueError as exc:
        raise WorkflowDataError(f"malformed {what}: unknown status") from exc


def decode_outcome_record(raw: bytes) -> OutcomeRecord:
    what = "outcome record"
    data = _unpack(raw, what)
    return OutcomeRecord(
        run_id=_str(data, "run_id", what),
        incarnation=_str(data, "incarnation", what),
        status=_status(data, what),
        final_step=_int(data, "final_step", what),
        error=_opt_str(data, "error", what),
        finished_at_ms=_int(data, "finished_at_ms", what),
        input_hash=_opt_str(data, "input_hash", what),
    )


def encode_outcome_blob(
    outcome: RunOutcome[bytes], incarnation: str, resume: Resume | None = None
) -> bytes:
    """The full outcome (blob, and the payload of the terminal notification job)."""
    return _pack(
        {
            "run_id": outcome.run_id,
            "incarnation": incarnation,
            "status": outcome.status.value,
            "result": outcome.result,
            "error": outcome.error,
            "headers": dict(outcome.headers),
            "final_step": outcome.final_step,
            "finished_at_ms": outcome.finished_at_ms,
            "resume": None if resume is None else resume.pack(),
        }
    )


def decode_outcome_blob(raw: bytes) -> tuple[RunOutcome[bytes], str]:
    outcome, incarnation, _ = decode_outcome_blob_resume(raw)
    return outcome, incarnation


def decode_outcome_blob_resume(raw: bytes) -> tuple[RunOutcome[bytes], str, Resume | None]:
    what = "outcome"
    data = _unpack(raw, what)
    result = data.get("result")
    if result is not None and not isinstance(result, bytes):
        raise WorkflowDataError("malformed outcome: result is not bytes")
    outcome: RunOutcome[bytes] = RunOutcome(
        run_id=_str(data, "run_id", what),
        status=_status(data, what),
        result=result,
        error=_opt_str(data, "error", what),
        headers=_headers(data, what),
        final_step=_int(data, "final_step", what),
        finished_at_ms=_int(data, "finished_at_ms", what),
    )
    return outcome, _str(data, "incarnation", what), _resume(data, what)


# ------------------------------------------------------------------------------- signals


@dataclass(frozen=True, slots=True)
class Waiter:
    """The waiter on a signal key (user KV ``workflow/<queue>/signal-wait/<key>``)."""

    run_id: str
    job_id: str  # the scheduled step job a signal wakes
    incarnation: str  # with ``step``: where that job pins the signal it resolved
    step: int

    def encode(self) -> bytes:
        return _pack(
            {
                "run_id": self.run_id,
                "job_id": self.job_id,
                "incarnation": self.incarnation,
                "step": self.step,
            }
        )


def decode_waiter(raw: bytes) -> Waiter:
    what = "signal waiter"
    data = _unpack(raw, what)
    return Waiter(
        _str(data, "run_id", what),
        _str(data, "job_id", what),
        _str(data, "incarnation", what),
        _int(data, "step", what),
    )


def encode_signal(signal_id: str, payload: bytes) -> bytes:
    """A signal: what the buffer holds and what a wake hands the waiter's job."""
    return _pack({"id": signal_id, "payload": bytes(payload)})


def decode_signal(raw: bytes) -> bytes:
    """The payload of an encoded signal."""
    what = "signal"
    return _bytes(_unpack(raw, what), "payload", what)


def encode_got(signal: bytes | None) -> bytes:
    """The pin of a resolved wait: the encoded signal, or None when it timed out."""
    return _pack({"signal": signal})


def pinned_signal(raw: bytes) -> bytes | None:
    """The encoded signal a pin holds (None: a timed-out wait, or an undecodable pin)."""
    try:
        data = _unpack(raw, "resolved signal")
    except WorkflowDataError:
        return None
    signal = data.get("signal")
    return signal if isinstance(signal, bytes) else None


def decode_got(raw: bytes) -> bytes | None:
    """The payload a resolved wait pinned (None: it timed out)."""
    what = "resolved signal"
    data = _unpack(raw, what)
    signal = data.get("signal")
    if signal is None:
        return None
    if not isinstance(signal, bytes):
        raise WorkflowDataError(f"malformed {what}: signal is not bytes")
    return decode_signal(signal)


# ------------------------------------------------------------------------- replay records
# Payloads and results here are the stored bytes (already encoded by the payload codecs). A
# delayed `Continue` keeps the 0.7 kind name ``continue_after``, so records of either version
# read in the other.

EncodedOutcome = StepOutcome[bytes, bytes]


def encode_replay(
    outcome: EncodedOutcome,
    stored_at_ms: int,
    kv_writes: Mapping[bytes, bytes] | None = None,
    kv_deletes: Sequence[bytes] = (),
) -> bytes:
    match outcome:
        case Continue(payload=payload, on_signal=str(key), timeout=timeout):
            body: dict[str, Any] = {
                "kind": "continue_on_signal",
                "payload": payload,
                "key": key,
                "timeout_ms": round((timeout or 0) * 1000),
            }
        case Continue(payload=payload, delay=delay):
            body = {"kind": "continue", "payload": payload}
            if delay is not None:
                body = {**body, "kind": "continue_after", "delay_ms": round(delay * 1000)}
        case Succeed(result):
            body = {"kind": "succeed", "result": result}
        case Fail(error):
            body = {"kind": "fail", "error": error}
        case Cancel(reason):
            body = {"kind": "cancel", "reason": reason}
    data: dict[str, Any] = {"stored_at_ms": stored_at_ms, "outcome": body}
    if kv_writes or kv_deletes:  # the step's staged KV effects, applied again on replay
        pairs = [[key, value] for key, value in (kv_writes or {}).items()]
        data["kv"] = {"writes": pairs, "deletes": list(kv_deletes)}
    return _pack(data)


def decode_replay_kv(raw: bytes) -> tuple[dict[bytes, bytes], list[bytes]]:
    """The staged KV ``(writes, deletes)`` of a step-output record (none in older records)."""
    what = "step-output record"
    kv = _unpack(raw, what).get("kv")
    if kv is None:
        return {}, []
    if not isinstance(kv, dict):
        raise WorkflowDataError(f"malformed {what}: kv is not a map")
    fields: dict[str, Any] = kv  # pyright: ignore[reportUnknownVariableType]
    pairs: object = fields.get("writes", [])  # [[key, value], ...]: msgpack map keys are str
    deletes: object = fields.get("deletes", [])
    writes: dict[bytes, bytes] = {}
    if not isinstance(pairs, list) or not isinstance(deletes, list):
        raise WorkflowDataError(f"malformed {what}: kv effects are not lists")
    entries: list[object] = pairs  # pyright: ignore[reportUnknownVariableType]
    for entry in entries:
        if not isinstance(entry, list) or len(entry) != 2:  # pyright: ignore[reportUnknownArgumentType]
            raise WorkflowDataError(f"malformed {what}: a kv write is not a pair")
        key, value = entry  # pyright: ignore[reportUnknownVariableType]
        if not isinstance(key, bytes) or not isinstance(value, bytes):
            raise WorkflowDataError(f"malformed {what}: a kv write is not bytes")
        writes[key] = value
    keys: list[bytes] = []
    for key in deletes:  # pyright: ignore[reportUnknownVariableType]
        if not isinstance(key, bytes):
            raise WorkflowDataError(f"malformed {what}: a kv delete is not bytes")
        keys.append(key)
    return writes, keys


def decode_replay(raw: bytes) -> tuple[EncodedOutcome, int, int]:
    """``(outcome, stored_at_ms, delay_ms)``: ``delay_ms`` is a delay or a signal timeout."""
    what = "step-output record"
    data = _unpack(raw, what)
    stored_at = _int(data, "stored_at_ms", what)
    body = data.get("outcome")
    if not isinstance(body, dict):
        raise WorkflowDataError(f"malformed {what}: no outcome")
    fields: dict[str, Any] = body  # pyright: ignore[reportUnknownVariableType]
    kind = fields.get("kind")
    if kind == "continue":
        return Continue(_bytes(fields, "payload", what)), stored_at, 0
    if kind == "continue_after":
        delay_ms = _int(fields, "delay_ms", what)
        if delay_ms < 0:
            raise WorkflowDataError(f"malformed {what}: negative delay")
        return Continue(_bytes(fields, "payload", what), delay=delay_ms / 1000), stored_at, delay_ms
    if kind == "continue_on_signal":
        timeout_ms = _int(fields, "timeout_ms", what)
        if timeout_ms < 0:
            raise WorkflowDataError(f"malformed {what}: negative timeout")
        payload = _bytes(fields, "payload", what)
        key = _str(fields, "key", what)
        return Continue(payload, on_signal=key, timeout=timeout_ms / 1000), stored_at, timeout_ms
    if kind == "succeed":
        return Succeed(_bytes(fields, "result", what)), stored_at, 0
    if kind == "fail":
        return Fail(_str(fields, "error", what)), stored_at, 0
    if kind == "cancel":
        return Cancel(_opt_str(fields, "reason", what)), stored_at, 0
    raise WorkflowDataError(f"malformed {what}: unknown outcome kind {kind!r}")
