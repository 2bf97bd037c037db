"""Public value types: run specs, step outcomes, the `Step` a runner gets, statuses, outcomes."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar, cast

from taquba import UsageError

from ._effects import KvStaging

if TYPE_CHECKING:
    from collections.abc import Mapping

    from taquba import LeaseHandle

    from ._memo import Memo

P = TypeVar("P")
"""The payload type: a run's input and every step's payload."""
R = TypeVar("R")
"""The result type: what `Succeed` carries and `RunOutcome.result` holds."""

__all__ = [
    "MAX_SIGNAL_KEY_LENGTH",
    "Cancel",
    "Continue",
    "Fail",
    "RunOutcome",
    "RunSpec",
    "RunState",
    "RunStatus",
    "SignalOutcome",
    "Step",
    "StepOutcome",
    "Succeed",
    "TerminalStatus",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSpec(Generic[P]):
    """What to run: the input of step 0 and the run's options."""

    input: P
    """The run's input: the payload step 0 receives, of the runtime's ``payload_type``.
    Resubmissions compare the SHA-256 of its encoding (the encoding is deterministic)."""
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
    kv_writes: Mapping[bytes, bytes] = field(default_factory=dict[bytes, bytes])
    """Application KV entries written in the transaction that creates the run (with its first
    step), and only then: a duplicate submission writes nothing. Keys must not start with
    ``workflow/`` (`ReservedKvKey`); values are at most `taquba.MAX_KV_VALUE_SIZE` bytes."""


@dataclass(frozen=True, slots=True)
class Continue(Generic[P]):
    """Step outcome: run the next step with ``payload`` as its input, now or after ``delay``.

    With ``delay`` (seconds), the run occupies no worker while it sleeps, and the sleep
    survives restarts (the next step is a scheduled job).

        return Continue(order)                  # the next step, now
        return Continue(order, delay=30.0)      # the next step, in 30 s
        return Continue(order, on_signal=f"approval:{step.run_id}", timeout=86400.0)
                                                # when `Runtime.signal` sends one, or in a day

    With ``on_signal``, the wait is durable the same way, and the next step reads the signal
    as `Step.signal` (None if ``timeout`` passed first).

    Raises:
        taquba.UsageError: ``delay`` or ``timeout`` is not a finite, non-negative number of
            seconds, ``on_signal`` is not a usable key, ``on_signal`` comes without ``timeout``
            or with ``delay``, or ``timeout`` without ``on_signal``.
    """

    payload: P
    """The next step's payload, of the runtime's ``payload_type`` (the only durable channel
    between steps)."""
    delay: float | None = field(default=None, kw_only=True)
    """Seconds to wait before the next step (finite, non-negative); None: at once."""
    on_signal: str | None = field(default=None, kw_only=True)
    """Wait for a signal under this correlation key (`Runtime.signal`) before the next step,
    at most ``timeout`` seconds; the next step reads it as `Step.signal`. None: no wait."""
    timeout: float | None = field(default=None, kw_only=True)
    """With ``on_signal``: the longest wait, in seconds (required; finite, non-negative)."""

    def __post_init__(self) -> None:
        delay = cast("object", self.delay)  # validated: callers may pass anything
        key = cast("object", self.on_signal)
        timeout = cast("object", self.timeout)
        if key is not None:
            validate_signal_key(key)
            if delay is not None:
                raise UsageError("Continue takes either delay or on_signal, not both")
            if timeout is None:
                raise UsageError("Continue(on_signal=...) needs a timeout in seconds")
            _check_seconds(timeout, "Continue.timeout")
            return
        if timeout is not None:
            raise UsageError("Continue.timeout applies only with on_signal")
        if delay is not None:
            _check_seconds(delay, "Continue.delay")


MAX_SIGNAL_KEY_LENGTH = 256
"""The longest signal correlation key, in characters."""


def validate_signal_key(key: object) -> str:
    """Return ``key`` if it is a usable correlation key (a non-empty str of at most 256)."""
    if not isinstance(key, str) or not key:
        raise UsageError("a signal correlation key must be a non-empty str")
    if len(key) > MAX_SIGNAL_KEY_LENGTH:
        raise UsageError(
            f"a signal correlation key is at most {MAX_SIGNAL_KEY_LENGTH} characters long"
        )
    return key


