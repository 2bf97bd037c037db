"""Standard Webhooks signing and verification (pure functions, no I/O).

A signature is ``v1,`` followed by the base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}`` under
the secret's key bytes. A secret is written ``whsec_`` + base64(key). During a rotation the
sender signs with every active secret and sends the signatures space-separated in one
``webhook-signature`` header; a receiver accepts the message if any signature matches any of
its secrets. See https://www.standardwebhooks.com/.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import time
from os import urandom
from typing import TYPE_CHECKING

import taquba

from ._errors import InvalidSecret, VerificationError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "DEFAULT_TOLERANCE",
    "SECRET_PREFIX",
    "Secret",
    "generate_secret",
    "sign",
    "signature_headers",
    "verify_webhook",
]

SECRET_PREFIX = "whsec_"
"""The prefix of a serialized signing secret (``whsec_`` + base64 of the key bytes)."""

DEFAULT_TOLERANCE = 300.0
"""How far (seconds) a message's timestamp may be from the receiver's clock: 5 minutes."""

Secret = str | bytes
"""A signing secret: ``whsec_<base64>`` (the prefix is optional) or the raw key bytes."""

_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_MAX_SIGNATURES = 64


def generate_secret(nbytes: int = 32) -> str:
    """A new random signing secret, ``whsec_`` + base64 of ``nbytes`` random bytes.

    Args:
        nbytes: the key length in bytes; the Standard Webhooks spec asks for 24 to 64.

    Raises:
        InvalidSecret: ``nbytes`` is outside 24..64.
    """
    if not 24 <= nbytes <= 64:
        raise InvalidSecret("a signing key must be 24 to 64 bytes long")
    return SECRET_PREFIX + base64.b64encode(urandom(nbytes)).decode("ascii")


def secret_key(secret: Secret) -> bytes:
    """The HMAC key bytes of ``secret`` (library-internal; `InvalidSecret` if malformed)."""
    if isinstance(secret, bytes):
        key = secret
    elif isinstance(secret, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        text = secret.removeprefix(SECRET_PREFIX).strip()
        try:
            key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidSecret("a signing secret must be 'whsec_' followed by base64") from None
    else:
        raise InvalidSecret(f"a signing secret must be str or bytes, not {type(secret).__name__}")
    if not key:
        raise InvalidSecret("a signing secret must not be empty")
    return key


def _signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode() + body


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    return hmac.new(key, _signed_content(msg_id, timestamp, body), hashlib.sha256).digest()


def sign(secret: Secret, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks signature ``v1,<base64>`` of one message.

    Args:
        secret: the signing secret.
        msg_id: the ``webhook-id`` of the message.
        timestamp: the ``webhook-timestamp`` (whole seconds since the Unix epoch).
        body: the exact bytes of the request body.

    Raises:
        InvalidSecret: ``secret`` is malformed.
    """
    digest = _digest(secret_key(secret), msg_id, timestamp, bytes(body))
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_headers(
    secrets: Secret | Sequence[Secret], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers for one message.

    Returns ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``; the latter holds
    one space-separated ``v1,`` signature per secret (several during a rotation).

    Raises:
        InvalidSecret: a secret is malformed, or none is given.
    """
    keys = _as_list(secrets)
    if not keys:
        raise InvalidSecret("at least one signing secret is needed")
    signatures = " ".join(sign(secret, msg_id, timestamp, body) for secret in keys)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": signatures,
    }


def _as_list(secrets: Secret | Sequence[Secret]) -> list[Secret]:
    if isinstance(secrets, str | bytes):
        return [secrets]
    return list(secrets)


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        for key, candidate in headers.items():
            if key.lower() == name:
                value = candidate
                break
    if not value:
        raise VerificationError(f"missing {name} header")
    return value


def verify_webhook(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Secret | Sequence[Secret],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> str:
    """Verify an incoming Standard Webhooks request; return its ``webhook-id``.

    Call it on the raw body before parsing it. Header names are matched case-insensitively.
    The timestamp must be within ``tolerance`` seconds of ``now`` (replay protection), and at
    least one ``v1`` signature must match one of ``secrets``; signatures are compared in
    constant time. Use the returned id to drop duplicates: delivery is at-least-once.

    Args:
        body: the request body exactly as received.
        headers: the request headers (any mapping, e.g. a framework's header object).
        secrets: the endpoint's secret, or all its active secrets during a rotation.
        tolerance: the largest accepted distance between the timestamp and ``now``, seconds.
        now: the current time in seconds since the epoch (default: `time.time`).

    Raises:
        VerificationError: the request must not be trusted.
        InvalidSecret: one of ``secrets`` is malformed (a configuration error).
        taquba.InvalidArgument: ``tolerance`` is negative or not finite.
    """
    if not math.isfinite(tolerance) or tolerance < 0:
        raise taquba.InvalidArgument(
            "tolerance", tolerance, "must be a finite, non-negative number of seconds"
        )
    keys = [secret_key(secret) for secret in _as_list(secrets)]
    if not keys:
        raise InvalidSecret("at least one signing secret is needed")
    msg_id = _header(headers, "webhook-id")
    raw_timestamp = _header(headers, "webhook-timestamp").strip()
    signatures = _header(headers, "webhook-signature")
    if not _TIMESTAMP.fullmatch(raw_timestamp):
        raise VerificationError("malformed webhook-timestamp header")
    timestamp = int(raw_timestamp)
    current = time.time() if now is None else now
    if timestamp < current - tolerance:
        raise VerificationError("message timestamp too old")
    if timestamp > current + tolerance:
        raise VerificationError("message timestamp too new")
    expected = [_digest(key, msg_id, timestamp, bytes(body)) for key in keys]
    for entry in signatures.split()[:_MAX_SIGNATURES]:
        version, _, encoded = entry.partition(",")
        if version != "v1":
            continue
        try:
            candidate = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        matched = False
        for digest in expected:
            matched |= hmac.compare_digest(digest, candidate)
        if matched:
            return msg_id
    raise VerificationError("no matching signature")
