"""taquba-webhooks: durable outbound webhook delivery on a taquba queue.

Each webhook is a job: enqueued durably (alone with `enqueue_webhook`, or as a settlement
effect of another job with `WebhookRequest.to_enqueue_request`), delivered over HTTP by a
`WebhookWorker`, retried with the queue's backoff (honouring ``Retry-After``) and
dead-lettered when it keeps failing. Requests are signed per Standard Webhooks
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature``; receivers check them with
`verify_webhook`). An SSRF guard refuses loopback, private, link-local and metadata
destinations unless a `DestinationPolicy` allows them. The latest attempt of each delivery
(`get_attempt`) and per-endpoint counters and state (`endpoint_stats`) are kept in the
queue's user KV; an endpoint that answers 410 Gone, or fails ``disable_after`` times in a row,
can be disabled (`enable_endpoint` turns it back on).

    async with taquba.open_queue("file:///var/lib/app/queue") as queue:
        worker = taquba_webhooks.WebhookWorker(queue, secrets={"acme": ["whsec_..."]})
        await taquba_webhooks.enqueue_webhook(
            queue,
            taquba_webhooks.WebhookRequest.json(
                "https://hooks.acme.example/in", {"type": "invoice.paid"}, signing_key="acme"
            ),
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)  # until worker.shutdown() or a cancel

Errors derive from `WebhookError`, a `taquba.TaqubaError`; misuse raises a
`taquba.UsageError` (`InvalidDelivery`, `InvalidSecret`, or the core's `taquba.InvalidArgument`).
"""

from importlib.metadata import version as _version

from taquba import fixup_module_metadata as _taquba_fixup

from ._classify import DISABLING_STATUSES as DISABLING_STATUSES
from ._classify import MAX_RETRY_AFTER as MAX_RETRY_AFTER
from ._classify import RETRYABLE_STATUSES as RETRYABLE_STATUSES
from ._classify import Classification as Classification
from ._classify import classify_status as classify_status
from ._classify import parse_retry_after as parse_retry_after
from ._errors import DestinationRefused as DestinationRefused
from ._errors import InvalidDelivery as InvalidDelivery
from ._errors import InvalidSecret as InvalidSecret
from ._errors import VerificationError as VerificationError
from ._errors import WebhookError as WebhookError
from ._guard import METADATA_ADDRESSES as METADATA_ADDRESSES
from ._guard import DestinationPolicy as DestinationPolicy
from ._guard import check_destination as check_destination
from ._inspect import DeadDelivery as DeadDelivery
from ._inspect import dead_deliveries as dead_deliveries
from ._inspect import disable_endpoint as disable_endpoint
from ._inspect import enable_endpoint as enable_endpoint
from ._inspect import endpoint_stats as endpoint_stats
from ._inspect import get_attempt as get_attempt
from ._inspect import list_endpoint_stats as list_endpoint_stats
from ._inspect import prune_attempts as prune_attempts
from ._inspect import replay_dead_deliveries as replay_dead_deliveries
from ._inspect import replay_delivery as replay_delivery
from ._records import KV_PREFIX as KV_PREFIX
from ._records import AttemptOutcome as AttemptOutcome
from ._records import DeliveryAttempt as DeliveryAttempt
from ._records import EndpointStats as EndpointStats
from ._request import DEFAULT_QUEUE_NAME as DEFAULT_QUEUE_NAME
from ._request import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ._request import RESERVED_HEADERS as RESERVED_HEADERS
from ._request import WebhookRequest as WebhookRequest
from ._request import decode_request as decode_request
from ._request import endpoint_of as endpoint_of
from ._request import enqueue_webhook as enqueue_webhook
from ._signing import DEFAULT_TOLERANCE as DEFAULT_TOLERANCE
from ._signing import SECRET_PREFIX as SECRET_PREFIX
from ._signing import Secret as Secret
from ._signing import generate_secret as generate_secret
from ._signing import sign as sign
from ._signing import signature_headers as signature_headers
from ._signing import verify_webhook as verify_webhook
from ._worker import RESPONSE_BODY_LIMIT as RESPONSE_BODY_LIMIT
from ._worker import WebhookWorker as WebhookWorker

__version__: str = _version("taquba-webhooks")
"""The installed version of the `taquba-webhooks` distribution."""

__all__ = [  # noqa: RUF022 - grouped by topic, the order of the reference page
    "WebhookRequest",
    "enqueue_webhook",
    "decode_request",
    "endpoint_of",
    "DEFAULT_QUEUE_NAME",
    "DEFAULT_TIMEOUT",
    "RESERVED_HEADERS",
    "WebhookWorker",
    "RESPONSE_BODY_LIMIT",
    "Classification",
    "classify_status",
    "parse_retry_after",
    "MAX_RETRY_AFTER",
    "RETRYABLE_STATUSES",
    "DISABLING_STATUSES",
    "Secret",
    "SECRET_PREFIX",
    "DEFAULT_TOLERANCE",
    "generate_secret",
    "sign",
    "signature_headers",
    "verify_webhook",
    "DestinationPolicy",
    "check_destination",
    "METADATA_ADDRESSES",
    "DeliveryAttempt",
    "AttemptOutcome",
    "get_attempt",
    "EndpointStats",
    "endpoint_stats",
    "list_endpoint_stats",
    "disable_endpoint",
    "enable_endpoint",
    "DeadDelivery",
    "dead_deliveries",
    "replay_delivery",
    "replay_dead_deliveries",
    "prune_attempts",
    "KV_PREFIX",
    "WebhookError",
    "InvalidDelivery",
    "InvalidSecret",
    "DestinationRefused",
    "VerificationError",
    "__version__",
]

_taquba_fixup(__name__, globals())
