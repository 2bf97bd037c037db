"""taquba: a durable task queue whose only state lives in object storage, through SlateDB.

Open a queue database on a `Store` (memory, local disk or S3) with `open_queue`, enqueue jobs,
and serve them with a `Worker`, or claim and settle them by hand.
Delivery is at-least-once: a job whose handler crashes, times out its lease, or whose process
dies is delivered again. Everything is trio-native.

    async with taquba.open_queue("file:///var/lib/app/queue") as queue:
        await queue.enqueue("emails", b"...")
        worker = taquba.Worker(queue, "emails", send_email, concurrency=16)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)  # until worker.shutdown(), or cancellation
"""

from importlib.metadata import version as _version

from ._clock import Clock as Clock
from ._clock import MockClock as MockClock
from ._clock import SystemClock as SystemClock
from ._codec import Codec as Codec
from ._config import QueueConfig as QueueConfig
from ._config import backoff_delay as backoff_delay
from ._errors import ClaimLost as ClaimLost
from ._errors import ConflictError as ConflictError
from ._errors import DatabaseNotFound as DatabaseNotFound
from ._errors import DataError as DataError
from ._errors import DuplicateJobId as DuplicateJobId
from ._errors import Fenced as Fenced
from ._errors import InvalidArgument as InvalidArgument
from ._errors import InvalidId as InvalidId
from ._errors import InvalidQueueName as InvalidQueueName
from ._errors import InvalidState as InvalidState
from ._errors import InvalidStoreUrl as InvalidStoreUrl
from ._errors import JobNotFound as JobNotFound
from ._errors import KvConflict as KvConflict
from ._errors import KvValueTooLarge as KvValueTooLarge
from ._errors import PayloadMissing as PayloadMissing
from ._errors import PermanentFailure as PermanentFailure
from ._errors import QueueClosed as QueueClosed
from ._errors import RetryLater as RetryLater
from ._errors import SerializationError as SerializationError
from ._errors import StorageError as StorageError
from ._errors import StorageFatal as StorageFatal
from ._errors import StorageMisconfigured as StorageMisconfigured
from ._errors import StorageUnavailable as StorageUnavailable
from ._errors import TaqubaError as TaqubaError
from ._errors import TypeMismatch as TypeMismatch
from ._errors import UnsupportedType as UnsupportedType
from ._errors import UsageError as UsageError
from ._fixup import fixup_module_metadata as fixup_module_metadata
from ._health import QueueHealth as QueueHealth
from ._ids import MAX_ID_LENGTH as MAX_ID_LENGTH
from ._ids import validate_job_id as validate_job_id
from ._keys import MAX_QUEUE_NAME_BYTES as MAX_QUEUE_NAME_BYTES
from ._keys import validate_queue_name as validate_queue_name
from ._lease import CancelToken as CancelToken
from ._observe import Observer as Observer
from ._observe import SettleOutcome as SettleOutcome
from ._observe import count_event as count_event
from ._owner import OwnerInfo as OwnerInfo
from ._protocol import BlobStore as BlobStore
from ._protocol import QueueLike as QueueLike
from ._quarantine import QuarantinedRecord as QuarantinedRecord
from ._queue import MAX_KV_VALUE_SIZE as MAX_KV_VALUE_SIZE
from ._queue import Queue as Queue
from ._queue import open_queue as open_queue
from ._reader import QueueReader as QueueReader
from ._reader import open_reader as open_reader
from ._records import MAX_PRIORITY as MAX_PRIORITY
from ._records import PRIORITY_HIGH as PRIORITY_HIGH
from ._records import PRIORITY_LOW as PRIORITY_LOW
from ._records import PRIORITY_NORMAL as PRIORITY_NORMAL
from ._records import AttemptOutcome as AttemptOutcome
from ._records import JobAttempt as JobAttempt
from ._records import JobRecord as JobRecord
from ._records import JobStatus as JobStatus
from ._records import QueueStats as QueueStats
from ._store import Store as Store
from ._types import CancelOutcome as CancelOutcome
from ._types import Claim as Claim
from ._types import Effects as Effects
from ._types import EnqueueRequest as EnqueueRequest
from ._types import EnqueueResult as EnqueueResult
from ._types import JobPage as JobPage
from ._types import KvPage as KvPage
from ._types import NackResult as NackResult
from ._types import PayloadCollection as PayloadCollection
from ._types import WakeOutcome as WakeOutcome
from ._validate import MAX_TIMESTAMP_MS as MAX_TIMESTAMP_MS
from ._worker import SETTLEMENT_MARGIN as SETTLEMENT_MARGIN
from ._worker import Handler as Handler
from ._worker import HandlerFunction as HandlerFunction
from ._worker import JobHandler as JobHandler
from ._worker import LeaseHandle as LeaseHandle
from ._worker import Worker as Worker

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_KV_VALUE_SIZE",
    "MAX_PRIORITY",
    "MAX_QUEUE_NAME_BYTES",
    "MAX_TIMESTAMP_MS",
    "PRIORITY_HIGH",
    "PRIORITY_LOW",
    "PRIORITY_NORMAL",
    "SETTLEMENT_MARGIN",
    "AttemptOutcome",
    "BlobStore",
    "CancelOutcome",
    "CancelToken",
    "Claim",
    "ClaimLost",
    "Clock",
    "Codec",
    "ConflictError",
    "DataError",
    "DatabaseNotFound",
    "DuplicateJobId",
    "Effects",
    "EnqueueRequest",
    "EnqueueResult",
    "Fenced",
    "Handler",
    "HandlerFunction",
    "InvalidArgument",
    "InvalidId",
    "InvalidQueueName",
    "InvalidState",
    "InvalidStoreUrl",
    "JobAttempt",
    "JobHandler",
    "JobNotFound",
    "JobPage",
    "JobRecord",
    "JobStatus",
    "KvConflict",
    "KvPage",
    "KvValueTooLarge",
    "LeaseHandle",
    "MockClock",
    "NackResult",
    "Observer",
    "OwnerInfo",
    "PayloadCollection",
    "PayloadMissing",
    "PermanentFailure",
    "QuarantinedRecord",
    "Queue",
    "QueueClosed",
    "QueueConfig",
    "QueueHealth",
    "QueueLike",
    "QueueReader",
    "QueueStats",
    "RetryLater",
    "SerializationError",
    "SettleOutcome",
    "StorageError",
    "StorageFatal",
    "StorageMisconfigured",
    "StorageUnavailable",
    "Store",
    "SystemClock",
    "TaqubaError",
    "TypeMismatch",
    "UnsupportedType",
    "UsageError",
    "WakeOutcome",
    "Worker",
    "__version__",
    "backoff_delay",
    "count_event",
    "fixup_module_metadata",
    "open_queue",
    "open_reader",
    "validate_job_id",
    "validate_queue_name",
]

__version__: str = _version("taquba")
"""The installed version of the `taquba` distribution."""

fixup_module_metadata(__name__, globals())
