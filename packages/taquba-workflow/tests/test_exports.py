"""The public surface: every exported name documented, typed, exported once; docs agree."""

from __future__ import annotations

import inspect
import pathlib
import re
import sys

import taquba
import taquba_workflow
from taquba.testing import check_public_api, check_type_completeness

PUBLIC = [name for name in dir(taquba_workflow) if not name.startswith("_")]
ROOT = pathlib.Path(__file__).resolve().parents[3]  # the repository, not site-packages


def test_the_public_api_conforms() -> None:
    """``__all__`` complete, exported once from private modules, documented, in the guide."""
    check_public_api(
        taquba_workflow, mentioned_in=[ROOT / "docs" / "guides" / "taquba-workflow.md"]
    )


def test_errors_form_one_tree() -> None:
    errors = [
        getattr(taquba_workflow, n)
        for n in PUBLIC
        if inspect.isclass(getattr(taquba_workflow, n))
        and issubclass(getattr(taquba_workflow, n), BaseException)
    ]
    assert len(errors) == 13
    for error in errors:
        assert issubclass(error, taquba_workflow.WorkflowError), error
        assert issubclass(error, taquba.TaqubaError), error
    usage = {taquba_workflow.InvalidRunId, taquba_workflow.ReservedHeader}
    usage.add(taquba_workflow.UnserializableInput)
    usage |= {taquba_workflow.ReservedKvKey, taquba_workflow.ConflictingKvEffect}
    usage.add(taquba_workflow.EffectsSealed)
    assert {e for e in errors if issubclass(e, taquba.UsageError)} == usage
    assert issubclass(taquba_workflow.WorkflowDataError, taquba.DataError)
    tree = inspect.getdoc(sys.modules["taquba_workflow._errors"]) or ""
    for error in errors:  # the tree in the docstring names every class
        assert re.search(rf"\b{error.__name__}\b", tree), error.__name__
    assert issubclass(taquba_workflow.InvalidRunId, ValueError)
    assert issubclass(taquba_workflow.TransientStepError, taquba_workflow.StepError)


def test_pyright_sees_the_public_names() -> None:
    check_type_completeness(taquba_workflow)


def test_the_reference_page_renders_the_package() -> None:
    page = (ROOT / "docs" / "reference" / "taquba-workflow.md").read_text()
    assert "::: taquba_workflow" in page
