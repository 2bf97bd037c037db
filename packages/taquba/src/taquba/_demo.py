"""`taquba demo`: a self-explaining run of the queue on a local-disk store.

The demo is the project's main job (``uv run taquba demo``). It narrates four phases:

1. enqueue a batch of "document" jobs (most succeed, some fail transiently, some are poison,
   some are scheduled a few seconds out, a few urgent ones jump the line);
2. serve them with a `taquba.Worker` under a live progress display;
3. crash recovery for real: a second process (started with ``python -m taquba _demo-child``,
   never forked) claims a batch of jobs and is killed with ``SIGKILL`` while it holds them;
   reopening the store recovers the claims, and the jobs are processed to done;
4. a summary: counts that add up, the dead-letter inbox, retries, and the commands to look
   around the store afterwards.

The demo checks its own invariants (no job lost, every killed claim recovered) and exits
non-zero if one fails. Only the public `taquba` API is used.

The console (narration, live progress) is in `_demo_console.py`, the workloads and their
handlers in `_demo_jobs.py`. What stays here, about 600 lines, is the run itself: the four
phases, the crash child and the helpers they share, kept in one file because they are one
script that reads top to bottom, in the order a user sees it.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from random import Random
from typing import TYPE_CHECKING, Final, TextIO
from urllib.parse import unquote, urlsplit

import trio

from taquba import (
    JobRecord,
    JobStatus,
    LeaseHandle,
    QueueConfig,
    QueueStats,
    Store,
    UsageError,
    Worker,
    open_queue,
)
from taquba._demo_console import Console, Progress
from taquba._demo_jobs import (
    DOCUMENTS,
    EXPORTS,
    Tracker,
    document_handler,
    export_handler,
    export_requests,
    parse_payload,
    plan_documents,
)
from taquba._store import DEFAULT_DATABASE

if TYPE_CHECKING:
    from collections import Counter
    from contextlib import AbstractAsyncContextManager

    from taquba import Handler, Queue

__all__ = [
    "CHILD_COMMAND",
    "DEFAULT_DB",
    "DEFAULT_STORE",
    "DemoError",
    "DemoOptions",
    "run_child",
    "run_demo",
]

DEFAULT_STORE: Final = ".taquba-demo"
"""Where the demo keeps its store by default (relative to the current directory)."""
DEFAULT_DB: Final = DEFAULT_DATABASE
"""The demo's database name inside the store: the library's default (`open_queue`)."""
CHILD_COMMAND: Final = "_demo-child"
"""The hidden subcommand the crash-recovery phase runs in a second process."""


_CONFIG: Final = QueueConfig(
    max_attempts=3,
    lease_duration=10.0,
    retry_backoff_base=0.2,
    retry_backoff_max=2.0,
    keep_done=3_600.0,  # keep done records an hour, so `taquba jobs ... --status done` shows them
)
_CHILD_LEASE: Final = 60.0  # the child's "long handlers": a lease far longer than the demo
_FLUSH_INTERVAL: Final = 0.01
_REAPER_INTERVAL: Final = 0.5
_SCHEDULER_INTERVAL: Final = 0.1
_POLL_INTERVAL: Final = 0.25
_SETTLE_DEADLINE: Final = 120.0
_CHILD_READY_DEADLINE: Final = 60.0
_CHILD_LIFETIME: Final = 90.0  # an orphaned child gives up on its own
_READY_PREFIX: Final = "HOLDING"
_ENQUEUE_CHUNK: Final = 100
_SEED: Final = 20_240_601


class DemoError(Exception):
    """The demo could not run, or one of its checks failed (exit status 1)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoOptions:
    """What `taquba demo` was asked to do."""

    store: str = DEFAULT_STORE
    """The store URL or directory."""
    db: str = DEFAULT_DB
    """The database name inside the store."""
    jobs: int = 300
    """How many document jobs to enqueue."""
    workers: int = 8
    """How many jobs the workers handle at once."""
    keep: bool = False
    """Keep what the store holds instead of wiping the demo database first."""
    store_is_default: bool = True
    """Whether ``store`` is the default (the printed follow-up commands then omit it)."""


# ------------------------------------------------------------------------------ helpers


def _open(
    store: Store, db: str, *, lease: float | None = None
) -> AbstractAsyncContextManager[Queue]:
    config = _CONFIG if lease is None else dataclasses.replace(_CONFIG, lease_duration=lease)
    return open_queue(
        store,
        db,
        config=config,
        flush_interval=_FLUSH_INTERVAL,
        reaper_interval=_REAPER_INTERVAL,
        scheduler_interval=_SCHEDULER_INTERVAL,
    )


