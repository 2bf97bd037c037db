"""Deliver each run's outcome as a signed webhook through taquba-webhooks.

Needs the ``webhooks`` extra (``pip install "taquba-workflow[webhooks]"``); importing
`taquba_workflow` itself never imports `taquba_webhooks`.

`WebhookOnTermination` is a ready-made terminal hook. A run whose headers carry a URL (under
``webhook-url`` unless configured otherwise) gets, when it ends, one webhook delivery job on
the webhooks queue: a `taquba_webhooks.WebhookRequest` whose JSON body describes the outcome.
The job is a `TerminalEffects` follow-up, so it is enqueued atomically with the acknowledgement
of the run's terminal notification: exactly one delivery per run end, also when the
notification is delivered again. A `taquba_webhooks.WebhookWorker` serving that queue then
sends it, signed per Standard Webhooks, through its SSRF guard, with retries::

    hook = WebhookOnTermination(signing_key="runs")
    runtime = Runtime(queue, run_step, hook=hook)
    worker = taquba_webhooks.WebhookWorker(queue, secrets={"runs": [secret]})
    await runtime.submit(RunSpec(input=order, headers={"webhook-url": "https://example.com/in"}))
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import taquba

from ._effects import TerminalEffects
from ._errors import PermanentStepError, ReservedHeader
from ._keys import RESERVED_HEADER_PREFIX

try:
    import taquba_webhooks
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "taquba_workflow.webhook needs taquba-webhooks: "
        'install it with pip install "taquba-workflow[webhooks]"'
    ) from _exc

if TYPE_CHECKING:
    from ._types import RunOutcome

__all__ = ["DEFAULT_URL_HEADER", "EVENT_TYPE_PREFIX", "WebhookOnTermination", "webhook_id"]

log = logging.getLogger("taquba_workflow")

R = TypeVar("R")

DEFAULT_URL_HEADER = "webhook-url"
"""The run header `WebhookOnTermination` reads the destination URL from, unless told another."""

EVENT_TYPE_PREFIX = "workflow.run."
"""The body's ``type`` is this followed by the `TerminalStatus` (``workflow.run.succeeded``)."""

_ID_PREFIX = "wfrun_"


