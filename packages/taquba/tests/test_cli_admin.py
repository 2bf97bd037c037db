"""The admin commands of issue #18: ``--json``, ``job show``/``cancel``, ``purge``, ``enqueue``,
``top``, the plugin group ``taquba.cli``, and the one default database name.

Each runs on a real store prepared and closed first, in-process (`main`) for the many small
cases and as a subprocess where stdin, signals or the console script matter; the server path
runs against a real ``taquba serve`` child (`test_the_new_commands_through_a_real_server`).
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
import trio

import taquba
from taquba import JobStatus
from taquba._cli import main
from taquba._cli_parser import build_parser
from taquba.cli import CliCommands, CliSession
from taquba.testing import check_public_api, open_child

HANG = 30  # seconds: bounds that only catch hangs


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exit_:  # argparse
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = run_main(capsys, *args, "--json")
    assert (code, err) == (0, ""), out + err
    assert out.count("\n") == 1, out  # one document, one line
    return json.loads(out)


async def run_cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "taquba", *args],
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def prepare(root: Path, *, keep_done: float | None = 3_600.0) -> dict[str, str]:
    """Database 'ops': 'mail' with a pending, a scheduled, a done and a dead job."""
    config = taquba.QueueConfig(max_attempts=1, keep_done=keep_done)
    async with taquba.open_queue(str(root), "ops", config=config, flush_interval=0.005) as queue:
        done = (await queue.enqueue("mail", b"done")).id
        dead = (await queue.enqueue("mail", b"dead")).id
        claims = await queue.claim_batch("mail", 2)
        await queue.ack(claims[0])
        await queue.dead_letter(claims[1], "bad address")
        pending = (await queue.enqueue("mail", b'{"to": "a@example.com"}', headers={"h": "v"})).id
        scheduled = (await queue.enqueue("mail", b"\x00\xff", delay=86_400)).id
    return {"done": done, "dead": dead, "pending": pending, "scheduled": scheduled}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def ids(store: Path) -> dict[str, str]:
    return trio.run(prepare, store)


def at(store: Path, *args: str) -> list[str]:
    return [*args, "--store", str(store), "--db", "ops"]


async def read_job(store: Path, job_id: str) -> taquba.JobRecord | None:
    async with taquba.open_reader(str(store), "ops") as reader:
        return await reader.get_job(job_id)


# ------------------------------------------------------------------------------ --json


def test_every_read_command_prints_one_json_document(
    store: Path, ids: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    inspected = run_json(capsys, *at(store, "inspect"))
    assert inspected["database"] == "ops"
    assert inspected["server"] is None
    assert inspected["store"].startswith("file://")
    assert inspected["queues"] == [
        {
            "queue_name": "mail",
            "pending": 1,
            "scheduled": 1,
            "claimed": 0,
            "done": 1,
            "dead": 1,
            "quarantined": 0,
        }
    ]
    listed = run_json(capsys, *at(store, "jobs", "mail", "--status", "pending"))
    assert [job["id"] for job in listed["jobs"]] == [ids["pending"]]
    assert listed["more"] is False
    assert listed["note"] is None
    dead = run_json(capsys, *at(store, "dead", "list", "mail"))
    assert dead["total"] == 1
    assert dead["jobs"][0]["last_error"] == "bad address"
    shown = run_json(capsys, *at(store, "job", "show", ids["scheduled"]))["job"]
    assert base64.b64decode(shown["payload"]) == b"\x00\xff"
    assert shown["status"] == "scheduled"
    assert shown["run_at"] > shown["enqueued_at"]
    assert set(shown) == {
        "id",
        "queue_name",
        "payload",
        "status",
        "priority",
        "attempts",
        "max_attempts",
        "enqueued_at",
        "headers",
        "claimed_at",
        "run_at",
        "last_error",
        "dedup_key",
        "completed_at",
        "failed_at",
        "cancel_requested",
        "woken_at",
        "wake_payload",
        "history_size",
        "payload_ref",
    }
    snapshot = run_json(capsys, *at(store, "top"))
    assert snapshot["queues"] == inspected["queues"]


def test_inspect_header_is_queue_name(
    store: Path, ids: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_main(capsys, *at(store, "inspect"))
    assert code == 0
    assert "queue_name  pending  scheduled  claimed  done  dead" in out


# ------------------------------------------------------------------------------ job show, cancel


def test_job_show_prints_the_whole_record(
    store: Path, ids: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(capsys, *at(store, "job", "show", ids["pending"]))
    assert (code, err) == (0, "")
    assert f"id:         {ids['pending']}" in out
    assert "status:     pending" in out
    assert "header h:   v" in out
    assert 'payload:    {"to": "a@example.com"}' in out
    code, out, _ = run_main(capsys, *at(store, "job", "show", ids["scheduled"]))
    assert "payload:    <2 bytes> 00 ff" in out
    code, out, err = run_main(capsys, *at(store, "job", "show", "nope"))
    assert code == 2
    assert "no job 'nope' in database 'ops'" in err


def test_job_show_prints_the_attempt_history(
    store: Path, ids: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    shown = run_json(capsys, *at(store, "job", "show", ids["dead"]))
    assert shown["job"]["history_size"] == 1
    [attempt] = shown["history"]
    assert (attempt["attempt"], attempt["outcome"], attempt["error"]) == (
        1,
        "dead_lettered",
        "bad address",
    )
    assert attempt["recorded_at"] >= attempt["claimed_at"]
    code, out, _ = run_main(capsys, *at(store, "job", "show", ids["dead"]))
    assert code == 0
    assert "history (1):" in out
    assert "attempt  outcome" in out and "dead_lettered" in out and "bad address" in out
    assert run_json(capsys, *at(store, "job", "show", ids["pending"]))["history"] == []


def test_job_wake_makes_a_scheduled_job_due_with_its_payload(
    store: Path, ids: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    woken = run_json(capsys, *at(store, "job", "wake", ids["scheduled"], "approved"))
    assert woken == {"job_id": ids["scheduled"], "outcome": "woken"}
    job = trio.run(read_job, store, ids["scheduled"])
    assert job is not None and job.status is JobStatus.PENDING
    assert job.wake_payload == b"approved"
    code, out, _ = run_main(capsys, *at(store, "job", "show", ids["scheduled"]))
    assert "wake payload: approved" in out
    code, out, _ = run_main(capsys, *at(store, "job", "wake", ids["scheduled"]))
    assert code == 1 and "is not scheduled" in out
    code, out, _ = run_main(capsys, *at(store, "job", "wake", "nope"))
    assert code == 1 and "no job 'nope'" in out


def test_job_cancel_removes_and_reports_a_missing_job(
    store: Path, ids: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    cancelled = run_json(capsys, *at(store, "job", "cancel", ids["scheduled"]))
    assert cancelled == {"job_id": ids["scheduled"], "outcome": "removed"}
    assert trio.run(read_job, store, ids["scheduled"]) is None
    code, out, err = run_main(capsys, *at(store, "job", "cancel", ids["scheduled"]))
    assert (code, err) == (1, "")
    assert "nothing cancelled" in out
    code, out, _ = run_main(capsys, *at(store, "job", "cancel", ids["pending"]))
    assert code == 0
    assert f"cancelled {ids['pending']}" in out


# ------------------------------------------------------------------------------ purge


@pytest.mark.slow
async def test_purge_asks_and_honours_the_answer(store: Path, ids: dict[str, str]) -> None:
    refused = await run_cli(*at(store, "purge", "mail", "--dead"), stdin=b"n\n")
    assert refused.returncode == 1, refused.stderr
    err = refused.stderr.decode()
    assert "delete the 1 dead job(s) of 'mail' in database 'ops' for good? [y/N]" in err
    assert "not confirmed: nothing purged" in err
    assert refused.stdout == b""
    assert (await read_job(store, ids["dead"])) is not None
    eof = await run_cli(*at(store, "purge", "mail", "--done"), stdin=b"")
    assert eof.returncode == 1
    assert (await read_job(store, ids["done"])) is not None

    agreed = await run_cli(*at(store, "purge", "mail", "--dead", "--json"), stdin=b"y\n")
    assert agreed.returncode == 0, agreed.stderr
    assert json.loads(agreed.stdout) == {"queue_name": "mail", "status": "dead", "removed": 1}
    assert (await read_job(store, ids["dead"])) is None
    assert (await read_job(store, ids["done"])) is not None


def test_purge_yes_does_not_ask_and_dead_purge_keeps_working(
    store: Path, ids: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(capsys, *at(store, "purge", "mail", "--done", "--yes"))
    assert (code, err) == (0, "")
    assert out == "purged 1 done record(s) of 'mail'\n"
    assert trio.run(read_job, store, ids["done"]) is None
    code, out, err = run_main(capsys, *at(store, "dead", "purge", "mail"))
    assert (code, err) == (0, "")
    assert out == "purged 1 dead job(s) of 'mail'\n"
    code, out, err = run_main(capsys, *at(store, "purge", "mail", "--done", "-y"))
    assert out == "'mail' keeps no done records: nothing to purge\n"
    code, out, err = run_main(capsys, *at(store, "purge", "mail"))
    assert code == 2
    assert "one of the arguments --dead --done is required" in err


# ------------------------------------------------------------------------------ enqueue


def test_enqueue_from_an_argument_with_every_option(
    store: Path, ids: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    del ids
    args = at(
        store,
        "enqueue",
        "mail",
        "hello",
        "--priority",
        "3",
        "--run-at",
        "2099-01-01T00:00:00+00:00",
        "--dedup-key",
        "k1",
        "--header",
        "a=1",
        "--header",
        "b=x=y",
        "--max-attempts",
        "9",
        "--job-id",
        "job-1",
    )
    result = run_json(capsys, *args)
    assert result == {"id": "job-1", "created": True, "queue_name": "mail"}
    job = trio.run(read_job, store, "job-1")
    assert job is not None
    assert job.payload == b"hello"
    assert (job.priority, job.max_attempts, job.dedup_key) == (3, 9, "k1")
    assert dict(job.headers) == {"a": "1", "b": "x=y"}
    assert job.status is JobStatus.SCHEDULED
    assert job.run_at == 4_070_908_800_000
    again = run_json(capsys, *at(store, "enqueue", "mail", "other", "--dedup-key", "k1"))
    assert again == {"id": "job-1", "created": False, "queue_name": "mail"}
    code, out, _ = run_main(capsys, *at(store, "enqueue", "mail", "x", "--delay", "60"))
    assert code == 0
    assert out.startswith("enqueued ")


def test_enqueue_from_a_file_and_bad_input(
    store: Path, ids: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    del ids
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"\x00binary\xff")
    made = run_json(capsys, *at(store, "enqueue", "mail", "--file", str(payload)))
    job = trio.run(read_job, store, made["id"])
    assert job is not None
    assert job.payload == b"\x00binary\xff"
    for args, message in [
        (("enqueue", "mail"), "give the payload as an argument or with --file"),
        (("enqueue", "mail", "x", "--file", str(payload)), "give the payload"),
        (("enqueue", "mail", "x", "--header", "novalue"), "a header is KEY=VALUE"),
        (("enqueue", "mail", "x", "--run-at", "2030-01-01T09:00"), "needs a time zone"),
        (("enqueue", "mail", "x", "--run-at", "soon"), "ISO 8601"),
        (("enqueue", "mail", "--file", str(tmp_path / "missing")), "cannot read the payload"),
        (("enqueue", "mail", "x", "--job-id", "bad id!"), "job"),
    ]:
        code, out, err = run_main(capsys, *at(store, *args))
        assert code == 2, (args, out, err)
        assert message in err, (args, err)
        assert err.count("\n") == 1


async def test_enqueue_reads_stdin(store: Path, ids: dict[str, str]) -> None:
    del ids
    result = await run_cli(*at(store, "enqueue", "mail", "--file", "-"), stdin=b"from\nstdin")
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.decode().split()[1]
    job = await read_job(store, job_id)
    assert job is not None
    assert job.payload == b"from\nstdin"


# ------------------------------------------------------------------------------ keep_done


def test_an_empty_done_listing_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    trio.run(lambda: prepare(store, keep_done=None))
    code, out, _ = run_main(capsys, *at(store, "jobs", "mail", "--status", "done"))
    assert code == 0
    assert "no done jobs in 'mail': 1 job(s) of 'mail' completed" in out
    assert "keep_done" in out
    document = run_json(capsys, *at(store, "jobs", "mail", "--status", "done"))
    assert document["jobs"] == []
    assert "keep_done" in document["note"]


# ------------------------------------------------------------------------------ database name


async def test_the_cli_default_database_is_the_librarys(tmp_path: Path) -> None:
    """The README's example store (`open_queue(path)`) is what `taquba inspect --store` reads."""
    data = tmp_path / "queue-data"
    async with taquba.open_queue(str(data)) as queue:
        await queue.enqueue("emails", b"hello@example.com")
    result = await run_cli("inspect", "--store", str(data))
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert "database: taquba" in out
    assert "emails" in out


