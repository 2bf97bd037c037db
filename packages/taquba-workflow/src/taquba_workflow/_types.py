"""Public value types: run specs, step outcomes, the `Step` a runner gets, statuses, outcomes."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from ._errors import WorkflowUsageError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from taquba import LeaseHandle

    from ._memo import Memo

__all__ = [
    "Cancel",
    "Continue",
    "ContinueAfter",
    "Fail",
    "RunOutcome",
    "RunSpec",
    "RunState",
    "RunStatus",
    "Step",
    "StepOutcome",
    "SubmitOutcome",
    "Succeed",
    "TerminalStatus",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSpec:
    """What to run: the input of step 0 and the run's options."""

    input: bytes
    """The run's input: the payload step 0 receives. Resubmissions compare its SHA-256."""
    run_id: str | None = None
    """The run's id (1 to 128 of ``[A-Za-z0-9_-]``); default a fresh ULID."""
    headers: Mapping[str, str] = field(default_factory=dict[str, str])
    """Caller metadata every step and the terminal outcome see (not ``workflow.*``)."""
    priority: int | None = None
    """Claim priority of every step (lower first); default the queue's."""
    max_attempts_per_step: int | None = None
    """Attempts each step gets before its run fails; default the queue's ``max_attempts``."""
    step_time_limit: float | None = None
    """Seconds each attempt of each step of this run may take before it is cancelled and
    counted as a failed attempt; default the runtime's ``step_time_limit``."""


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    """What `WorkflowRuntime.submit` did."""

    run_id: str
    """The run's id (the generated one when the spec had none)."""
    newly_submitted: bool
    """False when a run with this id and the same input was already known (active, or ended
    and still remembered) and nothing was written."""


@dataclass(frozen=True, slots=True)
class Continue:
    """Step outcome: run the next step now, with ``payload`` as its input."""

    payload: bytes
    """The next step's payload (the only durable channel between steps)."""


@dataclass(frozen=True, slots=True)
class ContinueAfter:
    """Step outcome: run the next step after ``delay`` seconds, with ``payload`` as its input.

    The run occupies no worker while it sleeps, and the sleep survives restarts (the next step
    is a scheduled job).
    """

    delay: float
    """Seconds to wait before the next step (finite, non-negative)."""
    payload: bytes
    """The next step's payload."""

    def __post_init__(self) -> None:
        if not isinstance(self.delay, (int, float)) or not math.isfinite(self.delay):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise WorkflowUsageError("ContinueAfter.delay must be a finite number of seconds")
        if self.delay < 0:
            raise WorkflowUsageError("ContinueAfter.delay must not be negative")


@dataclass(frozen=True, slots=True)
class Succeed:
    """Step outcome: the run succeeded with ``result``."""

    result: bytes = b""
    """The run's result, handed to the terminal hook and kept in the outcome blob."""


@dataclass(frozen=True, slots=True)
class Fail:
    """Step outcome: the run failed (a business failure; the step is not retried)."""

    error: str
    """Why the run failed."""


@dataclass(frozen=True, slots=True)
class Cancel:
    """Step outcome: the runner cancels its own run."""

    reason: str | None = None
    """Why, reported as the outcome's ``error``."""


StepOutcome: TypeAlias = Continue | ContinueAfter | Succeed | Fail | Cancel
"""What a step runner returns: what happens to the run next."""


class TerminalStatus(enum.StrEnum):
    """How a run ended. The values are stable wire strings."""

    SUCCEEDED = "succeeded"
    """A step returned `Succeed`."""
    FAILED = "failed"
    """A step returned `Fail`, raised `PermanentStepError`, or ran out of attempts."""
    CANCELLED = "cancelled"
    """`WorkflowRuntime.cancel` was called, or a step returned `Cancel`."""


class RunState(enum.StrEnum):
    """Where a run is, as `WorkflowRuntime.status` reports it."""

    RUNNING = "running"
    """Active: a step is pending, sleeping, being retried or executing."""
    CANCELLING = "cancelling"
    """Active, with a cancellation requested that has not settled yet."""
    SUCCEEDED = "succeeded"
    """Ended with `TerminalStatus.SUCCEEDED`."""
    FAILED = "failed"
    """Ended with `TerminalStatus.FAILED`."""
    CANCELLED = "cancelled"
    """Ended with `TerminalStatus.CANCELLED`."""

    @property
    def terminal(self) -> bool:
        """Whether the run has ended."""
        return self not in (RunState.RUNNING, RunState.CANCELLING)


@dataclass(frozen=True, slots=True)
class RunStatus:
    """A run's state, read from the queue database."""

    run_id: str
    """The run's id."""
    state: RunState
    """Where the run is."""
    step: int
    """The current step (active runs) or the final step (ended runs)."""
    error: str | None = None
    """Why the run failed or was cancelled, if known."""
    finished_at_ms: int | None = None
    """When the run ended (ms since the epoch, runtime clock); None while active."""


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How a run ended: what the terminal hook receives and the outcome blob holds."""

    run_id: str
    """The run's id."""
    status: TerminalStatus
    """How it ended."""
    result: bytes | None
    """The `Succeed` result; None otherwise."""
    error: str | None
    """Why it failed or was cancelled (None for an external cancel and for success)."""
    headers: Mapping[str, str]
    """The run's headers (without ``workflow.*``)."""
    final_step: int
    """The step that ended the run."""
    finished_at_ms: int
    """When the outcome was decided (ms since the epoch, runtime clock)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One delivery of one step, as the step runner sees it.

    A step may be delivered more than once (a crash, an expired lease, a transient error): make
    its side effects idempotent, or memoize them in `memo`.
    """

    run_id: str
    """The run's id."""
    number: int
    """The step number, 0 for the first step."""
    payload: bytes
    """The step's input: the run input for step 0, the previous step's `Continue` payload
    after."""
    headers: Mapping[str, str]
    """The run's headers (without ``workflow.*``)."""
    attempt: int
    """Which delivery of this step this is (1 for the first)."""
    max_attempts: int
    """Attempts this step gets; on the last one a transient error fails the run."""
    job_id: str
    """The id of the queue job carrying this step."""
    memo: Memo
    """Durable key-value memo scoped to ``(run_id, number)``: it survives retries."""
    lease: LeaseHandle
    """The delivery's lease: call ``lease.ensure_at_least(seconds)`` before slow work."""

    @property
    def cancel_requested(self) -> bool:
        """Whether the run's cancellation was requested (or the delivery's lease was lost).

        Cancellation is cooperative: check it (or `wait_cancel_requested`) and return early;
        whatever the runner returns afterwards, the run ends cancelled.
        """
        return self.lease.cancel_requested

    async def wait_cancel_requested(self) -> None:
        """Wait until `cancel_requested` becomes true."""
        await self.lease.wait_cancel_requested()
