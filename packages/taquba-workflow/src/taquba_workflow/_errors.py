"""The taquba-workflow error tree.

Every error taquba-workflow raises on purpose derives from `WorkflowError`, itself a
`taquba.TaqubaError`, so ``except taquba.TaqubaError`` catches the whole family::

    taquba.TaqubaError
    ├── taquba.UsageError           a misuse: a bad argument, a call out of order (never retry)
    │   ├── InvalidRunId            a run id outside [A-Za-z0-9_-]{1,128}  (also a WorkflowError)
    │   ├── ReservedHeader          a run header in the reserved ``workflow.`` namespace  (idem)
    │   ├── ReservedKvKey           a staged KV key in the reserved ``workflow/`` space  (idem)
    │   ├── ConflictingKvEffect     a KV key both written and deleted by one step  (idem)
    │   ├── EffectsSealed           KV effects staged after they were taken  (idem)
    │   └── UnserializableInput     a memo content key whose input cannot be encoded  (idem)
    └── WorkflowError
        ├── InvalidRunId, ReservedHeader, ReservedKvKey, ConflictingKvEffect, EffectsSealed,
        │   UnserializableInput     (see above)
        ├── InputMismatch               the run id is known with a different input
        ├── RunNotRetryable             retry of a run that is not failed or cancelled
        ├── WorkflowDataError           a stored workflow record cannot be decoded (also a
        │                               taquba.DataError)
        └── StepError                   raised by step runners to classify a failure
            ├── TransientStepError      retry the step with the queue's backoff
            └── PermanentStepError      fail the run now

Any other misuse (a bad option, `Runtime.sweep_now` without retention, a second concurrent
`Runtime.serve`) raises `taquba.UsageError` itself. Errors of the queue and the store
(`taquba.StorageUnavailable`, `taquba.Fenced`, ...) are not wrapped: they reach the caller as
the `taquba` errors they are (a staged KV value above `taquba.MAX_KV_VALUE_SIZE` raises
`taquba.KvValueTooLarge`), and so are the payload codec's (`taquba.UnsupportedType` when a
payload type cannot be stored, `taquba.TypeMismatch` when a value does not fit its type).
"""

from __future__ import annotations

from taquba import DataError, TaqubaError, UsageError

__all__ = [
    "ConflictingKvEffect",
    "EffectsSealed",
    "InputMismatch",
    "InvalidRunId",
    "PermanentStepError",
    "ReservedHeader",
    "ReservedKvKey",
    "RunNotRetryable",
    "StepError",
    "TransientStepError",
    "UnserializableInput",
    "WorkflowDataError",
    "WorkflowError",
]


class WorkflowError(TaqubaError):
    """Base class of every error specific to taquba-workflow (a `taquba.TaqubaError`)."""


class InvalidRunId(WorkflowError, UsageError):
    """A run id is not 1 to 128 characters of ``[A-Za-z0-9_-]``.

    Run ids become object-path segments and KV key segments, so an empty or path-like id could
    alias the memo prefix itself (and a retention sweep would then delete every run's memos).
    """

    def __init__(self, run_id: object, reason: str) -> None:
        super().__init__(f"invalid run id {run_id!r}: {reason}")
        self.run_id = run_id
        """The rejected id, as given."""
        self.reason = reason
        """Why it was rejected."""


class ReservedHeader(WorkflowError, UsageError):
    """A run header name starts with the reserved ``workflow.`` prefix."""

    def __init__(self, name: str) -> None:
        super().__init__(f"header {name!r} is in the reserved 'workflow.' namespace")
        self.name = name
        """The rejected header name."""


class ReservedKvKey(WorkflowError, UsageError):
    """A KV key to write or delete starts with the runtime's reserved ``workflow/`` prefix.

    Raised when a `RunSpec.kv_writes` key, a key staged with `Step.kv_put` / `Step.kv_delete`,
    or one staged on `TerminalEffects` lies in the runtime's own key space.
    """

    def __init__(self, key: bytes) -> None:
        super().__init__(f"KV key {key!r} is in the reserved 'workflow/' space")
        self.key = key
        """The rejected key."""


class ConflictingKvEffect(WorkflowError, UsageError):
    """One step (or terminal hook) staged both a write and a delete of the same KV key."""

    def __init__(self, key: bytes) -> None:
        super().__init__(f"KV key {key!r} is both written and deleted by the same effects")
        self.key = key
        """The key staged both ways."""


class EffectsSealed(WorkflowError, UsageError):
    """KV effects were staged after the runtime took them (the step or hook had returned)."""


class UnserializableInput(WorkflowError, UsageError, TypeError):
    """`Memo.content_get` / `Memo.content_put` got an input MessagePack cannot serialize."""


class InputMismatch(WorkflowError):
    """A run with this id exists (active or ended) and was submitted with a different input.

    Resubmitting a known run id with the same input is a no-op
    (`RunHandle.newly_submitted` is false); with a different input it raises this, also
    across process restarts (the check reads the durable run record or outcome).
    """

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} exists with a different input")
        self.run_id = run_id
        """The run id."""


class RunNotRetryable(WorkflowError):
    """`Runtime.retry` was asked to retry a run it cannot retry.

    Only a run that ended failed or cancelled, and whose final step was recorded, can be
    retried; an unknown run, a succeeded one, or one that ended before the runtime recorded
    where runs stop (taquba-workflow 0.6) cannot.
    """

    def __init__(self, run_id: str, reason: str) -> None:
        super().__init__(f"run {run_id!r} cannot be retried: {reason}")
        self.run_id = run_id
        """The run id."""
        self.reason = reason
        """Why it cannot be retried."""


class WorkflowDataError(WorkflowError, DataError):
    """A stored workflow record (run record, outcome, replay entry) cannot be decoded.

    Also a `taquba.DataError`, the family's error for stored records that do not decode.
    """


class StepError(WorkflowError):
    """Raised by a step runner to say how a failed step should be treated.

    Raise `TransientStepError` or `PermanentStepError`; any other exception a runner raises is
    treated as transient.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        """The error text, reported as the run's ``error`` when the run fails."""


class TransientStepError(StepError):
    """The step may succeed later: it is retried with the queue's backoff.

    With ``retry_after`` (seconds), the retry waits at least that long (e.g. a rate limit's
    ``Retry-After``). When the step's attempts are exhausted, the run fails with this error's
    message.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        if retry_after is not None and not (0 <= retry_after < float("inf")):
            raise UsageError("retry_after must be a finite, non-negative number")
        self.retry_after = retry_after
        """The least delay before the retry, in seconds (None: the queue's backoff)."""

    @property
    def transient(self) -> bool:
        """True: the step may succeed when retried."""
        return True


class PermanentStepError(StepError):
    """The step cannot succeed: the run fails now, with this error's message."""