def _check_seconds(value: object, name: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise UsageError(f"{name} must be a number of seconds")
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{name} must be a finite, non-negative number of seconds")


class SignalOutcome(enum.StrEnum):
    """What `Runtime.signal` did. The values are stable strings."""

    DELIVERED = "delivered"
    """A run was waiting on the key: its next step is due now and will read the payload."""
    BUFFERED = "buffered"
    """No waiter took it now: the signal is kept under the key (one per key, the latest
    wins) for the next run that waits on it, or for a waiter whose deadline is passing."""


@dataclass(frozen=True, slots=True)
class Succeed(Generic[R]):
    """Step outcome: the run succeeded with ``result``."""

    result: R
    """The run's result, of the runtime's ``result_type``: handed to the terminal hook and
    kept in the outcome blob."""


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


StepOutcome: TypeAlias = Continue[P] | Succeed[R] | Fail | Cancel
"""What a step runner returns: what happens to the run next.

Generic in the payload type ``P`` and the result type ``R``: annotate a runner
``-> StepOutcome[Order, Receipt]`` and the runtime reads both types from it.
"""


class TerminalStatus(enum.StrEnum):
    """How a run ended. The values are stable wire strings."""

    SUCCEEDED = "succeeded"
    """A step returned `Succeed`."""
    FAILED = "failed"
    """A step returned `Fail`, raised `PermanentStepError`, or ran out of attempts."""
    CANCELLED = "cancelled"
    """`Runtime.cancel` was called, or a step returned `Cancel`."""


class RunState(enum.StrEnum):
    """Where a run is, as `Runtime.status` reports it."""

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
class RunOutcome(Generic[R]):
    """How a run ended: what the terminal hook receives and the outcome blob holds."""

    run_id: str
    """The run's id."""
    status: TerminalStatus
    """How it ended."""
    result: R | None
    """The `Succeed` result, decoded as the runtime's ``result_type``; None otherwise."""
    error: str | None
    """Why it failed or was cancelled (None for an external cancel and for success)."""
    headers: Mapping[str, str]
    """The run's headers (without ``workflow.*``)."""
    final_step: int
    """The step that ended the run."""
    finished_at_ms: int
    """When the outcome was decided (ms since the epoch, runtime clock)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Step(Generic[P]):
    """One delivery of one step, as the step runner sees it.

    A step may be delivered more than once (a crash, an expired lease, a transient error): make
    its side effects idempotent, or memoize them in `memo`.
    """

    run_id: str
    """The run's id."""
    number: int
    """The step number, 0 for the first step."""
    payload: P
    """The step's input, decoded as the runtime's ``payload_type``: the run input for step 0,
    the previous step's `Continue` payload after."""
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
    signal_key: str | None = None
    """The correlation key the previous step waited on (``Continue(on_signal=...)``); None
    when it did not wait for a signal."""
    signal: bytes | None = None
    """The payload of the signal the previous step waited for; None if the wait timed out
    (or there was no wait). The same on every delivery of this step."""
    _kv: KvStaging = field(default_factory=KvStaging, init=False, repr=False, compare=False)

    def kv_put(self, key: bytes, value: bytes) -> None:
        """Stage a write of the application KV entry ``key``, committed with the step's outcome.

        Staged puts and deletes commit in the settlement that commits what the runner returns
        (`Continue`, `Succeed`, `Fail` or `Cancel`), atomically with it, and only then: not
        when the runner raises (the attempt fails; a retry stages its own), not when an
        external cancellation overrides the outcome, not when the delivery's claim was lost.
        A step may commit more than once (at-least-once delivery): stage absolute values. The
        last value staged for a key wins. Read KV through the queue (``queue.kv_get``).

        Raises:
            ReservedKvKey: ``key`` starts with ``workflow/`` (the runtime's records).
            ConflictingKvEffect: this attempt staged the deletion of ``key``.
            taquba.KvValueTooLarge: ``value`` is longer than `taquba.MAX_KV_VALUE_SIZE`.
            EffectsSealed: the step has returned already.
            taquba.UsageError: ``key`` or ``value`` is not bytes.
        """
        self._kv.put(key, value)

    def kv_delete(self, key: bytes) -> None:
        """Stage the deletion of the application KV entry ``key`` (see `kv_put`).

        Raises:
            ReservedKvKey: ``key`` starts with ``workflow/`` (the runtime's records).
            ConflictingKvEffect: this attempt staged a write of ``key``.
            EffectsSealed: the step has returned already.
            taquba.UsageError: ``key`` is not bytes.
        """
        self._kv.delete(key)

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


def step_kv(step: Step[Any]) -> KvStaging:
    """The step's staged KV effects (runtime-internal)."""
    return step._kv  # pyright: ignore[reportPrivateUsage]
