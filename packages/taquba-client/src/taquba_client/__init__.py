"""taquba-client: a small HTTP client for a taquba server.

Enqueue jobs, await their results and run remote workers from synchronous code (`Client`,
`ThreadedWorker`) or from asyncio and trio alike (`AsyncClient`, `Worker`), over the server's
wire protocol v1 in MessagePack. It depends on httpx and anyio only: importing it never
imports taquba or SlateDB. ``taquba_client.remote`` (which does need taquba) runs the layers'
workers over a server.
"""

from importlib.metadata import version as _version

from ._client import AsyncClient as AsyncClient
from ._client import Client as Client
from ._errors import ClaimLost as ClaimLost
from ._errors import ClientError as ClientError
from ._errors import Conflict as Conflict
from ._errors import DuplicateJobId as DuplicateJobId
from ._errors import Forbidden as Forbidden
from ._errors import InvalidRequest as InvalidRequest
from ._errors import InvalidState as InvalidState
from ._errors import JobNotFound as JobNotFound
from ._errors import KvConflict as KvConflict
from ._errors import NotFound as NotFound
from ._errors import PermanentFailure as PermanentFailure
from ._errors import RetryLater as RetryLater
from ._errors import ServerError as ServerError
from ._errors import ServerUnavailable as ServerUnavailable
from ._errors import Unauthorized as Unauthorized
from ._errors import UsageError as UsageError
from ._errors import WaitTimeout as WaitTimeout
from ._fixup import fixup_module_metadata as _fixup_module_metadata
from ._retry import RetryPolicy as RetryPolicy
from ._threaded import SyncHandler as SyncHandler
from ._threaded import ThreadedWorker as ThreadedWorker
from ._threaded import ThreadLease as ThreadLease
from ._threaded import run_worker_threaded as run_worker_threaded
from ._types import Ack as Ack
from ._types import AttemptOutcome as AttemptOutcome
from ._types import CancelOutcome as CancelOutcome
from ._types import Claim as Claim
from ._types import DeadLetter as DeadLetter
from ._types import Effects as Effects
from ._types import EnqueueRequest as EnqueueRequest
from ._types import EnqueueResult as EnqueueResult
from ._types import Health as Health
from ._types import Job as Job
from ._types import JobAttempt as JobAttempt
from ._types import JobPage as JobPage
from ._types import JobStatus as JobStatus
from ._types import KvPage as KvPage
from ._types import Nack as Nack
from ._types import NackResult as NackResult
from ._types import QueueStats as QueueStats
from ._types import RenewResult as RenewResult
from ._types import ServerConfig as ServerConfig
from ._types import Settlement as Settlement
from ._types import SettleResult as SettleResult
from ._types import WakeOutcome as WakeOutcome
from ._worker import AsyncHandler as AsyncHandler
from ._worker import Lease as Lease
from ._worker import Worker as Worker
from ._worker import run_worker as run_worker

__version__: str = _version("taquba-client")
"""The installed version of the `taquba-client` distribution."""

__all__ = [
    "Ack",
    "AsyncClient",
    "AsyncHandler",
    "AttemptOutcome",
    "CancelOutcome",
    "Claim",
    "ClaimLost",
    "Client",
    "ClientError",
    "Conflict",
    "DeadLetter",
    "DuplicateJobId",
    "Effects",
    "EnqueueRequest",
    "EnqueueResult",
    "Forbidden",
    "Health",
    "InvalidRequest",
    "InvalidState",
    "Job",
    "JobAttempt",
    "JobNotFound",
    "JobPage",
    "JobStatus",
    "KvConflict",
    "KvPage",
    "Lease",
    "Nack",
    "NackResult",
    "NotFound",
    "PermanentFailure",
    "QueueStats",
    "RenewResult",
    "RetryLater",
    "RetryPolicy",
    "ServerConfig",
    "ServerError",
    "ServerUnavailable",
    "SettleResult",
    "Settlement",
    "SyncHandler",
    "ThreadLease",
    "ThreadedWorker",
    "Unauthorized",
    "UsageError",
    "WaitTimeout",
    "WakeOutcome",
    "Worker",
    "__version__",
    "run_worker",
    "run_worker_threaded",
]

_fixup_module_metadata(__name__, globals())
del _fixup_module_metadata
