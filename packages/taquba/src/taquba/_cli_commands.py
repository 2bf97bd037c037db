"""The ``taquba`` admin commands: each an ``async def command(args, session) -> int``.

Every command prints text, or with ``--json`` one JSON document with stable keys (jobs in the
HTTP API's ``Job`` form, counters in its ``QueueStats`` form), and acts on the store directly
or through a taquba-server, as its `CliSession` says. `_cli_parser.py` wires them to the
parser; `_cli.py` runs them.
"""

from __future__ import annotations

import dataclasses
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, TextIO, cast

import trio

from taquba._cli_remote import RemoteError
from taquba._cli_session import (
    EXIT_FAILURE,
    EXIT_OK,
    CliError,
    attempt_json,
    job_json,
    stats_json,
    when,
)
from taquba._errors import InvalidState, JobNotFound, TaqubaError
from taquba._records import JobAttempt, JobRecord, JobStatus

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from taquba._cli_session import CliReader, CliSession, CliWriter
    from taquba._queue import Queue

__all__ = [
    "cancel_job",
    "dead_list",
    "dead_purge",
    "dead_requeue",
    "enqueue",
    "inspect",
    "jobs",
    "payloads_collect",
    "purge",
    "show_job",
    "wake_job",
]

_STAT_FIELDS: Final = ("pending", "scheduled", "claimed", "done", "dead")


async def require_queue(queue: CliReader, name: str) -> None:
    """Raise `CliError` unless ``name`` is a queue of the database."""
    names = await queue.list_queues()
    if name not in names:
        known = ", ".join(names) if names else "none"
        raise CliError(f"no queue {name!r} in database {queue.name!r} (queues: {known})")


# ------------------------------------------------------------------------------ output


