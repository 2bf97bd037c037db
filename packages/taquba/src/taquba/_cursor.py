"""Claim-scan bookkeeping for one queue (pure, no I/O).

Claimed pending keys leave tombstones at the front of the queue's pending prefix. Re-walking
that band on every claim makes claim latency grow with history, so each queue keeps, in
memory:

- a **bound**: a key (inclusive or exclusive) that every live pending key sorts at or after,
  so a claim scan may start there instead of at the front;
- an **insert epoch** bumped by every pending insert, and the epoch at which the queue was
  last **proven empty**, so polling an empty queue needs neither a storage scan nor the claim
  lock;
- while a claim is in flight, the **smallest key inserted since it began**, so the claim's
  bound advance never jumps over a key that committed behind it.

Claims on one queue are serialised by the queue's claim lock, so at most one claim is in
flight. Insert notifications must be issued *after* the insert committed; claims must begin
their storage transaction *after* `begin_claim`. With those two orderings, every live key is
at or after the bound (the invariant the hypothesis tests check):

- an insert that committed before a claim's transaction began is seen by its scan;
- one that committed later is notified either during the claim (recorded as the in-flight
  minimum, which clamps the advance) or after it (moving the bound back).

Ids are generated before their enqueue commits, and requeues restore a job's original key,
so inserts can land behind the bound in any order; both cases are covered above.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Bound", "ClaimCursor", "ClaimTicket"]


@dataclass(frozen=True, slots=True)
class Bound:
    """Where a claim scan may start."""

    key: bytes
    inclusive: bool

    def admits(self, key: bytes) -> bool:
        """Whether ``key`` lies at or after the bound."""
        return key > self.key or (self.inclusive and key == self.key)


@dataclass(frozen=True, slots=True)
class ClaimTicket:
    """What a claim observed when it began."""

    epoch: int
    bound: Bound | None


class ClaimCursor:
    """In-memory claim-scan state of one queue. See the module docstring."""

    def __init__(self, bound: Bound | None = None, *, known_empty: bool = False) -> None:
        """Start with ``bound`` (None: scan from the front) and optionally known empty."""
        self.bound = bound
        self.epoch = 0
        self._empty_epoch: int | None = 0 if known_empty else None
        self._in_flight = False
        self._in_flight_min: bytes | None = None

    @property
    def known_empty(self) -> bool:
        """Whether no pending key has been inserted since the queue was proven empty."""
        return self._empty_epoch == self.epoch

    def begin_claim(self) -> ClaimTicket:
        """Record that a claim is starting; it must scan from the returned ticket's bound."""
        if self._in_flight:
            raise RuntimeError("claims on one queue must be serialised by the claim lock")
        self._in_flight = True
        self._in_flight_min = None
        return ClaimTicket(self.epoch, self.bound)

    def finish_claim(
        self, ticket: ClaimTicket, last_claimed: bytes | None, *, ran_dry: bool
    ) -> None:
        """Record a committed claim.

        Args:
            ticket: the ticket from `begin_claim`.
            last_claimed: the greatest key the claim took, or None if it took nothing.
            ran_dry: whether the scan ran out of keys before filling the batch.
        """
        self._end(ticket)
        if last_claimed is not None:
            advance = Bound(last_claimed, inclusive=False)
            lowest = self._in_flight_min
            if lowest is not None and lowest <= last_claimed:
                advance = Bound(lowest, inclusive=True)
            self.bound = advance
        if ran_dry and self._in_flight_min is None and ticket.epoch == self.epoch:
            self._empty_epoch = ticket.epoch
        self._in_flight_min = None

    def abort_claim(self, ticket: ClaimTicket) -> None:
        """Record a claim that did not commit (nothing moved)."""
        self._end(ticket)
        self._in_flight_min = None

    def _end(self, ticket: ClaimTicket) -> None:
        if not self._in_flight:
            raise RuntimeError("no claim in flight")
        self._in_flight = False
        del ticket

    def note_insert(self, key: bytes) -> None:
        """Record that a pending ``key`` was committed (call after the commit)."""
        if self.bound is None and self.known_empty:
            # The queue held nothing, so the new key is where the next scan may start.
            self.bound = Bound(key, inclusive=True)
        self.epoch += 1
        if self.bound is not None and not self.bound.admits(key):
            self.bound = Bound(key, inclusive=True)
        if self._in_flight and (self._in_flight_min is None or key < self._in_flight_min):
            self._in_flight_min = key

    def snapshot(self) -> tuple[Bound | None, bool]:
        """The state worth persisting at a clean close: (bound, known_empty)."""
        return self.bound, self.known_empty
