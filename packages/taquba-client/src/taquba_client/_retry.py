"""`RetryPolicy`: how often and how patiently a client retries transient failures."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ._errors import UsageError

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Capped exponential backoff with jitter for transient failures.

    A transient failure is a connect error, a ``503`` or, for calls that are safe to repeat,
    a timeout or a connection dropped before the answer (see each method's docstring). The
    n-th retry waits ``min(max_delay, initial_delay * multiplier**(n-1))``, scaled down by a
    random factor in ``[1 - jitter, 1]``; a ``Retry-After`` from the server raises the wait to
    at least that (still capped by ``max_delay``).

    Args:
        attempts: How many times a call is tried in all (1: never retry).
        initial_delay: Seconds before the first retry.
        max_delay: The longest wait between two tries.
        multiplier: Growth of the wait per retry.
        jitter: The fraction of each wait that is random (0 to 1), so clients that failed
            together do not retry together.
    """

    attempts: int = 6
    """How many times a call is tried in all."""
    initial_delay: float = 0.1
    """Seconds before the first retry."""
    max_delay: float = 5.0
    """The longest wait between two tries."""
    multiplier: float = 2.0
    """Growth of the wait per retry."""
    jitter: float = 0.5
    """The random fraction of each wait."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise UsageError(f"attempts must be at least 1, not {self.attempts!r}")
        if not (0 <= self.initial_delay <= self.max_delay):
            raise UsageError("need 0 <= initial_delay <= max_delay")
        if self.multiplier < 1:
            raise UsageError(f"multiplier must be at least 1, not {self.multiplier!r}")
        if not (0 <= self.jitter <= 1):
            raise UsageError(f"jitter must be between 0 and 1, not {self.jitter!r}")

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** max(0, retry - 1))
        wait = base * (1 - self.jitter * random.random())
        if retry_after is not None:
            wait = max(wait, min(self.max_delay, retry_after))
        return wait


NO_RETRY = RetryPolicy(attempts=1)
"""A policy that tries each call once (for the worker loops that do their own backoff)."""
