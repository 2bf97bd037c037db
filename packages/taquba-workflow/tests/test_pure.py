"""The pure cores: run ids, key and blob naming, terminal-marker order, records, delays."""

from __future__ import annotations

import dataclasses

import ormsgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import taquba
from taquba_workflow import (
    Cancel,
    Continue,
    Fail,
    InvalidRunId,
    RunOutcome,
    Succeed,
    TerminalStatus,
    UnserializableInput,
    WorkflowDataError,
    content_key,
    remaining_delay,
)
from taquba_workflow import _keys as keys
from taquba_workflow import _records as records

RUN_IDS = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-",
    min_size=1,
    max_size=128,
)


@pytest.mark.parametrize(
    ("run_id", "reason"),
    [
        ("", "must not be empty"),
        ("a" * 129, "maximum length of 128"),
        ("a/b", r"\[A-Za-z0-9_-\]"),
        ("..", r"\[A-Za-z0-9_-\]"),
        (".", r"\[A-Za-z0-9_-\]"),
        ("run 1", r"\[A-Za-z0-9_-\]"),
        ("é", r"\[A-Za-z0-9_-\]"),
        (None, "must be a str"),
    ],
)
def test_invalid_run_ids_are_rejected(run_id: object, reason: str) -> None:
    """Reference §16 item 24: an empty or path-like id never becomes a path segment."""
    with pytest.raises(InvalidRunId, match=reason) as info:
        keys.validate_run_id(run_id)
    assert info.value.run_id == run_id
    assert isinstance(info.value, ValueError)


@given(RUN_IDS)
def test_valid_run_ids_are_one_path_segment(run_id: str) -> None:
    assert keys.validate_run_id(run_id) == run_id
    prefix = "workflow-memo"
    assert keys.memo_dir(prefix, run_id).split("/") == [prefix, "memos", run_id]
    assert keys.outcome_path(prefix, run_id).split("/")[-1] == run_id
    assert keys.run_key("workflow", run_id) == f"workflow/workflow/runs/{run_id}".encode()


def test_memo_paths_hash_arbitrary_keys_into_one_segment() -> None:
    for key in ["", "a/b", "../..", " ", "ключ", "x" * 10_000]:
        path = keys.memo_path("p", "r", 3, key)
        head, digest = path.rsplit("/", 1)
        assert head == "p/memos/r/3"
        assert len(digest) == 64
    assert keys.memo_path("p", "r", 3, "a") != keys.memo_path("p", "r", 4, "a")


@pytest.mark.parametrize("prefix", ["", "/", "a//b", "a/./b", "../x", ".hidden", 3])
def test_bad_memo_prefixes_are_rejected(prefix: object) -> None:
    with pytest.raises(taquba.UsageError):
        keys.validate_memo_prefix(prefix)


def test_memo_prefix_is_normalised() -> None:
    assert keys.validate_memo_prefix("/a/b/") == "a/b"


@given(st.integers(0, 2**50), RUN_IDS)
def test_marker_names_round_trip(at_ms: int, run_id: str) -> None:
    assert keys.parse_marker_name(keys.marker_name(at_ms, run_id)) == (at_ms, run_id)


@pytest.mark.parametrize("name", ["", "x", "123_run", "1" * 20, f"{'9' * 20}_run", "1" * 20 + "_"])
def test_non_marker_names_do_not_parse(name: str) -> None:
    assert keys.parse_marker_name(name) is None


@given(
    st.lists(st.tuples(st.integers(0, 2**45), RUN_IDS), max_size=30),
    st.integers(0, 2**45),
)
def test_expired_markers_are_exactly_the_names_after_the_offset(
    markers: list[tuple[int, str]], cutoff: int
) -> None:
    """The sweep lists ``names > expired_after(cutoff)``: those, and only those, are older."""
    names = sorted(keys.marker_name(at, run) for at, run in markers)
    offset = keys.expired_after(cutoff)
    listed = [name for name in names if name > offset]
    expected = sorted(keys.marker_name(at, run) for at, run in markers if at < cutoff)
    assert listed == expected
    # Newest first: the listing of a sorted store is in descending time order.
    times = [keys.parse_marker_name(name)[0] for name in names]  # type: ignore[index]
    assert times == sorted(times, reverse=True)


