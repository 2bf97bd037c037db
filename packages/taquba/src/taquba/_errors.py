"""The taquba error tree.

Every error taquba raises on purpose derives from `TaqubaError`. The tree separates "you
misused it", "it was taken from you" and "the world broke", so callers can decide what to
retry without reading messages::

    TaqubaError
    ├── UsageError                  the caller passed something invalid (never retry)
    │   ├── InvalidArgument         a number, time or object of the wrong type or out of range
    │   ├── InvalidId               a job id override outside [A-Za-z0-9_-]{1,128}
    │   ├── InvalidQueueName        empty, too long, or with a control character
    │   ├── InvalidStoreUrl         a store URL taquba cannot use
    │   ├── DatabaseNotFound        a read-only open of a database that does not exist
    │   ├── KvValueTooLarge         a user KV value above MAX_KV_VALUE_SIZE
    │   ├── UnsupportedType         a payload type `Codec` cannot serialize
    │   └── InvalidState            a real misuse: e.g. requeueing a job that is not dead
    ├── ConflictError               the request conflicts with what is stored
    │   ├── DuplicateJobId          an id override that names an existing job
    │   ├── JobNotFound             the job (or its dead record) no longer exists
    │   ├── KvConflict              a user KV precondition did not hold
    │   └── ClaimLost               the claim is gone: reaped, settled, or a stale copy
    ├── DataError                   a stored record taquba cannot decode (never retry)
    ├── SerializationError          a payload value cannot be encoded or decoded by `Codec`
    │   └── TypeMismatch            the value does not fit the declared type (with its path)
    └── StorageError                the storage layer failed
        ├── StorageUnavailable      transient: the object store did not answer (retry later)
        ├── StorageMisconfigured    the store refused us for good: no bucket, bad credentials,
        │                           a path that is a file (fix the configuration; never retry)
        ├── Fenced                  another process opened the store as writer; stop
        ├── QueueClosed             the queue (or its database) was closed
        ├── StorageFatal            the database is broken in this process; reopen it
        └── PayloadMissing          a job's offloaded payload object is gone (removed outside
                                    taquba; transient only when a reader saw it)

`PermanentFailure` and `RetryLater` are not errors taquba raises: handlers raise them to
dead-letter a job at once, or to retry it no sooner than a given delay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._types import Effects

__all__ = [
    "ClaimLost",
    "ConflictError",
    "DataError",
    "DatabaseNotFound",
    "DuplicateJobId",
    "Fenced",
    "InvalidArgument",
    "InvalidId",
    "InvalidQueueName",
    "InvalidState",
    "InvalidStoreUrl",
    "JobNotFound",
    "KvConflict",
    "KvValueTooLarge",
    "PayloadMissing",
    "PermanentFailure",
    "QueueClosed",
    "RetryLater",
    "SerializationError",
    "StorageError",
    "StorageFatal",
    "StorageMisconfigured",
    "StorageUnavailable",
    "TaqubaError",
    "TypeMismatch",
    "UnsupportedType",
    "UsageError",
]


class TaqubaError(Exception):
    """Base class of every error taquba raises."""

    @property
    def transient(self) -> bool:
        """Whether retrying the same call later may succeed."""
        return False


class UsageError(TaqubaError, ValueError):
    """The caller passed an invalid argument or used the API out of order."""


class InvalidArgument(UsageError):
    """An argument has the wrong type, or a value outside what taquba can store.

    Raised for NaN, a refused infinity, a negative duration, a number where an int is needed
    (``bool`` counts as wrong), an int out of range, or an object of the wrong type (e.g. bytes
    where an `EnqueueRequest` is expected). The message starts with the argument's name.
    Being a `UsageError`, it is also a `ValueError`.
    """

    def __init__(self, argument: str, value: object, reason: str) -> None:
        super().__init__(f"{argument} {reason}, not {_show(value)}")
        self.argument = argument
        """The name of the rejected argument (or field), e.g. ``"delay"``."""
        self.value = value
        """The rejected value, as given."""
        self.reason = reason
        """What the argument must be."""


def _show(value: object) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


class InvalidId(UsageError):
    """A caller-supplied job id is not 1 to 128 characters of ``[A-Za-z0-9_-]``."""

    def __init__(self, job_id: object, reason: str) -> None:
        super().__init__(f"invalid job id {job_id!r}: {reason}")
        self.job_id = job_id
        """The rejected id, as given."""
        self.reason = reason
        """Why it was rejected."""


class InvalidQueueName(UsageError):
    """A queue name is empty, longer than 255 UTF-8 bytes, or holds a control character."""

    def __init__(self, queue_name: object, reason: str) -> None:
        super().__init__(f"invalid queue name {queue_name!r}: {reason}")
        self.queue_name = queue_name
        """The rejected name, as given."""
        self.reason = reason
        """Why it was rejected."""


class InvalidStoreUrl(UsageError):
    """A store URL has a scheme or shape taquba cannot use."""


class DatabaseNotFound(UsageError):
    """`open_reader` found no queue database of that name in the store.

    A writer (`open_queue`) creates the database; a reader never does.
    """

    def __init__(self, name: str, store_url: str) -> None:
        super().__init__(f"no queue database {name!r} in {store_url}")
        self.name = name
        """The database name that was looked for."""
        self.store_url = store_url
        """The store's URL."""


