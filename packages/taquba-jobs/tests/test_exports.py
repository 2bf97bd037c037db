"""The public surface: every exported name is documented, typed, exported once, and in the docs."""

from __future__ import annotations

import ast
import inspect
import itertools
import json
import pathlib
import runpy
import subprocess
import sys

import pytest

import taquba_jobs

PUBLIC = [name for name in dir(taquba_jobs) if not name.startswith("_")]
ROOT = pathlib.Path(__file__).resolve().parents[3]
PACKAGE = pathlib.Path(taquba_jobs.__file__).parent


def _attribute_docstrings() -> set[str]:
    """Names assigned at module level in taquba_jobs' modules and followed by a docstring."""
    documented: set[str] = set()
    for path in PACKAGE.glob("*.py"):
        body = ast.parse(path.read_text()).body
        for node, following in itertools.pairwise(body):
            targets = (
                [node.target]
                if isinstance(node, ast.AnnAssign)
                else node.targets
                if isinstance(node, ast.Assign)
                else []
            )
            if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                documented |= {t.id for t in targets if isinstance(t, ast.Name)}
    return documented


def test_all_lists_exactly_the_public_names() -> None:
    assert sorted(set(taquba_jobs.__all__) - {"__version__"}) == sorted(PUBLIC)
    assert len(set(taquba_jobs.__all__)) == len(taquba_jobs.__all__)


def test_every_public_name_is_documented() -> None:
    attribute_docs = _attribute_docstrings()
    undocumented = []
    for name in PUBLIC:
        obj = getattr(taquba_jobs, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if not (obj.__doc__ or "").strip():
                undocumented.append(name)
            for member_name, member in vars(obj).items() if inspect.isclass(obj) else []:
                if member_name.startswith("_") or (
                    not callable(member) and not isinstance(member, property)
                ):
                    continue
                if not (getattr(member, "__doc__", None) or "").strip():
                    undocumented.append(f"{name}.{member_name}")
        elif name not in attribute_docs:
            undocumented.append(name)
    assert undocumented == []


def test_public_objects_live_in_private_modules() -> None:
    for name in PUBLIC:
        module = getattr(getattr(taquba_jobs, name), "__module__", None)
        if module is not None and name != "JobFunction":
            assert module.startswith("taquba_jobs._"), (name, module)


def test_errors_form_one_tree() -> None:
    errors = [
        getattr(taquba_jobs, n)
        for n in PUBLIC
        if inspect.isclass(getattr(taquba_jobs, n))
        and issubclass(getattr(taquba_jobs, n), BaseException)
    ]
    assert {e.__name__ for e in errors} == {
        "ConfigurationError",
        "InputMismatch",
        "JobCancelled",
        "JobFailed",
        "JobsError",
        "ResultNotFound",
        "SerializationError",
        "TypeMismatch",
        "UnknownJob",
    }
    assert all(issubclass(e, taquba_jobs.JobsError) for e in errors)
    assert issubclass(taquba_jobs.TypeMismatch, taquba_jobs.SerializationError)
    assert issubclass(taquba_jobs.ConfigurationError, ValueError)
    tree = sys.modules["taquba_jobs._errors"].__doc__ or ""
    assert all(e.__name__ in tree for e in errors)


def test_the_docs_cover_the_public_api() -> None:
    reference = (ROOT / "docs/reference/taquba-jobs.md").read_text()
    assert "::: taquba_jobs" in reference
    guide = (ROOT / "docs/guides/taquba-jobs.md").read_text()
    for name in ("JobRunner", "JobHandle", "JobContext", "InputMismatch", "result_retention"):
        assert name in guide, name


def test_the_example_runs(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = ROOT / "examples/jobs_example.py"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(example), str(tmp_path / "store")])
    runpy.run_path(str(example), run_name="__main__")


def test_pyright_sees_the_public_names() -> None:
    """The names are re-exported explicitly (``X as X``), so pyright's verifytypes accepts them."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyright",
            "--verifytypes",
            "taquba_jobs",
            "--ignoreexternal",
            "--outputjson",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(result.stdout)
    completeness = report["typeCompleteness"]
    assert completeness["exportedSymbolCounts"]["withUnknownType"] == 0, [
        s["name"] for s in completeness["symbols"] if not s["isTypeKnown"]
    ]


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
