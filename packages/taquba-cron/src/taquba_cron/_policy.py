"""Pure missed-run policy: which firings to enqueue, and the durable state that records it.

A schedule's state is one small record in the queue's user KV: ``through`` (every fire time
at or before it has been handled: enqueued, or deliberately skipped), ``last`` (the last fire
time actually enqueued, for the ``cron.previous_fire_ms`` header) and ``paused``. `plan`
turns a state and the current time into the next step: the fire times to enqueue (in order,
at most ``limit``) and the state to write with them.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ._errors import CorruptState

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Missed", "Plan", "State", "plan"]

_FORMAT: Final = 1


class Missed(enum.StrEnum):
    """What a schedule does with firings it missed (the scheduler was down, paused or stuck).

    A firing is *missed* when the scheduler first sees it due more than the schedule's
    ``grace`` after its fire time. Firings seen within ``grace`` are on time and are enqueued
    under every policy.
    """

    SKIP = "skip"
    """Drop missed firings; carry on with the next one (the default)."""
    COALESCE = "coalesce"
    """Enqueue one job for the latest missed firing within ``lookback``, standing for all."""
    BACKFILL = "backfill"
    """Enqueue one job per missed firing within ``lookback``, oldest first."""


@dataclass(frozen=True, slots=True)
class State:
    """The durable state of one schedule (library-internal)."""

    through: int
    """Every fire time at or before this instant (ms) has been handled."""
    last: int | None
    """The last fire time enqueued (ms), None before the first."""
    paused: bool = False
    """Whether the schedule is paused."""

    def encode(self) -> bytes:
        """Deterministic JSON bytes (compared byte for byte by the KV precondition)."""
        record = {"v": _FORMAT, "through": self.through, "last": self.last, "paused": self.paused}
        return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, schedule: str, raw: bytes) -> State:
        """Decode `encode`'s bytes; raise `CorruptState` on anything else."""
        try:
            record: Any = json.loads(raw)
        except ValueError as exc:
            raise CorruptState(schedule, f"not JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise CorruptState(schedule, "not a JSON object")
        fields: dict[str, Any] = record  # pyright: ignore[reportUnknownVariableType]
        if fields.get("v") != _FORMAT:
            raise CorruptState(schedule, f"unknown format version {fields.get('v')!r}")
        through, last, paused = fields.get("through"), fields.get("last"), fields.get("paused")
        if (
            type(through) is not int
            or (last is not None and type(last) is not int)
            or type(paused) is not bool
        ):
            raise CorruptState(schedule, "malformed fields")
        return cls(through, last, paused)


@dataclass(frozen=True, slots=True)
class Plan:
    """One step of catching a schedule up to now."""

    fires: list[int]
    """Fire times (ms) to enqueue in this step, oldest first (possibly none)."""
    state: State
    """The state to write together with those jobs."""
    more: bool
    """Whether due firings remain after this step (the step hit its limit)."""


def plan(
    state: State,
    now: int,
    *,
    next_after: Callable[[int], int | None],
    prev_at_or_before: Callable[[int], int | None],
    missed: Missed,
    grace_ms: int,
    lookback_ms: int,
    limit: int,
) -> Plan | None:
    """The next step for a schedule at time ``now``, or None when nothing is due.

    Args:
        state: the schedule's stored state.
        now: the current time (ms).
        next_after: the schedule's first fire time strictly after an instant.
        prev_at_or_before: the schedule's last fire time at or before an instant.
        missed: the missed-run policy.
        grace_ms: how late a firing may be and still count as on time.
        lookback_ms: how far back `Missed.COALESCE` and `Missed.BACKFILL` reach.
        limit: the most fire times one step may return (at least 1).
    """
    if state.paused or now <= state.through:
        return None
    first_due = next_after(state.through)
    if first_due is None or first_due > now:
        return None
    window = grace_ms if missed is Missed.SKIP else max(grace_ms, lookback_ms)
    oldest = now - window
    if missed is Missed.COALESCE:
        latest = prev_at_or_before(now)
        fires = (
            [latest] if latest is not None and latest > state.through and latest >= oldest else []
        )
        return Plan(fires, State(now, fires[-1] if fires else state.last), more=False)
    fires: list[int] = []
    fire = next_after(max(state.through, oldest - 1))
    while fire is not None and fire <= now and len(fires) < limit:
        fires.append(fire)
        fire = next_after(fire)
    more = fire is not None and fire <= now
    through = fires[-1] if more else now
    return Plan(fires, State(through, fires[-1] if fires else state.last), more=more)
