"""Low-water marks: where a time-ordered background scan can start, and when it has work.

Promotion reads the scheduled space, the retention sweeps the done and dead spaces. Records
they remove leave SlateDB tombstones at the front of the space, and a scan from the start of
the space walks every one of them, so an idle tick after many promotions cost tens of ms.
A `Mark` remembers, in memory, two times (ms since the epoch):

- ``start``: no record the pass looks for has a key time before it (the scheduled key's
  ``run_at``, the done key's ``completed_at``); a pass scans from there, past the tombstones;
- ``due``: the pass has nothing to do before this time (None: nothing is known to need it);
  an idle tick before it does not scan at all.

Correctness rule: a mark may be lower than necessary, never higher. So:

- a new mark is ``start=0, due=0``: the first pass after open scans everything once;
- `Mark.begin` clears the mark before the pass scans; the pass lowers it again (`Mark.note`)
  for what it kept and for the first record past its range;
- a writer *holds* its record's times (`Mark.hold`) from before its transaction until its
  commit attempt is over, whatever the outcome (`Mark.release`); `begin` re-notes every
  held time after clearing. So a record committed behind a scan, or committed and already
  visible to a caller while its writer has not returned yet, is always under the mark;
- a pass that fails restores what it took (`Mark.abort`), so the next one scans again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Mark"]

_NOTHING = 2**64  # above every key time (keys hold u64): no record is known


@dataclass(slots=True)
class Mark:
    """A low-water mark over one time-ordered background scan (see the module docstring)."""

    start: int = 0
    """Every record the pass looks for has a key time at or after this (ms)."""
    due: int | None = 0
    """The pass can have work from this time on (ms); None: no work is known."""
    _held: dict[int, tuple[int, int | None]] = field(
        default_factory=dict[int, tuple[int, int | None]], repr=False
    )
    _holds: int = field(default=0, repr=False)

    def note(self, start: int, due: int | None) -> None:
        """A record at key time ``start`` exists, needing the pass at ``due`` (None: never)."""
        self.start = min(self.start, start)
        if due is not None and (self.due is None or due < self.due):
            self.due = due

    def hold(self, start: int, due: int | None) -> int:
        """A record at ``start`` (due at ``due``) is being written: keep it under the mark.

        Returns a handle for `release`, which the writer calls once its commit attempt is
        over, whatever its outcome.
        """
        self.note(start, due)
        self._holds += 1
        self._held[self._holds] = (start, due)
        return self._holds

    def release(self, handle: int) -> None:
        """The write held by ``handle`` is over (committed, failed, or of unknown outcome)."""
        held = self._held.pop(handle, None)
        if held is not None:
            self.note(*held)

    def begin(self, now: int) -> int | None:
        """Start a pass at ``now``: the key time to scan from, or None if nothing is due.

        When a pass runs, the mark is cleared; the caller rebuilds it with `note` from what
        the pass keeps, while writers lower it for what they write meanwhile.
        """
        if self.due is None or self.due > now:
            return None
        start = self.start
        self.start, self.due = _NOTHING, None
        for held in self._held.values():
            self.note(*held)
        return min(start, _NOTHING - 1)

    def abort(self, start: int) -> None:
        """The pass that began at ``start`` failed: scan from there on the next tick."""
        self.note(start, 0)
