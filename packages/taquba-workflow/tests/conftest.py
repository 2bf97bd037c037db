"""Shared fixtures: stores of every kind (from `taquba.testing.pytest_plugin`) and a clock.

- ``memory_store``, ``file_store`` (under ``tmp_path``), ``s3_store`` (a fresh key prefix per
  test in one bucket of a session-wide moto server on loopback);
- ``store``: parametrized over the three, with ids ``memory``, ``file`` and ``s3``;
- ``clock``: a `taquba.MockClock` for record timestamps.
"""

from __future__ import annotations

import pathlib
import sys

import pytest

from taquba import MockClock

pytest_plugins = ["taquba.testing.pytest_plugin"]


@pytest.fixture
def clock() -> MockClock:
    return MockClock()


# Test modules import shared helpers from wf_support.py (next to this file).
sys.path.insert(0, str(pathlib.Path(__file__).parent))