class KvValueTooLarge(UsageError):
    """A user KV value is larger than `MAX_KV_VALUE_SIZE`."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"KV value of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        """The size of the rejected value in bytes."""
        self.limit = limit
        """The limit in bytes."""


class InvalidState(UsageError):
    """An operation was applied to a job in a state it does not accept.

    Raised for genuine misuse only, e.g. `Queue.requeue_dead_job` on a job that is not dead.
    A claim that was taken away raises `ClaimLost` instead.
    """


class ConflictError(TaqubaError):
    """The request conflicts with the stored state of the queue."""


class DuplicateJobId(ConflictError):
    """An id override names a job that already exists; nothing was written."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"a job with id {job_id!r} already exists")
        self.job_id = job_id
        """The id that is already taken."""


class JobNotFound(ConflictError):
    """The job, or the record the operation needs, no longer exists."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} not found")
        self.job_id = job_id
        """The id that was looked up."""


class KvConflict(ConflictError):
    """A user KV precondition (``kv_expect``) did not hold; nothing was written."""

    def __init__(self, key: bytes) -> None:
        super().__init__(f"user KV entry {key!r} does not hold the expected value")
        self.key = key
        """The first key whose value differed from the expectation."""


class ClaimLost(ConflictError):
    """The claim being settled or renewed no longer exists.

    Its lease expired and the reaper requeued the job, it was already settled, or it belongs
    to a queue that has been closed and reopened. Nothing was written; a later delivery of the
    job settles it.
    """

    def __init__(self, job_id: str, reason: str = "the claim is no longer held") -> None:
        super().__init__(f"claim on job {job_id!r} lost: {reason}")
        self.job_id = job_id
        """The job whose claim was lost."""


class DataError(TaqubaError):
    """A stored record could not be decoded (corruption or an incompatible format)."""


class UnsupportedType(UsageError, TypeError):
    """A payload type cannot be serialized by `Codec` (raised when the codec is built)."""


class SerializationError(TaqubaError):
    """A payload value could not be encoded to, or decoded from, MessagePack."""


class TypeMismatch(SerializationError, TypeError):
    """A value does not match the type declared for it.

    Raised on the way in for a value of the wrong shape (nothing is stored), and on the way
    out when stored bytes no longer decode into the declared type (for example after the type
    changed incompatibly).
    """

    def __init__(self, path: str, expected: str, got: str) -> None:
        super().__init__(f"{path}: expected {expected}, got {got}")
        self.path = path
        """Where in the value the mismatch is, e.g. ``input.items[2].name``."""
        self.expected = expected
        """The type that was expected there."""
        self.got = got
        """What was found instead."""


class StorageError(TaqubaError):
    """The storage layer (SlateDB or the object store) failed."""


class StorageUnavailable(StorageError):
    """The object store did not answer or refused the request; retrying later may work."""

    @property
    def transient(self) -> bool:
        """Always true: an outage or throttling may pass."""
        return True


class StorageMisconfigured(StorageError):
    """The store answered, and refused: retrying will not help until its setup is fixed.

    Raised when an S3 bucket does not exist, no credentials were found or the store rejected
    them (or they lack permission), or a local store path is a file or not writable. The
    message says which, and what to change. An S3 endpoint that does not answer at all is
    `StorageUnavailable` instead: a server that is down may come back.
    """


class Fenced(StorageError):
    """Another process opened the same store as writer; this queue can no longer write.

    Every loop of the queue stops with this error. Writes that were acknowledged as durable
    before it are safe; a write that raised it may or may not have landed.
    """


class QueueClosed(StorageError):
    """The queue, or the database under it, has been closed."""


class StorageFatal(StorageError):
    """The database failed in a way this process cannot recover from; reopen the store."""


class PayloadMissing(StorageError):
    """A job's record references an offloaded payload object that does not exist.

    Raised by claims (which dead-letter the job instead of delivering it), `Queue.get_job` and
    the listings, only after reading the record again: a job removed meanwhile reads as absent,
    not as this error. The object was deleted outside taquba (or lost by the store); remove the
    job (`Queue.cancel`, `Queue.purge`) or restore the object. Through a `QueueReader`, which
    sees the writer's state a little late, it may be a job just removed: ``transient`` is then
    true.
    """

    def __init__(self, job_id: str, payload_ref: str, *, transient: bool = False) -> None:
        super().__init__(f"the payload object {payload_ref!r} of job {job_id!r} is missing")
        self.job_id = job_id
        """The job whose payload is missing."""
        self.payload_ref = payload_ref
        """The missing object's name (`JobRecord.payload_ref`)."""
        self._transient = transient

    @property
    def transient(self) -> bool:
        """Whether the record may have been removed meanwhile (seen through a reader)."""
        return self._transient


