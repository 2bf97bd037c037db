"""The taquba-jobs error tree.

Every error taquba-jobs raises on purpose derives from `JobsError`, itself a
`taquba.TaqubaError`, so ``except taquba.TaqubaError`` catches everything the stack raises::

    taquba.TaqubaError
    ├── taquba.UsageError           a misuse: a bad job definition, runner option or argument
    │   ├── taquba.InvalidArgument  one argument of the wrong type or out of range
    │   │   ├── ReservedHeader      (also a JobsError) a submitted header the runner owns
    │   │   └── StateTooLarge       (also a JobsError) staged per-job state over the limit
    │   ├── taquba.UnsupportedType  an input or output type the codec cannot store
    │   └── UnknownJob              (also a JobsError) the runner has no job of this name
    └── JobsError
        ├── UnknownJob
        ├── ReservedHeader
        ├── StateTooLarge
        ├── InputMismatch           an idempotency key is reused for another job or input
        ├── ResultNotFound          no result under this id, and no job (or it ended without one)
        ├── JobFailed               the job ran and failed (its error type, message, permanence)
        └── JobCancelled            the job was cancelled (jobs may also raise it to stop)

`JobFailed` and `JobCancelled` are how a job ended: `JobHandle.result` raises them in the
caller for a job that did not produce a value. A misuse raises `taquba.UsageError` (or the
subclass named above); the three of taquba-jobs' own (`UnknownJob`, `ReservedHeader`,
`StateTooLarge`) are also `JobsError`s. Errors of the queue itself
(`taquba.StorageUnavailable`, `taquba.Fenced`, `taquba.QueueClosed`, ...), of its payload codec
(`taquba.TypeMismatch`, `taquba.SerializationError`: a value that does not fit its type) and
of records it cannot read (`taquba.DataError`: a stored result or idempotency record that does
not decode) are not wrapped: they reach the caller as the `taquba` errors they are, so their
`transient` property still says whether to retry.
"""

from __future__ import annotations

from taquba import InvalidArgument, TaqubaError, UsageError

__all__ = [
    "InputMismatch",
    "JobCancelled",
    "JobFailed",
    "JobsError",
    "ReservedHeader",
    "ResultNotFound",
    "StateTooLarge",
    "UnknownJob",
]


class JobsError(TaqubaError):
    """Base class of every error taquba-jobs raises on purpose (a `taquba.TaqubaError`)."""


class UnknownJob(JobsError, UsageError):
    """`JobRunner.submit` was given a job that is not registered with the runner.

    A misuse, so it is also a `taquba.UsageError` (and a `ValueError`). A submitted job whose
    name no runner knows when it runs is not raised but recorded: it fails with
    ``error_type="taquba_jobs.UnknownJob"``.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"no job named {name!r} is registered with this runner")
        self.name = name
        """The job name that was looked up."""


class ReservedHeader(JobsError, InvalidArgument):
    """A submission set a job header the runner reserves for itself.

    Header names starting with ``taquba_jobs.`` (`RESERVED_HEADER_PREFIX`) carry the job's
    name, idempotency key, payload format and time limit; nothing was enqueued. A misuse, so
    also a `taquba.InvalidArgument` (``argument="headers"``).
    """

    def __init__(self, header: str) -> None:
        super().__init__(
            "headers", header, "must not use names starting with 'taquba_jobs.' (reserved)"
        )
        self.header = header
        """The reserved header name that was given."""


class StateTooLarge(JobsError, InvalidArgument):
    """`JobContext.stage_state` was given a value that encodes to more than `MAX_STATE_SIZE`.

    Nothing was staged (an earlier staged value, if any, stands). Keep large data in blobs and
    put its path in the state. A misuse, so also a `taquba.InvalidArgument`
    (``argument="value"``).
    """

    def __init__(self, value: object, size: int, limit: int) -> None:
        super().__init__(
            "value", value, f"must encode to at most {limit} bytes of job state (it is {size})"
        )
        self.size = size
        """The encoded size of the refused value, in bytes."""
        self.limit = limit
        """The limit, in bytes (`MAX_STATE_SIZE`)."""


class InputMismatch(JobsError):
    """An idempotency key was reused with a different job or a different input.

    The key still refers to the job submitted first; nothing was enqueued. This holds across
    restarts: the record binding the key to its job and input is durable.
    """

    def __init__(self, key: str, job_id: str) -> None:
        super().__init__(
            f"idempotency key {key!r} already names job {job_id} with a different job or input"
        )
        self.key = key
        """The idempotency key."""
        self.job_id = job_id
        """The job the key is bound to."""


class ResultNotFound(JobsError, LookupError):
    """No result is stored under this job id, and the job does not exist or ended without one.

    The id was never submitted on this queue, the result was removed by the result-retention
    sweep, or the job was cancelled with `taquba.Queue.cancel` instead of `JobRunner.cancel`
    (which records the cancellation). A handle waiting for a job that ends in one of the last
    two ways raises it too, with a message saying so, rather than waiting forever.
    """

    def __init__(self, job_id: str, message: str | None = None) -> None:
        super().__init__(message or f"no result and no job for id {job_id!r}")
        self.job_id = job_id
        """The job id that was looked up."""


class JobFailed(JobsError):
    """The job failed: its function raised, or it could not run at all.

    The job's own exception is not kept (it may not be picklable or even importable by the
    caller): its type name and message are, as recorded when the job became terminal.
    """

    def __init__(
        self, job_id: str, error_type: str, message: str, *, permanent: bool, attempts: int
    ) -> None:
        super().__init__(f"job {job_id} failed: {error_type}: {message}")
        self.job_id = job_id
        """The failed job's id."""
        self.error_type = error_type
        """The qualified name of the exception type, e.g. ``"builtins.ValueError"``.

        Failures that are not exceptions of the job function have stable names of their own
        (names of failure kinds, kept as earlier versions wrote them, not import paths):
        ``"taquba_jobs.UnknownJob"`` (no such job registered), ``"taquba_jobs.TypeMismatch"``
        (the input or output did not match the declared type: a `taquba.TypeMismatch`),
        ``"taquba_jobs.SerializationError"`` (any other input, output or job header that
        could not be encoded or read), ``"taquba_jobs.TimeLimitExceeded"`` (the last attempt
        ran past its time limit), ``"taquba_jobs.WorkerStopped"`` (the worker stopped during
        the last attempt), and ``"taquba.DeadLettered"`` (the queue dead-lettered the job
        without a recorded outcome, e.g. a lease that expired on the last attempt;
        ``message`` is the queue's reason).
        """
        self.message = message
        """The exception's message (``str(exc)``)."""
        self.permanent = permanent
        """True if the failure was permanent (no retry was attempted), False if the job ran
        out of attempts on transient failures."""
        self.attempts = attempts
        """How many attempts the job had when it failed."""


class JobCancelled(JobsError):
    """The job was cancelled.

    `JobHandle.result` raises it for a job cancelled with `JobRunner.cancel`. A job function
    may raise it (usually through `JobContext.raise_if_cancel_requested`) to stop early when
    its cancellation is requested.
    """

    def __init__(self, job_id: str, message: str = "the job was cancelled") -> None:
        super().__init__(f"job {job_id}: {message}")
        self.job_id = job_id
        """The cancelled job's id."""
        self.message = message
        """What the cancellation recorded."""
