"""The taquba-cron error tree.

Every error taquba-cron raises on purpose derives from `CronError`::

    CronError
    ├── InvalidSchedule             a schedule definition is rejected (never retry)
    │   ├── InvalidCronExpression   the cron expression does not parse, or never fires
    │   ├── UnknownTimeZone         the time zone is not an IANA name this system knows
    │   └── DuplicateName           two schedules given to one `Scheduler` share a name
    ├── UnknownSchedule             no schedule of this name is known to the `Scheduler`
    ├── PayloadError                a payload factory raised or returned something else than bytes
    └── CorruptState                a schedule's stored state cannot be decoded

Errors of the queue itself (`taquba.StorageUnavailable`, `taquba.Fenced`, ...) are not wrapped:
they reach the caller as the `taquba` errors they are.
"""

from __future__ import annotations

__all__ = [
    "CorruptState",
    "CronError",
    "DuplicateName",
    "InvalidCronExpression",
    "InvalidSchedule",
    "PayloadError",
    "UnknownSchedule",
    "UnknownTimeZone",
]


class CronError(Exception):
    """Base class of every error taquba-cron raises."""


class InvalidSchedule(CronError, ValueError):
    """A schedule definition is invalid: a bad name, queue, option or combination of options."""


class InvalidCronExpression(InvalidSchedule):
    """A cron expression does not parse, uses an unsupported feature, or can never fire."""

    def __init__(self, expression: str, reason: str) -> None:
        super().__init__(f"invalid cron expression {expression!r}: {reason}")
        self.expression = expression
        """The rejected expression, as given."""
        self.reason = reason
        """Why it was rejected."""


class UnknownTimeZone(InvalidSchedule):
    """A time zone name is not an IANA time zone known to this system (or to `tzdata`)."""

    def __init__(self, tz: str) -> None:
        super().__init__(f"unknown time zone {tz!r} (expected an IANA name such as 'Europe/Paris')")
        self.tz = tz
        """The rejected time zone name."""


class DuplicateName(InvalidSchedule):
    """Two schedules given to one `Scheduler` have the same name.

    Names key each schedule's durable state and its jobs' dedup keys, so they must be unique.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"duplicate schedule name {name!r}")
        self.name = name
        """The name given more than once."""


class UnknownSchedule(CronError, LookupError):
    """No schedule of this name was given to the `Scheduler`."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no schedule named {name!r}")
        self.name = name
        """The name that was looked up."""


class PayloadError(CronError):
    """A schedule's payload factory raised, or returned something other than bytes.

    The firing is not enqueued and stays due: the scheduler tries it again, and the
    schedule's missed-run policy applies once it is late.
    """

    def __init__(self, schedule: str, fire_ms: int, reason: str) -> None:
        super().__init__(f"payload factory of schedule {schedule!r} failed: {reason}")
        self.schedule = schedule
        """The schedule whose factory failed."""
        self.fire_ms = fire_ms
        """The fire time being built, in milliseconds since the Unix epoch (UTC)."""


class CorruptState(CronError):
    """The durable state stored for a schedule cannot be decoded."""

    def __init__(self, schedule: str, reason: str) -> None:
        super().__init__(f"stored state of schedule {schedule!r} is unreadable: {reason}")
        self.schedule = schedule
        """The schedule whose state is unreadable."""