class PermanentFailure(Exception):
    """Raised by a job handler to dead-letter the job at once instead of retrying it.

    ``effects`` (an `Effects`) commit atomically with the dead-letter, e.g. to record why.
    """

    def __init__(self, reason: str, *, effects: Effects | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        """The reason recorded as the job's ``last_error``."""
        self.effects = effects
        """Effects to apply with the dead-letter, or None."""


class RetryLater(Exception):
    """Raised by a job handler to retry the job no sooner than ``retry_after`` seconds.

    The job is nacked as for any failure (it dead-letters once attempts run out), waiting
    ``max(queue backoff, retry_after)`` before the next attempt. ``retry_after`` is checked
    here, so a bad value fails where it is written: NaN, infinity, a negative number or a
    non-number raises `InvalidArgument` (and a handler that raises that is nacked like any
    failing handler). A finite delay past the latest storable time (`MAX_TIMESTAMP_MS`,
    the end of year 9999) is clamped to it.

    ``kv_writes`` are user KV entries written in the nack's own transaction: they commit
    exactly when the retry is recorded, and not at all when the nack fails (a lost claim, a
    storage error). A handler keeps progress for its next attempt this way. They are checked
    here like `Queue.nack`'s (`UsageError`, `KvValueTooLarge`).
    """

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float,
        kv_writes: Mapping[bytes, bytes] | None = None,
    ) -> None:
        from ._kv import check_kv_writes  # here: _kv and _validate import this module
        from ._validate import check_seconds

        super().__init__(reason)
        self.reason = reason
        """The reason recorded as the job's ``last_error``."""
        self.retry_after = check_seconds("retry_after", retry_after)
        """The least delay before the next attempt, in seconds."""
        self.kv_writes: Mapping[bytes, bytes] = check_kv_writes(kv_writes or {})
        """User KV entries written atomically with the nack (empty: none)."""
