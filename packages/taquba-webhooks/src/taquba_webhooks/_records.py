"""Inspection records kept in the queue's user KV namespace, and their keys.

Key layout (all under `KV_PREFIX`, ``b"webhooks/"``):

- ``webhooks/attempts/<job id>``: the `DeliveryAttempt` of the delivery's latest attempt.
- ``webhooks/endpoints/<endpoint>``: the `EndpointStats` counters of one endpoint (UTF-8 key).
- ``webhooks/health/<endpoint>``: the `EndpointHealth` of one endpoint (consecutive failures,
  disabled or not), kept when the worker tracks endpoint health (UTF-8 key).

Values are MessagePack maps with a format version.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Any

import ormsgpack

__all__ = [
    "KV_PREFIX",
    "AttemptOutcome",
    "DeliveryAttempt",
    "EndpointStats",
]

KV_PREFIX = b"webhooks/"
"""The user-KV prefix every record of this package lives under."""

ATTEMPTS_PREFIX = KV_PREFIX + b"attempts/"
ENDPOINTS_PREFIX = KV_PREFIX + b"endpoints/"
HEALTH_PREFIX = KV_PREFIX + b"health/"
_FORMAT_VERSION = 1


def attempt_key(job_id: str) -> bytes:
    """KV key of a delivery's attempt record."""
    return ATTEMPTS_PREFIX + job_id.encode("ascii")


def endpoint_key(endpoint: str) -> bytes:
    """KV key of an endpoint's statistics."""
    return ENDPOINTS_PREFIX + endpoint.encode("utf-8")


def health_key(endpoint: str) -> bytes:
    """KV key of an endpoint's health record."""
    return HEALTH_PREFIX + endpoint.encode("utf-8")


class AttemptOutcome(enum.StrEnum):
    """How one delivery attempt was settled."""

    DELIVERED = "delivered"
    """The receiver answered 2xx; the job was acknowledged."""
    RETRY = "retry"
    """A transient failure; the job was scheduled for another attempt."""
    DEAD = "dead"
    """A permanent failure, a refusal, a cancel or the last attempt; the job is dead."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryAttempt:
    """What happened on a delivery's latest attempt (read it with `get_attempt`)."""

    job_id: str
    """The delivery's job id."""
    webhook_id: str
    """The ``webhook-id`` sent."""
    attempt: int
    """Which attempt this was (1 for the first; replay starts counting again)."""
    at: int
    """When the attempt started (ms since the epoch, queue clock)."""
    duration_ms: int
    """How long it took, in milliseconds."""
    url: str
    """The URL it was sent to."""
    endpoint: str
    """The endpoint its statistics are counted under."""
    outcome: AttemptOutcome
    """How the attempt was settled."""
    status: int | None = None
    """The HTTP status of the final response, or None if there was none."""
    response_body: bytes = b""
    """The start of the response body, at most the worker's ``response_body_limit`` bytes."""
    response_truncated: bool = False
    """Whether the response body was longer than ``response_body``."""
    error: str | None = None
    """Why the attempt failed (None when delivered)."""
    retry_after: float | None = None
    """The receiver's ``Retry-After``, in seconds after capping, if it sent a usable one."""


def encode_attempt(attempt: DeliveryAttempt) -> bytes:
    """The stored form of an attempt record."""
    return ormsgpack.packb(
        {
            "v": _FORMAT_VERSION,
            "job_id": attempt.job_id,
            "webhook_id": attempt.webhook_id,
            "attempt": attempt.attempt,
            "at": attempt.at,
            "duration_ms": attempt.duration_ms,
            "url": attempt.url,
            "endpoint": attempt.endpoint,
            "outcome": attempt.outcome.value,
            "status": attempt.status,
            "response_body": attempt.response_body,
            "response_truncated": attempt.response_truncated,
            "error": attempt.error,
            "retry_after": attempt.retry_after,
        }
    )


