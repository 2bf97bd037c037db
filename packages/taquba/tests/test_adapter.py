"""The SlateDB adapter: bridge, byte-copy patch, error mapping, scans, transactions, fencing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
import slatedb.uniffi as sdb
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taquba import _adapter
from taquba._adapter import (
    Database,
    Transaction,
    TransactionConflict,
    run_transaction,
)
from taquba._errors import (
    DataError,
    Fenced,
    QueueClosed,
    StorageError,
    StorageFatal,
    StorageUnavailable,
    TaqubaError,
    UsageError,
)
from taquba._store import Store

FAST = 0.01  # flush interval for tests


async def open_db(store: Store, name: str = "q", **kwargs: Any) -> Database:
    kwargs.setdefault("flush_interval", FAST)
    return await Database.open(store, name, **kwargs)


# ---------------------------------------------------------------------------------------------
# Bridge and patch
# ---------------------------------------------------------------------------------------------


def test_shim_and_patch_are_installed() -> None:
    # This environment pins the tested slatedb release, so the fast path must be active.
    assert _adapter.BRIDGE == "shim"
    assert _adapter.BYTES_PATCHED


def test_async_calls_take_the_streamlined_path() -> None:
    import slatedb.uniffi._slatedb_uniffi.slatedb as generated

    assert generated._uniffi_rust_call_async is _adapter._fast_call_async
    assert generated._taquba_stock_call_async is _adapter._STOCK_CALL_ASYNC
    assert _adapter._STOCK_CALL_ASYNC.__module__ == generated.__name__


async def test_a_cancelled_parked_call_forgets_its_poll(memory_store: Store) -> None:
    # A durability wait parks until a WAL flush. Cancelling it while parked must drop the
    # shim's record of the poll at once and free the Rust future; the write itself stays.
    db = await open_db(memory_store, flush_interval=5)
    try:
        parked = 0
        for i in range(20):
            handle = await _adapter._call(db._db.put, b"k%d" % i, b"v")
            with trio.move_on_after(0.001) as scope:
                await _adapter._call(handle.await_durable)
            if scope.cancelled_caught:
                parked += 1
                assert _pending_continuations() == 0
        assert parked > 0
        await db.flush()
        assert await db.get(b"k19") == b"v"
    finally:
        await db.close()


def test_a_second_import_would_keep_the_shim() -> None:
    # Our own event loop is already installed; the checks must not mistake it for a foreign one.
    assert _adapter._private_api_problem() is None
    assert _adapter._STOCK_WRITE.__module__ == "slatedb.uniffi._slatedb_uniffi.slatedb"
    assert _adapter._builder_cls._taquba_stock_write is _adapter._STOCK_WRITE


def _builder_bytes(write: Any, pack: Any, chunks: list[bytes]) -> bytes:
    builder = _adapter._builder_cls()
    try:
        for chunk in chunks:
            pack(builder, 4, ">i", len(chunk))
            write(builder, chunk)
            pack(builder, 8, ">q", -len(chunk))
        return bytes(builder.rbuf.data[0 : int(builder.rbuf.len)])
    finally:
        builder.discard()


@pytest.mark.skipif(not _adapter.BYTES_PATCHED, reason="byte-copy patch not installed")
@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=8))
def test_patched_builder_writes_the_same_bytes_as_the_generated_one(chunks: list[bytes]) -> None:
    stock = _builder_bytes(_adapter._STOCK_WRITE, _adapter._STOCK_PACK_INTO, chunks)
    patched = _builder_bytes(_adapter._fast_write, _adapter._fast_pack_into, chunks)
    assert patched == stock


@pytest.mark.skipif(not _adapter.BYTES_PATCHED, reason="byte-copy patch not installed")
@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=5000), st.sampled_from(["bytes", "bytearray", "memoryview"]))
def test_patched_lowering_matches_the_generated_one(data: bytes, kind: str) -> None:
    value: Any = {"bytes": data, "bytearray": bytearray(data), "memoryview": memoryview(data)}[kind]
    stock = _adapter._lowered_bytes(_adapter._STOCK_LOWER, value)
    assert _adapter._lowered_bytes(_adapter._fast_lower_bytes, value) == stock
    assert stock[4:] == data


async def test_bytes_like_values_round_trip(memory_store: Store) -> None:
    db = await open_db(memory_store)
    try:
        txn = await db.begin()
        await txn.put(b"a", bytearray(b"from a bytearray"))  # pyright: ignore[reportArgumentType]
        await txn.put(memoryview(b"xxkeyxx")[2:5], memoryview(b"<view>")[1:5])  # pyright: ignore[reportArgumentType]
        await txn.commit(durable=False)
        assert await db.get(b"a") == b"from a bytearray"
        assert await db.get(b"key") == b"view"
    finally:
        await db.close()


class _Ticks:
    count = 0


@contextlib.asynccontextmanager
async def _ticking() -> AsyncIterator[_Ticks]:
    """Run, for the block's length, a task that counts how often it gets to run."""
    ticks = _Ticks()

    async def tick() -> None:
        while True:
            ticks.count += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick)
        await trio.lowlevel.checkpoint()
        yield ticks
        nursery.cancel_scope.cancel()


