"""The records of wire protocol v1 (docs/design/http-api.md) and their conversions.

Request schemas validate and convert bodies; response schemas only describe (the server builds
responses from taquba records with the functions below). Both feed the OpenAPI document.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import taquba

from ._schema import (
    Bool,
    Bytes,
    Enum,
    Field,
    Int,
    List,
    Nullable,
    Num,
    Obj,
    Schema,
    Str,
    StrMap,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

MAX_SECONDS = 1e12
"""The largest duration accepted on the wire (the core clamps due times anyway)."""
MAX_LEASE = 366 * 86_400.0
"""The longest lease or lease extension accepted on the wire (a year)."""
MAX_WAIT = 60.0
"""The longest long poll (``wait`` of a claim, ``timeout`` of a wait)."""
MAX_CLAIM_BATCH = 256
"""The most jobs one claim request may take."""
MAX_PAGE = 1000
"""The largest ``limit`` of a listing."""
MAX_BATCH = 10_000
"""The most items of one batch (enqueue, renew, settle, KV writes)."""
JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"

# ---------------------------------------------------------------------------- requests

QUEUE_NAME = Str(min_length=1, max_length=taquba.MAX_QUEUE_NAME_BYTES, description="A queue name.")
JOB_ID = Str(min_length=1, max_length=128, pattern=JOB_ID_PATTERN, description="A job id.")
KEY = Bytes(description="A user KV key.")
VALUE = Bytes(max_length=taquba.MAX_KV_VALUE_SIZE, description="A user KV value.")

ENQUEUE_FIELDS: dict[str, Field] = {
    "queue_name": Field(QUEUE_NAME, required=True),
    "payload": Field(Bytes(description="The job's payload."), required=True),
    "priority": Field(Nullable(Int(0, taquba.MAX_PRIORITY))),
    "run_at": Field(Nullable(Int(0, taquba.MAX_TIMESTAMP_MS, description="Epoch ms."))),
    "delay": Field(Nullable(Num(0, MAX_SECONDS, description="Seconds."))),
    "dedup_key": Field(Nullable(Str(min_length=1, max_length=1024))),
    "headers": Field(Nullable(StrMap())),
    "max_attempts": Field(Nullable(Int(1, 2**63 - 1))),
    "job_id": Field(Nullable(JOB_ID)),
}
ENQUEUE_REQUEST = Obj("EnqueueRequest", ENQUEUE_FIELDS, description="One job to enqueue.")
KV_WRITE = Obj("KvWrite", {"key": Field(KEY, required=True), "value": Field(VALUE, required=True)})
KV_EXPECT = Obj(
    "KvExpect",
    {"key": Field(KEY, required=True), "value": Field(Nullable(VALUE), required=True)},
    description="A precondition: ``key`` holds ``value`` (null: is absent).",
)
KV_WRITES = Nullable(List(KV_WRITE, max_items=MAX_BATCH))
KV_EXPECTS = Nullable(List(KV_EXPECT, max_items=MAX_BATCH))
EFFECTS = Obj(
    "Effects",
    {
        "enqueues": Field(Nullable(List(ENQUEUE_REQUEST, max_items=MAX_BATCH))),
        "kv_writes": Field(KV_WRITES),
        "kv_deletes": Field(Nullable(List(KEY, max_items=MAX_BATCH))),
        "kv_expect": Field(KV_EXPECTS),
    },
    description=(
        "Writes applied atomically with a settlement, under optional KV preconditions "
        "(``kv_expect``: if one does not hold, the answer is 409 ``kv_conflict``, nothing is "
        "written and the claim is still held)."
    ),
)

ENQUEUE_BODY = Obj(
    None, {**ENQUEUE_FIELDS, "kv_writes": Field(KV_WRITES), "kv_expect": Field(KV_EXPECTS)}
)
ENQUEUE_BATCH_BODY = Obj(
    None,
    {
        "jobs": Field(List(ENQUEUE_REQUEST, max_items=MAX_BATCH), required=True),
        "kv_writes": Field(KV_WRITES),
        "kv_expect": Field(KV_EXPECTS),
    },
)
CLAIM_BODY = Obj(
    None,
    {
        "max_jobs": Field(Int(1, MAX_CLAIM_BATCH), default=1),
        "lease": Field(Nullable(Num(0, MAX_LEASE, exclusive_minimum=True))),
        "wait": Field(Num(0, MAX_WAIT), default=0.0),
    },
)
WAIT_BODY = Obj(None, {"timeout": Field(Num(0, MAX_WAIT), required=True)})
TOKEN = Str(min_length=1, max_length=256, description="The claim token.")
RENEW_BODY = Obj(
    None,
    {
        "claims": Field(
            List(
                Obj(
                    "RenewItem",
                    {
                        "job_id": Field(JOB_ID, required=True),
                        "token": Field(TOKEN, required=True),
                        "extension": Field(
                            Num(0, MAX_LEASE, exclusive_minimum=True), required=True
                        ),
                    },
                ),
                max_items=MAX_BATCH,
            ),
            required=True,
        )
    },
)
ERROR_TEXT = Str(max_length=65_536)
ACK_FIELDS: dict[str, Field] = {
    "token": Field(TOKEN, required=True),
    "effects": Field(Nullable(EFFECTS)),
}
NACK_FIELDS: dict[str, Field] = {
    "token": Field(TOKEN, required=True),
    "error": Field(ERROR_TEXT, required=True),
    "retry_after": Field(Nullable(Num(0, MAX_SECONDS))),
    "kv_writes": Field(KV_WRITES),
    "effects_if_dead": Field(Nullable(EFFECTS)),
}
DEAD_FIELDS: dict[str, Field] = {
    "token": Field(TOKEN, required=True),
    "reason": Field(ERROR_TEXT, required=True),
    "effects": Field(Nullable(EFFECTS)),
}
ACK_BODY = Obj(None, ACK_FIELDS)
NACK_BODY = Obj(None, NACK_FIELDS)
DEAD_BODY = Obj(None, DEAD_FIELDS)
SETTLEMENT = Obj(
    "Settlement",
    {
        "job_id": Field(JOB_ID, required=True),
        "action": Field(Enum(("ack", "nack", "dead")), required=True),
        "token": Field(TOKEN, required=True),
        "effects": Field(Nullable(EFFECTS)),
        "error": Field(Nullable(ERROR_TEXT)),
        "retry_after": Field(Nullable(Num(0, MAX_SECONDS))),
        "kv_writes": Field(KV_WRITES),
        "effects_if_dead": Field(Nullable(EFFECTS)),
        "reason": Field(Nullable(ERROR_TEXT)),
    },
    description="One settlement of a batch: the fields of its action's endpoint.",
)
SETTLE_BODY = Obj(
    None, {"settlements": Field(List(SETTLEMENT, max_items=MAX_BATCH), required=True)}
)
KEY_BODY = Obj(None, {"key": Field(KEY, required=True)})
PUT_BODY = Obj(None, {"key": Field(KEY, required=True), "value": Field(VALUE, required=True)})
CAS_BODY = Obj(
    None,
    {
        "key": Field(KEY, required=True),
        "expected": Field(Nullable(VALUE), required=True),
        "new": Field(Nullable(VALUE), required=True),
    },
)
SCAN_BODY = Obj(
    None,
    {
        "prefix": Field(Nullable(KEY)),
        "cursor": Field(Nullable(Bytes())),
        "limit": Field(Int(0, MAX_PAGE), default=100),
    },
)
BLOB_PATH = Str(min_length=1, max_length=4096, description="A blob path relative to the root.")
PATH_BODY = Obj(None, {"path": Field(BLOB_PATH, required=True)})
BLOB_PUT_BODY = Obj(
    None,
    {
        "path": Field(BLOB_PATH, required=True),
        "data": Field(Bytes(), required=True),
        "create_only": Field(Bool(), default=False),
    },
)
BLOB_LIST_BODY = Obj(
    None,
    {
        "directory": Field(Str(max_length=4096), required=True),
        "start_after": Field(Nullable(Str(max_length=4096))),
        "limit": Field(Nullable(Int(0, MAX_PAGE))),
    },
)
PURGE_BODY = Obj(None, {"status": Field(Enum(("dead", "done")), required=True)})
WAKE_BODY = Obj(
    None,
    {"payload": Field(Nullable(Bytes(description="Handed to the job as its ``wake_payload``.")))},
)
EMPTY_BODY = Obj(None, {})

# ---------------------------------------------------------------------------- responses


def out(name: str | None, fields: Mapping[str, Schema], description: str | None = None) -> Obj:
    """A response object: every field is always present."""
    return Obj(
        name, {k: Field(v, required=True) for k, v in fields.items()}, description=description
    )


MS = Int(0, 2**63 - 1, description="Epoch milliseconds.")
JOB = out(
    "Job",
    {
        "id": Str(),
        "queue_name": Str(),
        "payload": Bytes(),
        "status": Enum(tuple(s.value for s in taquba.JobStatus)),
        "priority": Int(0, taquba.MAX_PRIORITY),
        "attempts": Int(0, 2**63 - 1),
        "max_attempts": Int(1, 2**63 - 1),
        "enqueued_at": MS,
        "headers": StrMap(),
        "claimed_at": Nullable(MS),
        "run_at": Nullable(MS),
        "last_error": Nullable(Str()),
        "dedup_key": Nullable(Str()),
        "completed_at": Nullable(MS),
        "failed_at": Nullable(MS),
        "cancel_requested": Bool(),
        "woken_at": Nullable(MS),
        "wake_payload": Nullable(Bytes()),
        "history_size": Int(0, 2**63 - 1),
    },
    description="A job record (a `taquba.JobRecord`).",
)
JOB_ATTEMPT = out(
    "JobAttempt",
    {
        "attempt": Int(0, 2**63 - 1, description="The attempt it ends (0 for ``requeued``)."),
        "outcome": Enum(tuple(o.value for o in taquba.AttemptOutcome)),
        "recorded_at": MS,
        "claimed_at": Nullable(MS),
        "error": Nullable(Str()),
    },
    description="One entry of a job's attempt history (a `taquba.JobAttempt`).",
)
WAKE_OUTCOME = Enum(tuple(o.value for o in taquba.WakeOutcome))
ENQUEUE_RESULT = out("EnqueueResult", {"id": Str(), "created": Bool()})
ENQUEUED = List(ENQUEUE_RESULT)
CLAIM = out(
    "Claim",
    {"job": JOB, "token": Str(), "lease_expires_at": MS},
    description="A delivery of a job; the token settles it.",
)
ERROR = out(
    "Error",
    {
        "error": out(
            "ErrorDetail",
            {
                "code": Str(),
                "message": Str(),
                "field": Nullable(Str()),
            },
        )
    },
    description="Every error response.",
)
SECONDS_OR_INF = Nullable(Num(0, math.inf))
QUEUE_CONFIG = out(
    "QueueConfig",
    {
        "max_attempts": Int(1, 2**63 - 1),
        "lease_duration": Num(0, math.inf),
        "default_priority": Int(0, taquba.MAX_PRIORITY),
        "retry_backoff_base": Num(0, math.inf),
        "retry_backoff_max": Nullable(Num(0, math.inf)),
        "keep_done": Nullable(Num(0, math.inf)),
        "keep_done_forever": Bool(),
        "dead_retention": Nullable(Num(0, math.inf)),
        "payload_offload_threshold": Nullable(
            Int(0, 2**63 - 1, description="Bytes; null: every payload stays in its record.")
        ),
    },
    description=(
        "A queue's configuration. An unlimited duration (infinity) is null; ``keep_done`` is "
        "null both when done records are not kept and when they are kept forever "
        "(``keep_done_forever``); ``payload_offload_threshold`` is null when payloads are "
        "never offloaded."
    ),
)
SETTLE_RESULT = out(
    "SettleResult",
    {
        "job_id": Str(),
        "ok": Bool(),
        "error": Nullable(
            out("SettleError", {"code": Str(), "message": Str(), "field": Nullable(Str())})
        ),
        "dead": Nullable(Bool()),
        "enqueued": Nullable(ENQUEUED),
    },
)
QUARANTINED = out(
    "QuarantinedRecord",
    {
        "queue_name": Nullable(Str()),
        "key": Bytes(),
        "raw": Bytes(),
        "reason": Str(),
        "quarantined_at": MS,
    },
)
OWNER = out(
    "Owner",
    {
        "instance_id": Str(description="This server process's instance id (in claim tokens)."),
        "owner_id": Str(description="The owner record's id (random per open of the store)."),
        "url": Nullable(Str(description="The address advertised in the owner record.")),
        "pid": Int(0, 2**63 - 1),
        "hostname": Str(),
        "started_at": MS,
        "heartbeat_at": MS,
        "taquba_version": Str(),
    },
    description="The process that owns the store: this server (`taquba.OwnerInfo`).",
)

# ---------------------------------------------------------------------------- conversions


def job_out(job: taquba.JobRecord) -> dict[str, Any]:
    """The wire form of a job record."""
    return {
        "id": job.id,
        "queue_name": job.queue_name,
        "payload": job.payload,
        "status": job.status.value,
        "priority": job.priority,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "enqueued_at": job.enqueued_at,
        "headers": dict(job.headers),
        "claimed_at": job.claimed_at,
        "run_at": job.run_at,
        "last_error": job.last_error,
        "dedup_key": job.dedup_key,
        "completed_at": job.completed_at,
        "failed_at": job.failed_at,
        "cancel_requested": job.cancel_requested,
        "woken_at": job.woken_at,
        "wake_payload": job.wake_payload,
        "history_size": job.history_size,
    }


def attempt_out(attempt: taquba.JobAttempt) -> dict[str, Any]:
    """The wire form of an attempt-history entry (the keys of `taquba.cli.attempt_json`)."""
    return {
        "attempt": attempt.attempt,
        "outcome": attempt.outcome.value,
        "recorded_at": attempt.recorded_at,
        "claimed_at": attempt.claimed_at,
        "error": attempt.error,
    }


def result_out(result: taquba.EnqueueResult) -> dict[str, Any]:
    """The wire form of an enqueue result."""
    return {"id": result.id, "created": result.created}


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) else value


def config_out(config: taquba.QueueConfig) -> dict[str, Any]:
    """The wire form of a queue configuration."""
    return {
        "max_attempts": config.max_attempts,
        "lease_duration": config.lease_duration,
        "default_priority": config.default_priority,
        "retry_backoff_base": config.retry_backoff_base,
        "retry_backoff_max": _finite(config.retry_backoff_max),
        "keep_done": _finite(config.keep_done),
        "keep_done_forever": config.keep_done is not None and math.isinf(config.keep_done),
        "dead_retention": _finite(config.dead_retention),
        "payload_offload_threshold": config.payload_offload_threshold,
    }


def quarantined_out(record: taquba.QuarantinedRecord) -> dict[str, Any]:
    """The wire form of a quarantined record."""
    return {
        "queue_name": record.queue_name,
        "key": record.key,
        "raw": record.raw,
        "reason": record.reason,
        "quarantined_at": record.quarantined_at,
    }


def enqueue_in(data: Mapping[str, Any]) -> taquba.EnqueueRequest:
    """A checked ``EnqueueRequest`` body as a `taquba.EnqueueRequest`."""
    run_at = data.get("run_at")
    return taquba.EnqueueRequest(
        queue_name=data["queue_name"],
        payload=data["payload"],
        priority=data.get("priority"),
        run_at=None if run_at is None else datetime.fromtimestamp(run_at / 1000, UTC),
        delay=data.get("delay"),
        dedup_key=data.get("dedup_key"),
        headers=data.get("headers") or {},
        max_attempts=data.get("max_attempts"),
        job_id=data.get("job_id"),
    )


def kv_writes_in(items: list[dict[str, Any]] | None) -> dict[bytes, bytes] | None:
    """A checked list of ``{key, value}`` as a mapping (the last write of a key wins)."""
    if items is None:
        return None
    return {item["key"]: item["value"] for item in items}


def kv_expect_in(items: list[dict[str, Any]] | None) -> dict[bytes, bytes | None] | None:
    """A checked list of ``{key, value|null}`` expectations as a mapping."""
    if items is None:
        return None
    return {item["key"]: item["value"] for item in items}


def effects_in(data: Mapping[str, Any] | None) -> taquba.Effects | None:
    """A checked ``Effects`` body as `taquba.Effects`."""
    if data is None:
        return None
    return taquba.Effects(
        enqueues=[enqueue_in(item) for item in cast("list[Any]", data.get("enqueues") or [])],
        kv_writes=kv_writes_in(data.get("kv_writes")) or {},
        kv_deletes=list(data.get("kv_deletes") or []),
        kv_expect=kv_expect_in(data.get("kv_expect")) or {},
    )
