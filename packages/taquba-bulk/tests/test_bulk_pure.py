"""The pure cores: item accounting (property-tested), encodings, key rules, cost reports."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

import taquba
from taquba_bulk import (
    CostReport,
    DuplicateItemKey,
    InvalidItemKey,
    OutputRecord,
    TerminalStatus,
    UnserializableItem,
    key_by_content,
)
from taquba_bulk import _codec as codec
from taquba_bulk._tally import Observation, Tally

RUN_IDS = [f"item-{i}" for i in range(6)]
STATUSES = list(TerminalStatus)


class TallyMachine(RuleBasedStateMachine):
    """Admissions, hook observations (repeated, before the commit) and confirmations arrive in
    any order; an item is counted once, and the batch is done exactly when sealed and every
    admitted item's end has committed."""

    def __init__(self) -> None:
        super().__init__()
        self.tally = Tally()
        self.admitted: set[str] = set()
        self.committed: dict[str, TerminalStatus] = {}  # the database's truth
        self.records: list[OutputRecord] = []

    run_ids = Bundle("run_ids")

    @rule(target=run_ids, run_id=st.sampled_from(RUN_IDS))
    def pick(self, run_id: str) -> str:
        return run_id

    @rule(run_id=run_ids)
    def admit(self, run_id: str) -> None:
        if self.tally.sealed:
            return
        assert self.tally.admit(run_id, "digest") is (run_id not in self.admitted)
        self.admitted.add(run_id)
        self.records += self.tally.take_records()

    @rule(run_id=run_ids, status=st.sampled_from(STATUSES))
    def observe(self, run_id: str, status: TerminalStatus) -> None:
        if run_id in self.committed:
            return  # an ended run is never delivered again
        self.tally.observe(run_id, Observation(status, {"v": run_id}, None, CostReport({"c": 1})))

    @rule(run_id=run_ids, status=st.sampled_from(STATUSES))
    def commit_and_confirm(self, run_id: str, status: TerminalStatus) -> None:
        status = self.committed.setdefault(run_id, status)
        self.tally.confirm(run_id, status)
        self.records += self.tally.take_records()

    @rule(run_id=run_ids)
    def confirm_again(self, run_id: str) -> None:
        if run_id in self.committed:
            self.tally.confirm(run_id, self.committed[run_id])
            self.records += self.tally.take_records()

    @rule()
    def seal(self) -> None:
        self.tally.seal()
        self.records += self.tally.take_records()

    @invariant()
    def counted_once_and_never_early(self) -> None:
        ids = [record.run_id for record in self.records]
        assert len(ids) == len(set(ids))
        assert set(ids) <= self.admitted
        assert set(ids) == {r for r in self.admitted if r in self.committed}
        for record in self.records:
            assert record.status is self.committed[record.run_id]
        tally = self.tally
        assert tally.completed == len(ids) == tally.succeeded + tally.failed + tally.cancelled
        assert tally.cost.get("c") <= len(ids)
        expected_done = tally.sealed and all(r in self.committed for r in self.admitted)
        assert tally.done is expected_done
        if tally.sealed:
            assert tally.total == len(self.admitted)


TestTally = TallyMachine.TestCase
TestTally.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)


def test_tally_finished_earlier_counts_as_skipped_success() -> None:
    tally = Tally(expected_total=3)
    assert tally.total == 3
    tally.admit("a", "d")
    tally.finish_earlier("a", {"x": 1}, CostReport({"usd": 2}))
    tally.finish_earlier("a", {"x": 1}, CostReport({"usd": 2}))
    assert (tally.completed, tally.succeeded, tally.skipped) == (1, 1, 1)
    assert tally.cost == CostReport({"usd": 2})
    assert [r.output for r in tally.take_records()] == [{"x": 1}]
    with pytest.raises(DuplicateItemKey):
        tally.admit("a", "other digest")


