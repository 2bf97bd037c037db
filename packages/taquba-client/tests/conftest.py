"""Fixtures of the taquba-client tests: a real taquba-server on loopback, in-process or not."""

from __future__ import annotations

import pathlib
import sys
from collections.abc import AsyncIterator

import pytest
import trio

import taquba

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from client_support import FAST, ServerHandle, start_server


@pytest.fixture
async def queue() -> AsyncIterator[taquba.Queue]:
    """An open queue on an in-memory store with a short reaper interval."""
    async with taquba.open_queue(
        taquba.Store.memory(), config=FAST, reaper_interval=0.1, flush_interval=0.01
    ) as q:
        yield q


@pytest.fixture
async def server(nursery: trio.Nursery, queue: taquba.Queue) -> ServerHandle:
    """A taquba_server.Server for ``queue`` on 127.0.0.1, served in this test's nursery."""
    return await start_server(nursery, queue)