async def test_calls_completing_in_place_still_let_other_tasks_run(memory_store: Store) -> None:
    # Transaction reads and buffered writes usually complete during their poll, without
    # yielding; the shim must still checkpoint now and then so a long loop cannot starve others.
    db = await open_db(memory_store)
    try:
        async with _ticking() as ticks:
            txn = await db.begin()
            before = ticks.count
            for i in range(2_000):
                await txn.put(b"k%05d" % i, b"v")
                assert await txn.get(b"k%05d" % i) == b"v"
            # 4,000 calls: at least one checkpoint per 64 of them, whatever the exact limit
            assert _adapter._FAST_STREAK_LIMIT <= 64
            assert ticks.count - before >= 4_000 // 64
            await txn.rollback()
    finally:
        await db.close()


async def test_large_values_round_trip_at_and_around_the_threshold(store: Store) -> None:
    db = await open_db(store)
    limit = _adapter.LARGE_VALUE_BYTES
    values = {
        b"below": os.urandom(limit - 1),
        b"at": os.urandom(limit),
        b"big": os.urandom(3 << 20),
        b"empty-key-neighbour": b"",
    }
    try:
        txn = await db.begin()
        for key, value in values.items():
            await txn.put(key, value)
        assert await txn.get(b"big") == values[b"big"]  # read-your-writes before commit
        await txn.put(b"at", values[b"below"])  # a later small write replaces a large one
        await txn.commit(durable=True)
        assert await db.get(b"at") == values[b"below"]
        for key in (b"below", b"big", b"empty-key-neighbour"):
            assert await db.get(key) == values[key]
    finally:
        await db.close()


@pytest.mark.skipif(_adapter._LARGE_PUT is None, reason="large puts stay on the event loop")
async def test_a_large_put_lets_other_tasks_run(memory_store: Store) -> None:
    # Handing a value over takes the binding about 6 ms per MiB; from LARGE_VALUE_BYTES on that
    # happens in a worker thread. On the loop, the put of 16 MiB would not yield at all
    # (buffered transaction writes complete during their poll), so the ticker would not run.
    db = await open_db(memory_store)
    try:
        txn = await db.begin()
        async with _ticking() as ticks:
            before = ticks.count
            await txn.put(b"k", b"x" * (16 << 20))
            assert ticks.count - before > 5
        await txn.commit(durable=False)
        assert await db.get(b"k") == b"x" * (16 << 20)
    finally:
        await db.close()


async def test_cancelling_large_puts_loses_no_completed_write(memory_store: Store) -> None:
    # A large put is either buffered (then committed) or not; cancellation at random points
    # leaves no pending continuation and no half-written value.
    db = await open_db(memory_store)
    rng = random.Random(7)
    value = bytes(range(256)) * (_adapter.LARGE_VALUE_BYTES // 256 * 4)
    written: list[bytes] = []
    try:
        for i in range(30):
            txn = await db.begin()
            key = b"L%02d" % i
            with trio.move_on_after(rng.choice([0, 0.00005, 0.0005, 5])) as scope:
                await txn.put(key, value)
            if not scope.cancelled_caught:
                written.append(key)
            await txn.commit(durable=False)
        for _ in range(500):
            if not _pending_continuations():
                break
            await trio.sleep(0.01)
        assert _pending_continuations() == 0
        assert written  # the 5 s budget always suffices
        for i in range(30):
            key = b"L%02d" % i
            got = await db.get(key)
            if key in written:
                assert got == value
            else:
                assert got in (None, value)  # cancelled after the write was buffered
    finally:
        await db.close()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.dictionaries(
        st.binary(min_size=1, max_size=80),
        st.binary(max_size=5000),
        min_size=1,
        max_size=12,
    )
)
async def test_random_keys_and_values_round_trip(items: dict[bytes, bytes]) -> None:
    db = await open_db(Store.memory())
    try:
        for key, value in items.items():
            await db.put(key, value, durable=False)
        txn = await db.begin()
        for key, value in items.items():
            await txn.put(key + b"/t", value[::-1])
        await txn.commit(durable=False)
        for key, value in items.items():
            assert await db.get(key) == value
            assert await db.get(key + b"/t") == value[::-1]
        rows = await db.scan(b"", batch_size=7)
        expected = {**items, **{k + b"/t": v[::-1] for k, v in items.items()}}
        assert rows == sorted(expected.items())
    finally:
        await db.close()