def decode_attempt(raw: bytes) -> DeliveryAttempt | None:
    """Decode a stored attempt record; None if it is not one."""
    fields = _decode_map(raw)
    if fields is None:
        return None
    try:
        return DeliveryAttempt(
            job_id=fields["job_id"],
            webhook_id=fields["webhook_id"],
            attempt=fields["attempt"],
            at=fields["at"],
            duration_ms=fields["duration_ms"],
            url=fields["url"],
            endpoint=fields["endpoint"],
            outcome=AttemptOutcome(fields["outcome"]),
            status=fields["status"],
            response_body=fields["response_body"],
            response_truncated=fields["response_truncated"],
            error=fields["error"],
            retry_after=fields["retry_after"],
        )
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class EndpointStats:
    """Delivery counters and state of one endpoint (read them with `endpoint_stats`).

    Counters count settled attempts: ``delivered`` acknowledged ones, ``retried`` transient
    failures that were scheduled again, ``dead`` attempts that dead-lettered their delivery
    (permanent failures, refusals and exhausted retries; cancels, and deliveries dead-lettered
    without a request because the endpoint is disabled, are not counted).

    The state fields (``consecutive_failures``, ``disabled_at``, ``disabled_reason``) come from
    the endpoint's health record, which a `WebhookWorker` keeps when it tracks endpoint health
    (``disable_after`` or ``disable_on_gone``), or which `disable_endpoint` wrote.
    """

    endpoint: str
    """The endpoint (by default a URL origin, see `endpoint_of`)."""
    delivered: int = 0
    """Attempts answered with 2xx."""
    retried: int = 0
    """Attempts that failed transiently and were retried."""
    dead: int = 0
    """Attempts that dead-lettered their delivery."""
    last_attempt_at: int | None = None
    """When the latest counted attempt started (ms since the epoch)."""
    last_delivered_at: int | None = None
    """When the latest delivered attempt started."""
    last_failed_at: int | None = None
    """When the latest failed (retried or dead) attempt started."""
    last_status: int | None = None
    """The HTTP status of the latest counted attempt (None: it got no response)."""
    consecutive_failures: int = 0
    """Failed attempts since the latest delivered one (kept while health is tracked)."""
    disabled_at: int | None = None
    """When the endpoint was disabled (ms since the epoch), or None while it is enabled."""
    disabled_reason: str | None = None
    """Why it was disabled, e.g. ``"HTTP 410 Gone"``, or None while it is enabled."""

    @property
    def attempts(self) -> int:
        """All counted attempts."""
        return self.delivered + self.retried + self.dead

    @property
    def disabled(self) -> bool:
        """Whether deliveries to the endpoint are dead-lettered without a request."""
        return self.disabled_at is not None


@dataclass(frozen=True, slots=True)
class EndpointHealth:
    """The health record of one endpoint (library-internal; shown through `EndpointStats`)."""

    consecutive_failures: int = 0
    disabled_at: int | None = None
    disabled_reason: str | None = None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None


def merge_stats(a: EndpointStats, b: EndpointStats) -> EndpointStats:
    """The sum of two sets of counters of the same endpoint (``b`` the later, on ties).

    The state fields are not counters: the result keeps ``a``'s.
    """
    later = b.last_attempt_at is not None and (
        a.last_attempt_at is None or b.last_attempt_at >= a.last_attempt_at
    )
    return replace(
        a,
        delivered=a.delivered + b.delivered,
        retried=a.retried + b.retried,
        dead=a.dead + b.dead,
        last_attempt_at=_latest(a.last_attempt_at, b.last_attempt_at),
        last_delivered_at=_latest(a.last_delivered_at, b.last_delivered_at),
        last_failed_at=_latest(a.last_failed_at, b.last_failed_at),
        last_status=b.last_status if later else a.last_status,
    )


def with_health(stats: EndpointStats, health: EndpointHealth) -> EndpointStats:
    """``stats`` with the state fields taken from ``health``."""
    return replace(
        stats,
        consecutive_failures=health.consecutive_failures,
        disabled_at=health.disabled_at,
        disabled_reason=health.disabled_reason,
    )


def encode_stats(stats: EndpointStats) -> bytes:
    """The stored form of endpoint statistics (the counters only)."""
    return ormsgpack.packb(
        {
            "v": _FORMAT_VERSION,
            "delivered": stats.delivered,
            "retried": stats.retried,
            "dead": stats.dead,
            "last_attempt_at": stats.last_attempt_at,
            "last_delivered_at": stats.last_delivered_at,
            "last_failed_at": stats.last_failed_at,
            "last_status": stats.last_status,
        }
    )


def decode_stats(endpoint: str, raw: bytes | None) -> EndpointStats:
    """Decode stored statistics; zeros if absent or unreadable."""
    fields = _decode_map(raw) if raw is not None else None
    if fields is None:
        return EndpointStats(endpoint)
    try:
        return EndpointStats(
            endpoint,
            int(fields["delivered"]),
            int(fields["retried"]),
            int(fields["dead"]),
            fields["last_attempt_at"],
            fields["last_delivered_at"],
            fields["last_failed_at"],
            fields.get("last_status"),  # absent in records written before 0.4
        )
    except (KeyError, TypeError, ValueError):
        return EndpointStats(endpoint)


def encode_health(health: EndpointHealth) -> bytes:
    """The stored form of an endpoint's health record."""
    return ormsgpack.packb(
        {
            "v": _FORMAT_VERSION,
            "consecutive_failures": health.consecutive_failures,
            "disabled_at": health.disabled_at,
            "disabled_reason": health.disabled_reason,
        }
    )


def decode_health(raw: bytes | None) -> EndpointHealth:
    """Decode a stored health record; a healthy, enabled one if absent or unreadable."""
    fields = _decode_map(raw) if raw is not None else None
    if fields is None:
        return EndpointHealth()
    try:
        return EndpointHealth(
            int(fields["consecutive_failures"]),
            fields["disabled_at"],
            fields["disabled_reason"],
        )
    except (KeyError, TypeError, ValueError):
        return EndpointHealth()


def _latest(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _decode_map(raw: bytes) -> dict[str, Any] | None:
    try:
        data = ormsgpack.unpackb(raw)
    except (ormsgpack.MsgpackDecodeError, TypeError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("v") != _FORMAT_VERSION:  # pyright: ignore[reportUnknownMemberType]
        return None
    return data  # pyright: ignore[reportUnknownVariableType]
