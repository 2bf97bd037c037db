"""The only module that talks to SlateDB.

The `slatedb` distribution is a UniFFI binding whose async methods expect an asyncio event
loop. This module makes it usable from trio and gives the rest of taquba a small, typed API
(`Database`, `Transaction`, `run_transaction`) whose errors are taquba's own.

Bridge. At import the module checks that the installed binding is the exact version it was
tested with and that the private names it relies on exist in the generated module. If so, it
installs an event-loop shim with the generated module's `uniffi_set_event_loop`: inside a trio
task, the futures UniFFI creates park the current task and are woken through the trio token, so
every binding call is awaited directly in trio (``BRIDGE == "shim"``). Outside trio, the shim
hands out ordinary asyncio futures of the running loop, so asyncio users of `slatedb` in the
same process keep working. If a check fails (or ``TAQUBA_SLATEDB_BRIDGE=thread`` is set), the
module instead runs every binding call on a background asyncio loop thread and waits for it
from trio (``BRIDGE == "thread"``, about four times slower per call, no private API).

Byte copies. The generated code copies `bytes` into Rust buffers one byte at a time in Python
(a 1 MiB put costs ~120 ms of GIL-holding CPU). Behind the same checks the module replaces the
buffer builder's byte writers with `ctypes.memmove` copies and verifies them on a sample before
keeping them (``BYTES_PATCHED``).

Errors map at this boundary by exception class and close reason, never by message:

| SlateDB | taquba |
|---|---|
| `Error.Transaction` | `TransactionConflict` (private; retried by `run_transaction`) |
| `Error.Closed(FENCED)` | `Fenced` |
| `Error.Closed(CLEAN)` | `QueueClosed` |
| `Error.Closed(PANIC/UNKNOWN)`, `Error.Internal`, FFI `InternalError` | `StorageFatal` |
| `Error.Unavailable` | `StorageUnavailable` |
| `Error.Data` | `DataError` |
| `Error.Invalid` | `StorageError` (a taquba bug or misuse) |

Cancellation. Reads are cancellable. Writes (commits, puts, deletes) and their durability waits
run shielded, bounded by the database's commit deadline (`Database.open`, by default
`default_commit_deadline`: longer than the store's own retry budget, so storage gives up and
answers before the deadline does); a write that fails or times out has an unknown outcome, so
callers reconcile by reading back.

Interrupts. Everything here is KI-protected (see `taquba._interrupts`): above all the ctypes
continuation `_continue`, which Rust may call on the trio thread while a call is polled; a
`KeyboardInterrupt` raised in it would be swallowed by ctypes and the call would never complete.
Writes and `close` hold a `KeyboardInterrupt` that trio delivers into them until they finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.metadata
import itertools
import json
import logging
import math
import os
import random
import struct
import threading
import weakref
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, TypeVarTuple, cast

import slatedb.uniffi as _sdb
import slatedb.uniffi._slatedb_uniffi.slatedb as _generated
import trio

from taquba import _failpoints
from taquba._errors import (
    DatabaseNotFound,
    DataError,
    Fenced,
    InvalidStoreUrl,
    QueueClosed,
    StorageError,
    StorageFatal,
    StorageUnavailable,
    TaqubaError,
    UsageError,
)
from taquba._interrupts import held_interrupts, hold_interrupts, protect, wait_holding
from taquba._validate import check_seconds

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Generator

    from taquba._store import Store

__all__ = [
    "BRIDGE",
    "BYTES_PATCHED",
    "CLOSE_DEADLINE",
    "LARGE_VALUE_BYTES",
    "OBJECT_STORE_REQUEST_BUDGET",
    "SLATEDB_VERSION",
    "CloseReasonName",
    "Database",
    "ObjectStore",
    "Reader",
    "Transaction",
    "TransactionConflict",
    "attach_object_store",
    "check_commit_deadline",
    "default_commit_deadline",
    "local_object_store",
    "map_errors",
    "memory_object_store",
    "run_transaction",
    "s3_object_store",
]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")
_R = TypeVar("_R")
_Ts = TypeVarTuple("_Ts")

SLATEDB_VERSION: Final = "0.17.0"
"""The `slatedb` release this module was written and tested against."""

OBJECT_STORE_REQUEST_BUDGET: Final = 210.0
"""Seconds one object-store request may take inside SlateDB before it fails: the HTTP client's
own retries stop starting new attempts after 180 s (``object_store``'s default
``retry_timeout``), and the last attempt may run its 30 s request timeout."""

_SLATEDB_RETRY_DELAY_MAX: Final = 1.0
"""SlateDB's retrying object store backs off at most 1 s between its retries."""

_COMMIT_DEADLINE_MARGIN: Final = 30.0
"""Slack on top of the retry budget for WAL flush scheduling and queueing."""


def default_commit_deadline(max_retries: int) -> float:
    """The default commit deadline for a store with `max_retries` object-store retries.

    A write's durability wait covers one WAL flush: an object-store PUT that SlateDB retries
    `max_retries` times (at most 1 s apart), each attempt bounded by
    `OBJECT_STORE_REQUEST_BUDGET`. The deadline exceeds that budget by a margin, so a failing
    store answers (`StorageUnavailable`, nothing hidden) before the deadline declares an
    outcome unknown. With the default 3 retries: 4 x 210 s + 3 x 1 s = 843 s, plus 30 s.
    """
    budget = (max_retries + 1) * OBJECT_STORE_REQUEST_BUDGET
    return budget + max_retries * _SLATEDB_RETRY_DELAY_MAX + _COMMIT_DEADLINE_MARGIN


def check_commit_deadline(seconds: object) -> float:
    """Return `seconds` as a float if it is a finite, positive number of seconds.

    Raises:
        InvalidArgument: anything else.
    """
    return check_seconds("commit_deadline", seconds, positive=True)


CLOSE_DEADLINE: Final = 10.0
"""Seconds `Database.close` waits for SlateDB's shutdown before giving up on it."""

_ROLLBACK_DEADLINE: Final = 5.0
_BRIDGE_ENV: Final = "TAQUBA_SLATEDB_BRIDGE"
_DEFAULT_BATCH: Final = 256

ObjectStore = _sdb.ObjectStore
"""SlateDB's object-store handle (opaque to the rest of taquba)."""

CloseReasonName = Literal["clean", "fenced", "panic", "unknown"]
"""Why a database stopped accepting calls, as `Database.close_reason` reports it."""


class TransactionConflict(Exception):
    """A transaction lost a write conflict at commit; nothing it wrote was applied.

    Internal: `run_transaction` retries on it. It is not a `TaqubaError` because it must never
    reach users.
    """


# --------------------------------------------------------------------------------------------
# Error mapping
# --------------------------------------------------------------------------------------------

_CLOSE_REASON_NAMES: Final[dict[_sdb.CloseReason, CloseReasonName]] = {
    _sdb.CloseReason.CLEAN: "clean",
    _sdb.CloseReason.FENCED: "fenced",
    _sdb.CloseReason.PANIC: "panic",
    _sdb.CloseReason.UNKNOWN: "unknown",
}


