"""The user KV namespace: checks of caller keys and values, and the `Queue.kv_*` operations.

User entries live under the ``FF`` tag, beside the queue's records, so a caller can commit
them atomically with an enqueue or a settlement (``kv_writes``, ``kv_expect``, `Effects`);
the checks here run before any transaction, and `check_expectations` inside one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _keys as keys  # pyright: ignore[reportPrivateUsage]
from ._adapter import Database, Transaction, run_transaction
from ._errors import KvConflict, KvValueTooLarge, UsageError
from ._interrupts import protect
from ._views import check_kv_key

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "MAX_KV_VALUE_SIZE",
    "check_expectations",
    "check_kv_expect",
    "check_kv_key",
    "check_kv_writes",
    "compare_and_set",
    "delete",
    "get",
    "put",
]

MAX_KV_VALUE_SIZE = 256 * 1024
"""The largest user KV value, in bytes."""


def check_kv_writes(writes: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
    checked: dict[bytes, bytes] = {}
    for key, value in writes.items():
        if not isinstance(value, (bytes, bytearray, memoryview)):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError(f"KV values must be bytes, not {type(value).__name__}")
        if len(value) > MAX_KV_VALUE_SIZE:
            raise KvValueTooLarge(len(value), MAX_KV_VALUE_SIZE)
        checked[check_kv_key(key)] = bytes(value)
    return checked


def check_kv_expect(expect: Mapping[bytes, bytes | None]) -> dict[bytes, bytes | None]:
    checked: dict[bytes, bytes | None] = {}
    for key, value in expect.items():
        if value is not None and not isinstance(value, (bytes, bytearray, memoryview)):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError(
                f"expected KV values must be bytes or None, not {type(value).__name__}"
            )
        checked[check_kv_key(key)] = None if value is None else bytes(value)
    return checked


async def check_expectations(txn: Transaction, expect: Mapping[bytes, bytes | None]) -> None:
    """Raise `KvConflict` unless every expected user KV entry holds; conflict-protect them."""
    if not expect:
        return
    stored = [keys.user_key(key) for key in expect]
    await txn.mark_read(stored)
    for key, full in zip(expect, stored, strict=True):
        if await txn.get(full) != expect[key]:
            raise KvConflict(key)


async def get(db: Database, key: bytes) -> bytes | None:
    """`Queue.kv_get`."""
    return await db.get(keys.user_key(check_kv_key(key)))


async def put(database: Callable[[], Database], key: bytes, value: bytes) -> None:
    """`Queue.kv_put` (the database is read after the arguments are checked)."""
    writes = check_kv_writes({key: value})
    db = database()
    for k, v in writes.items():
        await db.put(keys.user_key(k), v, durable=True)


async def delete(db: Database, key: bytes) -> None:
    """`Queue.kv_delete`."""
    await db.delete(keys.user_key(check_kv_key(key)), durable=True)


async def compare_and_set(
    database: Callable[[], Database], key: bytes, expected: bytes | None, new: bytes | None
) -> bool:
    """`Queue.kv_compare_and_set` (the database is read after the arguments are checked)."""
    stored_key = keys.user_key(check_kv_key(key))
    if new is not None:
        check_kv_writes({key: new})

    async def body(txn: Transaction) -> bool:
        current = await txn.get(stored_key)
        if current != expected:
            return False
        if new is None:
            if current is not None:
                await txn.delete(stored_key)
        else:
            await txn.put(stored_key, bytes(new))
        return True

    return await run_transaction(database(), body, durable=True)


protect(get, put, delete, compare_and_set)
