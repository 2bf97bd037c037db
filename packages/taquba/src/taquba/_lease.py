"""In-memory leases of the claims this process holds.

A lease is process state, not storage: claims found in the store when a queue opens belong to
a dead process and are recovered at once, so a durable expiry would add a write per renewal
and buy nothing. Each entry carries a token minted at claim time; settlement, renewal and
reaping are fenced on it, so a stale `Claim` (its job reaped and claimed again) cannot act.

An entry also guards its settlement. `begin_settling` marks it while a settlement (ack, nack,
dead-letter) is under way, so a second settlement of the same claim is refused at once instead
of being caught by a read of the claimed record in its transaction: an ack deletes the
claimed record without reading it (one binding call fewer per drained job). A settlement
whose outcome is unknown (its commit raised after it may have been applied) sets `verify`:
every later settlement of that claim reads the record again, as all of them did before.
"""

from __future__ import annotations

import heapq
import secrets
from dataclasses import dataclass, field

import trio

__all__ = ["CancelToken", "LeaseEntry", "LeaseRegistry"]


class CancelToken:
    """Cooperative cancellation signal for one delivery of a job (one `Claim`).

    `Queue` makes one per claim and fires it when `Queue.cancel` is called for the job, or
    when the claim's lease is lost. A `QueueLike` implemented outside the core builds its
    claims with one, ``Claim(job, token=..., owner=self, cancel=CancelToken())``, and calls
    `fire` when it learns the same; `Claim.cancel_requested`, `LeaseHandle.cancel_requested`
    and `LeaseHandle.wait_cancel_requested` then see it. Use it from the trio run that made
    it (it holds a `trio.Event`).
    """

    __slots__ = ("_event",)

    def __init__(self, *, cancelled: bool = False) -> None:
        """Create a token, already fired if ``cancelled`` (a job cancelled before its claim)."""
        self._event = trio.Event()
        if cancelled:
            self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether a cancel of the job was requested."""
        return self._event.is_set()

    def fire(self) -> None:
        """Request cancellation: wake every `wait` (idempotent; it cannot be undone)."""
        self._event.set()

    async def wait(self) -> None:
        """Wait until cancellation is requested (returns at once if it already was)."""
        await self._event.wait()


@dataclass(slots=True)
class LeaseEntry:
    """One claim's lease."""

    token: int
    expires_at: int
    cancel: CancelToken
    reaping: bool = False
    settling: bool = False  # a settlement of this claim is under way
    verify: bool = False  # an earlier settlement's outcome is unknown: read the record


@dataclass(slots=True)
class LeaseRegistry:
    """Leases keyed by (queue, job id), with an expiry-ordered index for the reaper."""

    _entries: dict[tuple[str, str], LeaseEntry] = field(
        default_factory=dict[tuple[str, str], LeaseEntry]
    )
    _heap: list[tuple[int, str, str, int]] = field(default_factory=list[tuple[int, str, str, int]])

    @staticmethod
    def new_token() -> int:
        """A fresh 64-bit claim token."""
        return secrets.randbits(64)

    def insert(self, queue: str, job_id: str, entry: LeaseEntry) -> None:
        """Register a lease (before the claim commits)."""
        self._entries[(queue, job_id)] = entry
        heapq.heappush(self._heap, (entry.expires_at, queue, job_id, entry.token))

    def get(self, queue: str, job_id: str, token: int) -> LeaseEntry | None:
        """The entry for this claim, if it still holds the lease and is not being reaped."""
        entry = self._entries.get((queue, job_id))
        if entry is None or entry.token != token or entry.reaping:
            return None
        return entry

    def begin_settling(self, queue: str, job_id: str, token: int) -> LeaseEntry | None:
        """Mark the claim as being settled; None if it lost its lease or is being settled."""
        entry = self.get(queue, job_id, token)
        if entry is None or entry.settling:
            return None
        entry.settling = True
        return entry

    @staticmethod
    def end_settling(entry: LeaseEntry, *, outcome_known: bool) -> None:
        """A settlement failed: allow another; after an unknown outcome it must read first."""
        entry.settling = False
        if not outcome_known:
            entry.verify = True

    def lookup(self, queue: str, job_id: str) -> LeaseEntry | None:
        """The entry for a job, whoever holds it."""
        return self._entries.get((queue, job_id))

    def extend(self, queue: str, job_id: str, token: int, expires_at: int) -> bool:
        """Set a new expiry for the claim; False if the claim no longer holds the lease."""
        entry = self.get(queue, job_id, token)
        if entry is None:
            return False
        entry.expires_at = expires_at
        heapq.heappush(self._heap, (expires_at, queue, job_id, token))
        return True

    def remove(self, queue: str, job_id: str, token: int) -> None:
        """Drop the lease if it still belongs to ``token`` (after the settling commit)."""
        entry = self._entries.get((queue, job_id))
        if entry is not None and entry.token == token:
            del self._entries[(queue, job_id)]

    def take_due(self, now_ms: int) -> list[tuple[str, str, int]]:
        """Mark and return the leases that expired by ``now_ms``, soonest first."""
        due: list[tuple[str, str, int]] = []
        while self._heap and self._heap[0][0] <= now_ms:
            expires_at, queue, job_id, token = heapq.heappop(self._heap)
            entry = self._entries.get((queue, job_id))
            if entry is None or entry.token != token or entry.expires_at != expires_at:
                continue  # settled, re-claimed, or renewed: a stale heap item
            entry.reaping = True
            due.append((queue, job_id, token))
        return due

    def release_reaping(self, queue: str, job_id: str, token: int) -> None:
        """Return a due lease to the heap after a reap attempt failed, for the next tick."""
        entry = self._entries.get((queue, job_id))
        if entry is not None and entry.token == token and entry.reaping:
            heapq.heappush(self._heap, (entry.expires_at, queue, job_id, token))

    def fire_all(self) -> None:
        """Fire the cancel token of every lease (the queue stopped: no delivery can settle)."""
        for entry in self._entries.values():
            entry.cancel.fire()

    def __len__(self) -> int:
        return len(self._entries)
