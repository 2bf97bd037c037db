"""The `taquba` command: the demo end to end, the admin commands, and bad input.

The demo and the main admin flows run in real subprocesses (``python -m taquba``), against
stores the tests prepare with the public API and close first (one writer per store); the many
small edge cases call `main` in-process, which is quicker.
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import re
import signal
import subprocess
import sys
import threading
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest
import trio

import taquba
from taquba import (  # pyright: ignore[reportPrivateUsage]
    _adapter,
    _cli_remote,
    _cli_session,
    _demo_console,
    _demo_jobs,
)
from taquba import _owner as owner  # pyright: ignore[reportPrivateUsage]
from taquba._cli import main
from taquba.testing import open_child


async def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "taquba", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=cwd,
    )


def text(result: subprocess.CompletedProcess[bytes]) -> tuple[str, str]:
    return result.stdout.decode(), result.stderr.decode()


def table_row(output: str, first_cell: str) -> list[str]:
    for line in output.splitlines():
        cells = line.split()
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{output}")


# ------------------------------------------------------------------------------ the demo


@pytest.mark.slow
async def test_demo_end_to_end(tmp_path: Path) -> None:
    store = tmp_path / "demo-store"
    result = await run_cli("demo", "--store", str(store), "--jobs", "60", "--workers", "8")
    out, err = text(result)
    assert result.returncode == 0, out + err
    assert "Traceback" not in err

    # Every phase explained itself.
    for heading in ("1. Enqueue 60", "2. Serve", "3. Crash recovery", "4. Summary"):
        assert heading in out

    # The killed child's claims were recovered at reopen, before any processing.
    held = re.search(r"child\s+process\s+\d+\s+holds\s+(\d+)\s+claims", out)
    recovered = re.search(
        r"recovered\s+(\d+)\s+claims\s+of\s+the\s+killed\s+process\s+\(it\s+held\s+(\d+)\)", out
    )
    after = re.search(r"after\s+reopening:\s+pending\s+(\d+),\s+claimed\s+(\d+)", out)
    assert held and recovered and after, out
    assert int(held[1]) == int(recovered[1]) == int(recovered[2]) > 0
    assert int(after[2]) == 0
    assert int(after[1]) >= int(held[1])
    assert re.search(r"exit\s+status\s+-9", out)

    # No job lost: done + dead == enqueued, nothing left over.
    totals = re.search(
        r"Totals:\s+enqueued\s+(\d+),\s+done\s+(\d+),\s+dead\s+(\d+),\s+unsettled\s+(\d+)", out
    )
    assert totals, out
    enqueued, done, dead, unsettled = (int(n) for n in totals.groups())
    assert enqueued == 60 + int(held[1])
    assert done + dead == enqueued
    assert unsettled == 0
    assert dead >= 2  # the poison job and the one that exhausts its attempts
    assert "CHECK FAILED" not in out
    assert "taquba inspect" in out

    # Right after the demo, `inspect` on its store shows the same story.
    result = await run_cli("inspect", "--store", str(store))
    out, err = text(result)
    assert result.returncode == 0, err
    documents = table_row(out, "documents")
    exports = table_row(out, "exports")
    pending, scheduled, claimed, docs_done, docs_dead = (int(n) for n in documents[1:])
    assert (pending, scheduled, claimed) == (0, 0, 0)
    assert docs_done + docs_dead == 60
    assert exports[1:] == ["0", "0", "0", held[1], "0"]


def test_progress_redraws_in_place_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        encoding = "utf-8"

        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("TERM", "xterm")
    screen = Terminal()
    console = _demo_console.Console(screen)
    assert console.live
    base = taquba.QueueStats("q")
    progress = _demo_console.Progress(
        console, label="q", total=4, base=base, tracker=_demo_jobs.Tracker()
    )
    progress.update(taquba.QueueStats("q", pending=4))
    progress.update(taquba.QueueStats("q", pending=1, claimed=1, done=1, dead=1), final=True)
    drawn = screen.getvalue()
    assert drawn.count("\x1b[3F") == 1  # the second frame moved back over the first
    assert "2/4 settled" in drawn
    assert "█" in drawn


def test_progress_prints_lines_when_not_a_terminal() -> None:
    log = io.StringIO()
    console = _demo_console.Console(log)
    assert not console.live
    progress = _demo_console.Progress(
        console, label="q", total=2, base=taquba.QueueStats("q"), tracker=_demo_jobs.Tracker()
    )
    progress.update(taquba.QueueStats("q", pending=2))
    progress.update(taquba.QueueStats("q", done=2), final=True)
    lines = log.getvalue().splitlines()
    assert len(lines) == 2
    assert "\x1b" not in log.getvalue()
    assert "2/2 settled" in lines[-1]


# ------------------------------------------------------------------------------ admin


@dataclass(frozen=True)
class Prepared:
    store: str
    pending: str
    scheduled: str
    done: str
    poison: str
    exhausted: str


async def prepare(root: Path) -> Prepared:
    config = taquba.QueueConfig(max_attempts=1, keep_done=3_600.0, retry_backoff_base=0.0)
    async with taquba.open_queue(str(root), "ops", config=config, flush_interval=0.005) as queue:
        done = (await queue.enqueue("mail", b'{"to": "done@example.com"}')).id
        poison = (await queue.enqueue("mail", b'{"to": "poison@example.com"}')).id
        exhausted = (await queue.enqueue("mail", b"\xff\xfe binary")).id
        claims = await queue.claim_batch("mail", 3)
        assert [c.id for c in claims] == [done, poison, exhausted]
        await queue.ack(claims[0])
        await queue.dead_letter(claims[1], "malformed address")
        await queue.nack(claims[2], "SMTP 421: try again later")  # out of attempts: dead
        pending = (await queue.enqueue("mail", b'{"to": "later@example.com"}')).id
        scheduled = (await queue.enqueue("mail", b"tomorrow", delay=86_400)).id
        await queue.enqueue("other", b"x")
        stats = await queue.stats("mail")
        assert (stats.pending, stats.scheduled, stats.done, stats.dead) == (1, 1, 1, 2)
    return Prepared(str(root), pending, scheduled, done, poison, exhausted)


@pytest.fixture
def prepared(tmp_path: Path) -> Prepared:
    """A closed store with a queue 'mail' in every state (and a queue 'other'), database 'ops'."""
    return trio.run(prepare, tmp_path / "admin-store")


def admin(prepared: Prepared, *args: str) -> list[str]:
    return [*args, "--store", prepared.store, "--db", "ops"]


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the command in this process (quicker than a subprocess, for the many small cases)."""
    try:
        code = main(list(args))
    except SystemExit as exit_:  # argparse
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_inspect_lists_queues_with_counters(prepared: Prepared) -> None:
    result = await run_cli(*admin(prepared, "inspect"))
    out, err = text(result)
    assert result.returncode == 0, err
    assert "database: ops" in out
    assert table_row(out, "mail")[1:] == ["1", "1", "0", "1", "2"]
    assert table_row(out, "other")[1:] == ["1", "0", "0", "0", "0"]


