"""Shared fixtures: stores (memory, file, S3 on an in-process moto server), clocks, queues.

- ``memory_store``, ``file_store`` (under ``tmp_path``), ``s3_store`` (a fresh key prefix per
  test in one bucket of a session-wide moto server on loopback); ``store`` is parametrized
  over the three, with ids ``memory``, ``file`` and ``s3``.
- ``clock``: a `MockClock` at a known instant; ``queue``: a test queue on ``memory_store``
  driven by it.
- ``serving``: a factory of async context managers that serve a runner inside a block and shut
  it down gracefully at its end (a fixture, since test modules cannot import conftest).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import taquba
from taquba import MockClock, QueueConfig, Store
from taquba.testing import open_test_queue
from taquba_jobs import JobRunner

S3_BUCKET = "taquba-jobs-test"
S3_REGION = "us-east-1"
S3_KEY = "testing"
S3_SECRET = "testing"
START_MS = 1_800_000_000_000
FAST_RETRY = QueueConfig(retry_backoff_base=0, lease_duration=30)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """Start moto's S3 server on a free loopback port (once per session) with one bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=S3_REGION,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
        ).create_bucket(Bucket=S3_BUCKET)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def s3_store(moto_endpoint: str) -> Store:
    return Store.from_url(
        f"s3://{S3_BUCKET}/t-{uuid.uuid4().hex}",
        endpoint=moto_endpoint,
        region=S3_REGION,
        access_key_id=S3_KEY,
        secret_access_key=S3_SECRET,
        allow_http=True,
    )


@pytest.fixture
def memory_store() -> Store:
    return Store.memory()


@pytest.fixture
def file_store(tmp_path: Any) -> Store:
    return Store.from_url(tmp_path / "store")


@pytest.fixture(params=["memory", "file", "s3"])
def store(request: pytest.FixtureRequest) -> Store:
    return request.getfixturevalue(f"{request.param}_store")


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