async def test_one_mib_value_round_trips(store: Store) -> None:
    value = random.Random(7).randbytes(1 << 20)
    db = await open_db(store)
    try:
        await db.put(b"big", value)
        assert await db.get(b"big") == value
        txn = await db.begin()
        await txn.put(b"big2", value[::-1])
        await txn.commit(durable=True)
        assert await db.get(b"big2") == value[::-1]
    finally:
        await db.close()


# ---------------------------------------------------------------------------------------------
# Error mapping
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (sdb.Error.Transaction("Transaction error: transaction conflict"), TransactionConflict),
        (sdb.Error.Closed(sdb.CloseReason.FENCED, "detected newer DB client"), Fenced),
        (sdb.Error.Closed(sdb.CloseReason.CLEAN, "db is closed"), QueueClosed),
        (sdb.Error.Closed(sdb.CloseReason.PANIC, "panicked"), StorageFatal),
        (sdb.Error.Closed(sdb.CloseReason.UNKNOWN, "?"), StorageFatal),
        (sdb.Error.Internal("read channel error"), StorageFatal),
        (sdb.InternalError("ffi"), StorageFatal),
        (sdb.Error.Unavailable("object store error"), StorageUnavailable),
        (sdb.Error.Data("corrupt"), DataError),
        (sdb.Error.Invalid("key cannot be empty"), StorageError),
    ],
)
def test_errors_map_by_class_and_reason(error: Exception, expected: type[Exception]) -> None:
    with pytest.raises(expected) as info, _adapter.map_errors():
        raise error
    assert type(info.value) is expected
    assert info.value.__cause__ is error
    assert str(getattr(error, "message", error)) in str(info.value)


def test_transaction_conflict_is_not_a_public_error() -> None:
    assert not issubclass(TransactionConflict, TaqubaError)


def test_foreign_errors_pass_through() -> None:
    with pytest.raises(KeyError), _adapter.map_errors():
        raise KeyError("x")


async def test_invalid_calls_map_to_storage_error(memory_store: Store) -> None:
    db = await open_db(memory_store)
    try:
        with pytest.raises(StorageError, match="key cannot be empty") as info:
            await db.put(b"", b"v")
        assert type(info.value) is StorageError
    finally:
        await db.close()


# ---------------------------------------------------------------------------------------------
# Basic operations
# ---------------------------------------------------------------------------------------------


async def test_get_put_scan_delete_round_trip(store: Store) -> None:
    db = await open_db(store)
    try:
        assert await db.get(b"k1") is None
        await db.put(b"k1", b"v1")
        await db.put(b"k2", b"v2", durable=False)
        await db.put(b"other", b"x")
        assert await db.get(b"k1") == b"v1"
        assert await db.get(b"k2") == b"v2"
        assert await db.scan(b"k") == [(b"k1", b"v1"), (b"k2", b"v2")]
        assert await db.last(b"k") == (b"k2", b"v2")
        await db.delete(b"k1")
        await db.delete(b"k2", durable=False)
        assert await db.get(b"k1") is None
        assert await db.scan(b"k") == []
        assert await db.last(b"k") is None
        await db.flush()
        assert db.close_reason() is None
        db.check()
    finally:
        await db.close()
    assert db.close_reason() == "clean"


async def test_data_survives_reopen(store: Store) -> None:
    db = await open_db(store)
    await db.put(b"a", b"1")
    await db.close()
    db = await open_db(store)
    try:
        assert await db.get(b"a") == b"1"
    finally:
        await db.close()


