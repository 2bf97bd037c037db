"""The public surface: every exported name documented, typed, exported once; docs agree."""

from __future__ import annotations

import ast
import inspect
import pathlib
import re
import sys

import taquba
import taquba_bulk
import taquba_workflow
from taquba.testing import check_public_api, check_type_completeness

PUBLIC = [name for name in dir(taquba_bulk) if not name.startswith("_")]
PACKAGE = pathlib.Path(taquba_bulk.__file__).parent
ROOT = pathlib.Path(__file__).resolve().parents[3]  # the repository, not site-packages
# Re-exported from taquba_workflow (their docs live there).
REEXPORTED = {"StepError", "TransientStepError", "PermanentStepError", "TerminalStatus"}


def test_the_public_api_conforms() -> None:
    """``__all__`` complete, exported once from private modules, documented, in the guide."""
    check_public_api(
        taquba_bulk,
        reexported=REEXPORTED,
        mentioned_in=[ROOT / "docs" / "guides" / "taquba-bulk.md"],
    )


def test_reexported_names_are_taquba_workflows() -> None:
    for name in REEXPORTED:
        assert getattr(taquba_bulk, name) is getattr(taquba_workflow, name)


def test_errors_form_one_tree() -> None:
    errors = [
        getattr(taquba_bulk, n)
        for n in PUBLIC
        if inspect.isclass(getattr(taquba_bulk, n))
        and issubclass(getattr(taquba_bulk, n), BaseException)
        and n not in REEXPORTED
    ]
    assert len(errors) == 8
    for error in errors:
        assert issubclass(error, taquba_bulk.BulkError), error
        assert issubclass(error, taquba.TaqubaError), error
    usage = {taquba_bulk.InvalidItemKey, taquba_bulk.DuplicateItemKey}
    usage.add(taquba_bulk.UnserializableItem)
    assert {e for e in errors if issubclass(e, taquba.UsageError)} == usage
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
    check_type_completeness(taquba_bulk)


def test_the_reference_page_renders_the_package() -> None:
    page = (ROOT / "docs" / "reference" / "taquba-bulk.md").read_text()
    assert "::: taquba_bulk" in page


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