def _closed_error(reason: CloseReasonName, message: str) -> StorageError:
    if reason == "fenced":
        return Fenced(message)
    if reason == "clean":
        return QueueClosed(message)
    return StorageFatal(message)


# The generated module defines `Error` twice (an Exception, then a namespace class that type
# checkers see); the variants are real Exception subclasses at run time.
_SLATEDB_ERRORS: Final = (cast("type[Exception]", _sdb.Error), _sdb.InternalError)


def _translate(exc: BaseException) -> BaseException:
    """Return taquba's exception for a SlateDB one (or `exc` itself if it is not SlateDB's)."""
    message = str(getattr(exc, "message", exc))
    if isinstance(exc, _sdb.Error.Transaction):
        return TransactionConflict(message)
    if isinstance(exc, _sdb.Error.Closed):
        reason: object = getattr(exc, "reason", None)
        name: CloseReasonName = "unknown"
        if isinstance(reason, _sdb.CloseReason):
            name = _CLOSE_REASON_NAMES.get(reason, "unknown")
        return _closed_error(name, message)
    if isinstance(exc, _sdb.Error.Unavailable):
        return StorageUnavailable(message)
    if isinstance(exc, _sdb.Error.Data):
        return DataError(message)
    if isinstance(exc, _sdb.Error.Invalid):
        return StorageError(f"SlateDB rejected a call (a taquba bug): {message}")
    if isinstance(exc, _sdb.Error.Internal):
        return StorageFatal(message)
    if isinstance(exc, _sdb.InternalError):
        return StorageFatal(f"SlateDB binding failure: {message}")
    return exc


@contextlib.contextmanager
def map_errors() -> Generator[None]:
    """Translate SlateDB exceptions raised inside the block into taquba's (chained with `from`).

    `_call` does the same for awaited binding calls; use this around synchronous ones.
    """
    try:
        yield
    except _SLATEDB_ERRORS as exc:
        raise _translate(exc) from exc


# --------------------------------------------------------------------------------------------
# Bridge (a): a background asyncio loop thread, waited for from trio
# --------------------------------------------------------------------------------------------


class _LoopThread:
    """A daemon thread running an asyncio loop, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                thread = threading.Thread(
                    target=self._run,
                    args=(loop, ready),
                    name="taquba-slatedb-loop",
                    daemon=True,
                )
                thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()


_LOOP_THREAD = _LoopThread()


async def _call_on_loop_thread(fn: Callable[[*_Ts], Coroutine[Any, Any, _R]], *args: *_Ts) -> _R:
    """Run ``fn(*args)`` on the loop thread and wait for it without blocking trio."""
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()

    def wake(_: object) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(done.set)

    future = asyncio.run_coroutine_threadsafe(fn(*args), _LOOP_THREAD.loop())
    future.add_done_callback(wake)
    try:
        await wait_holding(done.wait)
    except BaseException:
        # Cancelled (or interrupted outside `hold_interrupts`): cancel the asyncio task; the
        # binding then drops its Rust future. A write may still have landed: the caller
        # treats the outcome as unknown.
        future.cancel()
        raise
    return future.result()


# --------------------------------------------------------------------------------------------
# Bridge (c): a trio-aware event loop for UniFFI
# --------------------------------------------------------------------------------------------


_FAST_STREAK_LIMIT: Final = 32
"""Binding calls in a row that may complete without yielding before one forced checkpoint."""

_fast_streak = 0


class _TrioFuture:
    """The future UniFFI awaits for one poll of a Rust future, inside a trio task.

    UniFFI's generated code only calls `cancelled()`, `set_result()` (through the loop's
    `call_soon_threadsafe`) and awaits it. Awaiting parks the task that created it;
    `set_result` runs in the trio thread and reschedules that task.

    Many binding calls (transaction reads and buffered writes) complete during the poll itself,
    on the trio thread. Their result is then set at once and awaiting does not yield, which
    saves a trip through trio's scheduler per call; every `_FAST_STREAK_LIMIT` such calls in a
    row take one cancel-shielded checkpoint so a long loop of them cannot starve other tasks.
    """

    __slots__ = (
        "_cancelled",
        "_done",
        "_held",
        "_result",
        "_task",
        "_waiting",
        "thread",
        "token",
    )

    def __init__(self, task: trio.lowlevel.Task, token: trio.lowlevel.TrioToken) -> None:
        self._task = task
        self.token = token
        self.thread = threading.get_ident()
        self._done = False
        self._cancelled = False
        self._waiting = False
        self._result: Any = None
        self._held = held_interrupts()

    def cancelled(self) -> bool:
        return self._cancelled

    def set_result(self, result: Any) -> None:
        if self._done or self._cancelled:
            return
        self._done = True
        self._result = result
        if self._waiting:
            self._waiting = False
            trio.lowlevel.reschedule(self._task)

    def _abort(self, raise_cancel: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        if self._held is not None:
            # Inside `hold_interrupts` (a write): a KeyboardInterrupt delivered now is held
            # and the call goes on; a cancellation (a write's deadline) ends it as usual.
            try:
                raise_cancel()
            except KeyboardInterrupt as interrupt:
                self._held.append(interrupt)
                return trio.lowlevel.Abort.FAILED
            except BaseException:  # a cancellation: trio raises it again on SUCCEEDED
                pass
        # Cancelled while parked: forget the wake-up. UniFFI's `finally` frees the Rust
        # future, and its late continuation sees `cancelled()` and does nothing.
        self._cancelled = True
        self._waiting = False
        return trio.lowlevel.Abort.SUCCEEDED

    def __await__(self) -> Generator[Any, Any, Any]:
        global _fast_streak  # one counter per process is all fairness needs
        if not self._done:
            _fast_streak = 0
            self._waiting = True
            yield from trio.lowlevel.wait_task_rescheduled(self._abort).__await__()  # noqa: ASYNC105
        else:
            _fast_streak += 1
            if _fast_streak >= _FAST_STREAK_LIMIT:
                _fast_streak = 0
                # Shielded: the binding call has already completed, so a cancellation here
                # would lose its result (and with it, whether a write happened).
                yield from trio.lowlevel.cancel_shielded_checkpoint().__await__()  # noqa: ASYNC105
        return self._result


class _TrioAwareLoop:
    """The object given to `uniffi_set_event_loop`: trio futures in trio, asyncio's elsewhere."""

    def create_future(self) -> _TrioFuture | asyncio.Future[Any]:
        if trio.lowlevel.in_trio_task():
            return _TrioFuture(trio.lowlevel.current_task(), trio.lowlevel.current_trio_token())
        # Outside trio, behave as if no loop had been installed.
        return asyncio.get_running_loop().create_future()

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> None:
        # Called from Rust (inside a ctypes callback): it must never raise.
        target = args[0] if args else None
        if isinstance(target, _TrioFuture):
            if target.thread == threading.get_ident():
                # Completed on the trio thread itself (usually during the poll): set the
                # result now instead of waking the run loop through its socket.
                try:
                    callback(*args)
                except Exception:  # pragma: no cover - set_result does not raise
                    _log.exception("taquba's SlateDB shim failed to complete a call")
                return
            with contextlib.suppress(trio.RunFinishedError):
                target.token.run_sync_soon(callback, *args)
        elif isinstance(target, asyncio.Future):
            loop = target.get_loop()  # pyright: ignore[reportUnknownMemberType]
            with contextlib.suppress(RuntimeError):  # the loop has been closed
                loop.call_soon_threadsafe(callback, *args)
        else:
            _log.error("taquba's SlateDB shim got a wake-up for an unknown future: %r", target)