async def test_jobs_lists_one_status(prepared: Prepared) -> None:
    result = await run_cli(*admin(prepared, "jobs", "mail", "--status", "pending"))
    out, err = text(result)
    assert result.returncode == 0, err
    assert prepared.pending in out
    assert '{"to": "later@example.com"}' in out
    result = await run_cli(*admin(prepared, "jobs", "mail", "--status", "dead", "--limit", "1"))
    out, err = text(result)
    assert result.returncode == 0, err
    assert prepared.poison in out
    assert prepared.exhausted not in out
    assert "raise --limit" in out


def test_jobs_in_every_status(prepared: Prepared, capsys: pytest.CaptureFixture[str]) -> None:
    expected = {
        "pending": (prepared.pending, "enqueued"),
        "scheduled": (prepared.scheduled, "due"),
        "done": (prepared.done, "completed"),
        "dead": (prepared.exhausted, "failed"),
    }
    for status, (job_id, column) in expected.items():
        code, out, err = run_main(capsys, *admin(prepared, "jobs", "mail", "--status", status))
        assert code == 0, err
        assert job_id in out, (status, out)
        assert column in out.splitlines()[1]
    code, out, _ = run_main(capsys, *admin(prepared, "jobs", "mail", "--status", "dead"))
    assert "<" in out  # the binary payload is shown by size
    code, out, _ = run_main(capsys, *admin(prepared, "jobs", "mail", "--status", "claimed"))
    assert code == 0
    assert "no claimed jobs in 'mail'" in out  # the store was closed cleanly: none held


