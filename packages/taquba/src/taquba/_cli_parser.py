"""The ``taquba`` command line: its argument parser (commands, options and help texts).

`_cli.py` runs what the parser describes; keeping the parser apart keeps the help texts,
which are most of it, out of the way of the code that opens stores and prints tables.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Final

from taquba import JobStatus, __version__
from taquba._cli_commands import (
    cancel_job,
    dead_list,
    dead_purge,
    dead_requeue,
    enqueue,
    inspect,
    jobs,
    payloads_collect,
    purge,
    show_job,
    wake_job,
)
from taquba._cli_session import CliCommands
from taquba._cli_top import top
from taquba._demo import CHILD_COMMAND, DEFAULT_DB, DEFAULT_STORE

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["PLUGIN_GROUP", "build_parser"]

PLUGIN_GROUP: Final = "taquba.cli"
"""The entry-point group whose functions add commands (`taquba.cli.CliCommands`)."""

_OWNER_CHECK: Final = (
    "It opens the store as its writer. It first reads the store's owner record: while a live "
    "owner (a running app, demo or taquba-server) holds the store, it refuses and names it, "
    "instead of fencing it; "
)

_FORCE_NOTE: Final = (
    "--force opens the store anyway, which fences the owner: it stops with taquba.Fenced and "
    "must be restarted. It changes only the jobs it is asked to: no claim recovery, lease "
    "reaping, promotion or retention sweep runs."
)

_WRITER_NOTE: Final = (
    _OWNER_CHECK + "stop the owner, or run the command through it with --server URL. " + _FORCE_NOTE
)

_STORE_WRITER_NOTE: Final = _OWNER_CHECK + "stop the owner first. " + _FORCE_NOTE
"""`_WRITER_NOTE` for a writer command that never acts through a server."""

_READER_NOTE: Final = (
    "It only reads the store, so it is safe while a running app or demo uses it; it shows "
    "what that writer has made durable, up to about a second late."
)


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, not {value}")
        return value

    return parse


def _admin_options(
    parser: argparse.ArgumentParser, *, remote: bool = True
) -> argparse.ArgumentParser:
    """``parser`` with the admin commands' ``--server``, ``--token`` and ``--json``.

    ``remote=False``: a command that never acts through a server (it refuses one), so
    ``--server`` and ``--token`` are left out of its help.
    """
    parser.add_argument(
        "--server",
        metavar="URL",
        default=None,
        help=(
            "act through the HTTP API of the taquba-server at URL instead of opening the store "
            "(default: $TAQUBA_SERVER); --store and --db are then ignored"
        )
        if remote
        else argparse.SUPPRESS,
    )
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        default=None,
        help="the bearer token for --server (default: $TAQUBA_TOKEN)"
        if remote
        else argparse.SUPPRESS,
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document (stable keys; jobs as in the HTTP API) instead of text",
    )
    return parser


def _add_force(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force",
        action="store_true",
        help=(
            "open the store even while a live owner holds it: the owner is fenced (it stops "
            "with taquba.Fenced and must be restarted)"
        ),
    )


def build_parser(plugins: Iterable[EntryPoint] | None = None) -> argparse.ArgumentParser:
    """The argument parser of the ``taquba`` command, with the plugins' commands.

    Args:
        plugins: the entry points to load commands from (default: the group `PLUGIN_GROUP`).
            A plugin that fails to load or to register is reported on stderr and skipped.
    """
    parser = argparse.ArgumentParser(
        prog="taquba",
        description=(
            "taquba: a durable task queue whose only state lives in object storage. Start "
            "with `taquba demo`. `inspect`, `jobs`, `job show`, `dead list` and `top` only read "
            "the store and are safe next to a running app; `job cancel`, `dead requeue`, `dead "
            "purge`, `purge` and `enqueue` open it as its writer and refuse while a live owner "
            "holds it. With --server URL (or TAQUBA_SERVER) every admin command but `payloads "
            "collect` acts through that taquba-server's HTTP API instead of the store (a "
            "server's owner collects payloads by itself); with --json it prints one JSON "
            "document. Installed distributions add commands (entry-point group taquba.cli)."
        ),
        epilog="Exit status: 0 success, 1 run-time failure, 2 bad input.",
    )
    parser.add_argument("--version", action="version", version=f"taquba {__version__}")
    # Also accepted before the command (`taquba --server URL dead list q`); the command's own
    # option wins, then this one, then the environment (resolved in `_cli`).
    parser.add_argument(
        "--server",
        dest="global_server",
        metavar="URL",
        default=None,
        help="act through the taquba-server at URL (default: $TAQUBA_SERVER); see each command",
    )
    parser.add_argument(
        "--token",
        dest="global_token",
        metavar="TOKEN",
        default=None,
        help="the bearer token for --server (default: $TAQUBA_TOKEN)",
    )
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", title="commands", required=True
    )

    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--store",
        metavar="URL",
        default=None,
        help=(
            f"the store: a directory, file:///abs/dir or s3://bucket/prefix "
            f"(default: ./{DEFAULT_STORE}, the demo's)"
        ),
    )
    where.add_argument(
        "--db",
        metavar="NAME",
        default=DEFAULT_DB,
        help=(
            f"the queue database inside the store (default: {DEFAULT_DB}, as "
            "taquba.open_queue's and the demo's)"
        ),
    )

    admin = _admin_options(argparse.ArgumentParser(add_help=False, parents=[where]))
    writer = argparse.ArgumentParser(add_help=False, parents=[admin])
    _add_force(writer)
    # A writer that needs the store: --server is parsed (so that it, like $TAQUBA_SERVER, is
    # refused with the reason) but not offered in its help.
    store_writer = _admin_options(
        argparse.ArgumentParser(add_help=False, parents=[where]), remote=False
    )
    _add_force(store_writer)

    demo = commands.add_parser(
        "demo",
        parents=[where],
        help="run the self-explaining demo (the project's main job)",
        description=(
            "Run a narrated tour of taquba on a local-disk store: enqueue a batch of jobs, "
            "serve them with live progress (retries, dead letters, scheduled and urgent jobs), "
            "kill a worker process with SIGKILL while it holds claims and recover them, then "
            "summarise. The demo database is wiped first unless --keep is given."
        ),
    )
    demo.add_argument(
        "--jobs",
        type=_bounded_int(10, 100_000),
        default=300,
        metavar="N",
        help="how many document jobs to enqueue (default: 300)",
    )
    demo.add_argument(
        "--workers",
        type=_bounded_int(1, 256),
        default=8,
        metavar="N",
        help="how many jobs the workers handle at once (default: 8)",
    )
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep what the demo database already holds instead of wiping it",
    )

    inspect_parser = commands.add_parser(
        "inspect",
        parents=[admin],
        help="list the queues of a database with their counters",
        description="List every queue of the database with its counters. " + _READER_NOTE,
    )
    CliCommands.set_handler(inspect_parser, inspect)

    dead = commands.add_parser(
        "dead",
        help="list, requeue or purge dead-lettered jobs",
        description=(
            "Administer the dead-letter inbox of a queue: `list` only reads the store, "
            "`requeue` and `purge` open it as its writer."
        ),
    )
    dead_actions = dead.add_subparsers(
        dest="action", metavar="ACTION", title="actions", required=True
    )
    dead_list_parser = dead_actions.add_parser(
        "list",
        parents=[admin],
        help="list dead jobs with their last error",
        description="List the dead jobs of QUEUE, oldest id first. " + _READER_NOTE,
    )
    dead_list_parser.add_argument("queue", metavar="QUEUE", help="the queue name")
    dead_list_parser.add_argument(
        "--limit",
        type=_bounded_int(1, 100_000),
        default=20,
        metavar="N",
        help="show at most N jobs (default: 20)",
    )
    CliCommands.set_handler(dead_list_parser, dead_list)
    requeue = dead_actions.add_parser(
        "requeue",
        parents=[writer],
        help="make dead jobs pending again, attempts reset",
        description=(
            "Revive dead jobs of QUEUE as pending, with their attempts reset; they run when a "
            "worker next serves QUEUE. " + _WRITER_NOTE
        ),
    )
    requeue.add_argument("queue", metavar="QUEUE", help="the queue name")
    which = requeue.add_mutually_exclusive_group(required=True)
    which.add_argument("job_id", metavar="JOB_ID", nargs="?", help="the dead job to requeue")
    which.add_argument("--all", action="store_true", help="requeue every dead job of QUEUE")
    CliCommands.set_handler(requeue, dead_requeue)
    dead_purge_parser = dead_actions.add_parser(
        "purge",
        parents=[writer],
        help="delete every dead job of a queue",
        description=(
            "Delete every dead job of QUEUE for good (the dead counter drops to 0), without "
            "asking (as `taquba purge QUEUE --dead --yes`). " + _WRITER_NOTE
        ),
    )
    dead_purge_parser.add_argument("queue", metavar="QUEUE", help="the queue name")
    dead_purge_parser.add_argument("--yes", action="store_true", help="accepted; it never asks")
    CliCommands.set_handler(dead_purge_parser, dead_purge)

    jobs_parser = commands.add_parser(
        "jobs",
        parents=[admin],
        help="list the jobs of a queue in one status",
        description=(
            "List jobs of QUEUE in one status. Claimed jobs are those a running worker holds "
            "(or held when its process died: the next writer to open the store recovers "
            "them). Done jobs are listed only if the queue keeps them (keep_done). " + _READER_NOTE
        ),
    )
    jobs_parser.add_argument("queue", metavar="QUEUE", help="the queue name")
    jobs_parser.add_argument(
        "--status",
        choices=[status.value for status in JobStatus],
        default=JobStatus.PENDING.value,
        help="which jobs to list (default: pending)",
    )
    jobs_parser.add_argument(
        "--limit",
        type=_bounded_int(1, 100_000),
        default=20,
        metavar="N",
        help="show at most N jobs (default: 20)",
    )
    CliCommands.set_handler(jobs_parser, jobs)
    _add_job(commands, admin, writer)
    _add_purge(commands, writer)
    _add_payloads(commands, store_writer)
    _add_enqueue(commands, writer)
    _add_top(commands, admin)

    commands.add_parser(
        "serve",
        help="run taquba-server (when installed): `taquba serve --help`",
        description="Run taquba-server, the owning process with an HTTP API (if installed).",
        add_help=False,
    )

    # The crash-recovery phase of the demo runs this in a second process; not for users.
    child = commands.add_parser(CHILD_COMMAND, parents=[where])
    child.add_argument("--count", type=_bounded_int(1, 100_000), required=True)
    _load_plugins(CliCommands(commands, admin, writer), plugins)
    return parser


def _load_plugins(commands: CliCommands, plugins: Iterable[EntryPoint] | None) -> None:
    found = entry_points(group=PLUGIN_GROUP) if plugins is None else plugins
    for plugin in sorted(found, key=lambda entry: entry.name):
        try:
            register = plugin.load()
            register(commands)
        except Exception as exc:
            sys.stderr.write(
                f"taquba: warning: the command plugin {plugin.name!r} ({plugin.value}) "
                f"failed to load and is skipped: {type(exc).__name__}: {exc}\n"
            )


def _add_job(
    commands: Any, admin: argparse.ArgumentParser, writer: argparse.ArgumentParser
) -> None:
    job = commands.add_parser(
        "job",
        help="show, cancel or wake one job",
        description=(
            "Show one job's record and attempt history (`show` only reads), cancel it or wake "
            "it (`cancel` and `wake` write)."
        ),
    )
    actions = job.add_subparsers(dest="action", metavar="ACTION", title="actions", required=True)
    show = actions.add_parser(
        "show",
        parents=[admin],
        help="print one job's whole record",
        description=(
            "Print the record of JOB_ID in any status: its fields, headers and payload (as "
            "text, or in hex when it is not text; in base64 with --json), then its attempt "
            "history (how each attempt ended). " + _READER_NOTE
        ),
    )
    show.add_argument("job_id", metavar="JOB_ID", help="the job id")
    CliCommands.set_handler(show, show_job)
    cancel = actions.add_parser(
        "cancel",
        parents=[writer],
        help="cancel a pending, scheduled or claimed job",
        description=(
            "Cancel JOB_ID: a pending or scheduled job is deleted; a claimed job is marked and "
            "its handler's cancel signal fires (the handler decides how to stop). Exit status "
            "1 when no such job is pending, scheduled or claimed. " + _WRITER_NOTE
        ),
    )
    cancel.add_argument("job_id", metavar="JOB_ID", help="the job id")
    CliCommands.set_handler(cancel, cancel_job)
    wake = actions.add_parser(
        "wake",
        parents=[writer],
        help="make a scheduled job due now, optionally with a payload",
        description=(
            "Wake the scheduled job JOB_ID: it becomes pending at once, and PAYLOAD (UTF-8 "
            "text), if given, is stored on its record as its wake payload, which every later "
            "delivery sees. Exit status 1 when the job is not scheduled or does not exist. "
            + _WRITER_NOTE
        ),
    )
    wake.add_argument("job_id", metavar="JOB_ID", help="the job id")
    wake.add_argument("payload", metavar="PAYLOAD", nargs="?", help="the wake payload (text)")
    CliCommands.set_handler(wake, wake_job)


def _add_purge(commands: Any, writer: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "purge",
        parents=[writer],
        help="delete a queue's dead letters or kept done records",
        description=(
            "Delete every dead job (--dead) or every kept done record (--done) of QUEUE for "
            "good, after asking on stderr and reading the answer from stdin (y to go on; "
            "anything else, or the end of input, exits 1 with nothing deleted); --yes does "
            "not ask. " + _WRITER_NOTE
        ),
    )
    parser.add_argument("queue", metavar="QUEUE", help="the queue name")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--dead", action="store_true", help="the dead-letter inbox")
    which.add_argument("--done", action="store_true", help="the kept done records")
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    CliCommands.set_handler(parser, purge)


def _add_payloads(commands: Any, writer: argparse.ArgumentParser) -> None:
    payloads = commands.add_parser(
        "payloads",
        help="collect orphaned offloaded payload objects",
        description=(
            "Administer the objects of offloaded payloads (QueueConfig.payload_offload_threshold)."
        ),
    )
    actions = payloads.add_subparsers(
        dest="action", metavar="ACTION", title="actions", required=True
    )
    collect = actions.add_parser(
        "collect",
        parents=[writer],
        help="delete payload objects no job references",
        description=(
            "Delete the payload objects older than --grace that no job record references, in "
            "any status (orphans left by a crash between a job's removal and its object's "
            "delete), as Queue.collect_payloads_now. Objects whose names are not refs are left "
            "alone. A running owner (a taquba-server too) does this by itself every hour, so "
            "this command acts on the store only, never through a server: it refuses --server "
            "and $TAQUBA_SERVER. " + _STORE_WRITER_NOTE
        ),
    )
    collect.add_argument(
        "--grace",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help=(
            "keep objects younger than this (default: 3600); an enqueue writes its object "
            "before its transaction commits"
        ),
    )
    CliCommands.set_handler(collect, payloads_collect)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, not {text}")
    return value


def _add_enqueue(commands: Any, writer: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "enqueue",
        parents=[writer],
        help="add a job (for scripts)",
        description=(
            "Add a job to QUEUE with the payload PAYLOAD (its UTF-8 bytes), or the bytes of "
            "the file --file PATH (- reads stdin). Prints the job id (with --json: id, "
            "created, queue_name); a dedup hit prints the existing job's id. " + _WRITER_NOTE
        ),
    )
    parser.add_argument("queue", metavar="QUEUE", help="the queue name")
    parser.add_argument("payload", metavar="PAYLOAD", nargs="?", help="the payload as text")
    parser.add_argument("--file", metavar="PATH", help="read the payload from PATH (- for stdin)")
    parser.add_argument("--priority", type=int, metavar="N", help="lower runs first")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--delay", type=_seconds, metavar="S", help="run after S seconds")
    when.add_argument(
        "--run-at", metavar="TIME", help="run at TIME, ISO 8601 with a zone (2030-01-01T09:00Z)"
    )
    parser.add_argument("--dedup-key", metavar="KEY", help="skip if a waiting job holds KEY")
    parser.add_argument(
        "--header", action="append", metavar="KEY=VALUE", help="a header (repeatable)"
    )
    parser.add_argument("--max-attempts", type=_bounded_int(1, 1_000_000), metavar="N")
    parser.add_argument("--job-id", metavar="ID", help="use this job id")
    CliCommands.set_handler(parser, enqueue)


def _interval(text: str) -> float:
    value = _seconds(text)
    if value < 0.1:
        raise argparse.ArgumentTypeError(f"must be at least 0.1, not {text}")
    return value


def _add_top(commands: Any, admin: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "top",
        parents=[admin],
        help="a live view of the queues (needs taquba[cli])",
        description=(
            "Show every queue's counters, and the done and dead rates, refreshed every "
            "--interval seconds until Ctrl-C (exit status 0). It draws with rich (pip install "
            '"taquba[cli]"). With --json it prints one snapshot and exits. ' + _READER_NOTE
        ),
    )
    parser.add_argument(
        "--interval",
        "-n",
        type=_interval,
        default=2.0,
        metavar="S",
        help="seconds between refreshes (default: 2)",
    )
    CliCommands.set_handler(parser, top)
    parser.set_defaults(sigint_ends=True)