async def _call_direct(fn: Callable[[*_Ts], Coroutine[Any, Any, _R]], *args: *_Ts) -> _R:
    return await fn(*args)


# --------------------------------------------------------------------------------------------
# Byte-copy patch
# --------------------------------------------------------------------------------------------

_BUILDER_NAME: Final = "_UniffiRustBufferBuilder"
_BUFFER_NAME: Final = "_UniffiRustBuffer"
_SET_LOOP_NAME: Final = "uniffi_set_event_loop"
_GET_LOOP_NAME: Final = "_uniffi_get_event_loop"
_GLOBAL_LOOP_NAME: Final = "_UNIFFI_GLOBAL_EVENT_LOOP"
_BUILDER_METHODS: Final = ("write", "_pack_into", "_reserve", "finalize")

_builder_cls: Any = getattr(_generated, _BUILDER_NAME, None)
# The generated methods, even if this module is imported again after patching them.
_STOCK_WRITE: Any = getattr(_builder_cls, "_taquba_stock_write", None) or getattr(
    _builder_cls, "write", None
)
_STOCK_PACK_INTO: Any = getattr(_builder_cls, "_taquba_stock_pack_into", None) or getattr(
    _builder_cls, "_pack_into", None
)
_BYTES_CONVERTER_NAME: Final = "_UniffiFfiConverterBytes"
_bytes_converter: Any = getattr(_generated, _BYTES_CONVERTER_NAME, None)
_rust_buffer_cls: Any = getattr(_generated, _BUFFER_NAME, None)
_STOCK_LOWER: Any = getattr(_bytes_converter, "_taquba_stock_lower", None) or getattr(
    _bytes_converter, "lower", None
)
_LENGTH_PREFIX: Final = struct.Struct(">i")


def _buffer_address(builder: Any) -> int:
    address = ctypes.cast(builder.rbuf.data, ctypes.c_void_p).value
    if address is None:  # pragma: no cover - the builder always allocates
        raise MemoryError("UniFFI buffer has no storage")
    return address + int(builder.rbuf.len)


def _copy_into(builder: Any, data: bytes) -> None:
    size = len(data)
    with builder._reserve(size):
        if size:
            ctypes.memmove(_buffer_address(builder), data, size)


def _fast_write(builder: Any, value: Any) -> None:
    """`_UniffiRustBufferBuilder.write`, copying with one `memmove` instead of a loop."""
    if isinstance(value, bytes):
        _copy_into(builder, value)
    elif isinstance(value, bytearray):
        _copy_into(builder, bytes(value))
    elif isinstance(value, memoryview) and value.itemsize == 1:
        _copy_into(builder, value.tobytes())
    else:  # anything exotic keeps the generated behaviour
        _STOCK_WRITE(builder, value)


def _fast_pack_into(builder: Any, size: int, fmt: str, value: Any) -> None:
    """`_UniffiRustBufferBuilder._pack_into`, copying with one `memmove`."""
    packed = struct.pack(fmt, value)
    if len(packed) != size:  # pragma: no cover - the generated callers pass matching sizes
        _STOCK_PACK_INTO(builder, size, fmt, value)
    else:
        _copy_into(builder, packed)


def _fast_lower_bytes(value: Any) -> Any:
    """`_UniffiFfiConverterBytes.lower`: one buffer allocation and two `memmove` copies.

    The generated version grows a buffer builder through context managers and several FFI
    allocations; lowering is a length prefix followed by the bytes, so its size is known.
    """
    if isinstance(value, bytes):
        data: bytes = value
    elif isinstance(value, bytearray) or (isinstance(value, memoryview) and value.itemsize == 1):
        data = bytes(cast("bytearray | memoryview", value))
    else:  # anything exotic keeps the generated behaviour
        return _STOCK_LOWER(value)
    size = len(data)
    rbuf = _rust_buffer_cls.alloc(size + 4)
    try:
        address = ctypes.cast(rbuf.data, ctypes.c_void_p).value
        if address is None:  # pragma: no cover - the allocation always has storage
            raise MemoryError("UniFFI buffer has no storage")
        ctypes.memmove(address, _LENGTH_PREFIX.pack(size), 4)
        if size:
            ctypes.memmove(address + 4, data, size)
        rbuf.len = size + 4
    except BaseException:
        rbuf.free()
        raise
    return rbuf


def _lowered_bytes(lower: Callable[[Any], Any], value: Any) -> bytes:
    rbuf = lower(value)
    try:
        return bytes(rbuf.data[0 : int(rbuf.len)])
    finally:
        rbuf.free()


def _builder_output(write: Callable[[Any, Any], None], pack: Any, sample: bytes) -> bytes:
    builder = _builder_cls()
    try:
        pack(builder, 4, ">i", len(sample))
        write(builder, sample)
        write(builder, bytearray(sample[:7]))
        write(builder, memoryview(sample)[3:11])
        pack(builder, 8, ">Q", 2**64 - 2)
        rbuf = builder.rbuf
        return bytes(rbuf.data[0 : int(rbuf.len)])
    finally:
        builder.discard()


def _install_bytes_patch() -> bool:
    """Patch the buffer builder and keep the patch only if it writes identical bytes."""
    sample = bytes(range(256)) * 70 + b"\x00end"  # several reallocations
    expected = _builder_output(_STOCK_WRITE, _STOCK_PACK_INTO, sample)
    if _builder_output(_fast_write, _fast_pack_into, sample) != expected:
        return False
    for value in (sample, b"", bytearray(sample[:9]), memoryview(sample)[5:77]):
        if _lowered_bytes(_fast_lower_bytes, value) != _lowered_bytes(_STOCK_LOWER, value):
            return False
    _builder_cls._taquba_stock_write = _STOCK_WRITE
    _builder_cls._taquba_stock_pack_into = _STOCK_PACK_INTO
    _builder_cls.write = _fast_write
    _builder_cls._pack_into = _fast_pack_into
    _bytes_converter._taquba_stock_lower = _STOCK_LOWER
    _bytes_converter.lower = staticmethod(_fast_lower_bytes)
    return True


# --------------------------------------------------------------------------------------------
# Streamlined async calls
# --------------------------------------------------------------------------------------------

