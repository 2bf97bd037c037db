"""Shared fixtures: stores of every kind (S3 on an in-process moto server) and a test queue.

- ``memory_store``, ``file_store`` (under ``tmp_path``), ``s3_store`` (a fresh key prefix per
  test in one bucket of a session-wide moto server on loopback);
- ``store``: parametrized over the three, with ids ``memory``, ``file`` and ``s3``;
- ``clock``: a `taquba.MockClock` for record timestamps.
"""

from __future__ import annotations

import pathlib
import socket
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from taquba import MockClock, Store

S3_BUCKET = "taquba-workflow-test"
S3_REGION = "us-east-1"
S3_KEY = "testing"
S3_SECRET = "testing"


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
def s3_options(moto_endpoint: str) -> dict[str, Any]:
    return {
        "endpoint": moto_endpoint,
        "region": S3_REGION,
        "access_key_id": S3_KEY,
        "secret_access_key": S3_SECRET,
        "allow_http": True,
    }


@pytest.fixture
def memory_store() -> Store:
    return Store.memory()


@pytest.fixture
def file_store(tmp_path: Any) -> Store:
    return Store.from_url(tmp_path / "store")


@pytest.fixture
def s3_store(s3_options: dict[str, Any]) -> Store:
    return Store.from_url(f"s3://{S3_BUCKET}/t-{uuid.uuid4().hex}", **s3_options)


@pytest.fixture(params=["memory", "file", "s3"])
def store(request: pytest.FixtureRequest) -> Store:
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
def clock() -> MockClock:
    return MockClock()


# Test modules import shared helpers from wf_support.py (next to this file).
sys.path.insert(0, str(pathlib.Path(__file__).parent))
