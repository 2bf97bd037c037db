"""Typed async background functions with awaitable, idempotent results on a taquba queue.

Define a job as a typed async function, submit calls of it durably, and await the result,
which is kept in the store (so it survives restarts). Submissions with an idempotency key
run at most once per key and input, whatever the state of the first submission::

    @taquba_jobs.job(name="thumbnails.resize")
    async def resize(ctx: taquba_jobs.JobContext, request: Resize) -> Thumbnail: ...

    async with taquba.open_queue("file:///var/lib/app") as queue:
        runner = taquba_jobs.JobRunner(queue, [resize])
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.serve)
            handle = await runner.submit(resize, Resize(...), idempotency_key="img-42")
            thumbnail = await handle.result()
            runner.shutdown()

Inputs and outputs are the types `taquba.Codec` supports (dataclasses, TypedDicts, pydantic
models, enums, primitives and containers of those), stored as MessagePack; a value that does
not match the declared type is a `taquba.TypeMismatch` at submit (or when decoding). Results are
plain values and failures are exceptions (`JobFailed`, `JobCancelled`). Delivery is
at-least-once, like the queue's, but a job whose outcome was recorded is never run again.

Submissions carry string ``headers`` the function reads as `JobContext.headers`, and a job
can keep small state from one attempt to the next (`JobContext.load_state`,
`JobContext.stage_state`), stored before each retry and deleted with the job's settlement.

`list_results` and `read_result` read stored outcomes with the store alone, without a runner
or the job functions (for dashboards and scripts).

The runner follows the family's convention for long-running components: `JobRunner.serve`
reports readiness to ``nursery.start``, `JobRunner.shutdown` stops it gracefully (with
``shutdown_grace``), cancellation is the hard stop, and every error derives from
`taquba.TaqubaError` (misuse from `taquba.UsageError`).
"""

from importlib.metadata import version as _version

from taquba import fixup_module_metadata as _taquba_fixup

from ._errors import InputMismatch as InputMismatch
from ._errors import JobCancelled as JobCancelled
from ._errors import JobFailed as JobFailed
from ._errors import JobsError as JobsError
from ._errors import ReservedHeader as ReservedHeader
from ._errors import ResultNotFound as ResultNotFound
from ._errors import StateTooLarge as StateTooLarge
from ._errors import UnknownJob as UnknownJob
from ._job import Job as Job
from ._job import JobFunction as JobFunction
from ._job import job as job
from ._records import MAX_STATE_SIZE as MAX_STATE_SIZE
from ._records import RESERVED_HEADER_PREFIX as RESERVED_HEADER_PREFIX
from ._results import DEFAULT_RESULT_PREFIX as DEFAULT_RESULT_PREFIX
from ._results import ResultPage as ResultPage
from ._results import ResultSummary as ResultSummary
from ._results import StoredResult as StoredResult
from ._results import list_results as list_results
from ._results import read_result as read_result
from ._runner import JobContext as JobContext
from ._runner import JobHandle as JobHandle
from ._runner import JobRunner as JobRunner
from ._runner import RunnerStatistics as RunnerStatistics
from ._runner import SweepReport as SweepReport

__version__: str = _version("taquba-jobs")
"""The installed version of the `taquba-jobs` distribution."""

__all__ = [
    "DEFAULT_RESULT_PREFIX",
    "MAX_STATE_SIZE",
    "RESERVED_HEADER_PREFIX",
    "InputMismatch",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobFailed",
    "JobFunction",
    "JobHandle",
    "JobRunner",
    "JobsError",
    "ReservedHeader",
    "ResultNotFound",
    "ResultPage",
    "ResultSummary",
    "RunnerStatistics",
    "StateTooLarge",
    "StoredResult",
    "SweepReport",
    "UnknownJob",
    "__version__",
    "job",
    "list_results",
    "read_result",
]

_taquba_fixup(__name__, globals())
