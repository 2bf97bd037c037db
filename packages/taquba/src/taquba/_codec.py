"""Typed values to MessagePack and back: the one payload codec of the taquba family.

`Codec` is the public face: a job's input and output (taquba-jobs), a workflow step's input
and output (taquba-workflow) and a bulk item (taquba-bulk) all go through it, so every layer
accepts the same types. `pack` checks a value against a type while converting it to
MessagePack-ready builtins, and `unpack` rebuilds a value of the type from stored bytes,
checking it on the way. Both raise `TypeMismatch` with the path of the first offending part
(``input.items[2].name``). Everything here is pure: no I/O.

Supported types: ``None``, `bool`, `int`, `float` (ints are accepted and stored as floats),
`str`, `bytes`, `datetime.datetime`, `datetime.date`, `uuid.UUID`, `decimal.Decimal`,
`enum.Enum` subclasses, `typing.Literal`, unions and ``Optional``, ``list``/``Sequence``,
``tuple`` (fixed or variadic), ``set``/``frozenset``, ``dict``/``Mapping`` with `str` or `int`
keys, dataclasses, ``TypedDict`` classes, pydantic models (duck-typed, so pydantic is not a
dependency), ``Annotated`` and ``NewType`` wrappers, and `typing.Any` (any MessagePack-native
value, unchecked). The encoding is deterministic (mapping keys are sorted, sets are ordered),
so equal inputs give equal bytes: idempotency compares inputs by their encoding.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime
import decimal
import enum
import types
import typing
import uuid
from typing import Any, Generic, TypeVar, cast, overload

import ormsgpack

from ._errors import SerializationError, TypeMismatch, UnsupportedType

__all__ = ["Codec", "check_supported", "describe", "pack", "unpack"]

_T = TypeVar("_T")

_PACK_OPTIONS = ormsgpack.OPT_NON_STR_KEYS
_SEQUENCES: tuple[object, ...] = (
    list,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Iterable,
    collections.abc.Collection,
)
_SETS: tuple[object, ...] = (set, frozenset, collections.abc.Set, collections.abc.MutableSet)
_MAPPINGS: tuple[object, ...] = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
_SCALARS: tuple[type, ...] = (
    str,
    bytes,
    bool,
    int,
    float,
    datetime.datetime,
    datetime.date,
    uuid.UUID,
    decimal.Decimal,
)


_ALIAS_TYPE: Any = getattr(typing, "TypeAliasType", None)  # Python 3.12+


def describe(tp: object) -> str:
    """A short, readable name for a type annotation."""
    if tp is type(None) or tp is None:
        return "None"
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__qualname__
    return repr(tp).replace("typing.", "")


def _got(value: object) -> str:
    return type(value).__qualname__


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated``, ``NewType``, type aliases and type variables (read as Any)."""
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif isinstance(tp, typing.NewType):
            tp = tp.__supertype__
        elif _ALIAS_TYPE is not None and isinstance(tp, _ALIAS_TYPE):
            tp = tp.__value__
        elif isinstance(tp, typing.TypeVar):
            return Any
        else:
            return tp


def _is_class(tp: Any) -> bool:
    return isinstance(tp, type)


def _subclass(tp: Any, parent: type | tuple[type, ...]) -> bool:
    return isinstance(tp, type) and issubclass(tp, parent)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _is_model(tp: object) -> bool:
    """Whether ``tp`` is a pydantic (v2) model class, without importing pydantic."""
    return (
        isinstance(tp, type)
        and hasattr(tp, "model_validate")
        and hasattr(tp, "model_dump")
        and hasattr(tp, "model_fields")
    )


def _hints(tp: object) -> dict[str, Any]:
    try:
        return typing.get_type_hints(tp)
    except Exception as exc:  # NameError for unresolvable forward references, and friends
        raise UnsupportedType(
            f"cannot resolve the annotations of {describe(tp)}: {exc} (define the type at "
            "module level, or pass input_type=/output_type= explicitly)"
        ) from exc


def _required_keys(tp: Any) -> frozenset[str]:
    """A TypedDict's required keys, also right when its annotations are strings.

    ``__required_keys__`` is computed at class creation, when postponed annotations are still
    strings, so ``NotRequired[...]`` written under ``from __future__ import annotations`` is
    missed there; the resolved annotations tell.
    """
    declared: frozenset[str] = getattr(tp, "__required_keys__", frozenset())
    try:
        extras = typing.get_type_hints(tp, include_extras=True)
    except Exception:  # already reported by _hints with a better message
        return declared
    required = set(declared)
    for key, hint in extras.items():
        origin = typing.get_origin(hint)
        if origin is typing.NotRequired:
            required.discard(key)
        elif origin is typing.Required:
            required.add(key)
    return frozenset(required)


