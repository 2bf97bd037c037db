"""Shared fixtures: memory and local-disk stores, and the helpers module on the path.

The stores come from `taquba.testing.pytest_plugin`; ``store`` is narrowed to ``memory`` and
``file`` (the bulk layer adds nothing storage-specific that S3 would exercise).
"""

from __future__ import annotations

import pathlib
import sys

import pytest

from taquba import Store

pytest_plugins = ["taquba.testing.pytest_plugin"]


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest) -> Store:
    return request.getfixturevalue(f"{request.param}_store")


# Test modules import shared helpers from bulk_support.py (next to this file).
sys.path.insert(0, str(pathlib.Path(__file__).parent))
