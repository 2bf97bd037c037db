"""The per-item contract (`Pipeline`) and the context a pipeline runs with (`BulkCtx`)."""

from __future__ import annotations

import abc
import logging
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar, cast, overload

import ormsgpack

from taquba import StorageUnavailable, UsageError
from taquba_workflow import (
    PermanentStepError,
    StepError,
    TransientStepError,
    UnserializableInput,
    content_key,
)

from . import _codec as codec  # pyright: ignore[reportPrivateUsage]
from ._cost import CostReport

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from taquba import LeaseHandle
    from taquba_workflow import Memo

__all__ = [
    "BulkCtx",
    "PermanentStepError",
    "Pipeline",
    "StepError",
    "TransientStepError",
    "as_pipeline",
]

log = logging.getLogger("taquba_bulk")

InT = TypeVar("InT")
OutT = TypeVar("OutT")
R = TypeVar("R")

_NO_CONTENT: Any = object()  # `memoized` without content= (None is valid content)


def describe(exc: BaseException) -> str:
    """``Type: message`` (or just ``Type``) for an error report."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Pipeline(abc.ABC, Generic[InT, OutT]):
    """What to do with one item: subclass it and implement `run`.

    ``Pipeline[InT, OutT]`` takes items of type ``InT`` and produces ``OutT``. Each item becomes
    one durable `taquba_workflow` run; `run` is its only step, and the pipeline's logical
    phases live inside it as memoized calls (`BulkCtx.memoized`), so a retried or
    resumed item replays the phases that finished instead of paying for them again.

        class Summarize(Pipeline[dict[str, str], dict[str, str]]):
            permanent_errors = (KeyError,)

            async def run(self, ctx: BulkCtx[dict[str, str]]) -> dict[str, str]:
                text = ctx.input["text"]
                summary = await ctx.memoized(lambda: call_llm(text), key="summary")
                return {"summary": summary}

    Items travel as plain data (MessagePack in the run's payload, JSON in the output): None,
    bool, int, float, str, bytes (inputs only), lists and str-keyed dicts. Override
    `encode_input` / `decode_input` / `encode_output` for richer types.

    Errors: `run` raises to fail the attempt. `step_error` maps the exception to a
    `TransientStepError` (the item is retried with the queue's backoff; when its attempts are
    exhausted it fails) or a `PermanentStepError` (the item fails now). By default a
    `StepError` keeps its kind, the classes in `permanent_errors` are permanent, and every
    other exception is transient.
    """

    permanent_errors: ClassVar[tuple[type[Exception], ...]] = ()
    """Exception classes that fail an item at once instead of retrying it."""

    @abc.abstractmethod
    async def run(self, ctx: BulkCtx[InT]) -> OutT:
        """Process ``ctx.input`` and return the item's output."""

    def encode_input(self, item: InT) -> Any:
        """The plain-data form of an item, stored as its run's input (default: the item).

        It must be deterministic: rerunning a batch compares inputs by the SHA-256 of this
        form (serialized with sorted map keys).
        """
        return item

    def decode_input(self, data: Any) -> InT:
        """The item from its plain-data form (default: the data itself).

        The command line (``taquba-bulk run``) also uses it on each JSON input line.
        """
        return cast("InT", data)

    def encode_output(self, output: OutT) -> Any:
        """The plain JSON-data form of an output (default: the output itself).

        It must be JSON data (None, bool, int, finite float, str, lists and str-keyed dicts);
        anything else fails the item permanently, with the reason.
        """
        return output

    def step_error(self, error: Exception) -> StepError:
        """Classify an exception `run` raised as transient or permanent (see the class doc)."""
        if isinstance(error, StepError):
            return error
        if self.permanent_errors and isinstance(error, self.permanent_errors):
            return PermanentStepError(describe(error))
        return TransientStepError(describe(error))


class _FunctionPipeline(Pipeline[InT, OutT]):
    def __init__(
        self,
        fn: Callable[[BulkCtx[InT]], Awaitable[OutT]],
        permanent_errors: tuple[type[Exception], ...],
    ) -> None:
        self._fn = fn
        self._permanent = permanent_errors
        self._name: str = getattr(fn, "__name__", "pipeline")

    async def run(self, ctx: BulkCtx[InT]) -> OutT:
        return await self._fn(ctx)

    def step_error(self, error: Exception) -> StepError:
        if (
            not isinstance(error, StepError)
            and self._permanent
            and isinstance(error, self._permanent)
        ):
            return PermanentStepError(describe(error))
        return super().step_error(error)

    def __repr__(self) -> str:
        return f"as_pipeline({self._name})"


def as_pipeline(
    fn: Callable[[BulkCtx[InT]], Awaitable[OutT]],
    *,
    permanent_errors: tuple[type[Exception], ...] = (),
) -> Pipeline[InT, OutT]:
    """A `Pipeline` whose `Pipeline.run` is the async function ``fn``.

        async def count_words(ctx: BulkCtx[str]) -> int:
            return len(ctx.input.split())

        bulk = Bulk(queue, as_pipeline(count_words))

    Args:
        fn: ``async def fn(ctx: BulkCtx[InT]) -> OutT``.
        permanent_errors: exception classes that fail an item at once.
    """
    if not callable(fn):
        raise UsageError("as_pipeline takes an async function")
    return _FunctionPipeline(fn, tuple(permanent_errors))


class BulkCtx(Generic[InT]):
    """The context `Pipeline.run` gets for one attempt at one item.

    It carries the typed `input`, the item's `run_id` (its key), the batch's `headers`, the
    attempt number, the item's `cost`, the delivery's `lease` and its cancellation signal, and
    the memo helpers. Memoized results are durable: they survive retries, crashes and reruns
    of the batch, and are scoped to the item's key and input (a changed input never reads the
    memos of the old one).
    """

    __slots__ = ("_cost", "_digest", "_lease", "_memo", "attempt", "headers", "input", "run_id")

    def __init__(
        self,
        *,
        input: InT,  # noqa: A002 - the public name of the attribute
        run_id: str,
        headers: Mapping[str, str],
        attempt: int,
        memo: Memo,
        input_digest: str,
        lease: LeaseHandle,
    ) -> None:
        """Library-internal: the runner builds one per attempt."""
        self.input: InT = input
        """The item."""
        self.run_id: str = run_id
        """The item's key: its workflow run id."""
        self.headers: Mapping[str, str] = headers
        """The batch's headers (`Bulk`'s ``headers``)."""
        self.attempt: int = attempt
        """Which attempt at the item this is (1 for the first; later after a retry, a crash
        or a rerun of the batch)."""
        self._memo = memo
        self._digest = input_digest
        self._lease = lease
        self._cost = CostReport()

    @property
    def cost(self) -> CostReport:
        """The item's cost counters so far in this attempt (see `record_cost`)."""
        return self._cost

    @property
    def lease(self) -> LeaseHandle:
        """The delivery's lease (a `taquba.LeaseHandle`).

        The runner keeps it alive while `Pipeline.run` runs; call
        ``ctx.lease.ensure_at_least(seconds)`` before blocking the event loop for long.
        """
        return self._lease

    @property
    def cancel_requested(self) -> bool:
        """Whether the item's cancellation was requested (`Bulk.cancel`) or its lease lost.

        Cancellation is cooperative: return (or raise) early; the item then ends cancelled.
        """
        return self._lease.cancel_requested

    async def wait_cancel_requested(self) -> None:
        """Wait until `cancel_requested` becomes true."""
        await self._lease.wait_cancel_requested()

    def record_cost(self, metric: str, amount: float = 1.0) -> None:
        """Add ``amount`` to the item's counter ``metric``.

        Recorded only when this line runs: inside a `memoized` function it is lost on a memo
        hit. Use ``memoized(..., cached_cost=True)`` for costs that should count on hits too.

        Raises:
            taquba.UsageError: ``metric`` is not a non-empty str or ``amount`` not finite.
        """
        self._cost.record(metric, amount)

    # ---------------------------------------------------------------------------- memos

    @overload
    async def memoized(
        self,
        fn: Callable[[], Awaitable[R]],
        *,
        key: str | None = None,
        content: Any = _NO_CONTENT,
        cached_cost: Literal[False] = False,
        decode: Callable[[Any], R] | None = None,
    ) -> R: ...
    @overload
    async def memoized(
        self,
        fn: Callable[[], Awaitable[tuple[R, CostReport]]],
        *,
        key: str | None = None,
        content: Any = _NO_CONTENT,
        cached_cost: Literal[True],
        decode: Callable[[Any], R] | None = None,
    ) -> R: ...
    async def memoized(
        self,
        fn: Callable[[], Awaitable[Any]],
        *,
        key: str | None = None,
        content: Any = _NO_CONTENT,
        cached_cost: bool = False,
        decode: Callable[[Any], Any] | None = None,
    ) -> Any:
        """``await fn()`` once per item: later attempts get the stored result.

            summary = await ctx.memoized(lambda: call_llm(text), key="summary")
            label = await ctx.memoized(lambda: classify(text), content=("classify", text))
            answer = await ctx.memoized(lambda: priced_call(q), key="answer", cached_cost=True)

        Name the phase with exactly one of ``key`` (a name, unique within the pipeline) or
        ``content`` (data that determines the phase, such as ``("classify", text)``: the key
        is the SHA-256 of its MessagePack form; include an operation name when different
        phases may see identical data).

        On a hit the stored value is returned without calling ``fn``. On a miss ``fn`` runs and
        its result is stored (durably) before it is returned; an exception is never stored.
        Values are MessagePack data; a value that would not come back equal (a tuple, a
        dataclass) needs ``decode`` to rebuild it (``decode=tuple``,
        ``decode=lambda d: Summary(**d)``): this is checked when the value is stored, so code
        that works on the first attempt works on a retry. A stored entry that cannot be decoded
        is recomputed and overwritten.

        With ``cached_cost=True``, ``fn`` returns ``(value, cost)`` (a `CostReport`): the pair
        is stored, and ``cost`` is added to the item's `cost` both when ``fn`` runs and on
        every memo hit, so the item's cost is the same however often it is retried or resumed
        (and the money is spent once). The call still returns the value alone.

        Args:
            fn: a zero-argument async callable (``lambda: call_api(x)``), not a coroutine.
            key: the phase's name.
            content: the phase's input data, instead of a name.
            cached_cost: ``fn`` returns ``(value, CostReport)`` and the cost counts on hits.
            decode: rebuilds the value from its MessagePack form.

        Returns:
            The value: computed now, or stored by an earlier attempt.

        Raises:
            taquba.UsageError: not exactly one of ``key`` and ``content``, or a bad ``key``.
            PermanentStepError: ``content`` or the value cannot be stored, or the value does
                not round-trip.
            TransientStepError: the memo store is unavailable.
        """
        if (key is None) == (content is _NO_CONTENT):
            raise UsageError("memoized takes exactly one of key= and content=")
        if not callable(fn):
            raise UsageError("memoized takes a zero-argument async function first")
        scoped = _check_key(key) if key is not None else _content_key(content)
        return await self._memoized(scoped, fn, decode, with_cost=bool(cached_cost))

    async def _memoized(
        self,
        key: str,
        fn: Callable[[], Awaitable[Any]],
        decode: Callable[[Any], Any] | None,
        *,
        with_cost: bool,
    ) -> Any:
        scoped = codec.memo_key(self._digest, key)
        try:
            raw = await self._memo.get(scoped)
        except StorageUnavailable as exc:
            raise TransientStepError(f"memo {key!r}: {exc}") from exc
        if raw is not None:
            try:
                stored, cost = codec.decode_memo(raw)
                if with_cost and cost is None:
                    raise ValueError("the entry has no cost")
                value = decode(stored) if decode is not None else stored
            except Exception as exc:
                log.warning("item %s: recomputing memo %r: %s", self.run_id, key, describe(exc))
            else:
                if cost is not None and with_cost:
                    self._cost.merge(cost)
                return value
        result = await fn()
        cost = None
        if with_cost:
            if not isinstance(result, tuple):
                raise PermanentStepError(
                    f"memo {key!r}: the function must return (value, CostReport), "
                    f"not {type(result).__name__}"
                )
            pair = cast("tuple[Any, ...]", result)
            if len(pair) != 2:
                raise PermanentStepError(
                    f"memo {key!r}: the function must return (value, CostReport), "
                    f"not a tuple of {len(pair)}"
                )
            value, cost = pair
            if not isinstance(cost, CostReport):
                raise PermanentStepError(
                    f"memo {key!r}: the function must return (value, CostReport), "
                    f"not (value, {type(cost).__name__})"
                )
        else:
            value = result
        try:
            encoded = codec.encode_memo(value, cost)
        except (ormsgpack.MsgpackEncodeError, TypeError, ValueError) as exc:
            raise PermanentStepError(f"memo {key!r}: cannot serialize the value: {exc}") from exc
        back, _ = codec.decode_memo(encoded)
        try:
            restored = decode(back) if decode is not None else back
            same = bool(restored == value)
        except Exception as exc:
            raise PermanentStepError(f"memo {key!r}: decode failed: {describe(exc)}") from exc
        if not same:
            raise PermanentStepError(
                f"memo {key!r}: a {type(value).__name__} does not come back equal from "
                "MessagePack; pass decode= to rebuild it"
            )
        try:
            await self._memo.put(scoped, encoded)
        except StorageUnavailable as exc:
            raise TransientStepError(f"memo {key!r}: {exc}") from exc
        if cost is not None:
            self._cost.merge(cost)
        return value

    def __repr__(self) -> str:
        return f"<BulkCtx {self.run_id} attempt {self.attempt}>"


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise UsageError(f"a memo key must be a non-empty str, not {key!r}")
    return key


def _content_key(content: Any) -> str:
    try:
        return content_key(content)
    except UnserializableInput as exc:
        raise PermanentStepError(f"memo content cannot be serialized: {exc}") from exc
