"""taquba-server: a taquba queue's owner process as an HTTP service.

Producers, remote workers and operators reach the queue over HTTP (wire protocol v1, JSON or
MessagePack): the server holds the open `taquba.Queue`, the only writer of its store, and hands
out claims whose renewals and settlements go through the same queue calls as in-process ones.

    async with taquba.open_queue("file:///var/lib/app/queue") as queue:
        server = taquba_server.Server(queue, port=8700, tokens=taquba_server.load_tokens(path))
        async with trio.open_nursery() as nursery:
            url = await nursery.start(server.serve)   # until server.shutdown()

Or from the shell: ``taquba-server --store file:///var/lib/app/queue``. Embed the API in
another ASGI setup with `create_app`.
"""

from importlib.metadata import version as _version

from taquba import fixup_module_metadata as _taquba_fixup

from ._app import DEFAULT_MAX_BODY_SIZE as DEFAULT_MAX_BODY_SIZE
from ._app import create_app as create_app
from ._auth import SCOPES as SCOPES
from ._auth import Scope as Scope
from ._auth import Token as Token
from ._auth import load_tokens as load_tokens
from ._auth import parse_tokens as parse_tokens
from ._errors import InsecureBind as InsecureBind
from ._errors import InvalidTokens as InvalidTokens
from ._errors import ServerError as ServerError
from ._server import DEFAULT_PORT as DEFAULT_PORT
from ._server import Server as Server

__version__: str = _version("taquba-server")
"""The installed version of the `taquba-server` distribution."""

# The order of the reference page: the main types, then constants, then the errors.
__all__ = [  # noqa: RUF022 - grouped by topic, not sorted
    "Server",
    "create_app",
    "Token",
    "Scope",
    "load_tokens",
    "parse_tokens",
    "SCOPES",
    "DEFAULT_PORT",
    "DEFAULT_MAX_BODY_SIZE",
    "ServerError",
    "InsecureBind",
    "InvalidTokens",
    "__version__",
]

_taquba_fixup(__name__, globals())
