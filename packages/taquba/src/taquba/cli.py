"""Extending the ``taquba`` command: plugins add commands through an entry point.

A distribution adds commands to ``taquba`` by naming a function in the entry-point group
``taquba.cli`` of its pyproject::

    [project.entry-points."taquba.cli"]
    cron = "taquba_cron._cli:register"

``register(commands: CliCommands) -> None`` adds its command with `CliCommands.add_command`
and a handler per action with `CliCommands.set_handler`. A handler is
``async def handler(args, session: CliSession) -> int``: it opens what it works on with
`CliSession.open_reader` (read-only, safe next to a live owner) or `CliSession.open_writer`
(the owner check first; both act through a taquba-server with ``--server URL``), prints with
`CliSession.say` (text) and `CliSession.emit` (the one JSON document of ``--json``), and
returns the exit status. A plugin that fails to load is reported on stderr and skipped.
"""

from typing import TypeAlias as _TypeAlias

from . import fixup_module_metadata as _fixup_module_metadata
from ._cli_session import CliCommands as CliCommands
from ._cli_session import CliReader as CliReader
from ._cli_session import CliSession as CliSession
from ._cli_session import CliWriter as CliWriter
from ._cli_session import CommandHandler as _CommandHandler
from ._cli_session import attempt_json as attempt_json
from ._cli_session import job_json as job_json

CommandHandler: _TypeAlias = _CommandHandler
"""A command's handler, ``async def handler(args, session) -> int`` (the exit status)."""

__all__ = [
    "CliCommands",
    "CliReader",
    "CliSession",
    "CliWriter",
    "CommandHandler",
    "attempt_json",
    "job_json",
]

_fixup_module_metadata(__name__, globals())
