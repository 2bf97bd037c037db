"""The taquba-webhooks error tree.

Every error this package raises on purpose derives from `WebhookError`::

    WebhookError
    ├── InvalidDelivery      a delivery request that cannot be sent: bad URL, method, header,
    │                        timeout or id, or a job payload that is not a delivery (never retry)
    ├── InvalidSecret        a signing secret that is not ``whsec_`` + base64, or is empty
    ├── DestinationRefused   the SSRF guard refused an address the destination resolves to
    └── VerificationError    an incoming webhook failed verification (receivers)

Queue errors (`taquba.TaqubaError` and its subclasses, e.g. `taquba.JobNotFound` from
`replay_delivery`) pass through unchanged. In the worker, failures never escape as exceptions:
they become retries or dead-letters whose reason names the error.
"""

from __future__ import annotations

__all__ = [
    "DestinationRefused",
    "InvalidDelivery",
    "InvalidSecret",
    "VerificationError",
    "WebhookError",
]


class WebhookError(Exception):
    """Base class of every error taquba-webhooks raises."""


class InvalidDelivery(WebhookError, ValueError):
    """A delivery request (or a stored delivery payload) is malformed and cannot be sent."""


class InvalidSecret(WebhookError, ValueError):
    """A signing secret is empty or not ``whsec_`` followed by base64."""


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
