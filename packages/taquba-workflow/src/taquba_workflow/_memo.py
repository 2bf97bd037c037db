"""Per-step memos and terminal markers, stored as blobs of a `taquba.BlobStore`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ormsgpack

from taquba import StorageError, UsageError, count_event

from . import _keys as keys  # pyright: ignore[reportPrivateUsage]
from ._errors import UnserializableInput

if TYPE_CHECKING:
    from taquba import BlobStore

__all__ = ["Memo", "MemoStore", "TerminalMarker", "content_key"]

log = logging.getLogger("taquba_workflow")


def content_key(value: Any) -> str:
    """The memo key `Memo.content_get` / `Memo.content_put` use for ``value``.

    ``"content:" + hex(SHA-256(MessagePack(value)))``, serialized with `ormsgpack` and sorted
    map keys (so two dicts with the same items in another order share a key). Dataclasses,
    lists, tuples, str, bytes, numbers, None and nested maps work; include an operation name in
    ``value`` when different operations may see identical inputs.

    Raises:
        UnserializableInput: MessagePack cannot serialize ``value``.
    """
    try:
        packed = ormsgpack.packb(value, option=ormsgpack.OPT_SORT_KEYS)
    except (ormsgpack.MsgpackEncodeError, TypeError) as exc:
        raise UnserializableInput(f"cannot serialize the memo content input: {exc}") from exc
    return "content:" + keys.sha256_hex(packed)


class Memo:
    """A durable key-value memo bound to one ``(run_id, step)``.

    Use it to remember the result of an expensive or irreversible side effect inside a step, so
    a redelivered step reuses it instead of doing the work again. Entries survive retries and
    restarts; they are strictly per step (pass data to the next step in the `Continue`
    payload). Keys are any str (hashed into the blob path); a missing entry reads as None.
    """

    __slots__ = ("_prefix", "_run_id", "_step", "_store")

    def __init__(self, store: BlobStore, prefix: str, run_id: str, step: int) -> None:
        """Library-internal: get one from `MemoStore.memo` or `Step.memo`."""
        self._store = store
        self._prefix = prefix
        self._run_id = run_id
        self._step = step

    @property
    def run_id(self) -> str:
        """The run the memo belongs to."""
        return self._run_id

    @property
    def step(self) -> int:
        """The step the memo belongs to."""
        return self._step

    def _path(self, key: str) -> str:
        if not isinstance(key, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError(f"memo keys must be str, not {type(key).__name__}")
        return keys.memo_path(self._prefix, self._run_id, self._step, key)

    async def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or None if there is none."""
        return await self._store.get_blob(self._path(key))

    async def put(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key`` (overwriting); durable on return."""
        if not isinstance(value, (bytes, bytearray, memoryview)):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError(f"memo values must be bytes, not {type(value).__name__}")
        await self._store.put_blob(self._path(key), bytes(value))

    async def content_get(self, value: Any) -> bytes | None:
        """The value stored for the input ``value`` (see `content_key`), or None."""
        return await self.get(content_key(value))

    async def content_put(self, value: Any, result: bytes) -> None:
        """Store ``result`` for the input ``value`` (see `content_key`); durable on return."""
        await self.put(content_key(value), result)

    def __repr__(self) -> str:
        return f"<Memo {self._prefix}/memos/{self._run_id}/{self._step}>"


class _CountedMemo(Memo):
    """A `Memo` that reports each lookup as a hit or a miss (what `Step.memo` is).

    The runtime hands steps this one: a plain `Memo` knows only its store, and the lookups
    are counted for the queue's observers (``taquba.count_event``, ``workflow_memo_lookups``
    with labels ``queue`` and ``result``), which cost one check when nobody observes.
    """

    __slots__ = ("_labels", "_queue")

    def __init__(self, memo: Memo, queue: object, queue_name: str) -> None:
        super().__init__(memo._store, memo._prefix, memo.run_id, memo.step)  # pyright: ignore[reportPrivateUsage]
        self._queue = queue
        self._labels = {"queue": queue_name}

    async def get(self, key: str) -> bytes | None:
        value = await super().get(key)
        result = "miss" if value is None else "hit"
        count_event(self._queue, "workflow_memo_lookups", {**self._labels, "result": result})
        return value


def counted_memo(memo: Memo, queue: object, queue_name: str) -> Memo:
    """``memo``, reporting its lookups to ``queue``'s observers (see `_CountedMemo`)."""
    return _CountedMemo(memo, queue, queue_name)


