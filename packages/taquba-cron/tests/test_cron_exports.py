"""The public surface: every exported name is documented, typed and exported once."""

from __future__ import annotations

import ast
import inspect
import itertools
import json
import pathlib
import subprocess
import sys

import taquba_cron

PUBLIC = [name for name in dir(taquba_cron) if not name.startswith("_")]
PACKAGE_DIR = pathlib.Path(taquba_cron.__file__).parent


def _attribute_docstrings() -> set[str]:
    """Names assigned at module level in taquba_cron's modules and followed by a docstring."""
    documented: set[str] = set()
    for path in [*PACKAGE_DIR.glob("_*.py"), PACKAGE_DIR / "__init__.py"]:
        body = ast.parse(path.read_text()).body
        for node, following in itertools.pairwise(body):
            targets = (
                [node.target]
                if isinstance(node, ast.AnnAssign)
                else node.targets
                if isinstance(node, ast.Assign)
                else []
            )
            is_doc = isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
            if is_doc:
                documented |= {t.id for t in targets if isinstance(t, ast.Name)}
    return documented


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
        "PayloadError",
        "Schedule",
        "ScheduleStatus",
        "Scheduler",
        "UnknownSchedule",
        "UnknownTimeZone",
    }


def test_all_lists_every_public_name_once() -> None:
    assert sorted(taquba_cron.__all__) == sorted({*PUBLIC, "__version__"})
    assert len(taquba_cron.__all__) == len(set(taquba_cron.__all__))


def test_every_public_name_is_documented() -> None:
    attribute_docs = _attribute_docstrings()
    undocumented = []
    for name in [*PUBLIC, "__version__"]:
        obj = getattr(taquba_cron, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if not (obj.__doc__ or "").strip():
                undocumented.append(name)
            for member_name, member in vars(obj).items():
                if member_name.startswith("_") or not callable(member):
                    continue
                if not (getattr(member, "__doc__", None) or "").strip():
                    undocumented.append(f"{name}.{member_name}")
        elif name not in attribute_docs:
            undocumented.append(name)  # constants: a docstring after them
    assert undocumented == []


def test_public_objects_live_in_private_modules_of_the_package() -> None:
    for name in PUBLIC:
        obj = getattr(taquba_cron, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__.startswith("taquba_cron._"), (name, obj.__module__)


def test_errors_form_one_tree() -> None:
    errors = [getattr(taquba_cron, n) for n in PUBLIC if inspect.isclass(getattr(taquba_cron, n))]
    errors = [e for e in errors if issubclass(e, BaseException)]
    assert len(errors) == 8
    for error in errors:
        assert issubclass(error, taquba_cron.CronError), error
    for error in (
        taquba_cron.InvalidCronExpression,
        taquba_cron.UnknownTimeZone,
        taquba_cron.DuplicateName,
    ):
        assert issubclass(error, taquba_cron.InvalidSchedule)
        assert issubclass(error, ValueError)
    assert issubclass(taquba_cron.UnknownSchedule, LookupError)
    tree = taquba_cron._errors.__doc__ or ""
    for error in errors:
        assert error.__name__ in tree


def test_pyright_sees_the_public_names() -> None:
    """The names are re-exported explicitly (``X as X``), so pyright's verifytypes accepts them."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyright",
            "--verifytypes",
            "taquba_cron",
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
