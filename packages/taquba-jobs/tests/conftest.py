"""Shared fixtures: stores (memory, file, S3 on an in-process moto server), clocks, queues.

- from `taquba.testing.pytest_plugin`: ``memory_store``, ``file_store`` (under ``tmp_path``),
  ``s3_store`` (a fresh key prefix per test in one bucket of a session-wide moto server on
  loopback); ``store`` is parametrized over the three, with ids ``memory``, ``file``, ``s3``.
- ``clock``: a `MockClock` at a known instant; ``queue``: a test queue on ``memory_store``
  driven by it.
- ``serving``: a factory of async context managers that serve a runner inside a block and shut
  it down gracefully at its end (a fixture, since test modules cannot import conftest).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import taquba
from taquba import MockClock, QueueConfig, Store
from taquba.testing import open_test_queue
from taquba_jobs import JobRunner

START_MS = 1_800_000_000_000
FAST_RETRY = QueueConfig(retry_backoff_base=0, lease_duration=30)

pytest_plugins = ["taquba.testing.pytest_plugin"]


@pytest.fixture
def clock() -> MockClock:
    return MockClock(START_MS)


@pytest.fixture
async def queue(memory_store: Store, clock: MockClock) -> AsyncIterator[taquba.Queue]:
    async with open_test_queue(memory_store, clock=clock, config=FAST_RETRY) as queue:
        yield queue


@asynccontextmanager
async def _serving(runner: JobRunner) -> AsyncIterator[JobRunner]:
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.serve)
        try:
            yield runner
        finally:
            runner.shutdown()


@pytest.fixture
def serving() -> Any:
    """``async with serving(runner): ...`` serves the runner for the block."""
    return _serving
