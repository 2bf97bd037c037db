"""``taquba top``: a live terminal view of a database's queues, refreshed every N seconds.

It reads like `taquba inspect` (a `QueueReader`, safe next to the owner, or a taquba-server)
and draws with rich, from the ``taquba[cli]`` extra: on a terminal one table redrawn in
place (`rich.live.Live`, refreshed by this loop, not by rich's own thread), elsewhere (a pipe,
a log) one table per refresh. Rates are the change of a counter between two refreshes.
Ctrl-C ends it promptly with exit status 0 (`_cli` treats SIGINT as its normal end); with
``--json`` it prints one snapshot and exits.
"""

from __future__ import annotations

import importlib
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import trio

from taquba._cli_session import EXIT_OK, CliError, stats_json

if TYPE_CHECKING:
    import argparse

    from taquba._cli_session import CliSession
    from taquba._records import QueueStats

__all__ = ["top"]

_COLUMNS: Final = ("pending", "scheduled", "claimed", "done", "dead", "quarantined")


def _rich() -> tuple[Any, Any, Any]:
    """Rich's ``Console``, ``Live`` and ``Table``; `CliError` naming the extra if missing."""
    try:
        console = importlib.import_module("rich.console")
        live = importlib.import_module("rich.live")
        table = importlib.import_module("rich.table")
    except ImportError:
        raise CliError(
            "`taquba top` draws with rich: install it with the cli extra "
            '(pip install "taquba[cli]")'
        ) from None
    return console.Console, live.Live, table.Table


def _render(
    table_type: Any,
    title: str,
    stats: list[QueueStats],
    previous: dict[str, QueueStats],
    elapsed: float | None,
) -> Any:
    table = table_type(title=title, title_justify="left")
    table.add_column("queue_name", min_width=len("queue_name"), no_wrap=True)
    for column in (*_COLUMNS, "done/s", "dead/s"):
        table.add_column(column, justify="right", min_width=len(column), no_wrap=True)
    for s in stats:
        before = previous.get(s.queue_name)
        rates = ["-", "-"]
        if before is not None and elapsed:
            rates = [
                f"{(s.done - before.done) / elapsed:.1f}",
                f"{(s.dead - before.dead) / elapsed:.1f}",
            ]
        table.add_row(s.queue_name, *(str(getattr(s, c)) for c in _COLUMNS), *rates)
    if not stats:
        table.caption = "no queues yet"
    return table


async def top(args: argparse.Namespace, session: CliSession) -> int:
    """``taquba top [--interval S]``: until Ctrl-C."""
    interval: float = args.interval
    if session.json:
        async with session.open_reader() as reader:
            names = await reader.list_queues()
            stats = [await reader.stats(name) for name in names]
            session.emit(
                {
                    **session.where_json(),
                    "database": reader.name,
                    "queues": [stats_json(s) for s in stats],
                }
            )
        return EXIT_OK
    console_type, live_type, table_type = _rich()
    console = console_type(file=session.out, highlight=False)
    if not console.is_terminal:  # a pipe or a log: no width to fit, so do not truncate
        console = console_type(file=session.out, highlight=False, width=160)
    previous: dict[str, QueueStats] = {}
    last: float | None = None
    async with session.open_reader() as reader:
        live = live_type(console=console, auto_refresh=False) if console.is_terminal else None
        if live is not None:
            live.start()
        try:
            while True:
                names = await reader.list_queues()
                stats = [await reader.stats(name) for name in names]
                now = time.monotonic()
                stamp = datetime.now().astimezone().strftime("%H:%M:%S")
                title = (
                    f"taquba top: {reader.name} at {stamp} (every {interval:g} s; Ctrl-C to quit)"
                )
                elapsed = None if last is None else now - last
                table = _render(table_type, title, stats, previous, elapsed)
                if live is not None:
                    live.update(table, refresh=True)
                else:
                    console.print(table)
                    session.out.flush()
                previous = {s.queue_name: s for s in stats}
                last = now
                await trio.sleep(interval)
        finally:
            if live is not None:
                live.stop()