def _dataclass_fields(tp: Any) -> list[tuple[str, object]]:
    hints = _hints(tp)
    return [(f.name, hints.get(f.name, Any)) for f in dataclasses.fields(tp) if f.init]


def _is_union(origin: object) -> bool:
    return origin is typing.Union or origin is types.UnionType


def check_supported(tp: Any, *, _seen: set[int] | None = None) -> None:
    """Raise `UnsupportedType` if ``tp`` (or a type inside it) cannot be serialized."""
    seen: set[int] = _seen if _seen is not None else set()
    tp = _unwrap(tp)
    if tp is Any or tp is object or tp is None or tp is type(None):
        return
    if id(tp) in seen:
        return  # a recursive type: already being checked
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        for arg in args:
            if not isinstance(arg, (str, int, bytes, bool, type(None), enum.Enum)):
                raise UnsupportedType(f"unsupported Literal value {arg!r}")
        return
    if _is_union(origin) or origin in _SEQUENCES or origin in _SETS or origin is tuple:
        for arg in args:
            if arg is not Ellipsis:
                check_supported(arg, _seen=seen)
        return
    if origin in _MAPPINGS:
        if args:
            key = _unwrap(args[0])
            if key not in (str, int) and not _subclass(key, enum.Enum):
                raise UnsupportedType(f"mapping keys must be str, int or an Enum, not {key!r}")
            check_supported(args[1], _seen=seen)
        return
    if origin is not None and _is_dataclass_type(origin):
        tp = origin  # a parametrised generic dataclass: its type variables read as Any
    if tp in (list, tuple, set, frozenset, dict):
        return
    if _is_class(tp):
        if _subclass(tp, _SCALARS) or _subclass(tp, enum.Enum) or _is_model(tp):
            return
        if _is_dataclass_type(tp) or typing.is_typeddict(tp):
            seen.add(id(tp))
            for _, hint in _dataclass_fields(tp) if _is_dataclass_type(tp) else _hints(tp).items():
                check_supported(hint, _seen=seen)
            return
    raise UnsupportedType(f"taquba cannot serialize values of type {describe(tp)}")


# ------------------------------------------------------------------------------------ encode


