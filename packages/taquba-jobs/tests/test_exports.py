"""The public surface: every exported name is documented, typed, exported once, and in the docs."""

from __future__ import annotations

import inspect
import pathlib
import runpy
import sys

import pytest

import taquba
import taquba_jobs
from taquba.testing import check_public_api, check_type_completeness

PUBLIC = [name for name in dir(taquba_jobs) if not name.startswith("_")]
ROOT = pathlib.Path(__file__).resolve().parents[3]


def test_the_public_api_conforms() -> None:
    """``__all__`` complete, exported once from private modules, everything documented."""
    check_public_api(taquba_jobs)


def test_errors_form_one_tree() -> None:
    errors = [
        getattr(taquba_jobs, n)
        for n in PUBLIC
        if inspect.isclass(getattr(taquba_jobs, n))
        and issubclass(getattr(taquba_jobs, n), BaseException)
    ]
    assert {e.__name__ for e in errors} == {
        "InputMismatch",
        "JobCancelled",
        "JobFailed",
        "JobsError",
        "ReservedHeader",
        "ResultNotFound",
        "StateTooLarge",
        "UnknownJob",
    }
    assert all(issubclass(e, taquba_jobs.JobsError) for e in errors)
    assert issubclass(taquba_jobs.JobsError, taquba.TaqubaError)  # one family: one tree
    # No usage error base of our own: misuse is the core's UsageError (these three are ones).
    assert {e for e in errors if issubclass(e, taquba.UsageError)} == {
        taquba_jobs.UnknownJob,
        taquba_jobs.ReservedHeader,
        taquba_jobs.StateTooLarge,
    }
    assert issubclass(taquba_jobs.ReservedHeader, taquba.InvalidArgument)
    assert issubclass(taquba_jobs.StateTooLarge, taquba.InvalidArgument)
    tree = sys.modules["taquba_jobs._errors"].__doc__ or ""
    assert all(e.__name__ in tree for e in errors)


def test_the_docs_cover_the_public_api() -> None:
    reference = (ROOT / "docs/reference/taquba-jobs.md").read_text()
    assert "::: taquba_jobs" in reference
    guide = (ROOT / "docs/guides/taquba-jobs.md").read_text()
    for name in ("JobRunner", "JobHandle", "JobContext", "InputMismatch", "result_retention"):
        assert name in guide, name


def test_the_example_runs(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    example = ROOT / "examples/jobs_example.py"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(example), str(tmp_path / "store")])
    runpy.run_path(str(example), run_name="__main__")
    out = capsys.readouterr().out
    for line in (
        "resubmitted: same job True, newly submitted False",
        "result after restart: Thumbnail(path='thumbs/256/cat.png', bytes_written=2560)",
        "resubmitted after restart: newly submitted False",
        "owl result after retention: swept",
        "owl resubmitted after the sweep runs again: True",
    ):
        assert line in out.splitlines(), (line, out)
    assert "cancelled: job " in out


def test_pyright_sees_the_public_names() -> None:
    """The names are re-exported explicitly (``X as X``), so pyright's verifytypes accepts them."""
    check_type_completeness(taquba_jobs)


def test_the_readme_example_runs(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [block.split("```", 1)[0] for block in readme.split("```python\n")[1:]]
    assert blocks
    for i, block in enumerate(blocks):
        script = tmp_path / f"readme_{i}.py"
        script.write_text(block)
        runpy.run_path(str(script), run_name="readme_example")
    assert "thumbs/256/cat.png" in capsys.readouterr().out


def test_the_guide_quick_start_runs(tmp_path: pathlib.Path) -> None:
    guide = (ROOT / "docs/guides/taquba-jobs.md").read_text()
    section = guide.split("## Quick start", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "nursery.start(runner.serve)" in code and "runner.shutdown()" in code
    code = code.replace("file:///var/lib/app", (tmp_path / "store").as_uri())
    script = tmp_path / "quick_start.py"
    script.write_text(code)
    runpy.run_path(str(script), run_name="guide_quick_start")  # it calls trio.run(main)
