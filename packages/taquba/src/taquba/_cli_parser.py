"""The ``taquba`` command line: its argument parser (commands, options and help texts).

`_cli.py` runs what the parser describes; keeping the parser apart keeps the help texts,
which are most of it, out of the way of the code that opens stores and prints tables.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Final

from taquba import JobStatus, __version__
from taquba._demo import CHILD_COMMAND, DEFAULT_DB, DEFAULT_STORE

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["build_parser"]

_WRITER_NOTE: Final = (
    "It opens the store as its writer. It first reads the store's owner record: while a live "
    "owner (a running app, demo or taquba-server) holds the store, it refuses and names it, "
    "instead of fencing it; stop the owner, or run the command through it with --server URL. "
    "--force opens the store anyway, which fences the owner: it stops with taquba.Fenced and "
    "must be restarted. It changes only the jobs it is asked to: no claim recovery, lease "
    "reaping, promotion or retention sweep runs."
)

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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``taquba`` command."""
    parser = argparse.ArgumentParser(
        prog="taquba",
        description=(
            "taquba: a durable task queue whose only state lives in object storage. Start "
            "with `taquba demo`. `inspect`, `jobs` and `dead list` only read the store and are "
            "safe next to a running app; `dead requeue` and `dead purge` open it as its writer "
            "and refuse while a live owner holds it. With --server URL (or TAQUBA_SERVER) every "
            "admin command acts through that taquba-server's HTTP API instead of the store."
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
        help=f"the queue database inside the store (default: {DEFAULT_DB})",
    )

    admin = argparse.ArgumentParser(add_help=False, parents=[where])
    admin.add_argument(
        "--server",
        metavar="URL",
        default=None,
        help=(
            "act through the HTTP API of the taquba-server at URL instead of opening the store "
            "(default: $TAQUBA_SERVER); --store and --db are then ignored"
        ),
    )
    admin.add_argument(
        "--token",
        metavar="TOKEN",
        default=None,
        help="the bearer token for --server (default: $TAQUBA_TOKEN)",
    )

    writer = argparse.ArgumentParser(add_help=False, parents=[admin])
    writer.add_argument(
        "--force",
        action="store_true",
        help=(
            "open the store even while a live owner holds it: the owner is fenced (it stops "
            "with taquba.Fenced and must be restarted)"
        ),
    )

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

    inspect = commands.add_parser(
        "inspect",
        parents=[admin],
        help="list the queues of a database with their counters",
        description="List every queue of the database with its counters. " + _READER_NOTE,
    )
    del inspect

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
    dead_list = dead_actions.add_parser(
        "list",
        parents=[admin],
        help="list dead jobs with their last error",
        description="List the dead jobs of QUEUE, oldest id first. " + _READER_NOTE,
    )
    dead_list.add_argument("queue", metavar="QUEUE", help="the queue name")
    dead_list.add_argument(
        "--limit",
        type=_bounded_int(1, 100_000),
        default=20,
        metavar="N",
        help="show at most N jobs (default: 20)",
    )
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
    purge = dead_actions.add_parser(
        "purge",
        parents=[writer],
        help="delete every dead job of a queue",
        description=(
            "Delete every dead job of QUEUE for good (the dead counter drops to 0). " + _WRITER_NOTE
        ),
    )
    purge.add_argument("queue", metavar="QUEUE", help="the queue name")

    jobs = commands.add_parser(
        "jobs",
        parents=[admin],
        help="list the jobs of a queue in one status",
        description=(
            "List jobs of QUEUE in one status. Claimed jobs are those a running worker holds "
            "(or held when its process died: the next writer to open the store recovers "
            "them). Done jobs are listed only if the queue keeps them (keep_done). " + _READER_NOTE
        ),
    )
    jobs.add_argument("queue", metavar="QUEUE", help="the queue name")
    jobs.add_argument(
        "--status",
        choices=[status.value for status in JobStatus],
        default=JobStatus.PENDING.value,
        help="which jobs to list (default: pending)",
    )
    jobs.add_argument(
        "--limit",
        type=_bounded_int(1, 100_000),
        default=20,
        metavar="N",
        help="show at most N jobs (default: 20)",
    )

    commands.add_parser(
        "serve",
        help="run taquba-server (when installed): `taquba serve --help`",
        description="Run taquba-server, the owning process with an HTTP API (if installed).",
        add_help=False,
    )

    # The crash-recovery phase of the demo runs this in a second process; not for users.
    child = commands.add_parser(CHILD_COMMAND, parents=[where])
    child.add_argument("--count", type=_bounded_int(1, 100_000), required=True)
    return parser
