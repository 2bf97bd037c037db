"""Classification of delivery attempts and ``Retry-After`` parsing (pure functions)."""

from __future__ import annotations

import enum
import math
import re
from datetime import UTC
from email.utils import parsedate_to_datetime

__all__ = [
    "DISABLING_STATUSES",
    "MAX_RETRY_AFTER",
    "RETRYABLE_STATUSES",
    "Classification",
    "classify_status",
    "parse_retry_after",
]

MAX_RETRY_AFTER = 3600.0
"""Default cap (seconds) on a receiver's ``Retry-After``: one hour.

A larger value is cut to the cap, so a buggy or hostile receiver cannot park a delivery for
days; the queue's own backoff still applies when it is longer.
"""

RETRYABLE_STATUSES = frozenset({408, 425, 429})
"""4xx statuses that are retried: Request Timeout, Too Early, Too Many Requests."""

DISABLING_STATUSES = frozenset({410})
"""Statuses by which a receiver asks the sender to stop sending to the endpoint: 410 Gone.

Standard Webhooks (spec, "Delivery success and failure"): "410 Gone: This is an indication
by the server that it's no longer interested in receiving webhooks from this source. Sender
should disable the webhook endpoint, and stop sending it messages." Such a response
dead-letters the delivery at once (it is `Classification.PERMANENT`, like other 4xx) and,
when the worker tracks endpoint health, disables the endpoint.
"""

_DELTA_SECONDS = re.compile(r"[0-9]+")


class Classification(enum.StrEnum):
    """What an HTTP status means for a delivery."""

    DELIVERED = "delivered"
    """2xx: the receiver accepted the message."""
    RETRY = "retry"
    """408, 425, 429, 5xx and anything unrecognised: try again after a backoff."""
    PERMANENT = "permanent"
    """Other 3xx and 4xx: retrying the same request cannot succeed; dead-letter it."""


def classify_status(status: int) -> Classification:
    """Classify a response status (redirects reach here only when not followed).

    2xx is delivered. 408, 425, 429 and every 5xx are retried. Any other 3xx or 4xx is
    permanent: a redirect that is not followed, or a client error, will not change by waiting
    (fix the endpoint, then replay the dead delivery). Statuses outside 200..599 are retried.
    """
    if 200 <= status <= 299:
        return Classification.DELIVERED
    if status in RETRYABLE_STATUSES:
        return Classification.RETRY
    if 300 <= status <= 499:
        return Classification.PERMANENT
    return Classification.RETRY


def parse_retry_after(
    value: str | None, *, now: float, cap: float = MAX_RETRY_AFTER
) -> float | None:
    """The delay a ``Retry-After`` header asks for, in seconds, or None if it is unusable.

    Both forms of RFC 9110 are accepted: delta-seconds (``"120"``) and an HTTP-date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``, taken relative to ``now``). A date in the past
    means 0. The result is capped at ``cap``. Anything else (negative or fractional numbers,
    unparseable dates) is ignored and returns None.

    Args:
        value: the header's value, or None when absent.
        now: the current time in seconds since the epoch.
        cap: the largest delay returned.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(min(int(text[:20]), 10**18))
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # HTTP-dates are GMT; asctime and "-0000" forms parse naive
            when = when.replace(tzinfo=UTC)
        seconds = max(when.timestamp() - now, 0.0)
    if not math.isfinite(seconds):
        return None
    return min(seconds, cap)
