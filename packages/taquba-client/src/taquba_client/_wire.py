"""Wire protocol v1 without I/O: request descriptions, body encoding and answer decoding.

Each public client method builds a `Call` here; `Client` and `AsyncClient` only send it (with
retries) and hand the decoded answer back. Keeping the protocol in plain functions keeps the
sync and async faces identical.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import ormsgpack
import ulid

from ._errors import (
    ClaimLost,
    ClientError,
    Conflict,
    DuplicateJobId,
    Forbidden,
    InvalidRequest,
    InvalidState,
    JobNotFound,
    KvConflict,
    NotFound,
    ServerError,
    ServerUnavailable,
    Unauthorized,
    UsageError,
)
from ._types import (
    Ack,
    AttemptOutcome,
    CancelOutcome,
    Claim,
    Effects,
    EnqueueRequest,
    EnqueueResult,
    Health,
    Job,
    JobAttempt,
    JobPage,
    JobStatus,
    KvPage,
    Nack,
    NackResult,
    QueueStats,
    RenewResult,
    ServerConfig,
    Settlement,
    SettleResult,
    WakeOutcome,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from datetime import datetime

T = TypeVar("T")

MSGPACK = "application/msgpack"
Body = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request and how to read its answer.

    ``idempotent`` says whether the request may be sent again after a failure that leaves
    unknown whether it reached the server (a read timeout, a dropped connection). Failures
    that prove nothing was written (a connect error, a 503) are retried for every call.
    """

    method: str
    path: str
    parse: Callable[[Body], T]
    body: Body | None = None
    params: Mapping[str, str | int | float] | None = None
    idempotent: bool = True
    long_poll: float = 0.0
    """Seconds the server may hold the request before answering (added to the read timeout)."""
    landed_if_job: str | None = None
    """Enqueue with ``kv_expect``: after an ambiguous failure, a retry's `KvConflict` means
    success if this job exists (the first attempt wrote it, and its KV writes)."""
    landed_result: T | None = None


def new_job_id() -> str:
    """A fresh ULID, the id the client gives a job before its first attempt."""
    return str(ulid.new())


def encode(body: Body) -> bytes:
    """A request body in MessagePack."""
    return ormsgpack.packb(body)


def decode(content: bytes, content_type: str | None) -> Body:
    """An answer body (MessagePack, or JSON from a proxy or an early error) as a map."""
    try:
        if content_type is not None and "json" in content_type:
            value: object = json.loads(content)
        else:
            value = ormsgpack.unpackb(content)
    except (ValueError, ormsgpack.MsgpackDecodeError) as exc:
        raise ServerError(f"undecodable answer from the server: {content[:64]!r}") from exc
    if not isinstance(value, dict):
        raise ServerError(f"the server answered a {type(value).__name__}, expected a map")
    return cast("Body", value)


