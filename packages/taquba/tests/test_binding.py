"""The patched `slatedb` binding (`taquba._binding`) against the pinned release.

The call patch must give the same results and errors as the binding's own call path, the
byte-copy patch must lower exactly the bytes the generated writer does, and an installed binding
that differs from the tested one must fail the import.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import random
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import slatedb.uniffi as sdb
import slatedb.uniffi._slatedb_uniffi.slatedb as generated
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taquba import _binding
from taquba._adapter import Database, run_transaction
from taquba._store import Store

FAST = 0.01  # flush interval for tests


async def open_db(store: Store, name: str = "q", **kwargs: Any) -> Database:
    kwargs.setdefault("flush_interval", FAST)
    return await Database.open(store, name, **kwargs)


# ---------------------------------------------------------------------------------------------
# Validation at import
# ---------------------------------------------------------------------------------------------


def test_the_pinned_binding_passes_validation_and_is_patched() -> None:
    assert importlib.metadata.version("slatedb") == _binding.SLATEDB_VERSION
    assert _binding.binding_problem() is None
    assert generated._uniffi_rust_call_async is _binding._fast_call_async
    assert generated._uniffi_rust_call_with_error is _binding._fast_call_with_error
    assert generated._UniffiRustBufferBuilder.write is _binding._fast_write
    assert generated._UniffiRustBufferBuilder._pack_into is _binding._fast_pack_into
    assert generated._UniffiFfiConverterBytes.lower is _binding._fast_lower_bytes
    for stock in (
        _binding._STOCK_CALL_ASYNC,
        _binding._STOCK_CALL_WITH_ERROR,
        _binding._STOCK_WRITE,
        _binding._STOCK_PACK_INTO,
        _binding._STOCK_LOWER,
    ):
        assert stock.__module__ == generated.__name__


def _run_python(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_another_slatedb_version_fails_the_import_naming_both_versions() -> None:
    proc = _run_python(
        """
        import importlib.metadata
        real = importlib.metadata.version
        importlib.metadata.version = lambda name: "0.16.9" if name == "slatedb" else real(name)
        try:
            import taquba
        except ImportError as exc:
            assert type(exc).__name__ == "IncompatibleSlateDB", type(exc)
            print(exc)
        else:
            raise AssertionError("import succeeded")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "slatedb 0.16.9 is installed" in proc.stdout
    assert f"tested with slatedb {_binding.SLATEDB_VERSION} only" in proc.stdout
    assert f"install slatedb=={_binding.SLATEDB_VERSION}" in proc.stdout