def local_path(store: Store) -> str | None:
    """The directory of a file store, or None for other kinds."""
    if store.kind != "file":
        return None
    return unquote(urlsplit(store.url).path)


def _unsettled(stats: QueueStats) -> int:
    return stats.pending + stats.scheduled + stats.claimed


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _excerpt(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _attempt_summary(counts: Counter[int], *, skip_first: bool) -> str:
    parts = [
        f"{n} on attempt {attempt}"
        for attempt, n in sorted(counts.items())
        if not (skip_first and attempt == 1)
    ]
    return ", ".join(parts) if parts else "none"


async def _serve_until_settled(
    console: Console,
    queue: Queue,
    queue_name: str,
    handler: Handler,
    *,
    workers: int,
    total: int,
    base: QueueStats,
    tracker: Tracker,
) -> QueueStats:
    """Run workers on ``queue_name`` with a progress display until nothing is left to do."""
    progress = Progress(console, label=queue_name, total=total, base=base, tracker=tracker)
    worker = Worker(queue, queue_name, handler, concurrency=workers, poll_interval=_POLL_INTERVAL)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.serve)
        with trio.move_on_after(_SETTLE_DEADLINE) as deadline:
            while True:
                stats = await queue.stats(queue_name)
                progress.update(stats)
                if _unsettled(stats) == 0:
                    break
                await trio.sleep(progress.interval)
        # Nothing is pending, scheduled or claimed, so the worker is idle and its shutdown
        # returns at once. Past the deadline we give up: cancelling hands the jobs in flight
        # back with a nack.
        if deadline.cancelled_caught:
            nursery.cancel_scope.cancel()
        worker.shutdown()
    stats = await queue.stats(queue_name)
    progress.update(stats, final=True)
    if _unsettled(stats):
        raise DemoError(
            f"{_unsettled(stats)} jobs of {queue_name!r} were still unsettled after "
            f"{_SETTLE_DEADLINE:g} s"
        )
    return stats


def _commands(options: DemoOptions) -> list[str]:
    prefix = "uv run taquba" if "UV" in os.environ else "taquba"
    where = "" if options.store_is_default else f" --store {shlex.quote(options.store)}"
    if options.db != DEFAULT_DB:
        where += f" --db {shlex.quote(options.db)}"
    return [
        f"{prefix} inspect{where}",
        f"{prefix} dead list {DOCUMENTS}{where}",
        f"{prefix} jobs {DOCUMENTS} --status done --limit 5{where}",
        f"{prefix} dead requeue {DOCUMENTS} --all{where}",
    ]


# ------------------------------------------------------------------------------ the demo


@dataclass(slots=True)
class _Run:
    """State carried from phase to phase."""

    options: DemoOptions
    console: Console
    store: Store
    started: float = field(default_factory=time.monotonic)
    docs_base: QueueStats = field(default_factory=lambda: QueueStats(DOCUMENTS))
    exports_base: QueueStats = field(default_factory=lambda: QueueStats(EXPORTS))
    docs_expected: int = 0
    exports_expected: int = 0
    docs_tracker: Tracker = field(default_factory=Tracker)
    exports_tracker: Tracker = field(default_factory=Tracker)
    held: list[str] = field(default_factory=list[str])
    recovered: int = 0


async def run_demo(options: DemoOptions, stream: TextIO | None = None) -> int:
    """Run the demo; return the exit status (0, or 1 when a check failed).

    Raises:
        DemoError: the demo could not run (e.g. the crash-test child misbehaved).
        UsageError: the store cannot be used (`InvalidStoreUrl`, or ``memory://``, which a
            second process cannot open).
        TaqubaError: from the queue, e.g. `StorageUnavailable`.
    """
    console = Console(stream or sys.stdout)
    store = Store.from_url(options.store)
    if store.kind == "memory":
        raise UsageError(
            "the demo cannot use memory://: its crash-recovery phase opens the store from a "
            "second process, so use a directory or an s3:// URL"
        )
    run = _Run(options, console, store)
    _intro(run)
    await console.pause(1.0)
    async with _open(store, options.db) as queue:
        run.docs_base = await queue.stats(DOCUMENTS)
        run.exports_base = await queue.stats(EXPORTS)
        await _phase_enqueue(run, queue)
        await console.pause(1.5)
        await _phase_work(run, queue)
        await console.pause(1.0)
        await _phase_crash_prepare(run, queue)
    await _phase_crash_child(run)
    async with _open(store, options.db) as queue:
        await _phase_crash_recover(run, queue)
        await console.pause(1.0)
        return await _phase_summary(run, queue)


