"""Job ids: monotonic ULIDs and validation of caller-supplied ids."""

from __future__ import annotations

import re
import secrets
import threading
from typing import TYPE_CHECKING

import ulid

from ._errors import InvalidId

if TYPE_CHECKING:
    from ._clock import Clock

__all__ = ["MAX_ID_LENGTH", "IdGenerator", "validate_job_id"]

MAX_ID_LENGTH = 128
"""The longest caller-supplied job id, in characters."""

_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
_RANDOM_BITS = 80
_RANDOM_MAX = (1 << _RANDOM_BITS) - 1


def validate_job_id(job_id: object) -> str:
    """Return ``job_id`` if it is 1 to 128 of ``[A-Za-z0-9_-]``, else raise `InvalidId`."""
    if not isinstance(job_id, str):
        raise InvalidId(job_id, "id must be a str")
    if not job_id:
        raise InvalidId(job_id, "id must not be empty")
    if len(job_id) > MAX_ID_LENGTH:
        raise InvalidId(job_id, f"id exceeds the maximum length of {MAX_ID_LENGTH} characters")
    if not _ID_PATTERN.fullmatch(job_id):
        raise InvalidId(job_id, "id must contain only [A-Za-z0-9_-]")
    return job_id


class IdGenerator:
    """Monotonic ULIDs whose timestamp comes from a `Clock`.

    Within one millisecond, or when the clock repeats or regresses, the previous timestamp is
    kept and the random part incremented, so ids sort in generation order and jobs of equal
    priority are claimed in enqueue order.
    """

    def __init__(self, clock: Clock) -> None:
        """Create a generator reading ``clock``."""
        self._clock = clock
        self._last_ms = -1
        self._last_random = 0
        self._lock = threading.Lock()

    def next_int(self) -> int:
        """Return the next id as a 128-bit integer."""
        now = self._clock.now_ms()
        with self._lock:
            if now > self._last_ms:
                self._last_ms = now
                # Leave headroom so increments within a millisecond do not overflow.
                self._last_random = secrets.randbits(_RANDOM_BITS - 1)
            elif self._last_random < _RANDOM_MAX:
                self._last_random += 1
            else:  # 2**79 ids in one millisecond: borrow the next millisecond
                self._last_ms += 1
                self._last_random = 0
            return (self._last_ms << _RANDOM_BITS) | self._last_random

    def next_id(self) -> str:
        """Return the next id as a 26-character Crockford base32 ULID string."""
        return ulid.from_int(self.next_int()).str