def test_changed_binding_internals_fail_the_import() -> None:
    proc = _run_python(
        """
        import slatedb.uniffi._slatedb_uniffi.slatedb as generated
        async def _uniffi_rust_call_async(rust_future, poll, complete, free, lift, errors):
            pass
        generated._uniffi_rust_call_async = _uniffi_rust_call_async
        try:
            import taquba
        except ImportError as exc:
            print(exc)
        else:
            raise AssertionError("import succeeded")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "_uniffi_rust_call_async is missing or has another signature" in proc.stdout
    assert f"slatedb {_binding.SLATEDB_VERSION}" in proc.stdout


def test_importing_the_binding_module_again_keeps_the_generated_originals() -> None:
    proc = _run_python(
        """
        import importlib
        import slatedb.uniffi._slatedb_uniffi.slatedb as generated
        import taquba._binding as first
        stock = first._STOCK_CALL_ASYNC, first._STOCK_WRITE, first._STOCK_LOWER
        second = importlib.reload(first)
        assert (second._STOCK_CALL_ASYNC, second._STOCK_WRITE, second._STOCK_LOWER) == stock
        assert generated._uniffi_rust_call_async is second._fast_call_async
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


# ---------------------------------------------------------------------------------------------
# The call patch gives what the binding's own call path gives
# ---------------------------------------------------------------------------------------------

BIG = random.Random(3).randbytes(1 << 20)
NON_ASCII = "h\u00e9llo w\u00f6rld \u2713 \u65e5\u672c \U0001f600".encode()
VALUES = [b"", b"v", NON_ASCII, bytes(range(256)) * 3, BIG]


def _outcome(value: object) -> object:
    """A comparable record of a binding result (no timestamps or sequence numbers)."""
    if isinstance(value, sdb.KeyValue):
        return ("kv", value.key, value.value)
    if isinstance(value, list):
        return [_outcome(item) for item in value]
    if isinstance(value, (bytes, type(None), int, str)):
        return value
    return type(value).__name__


async def _scenario(run: Callable[[Awaitable[Any]], Awaitable[Any]]) -> list[object]:
    """Binding calls, each recorded as its result or its error (class, close reason, message).

    `run` awaits one binding coroutine; the scenario is the same in asyncio and in trio.
    """
    log: list[object] = []

    async def step(name: str, make: Callable[[], Awaitable[Any]]) -> Any:
        try:
            result = await run(make())
        except Exception as exc:  # recorded and compared
            reason = getattr(exc, "reason", None)
            log.append((name, "raised", type(exc).__qualname__, reason, str(exc)))
            return None
        log.append((name, _outcome(result)))
        return result

    def sync_step(name: str, fn: Callable[[], Any]) -> Any:
        try:
            result = fn()
        except Exception as exc:  # recorded and compared
            log.append((name, "raised", type(exc).__qualname__, str(exc)))
            return None
        log.append((name, _outcome(result)))
        return result

    object_store = sdb.ObjectStoreBuilder(sdb.ObjectStoreType.IN_MEMORY).build()
    settings = sdb.Settings.default()
    settings.set("flush_interval", '"10ms"')
    sync_step("bad setting", lambda: settings.set("flush_interval", "10"))
    builder = sdb.DbBuilder("db", object_store)
    builder.with_settings(settings)
    db = await run(builder.build())
    await step("build again", builder.build)
    for index, value in enumerate(VALUES):
        key = b"k%d" % index
        handle = await step(f"put {index}", lambda key=key, value=value: db.put(key, value))
        await step(f"durable {index}", handle.await_durable)
        await step(f"get {index}", lambda key=key: db.get(key))
        await step(f"get kv {index}", lambda key=key: db.get_key_value(key))
    await step("get missing", lambda: db.get(b"missing"))
    await step("empty key", lambda: db.put(b"", b"v"))
    await step("delete", lambda: db.delete(b"k1"))
    await step("get deleted", lambda: db.get(b"k1"))
    everything = sdb.KeyRange(start=None, start_inclusive=True, end=None, end_inclusive=False)
    iterator = await run(db.scan_prefix(b"k", everything))
    await step("next_batch", lambda: iterator.next_batch(100))
    await step("next_batch at end", lambda: iterator.next_batch(100))

    batch = sdb.WriteBatch()
    sync_step("batch put", lambda: batch.put(b"b", VALUES[2]))
    await step("write batch", lambda: db.write(batch))
    await step("write batch again", lambda: db.write(batch))
    await step("get batch key", lambda: db.get(b"b"))

    first = await run(db.begin(sdb.IsolationLevel.SNAPSHOT))
    second = await run(db.begin(sdb.IsolationLevel.SNAPSHOT))
    await step("txn put", lambda: first.put(b"t", BIG))
    await step("txn get own write", lambda: first.get(b"t"))
    await step("other txn put", lambda: second.put(b"t", b"other"))
    await step("commit", first.commit)
    await step("conflicting commit", second.commit)
    await step("rollback after commit", first.rollback)
    empty = await run(db.begin(sdb.IsolationLevel.SNAPSHOT))
    await step("empty commit", empty.commit)
    await step("get committed", lambda: db.get(b"t"))

    await run(db.shutdown())
    sync_step("status", lambda: db.status().close_reason)
    await step("get after shutdown", lambda: db.get(b"k0"))
    await step("put after shutdown", lambda: db.put(b"x", b"y"))
    return log


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _binding_own_path() -> list[object]:
    """The scenario in asyncio, with the generated call helpers and byte writers restored."""
    namespace = generated.__dict__
    builder = generated._UniffiRustBufferBuilder
    converter = generated._UniffiFfiConverterBytes
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(namespace, "_uniffi_rust_call_async", _binding._STOCK_CALL_ASYNC)
        patch.setitem(namespace, "_uniffi_rust_call_with_error", _binding._STOCK_CALL_WITH_ERROR)
        patch.setattr(builder, "write", _binding._STOCK_WRITE)
        patch.setattr(builder, "_pack_into", _binding._STOCK_PACK_INTO)
        patch.setattr(converter, "lower", staticmethod(_binding._STOCK_LOWER))
        return asyncio.run(_scenario(_await))


def test_the_call_patch_gives_the_results_and_errors_of_the_binding_itself() -> None:
    expected = _binding_own_path()
    raised = {entry[0] for entry in expected if entry[1] == "raised"}
    # errors are compared too: sync (Invalid), async (Invalid, Transaction, Closed)
    assert {"bad setting", "empty key", "conflicting commit", "get after shutdown"} <= raised
    # Patched, from trio (the fast path) and from asyncio (which it hands to the generated one).
    assert trio.run(_scenario, _await) == expected
    assert asyncio.run(_scenario(_await)) == expected


# ---------------------------------------------------------------------------------------------
# The byte-copy patch lowers what the generated writer lowers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", VALUES, ids=["empty", "one", "non-ascii", "768", "1mib"])
@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview"])
def test_patched_lowering_round_trips_like_the_generated_one(value: bytes, kind: str) -> None:
    wrapped: Any = {"bytes": value, "bytearray": bytearray(value), "memoryview": memoryview(value)}
    stock = _binding._lowered_bytes(_binding._STOCK_LOWER, wrapped[kind])
    assert _binding._lowered_bytes(_binding._fast_lower_bytes, wrapped[kind]) == stock
    assert stock[:4] == len(value).to_bytes(4, "big")
    assert stock[4:] == value
    # and back: the generated reader lifts it to the same bytes
    lowered = _binding._fast_lower_bytes(wrapped[kind])
    assert generated._UniffiFfiConverterBytes.lift(lowered) == value


def _builder_bytes(write: Any, pack: Any, chunks: list[bytes]) -> bytes:
    builder = _binding._builder_cls()
    try:
        for chunk in chunks:
            pack(builder, 4, ">i", len(chunk))
            write(builder, chunk)
            pack(builder, 8, ">q", -len(chunk))
        return bytes(builder.rbuf.data[0 : int(builder.rbuf.len)])
    finally:
        builder.discard()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=8))
