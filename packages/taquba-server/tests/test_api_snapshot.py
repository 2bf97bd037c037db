"""The public API is the committed one: a rename or a new signature is a deliberate change.

``api-snapshot.txt`` next to the package's ``pyproject.toml`` lists every public name with its
signature; this test fails with a diff when the package no longer matches it. Regenerate it
with ``uv run python tools/api_snapshot.py`` and add a CHANGELOG entry for the change.
"""

from __future__ import annotations

from pathlib import Path

import taquba_server
from taquba.testing import assert_api_snapshot

SNAPSHOT = Path(__file__).resolve().parent.parent / "api-snapshot.txt"
HINT = "public API changed: run `uv run python tools/api_snapshot.py` and add a CHANGELOG entry"


def test_the_public_api_is_the_committed_snapshot() -> None:
    assert_api_snapshot(taquba_server, SNAPSHOT, hint=HINT)