_STOCK_CALL_ASYNC_NAME: Final = "_uniffi_rust_call_async"
_STOCK_CALL_ASYNC: Any = getattr(_generated, "_taquba_stock_call_async", None) or getattr(
    _generated, _STOCK_CALL_ASYNC_NAME, None
)
_STOCK_CALL_WITH_ERROR_NAME: Final = "_uniffi_rust_call_with_error"
_STOCK_CALL_WITH_ERROR: Any = getattr(_generated, "_taquba_stock_call_with_error", None) or getattr(
    _generated, _STOCK_CALL_WITH_ERROR_NAME, None
)
_status_cls: Any = getattr(_generated, "_UniffiRustCallStatus", None)
_check_status: Any = getattr(_generated, "_uniffi_check_call_status", None)
_continuation_type: Any = getattr(_generated, "_UNIFFI_RUST_FUTURE_CONTINUATION_CALLBACK", None)
_POLL_READY: Final = getattr(_generated, "_UNIFFI_RUST_FUTURE_POLL_READY", 0)

_waiting_polls: dict[int, _TrioFuture] = {}
"""The trio futures of polls in flight, by the handle given to Rust (`_continue`)."""
_poll_handles = itertools.count(1)


def _continue(
    handle: int,
    poll_code: int,
    *,
    _polls: dict[int, _TrioFuture] = _waiting_polls,
    _get_ident: Callable[[], int] = threading.get_ident,
    _finished: type[Exception] = trio.RunFinishedError,
) -> None:
    """The continuation Rust calls when a polled future can make progress (any thread).

    What it uses is bound as defaults, so it still works while the interpreter shuts down
    and module globals are cleared.
    """
    future = _polls.pop(handle, None)
    if future is None:  # the call was cancelled and its future freed
        return
    if future.thread == _get_ident():
        future.set_result(poll_code)
        return
    try:  # noqa: SIM105 - contextlib is a module global, gone at shutdown
        future.token.run_sync_soon(future.set_result, poll_code)
    except _finished:
        pass


_CONTINUE: Any = _continuation_type(_continue) if _continuation_type is not None else None


async def _fast_call_async(
    rust_future: Any,
    ffi_poll: Any,
    ffi_complete: Any,
    ffi_free: Any,
    lift_func: Callable[[Any], Any],
    error_ffi_converter: Any,
) -> Any:
    """The generated ``_uniffi_rust_call_async`` with less bookkeeping, for trio tasks.

    Same protocol (poll until ready, complete, free), minus the event-loop lookup, the locked
    handle map and the call-status helpers: a plain dict keyed by a counter holds the future
    of the poll in flight, and the completion's call status is built and checked directly.
    Outside a trio task (asyncio users of the binding) the generated function runs instead.
    """
    if not trio.lowlevel.in_trio_task():
        return await _STOCK_CALL_ASYNC(
            rust_future, ffi_poll, ffi_complete, ffi_free, lift_func, error_ffi_converter
        )
    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()
    handle = 0
    try:
        while True:
            future = _TrioFuture(task, token)
            handle = next(_poll_handles)
            _waiting_polls[handle] = future
            ffi_poll(rust_future, _CONTINUE, handle)
            if await future == _POLL_READY:
                break
        status = _status_cls()  # zeroed: success, empty error buffer
        result = ffi_complete(rust_future, ctypes.byref(status))
        if status.code:
            _check_status(error_ffi_converter, status)
        return lift_func(result)
    finally:
        _waiting_polls.pop(handle, None)
        ffi_free(rust_future)


def _fast_call_with_error(
    error_ffi_converter: Any,
    fn: Any,
    *args: Any,
    _status_cls: Any = _status_cls,
    _byref: Any = ctypes.byref,
    _check_status: Any = _check_status,
) -> Any:
    """The generated ``_uniffi_rust_call_with_error``, building the call status directly.

    A zero-initialised status is what the generated ``default()`` builds in two steps
    (success, an empty error buffer). Every synchronous binding call goes through this,
    including the frees in the binding's ``__del__`` methods at interpreter shutdown, when
    module globals are already cleared: what it uses is bound as defaults.
    """
    status = _status_cls()
    result = fn(*args, _byref(status))
    if status.code:
        _check_status(error_ffi_converter, status)
    return result


def _install_call_patch() -> bool:
    """Use the streamlined call helpers above, if the generated pieces exist."""
    if None in (_STOCK_CALL_ASYNC, _STOCK_CALL_WITH_ERROR, _status_cls, _check_status, _CONTINUE):
        return False
    namespace: dict[str, Any] = _generated.__dict__
    namespace["_taquba_stock_call_async"] = _STOCK_CALL_ASYNC
    namespace["_taquba_stock_call_with_error"] = _STOCK_CALL_WITH_ERROR
    namespace[_STOCK_CALL_ASYNC_NAME] = _fast_call_async
    namespace[_STOCK_CALL_WITH_ERROR_NAME] = _fast_call_with_error
    return True


# --------------------------------------------------------------------------------------------
# Import-time choice
# --------------------------------------------------------------------------------------------


def _private_api_problem() -> str | None:
    """Why the shim and the patch cannot be used, or None if they can."""
    try:
        installed = importlib.metadata.version("slatedb")
    except importlib.metadata.PackageNotFoundError:
        return "the slatedb distribution metadata is missing"
    if installed != SLATEDB_VERSION:
        return f"slatedb {installed} is installed, taquba was tested with {SLATEDB_VERSION}"
    for name in (_SET_LOOP_NAME, _GET_LOOP_NAME, _GLOBAL_LOOP_NAME, _BUFFER_NAME):
        if not hasattr(_generated, name):
            return f"the generated slatedb module has no {name}"
    if _builder_cls is None or not all(hasattr(_builder_cls, m) for m in _BUILDER_METHODS):
        return f"the generated slatedb module has no usable {_BUILDER_NAME}"
    if _bytes_converter is None or not hasattr(_bytes_converter, "lower"):
        return f"the generated slatedb module has no usable {_BYTES_CONVERTER_NAME}"
    installed_loop: object = getattr(_generated, _GLOBAL_LOOP_NAME)
    if installed_loop is not None and type(installed_loop).__name__ != _TrioAwareLoop.__name__:
        # (Our own loop from an earlier import of this module is fine to replace.)
        return "another library already installed a UniFFI event loop for slatedb"
    return None


def _choose_bridge() -> tuple[Literal["shim", "thread"], bool]:
    requested = os.environ.get(_BRIDGE_ENV, "").strip().lower()
    if requested == "thread":
        return "thread", False
    if requested not in ("", "auto", "shim"):
        _log.warning("ignoring %s=%r (expected 'thread' or 'shim')", _BRIDGE_ENV, requested)
    problem = _private_api_problem()
    if problem is not None:
        _log.warning(
            "taquba: %s; using the slower asyncio-thread bridge to SlateDB without the "
            "byte-copy patch",
            problem,
        )
        return "thread", False
    getattr(_generated, _SET_LOOP_NAME)(_TrioAwareLoop())
    try:
        patched = _install_bytes_patch()
    except Exception:  # the patch is an optimisation: never fail the import over it
        _log.warning("taquba: could not patch slatedb's byte copies", exc_info=True)
        patched = False
    if not patched:
        _log.warning("taquba: slatedb byte-copy patch failed its self-check; not using it")
    if not _install_call_patch():
        _log.warning("taquba: slatedb's async call helpers are not as expected; not patching")
    return "shim", patched