def test_patched_builder_writes_the_same_bytes_as_the_generated_one(chunks: list[bytes]) -> None:
    stock = _builder_bytes(_binding._STOCK_WRITE, _binding._STOCK_PACK_INTO, chunks)
    patched = _builder_bytes(_binding._fast_write, _binding._fast_pack_into, chunks)
    assert patched == stock


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=5000), st.sampled_from(["bytes", "bytearray", "memoryview"]))
def test_patched_lowering_matches_the_generated_one(data: bytes, kind: str) -> None:
    value: Any = {"bytes": data, "bytearray": bytearray(data), "memoryview": memoryview(data)}[kind]
    stock = _binding._lowered_bytes(_binding._STOCK_LOWER, value)
    assert _binding._lowered_bytes(_binding._fast_lower_bytes, value) == stock
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
    # yielding; the call path must still checkpoint now and then so a long loop cannot starve
    # others.
    db = await open_db(memory_store)
    try:
        async with _ticking() as ticks:
            txn = await db.begin()
            before = ticks.count
            for i in range(2_000):
                await txn.put(b"k%05d" % i, b"v")
                assert await txn.get(b"k%05d" % i) == b"v"
            # 4,000 calls: at least one checkpoint per 64 of them, whatever the exact limit
            assert _binding._FAST_STREAK_LIMIT <= 64
            assert ticks.count - before >= 4_000 // 64
            await txn.rollback()
    finally:
        await db.close()


async def test_large_values_round_trip_at_and_around_the_threshold(store: Store) -> None:
    db = await open_db(store)
    limit = _binding.LARGE_VALUE_BYTES
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
    value = bytes(range(256)) * (_binding.LARGE_VALUE_BYTES // 256 * 4)
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


async def test_a_cancelled_parked_call_forgets_its_poll(memory_store: Store) -> None:
    # A durability wait parks until a WAL flush. Cancelling it while parked must drop the
    # record of the poll at once and free the Rust future; the write itself stays.
    db = await open_db(memory_store, flush_interval=5)
    try:
        parked = 0
        for i in range(20):
            handle = await _binding.call(db._db.put, b"k%d" % i, b"v")
            with trio.move_on_after(0.001) as scope:
                await _binding.call(handle.await_durable)
            if scope.cancelled_caught:
                parked += 1
                assert _pending_continuations() == 0
        assert parked > 0
        await db.flush()
        assert await db.get(b"k19") == b"v"
    finally:
        await db.close()


def _pending_continuations() -> int:
    import slatedb.uniffi._slatedb_uniffi.slatedb as generated

    # The generated handle map (asyncio callers) and the patched call path's (trio callers).
    return len(generated._UniffiContinuationHandleMap) + len(_binding._waiting_polls)


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


def test_asyncio_users_keep_working_with_the_patches_installed() -> None:
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
