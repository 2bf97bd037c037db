"""Misconfigured stores fail fast with a permanent `StorageMisconfigured`; outages stay transient.

S3 cases run against the moto server on loopback. moto accepts any credentials unless told to
enforce them, which the ``enforce_auth`` fixture does for one test (moto then knows no keys at
all, so every key is rejected with ``InvalidAccessKeyId``).
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

import pytest
import trio

import taquba
from taquba import StorageMisconfigured, StorageUnavailable, Store

if TYPE_CHECKING:
    import pathlib

    from taquba.testing import S3Options

BOUND = 60  # seconds: only catches a hang


@pytest.fixture
def no_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    return monkeypatch


@pytest.fixture
def enforce_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    import moto.settings

    # moto's own module for request authentication (not in moto 5.1.0, the test floor: the
    # lowest-direct rows skip the tests that need it).
    authorization = pytest.importorskip("moto.core.authorization")
    ActionAuthenticatorMixin = authorization.ActionAuthenticatorMixin

    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    monkeypatch.setattr(ActionAuthenticatorMixin, "request_count", 0)


async def open_fails(store: Store, error: type[Exception], match: str) -> Exception:
    with trio.fail_after(BOUND), pytest.raises(error, match=match) as caught:
        async with taquba.open_queue(store, "q"):
            pass  # pragma: no cover - the open fails
    return caught.value


async def test_a_missing_bucket_is_permanent(s3_options: S3Options) -> None:
    store = Store.from_url("s3://no-such-bucket/p", **s3_options)
    error = await open_fails(store, StorageMisconfigured, "bucket 'no-such-bucket' does not exist")
    assert not error.transient  # type: ignore[attr-defined]
    with pytest.raises(StorageMisconfigured, match="does not exist"):
        await store.put_blob("x", b"1")
    with pytest.raises(StorageMisconfigured):
        await store.check()


@pytest.mark.usefixtures("enforce_auth")
async def test_rejected_credentials_are_permanent(s3_url: str, s3_options: S3Options) -> None:
    options: dict[str, Any] = {**s3_options, "access_key_id": "wrong", "secret_access_key": "x"}
    store = Store.from_url(s3_url, **options)
    error = await open_fails(store, StorageMisconfigured, "rejected the S3 credentials")
    assert "InvalidAccessKeyId" in str(error)
    assert "169.254" not in str(error)
    with pytest.raises(StorageMisconfigured, match="rejected"):
        await store.put_blob("x", b"1")


async def test_no_credentials_at_all_is_permanent(
    no_aws_env: pytest.MonkeyPatch, s3_url: str, s3_options: S3Options
) -> None:
    store = Store.from_url(s3_url, endpoint=s3_options["endpoint"], region="us-east-1")
    error = await open_fails(store, StorageMisconfigured, "no S3 credentials found")
    assert "169.254" not in str(error)  # not the instance metadata URL


async def test_an_unreachable_endpoint_is_transient_and_bounded() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = Store.from_url(
        "s3://bucket/p",
        endpoint=f"http://127.0.0.1:{port}",
        access_key_id="k",
        secret_access_key="s",
        max_retries=0,
    )
    error = await open_fails(store, StorageUnavailable, "cannot reach the S3 endpoint")
    assert error.transient  # type: ignore[attr-defined]


@pytest.mark.parametrize("where", ["root", "db"])
async def test_a_store_path_that_is_a_file_is_permanent(tmp_path: pathlib.Path, where: str) -> None:
    root = tmp_path / "store"
    store = Store.from_url(root)
    if where == "root":
        root.rmdir()
        root.write_bytes(b"")
    else:
        (root / "db").write_bytes(b"")
    await open_fails(store, StorageMisconfigured, "is a file, not a directory")


async def test_a_good_store_checks_out(store: Store) -> None:
    await store.check()
    async with taquba.open_queue(store, "q") as queue:
        await queue.enqueue("q", b"x")