async def test_databases_with_different_names_are_separate(store: Store) -> None:
    one = await open_db(store, "one")
    two = await open_db(store, "two/with slash")
    try:
        await one.put(b"k", b"1")
        await two.put(b"k", b"2")
        assert await one.get(b"k") == b"1"
        assert await two.get(b"k") == b"2"
        one.check()  # opening "two" did not fence "one"
    finally:
        await one.close()
        await two.close()


async def test_closed_database_raises_queue_closed(memory_store: Store) -> None:
    db = await open_db(memory_store)
    await db.close()
    await db.close()  # idempotent
    assert db.close_reason() == "clean"
    with pytest.raises(QueueClosed):
        db.check()
    with pytest.raises(QueueClosed):
        await db.get(b"a")
    with pytest.raises(QueueClosed):
        await db.put(b"a", b"1")


async def test_open_validates_arguments(memory_store: Store) -> None:
    with pytest.raises(UsageError):
        await Database.open(memory_store, "q", flush_interval=0)
    with pytest.raises(UsageError):
        await Database.open(memory_store, "q", manifest_poll_interval=-1)
    with pytest.raises(UsageError):
        await Database.open(memory_store, "q", max_retries=-1)


# ---------------------------------------------------------------------------------------------
# Scans: full-key bounds become prefix-relative ranges
# ---------------------------------------------------------------------------------------------

SCAN_KEYS = [b"o", b"oz", b"p", b"p\x00", b"pa", b"pa1", b"pb", b"pc", b"pd", b"q", b"q1"]


@pytest.fixture
async def scan_db(memory_store: Store) -> Any:
    db = await open_db(memory_store)
    for key in SCAN_KEYS:
        await db.put(key, key.upper(), durable=False)
    try:
        yield db
    finally:
        await db.close()


def model_scan(
    prefix: bytes,
    start: bytes | None,
    start_inclusive: bool,
    end: bytes | None,
    limit: int | None,
    reverse: bool = False,
) -> list[bytes]:
    keys = [k for k in sorted(SCAN_KEYS) if k.startswith(prefix)]
    if start is not None:
        keys = [k for k in keys if k > start or (start_inclusive and k == start)]
    if end is not None:
        keys = [k for k in keys if k < end]
    if reverse:
        keys.reverse()
    return keys if limit is None else keys[:limit]


async def test_scan_bounds(scan_db: Database) -> None:
    async def keys(**kwargs: Any) -> list[bytes]:
        return [k for k, _ in await scan_db.scan(b"p", **kwargs)]

    assert await keys() == [b"p", b"p\x00", b"pa", b"pa1", b"pb", b"pc", b"pd"]
    assert await keys(start=b"pb") == [b"pb", b"pc", b"pd"]
    assert await keys(start=b"pb", start_inclusive=False) == [b"pc", b"pd"]
    assert await keys(end=b"pb") == [b"p", b"p\x00", b"pa", b"pa1"]
    assert await keys(start=b"pa", end=b"pc") == [b"pa", b"pa1", b"pb"]
    assert await keys(start=b"pa", start_inclusive=False, end=b"pc") == [b"pa1", b"pb"]
    assert await keys(start=b"p", start_inclusive=False) == [
        b"p\x00",
        b"pa",
        b"pa1",
        b"pb",
        b"pc",
        b"pd",
    ]
    assert await keys(limit=2) == [b"p", b"p\x00"]
    assert await keys(limit=0) == []
    assert await keys(end=b"p") == []
    assert await keys(start=b"pc", end=b"pc") == []
    assert await keys(start=b"pd", end=b"pb") == []
    assert await keys(reverse=True, limit=2) == [b"pd", b"pc"]
    assert await keys(start=b"pa", end=b"pc", reverse=True) == [b"pb", b"pa1", b"pa"]
    assert await scan_db.scan(b"pa", batch_size=1) == [(b"pa", b"PA"), (b"pa1", b"PA1")]
    assert await scan_db.last(b"p") == (b"pd", b"PD")
    assert await scan_db.last(b"r") is None
    assert [k for k, _ in await scan_db.scan(b"")] == sorted(SCAN_KEYS)


