"""The dashboard's browser sessions: a signed cookie (no server-side store) and CSRF tokens.

The cookie holds who logged in (the token's name and a fingerprint of its secret, never the
secret), a random nonce and an expiry, signed with HMAC-SHA256 under a key drawn when the
application starts: a restart logs every browser out. The CSRF token of a session is an HMAC of
its nonce, so it is bound to that session and needs no storage either.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._auth import Scope, Token

__all__ = ["COOKIE_NAME", "Session", "SessionSigner"]

COOKIE_NAME = "taquba_ui"
"""The session cookie's name."""
SESSION_TTL = 12 * 3600
"""Seconds a login lasts."""


def fingerprint(secret: str) -> str:
    """A one-way fingerprint of a token secret (the cookie names the token by it)."""
    return hashlib.sha256(b"taquba-ui-token\0" + secret.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Session:
    """A verified browser session."""

    who: str
    """The token's name (``anonymous`` when the server has no tokens)."""
    nonce: str
    """The session's random nonce (the CSRF token derives from it)."""
    admin: bool
    """Whether the session may act (the token has the ``admin`` scope)."""
    scopes: tuple[Scope, ...]
    """The token's scopes, for display."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Issues and verifies session cookies and CSRF tokens under one random key."""

    def __init__(self, tokens: Sequence[Token]) -> None:
        self._key = secrets.token_bytes(32)
        self._tokens = list(tokens)

    @property
    def open(self) -> bool:
        """No tokens configured: every browser is an anonymous admin (loopback only)."""
        return not self._tokens

    def _sign(self, data: bytes) -> str:
        return _b64(hmac.new(self._key, data, hashlib.sha256).digest())

    def issue(self, token: Token | None, now: float | None = None) -> str:
        """A cookie value for a login with ``token`` (None: the open, tokenless mode)."""
        payload = {
            "f": None if token is None else fingerprint(token.secret),
            "n": secrets.token_hex(16),
            "e": int((time.time() if now is None else now) + SESSION_TTL),
        }
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{self._sign(body.encode())}"

    def verify(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session of a cookie value, or None (missing, forged, expired, token removed)."""
        if not cookie or cookie.count(".") != 1:
            return None
        body, signature = cookie.split(".")
        if not hmac.compare_digest(self._sign(body.encode()), signature):
            return None
        try:
            payload = cast("dict[str, Any]", json.loads(_unb64(body)))
        except ValueError:
            return None
        if int(payload.get("e", 0)) < (time.time() if now is None else now):
            return None
        nonce = str(payload.get("n", ""))
        found = payload.get("f")
        if found is None:
            if not self.open:
                return None
            return Session("anonymous", nonce, admin=True, scopes=("admin",))
        matches = [t for t in self._tokens if hmac.compare_digest(fingerprint(t.secret), found)]
        if not matches:
            return None
        token = matches[0]
        scopes = tuple(s for s in ("produce", "work", "admin") if s in token.scopes)
        return Session(token.name or "token", nonce, admin=token.allows("admin"), scopes=scopes)  # type: ignore[arg-type]

    def csrf_token(self, session: Session) -> str:
        """The CSRF token of ``session`` (put in every form's hidden ``csrf`` field)."""
        return self._sign(b"csrf\0" + session.nonce.encode())

    def check_csrf(self, session: Session, presented: str | None) -> bool:
        """Whether ``presented`` is ``session``'s CSRF token."""
        return bool(presented) and hmac.compare_digest(self.csrf_token(session), str(presented))
