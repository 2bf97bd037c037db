"""Pure record and key encoding: markers, dedup records, result records."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taquba import DataError
from taquba_jobs._records import (
    DedupRecord,
    Marker,
    ResultRecord,
    StateRecord,
    decode_dedup,
    decode_marker,
    decode_result,
    decode_state,
    dedup_key,
    encode_dedup,
    encode_marker,
    encode_result,
    encode_state,
    expired_start_after,
    input_hash,
    marker_name,
    parse_marker_name,
    state_key,
    user_headers,
)

timestamps = st.integers(min_value=0, max_value=2**63)
ulids = st.text(alphabet="0123456789ABCDEFGHJKMNPQRSTVWXYZ", min_size=26, max_size=26)


@given(timestamps, ulids)
def test_marker_names_parse_back(at: int, job_id: str) -> None:
    assert parse_marker_name(marker_name(at, job_id)) == (at, job_id)


@given(timestamps, timestamps, ulids, ulids)
def test_newer_markers_sort_first(a: int, b: int, id_a: str, id_b: str) -> None:
    if a < b:
        assert marker_name(b, id_b) < marker_name(a, id_a)


@given(timestamps, st.integers(min_value=-5, max_value=2**63 + 5), ulids)
def test_start_after_selects_exactly_the_expired_markers(at: int, cutoff: int, job_id: str) -> None:
    """The listing bound: a marker sorts after it iff it finished strictly before the cutoff."""
    bound = expired_start_after(cutoff)
    if bound is None:
        assert cutoff <= 0
        assert not at < cutoff
        return
    assert (marker_name(at, job_id) > bound) == (at < cutoff)


def test_strict_cutoff_at_the_boundary() -> None:
    bound = expired_start_after(1_000)
    assert bound is not None
    assert marker_name(999, "A") > bound
    assert marker_name(1_000, "A") < bound
    assert marker_name(1_001, "A") < bound


@pytest.mark.parametrize(
    "name",
    [
        "",
        "123_abc",
        "x" * 20 + "_id",
        "18446744073709551615",
        "18446744073709551615_",
        "1/2",
        "99999999999999999999_x",
    ],
)
def test_foreign_names_are_not_markers(name: str) -> None:
    assert parse_marker_name(name) is None


def test_marker_timestamps_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="out of range"):
        marker_name(-1, "A")


def test_dedup_keys_separate_queues_and_keys() -> None:
    assert dedup_key("jobs", "a/b") != dedup_key("jobs/a", "b")
    assert dedup_key("q", "k").startswith(b"taquba-jobs/dedup/q\x00")


def test_input_hash_covers_the_job_name() -> None:
    assert input_hash("a", b"x") != input_hash("b", b"x")
    assert input_hash("a", b"x") == input_hash("a", b"x")
    assert input_hash("ab", b"c") != input_hash("a", b"bc")


def test_records_round_trip() -> None:
    dedup = DedupRecord("01J", "job", b"\x01" * 32)
    assert decode_dedup(encode_dedup(dedup)) == dedup
    marker = Marker("01J", "key")
    assert decode_marker(encode_marker(marker)) == marker
    assert decode_marker(encode_marker(Marker("01J", None))) == Marker("01J", None)
    ok = ResultRecord("01J", "job", "succeeded", b"\x01", None, None, True, 1, 5)
    assert decode_result(encode_result(ok)) == ResultRecord(
        "01J", "job", "succeeded", b"\x01", None, None, False, 1, 5
    )
    failed = ResultRecord("01J", "job", "failed", None, "builtins.ValueError", "m", True, 3, 5)
    assert decode_result(encode_result(failed)) == failed


@pytest.mark.parametrize("raw", [b"\xc1", b"\x01", b"\x81\xa1v\x02"])
def test_undecodable_records_raise(raw: bytes) -> None:
    for decode in (decode_dedup, decode_marker, decode_result):
        with pytest.raises(DataError):
            decode(raw)


@given(st.integers(min_value=1, max_value=2**31), st.binary())
def test_state_records_round_trip(attempt: int, value: bytes) -> None:
    record = StateRecord(attempt, value)
    assert decode_state(encode_state(record)) == record


@pytest.mark.parametrize(
    "raw",
    [
        b"\xc1",
        encode_marker(Marker("01H", None)).replace(b"job_id", b"job_xx"),
        encode_dedup(DedupRecord("01H", "j", b"h")),
    ],
)
def test_unreadable_state_records_are_data_errors(raw: bytes) -> None:
    with pytest.raises(DataError):
        decode_state(raw)


def test_state_keys_are_per_queue_and_job() -> None:
    assert state_key("jobs", "01H") == b"taquba-jobs/state/jobs\x0001H"
    assert state_key("jobs", "01H") != state_key("jobs2", "01H")
    assert not state_key("jobs", "01H").startswith(dedup_key("jobs", ""))


def test_user_headers_leave_out_the_runners_own() -> None:
    headers = {"taquba_jobs.job": "j", "taquba_jobs.key": "k", "tenant": "a", "taquba_job": "x"}
    assert user_headers(headers) == {"tenant": "a", "taquba_job": "x"}
