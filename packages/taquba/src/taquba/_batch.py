"""Group commit: concurrent requests of one kind share one durable transaction.

A durable commit waits for the next WAL flush, so its latency is about one flush interval
whatever it holds. `GroupCommit` lets many concurrent calls (acks, enqueues) ride one commit:
the first caller becomes the leader and commits everything queued when it starts; callers that
arrive meanwhile queue up, and as soon as the leader's commit is applied (before its WAL flush)
the oldest of them leads the next one, so one batch can commit while the one before it waits
for durability. Each request still succeeds or fails on its own:

- a request the stage function *rejects* (e.g. an ack whose lease is gone) is answered with
  its error and left out of the transaction;
- a request whose staging raises a `TaqubaError` is *dropped*: the transaction is abandoned,
  the request gets that error, and the batch is staged again without it (so a failed request
  never leaves half its writes behind);
- any other failure of the commit (storage errors, fencing) is every remaining request's error.

Cancellation. A `GroupCommit` made with ``cancellable=True`` (enqueues) lets a cancelled caller
stop while its outcome is known to be "nothing written": `submit` checks for cancellation
before queueing the request, and a request still waiting in the queue (not yet taken into a
batch by a leader) is withdrawn if its caller is cancelled. Once a leader has taken it, the
request runs to its end shielded, so its caller always knows whether it was applied. Without
it (settlements: acks), the whole submission is shielded, as settlement paths are: a worker
cancelled just as its handler returns still records the ack.

It also holds a `KeyboardInterrupt` (which passes cancel shields) until the request is
settled: a follower that left early would strand the batch it should lead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import trio

from taquba._adapter import Database, Transaction, run_transaction
from taquba._errors import StorageError, TaqubaError
from taquba._interrupts import hold_interrupts, protect, wait_holding

__all__ = ["BatchRequest", "DropFromBatch", "GroupCommit"]


@dataclass(slots=True, eq=False)
class BatchRequest:
    """The state every request of a `GroupCommit` carries."""

    wake: trio.Event = field(default_factory=trio.Event, init=False)
    settled: bool = field(default=False, init=False)
    done: bool = field(default=False, init=False)
    error: TaqubaError | None = field(default=None, init=False)


R = TypeVar("R", bound=BatchRequest)


class DropFromBatch(Exception):
    """Raised by a stage function: `request` failed with `error`; retry the batch without it."""

    def __init__(self, request: BatchRequest, error: TaqubaError) -> None:
        super().__init__(request, error)
        self.request = request
        self.error = error


StageFn = Callable[[Transaction, list[R]], Awaitable[list[tuple[R, TaqubaError]]]]
"""Stage a batch in a transaction; return the requests it rejected (not staged) with errors."""


class GroupCommit(Generic[R]):
    """Leader/follower group commit of requests of type `R` (see the module docstring)."""

    __slots__ = (
        "_cancellable",
        "_committed",
        "_database",
        "_leading",
        "_max_batch",
        "_queue",
        "_stage",
    )

    def __init__(
        self,
        database: Callable[[], Database],
        stage: StageFn[R],
        committed: Callable[[list[R]], None],
        *,
        max_batch: int,
        cancellable: bool = False,
    ) -> None:
        self._database = database
        self._cancellable = cancellable
        self._stage = stage
        self._committed = committed
        self._max_batch = max_batch
        self._queue: list[R] = []
        self._leading = False

    async def submit(self, request: R) -> None:
        """Commit `request` with whatever else is queued; raise its error if it failed.

        If cancellable, raises `trio.Cancelled` only when nothing of the request was staged:
        if the caller is cancelled before the request is queued, or while it waits in the
        queue. Otherwise cancellation is ignored until the request is settled.
        """
        self._database()  # raises if the database is closed or failed: queue nothing then
        if self._cancellable:
            await trio.lowlevel.checkpoint_if_cancelled()
        with hold_interrupts():
            self._queue.append(request)
            if self._leading:
                try:
                    with trio.CancelScope(shield=not self._cancellable):
                        await wait_holding(request.wake.wait)
                except trio.Cancelled:
                    if request in self._queue and not request.wake.is_set():
                        self._queue.remove(request)  # withdrawn: no leader has staged it
                        raise
                    # Between the cancellation and now a leader took the request into its
                    # batch, or chose it to lead the next one: it runs to its end, and its
                    # outcome is returned (the caller's next checkpoint raises `Cancelled`).
                    with trio.CancelScope(shield=True):
                        await wait_holding(request.wake.wait)
            else:
                self._leading = True
            with trio.CancelScope(shield=True):
                if not request.done:  # this task leads the next batch
                    await self._lead()
        if request.error is not None:
            raise request.error

    async def _lead(self) -> None:
        batch: list[R] = []
        handed_over = False

        def hand_over() -> None:
            # Called when this batch's commit is applied: the next batch may form and commit
            # while this one waits for its WAL flush (flushes are ordered, so a later batch
            # is never durable before an earlier one).
            nonlocal handed_over
            if handed_over:
                return
            handed_over = True
            if self._queue:
                self._queue[0].wake.set()  # the oldest waiting request leads the next batch
            else:
                self._leading = False

        try:
            # Let requests that are ready to run join this batch.
            await trio.lowlevel.cancel_shielded_checkpoint()
            batch = self._queue[: self._max_batch]
            del self._queue[: len(batch)]
            await self._commit(batch, hand_over)
        finally:
            for request in batch:
                if not request.settled:  # the batch died of something unexpected
                    request.error = StorageError("the outcome of this write is unknown")
                request.done = True
                request.wake.set()
            hand_over()

    def _body(
        self, batch: list[R]
    ) -> Callable[[Transaction], Awaitable[list[tuple[R, TaqubaError]]]]:
        async def body(txn: Transaction) -> list[tuple[R, TaqubaError]]:
            return await self._stage(txn, batch)

        return body

    async def _commit(self, batch: list[R], on_commit: Callable[[], None]) -> None:
        remaining: list[R] = list(batch)
        while remaining:
            try:
                rejected = await run_transaction(
                    self._database(), self._body(remaining), durable=True, on_commit=on_commit
                )
            except DropFromBatch as drop:
                drop.request.error = drop.error
                drop.request.settled = True
                remaining = [r for r in remaining if r is not drop.request]
                continue
            except TaqubaError as exc:
                for request in remaining:
                    request.error = exc
                    request.settled = True
                return
            for request, error in rejected:
                request.error = error
                request.settled = True
            committed = [r for r in remaining if not r.settled]
            for request in committed:
                request.settled = True
            if committed:
                self._committed(committed)
            return


protect(GroupCommit)
