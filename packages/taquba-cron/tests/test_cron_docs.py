"""The guide's expression-syntax tables say what the parser really accepts and rejects."""

from __future__ import annotations

import pathlib
import re
from datetime import UTC, datetime

import pytest

from taquba_cron import InvalidCronExpression, Schedule

GUIDE = pathlib.Path(__file__).resolve().parents[3] / "docs" / "guides" / "taquba-cron.md"


def _table(header: str) -> list[list[str]]:
    """The rows of the Markdown table whose header line is ``header``, as cells."""
    lines = GUIDE.read_text().splitlines()
    start = lines.index(header) + 2  # skip the header and the |---| line
    rows: list[list[str]] = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _code(cell: str) -> str:
    (code,) = re.findall(r"`([^`]+)`", cell)
    return code


ACCEPTED = [_code(row[1]) for row in _table("| form | example | meaning |")]
REJECTED = [_code(row[0]) for row in _table("| example | why |")]


def test_the_tables_were_found() -> None:
    assert len(ACCEPTED) >= 25
    assert len(REJECTED) >= 5


@pytest.mark.parametrize("expression", ACCEPTED)
def test_every_accepted_example_parses(expression: str) -> None:
    schedule = Schedule("docs", expression, "q")
    assert schedule.next_fire_times(datetime(2024, 1, 1, tzinfo=UTC), 1)


@pytest.mark.parametrize("expression", REJECTED)
def test_every_rejected_example_is_rejected(expression: str) -> None:
    with pytest.raises(InvalidCronExpression):
        Schedule("docs", expression, "q")


def _days(expression: str, n: int) -> list[str]:
    times = Schedule("docs", expression, "q").next_fire_times(datetime(2024, 1, 1, tzinfo=UTC), n)
    return [f"{t:%d %a}" for t in times]


def test_the_stated_meanings() -> None:
    after = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday
    minutes = Schedule("docs", "5/20 * * * *", "q").next_fire_times(after, 3)
    assert [t.minute for t in minutes] == [5, 25, 45]
    assert _days("0 0 * * 1-1", 2) == _days("0 0 * * 1", 2) == ["08 Mon", "15 Mon"]
    assert _days("0 22 * * L5", 2) == _days("0 22 * * 5L", 2)
    # "*/2" and "1-31" are restricted: either field matching fires.
    assert _days("0 0 */2 * mon", 5) == ["03 Wed", "05 Fri", "07 Sun", "08 Mon", "09 Tue"]
    assert _days("0 0 1-31 * mon", 2) == ["02 Tue", "03 Wed"]
    assert _days("0 0 1,15 * mon", 4) == ["08 Mon", "15 Mon", "22 Mon", "29 Mon"]
    assert _days("0 0 * * 1/2", 3) == ["03 Wed", "05 Fri", "08 Mon"]  # 1, 3, 5: not 7
    assert _days("0 0 * * 7", 1) == _days("0 0 * * 0", 1) == ["07 Sun"]
    assert _days("0 9 * * fri#3", 1) == ["19 Fri"]
    assert _days("0 9 * * mon#1,L5", 3) == ["01 Mon", "26 Fri", "05 Mon"]
