"""The wire schema: one set of definitions that validates requests and writes the OpenAPI.

A schema is a small tree of `Schema` nodes. `Schema.check` turns a decoded request value into
a Python value (raising `BadRequest` naming the field path), and `Schema.json_schema` writes
the JSON Schema of its JSON form (bytes as base64 strings), so the OpenAPI document the server
serves describes exactly what the server accepts.

Byte fields are MessagePack ``bin`` in MessagePack bodies and padded standard base64 strings in
JSON bodies: `Schema.check` takes ``binary=True`` for a MessagePack body.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from typing import Any, cast

__all__ = [
    "BASE64_PATTERN",
    "BadRequest",
    "Bool",
    "Bytes",
    "Enum",
    "Field",
    "Int",
    "List",
    "Nullable",
    "Num",
    "Obj",
    "Ref",
    "Schema",
    "Str",
    "StrMap",
]

BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
"""Padded standard base64, the JSON form of a byte field."""


class BadRequest(Exception):
    """A request body or parameter that does not fit its schema (400 ``invalid_request``)."""

    def __init__(self, field_path: str | None, message: str) -> None:
        super().__init__(message)
        self.field_path = field_path
        self.message = message


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _what(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bytes):
        return "binary"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _check_text(value: str, path: str) -> None:
    """Refuse strings that are not valid Unicode text (lone surrogates from JSON escapes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(path, f"{path} is not valid Unicode text") from None


class Schema:
    """A node of the wire schema."""

    description: str | None = None

    def check(self, value: object, path: str, *, binary: bool) -> Any:
        """Validate ``value`` (decoded from the body) and return its Python form."""
        raise NotImplementedError

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of the JSON form of this node."""
        raise NotImplementedError

    def _doc(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self.description:
            schema["description"] = self.description
        return schema


@dataclass
class Str(Schema):
    """A string."""

    min_length: int = 0
    max_length: int | None = None
    pattern: str | None = None
    description: str | None = None

    def check(self, value: object, path: str, *, binary: bool) -> str:
        if not isinstance(value, str):
            raise BadRequest(path, f"{path} must be a string, not {_what(value)}")
        _check_text(value, path)
        if len(value) < self.min_length:
            raise BadRequest(path, f"{path} must have at least {self.min_length} characters")
        if self.max_length is not None and len(value) > self.max_length:
            raise BadRequest(path, f"{path} must have at most {self.max_length} characters")
        if self.pattern is not None:
            whole = self.pattern.removeprefix("^").removesuffix("$")
            if re.fullmatch(whole, value) is None:
                raise BadRequest(path, f"{path} must match {self.pattern}")
        return value

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string"}
        if self.min_length:
            schema["minLength"] = self.min_length
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        if self.pattern is not None:
            schema["pattern"] = self.pattern
        return self._doc(schema)


@dataclass
class Enum(Schema):
    """One of a few strings."""

    values: tuple[str, ...]
    description: str | None = None

    def check(self, value: object, path: str, *, binary: bool) -> str:
        if not isinstance(value, str) or value not in self.values:
            choices = ", ".join(repr(v) for v in self.values)
            raise BadRequest(path, f"{path} must be one of {choices}")
        return value

    def json_schema(self) -> dict[str, Any]:
        return self._doc({"type": "string", "enum": list(self.values)})


@dataclass
class Int(Schema):
    """An integer (booleans and floats are refused)."""

    minimum: int
    maximum: int
    description: str | None = None

    def check(self, value: object, path: str, *, binary: bool) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(path, f"{path} must be an integer, not {_what(value)}")
        if not self.minimum <= value <= self.maximum:
            raise BadRequest(path, f"{path} must be from {self.minimum} to {self.maximum}")
        return value

    def json_schema(self) -> dict[str, Any]:
        return self._doc({"type": "integer", "minimum": self.minimum, "maximum": self.maximum})


@dataclass
class Num(Schema):
    """A finite number of seconds (an integer or a float)."""

    minimum: float
    maximum: float
    exclusive_minimum: bool = False
    description: str | None = None

    def check(self, value: object, path: str, *, binary: bool) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(path, f"{path} must be a number, not {_what(value)}")
        number = float(value) if isinstance(value, float) else value
        if isinstance(number, float) and not math.isfinite(number):
            raise BadRequest(path, f"{path} must be a finite number")
        low_ok = number > self.minimum if self.exclusive_minimum else number >= self.minimum
        if not low_ok or number > self.maximum:
            low = "above" if self.exclusive_minimum else "from"
            raise BadRequest(path, f"{path} must be {low} {self.minimum:g} to {self.maximum:g}")
        return float(number)

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "number"}
        if math.isfinite(self.maximum):
            schema["maximum"] = self.maximum
        if self.exclusive_minimum:
            schema["exclusiveMinimum"] = self.minimum
        else:
            schema["minimum"] = self.minimum
        return self._doc(schema)


@dataclass
class Bool(Schema):
    """A boolean."""

    description: str | None = None

    def check(self, value: object, path: str, *, binary: bool) -> bool:
        if not isinstance(value, bool):
            raise BadRequest(path, f"{path} must be a boolean, not {_what(value)}")
        return value

    def json_schema(self) -> dict[str, Any]:
        return self._doc({"type": "boolean"})


@dataclass
class Bytes(Schema):
    """Bytes: ``bin`` in MessagePack, a padded standard base64 string in JSON."""

    max_length: int | None = None
    description: str | None = None

    def check(self, value: object, path: str, *, binary: bool) -> bytes:
        if binary:
            if not isinstance(value, bytes):
                raise BadRequest(path, f"{path} must be MessagePack bin, not {_what(value)}")
            data = value
        else:
            if not isinstance(value, str):
                raise BadRequest(path, f"{path} must be a base64 string, not {_what(value)}")
            try:
                data = base64.b64decode(value.encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError, ValueError):
                raise BadRequest(path, f"{path} is not padded standard base64") from None
        if self.max_length is not None and len(data) > self.max_length:
            raise BadRequest(path, f"{path} must have at most {self.max_length} bytes")
        return data

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "string",
            "contentEncoding": "base64",
            "pattern": BASE64_PATTERN,
        }
        return self._doc(schema)


@dataclass
class Nullable(Schema):
    """A value or null."""

    inner: Schema
    description: str | None = None

    def check(self, value: object, path: str, *, binary: bool) -> Any:
        if value is None:
            return None
        return self.inner.check(value, path, binary=binary)

    def json_schema(self) -> dict[str, Any]:
        return self._doc({"anyOf": [self.inner.json_schema(), {"type": "null"}]})


@dataclass
class List(Schema):
    """An array."""

    items: Schema
    max_items: int | None = None
    min_items: int = 0
    description: str | None = None

    def check(self, value: object, path: str, *, binary: bool) -> list[Any]:
        if not isinstance(value, list):
            raise BadRequest(path, f"{path} must be an array, not {_what(value)}")
        items = cast("list[object]", value)
        if len(items) < self.min_items:
            raise BadRequest(path, f"{path} must have at least {self.min_items} items")
        if self.max_items is not None and len(items) > self.max_items:
            raise BadRequest(path, f"{path} must have at most {self.max_items} items")
        return [self.items.check(v, f"{path}[{i}]", binary=binary) for i, v in enumerate(items)]

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "array", "items": self.items.json_schema()}
        if self.min_items:
            schema["minItems"] = self.min_items
        if self.max_items is not None:
            schema["maxItems"] = self.max_items
        return self._doc(schema)


@dataclass
class StrMap(Schema):
    """An object of string values under arbitrary string keys (job headers)."""

    max_items: int | None = None
    description: str | None = None

    def check(self, value: object, path: str, *, binary: bool) -> dict[str, str]:
        if not isinstance(value, dict):
            raise BadRequest(path, f"{path} must be an object, not {_what(value)}")
        items = cast("dict[object, object]", value)
        if self.max_items is not None and len(items) > self.max_items:
            raise BadRequest(path, f"{path} must have at most {self.max_items} entries")
        result: dict[str, str] = {}
        for key, item in items.items():
            if not isinstance(key, str):
                raise BadRequest(path, f"{path} keys must be strings")
            _check_text(key, path)
            result[key] = Str().check(item, f"{path}.{key}", binary=binary)
        return result

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
        if self.max_items is not None:
            schema["maxProperties"] = self.max_items
        return self._doc(schema)


@dataclass
class Field:
    """One field of an `Obj`."""

    schema: Schema
    required: bool = False
    default: Any = None


@dataclass
class Obj(Schema):
    """An object with known fields; unknown fields are refused.

    A named object is written once under ``components/schemas`` and referenced by `Ref`.
    """

    name: str | None
    fields: dict[str, Field]
    description: str | None = None

    def check(self, value: object, path: str, *, binary: bool) -> dict[str, Any]:
        if not isinstance(value, dict):
            where = path or "the body"
            raise BadRequest(path or None, f"{where} must be an object, not {_what(value)}")
        items = cast("dict[object, object]", value)
        result: dict[str, Any] = {}
        for key in items:
            if not isinstance(key, str):
                raise BadRequest(path or None, f"{path or 'the body'} has a non-string key")
            if key not in self.fields:
                raise BadRequest(_join(path, key), f"unknown field {_join(path, key)}")
        for name, spec in self.fields.items():
            if name in items:
                result[name] = spec.schema.check(items[name], _join(path, name), binary=binary)
            elif spec.required:
                raise BadRequest(_join(path, name), f"missing field {_join(path, name)}")
            else:
                result[name] = spec.default
        return result

    def json_schema(self) -> dict[str, Any]:
        if self.name is not None:
            return {"$ref": f"#/components/schemas/{self.name}"}
        return self.definition()

    def definition(self) -> dict[str, Any]:
        """The full JSON Schema of the object (not a reference)."""
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {name: spec.schema.json_schema() for name, spec in self.fields.items()},
            "additionalProperties": False,
        }
        required = [name for name, spec in self.fields.items() if spec.required]
        if required:
            schema["required"] = required
        return self._doc(schema)

    def named(self) -> list[Obj]:
        """This object and every named object below it, each once."""
        found: dict[str, Obj] = {}
        _collect(self, found)
        return list(found.values())


@dataclass
class Ref(Schema):
    """A reference to a named `Obj` (same validation)."""

    target: Obj

    def check(self, value: object, path: str, *, binary: bool) -> Any:
        return self.target.check(value, path, binary=binary)

    def json_schema(self) -> dict[str, Any]:
        return self.target.json_schema()


def _collect(node: Schema, found: dict[str, Obj]) -> None:
    if isinstance(node, Obj):
        if node.name is not None:
            if node.name in found:
                return
            found[node.name] = node
        for spec in node.fields.values():
            _collect(spec.schema, found)
    elif isinstance(node, Nullable | List):
        _collect(node.inner if isinstance(node, Nullable) else node.items, found)
    elif isinstance(node, Ref):
        _collect(node.target, found)
