"""Fixtures of the taquba-webhooks tests; the helpers live in ``webhooks_support``."""

from __future__ import annotations

import pathlib
import sys
from collections.abc import AsyncIterator

import pytest
import trio

import taquba
from taquba.testing import open_test_queue

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from webhooks_support import (
    FAST,
    FakeResolver,
    Receiver,
    RecordingSocketFactory,
    start_receiver,
)


@pytest.fixture
async def receiver(nursery: trio.Nursery) -> Receiver:
    """A hypercorn receiver on 127.0.0.1 for this test."""
    return await start_receiver(nursery)


@pytest.fixture
async def sockets() -> AsyncIterator[RecordingSocketFactory]:
    """Record every trio socket created from now on."""
    factory = RecordingSocketFactory()
    previous = trio.socket.set_custom_socket_factory(factory)
    yield factory
    trio.socket.set_custom_socket_factory(previous)


@pytest.fixture
async def fake_dns() -> AsyncIterator[FakeResolver]:
    """Answer made-up host names with chosen addresses."""
    resolver = FakeResolver()
    previous = trio.socket.set_custom_hostname_resolver(resolver)
    yield resolver
    trio.socket.set_custom_hostname_resolver(previous)


@pytest.fixture
async def queue() -> AsyncIterator[taquba.Queue]:
    """A memory queue whose retries are immediate (backoff 0) and max_attempts is 3."""
    async with open_test_queue(config=FAST) as q:
        yield q
