"""Delivery requests: validation, the job payload format, and enqueueing."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import ormsgpack

import taquba

from ._errors import InvalidDelivery

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

__all__ = [
    "DEFAULT_QUEUE_NAME",
    "DEFAULT_TIMEOUT",
    "RESERVED_HEADERS",
    "WebhookRequest",
    "decode_request",
    "endpoint_of",
    "enqueue_webhook",
]

DEFAULT_TIMEOUT = 30.0
"""Seconds one delivery attempt may take (resolve, connect, send, read) unless set per request."""

DEFAULT_QUEUE_NAME = "webhooks"
"""The queue name deliveries go to (and the worker serves) unless another is given."""

RESERVED_HEADERS = frozenset(
    {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
    }
)
"""Header names a request may not set: the worker sets them (or HTTP framing does)."""

_FORMAT_VERSION = 1
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_MAX_ENDPOINT = 512


def _parse_url(url: object) -> httpx.URL:
    if not isinstance(url, str):
        raise InvalidDelivery(f"url must be a str, not {type(url).__name__}")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise InvalidDelivery(f"invalid URL {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidDelivery(f"invalid URL {url!r}: must be an absolute http or https URL")
    return parsed


def endpoint_of(url: str) -> str:
    """The endpoint a URL belongs to for statistics: its origin, ``scheme://host[:port]``.

    The host is lower-cased (IDNA-encoded), and the scheme's default port is left out, so
    ``HTTPS://Example.com:443/a`` and ``https://example.com/b`` share ``https://example.com``.

    Raises:
        InvalidDelivery: ``url`` is not an absolute http(s) URL.
    """
    parsed = _parse_url(url)
    host = parsed.raw_host.decode("ascii").lower()
    if ":" in host:
        host = f"[{host}]"
    port = f":{parsed.port}" if parsed.port is not None else ""
    return f"{parsed.scheme}://{host}{port}"


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """One outbound webhook: where to send it, what to send, and how.

    Validated on construction (`InvalidDelivery` on a bad field). The worker adds the
    ``webhook-id``, ``webhook-timestamp`` and (when signed) ``webhook-signature`` headers and
    a ``user-agent`` unless one is given.
    """

    url: str
    """An absolute ``http`` or ``https`` URL."""
    body: bytes = b""
    """The exact bytes to send (and sign)."""
    method: str = "POST"
    """The HTTP method."""
    headers: Mapping[str, str] = field(default_factory=dict[str, str])
    """Extra request headers; names in `RESERVED_HEADERS` are refused."""
    timeout: float | None = None
    """Seconds one attempt may take in all; None uses the worker's (`DEFAULT_TIMEOUT`)."""
    id: str | None = None
    """The ``webhook-id`` receivers deduplicate on (1 to 128 of ``[A-Za-z0-9_-]``), stable
    across retries and replays. None: the delivery's job id."""
    endpoint: str | None = None
    """The statistics key; None: the URL's origin (`endpoint_of`)."""
    signing_key: str | None = None
    """Name of the worker's secret set to sign with (see `WebhookWorker`); None: unsigned."""

    def __post_init__(self) -> None:
        _parse_url(self.url)
        if not isinstance(self.body, bytes):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidDelivery(f"body must be bytes, not {type(self.body).__name__}")
        if not isinstance(self.method, str) or not _TOKEN.fullmatch(self.method):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidDelivery(f"invalid HTTP method {self.method!r}")
        headers: dict[str, str] = {}
        seen: set[str] = set()
        for name, value in dict(self.headers).items():
            if not isinstance(name, str) or not _TOKEN.fullmatch(name):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise InvalidDelivery(f"invalid header name {name!r}")
            if not isinstance(value, str) or any(c in value for c in "\r\n\0"):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise InvalidDelivery(f"invalid value for header {name!r}")
            lowered = name.lower()
            if lowered in RESERVED_HEADERS:
                raise InvalidDelivery(f"header {name!r} is set by the worker and cannot be given")
            if lowered in seen:
                raise InvalidDelivery(f"header {name!r} is given twice")
            seen.add(lowered)
            headers[name] = value
        object.__setattr__(self, "headers", headers)
        if self.timeout is not None and (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, int | float)  # pyright: ignore[reportUnnecessaryIsInstance]
            or not math.isfinite(self.timeout)
            or self.timeout <= 0
        ):
            raise InvalidDelivery("timeout must be a positive, finite number of seconds")
        if self.id is not None and (not isinstance(self.id, str) or not _ID.fullmatch(self.id)):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidDelivery(f"invalid id {self.id!r}: use 1 to 128 of [A-Za-z0-9_-]")
        if self.endpoint is not None and (
            not isinstance(self.endpoint, str)  # pyright: ignore[reportUnnecessaryIsInstance]
            or not 0 < len(self.endpoint) <= _MAX_ENDPOINT
        ):
            raise InvalidDelivery(f"endpoint must be 1 to {_MAX_ENDPOINT} characters")
        if self.signing_key is not None and (
            not isinstance(self.signing_key, str) or not self.signing_key  # pyright: ignore[reportUnnecessaryIsInstance]
        ):
            raise InvalidDelivery("signing_key must be a non-empty str")

    @classmethod
    def json(
        cls,
        url: str,
        data: object,
        *,
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        id: str | None = None,  # noqa: A002 - the field's name
        endpoint: str | None = None,
        signing_key: str | None = None,
    ) -> WebhookRequest:
        """A request whose body is ``data`` as compact UTF-8 JSON, with a JSON content type.

        ``data`` is any value `taquba.Codec` handles, taken as its own type
        (``taquba.Codec(type(data))``): JSON builtins (``dict`` with ``str`` keys, ``list``,
        ``str``, ``int``, ``float``, ``bool``, None), a dataclass, a pydantic model, or a
        `datetime.datetime`, `uuid.UUID`, `decimal.Decimal` or enum, which become their
        ISO-8601 string, string or value. Mapping keys come out sorted, so equal data gives
        equal bytes. A ``content-type`` in ``headers`` (in any case) replaces
        ``application/json``; the other arguments are the fields of the same names.

        Raises:
            taquba.UnsupportedType: ``type(data)`` is not a type `taquba.Codec` handles.
            taquba.TypeMismatch: a part of ``data`` does not fit (e.g. an object inside a
                ``dict``; nest dataclasses in a dataclass instead).
            InvalidDelivery: ``data`` holds what JSON cannot (``bytes``, NaN or an
                infinity), or another field is invalid.
        """
        builtins = taquba.Codec(type(data)).to_builtins(data, path="data")
        try:
            text = json.dumps(builtins, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidDelivery(
                f"data cannot be sent as JSON ({exc}); send bytes as the body instead"
            ) from None
        given = dict(headers or {})
        if not any(name.lower() == "content-type" for name in given):
            given = {"content-type": "application/json", **given}
        return cls(
            url,
            text.encode(),
            method=method,
            headers=given,
            timeout=timeout,
            id=id,
            endpoint=endpoint,
            signing_key=signing_key,
        )

    @property
    def endpoint_key(self) -> str:
        """The statistics key: `endpoint` if set, else the URL's origin."""
        return self.endpoint if self.endpoint is not None else endpoint_of(self.url)

    def to_enqueue_request(
        self,
        *,
        queue_name: str = DEFAULT_QUEUE_NAME,
        job_id: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        delay: float | None = None,
        dedup_key: str | None = None,
        max_attempts: int | None = None,
    ) -> taquba.EnqueueRequest:
        """This delivery as a `taquba.EnqueueRequest`, without enqueueing it.

        Use it to stage a webhook as a settlement effect of another job
        (``taquba.Effects(enqueues=[hook.to_enqueue_request()])``) so that it exists only if
        that job's ack commits, or in `taquba.Queue.enqueue_batch`. To enqueue it alone, call
        `enqueue_webhook`.

        Without ``job_id``, the request leaves the id to the queue, which assigns its next
        monotonic ULID (read from the queue's clock) when it stages the job: deliveries staged
        together are claimed in staging order. The ``webhook-id`` is then `id` or, if that is
        None, the job id; either way it is the same on every retry and replay. To know the id
        before staging, pass ``job_id=queue.next_job_id()``.

        Args:
            queue_name: the queue name the worker serves.
            job_id: the delivery's job id (1 to 128 of ``[A-Za-z0-9_-]``); None: the queue's.
            priority: claim priority (lower first).
            run_at: do not deliver before this timezone-aware time.
            delay: do not deliver for this many seconds.
            dedup_key: skip the enqueue if a pending delivery on the queue holds this key.
            max_attempts: attempts before dead-lettering; default the queue's.

        Raises:
            InvalidDelivery: ``job_id`` cannot be a ``webhook-id``.
        """
        webhook_id = self.id if self.id is not None else job_id
        if webhook_id is not None and not _ID.fullmatch(webhook_id):
            raise InvalidDelivery(f"job id {job_id!r} cannot be a webhook-id: use [A-Za-z0-9_-]")
        headers = {"webhook.endpoint": self.endpoint_key}
        if webhook_id is not None:
            headers["webhook.id"] = webhook_id
        return taquba.EnqueueRequest(
            queue_name=queue_name,
            payload=encode_request(self, webhook_id),
            priority=priority,
            run_at=run_at,
            delay=delay,
            dedup_key=dedup_key,
            headers=headers,
            max_attempts=max_attempts,
            job_id=job_id,
        )


def encode_request(request: WebhookRequest, webhook_id: str | None) -> bytes:
    """The job payload of a delivery (library-internal).

    ``webhook_id`` None leaves the ``webhook-id`` to the job id, known once the job exists.
    """
    return ormsgpack.packb(
        {
            "v": _FORMAT_VERSION,
            "url": request.url,
            "method": request.method,
            "headers": [[name, value] for name, value in request.headers.items()],
            "body": request.body,
            "timeout": request.timeout,
            "id": webhook_id,
            "endpoint": request.endpoint,
            "signing_key": request.signing_key,
        }
    )


def decode_request(payload: bytes, *, job_id: str | None = None) -> WebhookRequest:
    """The delivery request stored in a webhook job's payload.

    Its ``id`` is the ``webhook-id`` sent with every attempt: the one fixed when the delivery
    was staged, or else the job's id. Pass the job's id as ``job_id`` to have it filled in;
    without it, ``id`` is None for a delivery whose ``webhook-id`` is its job id.

    Raises:
        InvalidDelivery: the payload is not a delivery written by this package.
    """
    try:
        data = ormsgpack.unpackb(payload)
    except (ormsgpack.MsgpackDecodeError, TypeError, ValueError):
        raise InvalidDelivery("the job payload is not a webhook delivery") from None
    if not isinstance(data, dict):
        raise InvalidDelivery("the job payload is not a webhook delivery")
    fields: dict[str, Any] = data  # pyright: ignore[reportUnknownVariableType]
    if fields.get("v") != _FORMAT_VERSION:
        raise InvalidDelivery(f"unknown webhook payload format {fields.get('v')!r}")
    try:
        pairs: list[tuple[str, str]] = [(name, value) for name, value in fields["headers"]]
        timeout = fields["timeout"]
        return WebhookRequest(
            fields["url"],
            fields["body"],
            method=fields["method"],
            headers=dict(pairs),
            timeout=float(timeout) if timeout is not None else None,
            id=fields["id"] if fields["id"] is not None else job_id,
            endpoint=fields["endpoint"],
            signing_key=fields["signing_key"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidDelivery(f"malformed webhook payload: {exc}") from None


async def enqueue_webhook(
    queue: taquba.QueueLike,
    request: WebhookRequest,
    *,
    queue_name: str = DEFAULT_QUEUE_NAME,
    job_id: str | None = None,
    priority: int | None = None,
    run_at: datetime | None = None,
    delay: float | None = None,
    dedup_key: str | None = None,
    max_attempts: int | None = None,
) -> taquba.EnqueueResult:
    """Enqueue a delivery; return once it is durable.

    The result's ``id`` is the delivery's job id: look it up with `get_attempt`, or replay it
    with `replay_delivery`. The options are those of `WebhookRequest.to_enqueue_request`;
    without a ``job_id`` the queue's next monotonic ULID (`taquba.Queue.next_job_id`) is used.

    Raises:
        taquba.InvalidArgument: ``request`` is not a `WebhookRequest`.
        InvalidDelivery: ``job_id`` cannot be a ``webhook-id``.
    """
    if not isinstance(request, WebhookRequest):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise taquba.InvalidArgument("request", request, "must be a WebhookRequest")
    enqueue = request.to_enqueue_request(
        queue_name=queue_name,
        job_id=job_id if job_id is not None else queue.next_job_id(),
        priority=priority,
        run_at=run_at,
        delay=delay,
        dedup_key=dedup_key,
        max_attempts=max_attempts,
    )
    return await queue.enqueue(
        enqueue.queue_name,
        enqueue.payload,
        priority=enqueue.priority,
        run_at=enqueue.run_at,
        delay=enqueue.delay,
        dedup_key=enqueue.dedup_key,
        headers=enqueue.headers,
        max_attempts=enqueue.max_attempts,
        job_id=enqueue.job_id,
    )