def preview(payload: bytes, width: int = 60) -> str:
    """The payload as one line of text, or ``<N bytes>`` when it is not text."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(payload)} bytes>"
    text = " ".join(text.split())
    if not text.isprintable():
        return f"<{len(payload)} bytes>"
    return text if len(text) <= width else text[: width - 3] + "..."


def table(
    out: TextIO, headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: int = 0
) -> None:
    """Print aligned columns; the ``right`` last columns are right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    first_right = len(headers) - right
    for row in [headers, *rows]:
        cells = [
            cell.rjust(w) if i >= first_right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.write("  ".join(cells).rstrip() + "\n")


# ------------------------------------------------------------------------------ inspect


async def inspect(args: argparse.Namespace, session: CliSession) -> int:
    """``taquba inspect``: every queue with its counters."""
    del args
    async with session.open_reader() as reader:
        names = await reader.list_queues()
        stats = [await reader.stats(name) for name in names]
        db = reader.name
    if session.json:
        session.emit(
            {**session.where_json(), "database": db, "queues": [stats_json(s) for s in stats]}
        )
        return EXIT_OK
    out = session.out
    out.write(f"{session.where()}\ndatabase: {db}\n")
    if not stats:
        out.write("no queues yet\n")
        return EXIT_OK
    out.write("\n")
    rows = [[s.queue_name, *(str(getattr(s, f)) for f in _STAT_FIELDS)] for s in stats]
    # "queue_name", as in the API (QueueStats.queue_name, the JSON key), since 0.9's rename.
    table(out, ["queue_name", *_STAT_FIELDS], rows, right=len(_STAT_FIELDS))
    return EXIT_OK


# ------------------------------------------------------------------------------ dead letters


def _dead_row(job: JobRecord) -> list[str]:
    return [
        job.id,
        f"{job.attempts}/{job.max_attempts}",
        when(job.failed_at),
        " ".join((job.last_error or "-").split()),
    ]


async def dead_list(args: argparse.Namespace, session: CliSession) -> int:
    """``taquba dead list QUEUE``."""
    name: str = args.queue
    async with session.open_reader() as reader:
        await require_queue(reader, name)
        total = (await reader.stats(name)).dead
        found = await reader.dead_jobs(name, limit=args.limit)
    if session.json:
        session.emit({"queue_name": name, "total": total, "jobs": [job_json(j) for j in found]})
        return EXIT_OK
    if not found:
        session.say(f"the dead-letter inbox of {name!r} is empty")
        return EXIT_OK
    shown = f", showing {len(found)}" if len(found) < total else ""
    session.say(f"{total} dead jobs in {name!r}{shown}:")
    table(session.out, ["id", "attempts", "failed at", "last error"], [_dead_row(j) for j in found])
    return EXIT_OK


_SKIPPED_NOTE: Final = "no longer dead (requeued or deleted meanwhile)"


async def dead_requeue(args: argparse.Namespace, session: CliSession) -> int:
    """``taquba dead requeue QUEUE (JOB_ID | --all)``."""
    name: str = args.queue
    job_id: str | None = args.job_id
    requeued: list[str] = []
    skipped: list[str] = []
    total = 0

    async def requeue(queue: CliWriter, job: JobRecord) -> None:
        done = len(requeued) + len(skipped) + 1
        try:
            await queue.requeue_dead_job(job)
        except (InvalidState, JobNotFound):
            skipped.append(job.id)
            session.say(f"skipped {job.id} ({done}/{total}): {_SKIPPED_NOTE}")
        else:
            requeued.append(job.id)
            session.say(f"requeued {job.id} ({done}/{total})")

    async with session.open_writer() as queue:
        await require_queue(queue, name)
        try:
            if args.all:
                total = (await queue.stats(name)).dead
                if total:
                    session.say(f"requeueing {total} dead job(s) of {name!r}")
                after: str | None = None
                while batch := await queue.dead_jobs(name, after=after, limit=100):
                    for job in batch:
                        await requeue(queue, job)
                    after = batch[-1].id
            else:
                assert job_id is not None
                job = await queue.get_job(job_id)
                if job is None or job.queue_name != name:
                    raise CliError(f"no job {job_id!r} in queue {name!r}")
                if job.status is not JobStatus.DEAD:
                    raise CliError(f"job {job_id!r} is {job.status.value}, not dead")
                total = 1
                await requeue(queue, job)
        except TaqubaError:
            if requeued or skipped:  # say what was done before the failure
                summary = _summary(len(requeued), len(skipped), name)
                session.say(f"stopped after {len(requeued) + len(skipped)} of {total}: {summary}")
            raise
    session.emit({"queue_name": name, "requeued": requeued, "skipped": skipped})
    if not requeued and not skipped:
        session.say(f"the dead-letter inbox of {name!r} is empty: nothing to requeue")
        return EXIT_OK
    session.say(_summary(len(requeued), len(skipped), name))
    return EXIT_OK


def _summary(requeued: int, skipped: int, name: str) -> str:
    text = (
        f"{requeued} job(s) pending again with attempts reset; they run when a worker next "
        f"serves {name!r}"
    )
    if skipped:
        text += f"; skipped {skipped} job(s) {_SKIPPED_NOTE}"
    return text


async def dead_purge(args: argparse.Namespace, session: CliSession) -> int:
    """``taquba dead purge QUEUE``: as ``taquba purge QUEUE --dead``, without a prompt.

    It kept its meaning from before ``taquba purge``: scripts that call it do not hang on a
    question (``--yes`` is accepted and changes nothing).
    """
    return await _purge(session, args.queue, JobStatus.DEAD, confirm=False)


# ------------------------------------------------------------------------------ purge


def _ask(question: str) -> bool:
    """Ask on stderr; read the answer from stdin (end of input: no)."""
    sys.stderr.write(question)
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if not sys.stdin.isatty():  # the answer was not echoed: end the question's line
        sys.stderr.write(answer.strip() + "\n")
    return answer.strip().lower() in ("y", "yes")


async def purge(args: argparse.Namespace, session: CliSession) -> int:
    """``taquba purge QUEUE (--dead | --done) [--yes]``."""
    status = JobStatus.DEAD if args.dead else JobStatus.DONE
    return await _purge(session, args.queue, status, confirm=not args.yes)


async def _purge(session: CliSession, name: str, status: JobStatus, *, confirm: bool) -> int:
    async with session.open_writer() as queue:
        await require_queue(queue, name)
        if confirm:
            if status is JobStatus.DEAD:
                what = f"the {(await queue.stats(name)).dead} dead job(s)"
            else:
                what = "every kept done record"
            question = f"delete {what} of {name!r} in database {queue.name!r} for good? [y/N] "
            agreed = await trio.to_thread.run_sync(_ask, question, abandon_on_cancel=True)
            if not agreed:
                raise CliError(f"not confirmed: nothing purged from {name!r}", EXIT_FAILURE)
        removed = await queue.purge(name, status)
    session.emit({"queue_name": name, "status": status.value, "removed": removed})
    kind = "dead job(s)" if status is JobStatus.DEAD else "done record(s)"
    if removed:
        session.say(f"purged {removed} {kind} of {name!r}")
    elif status is JobStatus.DEAD:
        session.say(f"the dead-letter inbox of {name!r} is empty: nothing to purge")
    else:
        session.say(f"{name!r} keeps no done records: nothing to purge")
    return EXIT_OK


# ------------------------------------------------------------------------------ payloads


async def payloads_collect(args: argparse.Namespace, session: CliSession) -> int:
    """``taquba payloads collect [--grace SECONDS]``: `Queue.collect_payloads_now`."""
    if session.remote:
        raise CliError(
            "payloads collect needs the store (--store): a taquba-server's owner collects "
            "orphaned payload objects by itself, every hour"
        )
    async with session.open_writer() as writer:
        queue = cast("Queue", writer)  # not through a server (above): the store's `Queue`
        result = await queue.collect_payloads_now(grace=args.grace)
    session.emit({**session.where_json(), "database": queue.name, **dataclasses.asdict(result)})
    session.say(
        f"examined {result.examined} payload object(s): deleted {result.deleted} orphan(s); "
        f"kept {result.young} younger than the grace period and {result.referenced} "
        f"referenced; left alone {result.foreign} not named as refs"
        + (f"; {result.failed} delete(s) failed" if result.failed else "")
    )
    return EXIT_OK if not result.failed else EXIT_FAILURE


# ------------------------------------------------------------------------------ jobs


_MOMENT_HEADER: Final = {
    JobStatus.PENDING: "enqueued",
    JobStatus.SCHEDULED: "due",
    JobStatus.CLAIMED: "claimed",
    JobStatus.DONE: "completed",
    JobStatus.DEAD: "failed",
}


def _moment(job: JobRecord) -> int | None:
    return {
        JobStatus.PENDING: job.enqueued_at,
        JobStatus.SCHEDULED: job.run_at,
        JobStatus.CLAIMED: job.claimed_at,
        JobStatus.DONE: job.completed_at,
        JobStatus.DEAD: job.failed_at,
    }[job.status]


def _job_row(job: JobRecord) -> list[str]:
    return [
        job.id,
        str(job.priority),
        f"{job.attempts}/{job.max_attempts}",
        when(_moment(job)),
        preview(job.payload),
    ]


async def _discarded_note(session: CliSession, reader: CliReader, name: str) -> str | None:
    """Why a listing of done jobs is empty, when a setting discards them (else None)."""
    done = (await reader.stats(name)).done
    if session.remote and await _server_keep_done(reader, name):
        return (
            f"the server keeps no done records of {name!r} (its keep_done is unset: done "
            f"records are deleted when acknowledged); {done} job(s) completed"
        )
    if done:
        return (
            f"{done} job(s) of {name!r} completed, but no done record is left: done records "
            "are kept only when the queue's keep_done is set (QueueConfig.keep_done), and "
            "only that long"
        )
    return None


async def _server_keep_done(reader: CliReader, name: str) -> bool:
    """Whether the server's config for ``name`` discards done records when acknowledged."""
    config_of = getattr(reader, "config", None)
    if config_of is None:
        return False
    config: dict[str, Any] = await config_of(name)
    return config.get("keep_done") is None and not config.get("keep_done_forever")


async def jobs(args: argparse.Namespace, session: CliSession) -> int:
    """``taquba jobs QUEUE [--status S] [--limit N]``."""
    name: str = args.queue
    status = JobStatus(args.status)
    note: str | None = None
    async with session.open_reader() as reader:
        await require_queue(reader, name)
        page = await reader.list_jobs(name, status, limit=args.limit)
        if not page.jobs and status is JobStatus.DONE:
            note = await _discarded_note(session, reader, name)
    more = page.next_cursor is not None
    if session.json:
        found = [job_json(job) for job in page.jobs]
        document = {"queue_name": name, "status": status.value, "jobs": found, "more": more}
        session.emit({**document, "note": note})
        return EXIT_OK
    if not page.jobs:
        session.say(f"no {status.value} jobs in {name!r}" + (f": {note}" if note else ""))
        return EXIT_OK
    hint = " (more exist: raise --limit)" if more else ""
    session.say(f"{len(page.jobs)} {status.value} jobs in {name!r}{hint}:")
    headers = ["id", "priority", "attempts", _MOMENT_HEADER[status], "payload"]
    table(session.out, headers, [_job_row(job) for job in page.jobs])
    return EXIT_OK


async def show_job(args: argparse.Namespace, session: CliSession) -> int:
    """``taquba job show JOB_ID``: one job's whole record."""
    job_id: str = args.job_id
    async with session.open_reader() as reader:
        job = await reader.get_job(job_id)
        history: list[JobAttempt] | None = None
        unserved = False
        if job is not None:
            try:
                history = await reader.get_job_history(job_id)
            except RemoteError as exc:
                if exc.status != 404:
                    raise
                unserved = True  # a server older than the history endpoint
    if job is None:
        raise CliError(
            f"no job {job_id!r} in database {reader.name!r} (done jobs are kept only with "
            "keep_done; cancelled and purged jobs are gone)"
        )
    history = history or []
    if session.json:
        listed = None if unserved else [attempt_json(a) for a in history]
        session.emit({"job": job_json(job), "history": listed})
        return EXIT_OK
    try:
        payload = job.payload.decode("utf-8").rstrip("\n")
        shown = payload if payload.isprintable() or "\n" in payload else None
    except UnicodeDecodeError:
        shown = None
    if shown is None:
        head = job.payload[:64].hex(" ")
        more = " ..." if len(job.payload) > 64 else ""
        shown = f"<{len(job.payload)} bytes> {head}{more}"
    fields = [
        ("id", job.id),
        ("queue_name", job.queue_name),
        ("status", job.status.value + (" (cancel requested)" if job.cancel_requested else "")),
        ("priority", str(job.priority)),
        ("attempts", f"{job.attempts}/{job.max_attempts}"),
        ("enqueued", when(job.enqueued_at)),
        ("due", when(job.run_at)),
        ("claimed", when(job.claimed_at)),
        ("completed", when(job.completed_at)),
        ("failed", when(job.failed_at)),
        ("dedup key", job.dedup_key or "-"),
        ("last error", " ".join((job.last_error or "-").split())),
    ]
    if job.woken_at is not None:
        wake = job.wake_payload
        fields.append(("woken", when(job.woken_at)))
        fields.append(("wake payload", "-" if wake is None else _shown(wake)))
    fields += [(f"header {k}", v) for k, v in sorted(job.headers.items())]
    width = max(len(label) for label, _ in fields)
    for label, value in fields:
        session.say(f"{label + ':':<{width + 1}} {value}")
    session.say(f"{'payload:':<{width + 1}} {shown}")
    if unserved:
        session.say("history: not served by this server (it predates attempt history)")
    elif history:
        session.say(f"history ({len(history)}):")
        rows = [
            [
                str(a.attempt),
                a.outcome.value,
                when(a.claimed_at),
                when(a.recorded_at),
                " ".join((a.error or "-").split()),
            ]
            for a in history
        ]
        table(session.out, ["attempt", "outcome", "claimed", "ended", "error"], rows)
    return EXIT_OK


def _shown(data: bytes) -> str:
    """Bytes as text when they are printable UTF-8, else their length and first bytes in hex."""
    try:
        text = data.decode("utf-8")
        if text.isprintable():
            return text
    except UnicodeDecodeError:
        pass
    more = " ..." if len(data) > 64 else ""
    return f"<{len(data)} bytes> {data[:64].hex(' ')}{more}"


async def wake_job(args: argparse.Namespace, session: CliSession) -> int:
    """``taquba job wake JOB_ID [PAYLOAD]``."""
    job_id: str = args.job_id
    text: str | None = args.payload
    async with session.open_writer() as queue:
        outcome = await queue.wake_scheduled(
            job_id, text.encode("utf-8") if text is not None else None
        )
    session.emit({"job_id": job_id, "outcome": outcome.value})
    messages = {
        "woken": f"woke {job_id}: it is pending now" + (" with the payload" if text else ""),
        "not_scheduled": f"{job_id} is not scheduled (pending, claimed or ended): not woken",
        "not_found": f"no job {job_id!r}: nothing woken",
    }
    session.say(messages[outcome.value])
    return EXIT_OK if outcome.value == "woken" else EXIT_FAILURE


async def cancel_job(args: argparse.Namespace, session: CliSession) -> int:
    """``taquba job cancel JOB_ID``."""
    job_id: str = args.job_id
    async with session.open_writer() as queue:
        outcome = await queue.cancel(job_id)
    session.emit({"job_id": job_id, "outcome": outcome.value})
    messages = {
        "removed": f"cancelled {job_id}: it was pending or scheduled and is deleted",
        "requested": (
            f"asked the handler of {job_id} to stop: it is claimed, and settles as its "
            "handler decides"
        ),
        "not_found": f"no pending, scheduled or claimed job {job_id!r}: nothing cancelled",
    }
    session.say(messages[outcome.value])
    return EXIT_OK if outcome.value != "not_found" else EXIT_FAILURE


# ------------------------------------------------------------------------------ enqueue


def _payload(args: argparse.Namespace) -> bytes:
    text: str | None = args.payload
    path: str | None = args.file
    if (text is None) == (path is None):
        raise CliError("give the payload as an argument or with --file PATH (- for stdin)")
    if text is not None:
        return text.encode("utf-8")
    assert path is not None
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise CliError(f"cannot read the payload file {path}: {exc.strerror or exc}") from None


def _headers(pairs: list[str] | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"a header is KEY=VALUE, not {pair!r}")
        headers[key] = value
    return headers


def _run_at(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"--run-at takes an ISO 8601 time, not {text!r}") from None
    if moment.tzinfo is None:
        raise CliError(f"--run-at needs a time zone (e.g. {text}+00:00 or {text}Z)")
    return moment


async def enqueue(args: argparse.Namespace, session: CliSession) -> int:
    """``taquba enqueue QUEUE [PAYLOAD | --file PATH] [options]``."""
    name: str = args.queue
    payload = _payload(args)
    headers = _headers(args.header)
    run_at = _run_at(args.run_at)
    async with session.open_writer() as queue:
        result = await queue.enqueue(
            name,
            payload,
            priority=args.priority,
            run_at=run_at,
            delay=args.delay,
            dedup_key=args.dedup_key,
            headers=headers,
            max_attempts=args.max_attempts,
            job_id=args.job_id,
        )
    session.emit({"id": result.id, "created": result.created, "queue_name": name})
    if result.created:
        session.say(f"enqueued {result.id} on {name!r} ({len(payload)} bytes)")
    else:
        session.say(f"not enqueued: job {result.id} already holds the dedup key on {name!r}")
    return EXIT_OK
