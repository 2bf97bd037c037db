"""How taquba lets Ctrl-C (`KeyboardInterrupt`) through without losing a write or hanging.

trio turns SIGINT into a `KeyboardInterrupt` in one of two ways:

- *raised at once* in whatever Python code runs on the trio thread, unless that code is
  KI-protected (`trio.lowlevel.enable_ki_protection`, decided by walking the frames up from
  the interrupted one to the first function marked either way, or to the task's root);
- otherwise *delivered later* to the main task (the one `trio.run` started) at its next
  blocking checkpoint, even inside a cancel shield.

The first way is fatal for code that must run to its end: SlateDB's ctypes continuation, which
Rust calls on the trio thread while a binding call is being polled, would have the exception
swallowed by ctypes ("Exception ignored on calling ctypes callback function") and the call would
never complete; half-updated bookkeeping (group commit, worker slots) would hang later callers.
So every taquba code path that keeps state consistent is protected with `protect`; only the
user's handlers run unprotected (a handler stuck in a loop must still be interruptible).

The second way would abort a write halfway (its outcome then unknown) or strand a group commit
whose leader never comes. Inside `hold_interrupts` (shielded writes, group-commit submission,
closing a database) a `KeyboardInterrupt` delivered into a binding call or a `wait_holding`
wait is held: the work finishes, then the interrupt is raised where the block ends.

A `KeyboardInterrupt` crossing one of taquba's own nurseries would come out as an exception
group; `plain_interrupt` turns a group that holds nothing but interrupts (and cancellations)
back into one `KeyboardInterrupt`, chained to the group.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import types
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar

import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Generator

__all__ = [
    "held_interrupts",
    "hold_interrupts",
    "plain_interrupt",
    "plain_interrupts",
    "protect",
    "wait_holding",
]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_HELD: Final[contextvars.ContextVar[list[KeyboardInterrupt] | None]] = contextvars.ContextVar(
    "taquba_held_interrupts", default=None
)


def protect(*targets: object) -> None:
    """Mark functions, and every function defined in the given classes, KI-protected.

    Code they call (directly or awaited) is protected too, up to a function marked with
    `trio.lowlevel.disable_ki_protection`.
    """
    for target in targets:
        if isinstance(target, type):
            for member in vars(target).values():
                _protect_member(member)
        else:
            _protect_member(target)


def _protect_member(member: object) -> None:
    if type(member) in (staticmethod, classmethod):
        member = getattr(member, "__func__", None)
    elif isinstance(member, property):
        for accessor in (member.fget, member.fset, member.fdel):
            if accessor is not None:
                _protect_member(accessor)
        return
    wrapped = getattr(member, "__wrapped__", None)  # e.g. an asynccontextmanager's function
    if wrapped is not None:
        _protect_member(wrapped)
    if isinstance(member, types.FunctionType):
        trio.lowlevel.enable_ki_protection(member)


def held_interrupts() -> list[KeyboardInterrupt] | None:
    """The interrupts held by the innermost `hold_interrupts` block, or None outside one."""
    return _HELD.get()


@contextlib.contextmanager
def hold_interrupts() -> Generator[None]:
    """Hold a `KeyboardInterrupt` delivered into the block until the block has finished.

    Only binding calls and `wait_holding` waits hold it; the first held interrupt is raised
    when the block ends (with whatever else the block raised as its context). Nested blocks
    belong to the outermost one.
    """
    if _HELD.get() is not None:
        yield
        return
    held: list[KeyboardInterrupt] = []
    token = _HELD.set(held)
    try:
        yield
    finally:
        _HELD.reset(token)
        if held:
            raise held[0]


async def wait_holding(wait: Callable[[], Awaitable[object]]) -> None:
    """Await ``wait()``; inside `hold_interrupts`, hold an interrupt and wait again.

    ``wait`` must be safe to call again after it was interrupted (an event wait, a sleep
    until a fixed deadline, a checkpoint).
    """
    held = _HELD.get()
    while True:
        try:
            await wait()
        except KeyboardInterrupt as interrupt:
            if held is None:
                raise
            held.append(interrupt)
        else:
            return


def _only_interrupts(exc: BaseException) -> bool | None:
    """True: interrupts (and cancellations) only, at least one interrupt; None: no interrupt."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    if isinstance(exc, trio.Cancelled):
        return None
    if isinstance(exc, BaseExceptionGroup):
        group: BaseExceptionGroup[BaseException] = exc  # pyright: ignore[reportUnknownVariableType]
        found: bool | None = None
        for leaf in group.exceptions:
            verdict = _only_interrupts(leaf)
            if verdict is False:
                return False
            if verdict:
                found = True
        return found
    return False


@contextlib.contextmanager
def plain_interrupt() -> Generator[None]:
    """Let an interrupt leave the block as a `KeyboardInterrupt`, not an exception group.

    Use it around a nursery that is an implementation detail: a group holding only
    `KeyboardInterrupt` and `trio.Cancelled` leaves becomes one `KeyboardInterrupt` chained
    to the group (``from``), so nothing is lost from the traceback. Other groups pass as is.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        if _only_interrupts(group):
            raise KeyboardInterrupt from group
        raise


def plain_interrupts(
    fn: Callable[_P, Coroutine[Any, Any, _T]],
) -> Callable[_P, types.CoroutineType[Any, Any, _T]]:
    """Decorate an async function so that it runs inside `plain_interrupt`.

    The result is typed as what ``async def`` gives, so decorated methods still match the
    ``async def`` members of a protocol (`QueueLike`).
    """

    @functools.wraps(fn)
    async def plain(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        with plain_interrupt():
            return await fn(*args, **kwargs)

    _protect_member(plain)
    return plain


protect(hold_interrupts, wait_holding, plain_interrupt)
