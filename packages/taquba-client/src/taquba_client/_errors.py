"""The errors of `taquba_client`, rooted at `ClientError`.

```
ClientError                  anything this package raises on purpose
├── ServerUnavailable        connect error, 503 or timeout, after the retries (transient)
├── ServerError              a 5xx other than 503, or an undecodable response (a bug)
├── InvalidRequest           400, 413, 415: the request was refused as malformed
├── Unauthorized             401: no or unknown bearer token
├── Forbidden                403: the token lacks the endpoint's scope
├── NotFound                 404
│   └── JobNotFound          404 job_not_found
├── Conflict                 409
│   ├── DuplicateJobId       the job id exists with different content
│   ├── KvConflict           a ``kv_expect`` did not hold
│   └── InvalidState         e.g. requeue of a job that is not dead
├── ClaimLost                410: the server no longer holds the claim; drop the job
├── UsageError               a misuse found before anything was sent (bad argument, no URL)
└── WaitTimeout              `Client.wait_for_completion` ran out of time (also a TimeoutError)
```

`RetryLater` and `PermanentFailure` are not errors of the client: a worker's handler raises
them to choose how its job is settled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._types import Effects

__all__ = [
    "ClaimLost",
    "ClientError",
    "Conflict",
    "DuplicateJobId",
    "Forbidden",
    "InvalidRequest",
    "InvalidState",
    "JobNotFound",
    "KvConflict",
    "NotFound",
    "PermanentFailure",
    "RetryLater",
    "ServerError",
    "ServerUnavailable",
    "Unauthorized",
    "UsageError",
    "WaitTimeout",
]


class ClientError(Exception):
    """The base of every error `taquba_client` raises on purpose.

    Args:
        message: What went wrong, for people.
        code: The server's error code (``"claim_lost"``, ``"invalid_request"``, ...), or None
            when the error did not come from a server answer.
        status: The HTTP status, or None.
        field: For a refused request, the field the server named (``"jobs[3].priority"``).
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message: str = message
        """What went wrong."""
        self.code: str | None = code
        """The server's error code, if the server answered."""
        self.status: int | None = status
        """The HTTP status, if the server answered."""
        self.field: str | None = field
        """The offending field of a refused request, if the server named one."""

    @property
    def transient(self) -> bool:
        """Whether trying again later may succeed (true for `ServerUnavailable` only)."""
        return False


class ServerUnavailable(ClientError):
    """The server could not be reached, answered 503, or timed out, after the retries.

    Nothing is known to have been written, except after a timeout of a call that is not
    idempotent (see the method's docstring).
    """

    @property
    def transient(self) -> bool:
        """Always true: the server may be back later."""
        return True


class ServerError(ClientError):
    """The server answered with a 5xx other than 503, or with a body the client cannot read."""


class InvalidRequest(ClientError):
    """The server refused the request as malformed (400, 413 or 415); see `field`."""


class Unauthorized(ClientError):
    """401: the request carried no bearer token, or one the server does not know."""


class Forbidden(ClientError):
    """403: the token lacks the scope the endpoint needs (``produce``, ``work``, ``admin``)."""


class NotFound(ClientError):
    """404: the job or route does not exist."""


class JobNotFound(NotFound):
    """404 ``job_not_found``: no job has this id."""


class Conflict(ClientError):
    """409: the request conflicts with the queue's state; nothing was written."""


class DuplicateJobId(Conflict):
    """409 ``duplicate_job_id``: a job with this id exists with different content."""


class KvConflict(Conflict):
    """409 ``kv_conflict``: a ``kv_expect`` entry did not hold."""


class InvalidState(Conflict):
    """409 ``invalid_state``: the job is not in a state the call applies to."""


class ClaimLost(ClientError):
    """410 ``claim_lost``: the server no longer holds this claim.

    Its lease expired and the reaper requeued the job, the job was cancelled, or the server
    restarted. A worker must drop the job, not retry the settlement.
    """


class UsageError(ClientError):
    """A misuse found before anything was sent: a bad argument, no server URL, a closed client."""


class WaitTimeout(ClientError, TimeoutError):
    """`Client.wait_for_completion` reached its timeout before the job finished."""


class RetryLater(Exception):
    """Raise from a worker's handler to retry the job, no sooner than ``retry_after``.

    The job is nacked: it counts as an attempt and is dead-lettered after its last one.

    Args:
        reason: Stored as the job's ``last_error``.
        retry_after: The least delay before the retry, in seconds (None: the queue's backoff).
    """

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason: str = reason
        """Stored as the job's ``last_error``."""
        self.retry_after: float | None = retry_after
        """The least delay before the retry, in seconds."""


class PermanentFailure(Exception):
    """Raise from a worker's handler to dead-letter the job at once, without retries.

    Args:
        reason: Stored as the job's ``last_error``.
        effects: Writes applied with the dead-lettering (an `Effects`), or None.
    """

    def __init__(self, reason: str, *, effects: Effects | None = None) -> None:
        super().__init__(reason)
        self.reason: str = reason
        """Stored as the job's ``last_error``."""
        self.effects: Effects | None = effects
        """Writes applied with the dead-lettering."""