_CHOICE: Final = _choose_bridge()
BRIDGE: Final[Literal["shim", "thread"]] = _CHOICE[0]
"""How binding calls reach trio: the installed event-loop ``"shim"`` or a loop ``"thread"``."""
BYTES_PATCHED: Final[bool] = _CHOICE[1]
"""Whether the generated byte-buffer writer copies with `memmove`."""

_call_impl = _call_direct if BRIDGE == "shim" else _call_on_loop_thread


async def _call(fn: Callable[[*_Ts], Coroutine[Any, Any, _R]], *args: *_Ts) -> _R:
    """Await a binding coroutine function through the bridge, mapping its errors.

    Raises `trio.Cancelled` before calling if the caller is cancelled: a binding call that
    completes during its poll does not yield, so this is its cancellation point.
    """
    if held_interrupts() is None:
        await trio.lowlevel.checkpoint_if_cancelled()
    else:
        await wait_holding(trio.lowlevel.checkpoint_if_cancelled)
    try:
        return await _call_impl(fn, *args)
    except _SLATEDB_ERRORS as exc:
        raise _translate(exc) from exc


# --------------------------------------------------------------------------------------------
# Large transaction writes
# --------------------------------------------------------------------------------------------

LARGE_VALUE_BYTES: Final = 64 * 1024
"""Transaction writes of values at least this large hand the value to SlateDB off the event loop.

The binding's Rust side takes in a value at about 5.6 ns a byte on this kind of machine (6 ms
for 1 MiB, measured in the generated scaffolding call, before SlateDB does any work), and that
call runs synchronously. From this size on, `Transaction.put` makes that call in a worker
thread (ctypes releases the GIL), which costs about 0.1 ms of thread hand-off instead.
"""

_PUT_FN_NAME: Final = "uniffi_slatedb_uniffi_fn_method_dbtransaction_put"
_VOID_FUTURE_NAMES: Final = (
    "ffi_slatedb_uniffi_rust_future_poll_void",
    "ffi_slatedb_uniffi_rust_future_complete_void",
    "ffi_slatedb_uniffi_rust_future_free_void",
)


def _large_put_parts() -> tuple[Any, Any, Any, tuple[Any, Any, Any]] | None:
    """The generated pieces `_put_large` needs, or None to keep every write on the loop."""
    if BRIDGE != "shim":
        return None
    lib: Any = getattr(_generated, "_UniffiLib", None)
    call_async: Any = getattr(_generated, "_uniffi_rust_call_async", None)
    errors: Any = getattr(_generated, "_UniffiFfiConverterTypeError", None)
    if lib is None or call_async is None or errors is None or _bytes_converter is None:
        return None
    try:
        put_fn = getattr(lib, _PUT_FN_NAME)
        poll, complete, free = (getattr(lib, name) for name in _VOID_FUTURE_NAMES)
    except AttributeError:
        return None
    return put_fn, call_async, errors, (poll, complete, free)


_LARGE_PUT: Final = _large_put_parts()


async def _put_large(txn: _sdb.DbTransaction, key: bytes, value: bytes) -> None:
    """`txn.put(key, value)` with the argument hand-over made in a worker thread.

    This is the generated ``DbTransaction.put`` split in two: lowering the arguments and the
    scaffolding call that creates the Rust future run in a thread (not cancellable: it takes a
    few milliseconds and has no side effect until the future is polled); polling it to
    completion runs on the trio thread like every other call, and frees the future.
    """
    assert _LARGE_PUT is not None
    put_fn, call_async, errors, (poll, complete, free) = _LARGE_PUT
    lower = _bytes_converter.lower

    def start() -> Any:
        generated: Any = txn  # the handle clone is the generated class's private method
        return put_fn(generated._uniffi_clone_handle(), lower(key), lower(value))

    future = await trio.to_thread.run_sync(start)
    try:
        await call_async(future, poll, complete, free, _ignore_result, errors)
    except _SLATEDB_ERRORS as exc:
        raise _translate(exc) from exc


def _ignore_result(_value: object) -> None:
    return None


# --------------------------------------------------------------------------------------------
# Object stores
# --------------------------------------------------------------------------------------------

_OBJECT_STORES: weakref.WeakKeyDictionary[Store, _sdb.ObjectStore] = weakref.WeakKeyDictionary()


def memory_object_store() -> _sdb.ObjectStore:
    """A fresh in-memory object store, private to its caller."""
    with map_errors():
        return _sdb.ObjectStoreBuilder(_sdb.ObjectStoreType.IN_MEMORY).build()


# SlateDB's local store takes its root from a URL path without percent-decoding it, so a root
# holding a character the URL parser escapes cannot be used that way. Object paths inside a
# store are escaped too (``%``, ``~``, non-ASCII, ...), so such characters cannot go into the
# database path either. Each way handles characters the other cannot.
_URL_ESCAPED: Final = frozenset(' "#<>?`{}\\')
_PATH_ESCAPED: Final = frozenset('%`[]"<>#|\\{^}*?~')


def _plain(text: str, escaped: frozenset[str]) -> bool:
    return all(" " <= char <= "~" and char not in escaped for char in text)


def local_object_store(root: str) -> tuple[_sdb.ObjectStore, str]:
    """A local-filesystem object store for the absolute directory `root` (must exist).

    Returns:
        The object store and the path of `root` inside it, to prefix database paths with
        (empty when the store is rooted at `root` itself).

    Raises:
        InvalidStoreUrl: SlateDB cannot address a directory with this name.
    """
    if _plain(root, _URL_ESCAPED):
        with map_errors():
            return _sdb.ObjectStoreBuilder.from_url(f"file://{root}").build(), ""
    if _plain(root, _PATH_ESCAPED):
        with map_errors():
            return _sdb.ObjectStoreBuilder.from_url("file:///").build(), root.strip("/")
    raise InvalidStoreUrl(
        f"SlateDB cannot use the directory {root!r}: its path mixes characters its local "
        'store escapes (non-ASCII, or one of space and "#<>?`{}|[]%~*^\\ in a combination '
        "it cannot handle); choose a plainer path"
    )


def s3_object_store(config: dict[str, str]) -> _sdb.ObjectStore:
    """An S3 object store built only from `config` (``object_store`` S3 keys), not the env."""
    with map_errors():
        builder = _sdb.ObjectStoreBuilder(_sdb.ObjectStoreType.S3)
        for key, value in config.items():
            builder.with_config(key, value)
        return builder.build()


def attach_object_store(store: Store, object_store: _sdb.ObjectStore) -> None:
    """Remember `object_store` as the SlateDB side of `store` (for `Database.open`)."""
    _OBJECT_STORES[store] = object_store


