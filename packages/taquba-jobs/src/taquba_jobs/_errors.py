"""The taquba-jobs error tree.

Every error taquba-jobs raises on purpose derives from `JobsError`::

    JobsError
    ├── ConfigurationError      a job, a runner option or a call is invalid (never retry)
    ├── UnknownJob              the runner has no job registered under this name
    ├── InputMismatch           an idempotency key is reused for another job or input
    ├── ResultNotFound          no result under this id, and no job (or it ended without one)
    ├── JobFailed               the job ran and failed (its error type, message, permanence)
    └── JobCancelled            the job was cancelled (jobs may also raise it to stop)

`JobFailed` and `JobCancelled` are outcomes: `JobHandle.result` raises them in the caller for a
job that did not produce a value. Errors of the queue itself (`taquba.StorageUnavailable`,
`taquba.Fenced`, `taquba.QueueClosed`, ...) and of its payload codec (`taquba.TypeMismatch`,
`taquba.SerializationError`: a value that does not fit its type) are not wrapped: they reach
the caller as the
`taquba` errors they are, so their `transient` property still says whether to retry.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "InputMismatch",
    "JobCancelled",
    "JobFailed",
    "JobsError",
    "ResultNotFound",
    "UnknownJob",
]


class JobsError(Exception):
    """Base class of every error taquba-jobs raises."""


class ConfigurationError(JobsError, ValueError):
    """A job definition, a runner option or the arguments of a call are invalid.

    Raised at definition or call time, never for stored data: fix the code, do not retry.
    """


class UnknownJob(JobsError, LookupError):
    """No job with this name is registered with the runner."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no job named {name!r} is registered with this runner")
        self.name = name
        """The job name that was looked up."""


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

        Failures that are not exceptions of the job function have names of their own:
        ``"taquba_jobs.UnknownJob"`` (no such job registered), ``"taquba_jobs.TypeMismatch"``
        (the input or output did not match the declared type), ``"taquba_jobs.WorkerStopped"``
        (the worker shut down during the last attempt), and ``"taquba.DeadLettered"`` (the
        queue dead-lettered the job without a recorded outcome, e.g. a lease that expired on
        the last attempt; ``message`` is the queue's reason).
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
