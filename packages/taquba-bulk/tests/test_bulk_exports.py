"""The public surface: every exported name documented, typed, exported once; docs agree."""

from __future__ import annotations

import ast
import inspect
import itertools
import json
import pathlib
import re
import subprocess
import sys

import taquba_bulk
import taquba_workflow

PUBLIC = [name for name in dir(taquba_bulk) if not name.startswith("_")]
PACKAGE = pathlib.Path(taquba_bulk.__file__).parent
ROOT = pathlib.Path(__file__).resolve().parents[3]  # the repository, not site-packages
# Re-exported from taquba_workflow (their docs live there).
REEXPORTED = {"StepError", "TransientStepError", "PermanentStepError", "TerminalStatus"}


def _attribute_docstrings() -> set[str]:
    documented: set[str] = set()
    for path in PACKAGE.glob("_*.py"):
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


def test_every_public_name_is_documented() -> None:
    attribute_docs = _attribute_docstrings()
    undocumented = []
    for name in PUBLIC:
        obj = getattr(taquba_bulk, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if not (obj.__doc__ or "").strip():
                undocumented.append(name)
            for member_name, member in vars(obj).items() if inspect.isclass(obj) else []:
                if member_name.startswith("_"):
                    continue
                if isinstance(member, property):
                    member = member.fget
                elif not callable(member):
                    continue
                if not (getattr(member, "__doc__", None) or "").strip():
                    undocumented.append(f"{name}.{member_name}")
        elif not inspect.ismodule(obj) and name not in attribute_docs:
            undocumented.append(name)
    assert undocumented == []


def test_every_public_name_is_exported_once_from_a_private_module() -> None:
    init = ast.parse((PACKAGE / "__init__.py").read_text())
    exported = [
        alias.asname
        for node in init.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.asname is not None and not alias.asname.startswith("_")
    ]
    assert len(exported) == len(set(exported))
    assert sorted(exported) == sorted(n for n in PUBLIC if n != "__version__")
    for name in PUBLIC:
        obj = getattr(taquba_bulk, name)
        if not inspect.isclass(obj):
            continue
        if name in REEXPORTED:
            assert obj is getattr(taquba_workflow, name)
        else:
            assert obj.__module__.startswith("taquba_bulk._"), (name, obj.__module__)


def test_errors_form_one_tree() -> None:
    errors = [
        getattr(taquba_bulk, n)
        for n in PUBLIC
        if inspect.isclass(getattr(taquba_bulk, n))
        and issubclass(getattr(taquba_bulk, n), BaseException)
        and n not in REEXPORTED
    ]
    assert len(errors) == 9
    for error in errors:
        assert issubclass(error, taquba_bulk.BulkError), error
    tree = inspect.getdoc(sys.modules["taquba_bulk._errors"]) or ""
    guide = (ROOT / "docs" / "guides" / "taquba-bulk.md").read_text()
    for error in errors:  # the trees in the docstring and the guide name every class
        assert re.search(rf"\b{error.__name__}\b", tree), error.__name__
        assert re.search(rf"(^|[─ ]){error.__name__}\b", guide, re.MULTILINE), error.__name__
    assert issubclass(taquba_bulk.InvalidItemKey, ValueError)
    assert issubclass(taquba_bulk.UnserializableItem, TypeError)


def test_no_private_imports_of_other_distributions() -> None:
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] in ("taquba", "taquba_workflow"):
                    assert not any(p.startswith("_") and not p.startswith("__") for p in parts), (
                        path.name,
                        name,
                    )


def test_pyright_sees_the_public_names() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyright",
            "--verifytypes",
            "taquba_bulk",
            "--ignoreexternal",
            "--outputjson",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    completeness = json.loads(result.stdout)["typeCompleteness"]
    assert completeness["exportedSymbolCounts"]["withUnknownType"] == 0, [
        s["name"] for s in completeness["symbols"] if not s["isTypeKnown"]
    ]


def test_the_reference_page_renders_the_package() -> None:
    page = (ROOT / "docs" / "reference" / "taquba-bulk.md").read_text()
    assert "::: taquba_bulk" in page


def test_the_guide_mentions_every_public_name() -> None:
    guide = (ROOT / "docs" / "guides" / "taquba-bulk.md").read_text()
    missing = [name for name in PUBLIC if name != "__version__" and name not in guide]
    assert missing == []


def test_the_guide_mentions_every_public_method() -> None:
    guide = (ROOT / "docs" / "guides" / "taquba-bulk.md").read_text()
    classes = ("Bulk", "BulkCtx", "CostReport", "Pipeline", "JsonlSink", "MemorySink")
    missing = [
        f"{name}.{member}"
        for name in classes
        for member in vars(getattr(taquba_bulk, name))
        if not member.startswith("_") and member not in guide
    ]
    assert missing == []


def test_dunder_all_lists_every_public_name_once() -> None:
    assert len(taquba_bulk.__all__) == len(set(taquba_bulk.__all__))
    assert sorted(taquba_bulk.__all__) == sorted([*PUBLIC, "__version__"])
