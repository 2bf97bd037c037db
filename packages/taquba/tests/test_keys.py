"""Key layout: order-preserving encodings, no collisions between spaces or queues."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taquba import InvalidQueueName
from taquba import _keys as keys

queue_names = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40
)
ids = st.text(alphabet="0123456789ABCDEFGHJKMNPQRSTVWXYZ-_abc", min_size=1, max_size=30)
prio = st.integers(0, 2**32 - 1)
stamp = st.integers(0, 2**64 - 1)


@given(queue_names, prio, ids, prio, ids)
def test_pending_keys_order_by_priority_then_id(q: str, p1: int, i1: str, p2: int, i2: str) -> None:
    k1, k2 = keys.pending_key(q, p1, i1), keys.pending_key(q, p2, i2)
    assert (k1 < k2) == ((p1, i1.encode()) < (p2, i2.encode()))
    assert k1.startswith(keys.pending_prefix(q))


@given(stamp, queue_names, ids, stamp, queue_names, ids)
def test_time_first_keys_order_by_time_across_queues(
    t1: int, q1: str, i1: str, t2: int, q2: str, i2: str
) -> None:
    if t1 < t2:
        assert keys.scheduled_key(t1, q1, i1) < keys.scheduled_key(t2, q2, i2)
        assert keys.done_key(t1, q1, i1) < keys.done_key(t2, q2, i2)


@given(queue_names, queue_names, ids)
def test_a_queue_name_never_prefixes_another_queues_keys(q1: str, q2: str, job: str) -> None:
    if q1 != q2:
        assert not keys.pending_key(q2, 5, job).startswith(keys.pending_prefix(q1))
        assert not keys.dead_key(q2, job).startswith(keys.dead_prefix(q1))
        assert not keys.stats_delta_key(q2, 1).startswith(keys.stats_delta_prefix(q1))


@given(stamp, queue_names, ids, prio)
def test_job_keys_parse_back(t: int, q: str, job: str, p: int) -> None:
    assert keys.parse_job_key(keys.pending_key(q, p, job)) == keys.ParsedKey(
        keys.Space.PENDING, q, job, priority=p
    )
    assert keys.parse_job_key(keys.scheduled_key(t, q, job)).timestamp_ms == t
    assert keys.parse_job_key(keys.claimed_key(q, job)).queue == q
    assert keys.parse_queue_key(keys.stats_delta_key(q, 7)) == q


def test_no_space_prefixes_another() -> None:
    prefixes = [keys.space_prefix(space) for space in keys.Space]
    for a in prefixes:
        for b in prefixes:
            if a != b:
                assert not b.startswith(a)
    assert all(p < keys.space_prefix(keys.Space.USER) for p in prefixes[:-1])


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("x" * 256, "maximum length"),
        ("é" * 128, "maximum length"),
        ("tab\there", "control"),
        (b"bytes", "str"),
        (None, "str"),
    ],
)
def test_invalid_queue_names(name: object, reason: str) -> None:
    with pytest.raises(InvalidQueueName, match=reason):
        keys.validate_queue_name(name)


def test_longest_queue_name_is_accepted() -> None:
    assert keys.validate_queue_name("q" * 255) == "q" * 255


@given(queue_names, queue_names, st.integers(min_value=0, max_value=2**128 - 1))
def test_stats_delta_seq_reads_back_the_number_of_its_own_queue_only(
    q1: str, q2: str, seq: int
) -> None:
    key = keys.stats_delta_key(q1, seq)
    assert keys.stats_delta_seq(q1, key) == seq
    assert keys.stats_delta_seq(q1, key[:-1]) is None  # malformed: too short
    if q1 != q2:
        assert keys.stats_delta_seq(q2, key) is None