_BY_CODE: dict[str, type[ClientError]] = {
    "job_not_found": JobNotFound,
    "duplicate_job_id": DuplicateJobId,
    "kv_conflict": KvConflict,
    "invalid_state": InvalidState,
    "claim_lost": ClaimLost,
    "unavailable": ServerUnavailable,
}
_BY_STATUS: dict[int, type[ClientError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: ClaimLost,
    413: InvalidRequest,
    415: InvalidRequest,
    503: ServerUnavailable,
}


def error_for(status: int, body: Body | None) -> ClientError:
    """The error a non-2xx answer stands for."""
    info: Mapping[str, Any] = {}
    if body is not None and isinstance(body.get("error"), dict):
        info = cast("Mapping[str, Any]", body["error"])
    code = info.get("code")
    code = code if isinstance(code, str) else None
    message = info.get("message")
    message = message if isinstance(message, str) else f"HTTP {status}"
    field_ = info.get("field")
    field_ = field_ if isinstance(field_, str) else None
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else InvalidRequest
    text = f"{message} ({code or status})" if field_ is None else f"{message} ({code}, {field_})"
    return cls(text, code=code, status=status, field=field_)


def error_from_map(info: Mapping[str, Any]) -> ClientError:
    """The error of one failed entry of a batch answer (``{code, message}``)."""
    code = str(info.get("code", ""))
    status = {"claim_lost": 410, "job_not_found": 404}.get(code, 409 if code else 400)
    return error_for(status, {"error": dict(info)})


# -- encoding ------------------------------------------------------------------------------


def ms(moment: datetime) -> int:
    """A timezone-aware datetime as epoch milliseconds."""
    if moment.tzinfo is None:
        raise UsageError("run_at must be a timezone-aware datetime")
    return int(moment.timestamp() * 1000)


def enqueue_body(request: EnqueueRequest, job_id: str) -> Body:
    """An `EnqueueRequest` on the wire, with the job id the client chose."""
    body: Body = {"queue_name": request.queue_name, "payload": bytes(request.payload)}
    body["job_id"] = job_id
    if request.priority is not None:
        body["priority"] = request.priority
    if request.run_at is not None:
        body["run_at"] = ms(request.run_at)
    if request.delay is not None:
        body["delay"] = request.delay
    if request.dedup_key is not None:
        body["dedup_key"] = request.dedup_key
    if request.headers:
        body["headers"] = dict(request.headers)
    if request.max_attempts is not None:
        body["max_attempts"] = request.max_attempts
    return body


def with_id(request: EnqueueRequest) -> tuple[EnqueueRequest, str]:
    """``request`` with a job id, assigned now if it had none."""
    job_id = request.job_id if request.job_id is not None else new_job_id()
    return request, job_id


def kv_writes_body(writes: Mapping[bytes, bytes]) -> list[Body]:
    """KV writes on the wire."""
    return [{"key": bytes(k), "value": bytes(v)} for k, v in writes.items()]


def kv_expect_body(expect: Mapping[bytes, bytes | None]) -> list[Body]:
    """KV expectations on the wire."""
    return [{"key": bytes(k), "value": None if v is None else bytes(v)} for k, v in expect.items()]


def effects_body(effects: Effects) -> Body:
    """`Effects` on the wire; follow-up jobs get their ids here, so retries stay idempotent."""
    body: Body = {}
    if effects.enqueues:
        body["enqueues"] = [enqueue_body(*with_id(r)) for r in effects.enqueues]
    if effects.kv_writes:
        body["kv_writes"] = kv_writes_body(effects.kv_writes)
    if effects.kv_deletes:
        body["kv_deletes"] = [bytes(k) for k in effects.kv_deletes]
    if effects.kv_expect:
        body["kv_expect"] = kv_expect_body(effects.kv_expect)
    return body


def settlement_body(settlement: Settlement) -> Body:
    """One entry of ``POST /v1/claims/settle``."""
    claim = settlement.claim
    body: Body = {"job_id": claim.id, "token": claim.token, "action": settlement.action}
    body.update(settlement_fields(settlement))
    return body


def settlement_fields(settlement: Settlement) -> Body:
    """The fields of a settlement after ``job_id`` and ``action`` (with the token)."""
    body: Body = {"token": settlement.claim.token}
    if isinstance(settlement, Ack):
        if settlement.effects is not None:
            body["effects"] = effects_body(settlement.effects)
    elif isinstance(settlement, Nack):
        body["error"] = settlement.error
        if settlement.retry_after is not None:
            body["retry_after"] = settlement.retry_after
        if settlement.kv_writes:
            body["kv_writes"] = kv_writes_body(settlement.kv_writes)
        if settlement.effects_if_dead is not None:
            body["effects_if_dead"] = effects_body(settlement.effects_if_dead)
    else:
        body["reason"] = settlement.reason
        if settlement.effects is not None:
            body["effects"] = effects_body(settlement.effects)
    return body


# -- decoding ------------------------------------------------------------------------------


def job(data: Mapping[str, Any]) -> Job:
    """A `Job` from its wire map."""
    try:
        return Job(
            id=data["id"],
            queue_name=data["queue_name"],
            payload=bytes(data["payload"]),
            status=JobStatus(data["status"]),
            priority=data["priority"],
            attempts=data["attempts"],
            max_attempts=data["max_attempts"],
            enqueued_at=data["enqueued_at"],
            headers=dict(data.get("headers") or {}),
            claimed_at=data.get("claimed_at"),
            run_at=data.get("run_at"),
            last_error=data.get("last_error"),
            dedup_key=data.get("dedup_key"),
            completed_at=data.get("completed_at"),
            failed_at=data.get("failed_at"),
            cancel_requested=bool(data.get("cancel_requested", False)),
            # Absent from a server before 0.3 (no wakes, no history there).
            woken_at=data.get("woken_at"),
            wake_payload=_opt_bytes(data.get("wake_payload")),
            history_size=int(data.get("history_size") or 0),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ServerError(f"undecodable job from the server: {exc!r}") from exc


def attempt(data: Mapping[str, Any]) -> JobAttempt:
    """A `JobAttempt` from its wire map."""
    try:
        return JobAttempt(
            attempt=data["attempt"],
            outcome=AttemptOutcome(data["outcome"]),
            recorded_at=data["recorded_at"],
            claimed_at=data.get("claimed_at"),
            error=data.get("error"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ServerError(f"undecodable attempt from the server: {exc!r}") from exc


def enqueue_result(data: Mapping[str, Any]) -> EnqueueResult:
    """An `EnqueueResult` from ``{id, created}``."""
    return EnqueueResult(str(data["id"]), bool(data["created"]))


def enqueue_results(items: Sequence[Mapping[str, Any]] | None) -> list[EnqueueResult]:
    """A list of `EnqueueResult`."""
    return [enqueue_result(item) for item in items or ()]


def claim(data: Mapping[str, Any]) -> Claim:
    """A `Claim` from its wire map."""
    return Claim(job(data["job"]), str(data["token"]), int(data["lease_expires_at"]))


# -- calls ---------------------------------------------------------------------------------


def _q(queue_name: str) -> str:
    from urllib.parse import quote

    return quote(queue_name, safe="")


def enqueue(
    request: EnqueueRequest,
    kv_writes: Mapping[bytes, bytes] | None,
    kv_expect: Mapping[bytes, bytes | None] | None,
) -> Call[EnqueueResult]:
    """``POST /v1/jobs``: idempotent, since the job id is fixed before the first attempt."""
    request, job_id = with_id(request)
    body = enqueue_body(request, job_id)
    if kv_writes:
        body["kv_writes"] = kv_writes_body(kv_writes)
    if kv_expect:
        body["kv_expect"] = kv_expect_body(kv_expect)
    return Call(
        "POST",
        "/v1/jobs",
        enqueue_result,
        body,
        landed_if_job=job_id if kv_expect else None,
        landed_result=EnqueueResult(job_id, created=False),
    )


def enqueue_batch(
    requests: Sequence[EnqueueRequest],
    kv_writes: Mapping[bytes, bytes] | None,
    kv_expect: Mapping[bytes, bytes | None] | None,
) -> Call[list[EnqueueResult]]:
    """``POST /v1/jobs/batch``: idempotent, every job id fixed before the first attempt."""
    jobs = [enqueue_body(*with_id(r)) for r in requests]
    body: Body = {"jobs": jobs}
    if kv_writes:
        body["kv_writes"] = kv_writes_body(kv_writes)
    if kv_expect:
        body["kv_expect"] = kv_expect_body(kv_expect)
    return Call(
        "POST",
        "/v1/jobs/batch",
        lambda d: enqueue_results(d["results"]),
        body,
        landed_if_job=str(jobs[0]["job_id"]) if kv_expect and jobs else None,
        landed_result=[EnqueueResult(str(j["job_id"]), created=False) for j in jobs],
    )


def get_job(job_id: str) -> Call[Job]:
    """``GET /v1/jobs/{id}``."""
    return Call("GET", f"/v1/jobs/{_q(job_id)}", job)


def get_job_history(job_id: str) -> Call[list[JobAttempt]]:
    """``GET /v1/jobs/{id}/history``: a read, safe to repeat."""
    return Call(
        "GET", f"/v1/jobs/{_q(job_id)}/history", lambda d: [attempt(a) for a in d["history"]]
    )


def wake_scheduled(job_id: str, payload: bytes | None) -> Call[WakeOutcome]:
    """``POST /v1/jobs/{id}/wake``: not idempotent in its answer, so not resent blindly.

    A repeat of a wake that landed answers ``not_scheduled`` (the job is pending already), and
    if the job has meanwhile failed into a retry's backoff, it wakes that retry too.
    """
    return Call(
        "POST",
        f"/v1/jobs/{_q(job_id)}/wake",
        lambda d: WakeOutcome(d["outcome"]),
        {"payload": _bin(payload)},
        idempotent=False,
    )


def cancel(job_id: str) -> Call[CancelOutcome]:
    """``POST /v1/jobs/{id}/cancel``: idempotent (a repeat reports the job's new state)."""
    return Call("POST", f"/v1/jobs/{_q(job_id)}/cancel", lambda d: CancelOutcome(d["outcome"]))


def wait_job(job_id: str, timeout: float) -> Call[tuple[Job | None, bool]]:
    """``GET /v1/jobs/{id}/wait``: one long poll of at most ``timeout`` seconds."""

    def parse(d: Body) -> tuple[Job | None, bool]:
        found = d.get("job")
        return (None if found is None else job(found)), bool(d["finished"])

    return Call(
        "GET",
        f"/v1/jobs/{_q(job_id)}/wait",
        parse,
        params={"timeout": timeout},
        long_poll=timeout,
    )


def list_queues() -> Call[list[str]]:
    """``GET /v1/queues``."""
    return Call("GET", "/v1/queues", lambda d: [str(q) for q in d["queues"]])


def stats(queue_name: str) -> Call[QueueStats]:
    """``GET /v1/queues/{q}/stats``."""

    def parse(d: Body) -> QueueStats:
        fields = ("pending", "scheduled", "claimed", "done", "dead", "quarantined")
        return QueueStats(str(d.get("queue_name", queue_name)), *(int(d.get(f, 0)) for f in fields))

    return Call("GET", f"/v1/queues/{_q(queue_name)}/stats", parse)


def config() -> Call[ServerConfig]:
    """``GET /v1/config``."""
    return Call(
        "GET",
        "/v1/config",
        lambda d: ServerConfig(str(d.get("name", "")), d["default"], d.get("queues") or {}),
    )


def health() -> Call[Health]:
    """``GET /v1/health``."""
    return Call(
        "GET",
        "/v1/health",
        lambda d: Health(
            str(d["status"]), str(d.get("name", "")), str(d.get("version", "")), d.get("owner")
        ),
    )


def list_jobs(
    queue_name: str, status: JobStatus | str, cursor: bytes | None, limit: int | None
) -> Call[JobPage]:
    """``GET /v1/queues/{q}/jobs`` (admin)."""
    import base64

    params: dict[str, str | int | float] = {"status": str(JobStatus(status))}
    if cursor is not None:
        params["cursor"] = base64.b64encode(cursor).decode("ascii")
    if limit is not None:
        params["limit"] = limit

    def parse(d: Body) -> JobPage:
        nxt = d.get("next_cursor")
        if isinstance(nxt, str):
            nxt = base64.b64decode(nxt)
        return JobPage([job(j) for j in d["jobs"]], nxt)

    return Call("GET", f"/v1/queues/{_q(queue_name)}/jobs", parse, params=params)


def dead_jobs(queue_name: str, after: str | None, limit: int | None) -> Call[list[Job]]:
    """``GET /v1/queues/{q}/dead`` (admin)."""
    params: dict[str, str | int | float] = {}
    if after is not None:
        params["after"] = after
    if limit is not None:
        params["limit"] = limit
    return Call(
        "GET",
        f"/v1/queues/{_q(queue_name)}/dead",
        lambda d: [job(j) for j in d["jobs"]],
        params=params,
    )


def requeue(job_id: str) -> Call[None]:
    """``POST /v1/jobs/{id}/requeue`` (admin); a repeat would be 409, so not retried blindly."""
    return Call("POST", f"/v1/jobs/{_q(job_id)}/requeue", lambda _: None, idempotent=False)


def purge(queue_name: str, status: JobStatus | str) -> Call[int]:
    """``POST /v1/queues/{q}/purge`` (admin); a repeat removes nothing more."""
    return Call(
        "POST",
        f"/v1/queues/{_q(queue_name)}/purge",
        lambda d: int(d["removed"]),
        {"status": str(JobStatus(status))},
    )


def claim_batch(
    queue_name: str, max_jobs: int, lease: float | None, wait: float
) -> Call[list[Claim]]:
    """``POST /v1/queues/{q}/claim``: not idempotent (a lost answer's claims wait out a lease)."""
    body: Body = {"max_jobs": max_jobs, "wait": wait}
    if lease is not None:
        body["lease"] = lease
    return Call(
        "POST",
        f"/v1/queues/{_q(queue_name)}/claim",
        lambda d: [claim(c) for c in d["claims"]],
        body,
        idempotent=False,
        long_poll=wait,
    )


def wait_for_jobs(queue_name: str, timeout: float) -> Call[bool]:
    """``POST /v1/queues/{q}/wait``."""
    return Call(
        "POST",
        f"/v1/queues/{_q(queue_name)}/wait",
        lambda d: bool(d["ready"]),
        {"timeout": timeout},
        long_poll=timeout,
    )


def renew(items: Sequence[tuple[Claim | tuple[str, str], float]]) -> Call[list[RenewResult]]:
    """``POST /v1/claims/renew``: idempotent (each extension counts from now)."""
    claims: list[Body] = []
    for target, extension in items:
        job_id, token = (target.id, target.token) if isinstance(target, Claim) else target
        claims.append({"job_id": job_id, "token": token, "extension": extension})

    def parse(d: Body) -> list[RenewResult]:
        return [
            RenewResult(
                str(r["job_id"]),
                r.get("expires_at"),
                bool(r.get("cancel_requested", False)),
                bool(r.get("lost", False)),
            )
            for r in d["results"]
        ]

    return Call("POST", "/v1/claims/renew", parse, {"claims": claims})


def settle_one(settlement: Settlement) -> Call[Body]:
    """``POST /v1/claims/{id}/ack|nack|dead``.

    Safe to resend: the claim token fences it, so a repeat of one that landed can only fail
    with `ClaimLost`, never apply twice.
    """
    return Call(
        "POST",
        f"/v1/claims/{_q(settlement.claim.id)}/{settlement.action}",
        lambda d: d,
        settlement_fields(settlement),
    )


def ack_result(d: Body) -> list[EnqueueResult]:
    """The answer of an ack or a dead-letter."""
    return enqueue_results(d.get("enqueued"))


def nack_result(d: Body) -> NackResult:
    """The answer of a nack."""
    return NackResult(bool(d.get("dead", False)), enqueue_results(d.get("enqueued")))


def settle(settlements: Sequence[Settlement]) -> Call[list[SettleResult]]:
    """``POST /v1/claims/settle``: entries settle independently; fenced by tokens, so resendable."""

    def parse(d: Body) -> list[SettleResult]:
        out: list[SettleResult] = []
        for r in d["results"]:
            err = None if r.get("ok") else error_from_map(r.get("error") or {})
            out.append(
                SettleResult(
                    str(r["job_id"]),
                    err,
                    bool(r.get("dead", False)),
                    enqueue_results(r.get("enqueued")),
                )
            )
        return out

    return Call(
        "POST",
        "/v1/claims/settle",
        parse,
        {"settlements": [settlement_body(s) for s in settlements]},
    )


def kv_get(key: bytes) -> Call[bytes | None]:
    """``POST /v1/kv/get``."""
    return Call("POST", "/v1/kv/get", lambda d: _opt_bytes(d.get("value")), {"key": bytes(key)})


def kv_put(key: bytes, value: bytes) -> Call[None]:
    """``POST /v1/kv/put``: idempotent."""
    return Call("POST", "/v1/kv/put", lambda _: None, {"key": bytes(key), "value": bytes(value)})


def kv_delete(key: bytes) -> Call[None]:
    """``POST /v1/kv/delete``: idempotent."""
    return Call("POST", "/v1/kv/delete", lambda _: None, {"key": bytes(key)})


def kv_cas(key: bytes, expected: bytes | None, new: bytes | None) -> Call[bool]:
    """``POST /v1/kv/cas``: not idempotent (a repeat of one that swapped reports False)."""
    return Call(
        "POST",
        "/v1/kv/cas",
        lambda d: bool(d["swapped"]),
        {"key": bytes(key), "expected": _bin(expected), "new": _bin(new)},
        idempotent=False,
    )


def kv_scan(prefix: bytes, cursor: bytes | None, limit: int | None) -> Call[KvPage]:
    """``POST /v1/kv/scan``."""
    body: Body = {"prefix": bytes(prefix)}
    if cursor is not None:
        body["cursor"] = bytes(cursor)
    if limit is not None:
        body["limit"] = limit

    def parse(d: Body) -> KvPage:
        entries = [(bytes(e["key"]), bytes(e["value"])) for e in d["entries"]]
        return KvPage(entries, _opt_bytes(d.get("next_cursor")))

    return Call("POST", "/v1/kv/scan", parse, body)


def blob_get(path: str) -> Call[bytes | None]:
    """``POST /v1/blobs/get``."""
    return Call("POST", "/v1/blobs/get", lambda d: _opt_bytes(d.get("data")), {"path": path})


def blob_put(path: str, data: bytes, create_only: bool) -> Call[bool]:
    """``POST /v1/blobs/put``: idempotent unless ``create_only`` (a repeat reports False)."""
    return Call(
        "POST",
        "/v1/blobs/put",
        lambda d: bool(d["written"]),
        {"path": path, "data": bytes(data), "create_only": create_only},
        idempotent=not create_only,
    )


def blob_delete(path: str) -> Call[bool]:
    """``POST /v1/blobs/delete``."""
    return Call("POST", "/v1/blobs/delete", lambda d: bool(d["deleted"]), {"path": path})


def blob_list(directory: str, start_after: str | None, limit: int | None) -> Call[list[str]]:
    """``POST /v1/blobs/list``."""
    body: Body = {"directory": directory}
    if start_after is not None:
        body["start_after"] = start_after
    if limit is not None:
        body["limit"] = limit
    return Call("POST", "/v1/blobs/list", lambda d: [str(p) for p in d["paths"]], body)


def _bin(value: bytes | None) -> bytes | None:
    return None if value is None else bytes(value)


def _opt_bytes(value: object) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        import base64

        return base64.b64decode(value)
    return bytes(cast("bytes", value))
