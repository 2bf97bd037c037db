"""Tests of ``tools/api_snapshot.py``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import api_snapshot

if TYPE_CHECKING:
    import pytest

REPO = Path(__file__).resolve().parents[2]


def fake_tree(tmp_path: Path, *distributions: str) -> Path:
    """A workspace root with the pyprojects of the given members and no snapshots."""
    for distribution in distributions:
        member = tmp_path / "packages" / distribution
        member.mkdir(parents=True)
        shutil.copy(REPO / "packages" / distribution / "pyproject.toml", member)
    return tmp_path


def test_members_are_found_from_their_pyprojects(tmp_path: Path) -> None:
    root = fake_tree(tmp_path, "taquba-cron", "taquba")
    assert [name for name, _ in api_snapshot.distributions(root)] == ["taquba", "taquba-cron"]


def test_check_reports_missing_and_changed_snapshots_then_write_fixes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = fake_tree(tmp_path, "taquba-cron", "taquba-jobs")
    jobs = root / "packages" / "taquba-jobs" / "api-snapshot.txt"
    jobs.write_text(api_snapshot.snapshot_of("taquba-jobs").replace("def job(", "def task("))
    assert api_snapshot.main(["--check", "--root", str(root)]) == 1
    out, err = capsys.readouterr()
    assert "packages/taquba-cron/api-snapshot.txt: missing\n" in out
    assert "--- packages/taquba-jobs/api-snapshot.txt (committed)\n" in out
    assert "\n-def task(" in out
    assert "\n+def job(" in out
    assert err == (
        "public API changed: run `uv run python tools/api_snapshot.py` and add a CHANGELOG "
        "entry (taquba-cron, taquba-jobs)\n"
    )
    assert api_snapshot.main(["--root", str(root)]) == 0
    assert jobs.read_text() == api_snapshot.snapshot_of("taquba-jobs")
    assert api_snapshot.main(["--check", "--root", str(root)]) == 0


def test_an_empty_tree_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert api_snapshot.main(["--check", "--root", str(tmp_path)]) == 1
    assert "no packages/*/pyproject.toml" in capsys.readouterr().err