@dataclass(frozen=True, slots=True)
class TerminalMarker:
    """A memo-retention marker: run ``run_id`` ended at ``terminal_at_ms``."""

    name: str
    """The marker's blob name under ``<prefix>/terminals/``."""
    run_id: str
    """The run that ended."""
    terminal_at_ms: int
    """When it ended (ms since the epoch, runtime clock)."""


class MemoStore:
    """The memo namespace of a store: every run's memos under one blob prefix.

    The runtime builds one from its store and ``memo_prefix``; build one directly to read or
    clear memos outside a runtime (tests, tooling). Layout under the prefix::

        memos/<run_id>/<step>/<sha256(key)>          Memo entries
        step-outputs/<run_id>/<step>/<sha256(payload)> step-output replay records
        outcomes/<run_id>                            terminal outcomes
        terminals/<inverted ms:020>_<run_id>         memo-retention markers
    """

    __slots__ = ("_prefix", "_store")

    def __init__(self, store: BlobStore, prefix: str = keys.DEFAULT_MEMO_PREFIX) -> None:
        """Address the memos under ``prefix`` in ``store``.

        Raises:
            taquba.UsageError: ``prefix`` is not a usable blob directory.
        """
        self._store = store
        self._prefix = keys.validate_memo_prefix(prefix)

    @property
    def store(self) -> BlobStore:
        """The store the blobs live in."""
        return self._store

    @property
    def prefix(self) -> str:
        """The blob prefix (without surrounding slashes)."""
        return self._prefix

    def memo(self, run_id: str, step: int) -> Memo:
        """The memo of ``(run_id, step)``."""
        if not isinstance(step, int) or step < 0:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError("step must be a non-negative int")
        return Memo(self._store, self._prefix, keys.validate_run_id(run_id), step)

    async def clear_run(self, run_id: str) -> int:
        """Delete every memo entry and step-output record of ``run_id``; return how many.

        Listing respects path segments: clearing ``run-1`` never touches ``run-10``.
        """
        run_id = keys.validate_run_id(run_id)
        deleted = 0
        for directory in (
            keys.memo_dir(self._prefix, run_id),
            keys.step_output_dir(self._prefix, run_id),
        ):
            for name in await self._store.list_blobs(directory):
                try:
                    if await self._store.delete_blob(f"{directory}/{name}"):
                        deleted += 1
                except StorageError as exc:
                    log.warning("could not delete memo blob %s/%s: %s", directory, name, exc)
        return deleted

    # -------------------------------------------------------------------- terminal markers

    async def write_terminal_marker(self, run_id: str, terminal_at_ms: int) -> TerminalMarker:
        """Record that ``run_id`` ended at ``terminal_at_ms`` (for the retention sweep)."""
        name = keys.marker_name(terminal_at_ms, run_id)
        await self._store.put_blob(f"{keys.terminals_dir(self._prefix)}/{name}", b"")
        return TerminalMarker(name, run_id, terminal_at_ms)

    async def list_terminal_markers(self) -> list[TerminalMarker]:
        """Every terminal marker, newest first (for inspection; the sweep does not use it)."""
        return self._parse(await self._store.list_blobs(keys.terminals_dir(self._prefix)))

    async def list_expired_terminal_markers(
        self, cutoff_ms: int, *, start_after: str | None = None, limit: int | None = None
    ) -> list[TerminalMarker]:
        """Markers of runs that ended before ``cutoff_ms``, newest first.

        Marker names lead with an inverted timestamp, so the expired markers are exactly the
        names after one listing offset: the listing returns only expired markers, and a sweep's
        listing cost is proportional to the expired set. Page with ``start_after`` (the
        ``name`` of the last marker of the previous page) and ``limit``.
        """
        offset = keys.expired_after(cutoff_ms)
        if start_after is not None and start_after > offset:
            offset = start_after
        names = await self._store.list_blobs(
            keys.terminals_dir(self._prefix), start_after=offset, limit=limit
        )
        return self._parse(names)

    async def delete_terminal_marker(self, marker: TerminalMarker) -> bool:
        """Delete ``marker``; return whether it existed."""
        return await self._store.delete_blob(f"{keys.terminals_dir(self._prefix)}/{marker.name}")

    def _parse(self, names: list[str]) -> list[TerminalMarker]:
        markers: list[TerminalMarker] = []
        for name in names:
            parsed = keys.parse_marker_name(name)
            if parsed is None:
                log.warning("ignoring a blob that is not a terminal marker: %s", name)
                continue
            markers.append(TerminalMarker(name, parsed[1], parsed[0]))
        return markers

    def __repr__(self) -> str:
        return f"MemoStore({self._store!r}, {self._prefix!r})"