# --------------------------------------------------------------------------------------------
# Scans
# --------------------------------------------------------------------------------------------


def _duration(seconds: float, what: str) -> str:
    """A SlateDB duration string; SlateDB keeps whole milliseconds."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise UsageError(f"{what} must be a positive number of seconds, not {seconds!r}")
    return json.dumps(f"{max(1, round(seconds * 1000))}ms")


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
        batch = await _call(iterator.next_batch, want)
        out.extend((kv.key, kv.value) for kv in batch)
        if len(batch) < want:
            break
    return out


def _check_scan_args(limit: int | None, batch_size: int) -> None:
    if limit is not None and limit < 0:
        raise UsageError(f"scan limit must be >= 0, not {limit}")
    if batch_size < 1:
        raise UsageError(f"scan batch_size must be >= 1, not {batch_size}")


class _Scanner:
    """Shared scan logic of `Database` and `Transaction` (both expose `scan_prefix`)."""

    __slots__ = ()

    _target: _sdb.Db | _sdb.DbTransaction | _sdb.DbReader

    async def scan(
        self,
        prefix: bytes,
        *,
        start: bytes | None = None,
        start_inclusive: bool = True,
        end: bytes | None = None,
        limit: int | None = None,
        cache_blocks: bool = False,
        batch_size: int = _DEFAULT_BATCH,
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
            await _read_fault("scan")
        options = _scan_options(cache_blocks=cache_blocks, reverse=reverse)
        iterator = await _call(self._target.scan_prefix_with_options, prefix, key_range, options)
        return await _drain(iterator, limit, batch_size)

    async def last(self, prefix: bytes) -> tuple[bytes, bytes] | None:
        """Return the pair with the largest key under `prefix`, or None if there is none."""
        rows = await self.scan(prefix, limit=1, reverse=True)
        return rows[0] if rows else None


# --------------------------------------------------------------------------------------------
# Database
# --------------------------------------------------------------------------------------------


async def _read_fault(site: _failpoints.Site) -> None:
    """Apply an injected read fault, if a test installed one for this call."""
    fault = _failpoints.INSTALLED[-1].pick(site) if _failpoints.INSTALLED else None
    if fault is None:
        return
    if fault.kind == "slow":
        await trio.sleep(fault.seconds)
    else:
        raise _injected_error(fault)


def _write_fault(
    site: _failpoints.Site, *, transaction: bool, durable: bool
) -> _failpoints.InjectedKind | None:
    """The fault a test injects into this write, if any."""
    if not _failpoints.INSTALLED:
        return None
    return _failpoints.INSTALLED[-1].pick(site, transaction=transaction, durable=durable)


def _injected_error(fault: _failpoints.InjectedKind) -> Exception:
    """The error an injected fault raises where the real fault would."""
    if fault.kind == "conflict":
        return TransactionConflict("injected write conflict")
    if fault.kind == "unavailable":
        return StorageUnavailable("injected: storage unavailable")
    if fault.kind == "permanent":
        return StorageError("injected: permanent storage failure")
    return StorageUnavailable("commit outcome unknown (injected)")


async def _before_applying(fault: _failpoints.InjectedKind | None) -> None:
    """Raise the error of a fault that stops a write before it is applied."""
    if fault is not None and fault.kind in ("conflict", "unavailable", "permanent", "lost"):
        raise _injected_error(fault)


async def _after_applying(fault: _failpoints.InjectedKind | None) -> None:
    """Stall (``slow``) or report an unknown outcome (``unknown``) after a write applied."""
    if fault is None:
        return
    if fault.kind == "slow":
        await trio.sleep(fault.seconds)
    elif fault.kind == "unknown":
        raise _injected_error(fault)


@contextlib.contextmanager
def _shielded_write(seconds: float) -> Generator[None]:
    """Shield a write from cancellation (and interrupts), bounded by the commit deadline."""
    with (
        hold_interrupts(),
        trio.CancelScope(shield=True),
        trio.move_on_after(seconds) as deadline,
    ):
        yield
    if deadline.cancelled_caught:
        raise StorageUnavailable(
            f"commit outcome unknown: no answer from storage within {seconds:g} s"
        )


class Database(_Scanner):
    """An open SlateDB database (one per queue), used from trio.

    Open it with `Database.open`; close it with `close`. Every method maps SlateDB errors to
    taquba's. Writes are shielded from cancellation; reads are not.
    """

    __slots__ = ("_closed", "_db", "_target", "commit_deadline", "name", "store")

    def __init__(self, db: _sdb.Db, store: Store, name: str, *, commit_deadline: float) -> None:
        self._db = db
        self._target = db
        self._closed = False
        self.commit_deadline = commit_deadline
        """Seconds a write (commit, put, delete and its durability wait) may take before its
        outcome is declared unknown (`StorageUnavailable`)."""
        self.store = store
        """The store the database lives in (kept alive with it)."""
        self.name = name
        """The database name inside the store."""

    def __repr__(self) -> str:
        return f"<Database {self.name!r} in {self.store!r}>"

    @classmethod
    async def open(
        cls,
        store: Store,
        name: str,
        *,
        flush_interval: float | None = None,
        max_retries: int | None = None,
        manifest_poll_interval: float | None = None,
        open_deadline: float = 30.0,
        commit_deadline: float | None = None,
    ) -> Database:
        """Open (or create) the database `name` in `store` as its single writer.

        Opening fences any other writer of the same database: its next write fails with
        `Fenced`.

        Args:
            store: Where the database lives.
            name: The database name; see `Store.db_path`.
            flush_interval: Seconds between WAL flushes (the durability latency and group
                commit window); None keeps SlateDB's 100 ms.
            max_retries: Object-store retries before a call fails with `StorageUnavailable`;
                None uses `store.max_retries`. Always finite: SlateDB's default retries
                forever.
            manifest_poll_interval: Seconds between manifest reads (how soon an idle writer
                notices it was fenced); None keeps SlateDB's 1 s.
            open_deadline: Seconds the open may take before failing with
                `StorageUnavailable`.
            commit_deadline: Seconds a write and its durability wait may take before its
                outcome is declared unknown; None uses `default_commit_deadline` of the
                retries, which outlasts the store's own retry budget.

        Returns:
            The open database.

        Raises:
            StorageMisconfigured: The store refused for good (`Store.check`).
            StorageUnavailable: The store did not answer in time or after the retries.
            StorageError: Another storage failure.
        """
        retries = store.max_retries if max_retries is None else max_retries
        if retries < 0:
            raise UsageError(f"max_retries must be >= 0, not {retries}")
        deadline = (
            default_commit_deadline(retries)
            if commit_deadline is None
            else check_commit_deadline(commit_deadline)
        )
        object_store = _OBJECT_STORES.get(store)
        if object_store is None:  # pragma: no cover - every Store attaches one
            raise StorageError(f"{store!r} has no SlateDB object store")
        with map_errors():
            settings = _sdb.Settings.default()
            if flush_interval is not None:
                settings.set("flush_interval", _duration(flush_interval, "flush_interval"))
            if manifest_poll_interval is not None:
                settings.set(
                    "manifest_poll_interval",
                    _duration(manifest_poll_interval, "manifest_poll_interval"),
                )
            for key in (
                "object_store_max_retries",
                "compactor_options.object_store_max_retries",
                "garbage_collector_options.object_store_max_retries",
            ):
                settings.set(key, str(retries))
            builder = _sdb.DbBuilder(store.db_path(name), object_store)
            builder.with_settings(settings)
        try:
            with trio.fail_after(open_deadline):
                # SlateDB reports every object-store failure as `Unavailable`, telling a
                # missing bucket or refused credentials apart only in its message; the
                # store's own check classifies them first, by exception class.
                await store.check()
                db = await _call(builder.build)
        except trio.TooSlowError:
            raise StorageUnavailable(
                f"opening database {name!r} in {store.url} took longer than {open_deadline:g} s"
            ) from None
        return cls(db, store, name, commit_deadline=deadline)

    async def get(self, key: bytes) -> bytes | None:
        """Return the value of `key` (including writes not yet durable), or None."""
        if _failpoints.INSTALLED:
            await _read_fault("get")
        return await _call(self._db.get, key)

    async def put(self, key: bytes, value: bytes, *, durable: bool = True) -> None:
        """Write `key`; with `durable`, return only once it is in object storage (shielded)."""
        fault = _write_fault("put", transaction=False, durable=durable)
        with _shielded_write(self.commit_deadline):
            await _before_applying(fault)
            handle = await _call(self._db.put, key, value)
            await _after_applying(fault)
            if durable:
                await _call(handle.await_durable)

    async def delete(self, key: bytes, *, durable: bool = True) -> None:
        """Delete `key`; with `durable`, return only once that is durable (shielded)."""
        fault = _write_fault("delete", transaction=False, durable=durable)
        with _shielded_write(self.commit_deadline):
            await _before_applying(fault)
            handle = await _call(self._db.delete, key)
            await _after_applying(fault)
            if durable:
                await _call(handle.await_durable)

    async def begin(self) -> Transaction:
        """Start a transaction with snapshot isolation (write-write conflicts only)."""
        txn = await _call(self._db.begin, _sdb.IsolationLevel.SNAPSHOT)
        return Transaction(txn, commit_deadline=self.commit_deadline)

    async def flush(self) -> None:
        """Flush the WAL buffer to object storage now."""
        await _call(self._db.flush)

    def close_reason(self) -> CloseReasonName | None:
        """Why the database stopped accepting calls, or None while it is open."""
        with map_errors():
            reason = self._db.status().close_reason
        if reason is None:
            return None
        return _CLOSE_REASON_NAMES.get(reason, "unknown")

    def check(self) -> None:
        """Raise `Fenced`, `QueueClosed` or `StorageFatal` if the database is no longer open."""
        reason = self.close_reason()
        if reason is not None:
            raise _closed_error(reason, f"database {self.name!r} is closed ({reason})")

    async def watch(self, *, interval: float = 0.2) -> None:
        """Poll the database's status until it stops; run it as a background task.

        Returns normally when the database was closed cleanly (by `close`).

        Raises:
            Fenced: Another writer opened the database.
            StorageFatal: The database failed for good.
        """
        while True:
            reason = self.close_reason()
            if reason == "clean":
                return
            if reason is not None:
                raise _closed_error(reason, f"database {self.name!r} stopped ({reason})")
            await trio.sleep(interval)

    async def close(self) -> None:
        """Shut the database down (flushing buffered writes). Idempotent.

        Runs shielded from cancellation for at most `CLOSE_DEADLINE` seconds. A fenced or
        failed database closes without error. The only exception it raises is a
        `KeyboardInterrupt` trio delivered during the shutdown, once the shutdown is over.
        """
        if self._closed:
            return
        self._closed = True
        with hold_interrupts(), trio.move_on_after(CLOSE_DEADLINE, shield=True) as scope:
            try:
                await _call(self._db.shutdown)
            except StorageError as exc:
                _log.debug("shutdown of database %r: %s", self.name, exc)
        if scope.cancelled_caught:
            _log.warning(
                "shutdown of database %r did not finish within %g s", self.name, CLOSE_DEADLINE
            )


class Reader(_Scanner):
    """A read-only handle on a database that a writer (in any process) may be writing.

    It follows the writer's latest durable state (SlateDB's ``FOLLOW_LATEST`` reader mode),
    polling the manifest every `poll_interval`; it writes nothing to the store, so it neither
    fences nor slows the writer. Reads are not snapshots: each call sees the state the reader
    had loaded at that moment.
    """

    __slots__ = ("_closed", "_reader", "_target", "name", "store")

    def __init__(self, reader: _sdb.DbReader, store: Store, name: str) -> None:
        self._reader = reader
        self._target = reader
        self._closed = False
        self.store = store
        """The store the database lives in."""
        self.name = name
        """The database name inside the store."""

    def __repr__(self) -> str:
        return f"<Reader {self.name!r} in {self.store!r}>"

    @classmethod
    async def open(
        cls,
        store: Store,
        name: str,
        *,
        poll_interval: float = 1.0,
        max_retries: int | None = None,
        open_deadline: float = 30.0,
    ) -> Reader:
        """Open the existing database `name` in `store` for reading.

        Raises:
            DatabaseNotFound: There is no database `name` in `store`.
            StorageUnavailable: The store did not answer in time or after the retries.
            StorageError: Another storage failure.
        """
        retries = store.max_retries if max_retries is None else max_retries
        if retries < 0:
            raise UsageError(f"max_retries must be >= 0, not {retries}")
        if not math.isfinite(poll_interval) or poll_interval <= 0:
            raise UsageError(
                f"poll_interval must be a positive number of seconds, not {poll_interval!r}"
            )
        object_store = _OBJECT_STORES.get(store)
        if object_store is None:  # pragma: no cover - every Store attaches one
            raise StorageError(f"{store!r} has no SlateDB object store")
        with map_errors():
            builder = _sdb.DbReaderBuilder(store.db_path(name), object_store)
            # The generated variant classes are not typed as subclasses of ReaderMode.
            builder.with_reader_mode(cast("_sdb.ReaderMode", _sdb.ReaderMode.FOLLOW_LATEST()))
            builder.with_options(
                _sdb.ReaderOptions(
                    manifest_poll_interval_ms=max(1, round(poll_interval * 1000)),
                    checkpoint_lifetime_ms=_READER_CHECKPOINT_LIFETIME_MS,
                    max_memtable_bytes=_READER_MEMTABLE_BYTES,
                    skip_wal_replay=False,
                    object_store_max_retries=retries,
                )
            )
        try:
            with trio.fail_after(open_deadline):
                await store.check()  # classifies misconfiguration (see `Database.open`)
                reader = await _call(builder.build)
        except trio.TooSlowError:
            raise StorageUnavailable(
                f"opening database {name!r} in {store.url} took longer than {open_deadline:g} s"
            ) from None
        except DataError as exc:
            if _NO_MANIFEST in str(exc):
                raise DatabaseNotFound(name, store.url) from exc
            raise
        return cls(reader, store, name)

    async def get(self, key: bytes) -> bytes | None:
        """Return the value of `key` as the reader last loaded it, or None."""
        return await _call(self._reader.get, key)

    async def close(self) -> None:
        """Stop the reader's background polling (idempotent; runs even if cancelled)."""
        if self._closed:
            return
        self._closed = True
        with hold_interrupts(), trio.CancelScope(shield=True), trio.move_on_after(CLOSE_DEADLINE):
            try:
                await _call(self._reader.shutdown)
            except TaqubaError as exc:
                _log.warning("closing the reader of %s: %s", self.name, exc)


