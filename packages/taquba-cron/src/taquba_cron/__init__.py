"""taquba-cron: cron schedules that enqueue jobs onto a taquba queue, exactly once per fire time.

Declare named `Schedule`s (a cron expression in an IANA time zone, a target queue name, a
payload) and run them with a `Scheduler` in a trio nursery. Each fire time is enqueued exactly once,
across restarts and with several scheduler instances racing, through a durable per-schedule
watermark in the queue's user KV committed atomically with each enqueue. Firings missed while
no scheduler ran are skipped, coalesced into one job, or backfilled (`Missed`); a firing due
while the previous job is unfinished is enqueued, skipped or buffered (`Overlap`). Time comes
from the queue's clock, so a `taquba.MockClock` drives schedules in tests.

    schedules = [Schedule("nightly", "30 2 * * *", "reports", tz="Europe/London")]
    async with taquba.open_queue(store) as queue, trio.open_nursery() as nursery:
        scheduler = Scheduler(queue, schedules)
        await nursery.start(scheduler.serve)
        ...
        scheduler.shutdown()

Every error it raises on purpose is a `CronError`, itself a `taquba.TaqubaError`.
"""

from importlib.metadata import version as _version

from taquba import fixup_module_metadata as _taquba_fixup

from ._errors import CorruptState as CorruptState
from ._errors import CronError as CronError
from ._errors import DuplicateName as DuplicateName
from ._errors import InvalidCronExpression as InvalidCronExpression
from ._errors import InvalidSchedule as InvalidSchedule
from ._errors import PayloadError as PayloadError
from ._errors import UnknownSchedule as UnknownSchedule
from ._errors import UnknownTimeZone as UnknownTimeZone
from ._policy import Missed as Missed
from ._policy import Overlap as Overlap
from ._schedule import HEADER_PREFIX as HEADER_PREFIX
from ._schedule import MAX_NAME_LENGTH as MAX_NAME_LENGTH
from ._schedule import Schedule as Schedule
from ._scheduler import STATE_KEY_PREFIX as STATE_KEY_PREFIX
from ._scheduler import Scheduler as Scheduler
from ._scheduler import ScheduleStatus as ScheduleStatus

__version__: str = _version("taquba-cron")
"""The installed version of the `taquba-cron` distribution."""

# The order of the reference page: the main types, then constants, then the errors.
__all__ = [  # noqa: RUF022 - grouped by topic, not sorted
    "Schedule",
    "Scheduler",
    "Missed",
    "Overlap",
    "ScheduleStatus",
    "HEADER_PREFIX",
    "MAX_NAME_LENGTH",
    "STATE_KEY_PREFIX",
    "CronError",
    "InvalidSchedule",
    "InvalidCronExpression",
    "UnknownTimeZone",
    "DuplicateName",
    "UnknownSchedule",
    "PayloadError",
    "CorruptState",
    "__version__",
]

_taquba_fixup(__name__, globals())
