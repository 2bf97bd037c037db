"""``taquba cron list | pause NAME | resume NAME``: the schedules' stored state, from the CLI.

A plugin of the ``taquba`` command (entry-point group ``taquba.cli``, see `taquba.cli`): the
core never imports taquba-cron. Schedules live in the application's code, so the command sees
only what a `Scheduler` stores in the queue's user KV (`STATE_KEY_PREFIX`): the schedules that
have run at least once. ``pause`` and ``resume`` change that record exactly as
`Scheduler.pause` and `Scheduler.resume` do (a compare-and-set, retried on a race), so every
scheduler of the queue, running or started later, honours them. They work on the store
directly (refused while a live owner holds it) or through a taquba-server with ``--server``,
over its user-KV endpoints.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from taquba import UsageError

from ._errors import CorruptState
from ._policy import State
from ._scheduler import STATE_KEY_PREFIX, state_key

if TYPE_CHECKING:
    import argparse

    from taquba.cli import CliCommands, CliReader, CliSession

__all__ = ["register"]


def register(commands: CliCommands) -> None:
    """Add ``taquba cron`` to the ``taquba`` command (the ``taquba.cli`` entry point)."""
    cron = commands.add_command(
        "cron",
        help="list, pause or resume cron schedules (taquba-cron)",
        description=(
            "The stored state of taquba-cron schedules: the schedules a Scheduler has run at "
            "least once (schedules are defined in the application's code). pause and resume "
            "act as Scheduler.pause and Scheduler.resume: durable, for every scheduler of the "
            "database."
        ),
    )
    actions = cron.add_subparsers(dest="action", metavar="ACTION", title="actions", required=True)
    listing = actions.add_parser(
        "list",
        parents=[commands.reader_options],
        help="list the schedules with their state",
        description="List every schedule with stored state: paused or not, last fire time.",
    )
    commands.set_handler(listing, list_schedules)
    for action, doc in (
        ("pause", "pause schedule NAME: it enqueues nothing until resumed"),
        ("resume", "resume schedule NAME from its next fire time after now (missed ones skip)"),
    ):
        parser = actions.add_parser(
            action, parents=[commands.writer_options], help=doc, description=doc + "."
        )
        parser.add_argument("name", metavar="NAME", help="the schedule's name")
        commands.set_handler(parser, pause_schedule if action == "pause" else resume_schedule)


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


async def _states(reader: CliReader) -> list[tuple[str, State | None, str | None]]:
    found: list[tuple[str, State | None, str | None]] = []
    cursor: bytes | None = None
    while True:
        page = await reader.kv_scan(STATE_KEY_PREFIX, cursor=cursor, limit=100)
        for key, raw in page.entries:
            name = key[len(STATE_KEY_PREFIX) :].decode("utf-8", "replace")
            try:
                found.append((name, State.decode(name, raw), None))
            except CorruptState as exc:
                found.append((name, None, str(exc)))
        cursor = page.next_cursor
        if cursor is None:
            return found


async def list_schedules(args: argparse.Namespace, session: CliSession) -> int:
    """``taquba cron list``."""
    del args
    async with session.open_reader() as reader:
        states = await _states(reader)
    if session.json:
        schedules: list[dict[str, Any]] = []
        for name, state, error in states:
            schedules.append(
                {
                    "name": name,
                    "paused": None if state is None else state.paused,
                    "last_fire": None if state is None else state.last,
                    "handled_through": None if state is None else state.through,
                    "buffered_fire": None if state is None else state.buffered,
                    "job_id": None if state is None else state.job,
                    "error": error,
                }
            )
        session.emit({"schedules": schedules})
        return 0
    if not states:
        session.say("no schedule has stored state yet (a Scheduler stores it when it first runs)")
        return 0
    width = max(len("name"), *(len(name) for name, _, _ in states))
    session.say(f"{'name':<{width}}  {'state':<7}  last fire (UTC)")
    for name, state, error in states:
        if state is None:
            session.say(f"{name:<{width}}  {'corrupt':<7}  {error}")
            continue
        shown = "paused" if state.paused else "active"
        session.say(f"{name:<{width}}  {shown:<7}  {_iso(state.last) or '-'}")
    return 0


async def pause_schedule(args: argparse.Namespace, session: CliSession) -> int:
    """``taquba cron pause NAME``."""
    return await _set_paused(session, args.name, paused=True)


async def resume_schedule(args: argparse.Namespace, session: CliSession) -> int:
    """``taquba cron resume NAME``."""
    return await _set_paused(session, args.name, paused=False)


async def _set_paused(session: CliSession, name: str, *, paused: bool) -> int:
    key = state_key(name)
    verb = "paused" if paused else "resumed"
    async with session.open_writer() as queue:
        while True:
            raw = await queue.kv_get(key)
            if raw is None:
                known = ", ".join(n for n, _, _ in await _states(queue)) or "none"
                raise UsageError(
                    f"no stored state for a schedule {name!r} (schedules with state: {known}); "
                    "a Scheduler stores it when it first runs"
                )
            state = State.decode(name, raw)
            if state.paused == paused:
                changed = False
                break
            now = round(time.time() * 1000)
            through = state.through if paused else max(state.through, now)
            new = dataclasses.replace(state, through=through, paused=paused)
            if await queue.kv_compare_and_set(key, raw, new.encode()):
                changed = True
                break
    session.emit({"name": name, "paused": paused, "changed": changed})
    session.say(f"schedule {name!r} {verb}" if changed else f"schedule {name!r} was already {verb}")
    return 0