async def test_scan_matches_a_model(scan_db: Database) -> None:
    rng = random.Random(1234)
    candidates = [*SCAN_KEYS, b"pa0", b"pz", b"pb\xff", b"p\xff\xff"]
    for _ in range(150):
        prefix = rng.choice([b"", b"p", b"pa", b"q", b"o", b"x"])
        under = [k for k in candidates if k.startswith(prefix)] or [prefix + b"m"]
        start = rng.choice([None, *under])
        end = rng.choice([None, *under])
        start_inclusive = rng.random() < 0.5
        limit = rng.choice([None, 0, 1, 2, 3, 10])
        reverse = rng.random() < 0.3
        got = await scan_db.scan(
            prefix,
            start=start,
            start_inclusive=start_inclusive,
            end=end,
            limit=limit,
            reverse=reverse,
            batch_size=rng.choice([1, 2, 256]),
        )
        expected = model_scan(prefix, start, start_inclusive, end, limit, reverse)
        assert [k for k, _ in got] == expected, (prefix, start, start_inclusive, end, limit)
        assert all(v == k.upper() for k, v in got)


async def test_scan_rejects_bounds_outside_the_prefix(scan_db: Database) -> None:
    with pytest.raises(UsageError):
        await scan_db.scan(b"p", start=b"oz")
    with pytest.raises(UsageError):
        await scan_db.scan(b"p", end=b"q")
    with pytest.raises(UsageError):
        await scan_db.scan(b"p", limit=-1)
    with pytest.raises(UsageError):
        await scan_db.scan(b"p", batch_size=0)


async def test_transaction_scan_sees_its_own_writes(scan_db: Database) -> None:
    txn = await scan_db.begin()
    try:
        await txn.put(b"pb1", b"new")
        await txn.delete(b"pc")
        assert [k for k, _ in await txn.scan(b"pb")] == [b"pb", b"pb1"]
        assert [k for k, _ in await txn.scan(b"p", start=b"pb", end=b"pd")] == [b"pb", b"pb1"]
        assert await txn.last(b"pb") == (b"pb1", b"new")
        assert await txn.get(b"pc") is None
        assert await scan_db.get(b"pb1") is None
    finally:
        await txn.rollback()
    assert await scan_db.get(b"pb1") is None
    assert await scan_db.get(b"pc") == b"PC"


# ---------------------------------------------------------------------------------------------
# Transactions
# ---------------------------------------------------------------------------------------------


async def test_write_write_conflict_raises_transaction_conflict(memory_store: Store) -> None:
    db = await open_db(memory_store)
    try:
        first = await db.begin()
        second = await db.begin()
        await first.put(b"a", b"1")
        await second.put(b"a", b"2")
        await first.commit(durable=True)
        with pytest.raises(TransactionConflict):
            await second.commit(durable=True)
        await second.rollback()  # harmless after completion
        assert await db.get(b"a") == b"1"
    finally:
        await db.close()


async def test_unmark_write_lets_concurrent_writers_commit(memory_store: Store) -> None:
    db = await open_db(memory_store)
    try:
        first = await db.begin()
        second = await db.begin()
        for txn, value in ((first, b"1"), (second, b"2")):
            await txn.put(b"stats", value)
            await txn.unmark_write([b"stats"])
        await first.commit(durable=False)
        await second.commit(durable=False)
        assert await db.get(b"stats") == b"2"
    finally:
        await db.close()


async def test_empty_commit_and_rollback(memory_store: Store) -> None:
    db = await open_db(memory_store)
    try:
        txn = await db.begin()
        assert await txn.get(b"nothing") is None
        await txn.commit(durable=True)  # nothing written: no WriteHandle to wait for
        await txn.rollback()
        txn = await db.begin()
        await txn.put(b"a", b"1")
        await txn.rollback()
        await txn.rollback()
        assert await db.get(b"a") is None
    finally:
        await db.close()


async def test_run_transaction_retries_after_a_conflicting_writer(memory_store: Store) -> None:
    db = await open_db(memory_store)
    await db.put(b"counter", b"0")
    attempts = 0

    async def increment(txn: Transaction) -> int:
        nonlocal attempts
        attempts += 1
        value = int(await txn.get(b"counter") or b"0")
        if attempts == 1:
            # A concurrent writer commits between our read and our commit.
            await db.put(b"counter", b"10")
        await txn.put(b"counter", str(value + 1).encode())
        return value + 1

    try:
        assert await run_transaction(db, increment, durable=True) == 11
        assert attempts == 2
        assert await db.get(b"counter") == b"11"
    finally:
        await db.close()


