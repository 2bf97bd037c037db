"""Bearer tokens and their scopes: definitions, loading, and the constant-time lookup."""

from __future__ import annotations

import hmac
import tomllib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from ._errors import InvalidTokens

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

__all__ = ["SCOPES", "Scope", "Token", "load_tokens", "parse_tokens"]

Scope = Literal["produce", "work", "admin", "metrics"]
"""A token scope: ``produce`` < ``work`` < ``admin`` (each grants what the previous does);
``metrics`` grants ``GET /metrics`` only (``admin`` grants it too)."""

SCOPES: tuple[Scope, ...] = ("produce", "work", "admin", "metrics")
"""Every scope: the API's, weakest first, then ``metrics``."""

_RANK: dict[str, int] = {"produce": 0, "work": 1, "admin": 2}
_KNOWN: frozenset[str] = frozenset(SCOPES)


@dataclass(frozen=True, slots=True)
class Token:
    """One bearer token: its secret and what it may do.

    ``admin`` grants everything, ``work`` grants ``produce`` too (see the HTTP API's Auth
    section).
    """

    secret: str = field(repr=False)
    """The bearer secret clients send as ``Authorization: Bearer <secret>``."""
    scopes: frozenset[Scope]
    """The token's scopes."""
    name: str = ""
    """A label for logs (never the secret)."""

    def __post_init__(self) -> None:
        if not isinstance(self.secret, str) or not self.secret.strip():  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidTokens(f"token {self.name or '?'}: the secret must be a non-empty str")
        if any(c.isspace() for c in self.secret):
            raise InvalidTokens(f"token {self.name or '?'}: the secret cannot contain whitespace")
        if not self.scopes:
            raise InvalidTokens(f"token {self.name or '?'}: give at least one scope")
        for scope in self.scopes:
            if scope not in _KNOWN:
                raise InvalidTokens(
                    f"token {self.name or '?'}: unknown scope {scope!r} "
                    f"(one of {', '.join(SCOPES)})"
                )

    def allows(self, scope: Scope) -> bool:
        """Whether this token may call an endpoint that needs ``scope``."""
        if scope == "metrics":
            return "metrics" in self.scopes or "admin" in self.scopes
        rank = _RANK[scope]
        return any(_RANK.get(own, -1) >= rank for own in self.scopes)


def _scopes(values: Iterable[object], where: str) -> frozenset[Scope]:
    result: set[Scope] = set()
    for value in values:
        if not isinstance(value, str) or value not in _KNOWN:
            raise InvalidTokens(f"{where}: unknown scope {value!r} (one of {', '.join(SCOPES)})")
        result.add(cast("Scope", value))
    return frozenset(result)


def parse_tokens(text: str) -> list[Token]:
    """Parse the ``TAQUBA_SERVER_TOKENS`` form: ``"secret:scope,scope;secret2:admin"``.

    Raises:
        InvalidTokens: an entry without a secret or a scope, or with an unknown scope.
    """
    tokens: list[Token] = []
    for number, entry in enumerate(text.split(";"), start=1):
        entry = entry.strip()
        if not entry:
            continue
        secret, sep, scopes = entry.rpartition(":")
        if not sep or not secret:
            raise InvalidTokens(f"TAQUBA_SERVER_TOKENS entry {number}: write secret:scope,scope")
        where = f"TAQUBA_SERVER_TOKENS entry {number}"
        names = [s.strip() for s in scopes.split(",") if s.strip()]
        tokens.append(Token(secret, _scopes(names, where), name=f"env#{number}"))
    return tokens


def load_tokens(path: str | Path) -> list[Token]:
    """Read a TOML tokens file.

    The file is a list of ``[[token]]`` tables, each with ``secret`` (str), ``scopes`` (a list
    of ``"produce"``, ``"work"``, ``"admin"``) and an optional ``name``::

        [[token]]
        name = "web"
        secret = "s3cr3t-for-producers"
        scopes = ["produce"]

    Raises:
        InvalidTokens: the file cannot be read or parsed, or a token is malformed.
    """
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidTokens(f"cannot read the tokens file {str(path)!r}: {exc}") from exc
    unknown = set(data) - {"token"}
    if unknown:
        raise InvalidTokens(f"{path}: unknown key(s) {sorted(unknown)}; use [[token]] tables")
    entries: object = data.get("token", [])
    if not isinstance(entries, list):
        raise InvalidTokens(f"{path}: 'token' must be an array of tables ([[token]])")
    tokens: list[Token] = []
    for number, raw in enumerate(cast("list[object]", entries), start=1):
        where = f"{path}: token {number}"
        if not isinstance(raw, dict):
            raise InvalidTokens(f"{where}: must be a table")
        entry = cast("dict[str, Any]", raw)
        extra = set(entry) - {"name", "secret", "scopes"}
        if extra:
            raise InvalidTokens(f"{where}: unknown key(s) {sorted(extra)}")
        secret, scopes, name = entry.get("secret"), entry.get("scopes"), entry.get("name", "")
        if not isinstance(secret, str) or not isinstance(name, str):
            raise InvalidTokens(f"{where}: 'secret' and 'name' must be strings")
        if not isinstance(scopes, list):
            raise InvalidTokens(f"{where}: 'scopes' must be a list")
        tokens.append(
            Token(secret, _scopes(cast("list[object]", scopes), where), name=name or f"#{number}")
        )
    return tokens


def find_token(tokens: Sequence[Token], secret: str) -> Token | None:
    """The token whose secret is ``secret``, comparing every one in constant time."""
    found: Token | None = None
    presented = secret.encode()
    for token in tokens:
        if hmac.compare_digest(token.secret.encode(), presented) and found is None:
            found = token
    return found