async def test_read_only_commands_leave_a_running_writer_alone(prepared: Prepared) -> None:
    # inspect, jobs and dead list open a reader: the writer holding the store keeps working
    # (a writer-opening command would fence it), and its live claim shows up as claimed.
    config = taquba.QueueConfig(max_attempts=1, keep_done=3_600.0)
    async with taquba.open_queue(
        prepared.store, "ops", config=config, flush_interval=0.005
    ) as queue:
        claim = await queue.claim("mail")
        assert claim is not None and claim.id == prepared.pending
        await queue.enqueue("mail", b"durable before the reads")  # the claim's flush too
        result = await run_cli(*admin(prepared, "inspect"))
        out, err = text(result)
        assert result.returncode == 0, err
        assert table_row(out, "mail")[1:] == ["1", "1", "1", "1", "2"]
        result = await run_cli(*admin(prepared, "jobs", "mail", "--status", "claimed"))
        assert prepared.pending in text(result)[0]
        result = await run_cli(*admin(prepared, "dead", "list", "mail"))
        assert "2 dead jobs in 'mail'" in text(result)[0]
        assert queue.failure is None
        await queue.ack(claim)  # still the writer: a fenced queue would raise here
        assert (await queue.stats("mail")).done == 2


async def test_dead_list_and_requeue(prepared: Prepared) -> None:
    result = await run_cli(*admin(prepared, "dead", "list", "mail"))
    out, err = text(result)
    assert result.returncode == 0, err
    assert "2 dead jobs in 'mail'" in out
    assert re.search(rf"{prepared.poison}\s+1/1\s.*malformed address", out)
    assert re.search(rf"{prepared.exhausted}\s+1/1\s.*SMTP 421: try again later", out)

    result = await run_cli(*admin(prepared, "dead", "requeue", "mail", prepared.poison))
    out, err = text(result)
    assert result.returncode == 0, err
    assert f"requeued {prepared.poison}" in out

    # A job that is no longer dead cannot be requeued again.
    result = await run_cli(*admin(prepared, "dead", "requeue", "mail", prepared.poison))
    assert result.returncode == 2
    assert "is pending, not dead" in text(result)[1]

    result = await run_cli(*admin(prepared, "dead", "requeue", "mail", "--all"))
    out, err = text(result)
    assert result.returncode == 0, err
    assert f"requeued {prepared.exhausted}" in out
    assert "1 job(s) pending again" in out

    result = await run_cli(*admin(prepared, "inspect"))
    assert table_row(text(result)[0], "mail")[1:] == ["3", "1", "0", "1", "0"]


def test_dead_admin_edge_cases(prepared: Prepared, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, *admin(prepared, "dead", "list", "mail", "--limit", "1"))
    assert code == 0
    assert "2 dead jobs in 'mail', showing 1" in out
    code, out, _ = run_main(capsys, *admin(prepared, "dead", "list", "other"))
    assert code == 0
    assert "is empty" in out
    code, out, _ = run_main(capsys, *admin(prepared, "dead", "requeue", "other", "--all"))
    assert code == 0
    assert "nothing to requeue" in out


async def prepare_old_dead(root: Path) -> dict[str, list[str]]:
    """Dead jobs failed 8 days ago (past the default 7-day retention) in 'mail' and 'other'."""
    clock = taquba.MockClock(int(time.time() * 1000) - 8 * 86_400_000)
    config = taquba.QueueConfig(max_attempts=1, retry_backoff_base=0.0)
    dead: dict[str, list[str]] = {"mail": [], "other": []}
    async with taquba.open_queue(
        str(root), "ops", config=config, clock=clock, flush_interval=0.005
    ) as queue:
        for name, count in (("mail", 6), ("other", 1)):
            for i in range(count):
                await queue.enqueue(name, b"old %d" % i)
            for claim in await queue.claim_batch(name, count):
                await queue.dead_letter(claim, "long ago")
                dead[name].append(claim.id)
    return dead


async def dead_ids(root: Path, name: str) -> set[str]:
    async with taquba.open_reader(str(root), "ops") as reader:
        return {job.id for job in await reader.dead_jobs(name, limit=1000)}