def test_tally_disagreeing_observation_keeps_the_committed_status() -> None:
    tally = Tally()
    tally.admit("a", "d")
    tally.observe("a", Observation(TerminalStatus.SUCCEEDED, {"out": 1}, None, None))
    tally.confirm("a", TerminalStatus.FAILED, "the committed error")
    (record,) = tally.take_records()
    assert record.status is TerminalStatus.FAILED and record.output is None
    assert record.error == "the committed error"


def test_tally_snapshot_rates_and_eta() -> None:
    tally = Tally()
    snapshot = tally.snapshot(0.0)
    assert snapshot.total is None and snapshot.rate == 0 and snapshot.eta is None
    for run_id in ("a", "b", "c", "d"):
        tally.admit(run_id, "d")
    tally.seal()
    assert tally.snapshot(1.0).eta is None  # no progress yet: no estimate
    tally.finish_earlier("a", None, CostReport())
    tally.confirm("b", TerminalStatus.SUCCEEDED)
    snapshot = tally.snapshot(2.0)
    assert snapshot.rate == 0.5  # skipped items do not count toward the rate
    assert snapshot.eta == 4.0 and snapshot.remaining == 2 and not snapshot.done


def test_a_confirmation_for_an_unknown_run_is_dropped_after_sealing() -> None:
    tally = Tally()
    tally.seal()
    tally.observe("z", Observation(TerminalStatus.SUCCEEDED, 1, None, None))
    tally.confirm("z", TerminalStatus.SUCCEEDED)
    tally.confirm("y", None)
    assert tally.completed == 0 and tally.done and tally.take_records() == []


# --------------------------------------------------------------------------- encodings

json_data = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=15,
)


@given(json_data)
def test_json_data_round_trips_through_items_envelopes_and_json(value: Any) -> None:
    assert codec.json_problem(value) is None
    payload = codec.encode_item(value)
    assert codec.decode_item(payload) == value
    cost = CostReport({"tokens": 3})
    envelope = codec.decode_envelope(codec.encode_envelope(codec.digest(payload), value, cost))
    assert envelope.output == value and envelope.cost == cost
    assert envelope.input_digest == codec.digest(payload)
    record = OutputRecord("r", TerminalStatus.SUCCEEDED, value)
    assert json.loads(json.dumps(record.to_json_dict()))["output"] == value


@given(st.dictionaries(st.text(), st.integers(-(2**63), 2**63 - 1), max_size=6))
def test_item_payloads_and_content_keys_ignore_map_order(mapping: dict[str, int]) -> None:
    reordered = dict(reversed(list(mapping.items())))
    assert codec.encode_item(mapping) == codec.encode_item(reordered)
    assert key_by_content(mapping) == key_by_content(reordered)
    assert codec.validate_key(key_by_content(mapping)).startswith("item-")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"x", "bytes"),
        ({1: "a"}, "map key of type int"),
        (float("nan"), "non-finite"),
        ([{"a": {"b": object()}}], "object"),
        ((1, 2), None),
    ],
)
def test_json_problem(value: Any, problem: str | None) -> None:
    found = codec.json_problem(value)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_json_problem_bounds_the_depth() -> None:
    deep: Any = []
    for _ in range(300):
        deep = [deep]
    assert "nested" in (codec.json_problem(deep) or "")


def test_memo_entries() -> None:
    raw = codec.encode_memo({1: b"x", "y": [1.5]}, None)
    assert codec.decode_memo(raw) == ({1: b"x", "y": [1.5]}, None)
    raw = codec.encode_memo("v", CostReport({"usd": 0.5}))
    assert codec.decode_memo(raw) == ("v", CostReport({"usd": 0.5}))
    for bad in (b"\xc1", codec.pack({"format": 2, "value": 1}), codec.pack([1])):
        with pytest.raises(ValueError):  # noqa: PT011 - the internal error type
            codec.decode_memo(bad)
    with pytest.raises(ValueError):  # noqa: PT011
        codec.decode_memo(codec.pack({"format": 1, "value": 1, "cost": {"x": "y"}}))
    assert codec.memo_key("abc", "k") == "bulk:abc:k"


