"""SlateDB's exceptions, translated to taquba's at the adapter boundary.

Errors map by exception class and close reason, never by message:

| SlateDB | taquba |
|---|---|
| `Error.Transaction` | `TransactionConflict` (private; retried by `run_transaction`) |
| `Error.Closed(FENCED)` | `Fenced` |
| `Error.Closed(CLEAN)` | `QueueClosed` |
| `Error.Closed(PANIC/UNKNOWN)`, `Error.Internal`, FFI `InternalError` | `StorageFatal` |
| `Error.Unavailable` | `StorageUnavailable` |
| `Error.Data` | `DataError` |
| `Error.Invalid` | `StorageError` (a taquba bug or misuse) |
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Final, Literal, cast

import slatedb.uniffi as _sdb

from taquba._errors import (
    DataError,
    Fenced,
    QueueClosed,
    StorageError,
    StorageFatal,
    StorageUnavailable,
)

if TYPE_CHECKING:
    from collections.abc import Generator

__all__ = [
    "CLOSE_REASON_NAMES",
    "SLATEDB_ERRORS",
    "CloseReasonName",
    "TransactionConflict",
    "closed_error",
    "map_errors",
    "translate",
]

CloseReasonName = Literal["clean", "fenced", "panic", "unknown"]
"""Why a database stopped accepting calls, as `Database.close_reason` reports it."""


class TransactionConflict(Exception):
    """A transaction lost a write conflict at commit; nothing it wrote was applied.

    Internal: `run_transaction` retries on it. It is not a `TaqubaError` because it must never
    reach users.
    """


CLOSE_REASON_NAMES: Final[dict[_sdb.CloseReason, CloseReasonName]] = {
    _sdb.CloseReason.CLEAN: "clean",
    _sdb.CloseReason.FENCED: "fenced",
    _sdb.CloseReason.PANIC: "panic",
    _sdb.CloseReason.UNKNOWN: "unknown",
}


def closed_error(reason: CloseReasonName, message: str) -> StorageError:
    """The taquba error for a database that stopped for `reason`."""
    if reason == "fenced":
        return Fenced(message)
    if reason == "clean":
        return QueueClosed(message)
    return StorageFatal(message)


# The generated module defines `Error` twice (an Exception, then a namespace class that type
# checkers see); the variants are real Exception subclasses at run time.
SLATEDB_ERRORS: Final = (cast("type[Exception]", _sdb.Error), _sdb.InternalError)
"""What to catch around a binding call (then `translate` it)."""


def translate(exc: BaseException) -> BaseException:
    """Return taquba's exception for a SlateDB one (or `exc` itself if it is not SlateDB's)."""
    message = str(getattr(exc, "message", exc))
    if isinstance(exc, _sdb.Error.Transaction):
        return TransactionConflict(message)
    if isinstance(exc, _sdb.Error.Closed):
        reason: object = getattr(exc, "reason", None)
        name: CloseReasonName = "unknown"
        if isinstance(reason, _sdb.CloseReason):
            name = CLOSE_REASON_NAMES.get(reason, "unknown")
        return closed_error(name, message)
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

    `call` (in `taquba._binding`) does the same for awaited binding calls; use this around
    synchronous ones.
    """
    try:
        yield
    except SLATEDB_ERRORS as exc:
        raise translate(exc) from exc
