"""The taquba-cron error tree.

Every error taquba-cron raises on purpose derives from `CronError`, itself a
`taquba.TaqubaError`, so ``except taquba.TaqubaError`` catches the whole stack's errors. The
misuses are also `taquba.UsageError`s, and unreadable stored state is a `taquba.DataError`::

    taquba.TaqubaError
    └── CronError
        ├── InvalidSchedule             a schedule definition is rejected (never retry)
        │   │                           (also a taquba.UsageError)
        │   ├── InvalidCronExpression   the cron expression does not parse, or never fires
        │   ├── UnknownTimeZone         the time zone is not an IANA name this system knows
        │   └── DuplicateName           two schedules given to one `Scheduler` share a name
        ├── UnknownSchedule             no schedule of this name is known to the `Scheduler`
        │                               (also a taquba.UsageError and a LookupError)
        ├── PayloadError                a payload factory raised, or its value does not fit
        │                               the schedule's payload type
        └── CorruptState                a schedule's stored state cannot be decoded
                                        (also a taquba.DataError)

A misuse that is not about a schedule (a bad `Scheduler` option, a second concurrent
`Scheduler.serve`) raises the core's `taquba.UsageError` (`taquba.InvalidArgument` for a bad
argument). A fixed payload of a type `taquba.Codec` cannot store, or one that does not fit
its declared type, raises the core's codec errors (`taquba.UnsupportedType`,
`taquba.TypeMismatch`). Errors of the queue itself (`taquba.StorageUnavailable`,
`taquba.Fenced`, ...) are not wrapped: they reach the caller as the `taquba` errors they are.
"""

from __future__ import annotations

import taquba

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


class CronError(taquba.TaqubaError):
    """Base class of every error taquba-cron raises; a `taquba.TaqubaError`."""


class InvalidSchedule(CronError, taquba.UsageError):
    """A schedule definition is invalid: a bad name, queue name, option or combination of options.

    A `taquba.UsageError` (so also a `ValueError`): fix the definition, never retry. Catch it
    separately when schedules come from a configuration file.
    """


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


class UnknownSchedule(CronError, taquba.UsageError, LookupError):
    """No schedule of this name was given to the `Scheduler` (a `taquba.UsageError`)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no schedule named {name!r}")
        self.name = name
        """The name that was looked up."""


class PayloadError(CronError):
    """A schedule's payload factory raised, or returned a value its payload type cannot encode.

    The cause (``__cause__``) is the factory's exception, or the core's codec error
    (`taquba.TypeMismatch`, `taquba.SerializationError`). The firing is not enqueued and stays
    due: the scheduler tries it again, and the schedule's missed-run policy applies once it is
    late. Not a `taquba.UsageError`: it is raised while firing, from user code, and
    `Scheduler.serve` logs it and retries that schedule.
    """

    def __init__(self, schedule: str, fire_ms: int, reason: str) -> None:
        super().__init__(f"payload factory of schedule {schedule!r} failed: {reason}")
        self.schedule = schedule
        """The schedule whose factory failed."""
        self.fire_ms = fire_ms
        """The fire time being built, in milliseconds since the Unix epoch (UTC)."""


class CorruptState(CronError, taquba.DataError):
    """The durable state stored for a schedule cannot be decoded (a `taquba.DataError`)."""

    def __init__(self, schedule: str, reason: str) -> None:
        super().__init__(f"stored state of schedule {schedule!r} is unreadable: {reason}")
        self.schedule = schedule
        """The schedule whose state is unreadable."""
