"""Application KV effects: what a run's submission, a step or the terminal hook commits.

Pure and synchronous: the checks run when an effect is staged, so a bad key or value fails in
the code that staged it, never in the settlement. The runtime takes what was staged (sealing
the staging) and merges it into the settlement that commits the step's outcome or acknowledges
the terminal notification; user keys never collide with the runtime's own records, which all
live under `RESERVED_KV_PREFIX`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taquba import MAX_KV_VALUE_SIZE, EnqueueRequest, KvValueTooLarge, UsageError

from ._errors import ConflictingKvEffect, EffectsSealed, ReservedHeader, ReservedKvKey
from ._keys import RESERVED_HEADER_PREFIX, RESERVED_KV_PREFIX

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "KvStaging",
    "TerminalEffects",
    "check_kv_key",
    "check_kv_value",
    "check_kv_writes",
    "seal_terminal",
]


def check_kv_key(key: object) -> bytes:
    """``key`` as bytes if it is an application key; raise otherwise.

    Raises:
        ReservedKvKey: it starts with ``workflow/``.
        taquba.UsageError: it is not bytes-like.
    """
    if isinstance(key, (bytes, bytearray)):
        checked = bytes(key)
    elif isinstance(key, memoryview):
        checked = key.tobytes()
    else:
        raise UsageError(f"KV keys must be bytes, not {type(key).__name__}")
    if checked.startswith(RESERVED_KV_PREFIX):
        raise ReservedKvKey(checked)
    return checked


def check_kv_value(value: object) -> bytes:
    """``value`` as bytes if it can be stored; raise otherwise.

    Raises:
        taquba.KvValueTooLarge: it is longer than `taquba.MAX_KV_VALUE_SIZE`.
        taquba.UsageError: it is not bytes-like.
    """
    if isinstance(value, (bytes, bytearray)):
        checked = bytes(value)
    elif isinstance(value, memoryview):
        checked = value.tobytes()
    else:
        raise UsageError(f"KV values must be bytes, not {type(value).__name__}")
    if len(checked) > MAX_KV_VALUE_SIZE:
        raise KvValueTooLarge(len(checked), MAX_KV_VALUE_SIZE)
    return checked


def check_kv_writes(writes: object) -> dict[bytes, bytes]:
    """A `RunSpec.kv_writes` mapping, checked entry by entry (see `check_kv_key`)."""
    if not hasattr(writes, "items"):
        raise UsageError("kv_writes must map bytes to bytes")
    items: Mapping[object, object] = writes  # pyright: ignore[reportAssignmentType]
    return {check_kv_key(key): check_kv_value(value) for key, value in items.items()}


class KvStaging:
    """Puts and deletes of application KV keys staged by one step attempt or hook call.

    A key may be put more than once (the last value wins) or deleted more than once, never
    both put and deleted. Once `seal`ed (the runtime took the effects), staging raises
    `EffectsSealed`.
    """

    __slots__ = ("_deletes", "_sealed", "_writes")

    def __init__(self) -> None:
        self._writes: dict[bytes, bytes] = {}
        self._deletes: dict[bytes, None] = {}  # ordered set
        self._sealed = False

    def put(self, key: object, value: object) -> None:
        self.check_open()
        checked = check_kv_key(key)
        data = check_kv_value(value)
        if checked in self._deletes:
            raise ConflictingKvEffect(checked)
        self._writes[checked] = data

    def delete(self, key: object) -> None:
        self.check_open()
        checked = check_kv_key(key)
        if checked in self._writes:
            raise ConflictingKvEffect(checked)
        self._deletes[checked] = None

    def seal(self) -> tuple[dict[bytes, bytes], list[bytes]]:
        """Stop staging; return the staged writes and deletes."""
        self._sealed = True
        return dict(self._writes), list(self._deletes)

    @property
    def writes(self) -> Mapping[bytes, bytes]:
        return dict(self._writes)

    @property
    def deletes(self) -> Sequence[bytes]:
        return tuple(self._deletes)

    def check_open(self) -> None:
        """Raise `EffectsSealed` once the effects were taken."""
        if self._sealed:
            raise EffectsSealed(
                "these effects were already taken: stage KV effects before the step (or "
                "terminal hook) returns"
            )


class TerminalEffects:
    """What a terminal hook commits with the acknowledgement of its notification.

    A hook that returns one (instead of None) has its staged KV puts and deletes and its
    follow-up jobs committed atomically with the notification job's acknowledgement: all of
    them if the hook returned it, none if the hook raised (the notification is retried, and
    the retry stages its own). Notifications are delivered at least once: stage absolute
    values and use dedup keys on follow-up jobs.

        async def on_done(outcome: RunOutcome[Receipt]) -> TerminalEffects:
            effects = TerminalEffects()
            effects.kv_put(f"orders/{outcome.run_id}".encode(), outcome.status.value.encode())
            effects.enqueue(
                EnqueueRequest(queue_name="emails", payload=b"...", dedup_key=outcome.run_id)
            )
            return effects

    Every method checks what it stages at once and raises there, before anything is written.
    """

    __slots__ = ("_enqueues", "_kv")

    def __init__(self) -> None:
        """Start with nothing staged."""
        self._kv = KvStaging()
        self._enqueues: list[EnqueueRequest] = []

    def kv_put(self, key: bytes, value: bytes) -> None:
        """Stage a write of the application KV entry ``key`` (the last value staged wins).

        Raises:
            ReservedKvKey: ``key`` starts with ``workflow/``.
            ConflictingKvEffect: ``key`` is staged for deletion.
            taquba.KvValueTooLarge: ``value`` is longer than `taquba.MAX_KV_VALUE_SIZE`.
            EffectsSealed: the hook has returned these effects already.
            taquba.UsageError: ``key`` or ``value`` is not bytes.
        """
        self._kv.put(key, value)

    def kv_delete(self, key: bytes) -> None:
        """Stage the deletion of the application KV entry ``key`` (absent: nothing happens).

        Raises:
            ReservedKvKey: ``key`` starts with ``workflow/``.
            ConflictingKvEffect: ``key`` is staged for a write.
            EffectsSealed: the hook has returned these effects already.
            taquba.UsageError: ``key`` is not bytes.
        """
        self._kv.delete(key)

    def enqueue(self, request: EnqueueRequest) -> None:
        """Stage a follow-up job, on any queue (a dedup key makes redeliveries harmless).

        Raises:
            ReservedHeader: a header name starts with ``workflow.`` (runtime jobs only).
            EffectsSealed: the hook has returned these effects already.
            taquba.UsageError: ``request`` is not a `taquba.EnqueueRequest`.
        """
        self._kv.check_open()
        if not isinstance(request, EnqueueRequest):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError("enqueue takes a taquba.EnqueueRequest")
        for name in request.headers:
            if name.startswith(RESERVED_HEADER_PREFIX):
                raise ReservedHeader(name)
        self._enqueues.append(request)

    @property
    def kv_writes(self) -> Mapping[bytes, bytes]:
        """The staged writes (a copy)."""
        return self._kv.writes

    @property
    def kv_deletes(self) -> Sequence[bytes]:
        """The staged deletes (a copy)."""
        return self._kv.deletes

    @property
    def enqueues(self) -> Sequence[EnqueueRequest]:
        """The staged follow-up jobs (a copy)."""
        return tuple(self._enqueues)

    def _seal(self) -> tuple[dict[bytes, bytes], list[bytes], list[EnqueueRequest]]:
        writes, deletes = self._kv.seal()
        return writes, deletes, list(self._enqueues)

    def __repr__(self) -> str:
        return (
            f"<TerminalEffects {len(self._kv.writes)} puts, {len(self._kv.deletes)} deletes, "
            f"{len(self._enqueues)} enqueues>"
        )


def seal_terminal(
    effects: TerminalEffects,
) -> tuple[dict[bytes, bytes], list[bytes], list[EnqueueRequest]]:
    """Take a hook's effects (later staging raises `EffectsSealed`)."""
    return effects._seal()  # pyright: ignore[reportPrivateUsage]
