"""read_jsonl, the sinks, and the live progress display."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

import taquba
from bulk_support import Recorder, bulk, opened
from taquba_bulk import (
    CostReport,
    InvalidInputLine,
    JsonlSink,
    MemorySink,
    NullSink,
    OutputRecord,
    OutputSink,
    ProgressSnapshot,
    TerminalStatus,
    read_jsonl,
)
from taquba_bulk._display import LiveProgress, stderr_is_terminal
from taquba_bulk._sinks import count_jsonl_items


def test_read_jsonl_skips_blank_lines_and_reports_bad_ones(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n\n  \n"text"\r\nnot json\n[1, 2]\n{"b": \n', encoding="utf-8")
    with pytest.raises(InvalidInputLine) as info:
        list(read_jsonl(path))
    assert info.value.line_number == 5 and info.value.line == "not json"
    assert "line 5" in str(info.value)
    errors: list[InvalidInputLine] = []
    values = list(read_jsonl(str(path), on_error=errors.append))
    assert values == [{"a": 1}, "text", [1, 2]]
    assert [e.line_number for e in errors] == [5, 7]
    assert count_jsonl_items(path) == 5


def test_read_jsonl_reads_any_iterable_of_lines_lazily() -> None:
    lines = iter(['{"n": 1}\n', "oops\n", '{"n": 2}\n'])
    reader = read_jsonl(lines)
    assert next(reader) == {"n": 1}
    with pytest.raises(InvalidInputLine):
        next(reader)
    assert list(read_jsonl(io.StringIO("1\n2\n"))) == [1, 2]
    with pytest.raises(taquba.UsageError):
        read_jsonl(42)  # type: ignore[arg-type]


def test_an_invalid_line_excerpt_is_short() -> None:
    error = InvalidInputLine(3, "x" * 500, "bad")
    assert len(str(error)) < 120 and error.reason == "bad"


def test_jsonl_sink_writes_one_object_per_line_with_the_run_id(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    records = [
        OutputRecord("a", TerminalStatus.SUCCEEDED, {"x": "é"}, None, CostReport({"usd": 0.5})),
        OutputRecord("b", TerminalStatus.FAILED, None, "boom"),
        OutputRecord("c", TerminalStatus.CANCELLED),
        OutputRecord("d", TerminalStatus.SUCCEEDED, None),
    ]
    with JsonlSink(path) as sink:
        for record in records:
            sink.write(record)
        sink.flush()
        assert sink.written == 4
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {"run_id": "a", "status": "succeeded", "output": {"x": "é"}, "cost": {"usd": 0.5}},
        {"run_id": "b", "status": "failed", "error": "boom"},
        {"run_id": "c", "status": "cancelled"},
        {"run_id": "d", "status": "succeeded", "output": None},
    ]
    assert '"é"' in lines[0]  # UTF-8, not escaped
    with JsonlSink(path, append=True) as sink:
        sink.write(records[1])
    assert len(path.read_text(encoding="utf-8").splitlines()) == 5
    sink.close()  # idempotent


def test_jsonl_sink_on_a_stream_leaves_it_open() -> None:
    stream = io.StringIO()
    sink = JsonlSink(stream)
    sink.write(OutputRecord("a", TerminalStatus.SUCCEEDED, 1))
    sink.close()
    assert not stream.closed and stream.getvalue() == (
        '{"run_id":"a","status":"succeeded","output":1}\n'
    )
    with pytest.raises(taquba.UsageError):
        JsonlSink(42)  # type: ignore[arg-type]


def test_the_bundled_sinks_are_output_sinks() -> None:
    for sink in (NullSink(), MemorySink(), JsonlSink(io.StringIO())):
        assert isinstance(sink, OutputSink)
    null = NullSink()
    null.write(OutputRecord("a", TerminalStatus.SUCCEEDED))
    null.flush()
    memory = MemorySink()
    memory.write(OutputRecord("a", TerminalStatus.FAILED))
    memory.write(OutputRecord("a", TerminalStatus.SUCCEEDED))
    memory.flush()
    assert memory.by_run_id()["a"].status is TerminalStatus.SUCCEEDED


async def test_a_batch_into_a_jsonl_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    async with opened() as queue:
        with JsonlSink(path) as sink:
            report = await bulk(queue, Recorder(), output=sink).run(
                read_jsonl(io.StringIO('"a"\n"bb"\n'))
            )
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert report.succeeded == 2
    assert sorted(row["run_id"] for row in rows) == ["item-0", "item-1"]
    assert {row["output"]["len"] for row in rows} == {1, 2}


def _snapshot(**overrides: object) -> ProgressSnapshot:
    fields: dict[str, object] = {
        "total": 10,
        "submitted_all": True,
        "admitted": 10,
        "completed": 4,
        "succeeded": 3,
        "failed": 1,
        "cancelled": 0,
        "skipped": 0,
        "elapsed": 2.0,
        "rate": 2.0,
        "eta": 3.0,
        "cost": CostReport({"tokens": 12}),
    }
    fields.update(overrides)
    return ProgressSnapshot(**fields)  # type: ignore[arg-type]


def test_the_live_progress_bar_renders_counts_rate_eta_and_cost() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=150, color_system=None)
    with LiveProgress("bulk demo", console=console) as display:
        display.update(_snapshot())
        display.update(_snapshot(completed=10, succeeded=9, eta=0.0))
    text = out.getvalue()
    assert "bulk demo" in text and "4/10" in text and "10/10" in text
    assert "ok 3 failed 1" in text and "2.0/s" in text and "eta 0:03" in text
    assert "tokens=12" in text


def test_the_progress_bar_is_off_without_a_terminal() -> None:
    assert stderr_is_terminal() is False  # pytest captures stderr


async def test_progress_true_draws_even_without_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with opened() as queue:
        await bulk(queue, Recorder(), progress=True).run(["a", "b"])
    err = capsys.readouterr().err
    assert "2/2" in err
