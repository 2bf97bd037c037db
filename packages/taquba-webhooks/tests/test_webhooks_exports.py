"""The public surface: every exported name is documented, typed and exported once."""

from __future__ import annotations

import ast
import inspect
import itertools
import json
import pathlib
import subprocess
import sys

import taquba_webhooks

PUBLIC = [name for name in dir(taquba_webhooks) if not name.startswith("_")]
PACKAGE = pathlib.Path(taquba_webhooks.__file__).parent


def _attribute_docstrings() -> set[str]:
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


def test_every_public_name_is_documented() -> None:
    attribute_docs = _attribute_docstrings()
    undocumented = []
    for name in PUBLIC:
        obj = getattr(taquba_webhooks, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if not (obj.__doc__ or "").strip():
                undocumented.append(name)
        elif not inspect.ismodule(obj) and name not in attribute_docs:
            undocumented.append(name)
    assert undocumented == []


def test_public_methods_are_documented() -> None:
    missing = []
    for name in PUBLIC:
        obj = getattr(taquba_webhooks, name)
        if not inspect.isclass(obj):
            continue
        for attr, member in vars(obj).items():
            if attr.startswith("_") or not (
                inspect.isfunction(member) or isinstance(member, property | classmethod)
            ):
                continue
            target = member.__func__ if isinstance(member, classmethod) else member
            if not (getattr(target, "__doc__", None) or "").strip():
                missing.append(f"{name}.{attr}")
    assert missing == []


def test_every_private_module_export_is_public() -> None:
    exported = set(PUBLIC)
    for path in PACKAGE.glob("_[a-z]*.py"):
        module = __import__(f"taquba_webhooks.{path.stem}", fromlist=["__all__"])
        for name in getattr(module, "__all__", []):
            assert name in exported, (path.stem, name)
            assert getattr(taquba_webhooks, name) is getattr(module, name)


def test_names_are_exported_once_from_private_modules() -> None:
    source = (PACKAGE / "__init__.py").read_text()
    imported = [
        alias.asname or alias.name
        for node in ast.parse(source).body
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("_")
        for alias in node.names
    ]
    assert len(imported) == len(set(imported))
    for name in PUBLIC:
        obj = getattr(taquba_webhooks, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__.startswith("taquba_webhooks"), name


def test_errors_form_one_tree() -> None:
    errors = [
        getattr(taquba_webhooks, n)
        for n in PUBLIC
        if inspect.isclass(getattr(taquba_webhooks, n))
        and issubclass(getattr(taquba_webhooks, n), BaseException)
    ]
    assert {e.__name__ for e in errors} == {
        "WebhookError",
        "InvalidDelivery",
        "InvalidSecret",
        "DestinationRefused",
        "VerificationError",
    }
    for error in errors:
        assert issubclass(error, taquba_webhooks.WebhookError)
    assert issubclass(taquba_webhooks.InvalidDelivery, ValueError)
    assert issubclass(taquba_webhooks.InvalidSecret, ValueError)


def test_all_lists_every_public_name_once() -> None:
    assert len(taquba_webhooks.__all__) == len(set(taquba_webhooks.__all__))
    public = {name for name in PUBLIC if not inspect.ismodule(getattr(taquba_webhooks, name))}
    assert set(taquba_webhooks.__all__) == public | {"__version__"}


def test_version() -> None:
    assert taquba_webhooks.__version__ == "0.3.0"


def test_pyright_sees_the_public_names() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyright",
            "--verifytypes",
            "taquba_webhooks",
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
