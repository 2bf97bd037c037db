"""The SlateDB adapter: error mapping, scans, transactions, cancellation, fencing.

The binding patches (call path, byte copies) are tested in test_binding.py.
"""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Callable
from typing import Any

import pytest
import slatedb.uniffi as sdb
import trio

from taquba import _adapter
from taquba._adapter import (
    Database,
    Transaction,
    TransactionConflict,
    run_transaction,
)
from taquba._database import STORAGE_SETTINGS, writer_settings
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


def _setting(settings: sdb.Settings, dotted: str) -> object:
    value: Any = json.loads(settings.to_json_string())
    for part in dotted.split("."):
        assert isinstance(value, dict), dotted
        assert part in value, f"SlateDB has no setting {dotted!r}"  # set() accepts unknown keys
        value = value[part]
    return value


def test_writer_settings_are_the_ones_intended() -> None:
    settings = writer_settings(flush_interval=None, manifest_poll_interval=None, max_retries=3)
    for key, value in STORAGE_SETTINGS.items():
        assert _setting(settings, key) == json.loads(value), key
    gc = "garbage_collector_options."
    assert _setting(settings, "l0_sst_size_bytes") == 16 * 1024 * 1024
    for kind in ("wal", "wal_fence", "manifest", "compacted", "compactions"):
        assert _setting(settings, f"{gc}{kind}_options.interval") == "10s"
        assert _setting(settings, f"{gc}{kind}_options.min_age") == "30s"
        assert _setting(settings, f"{gc}{kind}_options.dry_run") is False
    assert _setting(settings, "compactor_options.checkpoint_lifetime") == "30s"
    # Scheduler options are a map of strings SlateDB parses when the compactor starts, only
    # logging a warning for a value it cannot parse: the value must be a plain integer.
    scheduler = _setting(settings, "compactor_options.scheduler_options")
    assert scheduler == {"min_compaction_sources": "2"}
    assert int(scheduler["min_compaction_sources"]) == 2
    assert _setting(settings, "flush_interval") == "100ms"  # SlateDB's: the backstop timer
    for key in ("", "compactor_options.", gc):
        assert _setting(settings, key + "object_store_max_retries") == 3


def test_writer_settings_keep_the_durations_given() -> None:
    settings = writer_settings(flush_interval=0.25, manifest_poll_interval=0.5, max_retries=0)
    assert _setting(settings, "flush_interval") == "250ms"
    assert _setting(settings, "manifest_poll_interval") == "500ms"
    assert _setting(settings, "object_store_max_retries") == 0


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


async def test_a_writer_keeps_a_bounded_block_cache(
    file_store: Store, block_misses: Callable[[str], Callable[[], int]]
) -> None:
    """Its cache holds 16 MiB of data blocks, not SlateDB's default 512 MiB.

    SlateDB puts every block of an uploaded L0 SST into the writer's cache, so with the
    default one a process under steady load grew by every SST it wrote. 32 MiB of values,
    uploaded as an SST by the writer itself, are read back twice through a writer whose builder
    also installs SlateDB's metrics recorder: both passes miss blocks (with the default cache,
    the upload would have left every block cached and neither pass would miss).
    """
    from taquba import _database, _keys  # pyright: ignore[reportPrivateUsage]

    count, size = 32 * 1024, 1024
    assert count * size > _database.WRITER_BLOCK_CACHE_BYTES
    count_misses = block_misses("DbBuilder")

    db = await Database.open(file_store, "big")
    try:
        raw: Any = db._db  # pyright: ignore[reportPrivateUsage]
        for start in range(0, count, 1024):
            batch = sdb.WriteBatch()
            for i in range(start, start + 1024):
                batch.put(_keys.user_key(b"%06d" % i), bytes([i % 251]) * size)
            await raw.write(batch)
        await raw.flush_with_options(sdb.FlushOptions(flush_type=sdb.FlushType.MEM_TABLE))
        misses: list[int] = []
        for _ in range(2):
            before = count_misses()
            for i in range(0, count, 4):
                assert await db.get(_keys.user_key(b"%06d" % i)) == bytes([i % 251]) * size
            misses.append(count_misses() - before)
    finally:
        await db.close()
    assert misses[0] > 0  # the upload did not leave every block cached
    assert misses[1] >= misses[0] // 2  # evicted again: the cache is smaller than what was read