def _intro(run: _Run) -> None:
    c, options, store = run.console, run.options, run.store
    c.write(c.bold("taquba demo") + c.dim(" - a durable task queue whose only state is in storage"))
    c.say(
        f"Everything below lives in one SlateDB database, {options.db!r}, in the store "
        f"{store.url}. There is no server: this process is the queue's only writer, and a "
        "job counts as enqueued or finished only once storage has it."
    )
    path = local_path(store)
    if options.keep:
        c.say("--keep: starting from what the store already holds; counts below are this run's.")
    elif path is not None:
        db_dir = os.path.join(path, *store.db_path(options.db).split("/"))
        if os.path.isdir(db_dir):
            shutil.rmtree(db_dir)
            c.say(f"Wiped the previous demo database at {db_dir} (use --keep to keep it).")
    else:
        c.say(
            "This store is not on local disk, so it is not wiped: counts below are this "
            "run's, on top of what the store already holds."
        )


async def _phase_enqueue(run: _Run, queue: Queue) -> None:
    c, options = run.console, run.options
    plan = plan_documents(options.jobs, Random(_SEED))
    n = plan.counts
    c.heading(f"1. Enqueue {plan.total} document jobs on the queue {DOCUMENTS!r}")
    c.say(
        f"Each job is a JSON payload naming a document to process. Most ({n['ok']}) just "
        f"work. {n['flaky']} fail once or twice with a timeout and succeed on retry. "
        f"{n['unreachable']} keep failing until their {_CONFIG.max_attempts} attempts run out. "
        f"{n['corrupt']} are poison: the handler raises PermanentFailure and they go straight "
        f"to the dead-letter inbox. {n['scheduled']} are scheduled 3 to 8 seconds ahead. "
        f"{n['urgent']} urgent ones are enqueued last, at high priority."
    )
    t0 = time.monotonic()
    chunks = [
        plan.regular[i : i + _ENQUEUE_CHUNK] for i in range(0, len(plan.regular), _ENQUEUE_CHUNK)
    ]
    for chunk in chunks:
        await queue.enqueue_batch(chunk)
    await queue.enqueue_batch(plan.urgent)
    elapsed = time.monotonic() - t0
    stats = await queue.stats(DOCUMENTS)
    c.item(
        f"enqueued {plan.total} jobs in {len(chunks) + 1} batches, one durable transaction "
        f"each, in {_ms(elapsed)}"
    )
    c.item(f"stats: pending {stats.pending}, scheduled {stats.scheduled}")
    leftover = _unsettled(run.docs_base)
    if leftover:
        c.item(f"(plus {leftover} jobs left unsettled by an earlier run; they run too)")
    run.docs_expected = plan.total + leftover


async def _phase_work(run: _Run, queue: Queue) -> None:
    c, options = run.console, run.options
    c.heading(f"2. Serve them with {options.workers} concurrent workers")
    c.say(
        f"A taquba.Worker claims jobs in batches and runs up to {options.workers} at "
        "once; each outcome settles durably: done on return, a retry after a backoff "
        f"({_CONFIG.retry_backoff_base:g} s, then doubling) on an exception, dead on "
        "PermanentFailure or when attempts run out. Watch pending drain, scheduled rise as "
        "failures wait for their retry, and the scheduled jobs arrive a few seconds in."
    )
    await c.pause(1.0)
    stats = await _serve_until_settled(
        c,
        queue,
        DOCUMENTS,
        document_handler(run.docs_tracker),
        workers=options.workers,
        total=run.docs_expected,
        base=run.docs_base,
        tracker=run.docs_tracker,
    )
    positions = [
        index
        for index, scenario in enumerate(run.docs_tracker.first_starts, start=1)
        if scenario == "urgent"
    ]
    done = stats.done - run.docs_base.done
    dead = stats.dead - run.docs_base.dead
    c.item(f"settled: {done} done, {dead} dead, nothing pending, scheduled or claimed")
    if positions:
        c.item(
            f"the {len(positions)} urgent jobs, enqueued last, were among the first started: "
            f"positions {', '.join(str(p) for p in positions)} of "
            f"{len(run.docs_tracker.first_starts)}"
        )
    retried = _attempt_summary(run.docs_tracker.succeeded_on, skip_first=True)
    c.item(f"jobs that succeeded after a retry: {retried}")