_READER_CHECKPOINT_LIFETIME_MS: Final = 10 * 60 * 1000
"""Required by the binding's reader options; unused in ``FOLLOW_LATEST`` mode."""
_READER_MEMTABLE_BYTES: Final = 64 << 20
"""How much WAL data a reader keeps in memory before it reads only what is flushed."""
_NO_MANIFEST: Final = "failed to find latest transactional object"
"""SlateDB's error text when a path holds no database (no manifest)."""


class Transaction(_Scanner):
    """A SlateDB transaction (snapshot isolation); conflicts surface at `commit`.

    Reads see the transaction's own writes. Every method is async because the binding's are.
    """

    __slots__ = ("_commit_deadline", "_completed", "_target", "_txn")

    def __init__(self, txn: _sdb.DbTransaction, *, commit_deadline: float) -> None:
        self._txn = txn
        self._target = txn
        self._completed = False
        self._commit_deadline = commit_deadline

    async def get(self, key: bytes) -> bytes | None:
        """Return the value of `key` as this transaction sees it, or None."""
        if _failpoints.INSTALLED:
            await _read_fault("get")
        return await _call(self._txn.get, key)

    async def put(self, key: bytes, value: bytes) -> None:
        """Buffer a write of `key` in the transaction.

        A value of `LARGE_VALUE_BYTES` or more is handed to SlateDB from a worker thread.
        """
        if _LARGE_PUT is not None and type(value) is bytes and len(value) >= LARGE_VALUE_BYTES:
            await trio.lowlevel.checkpoint_if_cancelled()
            await _put_large(self._txn, key, value)
        else:
            await _call(self._txn.put, key, value)

    async def delete(self, key: bytes) -> None:
        """Buffer a deletion of `key` in the transaction."""
        await _call(self._txn.delete, key)

    async def mark_read(self, keys: list[bytes]) -> None:
        """Treat `keys` as read, so a concurrent write to any of them conflicts at commit."""
        await _call(self._txn.mark_read, keys)

    async def unmark_write(self, keys: list[bytes]) -> None:
        """Exclude `keys` from write-conflict detection (e.g. statistics counters)."""
        await _call(self._txn.unmark_write, keys)

    async def commit(self, *, durable: bool, on_commit: Callable[[], None] | None = None) -> None:
        """Commit; with `durable`, return only once the writes are in object storage.

        Shielded from cancellation and bounded by the database's commit deadline (past it the
        outcome is unknown). After it returns or raises, the transaction is finished.
        `on_commit` is called once the commit is applied (visible to later transactions) and
        before the durability wait.

        Raises:
            TransactionConflict: Another write to a key this transaction wrote committed
                first; nothing was applied.
            StorageUnavailable: No answer within the deadline; the outcome is unknown.
            Fenced: Another writer opened the database; the outcome is unknown.
        """
        self._completed = True
        fault = _write_fault("commit", transaction=True, durable=durable)
        with _shielded_write(self._commit_deadline):
            if fault is not None and fault.kind in ("conflict", "unavailable", "permanent", "lost"):
                await _call(self._txn.rollback)
                await _before_applying(fault)
            handle = await _call(self._txn.commit)
            if on_commit is not None:
                on_commit()
            await _after_applying(fault)
            if durable and handle is not None:
                await _call(handle.await_durable)

    async def rollback(self) -> None:
        """Discard the transaction. Safe to call at any time, including after `commit`."""
        if self._completed:
            return
        self._completed = True
        with hold_interrupts(), trio.move_on_after(_ROLLBACK_DEADLINE, shield=True):
            try:
                await _call(self._txn.rollback)
            except StorageError as exc:  # already completed, closed, fenced: nothing to undo
                _log.debug("rollback: %s", exc)