def test_remaining_delay() -> None:
    """Reference §11.3 helper: 10 s stored at 1 s, read at 4 s -> 7 s; at 20 s -> 0."""
    assert remaining_delay(1_000, 4_000, 10_000) == 7_000
    assert remaining_delay(1_000, 20_000, 10_000) == 0
    assert remaining_delay(5_000, 4_000, 10_000) == 10_000  # clock before the stored time


def test_content_keys_are_deterministic_and_distinguish_inputs() -> None:
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1})
    assert content_key({"a": 1}) != content_key({"a": 2})
    assert content_key(("op", b"x")) != content_key(("op", "x"))
    assert content_key("x").startswith("content:")

    @dataclasses.dataclass
    class Prompt:
        model: str
        text: str

    assert content_key(Prompt("m", "t")) == content_key({"model": "m", "text": "t"})
    with pytest.raises(UnserializableInput):
        content_key(object())


@pytest.mark.parametrize(
    "outcome",
    [
        Continue(b"next"),
        Continue(b"later", delay=2.5),
        Succeed(b"result"),
        Succeed(b""),
        Fail("nope"),
        Cancel("stop"),
        Cancel(),
    ],
)
def test_replay_records_round_trip(outcome: object) -> None:
    raw = records.encode_replay(outcome, 1234)  # type: ignore[arg-type]
    decoded, stored_at, delay_ms = records.decode_replay(raw)
    assert decoded == outcome
    assert stored_at == 1234
    assert delay_ms == (2500 if isinstance(outcome, Continue) and outcome.delay else 0)


@pytest.mark.parametrize(
    "raw",
    [
        b"\xc1",
        ormsgpack.packb([1, 2]),
        ormsgpack.packb({"v": 99}),
        ormsgpack.packb({"v": 1, "stored_at_ms": 1}),
        ormsgpack.packb({"v": 1, "stored_at_ms": 1, "outcome": {"kind": "teleport"}}),
        ormsgpack.packb({"v": 1, "stored_at_ms": 1, "outcome": {"kind": "continue"}}),
        ormsgpack.packb(
            {"v": 1, "stored_at_ms": 1, "outcome": {"kind": "continue_after", "delay_ms": -1}}
        ),
    ],
)
def test_undecodable_records_raise_data_errors(raw: bytes) -> None:
    with pytest.raises(WorkflowDataError):
        records.decode_replay(raw)
    with pytest.raises(WorkflowDataError):
        records.decode_run(raw)


def test_run_and_outcome_records_round_trip() -> None:
    run = records.RunRecord("r", "inc", "h" * 64, 5, 2, "job", {"k": "v"})
    assert records.decode_run(run.encode()) == run
    assert run.advance("job2") == dataclasses.replace(run, step=3, job_id="job2")
    kv = records.OutcomeRecord("r", "inc", TerminalStatus.FAILED, 2, "x" * 100_000, 9)
    decoded = records.decode_outcome_record(kv.encode())
    assert decoded.error is not None and len(decoded.error) < 10_000  # fits a KV value
    outcome = RunOutcome("r", TerminalStatus.SUCCEEDED, b"res", None, {"h": "1"}, 4, 77)
    assert records.decode_outcome_blob(records.encode_outcome_blob(outcome, "inc")) == (
        outcome,
        "inc",
    )
    assert records.decode_cancel_incarnation(records.encode_cancel("inc", 3)) == "inc"


def test_continue_after_rejects_bad_delays() -> None:
    with pytest.raises(taquba.UsageError):
        Continue(b"", delay=-1)
    with pytest.raises(taquba.UsageError):
        Continue(b"", delay=float("inf"))