class WebhookOnTermination(Generic[R]):
    """A terminal hook that sends each run's outcome to the URL in the run's headers.

    Give it as the runtime's hook (``Runtime(queue, run_step, hook=WebhookOnTermination(...))``),
    or call `stage` from a hook of your own to add the delivery to its `TerminalEffects`.

    For a run whose headers hold ``url_header``, the hook stages one delivery job on
    ``queue_name`` (a `taquba_webhooks.WebhookRequest`, POST, ``application/json``), committed
    with the acknowledgement of the run's terminal notification: exactly one per run end. Its
    ``webhook-id`` is derived from the run id, status and end time, so it is the same on every
    retry of the delivery and receivers can deduplicate on it. The body (a Standard Webhooks
    style event, keys sorted, compact UTF-8 JSON)::

        {"type": "workflow.run.succeeded",        # EVENT_TYPE_PREFIX + the TerminalStatus
         "timestamp": "2026-12-06T10:00:00.123000+00:00",  # the end, ISO 8601, UTC
         "data": {"run_id": "order-42", "status": "succeeded",
                  "result": {...},                # the Succeed result as JSON, else null
                  "result_encoding": "json",      # "base64" when the result is bytes
                  "error": null,                  # why it failed or was cancelled
                  "headers": {...},               # the run's headers, without url_header
                  "final_step": 3, "finished_at_ms": 1796551200123}}

    The result is encoded with `taquba.Codec` of ``result_type`` (give the runtime's result type
    when it is a generic such as ``list[Order]``; None: the result's own type); ``bytes`` is
    sent as base64.

    Error handling:

    - no ``url_header`` in the run's headers: no delivery (logged at debug), the hook returns
      None;
    - a value that is not an absolute http(s) URL: no delivery, logged as a warning. Retrying
      cannot fix it (a run's headers never change), so the notification is acknowledged rather
      than dead-lettered;
    - a result the codec cannot turn into JSON: `PermanentStepError`, which dead-letters the
      notification; fix ``result_type`` and requeue the dead notification job;
    - the SSRF guard is the worker's: it resolves and checks the destination at every
      connection, and dead-letters a delivery to a refused address. The hook does no DNS
      lookup (an answer checked now could change before the delivery).

    Signing secrets live on the worker side: ``signing_key`` names a secret set of the
    `taquba_webhooks.WebhookWorker` (its ``secrets``); None sends deliveries unsigned.
    """

    __slots__ = (
        "_include_headers",
        "_max_attempts",
        "_queue_name",
        "_result_codec",
        "_signing_key",
        "_timeout",
        "_url_header",
    )

    def __init__(
        self,
        *,
        signing_key: str | None,
        queue_name: str = taquba_webhooks.DEFAULT_QUEUE_NAME,
        url_header: str = DEFAULT_URL_HEADER,
        result_type: Any = None,
        include_headers: bool = True,
        timeout: float | None = None,
        max_attempts: int | None = None,
    ) -> None:
        """Configure the hook.

        Args:
            signing_key: the name of the worker's secret set to sign with; None: unsigned.
            queue_name: the queue name the `taquba_webhooks.WebhookWorker` serves.
            url_header: the run header holding the destination URL (not a ``workflow.`` one).
            result_type: the type the result is encoded as (`taquba.Codec`); None: its own.
            include_headers: put the run's headers (without ``url_header``) in the body.
            timeout: seconds one delivery attempt may take; None: the worker's.
            max_attempts: delivery attempts before dead-lettering; None: the queue's.

        Raises:
            ReservedHeader: ``url_header`` starts with ``workflow.``.
            taquba.UsageError: an argument has the wrong type or value.
            taquba.UnsupportedType: ``result_type`` is not a type `taquba.Codec` handles.
        """
        if not isinstance(url_header, str) or not url_header:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise taquba.UsageError("url_header must be a non-empty str")
        if url_header.startswith(RESERVED_HEADER_PREFIX):
            raise ReservedHeader(url_header)
        if not isinstance(queue_name, str) or not queue_name:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise taquba.UsageError("queue_name must be a non-empty str")
        if signing_key is not None and (not isinstance(signing_key, str) or not signing_key):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise taquba.UsageError("signing_key must be a non-empty str or None")
        self._signing_key = signing_key
        self._queue_name = queue_name
        self._url_header = url_header
        self._result_codec: taquba.Codec[Any] | None = (
            None if result_type is None else taquba.Codec(result_type)
        )
        self._include_headers = bool(include_headers)
        self._timeout = timeout
        self._max_attempts = max_attempts

    @property
    def queue_name(self) -> str:
        """The queue name deliveries are enqueued on."""
        return self._queue_name

    @property
    def url_header(self) -> str:
        """The run header the destination URL is read from."""
        return self._url_header

    async def on_termination(self, outcome: RunOutcome[R]) -> TerminalEffects | None:
        """Stage the outcome's delivery; None when the run asked for none (see the class)."""
        effects = TerminalEffects()
        if self.stage(outcome, effects) is None:
            return None
        return effects

    def stage(
        self, outcome: RunOutcome[R], effects: TerminalEffects
    ) -> taquba_webhooks.WebhookRequest | None:
        """Add the outcome's delivery to ``effects``, for a hook that stages effects of its own.

        Returns:
            The request staged, or None when the run has no URL header or its URL is invalid.

        Raises:
            PermanentStepError: the result cannot be encoded as JSON.
            EffectsSealed: ``effects`` were already returned.
        """
        request = self.request_for(outcome)
        if request is None:
            return None
        effects.enqueue(
            request.to_enqueue_request(
                queue_name=self._queue_name,
                dedup_key=request.id,
                max_attempts=self._max_attempts,
            )
        )
        return request

    def request_for(self, outcome: RunOutcome[R]) -> taquba_webhooks.WebhookRequest | None:
        """The delivery of ``outcome``, without staging it (None: no URL header, or invalid).

        Raises:
            PermanentStepError: the result cannot be encoded as JSON.
        """
        url = outcome.headers.get(self._url_header)
        if url is None:
            log.debug("run %s: no %r header, no webhook", outcome.run_id, self._url_header)
            return None
        try:
            taquba_webhooks.endpoint_of(url)
        except taquba_webhooks.InvalidDelivery as exc:
            log.warning(
                "run %s: no webhook sent, header %r: %s", outcome.run_id, self._url_header, exc
            )
            return None
        body = self.event_body(outcome)
        return taquba_webhooks.WebhookRequest(
            url,
            body,
            headers={"content-type": "application/json"},
            timeout=self._timeout,
            id=webhook_id(outcome),
            signing_key=self._signing_key,
        )

    def event_body(self, outcome: RunOutcome[R]) -> bytes:
        """The JSON body sent for ``outcome`` (see the class for its shape).

        Raises:
            PermanentStepError: the result cannot be encoded as JSON.
        """
        result: object = None
        encoding = "json"
        if isinstance(outcome.result, (bytes, bytearray)):
            result = base64.b64encode(outcome.result).decode("ascii")
            encoding = "base64"
        elif outcome.result is not None:
            try:
                codec = self._result_codec or taquba.Codec(type(outcome.result))
                result = codec.to_builtins(outcome.result, path="result")
            except taquba.TaqubaError as exc:
                raise PermanentStepError(
                    f"the run's result cannot be sent as JSON ({exc}); set result_type"
                ) from exc
        headers = (
            {k: v for k, v in outcome.headers.items() if k != self._url_header}
            if self._include_headers
            else {}
        )
        event = {
            "type": EVENT_TYPE_PREFIX + outcome.status.value,
            "timestamp": datetime.fromtimestamp(outcome.finished_at_ms / 1000, UTC).isoformat(),
            "data": {
                "run_id": outcome.run_id,
                "status": outcome.status.value,
                "result": result,
                "result_encoding": encoding,
                "error": outcome.error,
                "headers": headers,
                "final_step": outcome.final_step,
                "finished_at_ms": outcome.finished_at_ms,
            },
        }
        try:
            text = json.dumps(
                event, separators=(",", ":"), ensure_ascii=False, allow_nan=False, sort_keys=True
            )
        except (TypeError, ValueError) as exc:
            raise PermanentStepError(f"the run's result cannot be sent as JSON ({exc})") from exc
        return text.encode()

    def __repr__(self) -> str:
        return (
            f"<WebhookOnTermination header={self._url_header!r} queue={self._queue_name!r} "
            f"signing_key={self._signing_key!r}>"
        )


def webhook_id(outcome: RunOutcome[Any]) -> str:
    """The ``webhook-id`` of an outcome's delivery: stable for one run end, new for the next.

    A run id may end more than once (a failed run retried ends again), so the end time and
    status take part; ids are ``wfrun_`` and 32 hex digits (run ids may hold characters a
    ``webhook-id`` may not).
    """
    digest = hashlib.sha256(
        f"{outcome.run_id}\0{outcome.status.value}\0{outcome.finished_at_ms}".encode()
    ).hexdigest()
    return _ID_PREFIX + digest[:32]