async def run_transaction(
    db: Database,
    body: Callable[[Transaction], Awaitable[_T]],
    *,
    durable: bool,
    max_attempts: int = 64,
    on_commit: Callable[[], None] | None = None,
) -> _T:
    """Run `body` in a transaction and commit it, retrying on write conflicts.

    Each attempt begins a fresh transaction. `body` must be safe to run again: it should read
    what it needs through the transaction it is given. Conflicts back off with a small, growing,
    jittered delay (at most 50 ms).

    Args:
        db: The database.
        body: Reads and buffers writes through the transaction; its result is returned.
        durable: Whether the commit waits for durability.
        max_attempts: Attempts before giving up.
        on_commit: Called once, when the commit that succeeds is applied and before its
            durability wait (see `Transaction.commit`).

    Returns:
        What `body` returned in the attempt that committed.

    Raises:
        StorageError: The transaction conflicted `max_attempts` times (chained to the last
            conflict), or storage failed.
    """
    if max_attempts < 1:
        raise UsageError(f"max_attempts must be >= 1, not {max_attempts}")
    last_conflict: TransactionConflict | None = None
    for attempt in range(max_attempts):
        txn = await db.begin()
        try:
            result = await body(txn)
            await txn.commit(durable=durable, on_commit=on_commit)
        except TransactionConflict as exc:
            last_conflict = exc
            await txn.rollback()
        except BaseException:
            await txn.rollback()
            raise
        else:
            return result
        backoff_end = trio.current_time() + random.uniform(0.0, min(0.05, 0.002 * 2.0**attempt))
        await wait_holding(partial(trio.sleep_until, backoff_end))
    raise StorageError(f"transaction kept conflicting ({max_attempts} attempts)") from last_conflict


protect(
    _continue,
    _TrioFuture,
    _TrioAwareLoop,
    _call_direct,
    _call_on_loop_thread,
    _fast_call_async,
    _fast_call_with_error,
    _call,
    _put_large,
    _drain,
    _Scanner,
    Database,
    Reader,
    Transaction,
    run_transaction,
)
# The generated helpers, in case the stock call path runs inside trio (ctypes callbacks and
# the call protocol must never be interrupted halfway).
protect(
    *(
        getattr(_generated, name)
        for name in (
            "_uniffi_continuation_callback",
            "_uniffi_set_future_result",
            "_taquba_stock_call_async",
            "_taquba_stock_call_with_error",
            _STOCK_CALL_ASYNC_NAME,
            _STOCK_CALL_WITH_ERROR_NAME,
        )
        if callable(getattr(_generated, name, None))
    )
)
