"""Shared fixtures: a MockClock at a known instant and a test queue driven by it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

import taquba
from taquba import MockClock, Store
from taquba.testing import open_test_queue

START = datetime(2026, 1, 1, tzinfo=UTC)
START_MS = int(START.timestamp() * 1000)


@pytest.fixture
def clock() -> MockClock:
    return MockClock(START_MS)


@pytest.fixture
def store() -> Store:
    return Store.memory()


@pytest.fixture
async def queue(store: Store, clock: MockClock) -> AsyncIterator[taquba.Queue]:
    async with open_test_queue(store, clock=clock) as queue:
        yield queue
