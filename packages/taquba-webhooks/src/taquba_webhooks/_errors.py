"""The taquba-webhooks error tree.

Every error this package raises on purpose derives from `WebhookError`, itself a
`taquba.TaqubaError`, so ``except taquba.TaqubaError`` catches everything the stack raises on
purpose::

    taquba.TaqubaError
    └── WebhookError              the base of this package's errors
        ├── InvalidDelivery       also a taquba.UsageError: a delivery request that cannot be
        │                         sent (bad URL, method, header, timeout, id or JSON body), or
        │                         a job payload that is not a delivery (never retry)
        ├── InvalidSecret         also a taquba.UsageError: a signing secret that is not
        │                         ``whsec_`` + base64, or is empty
        ├── DestinationRefused    the SSRF guard refused an address the destination resolves to
        └── VerificationError     an incoming webhook failed verification (receivers)

`InvalidDelivery` and `InvalidSecret` are both a `WebhookError` and a `taquba.UsageError`.
A misused option of `WebhookWorker` (a negative ``concurrency``, say) raises the core's
`taquba.InvalidArgument`, and a second concurrent `WebhookWorker.serve` the core's
`taquba.UsageError`. Queue errors (e.g. `taquba.JobNotFound` from `replay_delivery`) and the
core's payload errors (`taquba.UnsupportedType`, `taquba.TypeMismatch` from
`WebhookRequest.json`) pass through unchanged. In the worker, delivery failures never escape
as exceptions: they become retries or dead-letters whose reason names the error.
"""

from __future__ import annotations

import taquba

__all__ = [
    "DestinationRefused",
    "InvalidDelivery",
    "InvalidSecret",
    "VerificationError",
    "WebhookError",
]


class WebhookError(taquba.TaqubaError):
    """Base class of the errors taquba-webhooks defines (a `taquba.TaqubaError`)."""


class InvalidDelivery(WebhookError, taquba.UsageError):
    """A delivery request (or a stored delivery payload) is malformed and cannot be sent.

    A `taquba.UsageError` (so also a `ValueError`): fix the request, do not retry it.
    """


class InvalidSecret(WebhookError, taquba.UsageError):
    """A signing secret is empty or not ``whsec_`` followed by base64.

    A `taquba.UsageError` (so also a `ValueError`): a configuration error.
    """


class DestinationRefused(WebhookError):
    """The SSRF guard refused the destination: it resolves to an address that is not allowed.

    Loopback, private, link-local, cloud-metadata and other non-global addresses are refused
    unless a `DestinationPolicy` allow-list opens them. Nothing was sent: the check happens
    before any connection is made.
    """

    def __init__(self, host: str, address: str, reason: str) -> None:
        if host == address:
            message = f"destination {host} refused: {reason}"
        else:
            message = f"destination {host} refused: it resolves to {address}, {reason}"
        super().__init__(message)
        self.host = host
        """The host name (or address literal) of the destination."""
        self.address = address
        """The resolved address that was refused."""
        self.reason = reason
        """Why the address is refused, e.g. ``"a loopback address"``."""


class VerificationError(WebhookError):
    """An incoming webhook failed verification; do not process it.

    Raised by `verify_webhook` when a required header is missing or malformed, the timestamp
    is outside the tolerance, or no signature matches any of the secrets.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        """What failed, e.g. ``"no matching signature"``."""