async def _phase_crash_prepare(run: _Run, queue: Queue) -> None:
    c = run.console
    count = max(4, min(16, run.options.jobs // 20))
    c.heading("3. Crash recovery: kill a worker process while it holds claims")
    c.say(
        f"Claims are stored too, so they outlive the process that made them. We enqueue "
        f"{count} export jobs on the queue {EXPORTS!r} and close our queue (one writer per "
        "store). A second Python process then opens the store, claims every export job with "
        f"handlers that would run for minutes under a {_CHILD_LEASE:g} s lease, and tells us "
        "once the claims are in storage. We kill it with SIGKILL: no cleanup, no nack."
    )
    await queue.enqueue_batch(export_requests(count, Random(_SEED + 1)))
    stats = await queue.stats(EXPORTS)
    run.exports_expected = count + _unsettled(run.exports_base)
    c.item(f"enqueued {count} export jobs: pending {stats.pending}, claimed {stats.claimed}")


async def _read_line(stream: trio.abc.ReceiveStream, buffer: bytearray) -> str | None:
    while b"\n" not in buffer:
        chunk = await stream.receive_some()
        if not chunk:
            return None
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line.decode(errors="replace").strip()


async def _phase_crash_child(run: _Run) -> None:
    c = run.console
    command = [
        sys.executable,
        "-m",
        "taquba",
        CHILD_COMMAND,
        "--store",
        run.store.url,
        "--db",
        run.options.db,
        "--count",
        str(run.exports_expected),
    ]
    c.item(f"our queue is closed; starting: python -m taquba {CHILD_COMMAND} ...")
    t0 = time.monotonic()
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        buffer = bytearray()
        line: str | None = ""
        with trio.move_on_after(_CHILD_READY_DEADLINE):
            while line is not None and not line.startswith(_READY_PREFIX):
                line = await _read_line(process.stdout, buffer)
        if line is None or not line.startswith(_READY_PREFIX):
            code = process.poll()
            raise DemoError(
                "the crash-test child did not report its claims"
                + (f" (it exited with status {code})" if code is not None else " in time")
            )
        fields = line.split()
        run.held = fields[2].split(",") if len(fields) > 2 else []
        c.item(
            f"child process {process.pid} holds {len(run.held)} claims, durably, "
            f"{_ms(time.monotonic() - t0)} after it started"
        )
        if sys.platform == "win32":  # pragma: no cover - no SIGKILL on Windows
            process.kill()
        else:
            os.kill(process.pid, signal.SIGKILL)
        status = await process.wait()
        c.item(
            c.bad(f"killed it with SIGKILL (exit status {status})")
            + ": its claims are still in storage, marked claimed"
        )
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


async def _phase_crash_recover(run: _Run, queue: Queue) -> None:
    c, options = run.console, run.options
    held = set(run.held)
    stats = await queue.stats(EXPORTS)
    page = await queue.list_jobs(EXPORTS, JobStatus.PENDING, limit=max(len(held), 1) + 64)
    recovered = [job for job in page.jobs if job.id in held and job.attempts >= 1]
    run.recovered = len(recovered)
    c.say(
        "We reopened the store. Opening recovers every claim a dead process left behind, at "
        "once, without waiting for its lease to run out. Look for: claimed 0, and the jobs "
        "pending again, each already on its first attempt (the dead process's claim counted)."
    )
    c.item(f"after reopening: pending {stats.pending}, claimed {stats.claimed}")
    verdict = c.good("recovered") if run.recovered == len(held) and held else c.bad("recovered")
    used = "/".join(str(n) for n in sorted({job.attempts for job in recovered})) or "-"
    c.item(
        f"{verdict} {run.recovered} claims of the killed process (it held {len(held)}): "
        f"pending again, each with {used} attempt(s) already used"
    )
    c.say("Now a worker finishes them.")
    await _serve_until_settled(
        c,
        queue,
        EXPORTS,
        export_handler(run.exports_tracker),
        workers=options.workers,
        total=run.exports_expected,
        base=run.exports_base,
        tracker=run.exports_tracker,
    )
    c.item(
        "export jobs finished: "
        + _attempt_summary(run.exports_tracker.succeeded_on, skip_first=False)
    )


def _examples(jobs: list[JobRecord], count: int) -> list[JobRecord]:
    """Up to ``count`` jobs, covering every distinct ``last_error`` first."""
    by_error: dict[str | None, list[JobRecord]] = {}
    for job in jobs:
        by_error.setdefault(job.last_error, []).append(job)
    chosen: list[JobRecord] = []
    for rank in range(count):
        for group in by_error.values():
            if rank < len(group) and len(chosen) < count:
                chosen.append(group[rank])
    return sorted(chosen, key=lambda job: job.id)


async def _phase_summary(run: _Run, queue: Queue) -> int:
    c, options = run.console, run.options
    docs = await queue.stats(DOCUMENTS)
    exports = await queue.stats(EXPORTS)
    c.heading("4. Summary")
    rows: list[tuple[str, int, int, int, int]] = []
    for stats, base, expected in (
        (docs, run.docs_base, run.docs_expected),
        (exports, run.exports_base, run.exports_expected),
    ):
        rows.append(
            (
                stats.queue_name,
                expected,
                stats.done - base.done,
                stats.dead - base.dead,
                _unsettled(stats),
            )
        )
    total = (
        "total",
        sum(r[1] for r in rows),
        sum(r[2] for r in rows),
        sum(r[3] for r in rows),
        sum(r[4] for r in rows),
    )
    c.item(f"{'queue':<10} {'enqueued':>8} {'done':>6} {'dead':>6} {'unsettled':>9}", wrap=False)
    for name, expected, done, dead, left in [*rows, total]:
        c.item(f"{name:<10} {expected:>8} {done:>6} {dead:>6} {left:>9}", wrap=False)
    problems: list[str] = []
    for name, expected, done, dead, left in [*rows, total]:
        if done + dead != expected or left:
            problems.append(f"{name}: {done} done + {dead} dead != {expected} enqueued")
    if run.recovered != len(run.held) or not run.held:
        problems.append(
            f"recovered {run.recovered} claims, but the killed process held {len(run.held)}"
        )
    c.write()
    c.item(
        f"Totals: enqueued {total[1]}, done {total[2]}, dead {total[3]}, unsettled {total[4]}"
        + (" - no job lost (done + dead = enqueued)" if not problems else "")
    )
    c.item(
        "Retries: "
        + _attempt_summary(run.docs_tracker.succeeded_on, skip_first=True)
        + f" (out of {run.docs_tracker.transient_failures} transient failures in all)"
    )
    c.item(
        f"Crash recovery: recovered {run.recovered} claims of the killed process; every one "
        "finished after the restart"
    )
    c.item(f"Dead-letter inbox of {DOCUMENTS!r}: {docs.dead} jobs, for example:")
    for job in _examples(await queue.dead_jobs(DOCUMENTS, limit=200), 5):
        name = parse_payload(job.payload).get("document", job.id)
        c.item(f"{job.id}  {name}, attempt {job.attempts} of {job.max_attempts}:", indent=6)
        c.item(_excerpt(job.last_error, c.width - 10), indent=8)
    c.item(f"Elapsed: {time.monotonic() - run.started:.1f} s")
    if problems:
        c.write()
        for problem in problems:
            c.write(c.bad(f"  CHECK FAILED: {problem}"))
        return 1
    c.write()
    c.say(
        f"The store is still there ({run.store.url}). Look around (the first three only "
        "read; `dead requeue` opens the store as its writer):"
    )
    for command in _commands(options):
        c.item(command, wrap=False)
    return 0


# ------------------------------------------------------------------------------ the child


async def run_child(store_url: str, db: str, count: int) -> int:
    """The crash-test child: claim ``count`` export jobs, make the claims durable, report, hang.

    Prints ``HOLDING <n> <id,id,...>`` once it holds the claims, then waits to be killed. An
    orphaned child gives up after a while and exits with status 3 (its handlers are cancelled
    and their jobs handed back).
    """
    store = Store.from_url(store_url)
    held: list[str] = []
    holding = trio.Event()

    async def handler(job: JobRecord, lease: LeaseHandle) -> None:
        held.append(job.id)
        if len(held) >= count:
            holding.set()
        await trio.sleep_forever()  # a very long export: the parent kills us long before

    with trio.move_on_after(_CHILD_LIFETIME):
        async with _open(store, db, lease=_CHILD_LEASE) as queue, trio.open_nursery() as nursery:
            worker = Worker(
                queue, EXPORTS, handler, concurrency=count, poll_interval=_POLL_INTERVAL
            )
            nursery.start_soon(worker.serve)
            await holding.wait()
            # Claims commit without waiting for durability; a durable write after them
            # returns only once the WAL holding them is in storage too.
            await queue.kv_put(b"demo/crash-child", str(os.getpid()).encode())
            print(f"{_READY_PREFIX} {len(held)} {','.join(held)}", flush=True)
            await trio.sleep_forever()
    return 3
