"""Pytest fixtures for code built on taquba: stores of every kind, S3 on a local moto server.

Installing taquba does not register this plugin; a test suite opts in from its top-level
``conftest.py`` (pytest refuses ``pytest_plugins`` in a conftest it finds while collecting,
so the conftest must be one pytest loads at startup: the rootdir's, or one in a directory
given on the command line or in ``testpaths``):

    pytest_plugins = ["taquba.testing.pytest_plugin"]

The fixtures:

- ``memory_store``: a fresh in-memory store;
- ``file_store``: a local-disk store under the test's ``tmp_path``;
- ``s3_store``: an S3 store at a fresh key prefix (``s3_url``) of one bucket on a moto
  server, reached with ``s3_options``;
- ``store``: parametrized over the three, with test ids ``memory``, ``file`` and ``s3``;
- ``moto_endpoint``: the URL of the moto S3 server, started once per session on loopback.

Override one by defining a fixture of the same name in a conftest, e.g. a ``store`` with
``params=["memory", "file"]`` to leave S3 out. The S3 fixtures need the ``moto[server]`` and
``boto3`` packages, imported only when a test asks for them.

This module imports pytest; `taquba.testing` itself does not.
"""

from __future__ import annotations

import socket
import uuid
from typing import TYPE_CHECKING, Any, TypedDict, cast

import pytest

from .._store import Store

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

__all__ = [
    "S3Options",
    "file_store",
    "memory_store",
    "moto_endpoint",
    "s3_options",
    "s3_store",
    "s3_url",
    "store",
]

_BUCKET = "taquba-test"
_REGION = "us-east-1"
_KEY = "testing"
_SECRET = "testing"


class S3Options(TypedDict):
    """The keyword arguments of `taquba.Store.from_url` that reach the moto server."""

    endpoint: str
    region: str
    access_key_id: str
    secret_access_key: str
    allow_http: bool


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """The URL of a moto S3 server on loopback, started once per session, with the test bucket."""
    import boto3  # test-only dependencies: imported when a test needs S3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        client = cast(
            "Any",
            boto3.client(  # pyright: ignore[reportUnknownMemberType]
                "s3",
                endpoint_url=endpoint,
                region_name=_REGION,
                aws_access_key_id=_KEY,
                aws_secret_access_key=_SECRET,
            ),
        )
        client.create_bucket(Bucket=_BUCKET)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def s3_options(moto_endpoint: str) -> S3Options:
    """Options for `taquba.Store.from_url` that reach the moto server (``**s3_options``)."""
    return S3Options(
        endpoint=moto_endpoint,
        region=_REGION,
        access_key_id=_KEY,
        secret_access_key=_SECRET,
        allow_http=True,
    )


@pytest.fixture
def s3_url() -> str:
    """A fresh ``s3://`` key prefix of the test bucket, for building more stores on it."""
    return f"s3://{_BUCKET}/t-{uuid.uuid4().hex}"


@pytest.fixture
def memory_store() -> Store:
    """A fresh, private in-memory store."""
    return Store.memory()


@pytest.fixture
def file_store(tmp_path: Path) -> Store:
    """A local-disk store in the ``store`` directory of the test's ``tmp_path``."""
    return Store.from_url(tmp_path / "store")


@pytest.fixture
def s3_store(s3_url: str, s3_options: S3Options) -> Store:
    """An S3 store at a fresh key prefix (``s3_url``) of the bucket on the moto server."""
    return Store.from_url(s3_url, **s3_options)


@pytest.fixture(params=["memory", "file", "s3"])
def store(request: pytest.FixtureRequest) -> Store:
    """Each kind of store in turn: the test runs as ``[memory]``, ``[file]`` and ``[s3]``."""
    return request.getfixturevalue(f"{request.param}_store")
