"""The typed MessagePack codec: round trips, determinism, and clear mismatches."""

from __future__ import annotations

import datetime
import decimal
import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NewType, NotRequired, Optional, TypedDict, Union

import pytest
from hypothesis import given
from hypothesis import strategies as st

import taquba
from taquba import SerializationError, TypeMismatch, UnsupportedType
from taquba._codec import check_supported, pack, unpack

UserId = NewType("UserId", int)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Point:
    x: float
    y: float


@dataclass
class Shape:
    name: str
    points: list[Point]
    color: Color = Color.RED
    tags: set[str] = field(default_factory=set[str])
    owner: UserId | None = None


class Order(TypedDict):
    id: int
    items: dict[str, int]
    note: NotRequired[str]


@dataclass
class Tree:
    value: int
    children: list[Tree] = field(default_factory=list["Tree"])


ROUND_TRIPS: list[tuple[object, Any]] = [
    (None, None),
    (True, bool),
    (7, int),
    (-(2**63), int),
    (2**64 - 1, int),
    (1.5, float),
    ("héllo", str),
    (b"\x00\xff", bytes),
    ([1, 2, 3], list[int]),
    ((1, "a"), tuple[int, str]),
    ((1, 2, 3), tuple[int, ...]),
    ({"b": 1, "a": 2}, dict[str, int]),
    ({3: "x", 1: "y"}, dict[int, str]),
    ({Color.RED: 1}, dict[Color, int]),
    (frozenset({3, 1, 2}), frozenset[int]),
    ({"x", "y"}, set[str]),
    (Color.BLUE, Color),
    ("b", Literal["a", "b"]),
    (None, Optional[int]),  # noqa: UP045 - the old spelling must work too
    (5, Union[int, str]),  # noqa: UP007
    ("5", int | str),
    (datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC), datetime.datetime),
    (datetime.date(2026, 1, 2), datetime.date),
    (uuid.UUID(int=42), uuid.UUID),
    (decimal.Decimal("1.10"), decimal.Decimal),
    (UserId(3), UserId),
    (4, Annotated[int, "meta"]),
    (Point(1.0, 2.0), Point),
    (Shape("tri", [Point(0, 0), Point(1, 1)], Color.BLUE, {"b", "a"}, UserId(9)), Shape),
    ({"id": 1, "items": {"x": 2}}, Order),
    ({"id": 1, "items": {}, "note": "n"}, Order),
    (Tree(1, [Tree(2), Tree(3, [Tree(4)])]), Tree),
    ({"any": [1, "two", {"three": None}]}, Any),
    ([Point(1, 2)], Sequence[Point]),
    ({"k": [1]}, Mapping[str, list[int]]),
]


@pytest.mark.parametrize(("value", "tp"), ROUND_TRIPS)
def test_round_trip(value: object, tp: Any) -> None:
    check_supported(tp)
    decoded = unpack(pack(value, tp, "input"), tp, "input")
    assert decoded == value
    if isinstance(value, tuple | frozenset | set):
        assert type(decoded) is type(value)


def test_floats_accept_ints_and_decode_as_floats() -> None:
    decoded = unpack(pack(Point(1, 2), Point, "input"), Point, "input")
    assert decoded == Point(1.0, 2.0)
    assert isinstance(decoded.x, float)


def test_equal_values_encode_to_equal_bytes() -> None:
    """Idempotency compares encodings: dict order and set order must not matter."""
    a: Order = {"id": 1, "items": {"x": 1, "y": 2}}
    b: Order = {"items": {"y": 2, "x": 1}, "id": 1}
    assert pack(a, Order, "input") == pack(b, Order, "input")
    assert pack({3, 1, 2}, set[int], "input") == pack({2, 3, 1}, set[int], "input")
    assert pack(Point(1, 2), Point, "i") == pack(Point(1.0, 2.0), Point, "i")


