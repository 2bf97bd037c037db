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

import uuid
from typing import TYPE_CHECKING

import pytest

from .._store import Store
from ._moto import S3Options, moto_s3

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


@pytest.fixture(scope="session")
def _moto_s3() -> Iterator[S3Options]:
    with moto_s3(_BUCKET) as options:
        yield options


@pytest.fixture(scope="session")
def moto_endpoint(_moto_s3: S3Options) -> str:
    """The URL of a moto S3 server on loopback, started once per session, with the test bucket."""
    return _moto_s3["endpoint"]


@pytest.fixture
def s3_options(_moto_s3: S3Options) -> S3Options:
    """Options for `taquba.Store.from_url` that reach the moto server (``**s3_options``)."""
    return S3Options(**_moto_s3)


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
