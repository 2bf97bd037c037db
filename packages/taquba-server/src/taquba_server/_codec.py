"""Body encodings: JSON (bytes as base64) and MessagePack (bytes as bin)."""

from __future__ import annotations

import base64
import json
from typing import Any, Literal, cast

import ormsgpack

from ._schema import BadRequest

__all__ = [
    "JSON",
    "MSGPACK",
    "Encoding",
    "decode_body",
    "encode_body",
    "media_type_of",
    "response_encoding",
]

Encoding = Literal["json", "msgpack"]
JSON = "application/json"
MSGPACK = "application/msgpack"
_MEDIA: dict[str, Encoding] = {
    JSON: "json",
    MSGPACK: "msgpack",
    "application/x-msgpack": "msgpack",
    "application/vnd.msgpack": "msgpack",
}


def media_type_of(content_type: str | None) -> Encoding | None:
    """The encoding a ``Content-Type`` names, or None if it names neither."""
    if not content_type:
        return None
    base = content_type.split(";", 1)[0].strip().lower()
    return _MEDIA.get(base)


def response_encoding(accept: str | None, default: Encoding) -> Encoding:
    """The encoding to answer in: the first acceptable one of ``Accept`` by quality.

    ``*/*``, a missing header or one naming neither encoding answers in ``default``.
    """
    if not accept:
        return default
    ranked: list[tuple[float, int, Encoding]] = []
    for index, part in enumerate(accept.split(",")):
        pieces = part.split(";")
        media = pieces[0].strip().lower()
        quality = 1.0
        for param in pieces[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        if quality <= 0:
            continue
        encoding = _MEDIA.get(media)
        if encoding is None and media in ("*/*", "application/*"):
            encoding = default
        if encoding is not None:
            ranked.append((-quality, index, encoding))
    if not ranked:
        return default
    return min(ranked)[2]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode_body(raw: bytes, encoding: Encoding) -> object:
    """Decode a request body; raise `BadRequest` if it is not well-formed."""
    try:
        if encoding == "json":
            return json.loads(raw, parse_constant=_reject_constant)
        return ormsgpack.unpackb(raw)
    except (ValueError, ormsgpack.MsgpackDecodeError, RecursionError) as exc:
        kind = "JSON" if encoding == "json" else "MessagePack"
        raise BadRequest(None, f"the body is not valid {kind}: {exc}") from None


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in cast("dict[str, object]", value).items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in cast("list[object]", value)]
    return value


def encode_body(value: object, encoding: Encoding) -> bytes:
    """Encode a response body (bytes become base64 strings in JSON)."""
    if encoding == "json":
        return json.dumps(_jsonable(value), separators=(",", ":"), allow_nan=False).encode()
    return ormsgpack.packb(value)