@given(st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**63 - 1), max_size=8))
def test_dict_encoding_is_order_independent(entries: dict[str, int]) -> None:
    reordered = dict(reversed(list(entries.items())))
    assert pack(entries, dict[str, int], "i") == pack(reordered, dict[str, int], "i")
    assert unpack(pack(entries, dict[str, int], "i"), dict[str, int], "i") == entries


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text() | st.binary(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=20,
    )
)
def test_any_round_trips_native_values(value: object) -> None:
    assert unpack(pack(value, Any, "i"), Any, "i") == value


@pytest.mark.parametrize(
    ("value", "tp", "path"),
    [
        ("1", int, "input"),
        (True, int, "input"),
        (1.5, int, "input"),
        (1, str, "input"),
        (2**64, int, "input"),
        ({"x": 1, "y": "2"}, Point, "input"),
        (Point(1, "2"), Point, "input.y"),  # type: ignore[arg-type]
        (Shape("s", [Point(0, 0), "p"]), Shape, "input.points[1]"),  # type: ignore[list-item]
        ({"id": 1}, Order, "input['items']"),
        ({"id": 1, "items": {}, "extra": 1}, Order, "input['extra']"),
        ({"id": 1, "items": {"x": "1"}}, Order, "input['items']['x']"),
        ("c", Literal["a", "b"], "input"),
        (1.0, Literal[1], "input"),
        ("red", Color, "input"),
        ([1, 2], tuple[int, int, int], "input"),
        ("abc", list[str], "input"),
        ({1: 1}, dict[str, int], "input key"),
        (datetime.date(2026, 1, 1), datetime.datetime, "input"),
        (datetime.datetime(2026, 1, 1), datetime.date, "input"),
        (object(), Any, "input"),
        (None, int, "input"),
        (1, None, "input"),
    ],
)
def test_encode_mismatches_name_the_path(value: object, tp: Any, path: str) -> None:
    with pytest.raises(TypeMismatch) as info:
        pack(value, tp, "input")
    assert info.value.path.startswith(path)
    assert "expected" in str(info.value)
    assert isinstance(info.value, SerializationError)
    assert isinstance(info.value, TypeError)


def test_decode_mismatches_are_clear() -> None:
    raw = pack({"x": 1.0, "y": 2.0}, dict[str, float], "output")
    assert unpack(raw, Point, "output") == Point(1.0, 2.0)
    with pytest.raises(TypeMismatch, match=r"output\['z'\]: expected no such field"):
        unpack(pack({"x": 1.0, "z": 2.0}, Any, "o"), Point, "output")
    with pytest.raises(TypeMismatch, match="incomplete"):
        unpack(pack({"x": 1.0}, Any, "o"), Point, "output")
    with pytest.raises(TypeMismatch, match=r"output: expected int, got str"):
        unpack(pack("1", str, "o"), int, "output")
    with pytest.raises(TypeMismatch, match="Color"):
        unpack(pack("green", str, "o"), Color, "output")
    with pytest.raises(TypeMismatch, match="datetime"):
        unpack(pack("not a date", str, "o"), datetime.datetime, "output")
    with pytest.raises(SerializationError, match="undecodable"):
        unpack(b"\xc1", int, "output")


@pytest.mark.parametrize("tp", [object(), complex, list[complex], dict[float, int], type])
def test_unsupported_types_are_rejected_up_front(tp: Any) -> None:
    with pytest.raises(UnsupportedType):
        check_supported(tp)


def test_pydantic_models_round_trip_when_pydantic_is_installed() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Invoice(pydantic.BaseModel):  # type: ignore[misc, name-defined]
        number: int
        lines: list[str]
        issued: datetime.date

    invoice = Invoice(number=7, lines=["a", "b"], issued=datetime.date(2026, 1, 1))
    check_supported(Invoice)
    assert unpack(pack(invoice, Invoice, "input"), Invoice, "input") == invoice
    with pytest.raises(TypeMismatch, match="Invoice"):
        pack({"number": 7}, Invoice, "input")
    with pytest.raises(TypeMismatch, match="invalid data"):
        unpack(pack({"number": "x"}, Any, "o"), Invoice, "output")