def test_dead_requeue_runs_no_retention_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Requeueing some dead jobs must not delete the others, here or in other queues.

    The requeue of 'mail' is slowed down and the admin writer's reaper interval shortened, as
    in a long ``--all`` run: a writer with background maintenance sweeps every dead record
    older than the default retention meanwhile (it did: `taquba dead requeue` deleted jobs it
    was requeueing and another queue's dead job, then failed on `JobNotFound`).
    """
    root = tmp_path / "store"
    dead = trio.run(prepare_old_dead, root)
    keep_mail = dead["mail"][1:]
    real_open = _cli_session.open_queue
    real_requeue = taquba.Queue.requeue_dead_job

    def quick_reaper(*args: Any, **kwargs: Any) -> Any:
        return real_open(*args, **{**kwargs, "reaper_interval": 0.01})

    async def slow_requeue(self: taquba.Queue, job: taquba.JobRecord) -> None:
        await real_requeue(self, job)
        await trio.sleep(0.3)  # several reaper intervals

    monkeypatch.setattr(_cli_session, "open_queue", quick_reaper)
    monkeypatch.setattr(taquba.Queue, "requeue_dead_job", slow_requeue)
    code, out, err = run_main(
        capsys, "dead", "requeue", "mail", dead["mail"][0], "--store", str(root), "--db", "ops"
    )
    assert trio.run(dead_ids, root, "mail") == set(keep_mail)
    assert trio.run(dead_ids, root, "other") == set(dead["other"])
    assert (code, err) == (0, "")
    assert f"requeued {dead['mail'][0]} (1/1)" in out

    # And --all requeues every one of them, none swept under its feet.
    code, out, err = run_main(
        capsys, "dead", "requeue", "mail", "--all", "--store", str(root), "--db", "ops"
    )
    assert (code, err) == (0, "")
    assert f"requeueing {len(keep_mail)} dead job(s) of 'mail'" in out
    assert f"({len(keep_mail)}/{len(keep_mail)})" in out
    assert f"{len(keep_mail)} job(s) pending again" in out
    assert "skipped" not in out
    assert trio.run(dead_ids, root, "mail") == set()
    assert trio.run(dead_ids, root, "other") == set(dead["other"])


def test_a_dead_job_that_vanishes_mid_requeue_is_skipped_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--all`` lists a page of dead jobs, then one of them is requeued by someone else."""
    root = tmp_path / "store"
    dead = trio.run(prepare_old_dead, root)["mail"]
    real_requeue = taquba.Queue.requeue_dead_job
    raced: list[str] = []

    async def racing_requeue(self: taquba.Queue, job: taquba.JobRecord) -> None:
        if not raced:  # before the first requeue, the third listed job vanishes
            third = await self.get_job(dead[2])
            assert third is not None
            await real_requeue(self, third)
            raced.append(third.id)
        await real_requeue(self, job)

    monkeypatch.setattr(taquba.Queue, "requeue_dead_job", racing_requeue)
    code, out, err = run_main(
        capsys, "dead", "requeue", "mail", "--all", "--store", str(root), "--db", "ops"
    )
    assert (code, err) == (0, ""), out
    assert f"skipped {dead[2]} (3/6): no longer dead" in out
    assert f"requeued {dead[5]} (6/6)" in out
    last = out.splitlines()[-1]
    assert last.startswith("5 job(s) pending again"), out
    assert "skipped 1 job(s) no longer dead" in last
    assert trio.run(dead_ids, root, "mail") == set()


def test_maintenance_false_opens_a_queue_that_sweeps_nothing(tmp_path: Path) -> None:
    """`open_queue(maintenance=False)` runs no retention sweep; the default (the control) does."""
    root = tmp_path / "store"
    dead = trio.run(prepare_old_dead, root)

    async def idle(maintenance: bool) -> int:
        async with taquba.open_queue(
            str(root), "ops", maintenance=maintenance, reaper_interval=0.01
        ) as queue:
            await trio.sleep(0.3)  # many reaper intervals
            return (await queue.stats("mail")).dead

    assert trio.run(idle, False) == len(dead["mail"])
    assert trio.run(dead_ids, root, "other") == set(dead["other"])
    assert trio.run(idle, True) == 0


# ------------------------------------------------------------------------------ bad input


async def test_bad_input_exits_2_with_one_line(prepared: Prepared) -> None:
    for args, message in [
        (["inspect", "--store", "ftp://example.com/x"], "scheme 'ftp'"),
        (admin(prepared, "dead", "list", "nosuch"), "no queue 'nosuch'"),
    ]:
        result = await run_cli(*args)
        out, err = text(result)
        assert result.returncode == 2, out + err
        assert err.startswith("taquba: error: ")
        assert message in err
        assert err.count("\n") == 1  # one line, no traceback


def assert_bad_input(capsys: pytest.CaptureFixture[str], *args: str, message: str) -> None:
    code, out, err = run_main(capsys, *args)
    assert code == 2, out + err
    assert "Traceback" not in err
    assert message in err
    if not err.startswith("usage:"):  # argparse prints its usage first
        assert err.count("\n") == 1, err


def test_missing_store_database_queue_and_job(
    prepared: Prepared,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = tmp_path / "nowhere"
    assert_bad_input(capsys, "inspect", "--store", str(missing), message="no store at")
    assert_bad_input(capsys, "inspect", "--store", missing.as_uri(), message="no store at")
    assert not missing.exists()  # an admin command never creates a store
    assert_bad_input(
        capsys, "inspect", "--store", prepared.store, "--db", "nope", message="no database"
    )
    assert_bad_input(capsys, *admin(prepared, "jobs", "nosuch"), message="no queue 'nosuch'")
    assert_bad_input(
        capsys, *admin(prepared, "dead", "requeue", "mail", "NOPE"), message="no job 'NOPE'"
    )
    assert_bad_input(
        capsys, *admin(prepared, "dead", "requeue", "other", prepared.poison), message="no job"
    )
    assert_bad_input(
        capsys, *admin(prepared, "dead", "requeue", "mail", "bad id!"), message="invalid job id"
    )
    assert_bad_input(capsys, *admin(prepared, "jobs", "\x01"), message="no queue")
    # Without --store, the demo's default store is used and its absence explained.
    monkeypatch.chdir(tmp_path)
    assert_bad_input(capsys, "inspect", message="run `taquba demo` first")
    assert_bad_input(capsys, "demo", "--store", "memory://", message="memory://")
    assert_bad_input(capsys, "demo", "--store", "s3://", message="bucket")


def test_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert_bad_input(capsys, message="required: COMMAND")
    assert_bad_input(capsys, "jobs", "q", "--status", "lost", message="invalid choice")
    assert_bad_input(capsys, "dead", "requeue", "q", message="one of the arguments")
    assert_bad_input(capsys, "demo", "--jobs", "3", message="between 10 and")
    assert_bad_input(capsys, "demo", "--workers", "many", message="not an integer")


async def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("taquba")
    result = await trio.run_process(
        [str(script), "--version"], capture_stdout=True, capture_stderr=True, check=False
    )
    assert result.returncode == 0
    assert result.stdout.decode().strip() == f"taquba {taquba.__version__}"


# ------------------------------------------------------------------------------ the owner check

OWNER_CHILD = Path(__file__).with_name("owner_child.py")
URL = "http://127.0.0.1:9/"


async def mail_dead_ids(store: str) -> set[str]:
    async with taquba.open_reader(store, "ops", poll_interval=0.05) as reader:
        return {job.id for job in await reader.dead_jobs("mail")}


@pytest.mark.slow
async def test_a_live_owner_is_refused_and_keeps_running(prepared: Prepared) -> None:
    before = await mail_dead_ids(prepared.store)
    assert len(before) == 2
    async with open_child(OWNER_CHILD, prepared.store, "ops", "0.2", URL) as child:
        with trio.fail_after(30):
            await child.expect("READY")
            for command in (("dead", "requeue", "mail", "--all"), ("dead", "purge", "mail")):
                result = await run_cli(*admin(prepared, *command))
                out, err = text(result)
                assert result.returncode == 1, out + err
                assert "a live owner" in err and f"pid {child.process.pid}" in err, err
                assert f"--server {URL}" in err and "Traceback" not in err, err
                assert out == ""
            # The owner was not fenced: it still writes.
            seen = len(child.tagged("ENQ"))
            await child.read_until(lambda: len(child.tagged("ENQ")) >= seen + 2)
            assert "FENCED" not in child.lines
            child.process.send_signal(signal.SIGTERM)
            await child.expect("CLOSED")
            await child.expect_exit(0)
    assert await mail_dead_ids(prepared.store) == before
    # A clean close removed the record: the command runs.
    result = await run_cli(*admin(prepared, "dead", "requeue", "mail", "--all"))
    out, err = text(result)
    assert result.returncode == 0, out + err
    assert err == "" and "2 job(s) pending again" in out
    assert await mail_dead_ids(prepared.store) == set()


@pytest.mark.slow
async def test_a_killed_owner_goes_stale_and_the_command_runs(prepared: Prepared) -> None:
    async with open_child(OWNER_CHILD, prepared.store, "ops", "0.1") as child:
        with trio.fail_after(30):
            await child.expect("READY")
        await child.kill()
    async with taquba.open_reader(prepared.store, "ops", poll_interval=0.05) as reader:
        info = await reader.owner()
        assert info is not None and info.pid == child.process.pid
        # Stale three intervals (0.3 s) after its last heartbeat.
        with trio.fail_after(10):
            while info.is_fresh():  # noqa: ASYNC110 - waits for wall-clock time to pass
                await trio.sleep(0.05)
    result = await run_cli(*admin(prepared, "dead", "purge", "mail"))
    out, err = text(result)
    assert result.returncode == 0, out + err
    assert "stopped its heartbeat" in err and "taking over" in err
    assert out == "purged 2 dead job(s) of 'mail'\n"
    assert await mail_dead_ids(prepared.store) == set()
    async with taquba.open_reader(prepared.store, "ops") as reader:
        assert (await reader.stats("mail")).dead == 0
        assert await reader.owner() is None  # the command's own record is gone too


@pytest.mark.slow
async def test_force_fences_the_live_owner(prepared: Prepared) -> None:
    async with open_child(OWNER_CHILD, prepared.store, "ops", "0.2") as child:
        with trio.fail_after(30):
            await child.expect("READY")
            result = await run_cli(*admin(prepared, "dead", "requeue", "mail", "--all", "--force"))
            out, err = text(result)
            assert result.returncode == 0, out + err
            assert "--force: fencing the live owner" in err
            await child.expect("FENCED")
            await child.expect_exit(3)
    assert await mail_dead_ids(prepared.store) == set()


async def write_raw_owner(store: str, raw: bytes) -> None:
    db = await _adapter.Database.open(taquba.Store.from_url(store), "ops")
    try:
        await db.put(owner.owner_key(), raw)
    finally:
        await db.close()


def test_an_unreadable_owner_record_refuses_unless_forced(
    prepared: Prepared, capsys: pytest.CaptureFixture[str]
) -> None:
    trio.run(write_raw_owner, prepared.store, b"\xc1 not msgpack")
    code, out, err = run_main(capsys, *admin(prepared, "dead", "purge", "mail"))
    assert code == 1 and out == ""
    assert "owner record" in err and "unreadable" in err and "--force" in err, err
    assert len(trio.run(mail_dead_ids, prepared.store)) == 2
    code, out, err = run_main(capsys, *admin(prepared, "inspect"))  # readers do not care
    assert code == 0, err
    code, out, err = run_main(capsys, *admin(prepared, "dead", "purge", "mail", "--force"))
    assert code == 0, err
    assert "unreadable" in err and out == "purged 2 dead job(s) of 'mail'\n"


def test_dead_purge_of_an_empty_inbox_and_of_a_missing_queue(
    prepared: Prepared, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_main(capsys, *admin(prepared, "dead", "purge", "other"))
    assert code == 0 and "nothing to purge" in out
    code, _, err = run_main(capsys, *admin(prepared, "dead", "purge", "nope"))
    assert code == 2 and "no queue 'nope'" in err


def test_serve_without_taquba_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "taquba_server", None)  # as if not installed
    code, out, err = run_main(capsys, "serve", "--store", "x")
    assert code == 2 and out == ""
    assert "install taquba-server" in err


def test_serve_delegates_to_taquba_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[list[str]] = []

    def serve_main(argv: list[str]) -> int:
        calls.append(argv)
        return 7

    module = types.ModuleType("taquba_server._cli")
    module.main = serve_main  # type: ignore[attr-defined]
    # Both stubbed: the test holds where taquba-server is not installed (a compat row).
    monkeypatch.setitem(sys.modules, "taquba_server", types.ModuleType("taquba_server"))
    monkeypatch.setitem(sys.modules, "taquba_server._cli", module)
    code, _, _ = run_main(capsys, "serve", "--store", "s3://b/p", "--port", "8000")
    assert code == 7
    assert calls == [["--store", "s3://b/p", "--port", "8000"]]


# ------------------------------------------------------------------------------ --server URL


def test_requests_are_built_from_the_wire_protocol() -> None:
    request = _cli_remote.build_request(
        "http://h:8000/", "s3cret", "POST", "/v1/queues/a%2Fb/purge", body={"status": "dead"}
    )
    assert request.method == "POST"
    assert request.url == "http://h:8000/v1/queues/a%2Fb/purge"
    assert request.headers == {
        "Accept": "application/json",
        "Authorization": "Bearer s3cret",
        "Content-Type": "application/json",
    }
    assert json.loads(request.body or b"") == {"status": "dead"}
    get = _cli_remote.build_request(
        "http://h", None, "GET", "/v1/queues/q/jobs", query={"status": "dead", "limit": "5"}
    )
    assert get.url == "http://h/v1/queues/q/jobs?status=dead&limit=5"
    assert get.body is None and "Authorization" not in get.headers
    assert _cli_remote.quote("a/b c") == "a%2Fb%20c"


def _wire_job(job_id: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "queue_name": "mail",
        "payload": base64.b64encode(b'{"to": "x@example.com"}').decode(),
        "status": status,
        "priority": 1000,
        "attempts": 1,
        "max_attempts": 1,
        "enqueued_at": 1_700_000_000_000,
        "headers": {},
        "claimed_at": None,
        "run_at": None,
        "last_error": extra.get("last_error"),
        "dedup_key": None,
        "completed_at": None,
        "failed_at": extra.get("failed_at"),
        "cancel_requested": False,
    }


class FakeServer:
    """A stand-in for taquba-server on loopback: canned answers in the documented wire format."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fake.requests.append((self.command, self.path, dict(self.headers), body))
                status, answer = fake.routes.get(
                    (self.command, self.path),
                    (404, {"error": {"code": "not_found", "message": "no route", "field": None}}),
                )
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

    def paths(self) -> list[str]:
        return [f"{method} {path}" for method, path, _, _ in self.requests]


@pytest.fixture
def server() -> Any:
    with FakeServer() as fake:
        fake.routes[("GET", "/v1/health")] = (
            200,
            {"status": "ok", "name": "ops", "version": "0.1.0", "owner": None},
        )
        fake.routes[("GET", "/v1/queues")] = (200, {"queues": ["mail", "other"]})
        stats = {"pending": 1, "scheduled": 1, "claimed": 0, "done": 1, "dead": 2}
        fake.routes[("GET", "/v1/queues/mail/stats")] = (200, {**stats, "quarantined": 0})
        fake.routes[("GET", "/v1/queues/other/stats")] = (200, {"pending": 1})
        yield fake


def test_remote_inspect_prints_what_the_local_mode_prints(
    prepared: Prepared, server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, local, err = run_main(capsys, *admin(prepared, "inspect"))
    assert code == 0, err
    code, remote, err = run_main(capsys, "--server", server.url, "--token", "t0k", "inspect")
    assert code == 0, err
    assert remote.splitlines()[0] == f"server:   {server.url}"
    assert remote.splitlines()[1:] == local.splitlines()[1:]
    assert all(h["Authorization"] == "Bearer t0k" for _, _, h, _ in server.requests)


def test_remote_dead_list_requeue_and_purge(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TAQUBA_SERVER", server.url)
    monkeypatch.setenv("TAQUBA_TOKEN", "env-token")
    dead = [
        _wire_job("J1", "dead", last_error="boom", failed_at=1_700_000_000_000),
        _wire_job("J2", "dead", last_error="bad", failed_at=1_700_000_000_000),
    ]
    server.routes[("GET", "/v1/queues/mail/dead?limit=20")] = (200, {"jobs": dead})
    code, out, err = run_main(capsys, "dead", "list", "mail")
    assert code == 0, err
    assert out.splitlines()[0] == "2 dead jobs in 'mail':"
    assert table_row(out, "J2")[1:3] == ["1/1", "2023-11-14"]

    server.routes[("GET", "/v1/queues/mail/dead?limit=100")] = (200, {"jobs": dead})
    server.routes[("GET", "/v1/queues/mail/dead?limit=100&after=J2")] = (200, {"jobs": []})
    server.routes[("POST", "/v1/jobs/J1/requeue")] = (200, {})
    server.routes[("POST", "/v1/jobs/J2/requeue")] = (
        409,
        {"error": {"code": "invalid_state", "message": "job 'J2' is pending", "field": None}},
    )
    code, out, err = run_main(capsys, "dead", "requeue", "mail", "--all")
    assert code == 0, err
    assert "requeued J1 (1/2)" in out and "skipped J2 (2/2)" in out
    assert any(h["Authorization"] == "Bearer env-token" for _, _, h, _ in server.requests)

    server.routes[("POST", "/v1/queues/mail/purge")] = (200, {"removed": 2})
    code, out, err = run_main(capsys, "dead", "purge", "mail")
    assert (code, out, err) == (0, "purged 2 dead job(s) of 'mail'\n", "")
    method, path, _, body = server.requests[-1]
    assert (method, path, json.loads(body)) == ("POST", "/v1/queues/mail/purge", {"status": "dead"})


def test_remote_jobs_and_a_single_requeue(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    page = {"jobs": [_wire_job("P1", "pending")], "next_cursor": base64.b64encode(b"c").decode()}
    server.routes[("GET", "/v1/queues/mail/jobs?status=pending&limit=20")] = (200, page)
    code, out, err = run_main(capsys, "jobs", "mail", "--server", server.url)
    assert code == 0, err
    assert "1 pending jobs in 'mail' (more exist: raise --limit)" in out
    assert table_row(out, "P1")[-2:] == ['{"to":', '"x@example.com"}']

    server.routes[("GET", "/v1/jobs/D1")] = (200, _wire_job("D1", "dead"))
    server.routes[("POST", "/v1/jobs/D1/requeue")] = (200, {})
    code, out, err = run_main(capsys, "dead", "requeue", "mail", "D1", "--server", server.url)
    assert code == 0, err
    assert "requeued D1 (1/1)" in out
    code, out, err = run_main(capsys, "dead", "requeue", "mail", "NOPE", "--server", server.url)
    assert code == 2 and "no job 'NOPE' in queue 'mail'" in err


def test_remote_errors_are_one_clear_line(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.routes[("POST", "/v1/queues/mail/purge")] = (
        403,
        {"error": {"code": "forbidden", "message": "needs the admin scope", "field": None}},
    )
    code, out, err = run_main(capsys, "dead", "purge", "mail", "--server", server.url)
    assert code == 1 and out == ""
    assert "403 forbidden: needs the admin scope" in err and "--token" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    code, _, err = run_main(capsys, "inspect", "--server", "http://127.0.0.1:9")
    assert code == 1 and "cannot reach the server at http://127.0.0.1:9" in err
    code, _, err = run_main(capsys, "dead", "list", "nope", "--server", server.url)
    assert code == 2 and "no queue 'nope'" in err


@pytest.mark.slow
async def test_admin_commands_through_a_real_taquba_server(prepared: Prepared) -> None:
    """`taquba serve` owns the store; local writers are refused, `--server` goes through it."""
    pytest.importorskip("taquba_server._cli")
    args = ("-m", "taquba", "serve", "--store", prepared.store, "--name", "ops", "--port", "0")
    async with open_child(*args) as child:
        with trio.fail_after(30):
            line = await child.expect(lambda text: text.startswith("taquba-server listening on"))
            url = line.split()[-1]
            refused = await run_cli(*admin(prepared, "dead", "purge", "mail"))
            out, err = text(refused)
            assert refused.returncode == 1, out + err
            assert f"--server {url}" in err, err
            listed = await run_cli("dead", "list", "mail", "--server", url)
            out, err = text(listed)
            assert listed.returncode == 0, err
            assert out.splitlines()[0] == "2 dead jobs in 'mail':"
            requeued = await run_cli("dead", "requeue", "mail", prepared.poison, "--server", url)
            out, err = text(requeued)
            assert requeued.returncode == 0, err
            assert f"requeued {prepared.poison} (1/1)" in out
            purged = await run_cli("dead", "purge", "mail", "--server", url)
            assert text(purged) == ("purged 1 dead job(s) of 'mail'\n", "")
            inspected = await run_cli("inspect", "--server", url)
            out, err = text(inspected)
            assert inspected.returncode == 0, err
            assert table_row(out, "mail")[1:] == ["2", "1", "0", "1", "0"]
            child.process.send_signal(signal.SIGTERM)
            await child.expect_exit(0)
    assert await mail_dead_ids(prepared.store) == set()