async def test_run_transaction_under_concurrency(memory_store: Store) -> None:
    db = await open_db(memory_store)

    async def increment(txn: Transaction) -> None:
        value = int(await txn.get(b"n") or b"0")
        await trio.lowlevel.checkpoint()  # let the others interleave
        await txn.put(b"n", str(value + 1).encode())

    try:
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(lambda: run_transaction(db, increment, durable=False))
        assert await db.get(b"n") == b"20"
    finally:
        await db.close()


async def test_run_transaction_gives_up_after_max_attempts(memory_store: Store) -> None:
    db = await open_db(memory_store)
    attempts = 0

    async def always_conflicts(txn: Transaction) -> None:
        nonlocal attempts
        attempts += 1
        await txn.put(b"a", b"mine")
        await db.put(b"a", b"theirs", durable=False)

    try:
        with pytest.raises(StorageError, match="kept conflicting") as info:
            await run_transaction(db, always_conflicts, durable=False, max_attempts=3)
        assert type(info.value) is StorageError
        assert isinstance(info.value.__cause__, TransactionConflict)
        assert attempts == 3
    finally:
        await db.close()


async def test_run_transaction_rolls_back_on_error(memory_store: Store) -> None:
    db = await open_db(memory_store)

    async def fails(txn: Transaction) -> None:
        await txn.put(b"a", b"1")
        raise ValueError("boom")

    try:
        with pytest.raises(ValueError, match="boom"):
            await run_transaction(db, fails, durable=True)
        assert await db.get(b"a") is None
        with pytest.raises(UsageError):
            await run_transaction(db, fails, durable=True, max_attempts=0)
    finally:
        await db.close()


async def test_durable_commit_survives_a_crash(tmp_path: Any) -> None:
    url = tmp_path / "crash"
    db = await open_db(Store.from_url(url))
    txn = await db.begin()
    await txn.put(b"durable", b"yes")
    await txn.commit(durable=True)
    await db.put(b"put-durable", b"yes")
    # No close: another process (a new Store on the same directory) takes over.
    survivor = await open_db(Store.from_url(url))
    try:
        assert await survivor.get(b"durable") == b"yes"
        assert await survivor.get(b"put-durable") == b"yes"
    finally:
        await survivor.close()
        await db.close()


async def test_non_durable_commit_is_kept_by_a_clean_close(tmp_path: Any) -> None:
    url = tmp_path / "clean"
    db = await open_db(Store.from_url(url), flush_interval=60.0)
    txn = await db.begin()
    await txn.put(b"lazy", b"yes")
    await txn.commit(durable=False)
    await db.put(b"lazy-put", b"yes", durable=False)
    await db.close()
    db = await open_db(Store.from_url(url))
    try:
        assert await db.get(b"lazy") == b"yes"
        assert await db.get(b"lazy-put") == b"yes"
    finally:
        await db.close()


# ---------------------------------------------------------------------------------------------
# Cancellation
# ---------------------------------------------------------------------------------------------


async def test_reads_are_cancellable(memory_store: Store) -> None:
    db = await open_db(memory_store)
    try:
        for i in range(300):
            await db.put(b"k%04d" % i, b"v" * 100, durable=False)
        with trio.CancelScope() as scope:
            scope.cancel()
            await db.get(b"k0001")
        assert scope.cancelled_caught
        with trio.CancelScope() as scope:
            scope.cancel()
            await db.scan(b"k", batch_size=1)
        assert scope.cancelled_caught
        txn = await db.begin()
        with trio.CancelScope() as scope:
            scope.cancel()
            await txn.get(b"k0001")
        assert scope.cancelled_caught
        await txn.rollback()
        # Still healthy afterwards.
        assert await db.get(b"k0001") == b"v" * 100
        assert len(await db.scan(b"k")) == 300
    finally:
        await db.close()


def _pending_continuations() -> int:
    import slatedb.uniffi._slatedb_uniffi.slatedb as generated

    # The generated handle map (asyncio callers) and the shim's own (trio callers).
    return len(generated._UniffiContinuationHandleMap) + len(_adapter._waiting_polls)


