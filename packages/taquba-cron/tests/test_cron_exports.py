"""The public surface: every exported name is documented, typed and exported once."""

from __future__ import annotations

import inspect

import taquba
import taquba_cron
from taquba.testing import check_public_api, check_type_completeness

PUBLIC = [name for name in dir(taquba_cron) if not name.startswith("_")]


def test_the_expected_names_are_exported() -> None:
    assert set(PUBLIC) == {
        "HEADER_PREFIX",
        "MAX_NAME_LENGTH",
        "STATE_KEY_PREFIX",
        "CorruptState",
        "CronError",
        "DuplicateName",
        "InvalidCronExpression",
        "InvalidSchedule",
        "Missed",
        "Overlap",
        "PayloadError",
        "Schedule",
        "ScheduleStatus",
        "Scheduler",
        "UnknownSchedule",
        "UnknownTimeZone",
    }


def test_the_public_api_conforms() -> None:
    """``__all__`` complete, exported once from private modules, everything documented."""
    check_public_api(taquba_cron)


def test_errors_form_one_tree() -> None:
    errors = [getattr(taquba_cron, n) for n in PUBLIC if inspect.isclass(getattr(taquba_cron, n))]
    errors = [e for e in errors if issubclass(e, BaseException)]
    assert len(errors) == 8
    assert issubclass(taquba_cron.CronError, taquba.TaqubaError)
    for error in errors:
        assert issubclass(error, taquba_cron.CronError), error
    for error in (
        taquba_cron.InvalidSchedule,
        taquba_cron.InvalidCronExpression,
        taquba_cron.UnknownTimeZone,
        taquba_cron.DuplicateName,
    ):
        assert issubclass(error, taquba_cron.InvalidSchedule)
        assert issubclass(error, taquba.UsageError)
        assert issubclass(error, ValueError)
    assert issubclass(taquba_cron.UnknownSchedule, taquba.UsageError)
    assert issubclass(taquba_cron.UnknownSchedule, LookupError)
    assert issubclass(taquba_cron.CorruptState, taquba.DataError)
    for error in (taquba_cron.CronError, taquba_cron.PayloadError, taquba_cron.CorruptState):
        assert not issubclass(error, taquba.UsageError), error
    tree = taquba_cron._errors.__doc__ or ""
    for error in errors:
        assert error.__name__ in tree


def test_pyright_sees_the_public_names() -> None:
    """The names are re-exported explicitly (``X as X``), so pyright's verifytypes accepts them."""
    check_type_completeness(taquba_cron)
