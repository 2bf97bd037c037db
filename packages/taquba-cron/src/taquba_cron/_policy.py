"""Pure firing policy: which firings to enqueue, and the durable state that records it.

A schedule's state is one small record in the queue's user KV: ``through`` (every fire time
at or before it has been handled: enqueued, buffered, or deliberately skipped), ``last`` (the
last fire time actually enqueued, for the ``cron.previous_fire_ms`` header), ``paused``, and
for schedules with an overlap policy ``job`` (the id of the job enqueued for ``last``) and
``buffered`` (a fire time held back until that job finishes). `plan` turns a state, the
current time and whether that job is unfinished into the next step: the fire times to enqueue
(in order) and the state to write with them.

Theory of operation, one step:

1. The due firings are those after ``through`` and at or before ``now``. Each is *on time*
   when it is at most ``grace`` old, else *missed*. On-time firings are considered under every
   missed-run policy; missed ones are dropped (`Missed.SKIP`), reduced to the latest one
   within ``lookback`` (`Missed.COALESCE`), or all kept within ``lookback``
   (`Missed.BACKFILL`). At most ``limit`` are considered per step.
2. The considered firings go through the overlap policy in order, after any buffered one:
   with `Overlap.ALLOW` each is enqueued; otherwise one is enqueued only while the previous
   job is finished (and it makes the schedule busy), and while busy a firing is skipped
   (`Overlap.SKIP`) or held as the single buffered firing (`Overlap.BUFFER_ONE`; later ones
   are skipped while one waits).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ._errors import CorruptState

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Missed", "Overlap", "Plan", "State", "plan"]

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
    """Enqueue one job for the latest missed firing within ``lookback``, standing for all the
    missed ones (on-time firings are enqueued as well)."""
    BACKFILL = "backfill"
    """Enqueue one job per missed firing within ``lookback``, oldest first."""


class Overlap(enum.StrEnum):
    """What a schedule does when a firing falls due while the previous firing's job is unfinished.

    A job is unfinished while it is pending, scheduled (waiting for a retry) or claimed; it is
    finished once done, dead or deleted (an acknowledged job is deleted unless the queue keeps
    done jobs). The scheduler reads the job with `taquba.Queue.get_job`; the job's id and any
    buffered firing are kept in the schedule's durable state, so the policy holds across
    restarts and scheduler instances. Only jobs enqueued under a policy other than `ALLOW` are
    tracked: after switching to one, the first firing is enqueued regardless.
    """

    ALLOW = "allow"
    """Enqueue every firing, whether or not the previous job finished (the default)."""
    SKIP = "skip"
    """Skip a firing while the previous firing's job is unfinished."""
    BUFFER_ONE = "buffer_one"
    """Hold one firing while the previous job is unfinished, and enqueue it once that job has
    finished; further firings are skipped while one is held."""


@dataclass(frozen=True, slots=True)
class State:
    """The durable state of one schedule (library-internal)."""

    through: int
    """Every fire time at or before this instant (ms) has been handled."""
    last: int | None
    """The last fire time enqueued (ms), None before the first."""
    paused: bool = False
    """Whether the schedule is paused."""
    job: str | None = None
    """The id of the job enqueued for ``last`` (tracked for overlap policies only)."""
    buffered: int | None = None
    """A fire time (ms) held until ``job`` finishes (`Overlap.BUFFER_ONE`)."""

    def encode(self) -> bytes:
        """Deterministic JSON bytes (compared byte for byte by the KV precondition).

        ``job`` and ``buffered`` are written only when set, so a schedule without an overlap
        policy keeps the record of 0.4 (which 0.4 reads, ignoring fields it does not know).
        """
        record: dict[str, object] = {
            "v": _FORMAT,
            "through": self.through,
            "last": self.last,
            "paused": self.paused,
        }
        if self.job is not None:
            record["job"] = self.job
        if self.buffered is not None:
            record["buffered"] = self.buffered
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
        job, buffered = fields.get("job"), fields.get("buffered")
        if (
            type(through) is not int
            or (last is not None and type(last) is not int)
            or type(paused) is not bool
            or (job is not None and (type(job) is not str or not job))
            or (buffered is not None and type(buffered) is not int)
        ):
            raise CorruptState(schedule, "malformed fields")
        return cls(through, last, paused, job, buffered)


@dataclass(frozen=True, slots=True)
class Plan:
    """One step of catching a schedule up to now."""

    fires: list[int]
    """Fire times (ms) to enqueue in this step, in order (possibly none)."""
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
    overlap: Overlap = Overlap.ALLOW,
    busy: bool = False,
    job_id: str | None = None,
) -> Plan | None:
    """The next step for a schedule at time ``now``, or None when there is nothing to do.

    Args:
        state: the schedule's stored state.
        now: the current time (ms).
        next_after: the schedule's first fire time strictly after an instant.
        prev_at_or_before: the schedule's last fire time at or before an instant.
        missed: the missed-run policy.
        grace_ms: how late a firing may be and still count as on time.
        lookback_ms: how far back `Missed.COALESCE` and `Missed.BACKFILL` reach.
        limit: the most due fire times one step considers (at least 1).
        overlap: the overlap policy.
        busy: whether the job of ``state.job`` is unfinished (read by the caller).
        job_id: the id the last job enqueued in this step will get (recorded for overlap
            policies other than `Overlap.ALLOW`).
    """
    if state.paused:
        return None
    release = state.buffered is not None and not busy
    first_due = next_after(state.through) if now > state.through else None
    if (first_due is None or first_due > now) and not release:
        return None
    if first_due is not None and first_due <= now:
        due, through, more = _due(
            state, now, next_after, prev_at_or_before, missed, grace_ms, lookback_ms, limit
        )
    else:
        due, through, more = [], state.through, False
    fires: list[int]
    buffered: int | None
    if overlap is Overlap.ALLOW:
        fires, buffered = due, None
    else:
        fires, buffered = [], state.buffered
        if buffered is not None and not busy:
            fires.append(buffered)
            buffered, busy = None, True
        for fire in due:
            if not busy:
                fires.append(fire)
                busy = True
            elif overlap is Overlap.BUFFER_ONE and buffered is None:
                buffered = fire
            # else: skipped, the previous job is unfinished
    last = fires[-1] if fires else state.last
    job = job_id if fires and overlap is not Overlap.ALLOW else state.job
    return Plan(fires, State(through, last, False, job, buffered), more=more)


def _due(
    state: State,
    now: int,
    next_after: Callable[[int], int | None],
    prev_at_or_before: Callable[[int], int | None],
    missed: Missed,
    grace_ms: int,
    lookback_ms: int,
    limit: int,
) -> tuple[list[int], int, bool]:
    """The due firings the missed-run policy keeps, the new watermark, and whether more remain.

    At most ``limit`` firings are returned; the watermark stops at the last one when more remain.
    """
    on_time = now - grace_ms  # firings at or after this instant are on time
    oldest = now - (grace_ms if missed is Missed.SKIP else max(grace_ms, lookback_ms))
    fires: list[int] = []
    start = max(state.through, oldest - 1)
    if missed is Missed.COALESCE:
        # The missed firings collapse into the latest of them; on-time ones all follow.
        latest = prev_at_or_before(on_time - 1)
        if latest is not None and latest > state.through and latest >= oldest:
            fires.append(latest)
        start = max(state.through, on_time - 1)
    fire = next_after(start)
    while fire is not None and fire <= now and len(fires) < limit:
        fires.append(fire)
        fire = next_after(fire)
    more = fire is not None and fire <= now
    return fires, fires[-1] if more else now, more