async def test_random_cancellation_leaves_no_pending_continuations(memory_store: Store) -> None:
    db = await open_db(memory_store)
    rng = random.Random(99)

    async def worker(index: int) -> None:
        for i in range(40):
            with trio.move_on_after(rng.choice([0, 0.0001, 0.001, 1])):
                if i % 3:
                    await db.get(b"w%d" % index)
                else:
                    await db.scan(b"w", limit=5)
            await db.put(b"w%d" % index, b"%d" % i, durable=False)

    try:
        async with trio.open_nursery() as nursery:
            for index in range(16):
                nursery.start_soon(worker, index)
        for _ in range(500):
            if not _pending_continuations():
                break
            await trio.sleep(0.01)
        assert _pending_continuations() == 0
        assert await db.get(b"w3") == b"39"
    finally:
        await db.close()


async def test_cancelled_commit_still_completes(memory_store: Store) -> None:
    db = await open_db(memory_store, flush_interval=0.05)
    try:
        txn = await db.begin()
        await txn.put(b"a", b"1")
        with trio.CancelScope() as scope:
            scope.cancel()
            await txn.commit(durable=True)  # shielded: runs to the end
            assert db.close_reason() is None
            await trio.lowlevel.checkpoint()  # the cancellation lands here
        assert scope.cancelled_caught
        assert await db.get(b"a") == b"1"

        with trio.move_on_after(0.001):
            await db.put(b"b", b"2", durable=True)
        assert await db.get(b"b") == b"2"
    finally:
        await db.close()


async def test_close_runs_even_when_cancelled(memory_store: Store) -> None:
    db = await open_db(memory_store)
    with trio.CancelScope() as scope:
        scope.cancel()
        await db.close()
    assert db.close_reason() == "clean"


# ---------------------------------------------------------------------------------------------
# Fencing
# ---------------------------------------------------------------------------------------------


async def test_second_writer_fences_the_first(store: Store) -> None:
    first = await open_db(store)
    await first.put(b"before", b"1")
    second = await open_db(store)

    async def write_until_fenced() -> None:
        for _ in range(100):  # the next WAL flush notices
            await first.put(b"after", b"x")

    async def transaction() -> None:
        txn = await first.begin()
        await txn.put(b"t", b"1")
        await txn.commit(durable=True)

    try:
        with pytest.raises(Fenced):
            await write_until_fenced()
        assert first.close_reason() == "fenced"
        with pytest.raises(Fenced):
            first.check()
        with pytest.raises(Fenced):
            await first.watch(interval=0.01)
        with pytest.raises(Fenced):
            await transaction()
        assert await second.get(b"before") == b"1"
        await second.put(b"mine", b"2")
        assert await second.get(b"mine") == b"2"
    finally:
        await first.close()  # never raises on a fenced database
        await second.close()


async def test_idle_writer_learns_it_was_fenced(memory_store: Store) -> None:
    first = await open_db(memory_store, manifest_poll_interval=0.02)
    second = await open_db(memory_store)
    try:
        with trio.fail_after(20), pytest.raises(Fenced):
            await first.watch(interval=0.01)
    finally:
        await first.close()
        await second.close()


async def test_watch_returns_after_a_clean_close(memory_store: Store) -> None:
    db = await open_db(memory_store)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: db.watch(interval=0.01))
        await trio.sleep(0.03)
        await db.close()
    assert db.close_reason() == "clean"


# ---------------------------------------------------------------------------------------------
# Failure modes
# ---------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_misconfigured_s3_fails_open_with_storage_unavailable() -> None:
    store = Store.from_url(
        "s3://nowhere/prefix",
        endpoint=f"http://127.0.0.1:{_closed_port()}",
        access_key_id="k",
        secret_access_key="s",
        region="us-east-1",
        max_retries=0,
    )
    with trio.fail_after(30), pytest.raises(StorageUnavailable):
        await Database.open(store, "q")


async def test_open_deadline_bounds_a_slow_open() -> None:
    store = Store.from_url(
        "s3://nowhere/prefix",
        endpoint=f"http://127.0.0.1:{_closed_port()}",
        access_key_id="k",
        secret_access_key="s",
        max_retries=50,
    )
    with trio.fail_after(30), pytest.raises(StorageUnavailable, match="took longer"):
        await Database.open(store, "q", open_deadline=0.3)


# ---------------------------------------------------------------------------------------------
# Other event loops in the same process
# ---------------------------------------------------------------------------------------------


