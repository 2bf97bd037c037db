"""A queue-scoped wakeup that wakes one waiter per notification."""

from __future__ import annotations

import trio

__all__ = ["Wakeup"]


class Wakeup:
    """Wake one waiting task per `notify_one`; with no waiter, keep a single permit.

    A notification that finds no waiter leaves one permit, which the next `wait` consumes at
    once, so an insert racing a waiter is never missed. Permits do not accumulate: a stale
    permit costs at most one extra empty claim pass.
    """

    def __init__(self) -> None:
        """Create a wakeup with no waiters and no permit."""
        self._lot = trio.lowlevel.ParkingLot()
        self._permit = False

    def notify_one(self) -> None:
        """Wake one waiter, or leave a permit if none is waiting."""
        if not self._lot.unpark(count=1):
            self._permit = True

    def notify(self, count: int) -> None:
        """Wake up to ``count`` waiters; leave a permit if fewer were waiting."""
        if count <= 0:
            return
        if len(self._lot.unpark(count=count)) < count:
            self._permit = True

    async def wait(self) -> None:
        """Wait for a notification (or consume a pending permit)."""
        if self._permit:
            self._permit = False
            await trio.lowlevel.checkpoint()
            return
        await self._lot.park()

    @property
    def waiters(self) -> int:
        """How many tasks are waiting."""
        return len(self._lot)