def test_an_old_demo_database_gets_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def old_demo() -> None:
        async with taquba.open_queue(str(tmp_path / "old"), "demo") as queue:
            await queue.enqueue("documents", b"x")

    trio.run(old_demo)
    code, _, err = run_main(capsys, "inspect", "--store", str(tmp_path / "old"))
    assert code == 2
    assert "no database 'taquba'" in err
    assert "pass --db demo" in err
    code, out, _ = run_main(capsys, "inspect", "--store", str(tmp_path / "old"), "--db", "demo")
    assert code == 0
    assert "documents" in out


# ------------------------------------------------------------------------------ top


async def test_top_refreshes_until_sigint_then_exits_0(store: Path, ids: dict[str, str]) -> None:
    del ids
    args = ("-m", "taquba", *at(store, "top", "--interval", "0.2"))
    async with open_child(*args) as child:
        with trio.fail_after(HANG):
            for _ in range(2):
                await child.expect(lambda text: text.startswith("taquba top: ops at"))
            await child.expect(lambda text: "│ mail" in text)
            child.process.send_signal(signal.SIGINT)
            started = time.monotonic()
            await child.expect_exit(0)
            assert time.monotonic() - started < 5


def test_top_without_rich_names_the_extra(
    store: Path,
    ids: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    del ids
    monkeypatch.setitem(sys.modules, "rich.live", None)  # an import of it fails
    code, _, err = run_main(capsys, *at(store, "top"))
    assert code == 2
    assert 'pip install "taquba[cli]"' in err


# ------------------------------------------------------------------------------ plugins


def register_echo(commands: CliCommands) -> None:
    """A plugin (loaded through a real `EntryPoint` naming this function)."""
    parser = commands.add_command("echo", help="echo", description="echo the queues")
    actions = parser.add_subparsers(dest="action", required=True)
    show = actions.add_parser("queues", parents=[commands.reader_options])
    commands.set_handler(show, echo_queues)


async def echo_queues(args: Any, session: CliSession) -> int:
    del args
    async with session.open_reader() as reader:
        names = await reader.list_queues()
    session.emit({"queues": names})
    session.say(" ".join(names))
    return 0


def register_broken(commands: CliCommands) -> None:
    raise RuntimeError("broken on purpose")


def entry(name: str, function: str) -> EntryPoint:
    return EntryPoint(name, f"{__name__}:{function}", "taquba.cli")


def test_a_plugin_adds_a_command_and_a_broken_one_is_skipped(
    store: Path,
    ids: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    del ids
    plugins = [
        entry("echo", "register_echo"),
        entry("broken", "register_broken"),
        EntryPoint("missing", "no_such_module_here:register", "taquba.cli"),
    ]
    real = build_parser
    monkeypatch.setattr("taquba._cli.build_parser", lambda: real(plugins))
    code, out, err = run_main(capsys, *at(store, "echo", "queues"))
    assert code == 0
    assert out == "mail\n"
    assert "the command plugin 'broken'" in err
    assert "RuntimeError: broken on purpose" in err
    assert "the command plugin 'missing'" in err
    assert "inspect" in build_parser(plugins).format_help()
    assert json.loads(run_main(capsys, *at(store, "echo", "queues", "--json"))[1]) == {
        "queues": ["mail"]
    }


def test_a_plugin_cannot_replace_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    build_parser([entry("twice", "register_echo"), entry("again", "register_echo")])
    assert "'echo' exists already" in capsys.readouterr().err


# ------------------------------------------------------------------------------ the server path


@pytest.mark.slow
async def test_the_new_commands_through_a_real_server(store: Path, ids: dict[str, str]) -> None:
    """`taquba serve` owns the store: local writers are refused; --server goes through it."""
    pytest.importorskip("taquba_server._cli")
    args = ("-m", "taquba", "serve", "--store", str(store), "--name", "ops", "--port", "0")
    async with open_child(*args) as child:
        with trio.fail_after(240):  # a hang bound: a dozen CLI processes on a loaded machine
            line = await child.expect(lambda text: text.startswith("taquba-server listening on"))
            url = line.split()[-1]

            async def remote(*command: str, stdin: bytes = b"") -> Any:
                result = await run_cli(*command, "--server", url, "--json", stdin=stdin)
                assert result.returncode == 0, result.stderr
                return json.loads(result.stdout)

            refused = await run_cli(*at(store, "enqueue", "mail", "x"))
            assert refused.returncode == 1
            assert f"--server {url}" in refused.stderr.decode()

            shown = await remote("job", "show", ids["pending"])
            assert shown["job"]["headers"] == {"h": "v"}
            assert shown["history"] == []
            dead = await remote("job", "show", ids["dead"])
            assert dead["job"]["history_size"] == 1
            [attempt] = dead["history"]
            assert (attempt["attempt"], attempt["outcome"], attempt["error"]) == (
                1,
                "dead_lettered",
                "bad address",
            )
            made = await remote("enqueue", "mail", "remote", "--job-id", "r1", "--priority", "2")
            assert made == {"id": "r1", "created": True, "queue_name": "mail"}
            stdin_made = await remote("enqueue", "mail", "--file", "-", stdin=b"piped")
            assert stdin_made["created"] is True
            assert (await remote("job", "show", "r1"))["job"]["priority"] == 2
            assert await remote("job", "cancel", "r1") == {"job_id": "r1", "outcome": "removed"}
            purged = await remote("purge", "mail", "--dead", stdin=b"y\n")
            assert purged == {"queue_name": "mail", "status": "dead", "removed": 1}
            purged = await remote("purge", "mail", "--done", "--yes")
            assert purged["removed"] == 1
            listed = await remote("jobs", "mail", "--status", "done")
            assert listed["jobs"] == []
            assert "the server keeps no done records of 'mail'" in listed["note"]
            snapshot = await remote("top")
            assert snapshot["server"] == url
            assert snapshot["queues"][0]["pending"] == 2

            woken = await remote("job", "wake", ids["scheduled"], "approved")
            assert woken == {"job_id": ids["scheduled"], "outcome": "woken"}
            shown = await remote("job", "show", ids["scheduled"])
            assert shown["job"]["status"] == "pending"
            assert base64.b64decode(shown["job"]["wake_payload"]) == b"approved"
            again = await run_cli("job", "wake", ids["scheduled"], "--server", url)
            assert again.returncode == 1
            assert "is not scheduled" in again.stdout.decode()

            declined = await run_cli("purge", "mail", "--done", "--server", url, stdin=b"n\n")
            assert declined.returncode == 1
            child.process.send_signal(signal.SIGTERM)
            await child.expect_exit(0)
    assert (await read_job(store, ids["pending"])) is not None
    assert (await read_job(store, "r1")) is None
    woken_job = await read_job(store, ids["scheduled"])
    assert woken_job is not None and woken_job.wake_payload == b"approved"


def test_the_cli_api_conforms() -> None:
    import taquba.cli

    check_public_api(taquba.cli)
    assert {taquba.cli.CliSession.__module__, taquba.cli.CliCommands.__module__} == {"taquba.cli"}
    assert taquba.cli.job_json.__module__ == "taquba.cli"