def _sorted_items(items: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    try:
        return sorted(items, key=lambda item: item[0])
    except TypeError:
        return items  # heterogeneous keys (only possible under Any): keep insertion order


def _plain(value: object, path: str) -> object:
    """Check and copy a value declared as Any: MessagePack-native builtins only."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, (list, tuple)):
        items = cast("list[object] | tuple[object, ...]", value)
        return [_plain(item, f"{path}[{i}]") for i, item in enumerate(items)]
    if isinstance(value, dict):
        entries = cast("dict[object, object]", value)
        out: list[tuple[Any, Any]] = []
        for key, item in entries.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise TypeMismatch(f"{path} key", "str or int", _got(key))
            out.append((key, _plain(item, f"{path}[{key!r}]")))
        return dict(_sorted_items(out))
    raise TypeMismatch(path, "a MessagePack-native value (declared as Any)", _got(value))


def _literal_matches(value: object, arg: object) -> bool:
    return type(value) is type(arg) and value == arg


def _encode(value: object, tp: Any, path: str) -> object:
    tp = _unwrap(tp)
    if tp is Any or tp is object:
        return _plain(value, path)
    if tp is None or tp is type(None):
        if value is not None:
            raise TypeMismatch(path, "None", _got(value))
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        for arg in args:
            if _literal_matches(value, arg):
                return _encode(value, type(arg), path)
        raise TypeMismatch(path, describe(tp), repr(value))
    if _is_union(origin):
        for arg in args:
            try:
                return _encode(value, arg, path)
            except TypeMismatch:
                continue
        raise TypeMismatch(path, describe(tp), _got(value))
    if origin is not None and _is_dataclass_type(origin):
        tp, origin, args = origin, None, ()
    if tp in (list, tuple, set, frozenset, dict):
        origin, args = tp, ()
    if origin in _SEQUENCES or origin is tuple:
        if isinstance(value, (str, bytes, bytearray)) or not isinstance(value, (list, tuple)):
            raise TypeMismatch(path, describe(tp), _got(value))
        items = cast("list[object] | tuple[object, ...]", value)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if args == ((),):
                args = ()
            if len(items) != len(args):
                raise TypeMismatch(path, describe(tp), f"{len(items)} items")
            return [
                _encode(item, arg, f"{path}[{i}]")
                for i, (item, arg) in enumerate(zip(items, args, strict=True))
            ]
        item_type = args[0] if args else Any
        return [_encode(item, item_type, f"{path}[{i}]") for i, item in enumerate(items)]
    if origin in _SETS:
        if not isinstance(value, (set, frozenset)):
            raise TypeMismatch(path, describe(tp), _got(value))
        members = cast("set[object] | frozenset[object]", value)
        item_type = args[0] if args else Any
        encoded = [_encode(item, item_type, f"{path}{{}}") for item in members]
        return sorted(encoded, key=lambda item: ormsgpack.packb(item, option=_PACK_OPTIONS))
    if origin in _MAPPINGS:
        if not isinstance(value, collections.abc.Mapping):
            raise TypeMismatch(path, describe(tp), _got(value))
        mapping = cast("collections.abc.Mapping[object, object]", value)
        key_type, value_type = args if args else (Any, Any)
        out: list[tuple[Any, Any]] = []
        for key, item in mapping.items():
            encoded_key = _encode(key, key_type, f"{path} key")
            if not isinstance(encoded_key, (str, int)) or isinstance(encoded_key, bool):
                raise TypeMismatch(f"{path} key", "str or int", _got(key))
            out.append((encoded_key, _encode(item, value_type, f"{path}[{key!r}]")))
        return dict(_sorted_items(out))
    if not _is_class(tp):
        raise TypeMismatch(path, describe(tp), _got(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeMismatch(path, "bool", _got(value))
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeMismatch(path, "int", _got(value))
        if not -(2**63) <= value < 2**64:
            raise TypeMismatch(path, "an int that fits in 64 bits", str(value))
        return int(value)
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeMismatch(path, "float", _got(value))
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TypeMismatch(path, "str", _got(value))
        return str(value)
    if tp is bytes:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeMismatch(path, "bytes", _got(value))
        return bytes(cast("bytes", value))
    if tp is datetime.datetime:
        if not isinstance(value, datetime.datetime):
            raise TypeMismatch(path, "datetime", _got(value))
        return value.isoformat()
    if tp is datetime.date:
        if type(value) is not datetime.date:
            raise TypeMismatch(path, "date", _got(value))
        return value.isoformat()
    if tp is uuid.UUID or tp is decimal.Decimal:
        if not isinstance(value, tp):
            raise TypeMismatch(path, tp.__qualname__, _got(value))
        return str(value)
    if _subclass(tp, enum.Enum):
        if not isinstance(value, tp):
            raise TypeMismatch(path, tp.__qualname__, _got(value))
        return _plain(cast("enum.Enum", value).value, f"{path}.value")
    if _is_model(tp):
        if not isinstance(value, tp):
            raise TypeMismatch(path, tp.__qualname__, _got(value))
        model: Any = value
        dumped: object = model.model_dump(mode="json")
        return _plain(dumped, path)
    if _is_dataclass_type(tp):
        if not isinstance(value, tp):
            raise TypeMismatch(path, tp.__qualname__, _got(value))
        fields = _dataclass_fields(tp)
        return dict(
            _sorted_items(
                [
                    (name, _encode(getattr(value, name), hint, f"{path}.{name}"))
                    for name, hint in fields
                ]
            )
        )
    if typing.is_typeddict(tp):
        if not isinstance(value, dict):
            raise TypeMismatch(path, tp.__qualname__, _got(value))
        entries = cast("dict[object, object]", value)
        hints = _hints(tp)
        required = _required_keys(tp)
        for key in entries:
            if key not in hints:
                raise TypeMismatch(f"{path}[{key!r}]", "no such key", _got(entries[key]))
        missing = sorted(required - set(cast("dict[str, object]", entries)))
        if missing:
            raise TypeMismatch(f"{path}[{missing[0]!r}]", "a required key", "nothing")
        return dict(
            _sorted_items(
                [
                    (key, _encode(item, hints[cast("str", key)], f"{path}[{key!r}]"))
                    for key, item in entries.items()
                ]
            )
        )
    raise TypeMismatch(path, describe(tp), _got(value))


# ------------------------------------------------------------------------------------ decode


def _decode(data: object, tp: Any, path: str) -> object:
    tp = _unwrap(tp)
    if tp is Any or tp is object:
        return data
    if tp is None or tp is type(None):
        if data is not None:
            raise TypeMismatch(path, "None", _got(data))
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        for arg in args:
            try:
                candidate = _decode(data, type(arg), path)
            except TypeMismatch:
                continue
            if _literal_matches(candidate, arg):
                return arg
        raise TypeMismatch(path, describe(tp), repr(data))
    if _is_union(origin):
        for arg in args:
            try:
                return _decode(data, arg, path)
            except TypeMismatch:
                continue
        raise TypeMismatch(path, describe(tp), _got(data))
    if origin is not None and _is_dataclass_type(origin):
        tp, origin, args = origin, None, ()
    if tp in (list, tuple, set, frozenset, dict):
        origin, args = tp, ()
    if origin in _SEQUENCES or origin is tuple or origin in _SETS:
        if not isinstance(data, list):
            raise TypeMismatch(path, describe(tp), _got(data))
        items = cast("list[object]", data)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if args == ((),):
                args = ()
            if len(items) != len(args):
                raise TypeMismatch(path, describe(tp), f"{len(items)} items")
            return tuple(
                _decode(item, arg, f"{path}[{i}]")
                for i, (item, arg) in enumerate(zip(items, args, strict=True))
            )
        item_type = args[0] if args else Any
        decoded = [_decode(item, item_type, f"{path}[{i}]") for i, item in enumerate(items)]
        if origin is tuple:
            return tuple(decoded)
        if origin in _SETS:
            try:
                return frozenset(decoded) if origin is frozenset else set(decoded)
            except TypeError as exc:
                raise TypeMismatch(path, describe(tp), f"unhashable items ({exc})") from exc
        return decoded
    if origin in _MAPPINGS:
        if not isinstance(data, dict):
            raise TypeMismatch(path, describe(tp), _got(data))
        entries = cast("dict[object, object]", data)
        key_type, value_type = args if args else (Any, Any)
        return {
            _decode(key, key_type, f"{path} key"): _decode(item, value_type, f"{path}[{key!r}]")
            for key, item in entries.items()
        }
    if not _is_class(tp):
        raise TypeMismatch(path, describe(tp), _got(data))
    if tp is bool:
        if not isinstance(data, bool):
            raise TypeMismatch(path, "bool", _got(data))
        return data
    if tp is int:
        if not isinstance(data, int) or isinstance(data, bool):
            raise TypeMismatch(path, "int", _got(data))
        return data
    if tp is float:
        if not isinstance(data, (int, float)) or isinstance(data, bool):
            raise TypeMismatch(path, "float", _got(data))
        return float(data)
    if tp is str:
        if not isinstance(data, str):
            raise TypeMismatch(path, "str", _got(data))
        return data
    if tp is bytes:
        if not isinstance(data, bytes):
            raise TypeMismatch(path, "bytes", _got(data))
        return data
    if tp in (datetime.datetime, datetime.date, uuid.UUID, decimal.Decimal):
        if not isinstance(data, str):
            raise TypeMismatch(path, tp.__qualname__, _got(data))
        try:
            if tp is datetime.datetime:
                return datetime.datetime.fromisoformat(data)
            if tp is datetime.date:
                return datetime.date.fromisoformat(data)
            return uuid.UUID(data) if tp is uuid.UUID else decimal.Decimal(data)
        except (ValueError, decimal.InvalidOperation) as exc:
            raise TypeMismatch(path, tp.__qualname__, repr(data)) from exc
    if _subclass(tp, enum.Enum):
        enum_type: Any = tp
        try:
            return enum_type(data)
        except ValueError as exc:
            raise TypeMismatch(path, tp.__qualname__, repr(data)) from exc
    if _is_model(tp):
        model: Any = tp
        try:
            return model.model_validate(data)
        except ValueError as exc:  # pydantic.ValidationError is a ValueError
            raise TypeMismatch(path, tp.__qualname__, f"invalid data ({exc})") from exc
    if _is_dataclass_type(tp):
        if not isinstance(data, dict):
            raise TypeMismatch(path, tp.__qualname__, _got(data))
        entries = cast("dict[object, object]", data)
        fields = dict(_dataclass_fields(tp))
        kwargs: dict[str, object] = {}
        for key, item in entries.items():
            if not isinstance(key, str) or key not in fields:
                raise TypeMismatch(f"{path}[{key!r}]", "no such field", _got(item))
            kwargs[key] = _decode(item, fields[key], f"{path}.{key}")
        constructor: Any = tp
        try:
            return constructor(**kwargs)
        except TypeError as exc:  # a required field is missing
            raise TypeMismatch(path, tp.__qualname__, f"incomplete data ({exc})") from exc
    if typing.is_typeddict(tp):
        if not isinstance(data, dict):
            raise TypeMismatch(path, tp.__qualname__, _got(data))
        entries = cast("dict[object, object]", data)
        hints = _hints(tp)
        required = _required_keys(tp)
        result: dict[str, object] = {}
        for key, item in entries.items():
            if not isinstance(key, str) or key not in hints:
                raise TypeMismatch(f"{path}[{key!r}]", "no such key", _got(item))
            result[key] = _decode(item, hints[key], f"{path}[{key!r}]")
        missing = sorted(required - set(result))
        if missing:
            raise TypeMismatch(f"{path}[{missing[0]!r}]", "a required key", "nothing")
        return result
    raise TypeMismatch(path, describe(tp), _got(data))


def to_builtins(value: object, tp: object, path: str) -> object:
    """Check ``value`` against ``tp`` and convert it to MessagePack-native builtins."""
    return _encode(value, tp, path)


def from_builtins(data: object, tp: object, path: str) -> object:
    """Rebuild a value of type ``tp`` from MessagePack-native builtins, checking it."""
    return _decode(data, tp, path)


def pack(value: object, tp: object, path: str) -> bytes:
    """Encode ``value`` of type ``tp`` to deterministic MessagePack bytes.

    Raises:
        TypeMismatch: ``value`` does not match ``tp``.
        SerializationError: the value cannot be represented in MessagePack.
    """
    data = _encode(value, tp, path)
    try:
        return ormsgpack.packb(data, option=_PACK_OPTIONS)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"{path}: cannot encode to MessagePack: {exc}") from exc


def unpack_raw(raw: bytes, path: str) -> object:
    """Decode MessagePack bytes to builtins (no type check)."""
    try:
        return ormsgpack.unpackb(raw, option=_PACK_OPTIONS)
    except (TypeError, ValueError) as exc:  # MsgpackDecodeError is a ValueError
        raise SerializationError(f"{path}: undecodable MessagePack: {exc}") from exc


def unpack(raw: bytes, tp: object, path: str) -> object:
    """Decode MessagePack bytes written by `pack` into a value of type ``tp``.

    Raises:
        SerializationError: the bytes are not MessagePack.
        TypeMismatch: the decoded data does not fit ``tp``.
    """
    return _decode(unpack_raw(raw, path), tp, path)


class Codec(Generic[_T]):
    """Encodes values of one type to deterministic MessagePack bytes, and decodes them back.

    The type is checked when the codec is built (`UnsupportedType` names what cannot be
    stored), and every value is checked against it on the way in and out, so a payload that
    does not fit fails at the call that made it, not in a worker later. Equal values give equal
    bytes, which is what idempotent submission compares. See the module notes for the supported
    types: builtins, dataclasses, ``TypedDict`` classes, pydantic models, enums, ``Literal``,
    unions, collections, ``datetime``/``UUID``/``Decimal``, and ``bytes`` (stored as is).

        codec = taquba.Codec(Invoice)
        raw = codec.encode(invoice)
        assert codec.decode(raw) == invoice
    """

    __slots__ = ("_type",)

    @overload
    def __init__(self, type_: type[_T]) -> None: ...
    @overload
    def __init__(self: Codec[Any], type_: object) -> None: ...
    def __init__(self, type_: object) -> None:
        """Build a codec for ``type_``.

        Raises:
            UnsupportedType: ``type_`` (or a type inside it) cannot be serialized.
        """
        check_supported(type_)
        self._type = type_

    @property
    def type(self) -> object:
        """The type this codec encodes."""
        return self._type

    @property
    def type_name(self) -> str:
        """The type as messages show it, e.g. ``list[Invoice]``."""
        return describe(self._type)

    def encode(self, value: _T, *, path: str = "value") -> bytes:
        """Check ``value`` against the type and encode it.

        Args:
            value: the value to encode.
            path: how error messages name the value (``input`` gives ``input.items[2]``).

        Raises:
            TypeMismatch: ``value`` does not fit the type.
            SerializationError: the value cannot be represented in MessagePack.
        """
        return pack(value, self._type, path)

    def decode(self, raw: bytes, *, path: str = "value") -> _T:
        """Decode bytes written by `encode` into a value of the type, checking it.

        Raises:
            SerializationError: ``raw`` is not MessagePack.
            TypeMismatch: the decoded data does not fit the type (it changed incompatibly).
        """
        return cast("_T", unpack(raw, self._type, path))

    def to_builtins(self, value: _T, *, path: str = "value") -> object:
        """Check ``value`` and convert it to MessagePack-native builtins (for nesting)."""
        return to_builtins(value, self._type, path)

    def from_builtins(self, data: object, *, path: str = "value") -> _T:
        """Rebuild a value of the type from builtins made by `to_builtins`, checking it."""
        return cast("_T", from_builtins(data, self._type, path))

    def __repr__(self) -> str:
        return f"Codec({describe(self._type)})"
