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

import taquba_workflow

PUBLIC = [name for name in dir(taquba_workflow) if not name.startswith("_")]
PACKAGE = pathlib.Path(taquba_workflow.__file__).parent
ROOT = pathlib.Path(__file__).resolve().parents[3]  # the repository, not site-packages


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
        obj = getattr(taquba_workflow, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if not (obj.__doc__ or "").strip():
                undocumented.append(name)
            for member_name, member in vars(obj).items() if inspect.isclass(obj) else []:
                if member_name.startswith("_") or not callable(member):
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
        module = getattr(getattr(taquba_workflow, name), "__module__", "")
        if inspect.isclass(getattr(taquba_workflow, name)):
            assert module.startswith("taquba_workflow._"), (name, module)


def test_errors_form_one_tree() -> None:
    errors = [
        getattr(taquba_workflow, n)
        for n in PUBLIC
        if inspect.isclass(getattr(taquba_workflow, n))
        and issubclass(getattr(taquba_workflow, n), BaseException)
    ]
    assert len(errors) == 10
    for error in errors:
        assert issubclass(error, taquba_workflow.WorkflowError), error
    tree = inspect.getdoc(sys.modules["taquba_workflow._errors"]) or ""
    for error in errors:  # the tree in the docstring names every class
        assert re.search(rf"\b{error.__name__}\b", tree), error.__name__
    assert issubclass(taquba_workflow.InvalidRunId, ValueError)
    assert issubclass(taquba_workflow.TransientStepError, taquba_workflow.StepError)


def test_pyright_sees_the_public_names() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyright",
            "--verifytypes",
            "taquba_workflow",
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
    page = (ROOT / "docs" / "reference" / "taquba-workflow.md").read_text()
    assert "::: taquba_workflow" in page


def test_the_guide_mentions_every_public_class_and_function() -> None:
    guide = (ROOT / "docs" / "guides" / "taquba-workflow.md").read_text()
    missing = [
        name
        for name in PUBLIC
        if (inspect.isclass(obj := getattr(taquba_workflow, name)) or callable(obj))
        and f"`{name}" not in guide
        and f"{name}(" not in guide
    ]
    assert missing == []


def test_dunder_all_lists_every_public_name_once() -> None:
    assert len(taquba_workflow.__all__) == len(set(taquba_workflow.__all__))
    assert sorted(taquba_workflow.__all__) == sorted([*PUBLIC, "__version__"])
