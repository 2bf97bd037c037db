"""Test fault injection at the SlateDB boundary (`taquba._failpoints`).

With no failpoints installed (production), each hook is a cheap no-op check.
"""

from __future__ import annotations

import trio

from taquba import _failpoints
from taquba._dberrors import TransactionConflict
from taquba._errors import StorageError, StorageUnavailable

__all__ = ["after_applying", "before_applying", "injected_error", "read_fault", "write_fault"]


async def read_fault(site: _failpoints.Site) -> None:
    """Apply an injected read fault, if a test installed one for this call."""
    fault = _failpoints.INSTALLED[-1].pick(site) if _failpoints.INSTALLED else None
    if fault is None:
        return
    if fault.kind == "slow":
        await trio.sleep(fault.seconds)
    else:
        raise injected_error(fault)


def write_fault(
    site: _failpoints.Site, *, transaction: bool, durable: bool
) -> _failpoints.InjectedKind | None:
    """The fault a test injects into this write, if any."""
    if not _failpoints.INSTALLED:
        return None
    return _failpoints.INSTALLED[-1].pick(site, transaction=transaction, durable=durable)


def injected_error(fault: _failpoints.InjectedKind) -> Exception:
    """The error an injected fault raises where the real fault would."""
    if fault.kind == "conflict":
        return TransactionConflict("injected write conflict")
    if fault.kind == "unavailable":
        return StorageUnavailable("injected: storage unavailable")
    if fault.kind == "permanent":
        return StorageError("injected: permanent storage failure")
    return StorageUnavailable("commit outcome unknown (injected)")


async def before_applying(fault: _failpoints.InjectedKind | None) -> None:
    """Raise the error of a fault that stops a write before it is applied."""
    if fault is not None and fault.kind in ("conflict", "unavailable", "permanent", "lost"):
        raise injected_error(fault)


async def after_applying(fault: _failpoints.InjectedKind | None) -> None:
    """Stall (``slow``) or report an unknown outcome (``unknown``) after a write applied."""
    if fault is None:
        return
    if fault.kind == "slow":
        await trio.sleep(fault.seconds)
    elif fault.kind == "unknown":
        raise injected_error(fault)
