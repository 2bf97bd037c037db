"""Shared fixtures: memory and local-disk stores, and the helpers module on the path."""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import pytest

from taquba import Store


@pytest.fixture
def memory_store() -> Store:
    return Store.memory()


@pytest.fixture
def file_store(tmp_path: Any) -> Store:
    return Store.from_url(tmp_path / "store")


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest) -> Store:
    return request.getfixturevalue(f"{request.param}_store")


# Test modules import shared helpers from bulk_support.py (next to this file).
sys.path.insert(0, str(pathlib.Path(__file__).parent))
