"""Pure encodings and rules: item keys, item payloads, result envelopes, memo entries.

Nothing here does I/O. Formats (MessagePack via `ormsgpack`):

- item payload (the workflow run's input): ``encode_input(item)`` packed with sorted map keys,
  so equal items always give equal bytes (the workflow compares inputs by SHA-256);
- result envelope (the run's `Succeed` result): ``{"format": 1, "input": <sha256 hex of the
  payload>, "output": <plain data>, "cost": {metric: amount}}``;
- memo entry: ``{"format": 1, "value": <plain data>}`` plus ``"cost"`` for the cached-cost
  variants; memo keys are scoped by the item's input digest, ``bulk:<sha256>:<key>``, so a
  changed input never reads the memos of the old one.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any, Final

import ormsgpack

from taquba import UsageError
from taquba_workflow import MAX_RUN_ID_LENGTH

from ._cost import CostReport
from ._errors import InvalidItemKey, UnserializableItem

__all__ = ["key_by_content"]

FORMAT: Final = 1
_RUN_ID = re.compile(r"[A-Za-z0-9_-]+")
_PACK_OPTIONS: Final = ormsgpack.OPT_SORT_KEYS


def validate_key(key: object) -> str:
    """Return ``key`` if it is a valid run id (1 to 128 of ``[A-Za-z0-9_-]``)."""
    if not isinstance(key, str):
        raise InvalidItemKey(key, f"a key must be a str, not {type(key).__name__}")
    if not key:
        raise InvalidItemKey(key, "a key must not be empty")
    if len(key) > MAX_RUN_ID_LENGTH:
        raise InvalidItemKey(key, f"a key must be at most {MAX_RUN_ID_LENGTH} characters")
    if not _RUN_ID.fullmatch(key):
        raise InvalidItemKey(key, "a key must contain only [A-Za-z0-9_-]")
    return key


def positional_key(index: int) -> str:
    """The default key of the ``index``-th input (0-based): ``item-<index>``."""
    return f"item-{index}"


def pack(value: Any) -> bytes:
    """MessagePack ``value`` with sorted map keys (raises ormsgpack's error or TypeError)."""
    return ormsgpack.packb(value, option=_PACK_OPTIONS)


def key_by_content(item: Any) -> str:
    """A key derived from an item's content: ``item-`` + SHA-256 of its MessagePack form.

    Pass it as ``Bulk(..., key=key_by_content)`` so that an item keeps its key wherever it sits
    in the input, and duplicated items collapse into one. Maps are serialized with sorted keys;
    dataclasses work.

    Raises:
        UnserializableItem: MessagePack cannot serialize ``item``.
    """
    return "item-" + hashlib.sha256(encode_item(item)).hexdigest()


def encode_item(data: Any) -> bytes:
    """The payload of an item's run."""
    try:
        return pack(data)
    except (ormsgpack.MsgpackEncodeError, TypeError, ValueError) as exc:
        raise UnserializableItem(f"cannot serialize the item {_short(data)}: {exc}") from exc


def decode_item(payload: bytes) -> Any:
    """The plain data an item's payload holds (raises ValueError when undecodable)."""
    try:
        return ormsgpack.unpackb(payload)
    except (ormsgpack.MsgpackDecodeError, TypeError) as exc:
        raise ValueError(f"undecodable item payload: {exc}") from exc


def digest(payload: bytes) -> str:
    """The hex SHA-256 of an item's payload (what identifies its input)."""
    return hashlib.sha256(payload).hexdigest()


@dataclass(frozen=True, slots=True)
class Envelope:
    """What a succeeded item's run stores as its result."""

    input_digest: str
    output: Any
    cost: CostReport


def encode_envelope(input_digest: str, output: Any, cost: CostReport) -> bytes:
    """The run result of a succeeded item."""
    return pack({"format": FORMAT, "input": input_digest, "output": output, "cost": cost.to_dict()})


def decode_envelope(raw: bytes) -> Envelope:
    """Decode `encode_envelope`'s bytes (raises ValueError when they are not an envelope)."""
    try:
        data = ormsgpack.unpackb(raw)
    except (ormsgpack.MsgpackDecodeError, TypeError) as exc:
        raise ValueError(f"undecodable result envelope: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:  # pyright: ignore[reportUnknownMemberType]
        raise ValueError("not a taquba-bulk result envelope")
    fields: dict[str, Any] = data  # pyright: ignore[reportUnknownVariableType]
    input_digest = fields.get("input")
    if not isinstance(input_digest, str):
        raise ValueError("the result envelope has no input digest")
    try:
        cost = CostReport.from_dict(fields.get("cost") or {})
    except UsageError as exc:
        raise ValueError(f"the result envelope's cost is malformed: {exc}") from exc
    return Envelope(input_digest, fields.get("output"), cost)


def memo_key(input_digest: str, key: str) -> str:
    """The workflow memo key of a bulk memo ``key``, scoped by the item's input digest."""
    return f"bulk:{input_digest}:{key}"


def encode_memo(value: Any, cost: CostReport | None) -> bytes:
    """A memo entry (raises ormsgpack's error or TypeError for unserializable values)."""
    entry: dict[str, Any] = {"format": FORMAT, "value": value}
    if cost is not None:
        entry["cost"] = cost.to_dict()
    return ormsgpack.packb(entry, option=ormsgpack.OPT_NON_STR_KEYS)


def decode_memo(raw: bytes) -> tuple[Any, CostReport | None]:
    """The value and (cached-cost variants) cost of a memo entry; ValueError if malformed."""
    try:
        data = ormsgpack.unpackb(raw, option=ormsgpack.OPT_NON_STR_KEYS)
    except (ormsgpack.MsgpackDecodeError, TypeError) as exc:
        raise ValueError(f"undecodable memo entry: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT or "value" not in data:  # pyright: ignore[reportUnknownMemberType]
        raise ValueError("not a taquba-bulk memo entry")
    fields: dict[Any, Any] = data  # pyright: ignore[reportUnknownVariableType]
    raw_cost = fields.get("cost")
    if raw_cost is None:
        return fields["value"], None
    try:
        return fields["value"], CostReport.from_dict(raw_cost)
    except UsageError as exc:
        raise ValueError(f"the memo entry's cost is malformed: {exc}") from exc


def json_problem(value: Any, *, _depth: int = 0) -> str | None:
    """What keeps ``value`` from being JSON data (None if it is).

    JSON data: None, bool, int, finite float, str, lists/tuples of JSON data, dicts with str
    keys and JSON data values.
    """
    if _depth > 200:
        return "it is nested more than 200 levels deep"
    if value is None or isinstance(value, (bool, int, str)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"it holds the non-finite float {value}"
    if isinstance(value, (list, tuple)):
        for element in value:  # pyright: ignore[reportUnknownVariableType]
            problem = json_problem(element, _depth=_depth + 1)
            if problem is not None:
                return problem
        return None
    if isinstance(value, dict):
        for key, element in value.items():  # pyright: ignore[reportUnknownVariableType]
            if not isinstance(key, str):
                return f"it has a map key of type {type(key).__name__}, not str"  # pyright: ignore[reportUnknownArgumentType]
            problem = json_problem(element, _depth=_depth + 1)
            if problem is not None:
                return problem
        return None
    return f"it holds a {type(value).__name__}"


def threshold_exceeded(failed: int, total: int, threshold: float | None) -> bool:
    """Whether ``failed`` of ``total`` items is over ``threshold`` (a fraction).

    ``threshold`` 0.0 fails on any failure; 1.0 never fails; None disables the check.
    """
    if threshold is None or total <= 0:
        return False
    return failed > threshold * total


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
