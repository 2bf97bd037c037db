"""The public API is the committed one: a rename or a new signature is a deliberate change.

``api-snapshot.txt`` next to the package's ``pyproject.toml`` lists every public name with its
signature; this test fails with a diff when the package no longer matches it. Regenerate it
with ``uv run python tools/api_snapshot.py`` and add a CHANGELOG entry for the change.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import taquba.testing
import taquba_workflow

SNAPSHOT = Path(__file__).resolve().parent.parent / "api-snapshot.txt"
HINT = "public API changed: run `uv run python tools/api_snapshot.py` and add a CHANGELOG entry"


def test_the_public_api_is_the_committed_snapshot() -> None:
    # A compat-matrix row may install a taquba released before the snapshot helper existed.
    assert_api_snapshot = getattr(taquba.testing, "assert_api_snapshot", None)
    if assert_api_snapshot is None:
        pytest.skip("the installed taquba.testing has no assert_api_snapshot (older taquba)")
    if importlib.util.find_spec("taquba_webhooks") is None:
        # the snapshot covers taquba_workflow.webhook, which needs the extra
        pytest.skip("the webhooks extra (taquba-webhooks) is not installed")
    assert_api_snapshot(taquba_workflow, SNAPSHOT, hint=HINT)