class Flag(enum.IntEnum):
    ON = 1


@pytest.mark.parametrize(
    ("data", "tp"),
    [
        (1, None),
        ("x", Literal[1, 2]),
        (1.5, int | None),
        ("x", list[int]),
        ([1, 2], tuple[int]),
        ([[1]], set[list[int]]),
        ("x", dict[str, int]),
        (1, bool),
        (True, int),
        ("1", float),
        (1, str),
        ("x", bytes),
        (1, datetime.date),
        ("nope", uuid.UUID),
        ("nope", decimal.Decimal),
        (3, Flag),
        ("x", Point),
        ({"x": 1.0, "y": 2.0, "z": 3.0}, Point),
        ("x", Order),
        ({"id": 1, "items": {}, "bogus": 1}, Order),
        ({"items": {}}, Order),
        ({"x": 1}, complex),
    ],
)
def test_decode_mismatches(data: object, tp: Any) -> None:
    with pytest.raises(TypeMismatch):
        unpack(pack(data, Any, "o"), tp, "output")


@pytest.mark.parametrize(
    ("value", "tp"),
    [
        ((), tuple[()]),
        ((1, 2), tuple),
        ([1, "a"], list),
        ({"a": 1}, dict),
        (frozenset({1}), frozenset),
        (Flag.ON, Flag),
        ({Flag.ON: "x"}, dict[Flag, str]),
        (b"x", bytes),
    ],
)
def test_more_round_trips(value: object, tp: Any) -> None:
    check_supported(tp)
    assert unpack(pack(value, tp, "i"), tp, "i") == value


@pytest.mark.parametrize(
    ("value", "tp"),
    [
        ({1, 2}, list[int]),
        ([1], set[int]),
        ([1], dict[str, int]),
        (1, Order),
        ({"id": 1, "items": {}}, Point),
        (Point(1, 2), Shape),
        ({1: object()}, Any),
        ({(1,): 1}, Any),
        ({1.5: 1}, dict[float, int]),
        (datetime.datetime(2026, 1, 1), datetime.date),
        ("x", uuid.UUID),
        (1, Color),
        (2, Literal[1]),
        (1.0, complex),
    ],
)
def test_more_encode_mismatches(value: object, tp: Any) -> None:
    with pytest.raises((TypeMismatch, SerializationError)):
        pack(value, tp, "input")


def test_literal_and_alias_support_checks() -> None:
    check_supported(Literal["a", 1, Color.RED] | None)
    with pytest.raises(UnsupportedType, match="Literal"):
        check_supported(Literal[1.5])
    check_supported(Annotated[list[Shape], "x"])
    check_supported(dict[Color, Tree])
    assert unpack(pack([1, 2], list, "i"), list, "i") == [1, 2]


def test_codec_checks_its_type_up_front_and_round_trips() -> None:
    with pytest.raises(UnsupportedType):
        taquba.Codec(complex)
    codec = taquba.Codec(Point)
    raw = codec.encode(Point(1.0, 2.0))
    assert codec.decode(raw) == Point(1.0, 2.0)
    assert raw == taquba.Codec(Point).encode(Point(1.0, 2.0))
    with pytest.raises(TypeMismatch, match=r"^input: expected Point"):
        codec.encode({"x": 1.0}, path="input")  # type: ignore[arg-type]
    assert codec.from_builtins(codec.to_builtins(Point(3.0, 4.0))) == Point(3.0, 4.0)
    assert "Point" in repr(codec)
    assert isinstance(UnsupportedType("x"), taquba.UsageError)
    assert isinstance(TypeMismatch("p", "a", "b"), taquba.TaqubaError)
