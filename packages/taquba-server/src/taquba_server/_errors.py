"""The errors of taquba-server.

::

    taquba.TaqubaError
    └── ServerError                 base of this distribution's errors
        ├── InsecureBind            a non-loopback address without a token (also a UsageError)
        └── InvalidTokens           a tokens file or TAQUBA_SERVER_TOKENS that cannot be read
                                    (also a UsageError)
"""

from __future__ import annotations

import taquba

__all__ = ["InsecureBind", "InvalidTokens", "ServerError"]


class ServerError(taquba.TaqubaError):
    """Base class of the errors taquba-server raises."""


class InsecureBind(ServerError, taquba.UsageError):
    """The server was asked to listen on a non-loopback address with no token configured.

    Without tokens every request is allowed, so such a server may listen on a loopback address
    only. Configure tokens (``tokens=``, ``--tokens-file`` or ``TAQUBA_SERVER_TOKENS``) or
    listen on ``127.0.0.1`` / ``::1``.
    """

    def __init__(self, host: str) -> None:
        """Library-internal."""
        super().__init__(
            f"refusing to listen on {host!r} without a token: every request would be allowed; "
            "configure tokens (--tokens-file or TAQUBA_SERVER_TOKENS) or listen on 127.0.0.1"
        )
        self.host = host
        """The address that was refused."""


class InvalidTokens(ServerError, taquba.UsageError):
    """A token definition (file or environment variable) that cannot be used."""
