"""Endpoint health: consecutive failures and disabling, as a pure transition, and its lock.

Theory of operation. An endpoint's health record (`EndpointHealth`, under
``webhooks/health/<endpoint>``) changes only as `health_after` says, from the stored record
and the outcome of one attempt:

- a delivered attempt resets ``consecutive_failures`` (it does not re-enable a disabled
  endpoint: only `enable_endpoint` does);
- a failed attempt adds one; it disables the endpoint if the response is a
  ``DISABLING_STATUSES`` one (410 Gone) and ``disable_on_gone``, or if the count reaches
  ``disable_after``. A disabled endpoint stays disabled, with its first reason.

The worker writes the new record in the same transaction as the attempt's settlement (ack,
nack or dead-letter effects). Those writes are blind, so the read, the transition and the
settlement of one endpoint run under `endpoint_lock`, an in-process lock per queue and
endpoint; `enable_endpoint` and `disable_endpoint` take it too. One process holds a store at a
time (the queue fences the others out), so that lock serialises every writer of the record.
Attempts that need no change (a success with no failures counted) take no lock.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import replace
from typing import TYPE_CHECKING

import trio

from ._records import EndpointHealth, decode_health, health_key

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    import taquba

__all__: list[str] = []


def health_after(
    current: EndpointHealth,
    *,
    failed: bool,
    gone: bool,
    at: int,
    summary: str,
    disable_after: int | None,
    disable_on_gone: bool,
) -> EndpointHealth:
    """The health record after one attempt (pure).

    Args:
        current: the stored record.
        failed: whether the attempt failed (anything but a 2xx from the endpoint).
        gone: whether the response asked to stop sending (`DISABLING_STATUSES`).
        at: when the attempt started (ms since the epoch).
        summary: the attempt's one-line summary, kept as the reason if it disables.
        disable_after: consecutive failures that disable the endpoint (None: never).
        disable_on_gone: whether a ``gone`` response disables the endpoint.
    """
    if not failed:
        return replace(current, consecutive_failures=0)
    failures = current.consecutive_failures + 1
    if current.disabled:
        return replace(current, consecutive_failures=failures)
    if gone and disable_on_gone:
        return EndpointHealth(failures, at, summary)
    if disable_after is not None and failures >= disable_after:
        noun = "failure" if failures == 1 else "consecutive failures"
        return EndpointHealth(failures, at, f"{failures} {noun}, the latest: {summary}")
    return EndpointHealth(failures)


async def read_health(queue: taquba.QueueLike, endpoint: str) -> EndpointHealth:
    """The stored health record of ``endpoint`` (healthy and enabled if none)."""
    return decode_health(await queue.kv_get(health_key(endpoint)))


class _Slot:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = trio.Lock()
        self.users = 0


_LOCKS: weakref.WeakKeyDictionary[taquba.Queue, dict[str, _Slot]] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def endpoint_lock(queue: taquba.Queue, endpoint: str) -> AsyncGenerator[None]:
    """Hold the in-process lock of ``endpoint``'s health record on ``queue``."""
    slots = _LOCKS.setdefault(queue, {})
    slot = slots.get(endpoint)
    if slot is None:
        slot = slots[endpoint] = _Slot()
    slot.users += 1  # counted before any checkpoint, so the slot is not dropped under us
    try:
        async with slot.lock:
            yield
    finally:
        slot.users -= 1
        if slot.users == 0:
            del slots[endpoint]
