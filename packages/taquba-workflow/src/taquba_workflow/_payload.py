"""Payload types: how run inputs, step payloads and results become stored bytes. Pure.

A runtime has one payload type (run inputs and every step's payload) and one result type
(`Succeed` results). Each is declared once: given to the runtime (``payload_type=``,
``result_type=``), or read from the runner's annotations (``step: Step[Order]`` and
``-> StepOutcome[Order, Receipt]``); undeclared, it is ``bytes``.

``bytes`` is stored as is: no MessagePack wrapper, no copy beyond ``bytes(value)``, so it costs
nothing and reads the payloads taquba-workflow 0.7 (bytes only) stored. Every other type goes
through `taquba.Codec` (deterministic MessagePack, checked on the way in and out).
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Generic, TypeVar, cast

from taquba import Codec, TypeMismatch, UsageError

from ._types import Continue, Step, Succeed

if typing.TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["PayloadCodec", "declared_types"]

_T = TypeVar("_T")


class _Unset:
    """The default of ``payload_type`` / ``result_type``: read the runner's annotations."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<from the runner's annotations, else bytes>"


UNSET: Any = _Unset()


class PayloadCodec(Generic[_T]):
    """Encodes and decodes the values of one payload type (``bytes`` verbatim)."""

    __slots__ = ("_codec", "_type")

    def __init__(self, type_: object) -> None:
        """Build the codec; raises `taquba.UnsupportedType` for a type that cannot be stored."""
        self._type = type_
        self._codec: Codec[Any] | None = None if type_ is bytes else Codec(type_)

    @property
    def type(self) -> object:
        """The declared type."""
        return self._type

    @property
    def verbatim(self) -> bool:
        """Whether values are stored as given (the type is ``bytes``)."""
        return self._codec is None

    def encode(self, value: _T, *, path: str) -> bytes:
        """The stored bytes of ``value``; raises `taquba.TypeMismatch` if it does not fit."""
        if self._codec is None:
            data: object = value
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeMismatch(path, "bytes", type(data).__qualname__)
            return bytes(data)  # pyright: ignore[reportUnknownArgumentType] - memoryview[Unknown]
        return self._codec.encode(value, path=path)

    def decode(self, raw: bytes, *, path: str) -> _T:
        """The value stored as ``raw``; raises `taquba.TypeMismatch` if it does not fit."""
        if self._codec is None:
            return cast("_T", raw)
        return cast("_T", self._codec.decode(raw, path=path))

    def __repr__(self) -> str:
        return "PayloadCodec(bytes)" if self._codec is None else f"Payload{self._codec!r}"


def _first_parameter(hints: dict[str, Any], fn: Callable[..., object]) -> object:
    try:
        parameters = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return UNSET
    return hints.get(parameters[0], UNSET) if parameters else UNSET


def _concrete(tp: object) -> bool:
    return not isinstance(tp, TypeVar)


def declared_types(fn: Callable[..., object]) -> tuple[object, object]:
    """The payload and result types ``fn``'s annotations declare (`UNSET` where they do not).

    The payload type comes from a first parameter annotated ``Step[X]`` (or a ``Continue[X]``
    in the return annotation), the result type from a ``Succeed[Y]`` in the return annotation
    (``StepOutcome[X, Y]`` expands to one).

    Raises:
        taquba.UsageError: the annotations cannot be resolved (a name defined in a function,
            or imported only for type checking): pass the types to the runtime explicitly.
    """
    if not getattr(fn, "__annotations__", None):
        return UNSET, UNSET
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:  # NameError for unresolvable forward references, and friends
        raise UsageError(
            f"cannot resolve the annotations of the step runner ({exc}): pass payload_type= "
            "and result_type= to the runtime explicitly"
        ) from exc
    payload: object = UNSET
    result: object = UNSET
    first = _first_parameter(hints, fn)
    if typing.get_origin(first) is Step:
        (arg,) = typing.get_args(first)
        if _concrete(arg):
            payload = arg
    returned = hints.get("return", UNSET)
    union = typing.get_origin(returned) in (typing.Union, types.UnionType)
    members = typing.get_args(returned) if union else (returned,)
    for member in members:
        origin = typing.get_origin(member)
        args = typing.get_args(member)
        if origin is Succeed and args and _concrete(args[0]) and result is UNSET:
            result = args[0]
        elif origin is Continue and args and _concrete(args[0]) and payload is UNSET:
            payload = args[0]
    return payload, result