async def _asyncio_round_trip(tag: bytes) -> bytes | None:
    object_store = sdb.ObjectStoreBuilder(sdb.ObjectStoreType.IN_MEMORY).build()
    db = await sdb.DbBuilder("db", object_store).build()
    try:
        handle = await db.put(b"k", tag)
        await handle.await_durable()
        txn = await db.begin(sdb.IsolationLevel.SNAPSHOT)
        await txn.put(b"t", tag)
        await txn.commit()
        return await db.get(b"t")
    finally:
        await db.shutdown()


def test_asyncio_users_keep_working_with_the_shim_installed() -> None:
    assert asyncio.run(_asyncio_round_trip(b"main")) == b"main"


async def test_asyncio_in_a_thread_while_trio_uses_slatedb(memory_store: Store) -> None:
    db = await open_db(memory_store)
    result: list[bytes | None] = []

    def asyncio_thread() -> None:
        result.append(asyncio.run(_asyncio_round_trip(b"thread")))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: trio.to_thread.run_sync(asyncio_thread))
            for i in range(200):
                await db.put(b"k%d" % i, b"v", durable=False)
                assert await db.get(b"k%d" % i) == b"v"
        assert result == [b"thread"]
    finally:
        await db.close()


def test_trio_runs_in_several_threads() -> None:
    errors: list[BaseException] = []

    async def main(index: int) -> None:
        db = await open_db(Store.memory())
        try:
            for i in range(50):
                await run_transaction(
                    db, lambda txn, i=i: txn.put(b"%d" % i, b"%d" % index), durable=False
                )
            assert len(await db.scan(b"")) == 50
        finally:
            await db.close()

    def runner(index: int) -> None:
        try:
            trio.run(main, index)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []


# ---------------------------------------------------------------------------------------------
# The thread bridge (chosen at import, so it runs in a subprocess)
# ---------------------------------------------------------------------------------------------

THREAD_BRIDGE_SCRIPT = textwrap.dedent(
    """
    import trio
    from taquba import _adapter
    from taquba._adapter import Database, TransactionConflict, run_transaction
    from taquba._errors import Fenced, QueueClosed
    from taquba._store import Store

    assert _adapter.BRIDGE == "thread", _adapter.BRIDGE
    assert not _adapter.BYTES_PATCHED

    async def main():
        store = Store.memory()
        db = await Database.open(store, "q", flush_interval=0.01)
        await db.put(b"a", b"1")
        await db.put(b"b", b"2", durable=False)
        assert await db.get(b"a") == b"1"
        assert await db.scan(b"", start=b"b") == [(b"b", b"2")]
        big = bytes(range(256)) * 1024
        await db.put(b"big", big)
        assert await db.get(b"big") == big

        first, second = await db.begin(), await db.begin()
        await first.put(b"c", b"1")
        await second.put(b"c", b"2")
        await first.commit(durable=True)
        try:
            await second.commit(durable=True)
        except TransactionConflict:
            pass
        else:
            raise AssertionError("expected a conflict")

        attempts = []
        async def body(txn):
            attempts.append(1)
            value = await txn.get(b"c")
            if len(attempts) == 1:
                await db.put(b"c", b"9")
            await txn.put(b"c", value + b"!")
        await run_transaction(db, body, durable=True)
        assert await db.get(b"c") == b"9!" and len(attempts) == 2

        with trio.CancelScope() as scope:
            scope.cancel()
            await db.get(b"a")
        assert scope.cancelled_caught
        txn = await db.begin()
        await txn.put(b"d", b"1")
        with trio.CancelScope() as scope:
            scope.cancel()
            await txn.commit(durable=True)
        assert await db.get(b"d") == b"1"

        other = await Database.open(store, "q", flush_interval=0.01)
        try:
            for _ in range(100):
                await db.put(b"x", b"y")
        except Fenced:
            pass
        else:
            raise AssertionError("expected Fenced")
        await db.close()
        await other.close()
        try:
            await other.get(b"a")
        except QueueClosed:
            pass
        else:
            raise AssertionError("expected QueueClosed")
        print("thread bridge ok")

    trio.run(main)
    """
)


def test_thread_bridge_in_a_subprocess() -> None:
    env = {**os.environ, "TAQUBA_SLATEDB_BRIDGE": "thread"}
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", THREAD_BRIDGE_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "thread bridge ok" in proc.stdout
