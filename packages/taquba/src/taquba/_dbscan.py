"""Prefix scans over a SlateDB database, transaction or reader.

SlateDB's ``scan_prefix`` takes sub-range bounds relative to the prefix; `Scanner.scan` takes
full keys and translates them. Rows are fetched with ``next_batch``, never ``next``.
"""

from __future__ import annotations

from typing import Final

import slatedb.uniffi as _sdb

from taquba import _failpoints
from taquba._binding import call
from taquba._dbfaults import read_fault
from taquba._errors import UsageError
from taquba._interrupts import protect

__all__ = ["DEFAULT_BATCH", "Scanner"]

DEFAULT_BATCH: Final = 256
"""Rows fetched from an iterator per binding call, unless the caller says otherwise."""


def _suffix(prefix: bytes, key: bytes, what: str) -> bytes:
    if not key.startswith(prefix):
        raise UsageError(f"scan {what} {key!r} does not start with the prefix {prefix!r}")
    return key[len(prefix) :]


def _scan_range(
    prefix: bytes, start: bytes | None, start_inclusive: bool, end: bytes | None
) -> _sdb.KeyRange | None:
    """The prefix-relative `KeyRange` for full-key bounds, or None if the range is empty."""
    start_suffix = None if start is None else _suffix(prefix, start, "start")
    end_suffix = None if end is None else _suffix(prefix, end, "end")
    if start_suffix == b"" and start_inclusive:
        start_suffix = None  # every key under the prefix
    if end_suffix is not None:
        if end_suffix == b"":
            return None  # nothing under the prefix sorts before the prefix itself
        if start_suffix is not None and start_suffix >= end_suffix:
            return None
    return _sdb.KeyRange(
        start=start_suffix,
        start_inclusive=start_inclusive,
        end=end_suffix,
        end_inclusive=False,
    )


def _scan_options(*, cache_blocks: bool, reverse: bool) -> _sdb.ScanOptions:
    return _sdb.ScanOptions(
        durability_filter=_sdb.DurabilityLevel.MEMORY,
        dirty=False,
        read_ahead_bytes=1,
        cache_blocks=cache_blocks,
        max_fetch_tasks=1,
        order=_sdb.IterationOrder.DESCENDING if reverse else _sdb.IterationOrder.ASCENDING,
    )


async def _drain(
    iterator: _sdb.DbIterator, limit: int | None, batch_size: int
) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    while limit is None or len(out) < limit:
        want = batch_size if limit is None else min(batch_size, limit - len(out))
        batch = await call(iterator.next_batch, want)
        out.extend((kv.key, kv.value) for kv in batch)
        if len(batch) < want:
            break
    return out


def _check_scan_args(limit: int | None, batch_size: int) -> None:
    if limit is not None and limit < 0:
        raise UsageError(f"scan limit must be >= 0, not {limit}")
    if batch_size < 1:
        raise UsageError(f"scan batch_size must be >= 1, not {batch_size}")


class Scanner:
    """Shared scan logic of `Database`, `Transaction`, `Reader` and `Snapshot`."""

    __slots__ = ()

    _target: _sdb.Db | _sdb.DbTransaction | _sdb.DbReader | _sdb.DbSnapshot

    async def scan(
        self,
        prefix: bytes,
        *,
        start: bytes | None = None,
        start_inclusive: bool = True,
        end: bytes | None = None,
        limit: int | None = None,
        cache_blocks: bool = False,
        batch_size: int = DEFAULT_BATCH,
        reverse: bool = False,
    ) -> list[tuple[bytes, bytes]]:
        """Return ``(key, value)`` pairs of the keys under `prefix`, in key order.

        Args:
            prefix: Only keys starting with these bytes are returned.
            start: Lower bound, a full key starting with `prefix`; None for no bound.
            start_inclusive: Whether a key equal to `start` is included.
            end: Upper bound (exclusive), a full key starting with `prefix`; None for none.
            limit: At most this many pairs; None for all.
            cache_blocks: Whether blocks read from storage go into SlateDB's block cache.
            batch_size: Rows fetched from the iterator per binding call.
            reverse: Iterate from the largest key down (`limit` then keeps the largest).

        Returns:
            Pairs of full keys and values.

        Raises:
            UsageError: A bound does not start with `prefix`, or `limit`/`batch_size` is
                out of range.
        """
        _check_scan_args(limit, batch_size)
        key_range = _scan_range(prefix, start, start_inclusive, end)
        if key_range is None or limit == 0:
            return []
        if _failpoints.INSTALLED:
            await read_fault("scan")
        options = _scan_options(cache_blocks=cache_blocks, reverse=reverse)
        iterator = await call(self._target.scan_prefix_with_options, prefix, key_range, options)
        return await _drain(iterator, limit, batch_size)

    async def last(self, prefix: bytes) -> tuple[bytes, bytes] | None:
        """Return the pair with the largest key under `prefix`, or None if there is none."""
        rows = await self.scan(prefix, limit=1, reverse=True)
        return rows[0] if rows else None


protect(_drain, Scanner)
