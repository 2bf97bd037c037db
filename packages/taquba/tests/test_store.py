"""`Store`: URL parsing, database paths and blobs on memory, local and S3 storage."""

from __future__ import annotations

import gc
import os
import pathlib
import socket
import sys
from typing import Any

import pytest
import trio
from fsspec.implementations.memory import MemoryFileSystem

from taquba import _store
from taquba._adapter import Database
from taquba._errors import InvalidQueueName, InvalidStoreUrl, StorageUnavailable, UsageError
from taquba._store import Store

AWS_VARS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ALLOW_HTTP",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def s3_config(store: Store) -> dict[str, str]:
    from taquba import _store_url

    # Tests may peek at what the store resolved; users never need to.
    config = store._s3_config
    assert isinstance(config, _store_url.S3Config)
    return config.object_store_config()


# ---------------------------------------------------------------------------------------------
# URLs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["memory://", "memory:///", "MEMORY://"])
def test_memory_urls(url: str) -> None:
    store = Store.from_url(url)
    assert store.kind == "memory"
    assert store.url == "memory://"
    assert store.max_retries == 3
    assert repr(store) == "Store('memory://')"


def test_memory_stores_are_private() -> None:
    assert Store.memory() is not Store.memory()


def test_file_url(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "a dir" / "store"
    store = Store.from_url(root.as_uri(), max_retries=5)
    assert store.kind == "file"
    assert store.url == root.as_uri()
    assert store.max_retries == 5
    assert root.is_dir()


@pytest.mark.parametrize("name", ["with space", "tilde~and%percent", "plain"])
async def test_directory_names_slatedb_escapes(tmp_path: pathlib.Path, name: str) -> None:
    root = tmp_path / name
    store = Store.from_url(root)
    db = await Database.open(store, "q", flush_interval=0.01)
    await db.put(b"k", b"v")
    await db.close()
    assert (root / "db" / "q" / "manifest").is_dir()
    assert sorted(p.name for p in root.iterdir()) == ["db"]
    db = await Database.open(Store.from_url(root.as_uri()), "q")
    try:
        assert await db.get(b"k") == b"v"
    finally:
        await db.close()


@pytest.mark.parametrize("name", ["space and~tilde", "donn\u00e9es"])
def test_directory_names_slatedb_cannot_use(tmp_path: pathlib.Path, name: str) -> None:
    with pytest.raises(InvalidStoreUrl, match="SlateDB cannot use"):
        Store.from_url(tmp_path / name)


def test_plain_paths(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = Store.from_url("rel/store")
    assert relative.kind == "file"
    assert relative.url == (tmp_path / "rel" / "store").as_uri()
    assert (tmp_path / "rel" / "store").is_dir()
    as_path = Store.from_url(tmp_path / "p")
    assert as_path.url == (tmp_path / "p").as_uri()
    absolute = Store.from_url(str(tmp_path / "abs"))
    assert absolute.url == (tmp_path / "abs").as_uri()
    localhost = Store.from_url(f"file://localhost{tmp_path / 'lh'}")
    assert localhost.url == (tmp_path / "lh").as_uri()


def test_s3_url_with_explicit_options(clean_env: pytest.MonkeyPatch) -> None:
    store = Store.from_url(
        "s3://bucket/some/prefix/",
        endpoint="http://127.0.0.1:9",
        region="eu-west-1",
        access_key_id="AK",
        secret_access_key="SK",
        session_token="TOK",
    )
    assert store.kind == "s3"
    assert store.url == "s3://bucket/some/prefix"
    assert store.db_path("demo") == "some/prefix/db/demo"
    assert s3_config(store) == {
        "aws_bucket": "bucket",
        "aws_allow_http": "true",  # inferred from the http:// endpoint
        "aws_endpoint": "http://127.0.0.1:9",
        "aws_region": "eu-west-1",
        "aws_access_key_id": "AK",
        "aws_secret_access_key": "SK",
        "aws_session_token": "TOK",
    }


def test_s3_url_falls_back_to_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AWS_ENDPOINT", "https://s3.example.test")
    clean_env.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    clean_env.setenv("AWS_ACCESS_KEY_ID", "envkey")
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
    clean_env.setenv("AWS_SESSION_TOKEN", "envtoken")
    store = Store.from_url("s3://bucket")
    assert store.url == "s3://bucket"
    assert store.db_path("q") == "db/q"
    assert s3_config(store) == {
        "aws_bucket": "bucket",
        "aws_allow_http": "false",
        "aws_endpoint": "https://s3.example.test",
        "aws_region": "ap-south-1",
        "aws_access_key_id": "envkey",
        "aws_secret_access_key": "envsecret",
        "aws_session_token": "envtoken",
    }
    # AWS_ENDPOINT_URL and AWS_REGION win over their older spellings.
    clean_env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    clean_env.setenv("AWS_REGION", "us-west-2")
    clean_env.setenv("AWS_ALLOW_HTTP", "true")
    config = s3_config(Store.from_url("s3://bucket"))
    assert config["aws_endpoint"] == "http://127.0.0.1:1"
    assert config["aws_region"] == "us-west-2"
    assert config["aws_allow_http"] == "true"
    # Explicit credentials replace the environment's as a group (no stray session token).
    config = s3_config(Store.from_url("s3://bucket", access_key_id="a", secret_access_key="b"))
    assert (config["aws_access_key_id"], config["aws_secret_access_key"]) == ("a", "b")
    assert "aws_session_token" not in config
    # Explicit options win over the environment.
    config = s3_config(Store.from_url("s3://bucket", endpoint="https://x.test", region="r"))
    assert (config["aws_endpoint"], config["aws_region"]) == ("https://x.test", "r")


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("", {}),
        ("   ", {}),
        ("gs://bucket", {}),
        ("http://example.com/x", {}),
        ("memory:", {}),
        ("memory://name", {}),
        ("memory://", {"endpoint": "http://x"}),
        ("memory://", {"max_retries": -1}),
        ("file:relative/dir", {}),
        ("file://otherhost/dir", {}),
        ("file:///dir?x=1", {}),
        ("/tmp/dir", {"region": "us-east-1"}),
        ("://nothing", {}),
        ("dir\x00name", {}),
        ("s3:bucket", {}),
        ("s3://", {}),
        ("s3://b", {}),
        ("s3://bad bucket/x", {}),
        ("s3://bucket/a//b", {}),
        ("s3://bucket/a/../b", {}),
        ("s3://bucket/x?versionId=1", {}),
        ("s3://bucket", {"endpoint": "ftp://host"}),
        ("s3://bucket", {"endpoint": "http://host", "allow_http": False}),
        ("s3://bucket", {"access_key_id": "only-the-key"}),
        ("s3://bucket", {"session_token": "token-without-keys"}),
    ],
)
def test_invalid_store_urls(
    url: str, options: dict[str, Any], clean_env: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    clean_env.chdir(tmp_path)
    with pytest.raises(InvalidStoreUrl):
        Store.from_url(url, **options)


def test_invalid_aws_allow_http(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AWS_ALLOW_HTTP", "maybe")
    with pytest.raises(InvalidStoreUrl, match="AWS_ALLOW_HTTP"):
        Store.from_url("s3://bucket")


def test_file_store_on_a_regular_file(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "file"
    target.write_bytes(b"")
    with pytest.raises(InvalidStoreUrl):
        Store.from_url(target)


def test_s3_needs_the_extra(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setitem(sys.modules, "s3fs", None)  # makes `import s3fs` fail
    with pytest.raises(InvalidStoreUrl, match=r"taquba\[s3\]"):
        Store.from_url("s3://bucket")


def test_store_is_read_only(memory_store: Store) -> None:
    with pytest.raises(AttributeError):
        memory_store.url = "memory://x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Store(object())


# ---------------------------------------------------------------------------------------------
# Database paths
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("demo", "db/demo"),
        ("a/b", "db/a%2Fb"),
        ("a%2Fb", "db/a%252Fb"),
        ("with space", "db/with space"),
        ("émoji✓", "db/émoji✓"),
        ("100%", "db/100%25"),
        (".", "db/%2E"),
        ("..", "db/%2E%2E"),
        ("...", "db/..."),
    ],
)
def test_db_path_is_one_segment(memory_store: Store, name: str, path: str) -> None:
    assert memory_store.db_path(name) == path


def test_db_path_rejects_an_empty_name(memory_store: Store) -> None:
    with pytest.raises(InvalidQueueName):
        memory_store.db_path("")


async def test_file_store_layout(file_store: Store) -> None:
    root = pathlib.Path(file_store.url.removeprefix("file://"))
    db = await Database.open(file_store, "demo", flush_interval=0.01)
    await db.put(b"k", b"v")
    await db.close()
    await file_store.put_blob("x/y", b"1")
    assert (root / "db" / "demo").is_dir()
    assert (root / "blobs" / "x" / "y").read_bytes() == b"1"


async def test_memory_store_keeps_its_database_across_reopen(memory_store: Store) -> None:
    db = await Database.open(memory_store, "q")
    await db.put(b"k", b"v")
    await db.close()
    db = await Database.open(memory_store, "q")
    try:
        assert await db.get(b"k") == b"v"
    finally:
        await db.close()
    other = await Database.open(Store.memory(), "q")
    try:
        assert await other.get(b"k") is None
    finally:
        await other.close()


# ---------------------------------------------------------------------------------------------
# Blobs
# ---------------------------------------------------------------------------------------------


async def test_blob_round_trip(store: Store) -> None:
    assert await store.get_blob("a/b") is None
    assert await store.put_blob("a/b", b"one") is True
    assert await store.get_blob("a/b") == b"one"
    assert await store.put_blob("a/b", bytearray(b"two")) is True  # overwrite
    assert await store.get_blob("a/b") == b"two"
    assert await store.put_blob("empty", b"") is True
    assert await store.get_blob("empty") == b""
    assert await store.delete_blob("a/b") is True
    assert await store.delete_blob("a/b") is False
    assert await store.get_blob("a/b") is None
    assert await store.delete_blob("never") is False
    assert await store.get_blob("a") is None  # a directory is not a blob
    assert await store.delete_blob("a") is False


async def test_create_only(store: Store) -> None:
    assert await store.put_blob("marker", b"first", create_only=True) is True
    assert await store.put_blob("marker", b"second", create_only=True) is False
    assert await store.get_blob("marker") == b"first"
    assert await store.put_blob("marker", b"third") is True
    assert await store.get_blob("marker") == b"third"


async def test_concurrent_create_only_has_one_winner(store: Store) -> None:
    results: list[bool] = []

    async def create(index: int) -> None:
        results.append(await store.put_blob("race/x", b"%d" % index, create_only=True))

    async with trio.open_nursery() as nursery:
        for index in range(8):
            nursery.start_soon(create, index)
    assert sorted(results) == [False] * 7 + [True]
    winner = results.index(True)
    assert winner >= 0
    assert await store.get_blob("race/x") in {b"%d" % i for i in range(8)}


async def test_list_blobs_respects_path_segments(store: Store) -> None:
    for path in ["run-1/a", "run-1/b/c", "run-10/a", "run-1.txt", "run-2/z", "top"]:
        await store.put_blob(path, path.encode())
    assert await store.list_blobs("run-1") == ["a", "b/c"]
    assert await store.list_blobs("run-1/") == ["a", "b/c"]
    assert await store.list_blobs("run-10") == ["a"]
    assert await store.list_blobs("run-1/b") == ["c"]
    assert await store.list_blobs("run-3") == []
    assert await store.list_blobs("top") == []  # a blob, not a directory
    assert await store.list_blobs("") == [
        "run-1.txt",
        "run-1/a",
        "run-1/b/c",
        "run-10/a",
        "run-2/z",
        "top",
    ]
    assert await store.list_blobs("", start_after="run-10/a") == ["run-2/z", "top"]
    assert await store.list_blobs("", limit=2) == ["run-1.txt", "run-1/a"]
    assert await store.list_blobs("run-1", start_after="a", limit=5) == ["b/c"]
    assert await store.list_blobs("run-1", limit=0) == []


_TRICKY_NAMES = [  # no name is also a directory: a file system cannot hold both
    "a-c",
    "a.b/x",
    "a/b-1",
    "a/b/c",
    "a/b/d/e",
    "a/ba",
    "a0",
    "b/\u00e9t\u00e9",
    "b/z",
    "c",
]


async def test_paged_listings_match_a_filtered_full_listing(store: Store) -> None:
    # Local and S3 stores push start_after and limit down (skipping directories they are past,
    # S3 StartAfter); the result must equal filtering the full sorted listing, including where
    # '-' and '.' sort before '/', and for start_after values that are not names.
    for name in _TRICKY_NAMES:
        await store.put_blob(f"root/{name}", b"1")
    await store.put_blob("rootx", b"1")  # a sibling sharing the directory's prefix
    everything = sorted(_TRICKY_NAMES)
    assert await store.list_blobs("root") == everything
    offsets = [None, "", "a", "a/", "a/b", "a/b/", "a/b/c", "a/b0", "a.", "a/c", "b", "zz"]
    for start_after in offsets:
        expected = [n for n in everything if start_after is None or n > start_after]
        for limit in (None, 1, 2, 5):
            got = await store.list_blobs("root", start_after=start_after, limit=limit)
            assert got == expected[:limit], (start_after, limit)
    assert await store.list_blobs("root/a", start_after="b/c") == ["b/d/e", "ba"]
    assert await store.list_blobs("root/a/b", limit=1) == ["c"]


async def test_a_long_s3_listing_pages_through_continuations(
    s3_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Several ListObjectsV2 pages (7 keys a page here), with and without a limit.
    monkeypatch.setattr(_store, "_S3_LIST_PAGE", 7)
    async with trio.open_nursery() as nursery:
        for i in range(40):
            nursery.start_soon(s3_store.put_blob, f"many/{i:05d}", b"")
    names = await s3_store.list_blobs("many")
    assert names == [f"{i:05d}" for i in range(40)]
    assert await s3_store.list_blobs("many", start_after="00010", limit=20) == names[11:31]
    assert await s3_store.list_blobs("many", start_after="00036") == names[37:]


async def test_blob_paths_are_validated(memory_store: Store) -> None:
    for bad in ["", "/abs", "a//b", "a/", "./a", "a/../b", "a/.", "nul\x00", ".taquba-tmp-x"]:
        with pytest.raises(UsageError):
            await memory_store.put_blob(bad, b"x")
        with pytest.raises(UsageError):
            await memory_store.get_blob(bad)
    with pytest.raises(UsageError):
        await memory_store.list_blobs("a/../b")
    with pytest.raises(UsageError):
        await memory_store.list_blobs("a", limit=-1)


async def test_memory_blobs_are_private_to_their_store() -> None:
    one, two = Store.memory(), Store.memory()
    await one.put_blob("x", b"1")
    assert await two.get_blob("x") is None
    assert await two.list_blobs("") == []


async def test_a_collected_memory_store_leaves_the_shared_dict_alone_until_locked() -> None:
    # A finalizer runs wherever the collector runs, e.g. while another thread lists fsspec's
    # process-wide memory dict under the lock. It must not change the dict then (CI saw
    # "dictionary changed size during iteration"); its blobs go at the next locked blob call.
    doomed = Store.memory()
    await doomed.put_blob("a/b", b"1")
    shared: dict[str, Any] = MemoryFileSystem.store
    mine = [key for key in shared if key.startswith(doomed._blob_root)]  # pyright: ignore[reportPrivateUsage]
    assert len(mine) == 1
    with _store._MEMORY_FS_LOCK:  # pyright: ignore[reportPrivateUsage]  # a listing in progress
        del doomed
        gc.collect()
        assert all(key in shared for key in mine)
    survivor = Store.memory()
    assert await survivor.list_blobs("") == []
    assert not any(key in shared for key in mine)


async def test_fs_is_rooted_at_the_blob_namespace(store: Store) -> None:
    await store.put_blob("dir/blob", b"data")

    def read() -> bytes:
        return store.fs.cat_file("dir/blob")

    assert await trio.to_thread.run_sync(read) == b"data"


async def test_large_blob(store: Store) -> None:
    data = os.urandom(3 << 20)
    assert await store.put_blob("big/blob", data)
    assert await store.get_blob("big/blob") == data


async def test_local_writes_leave_no_temporary_files(file_store: Store) -> None:
    for i in range(5):
        await file_store.put_blob("d/x", b"%d" % i)
        await file_store.put_blob("d/x", b"again", create_only=True)
    root = pathlib.Path(file_store.url.removeprefix("file://")) / "blobs" / "d"
    assert sorted(p.name for p in root.iterdir()) == ["x"]
    assert await file_store.list_blobs("d") == ["x"]


async def test_unreachable_s3_blob_calls_fail_in_bounded_time() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = Store.from_url(
        "s3://nowhere/p",
        endpoint=f"http://127.0.0.1:{port}",
        access_key_id="k",
        secret_access_key="s",
        max_retries=0,
    )
    with trio.fail_after(30):
        with pytest.raises(StorageUnavailable):
            await store.get_blob("x")
        with pytest.raises(StorageUnavailable):
            await store.put_blob("x", b"1", create_only=True)


async def test_s3_store_reopened_by_url_sees_the_same_data(
    s3_url: str, s3_options: dict[str, Any]
) -> None:
    first = Store.from_url(s3_url, **s3_options)
    await first.put_blob("shared", b"1")
    db = await Database.open(first, "q", flush_interval=0.01)
    await db.put(b"k", b"v")
    await db.close()
    second = Store.from_url(s3_url, **s3_options)
    assert await second.get_blob("shared") == b"1"
    db = await Database.open(second, "q", flush_interval=0.01)
    try:
        assert await db.get(b"k") == b"v"
    finally:
        await db.close()
