"""Job definitions: `Job` and the `job` decorator."""

from __future__ import annotations

import inspect
import math
import re
import typing
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload

import taquba
from taquba import InvalidArgument, UsageError

if TYPE_CHECKING:
    from ._runner import JobContext

__all__ = ["Job", "JobFunction", "job"]

InT = TypeVar("InT")
OutT = TypeVar("OutT")

JobFunction = Callable[["JobContext", InT], Awaitable[OutT]]
"""The shape of a job: ``async def fn(ctx: JobContext, input: In) -> Out``."""

_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")
_UNSET: Any = object()


def check_time_limit(value: object) -> float | None:
    """A checked time limit in seconds: None for none (``math.inf`` means none too).

    Raises:
        taquba.InvalidArgument: ``value`` is not None or a positive number of seconds.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InvalidArgument("time_limit", value, "must be None or a positive number of seconds")
    return None if math.isinf(value) else float(value)


def _default_name(fn: Callable[..., object]) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


def _annotation_names() -> dict[str, object]:
    """Names a job module may import only under ``TYPE_CHECKING`` (its context type)."""
    import taquba_jobs

    from ._runner import JobContext

    return {"JobContext": JobContext, "taquba_jobs": taquba_jobs}


class Job(Generic[InT, OutT]):
    """A registered kind of background work: a typed async function and how to run it.

    Create one with the `job` decorator (or by calling `Job` on a function). The function
    takes a `JobContext` and one input value and returns the output value; both types come
    from its annotations (``typing.get_type_hints``) unless given explicitly::

        @taquba_jobs.job(name="thumbnails.resize")
        async def resize(ctx: JobContext, request: ResizeRequest) -> ResizeResult: ...

    The name is stored with every submitted job and selects the function that runs it, so
    keep it stable: renaming a job strands its submitted jobs (they fail with
    ``error_type="taquba_jobs.UnknownJob"``).

    Args:
        fn: the job function, ``async def fn(ctx, input) -> output``.
        name: the stable name; default ``"<module>:<qualname>"`` of ``fn``.
        input_type: the input type; default: the annotation of ``fn``'s second parameter.
        output_type: the output type; default: ``fn``'s return annotation.
        max_attempts: attempts before a failing job is dead-lettered; default: the queue's
            ``max_attempts`` (`taquba.QueueConfig`). `JobRunner.submit` may override it.
        permanent_errors: exception types that fail the job at once, without retries
            (`taquba.PermanentFailure` always does).
        interruptible: if true (the default), `JobRunner.cancel` on a running job cancels the
            function at its next trio checkpoint (it sees `trio.Cancelled`); if false, the
            function must watch `JobContext.cancel_requested` itself.
        time_limit: seconds one attempt may run (None or ``math.inf``, the default: no
            limit). At the limit the function is cancelled (whether or not it is
            interruptible) and the attempt fails with ``"timed out after <n> s"``: it is
            retried like any failure, and fails the job with
            ``error_type="taquba_jobs.TimeLimitExceeded"`` on the last attempt.
            `JobRunner.submit` may override it. The lease is renewed automatically while the
            function runs, so the limit, not the lease, bounds an attempt.

    Raises:
        taquba.UsageError: ``fn`` is not an async function of two parameters, or an
            annotation cannot be resolved.
        taquba.InvalidArgument: an option is invalid (a `taquba.UsageError`).
        taquba.UnsupportedType: the input or output type cannot be stored (a
            `taquba.UsageError`; its message names the job and which of its types).
    """

    __slots__ = (
        "_fn",
        "_input_codec",
        "_input_type",
        "_interruptible",
        "_max_attempts",
        "_name",
        "_output_codec",
        "_output_type",
        "_permanent_errors",
        "_time_limit",
    )

    def __init__(
        self,
        fn: Callable[[JobContext, InT], Awaitable[OutT]],
        *,
        name: str | None = None,
        input_type: Any = _UNSET,
        output_type: Any = _UNSET,
        max_attempts: int | None = None,
        permanent_errors: tuple[type[BaseException], ...] = (),
        interruptible: bool = True,
        time_limit: float | None = None,
    ) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise UsageError(f"a job function must be an async def, not {fn!r}")
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if len(params) != 2:
            raise UsageError(
                f"a job function takes (ctx, input), but {fn.__qualname__} takes "
                f"{len(params)} positional parameters"
            )
        resolved = name if name is not None else _default_name(fn)
        if not isinstance(resolved, str) or not _NAME.match(resolved):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidArgument(
                "name", resolved, "must be 1 to 200 characters without control characters"
            )
        if max_attempts is not None and (
            not isinstance(max_attempts, int) or max_attempts < 1  # pyright: ignore[reportUnnecessaryIsInstance]
        ):
            raise InvalidArgument("max_attempts", max_attempts, "must be None or a positive int")
        limit = check_time_limit(time_limit)
        for error in permanent_errors:
            if not (isinstance(error, type) and issubclass(error, BaseException)):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise InvalidArgument(
                    "permanent_errors", permanent_errors, "must hold exception types only"
                )
        if input_type is _UNSET or output_type is _UNSET:
            try:
                hints = typing.get_type_hints(fn, localns=_annotation_names())
            except Exception as exc:
                raise UsageError(
                    f"cannot resolve the annotations of job {resolved!r}: {exc} (pass "
                    "input_type=/output_type= explicitly)"
                ) from exc
            if input_type is _UNSET:
                input_type = hints.get(params[1].name, Any)
            if output_type is _UNSET:
                output_type = hints.get("return", Any)
        # An unsupported type stays the core's `taquba.UnsupportedType` (a UsageError), raised
        # again with the job and which of its types in the message, the codec's error chained.
        try:
            self._input_codec: taquba.Codec[Any] = taquba.Codec(input_type)
        except taquba.UnsupportedType as exc:
            raise taquba.UnsupportedType(f"input type of job {resolved!r}: {exc}") from exc
        try:
            self._output_codec: taquba.Codec[Any] = taquba.Codec(output_type)
        except taquba.UnsupportedType as exc:
            raise taquba.UnsupportedType(f"output type of job {resolved!r}: {exc}") from exc
        self._fn = fn
        self._name = resolved
        self._input_type: object = input_type
        self._output_type: object = output_type
        self._max_attempts = max_attempts
        self._permanent_errors = tuple(permanent_errors)
        self._interruptible = bool(interruptible)
        self._time_limit = limit

    @property
    def name(self) -> str:
        """The stable name stored with each submitted job."""
        return self._name

    @property
    def fn(self) -> Callable[[JobContext, InT], Awaitable[OutT]]:
        """The job function."""
        return self._fn

    @property
    def input_type(self) -> object:
        """The declared input type."""
        return self._input_type

    @property
    def output_type(self) -> object:
        """The declared output type."""
        return self._output_type

    @property
    def max_attempts(self) -> int | None:
        """Attempts before dead-lettering (None: the queue's ``max_attempts``)."""
        return self._max_attempts

    @property
    def permanent_errors(self) -> tuple[type[BaseException], ...]:
        """Exception types that fail the job without retries."""
        return self._permanent_errors

    @property
    def interruptible(self) -> bool:
        """Whether a cancel request interrupts the running function."""
        return self._interruptible

    @property
    def time_limit(self) -> float | None:
        """Seconds one attempt may run before it is cancelled and fails (None: no limit)."""
        return self._time_limit

    def encode_input(self, value: InT) -> bytes:
        """The MessagePack payload of an input; `taquba.TypeMismatch` if it is no ``InT``."""
        return self._input_codec.encode(value, path="input")

    def decode_input(self, raw: bytes) -> InT:
        """Rebuild an input from its payload; `taquba.TypeMismatch` if it no longer fits."""
        return cast("InT", self._input_codec.decode(raw, path="input"))

    def encode_output(self, value: OutT) -> bytes:
        """The MessagePack encoding of an output; `taquba.TypeMismatch` if it is no ``OutT``."""
        return self._output_codec.encode(value, path="output")

    def decode_output(self, raw: bytes) -> OutT:
        """Rebuild an output from its encoding; `taquba.TypeMismatch` if it no longer fits."""
        return cast("OutT", self._output_codec.decode(raw, path="output"))

    def __repr__(self) -> str:
        return (
            f"<Job {self._name!r} ({self._input_codec.type_name}) -> "
            f"{self._output_codec.type_name}>"
        )


@overload
def job(fn: Callable[[JobContext, InT], Awaitable[OutT]], /) -> Job[InT, OutT]: ...


@overload
def job(
    *,
    name: str | None = None,
    max_attempts: int | None = None,
    permanent_errors: tuple[type[BaseException], ...] = (),
    interruptible: bool = True,
    time_limit: float | None = None,
) -> Callable[[Callable[[JobContext, InT], Awaitable[OutT]]], Job[InT, OutT]]: ...


def job(
    fn: Callable[[JobContext, Any], Awaitable[Any]] | None = None,
    /,
    *,
    name: str | None = None,
    max_attempts: int | None = None,
    permanent_errors: tuple[type[BaseException], ...] = (),
    interruptible: bool = True,
    time_limit: float | None = None,
) -> Job[Any, Any] | Callable[[Callable[[JobContext, Any], Awaitable[Any]]], Job[Any, Any]]:
    """Turn an async function into a `Job`; usable bare (``@job``) or with options.

    ``@job(name="emails.send", max_attempts=5)`` is ``Job(fn, name="emails.send",
    max_attempts=5)``; see `Job` for the options. Types come from the annotations.
    """

    def wrap(f: Callable[[JobContext, Any], Awaitable[Any]]) -> Job[Any, Any]:
        return Job(
            f,
            name=name,
            max_attempts=max_attempts,
            permanent_errors=permanent_errors,
            interruptible=interruptible,
            time_limit=time_limit,
        )

    if fn is not None:
        return wrap(fn)
    return wrap