def test_envelope_rejects_what_it_did_not_write() -> None:
    for bad in (b"\xc1", codec.pack({"format": 1}), codec.pack("x")):
        with pytest.raises(ValueError):  # noqa: PT011
            codec.decode_envelope(bad)
    with pytest.raises(ValueError):  # noqa: PT011
        codec.decode_envelope(codec.pack({"format": 1, "input": "d", "cost": {"x": math.inf}}))


@pytest.mark.parametrize("key", ["a", "A-b_9", "x" * 128])
def test_valid_keys(key: str) -> None:
    assert codec.validate_key(key) == key


@pytest.mark.parametrize("key", ["", "x" * 129, "a b", "a/b", "..", "é", None, 3])
def test_invalid_keys(key: Any) -> None:
    with pytest.raises(InvalidItemKey) as info:
        codec.validate_key(key)
    assert info.value.key == key and info.value.reason


def test_positional_keys_and_unserializable_items() -> None:
    assert codec.positional_key(7) == "item-7"

    @dataclass
    class Point:
        x: int

    assert codec.decode_item(codec.encode_item(Point(1))) == {"x": 1}
    with pytest.raises(UnserializableItem):
        codec.encode_item(object())
    with pytest.raises(UnserializableItem):
        key_by_content({1: "non-str key"})
    with pytest.raises(ValueError):  # noqa: PT011
        codec.decode_item(b"\xc1")


@pytest.mark.parametrize(
    ("failed", "total", "threshold", "exceeded"),
    [
        (0, 10, 0.0, False),
        (1, 10, 0.0, True),
        (2, 10, 0.2, False),
        (3, 10, 0.2, True),
        (10, 10, 1.0, False),
        (5, 0, 0.0, False),
        (5, 10, None, False),
    ],
)
def test_threshold(failed: int, total: int, threshold: float | None, exceeded: bool) -> None:
    assert codec.threshold_exceeded(failed, total, threshold) is exceeded


# ------------------------------------------------------------------------- cost reports

counters = st.dictionaries(
    st.text(min_size=1, max_size=5),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    max_size=5,
)


@given(counters, counters)
def test_cost_reports_merge_and_serialize(a: dict[str, float], b: dict[str, float]) -> None:
    left, right = CostReport(a), CostReport(b)
    merged = left.copy()
    merged.merge(right)
    for metric in set(a) | set(b):
        assert merged.get(metric) == a.get(metric, 0.0) + b.get(metric, 0.0)
    assert CostReport.from_dict(merged.to_dict()) == merged
    assert list(merged) == sorted(set(a) | set(b)) == [k for k, _ in merged.items()]
    assert len(merged) == len(set(a) | set(b))
    assert left == CostReport(a)  # copy() is independent


def test_cost_report_basics() -> None:
    cost = CostReport()
    assert not cost and cost.get("x") == 0.0 and cost.summary() == "-"
    cost.record("tokens", 1200)
    cost.record("usd", 0.0031)
    cost.record("calls")
    assert cost and "tokens" in cost and "nope" not in cost
    assert cost.summary() == "calls=1 tokens=1200 usd=0.0031"
    assert repr(cost) == "CostReport({'calls': 1.0, 'tokens': 1200.0, 'usd': 0.0031})"
    assert cost != "x"
    with pytest.raises(TypeError):
        hash(cost)
    for metric, amount in (("", 1), (3, 1), ("x", math.nan), ("x", "1"), ("x", True)):
        with pytest.raises(taquba.UsageError):
            cost.record(metric, amount)  # type: ignore[arg-type]
    with pytest.raises(taquba.UsageError):
        cost.merge({"x": 1})  # type: ignore[arg-type]
    with pytest.raises(taquba.UsageError):
        CostReport.from_dict([("x", 1)])  # type: ignore[arg-type]
