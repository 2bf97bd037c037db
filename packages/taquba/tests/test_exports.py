"""The public surface: every exported name is documented, typed and exported once."""

from __future__ import annotations

import ast
import inspect
import itertools
import json
import pathlib
import subprocess
import sys

import taquba
import taquba.testing

PUBLIC = [name for name in dir(taquba) if not name.startswith("_")]


def _attribute_docstrings() -> set[str]:
    """Names assigned at module level in taquba's modules and followed by a docstring."""
    documented: set[str] = set()
    for path in pathlib.Path(taquba.__file__).parent.glob("_*.py"):
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


def test_every_public_name_is_documented() -> None:
    attribute_docs = _attribute_docstrings()
    undocumented = []
    for name in PUBLIC:
        obj = getattr(taquba, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if not (obj.__doc__ or "").strip():
                undocumented.append(name)
        elif not inspect.ismodule(obj) and name not in attribute_docs:
            undocumented.append(name)  # constants and type aliases: a docstring after them
    assert undocumented == []


def test_public_classes_and_functions_live_in_private_modules_but_export_from_taquba() -> None:
    for name in PUBLIC:
        obj = getattr(taquba, name)
        module = getattr(obj, "__module__", None)
        if module is not None and inspect.isclass(obj) | inspect.isfunction(obj):
            assert module.startswith("taquba"), (name, module)


def test_errors_form_one_tree() -> None:
    errors = [getattr(taquba, n) for n in PUBLIC if inspect.isclass(getattr(taquba, n))]
    errors = [e for e in errors if issubclass(e, BaseException)]
    for error in errors:
        if error in (taquba.PermanentFailure, taquba.RetryLater):
            continue  # raised by handlers, not by taquba
        assert issubclass(error, taquba.TaqubaError), error
    assert issubclass(taquba.Fenced, taquba.StorageError)
    assert issubclass(taquba.ClaimLost, taquba.ConflictError)
    assert issubclass(taquba.InvalidId, taquba.UsageError)
    assert taquba.StorageUnavailable("x").transient
    assert not taquba.ClaimLost("j").transient


def test_testing_helpers_are_exported() -> None:
    assert set(taquba.testing.__all__) >= {"MockClock", "drain", "memory_store", "open_test_queue"}


def test_pyright_sees_the_public_names() -> None:
    """The names are re-exported explicitly (``X as X``), so pyright's verifytypes accepts them."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyright",
            "--verifytypes",
            "taquba",
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
