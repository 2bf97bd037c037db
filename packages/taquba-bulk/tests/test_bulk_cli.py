"""The ``taquba-bulk`` command: end to end in a subprocess, and its options in-process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from taquba_bulk._cli import build_parser, load_pipeline, main

PIPELINES = """
import os

import trio
from taquba_bulk import BulkCtx, Pipeline, PermanentStepError


class WordCount(Pipeline[dict, dict]):
    permanent_errors = (KeyError,)

    async def run(self, ctx: BulkCtx[dict]) -> dict:
        words = len(ctx.input["text"].split())
        ctx.record_cost("words", words)
        return {"words": words, "tenant": ctx.headers.get("tenant")}


word_count = WordCount()


async def shout(ctx):
    return ctx.input["text"].upper()


async def slow(ctx):
    # doc0 finishes at once; the others wait until the test creates `release` (it does once
    # it has sent SIGINT), so the batch cannot end before the interrupt, however slow the
    # machine.
    while ctx.input["id"] != "doc0" and not os.path.exists("release"):
        await trio.sleep(0.02)
    return ctx.input


class NeedsArguments(Pipeline[dict, dict]):
    def __init__(self, factor):
        self.factor = factor

    async def run(self, ctx):
        return ctx.input


not_a_pipeline = 42
"""


def write_inputs(path: Path, count: int, *, extra: list[str] | None = None) -> None:
    lines = [json.dumps({"id": f"doc{i}", "text": "word " * i}) for i in range(count)]
    path.write_text("\n".join([*lines, *(extra or [])]) + "\n", encoding="utf-8")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    module = f"pipes_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(PIPELINES, encoding="utf-8")
    (tmp_path / "module_name").write_text(module)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def module_of(workdir: Path) -> str:
    return (workdir / "module_name").read_text()


def read_records(path: Path) -> dict[str, dict[str, object]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    records = {row["run_id"]: row for row in rows}
    assert len(records) == len(rows)  # one record per item
    return records


def cli(workdir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taquba_bulk", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=workdir,
        check=False,
    )


def test_the_command_runs_and_resumes_a_batch_end_to_end(workdir: Path) -> None:
    write_inputs(workdir / "in.jsonl", 30)
    module = module_of(workdir)
    args = [
        "run",
        f"{module}:WordCount",
        "--input",
        "in.jsonl",
        "--output",
        "out.jsonl",
        "--store",
        str(workdir / "store"),
        "--header",
        "tenant=acme",
        "--key",
        "field:id",
    ]
    first = cli(workdir, *args)
    assert first.returncode == 0, first.stderr
    assert "30 items, complete: 30 succeeded, 0 failed" in first.stderr
    assert "cost words=435" in first.stderr
    records = read_records(workdir / "out.jsonl")
    assert sorted(records) == sorted(f"doc{i}" for i in range(30))
    assert records["doc3"] == {
        "run_id": "doc3",
        "status": "succeeded",
        "output": {"words": 3, "tenant": "acme"},
        "cost": {"words": 3.0},
    }
    again = cli(workdir, *args)
    assert again.returncode == 0, again.stderr
    assert "30 succeeded (30 from an earlier run)" in again.stderr
    assert read_records(workdir / "out.jsonl") == records  # rewritten from the store


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGINT delivery")
def test_sigint_drains_in_flight_items_and_a_rerun_finishes(workdir: Path) -> None:
    write_inputs(workdir / "in.jsonl", 40)
    args = [
        "run",
        f"{module_of(workdir)}:slow",
        "--input",
        "in.jsonl",
        "--output",
        "out.jsonl",
        "--store",
        str(workdir / "store"),
        # Submitted one by one, so doc0 is enqueued (and claimed) first: with concurrent
        # submission it could come after four items that wait for `release` and take every
        # slot, and the batch would wait for doc0 forever.
        "--submit-concurrency",
        "1",
        "--concurrency",
        "4",
        "--no-progress",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "taquba_bulk", *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out = workdir / "out.jsonl"
    deadline = time.monotonic() + 60  # a hang guard only
    while not (out.exists() and out.read_text().count("\n") >= 1):  # doc0 is done
        assert time.monotonic() < deadline, "no item finished"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    assert process.stderr is not None
    said: list[str] = []
    while not said or "stopping: draining the items in flight" not in said[-1]:
        said.append(process.stderr.readline())
        assert said[-1], "".join(said)  # it exited without saying it stops
    (workdir / "release").touch()  # it stopped taking items: those in flight may finish
    _, rest = process.communicate(timeout=60)
    stderr = "".join(said) + rest
    assert process.returncode == 130, stderr
    assert "stopped," in stderr and "pending" in stderr
    done_first = len(read_records(out))
    assert 0 < done_first < 40
    resumed = cli(workdir, *args[:-3], "--concurrency", "40")  # same batch, wider
    assert resumed.returncode == 0, resumed.stderr
    assert f"({done_first} from an earlier run)" in resumed.stderr, (stderr, resumed.stderr)
    assert len(read_records(out)) == 40


def run_main(*args: str) -> int:
    return main(list(args))


def test_usage_errors_exit_2(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = module_of(workdir)
    write_inputs(workdir / "in.jsonl", 3)
    store = str(workdir / "store")
    cases = [
        (["run", "nocolon", "--input", "in.jsonl", "--store", store], "MODULE:NAME"),
        (["run", "no_such_module:x", "--input", "in.jsonl", "--store", store], "cannot import"),
        (["run", f"{module}:missing", "--input", "in.jsonl", "--store", store], "no attribute"),
        (["run", f"{module}:not_a_pipeline", "--input", "in.jsonl", "--store", store], "not a"),
        (["run", f"{module}:NeedsArguments", "--input", "in.jsonl", "--store", store], "without"),
        (["run", f"{module}:shout", "--input", "missing.jsonl", "--store", store], "cannot read"),
        (["run", f"{module}:shout", "--input", "in.jsonl", "--store", "ftp://x"], "scheme"),
        (
            ["run", f"{module}:shout", "--input", "in.jsonl", "--store", store, "--key", "x"],
            "--key",
        ),
        (
            ["run", f"{module}:shout", "--input", "in.jsonl", "--store", store, "--output", "/"],
            "cannot write",
        ),
        (
            [
                "run",
                f"{module}:shout",
                "--input",
                "in.jsonl",
                "--store",
                store,
                "--key",
                "field:nope",
            ],
            "no field 'nope'",
        ),
    ]
    for argv, message in cases:
        assert run_main(*argv) == 2, argv
        assert message in capsys.readouterr().err, argv


def test_bad_input_lines_stop_the_run_unless_skipped(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = module_of(workdir)
    write_inputs(workdir / "in.jsonl", 3, extra=["{not json"])
    base = ["run", f"{module}:word_count", "--input", "in.jsonl", "--store", str(workdir / "s")]
    assert run_main(*base) == 2
    assert "line 4" in capsys.readouterr().err
    assert run_main(*base, "--skip-bad-lines", "--output", "out.jsonl") == 0
    err = capsys.readouterr().err
    assert "skipping input line 4" in err and "1 input lines skipped" in err
    assert len(read_records(workdir / "out.jsonl")) == 3


def test_input_that_is_not_utf8_exits_2(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "in.jsonl").write_bytes(b'"ok"\n"\xff\xfe"\n')
    code = run_main(
        "run", f"{module_of(workdir)}:shout", "--input", "in.jsonl", "--store", "memory://"
    )  # fmt: skip
    assert code == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_failures_over_the_threshold_exit_1(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = module_of(workdir)
    write_inputs(workdir / "in.jsonl", 4, extra=[json.dumps({"no": "text"})])
    base = ["run", f"{module}:WordCount", "--input", "in.jsonl", "--store", str(workdir / "s")]
    assert run_main(*base, "--failure-threshold", "0.1", "--max-attempts", "1") == 1
    err = capsys.readouterr().err
    assert "1 failed" in err and "failed: item-4" in err and "over the 10.0% threshold" in err
    assert run_main(*base, "--failure-threshold", "0.5") == 0  # failed items run again
    assert "4 succeeded (4 from an earlier run), 1 failed" in capsys.readouterr().err


def test_content_keys_stdin_and_stdout(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    module = module_of(workdir)
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"text": "a b"}\n{"text": "a b"}\n'))
    code = run_main(
        "run", f"{module}:shout", "--input", "-", "--output", "-", "--key", "content",
        "--store", "memory://", "--progress",
    )  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert len(rows) == 1 and rows[0]["output"] == "A B"  # identical lines: one item
    assert rows[0]["run_id"].startswith("item-") and len(rows[0]["run_id"]) == 69
    assert "1/1" in captured.err  # the forced progress bar


def test_the_parser_documents_every_option() -> None:
    help_text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()  # type: ignore[union-attr]
    for option in (
        "--input", "--output", "--store", "--db", "--queue-name", "--memo-prefix", "--key",
        "--header", "--concurrency", "--submit-concurrency", "--max-attempts",
        "--failure-threshold", "--poll-interval", "--shutdown-grace", "--skip-bad-lines",
        "--append", "--progress", "--no-progress",
    ):  # fmt: skip
        assert option in help_text
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "x:y", "--input", "i", "--store", "s", "--header", "x"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["run", "x:y", "--input", "i", "--store", "s", "--concurrency", "0"]
        )


def test_load_pipeline_accepts_instances_classes_and_functions(workdir: Path) -> None:
    module = module_of(workdir)
    for name in ("word_count", "WordCount", "shout"):
        assert load_pipeline(f"{module}:{name}") is not None
    assert os.getcwd() in sys.path
