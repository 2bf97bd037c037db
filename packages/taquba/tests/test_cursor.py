"""The claim cursor never hides a live pending key (hypothesis state machine + named cases)."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from taquba._cursor import Bound, ClaimCursor

keys_strategy = st.binary(min_size=1, max_size=2).map(lambda b: bytes(x % 6 for x in b))


class CursorMachine(RuleBasedStateMachine):
    """Storage is a set of committed keys; notifications may lag commits arbitrarily."""

    def __init__(self) -> None:
        super().__init__()
        self.cursor = ClaimCursor()
        self.live: set[bytes] = set()
        self.unnotified: list[bytes] = []

    @rule(key=keys_strategy)
    def commit(self, key: bytes) -> None:
        if key not in self.live:
            self.live.add(key)
            self.unnotified.append(key)

    @precondition(lambda self: self.unnotified)
    @rule(data=st.data())
    def notify(self, data: st.DataObject) -> None:
        key = self.unnotified.pop(data.draw(st.integers(0, len(self.unnotified) - 1)))
        self.cursor.note_insert(key)

    @rule(n=st.integers(1, 4), during=st.lists(st.tuples(keys_strategy, st.booleans()), max_size=3))
    def claim(self, n: int, during: list[tuple[bytes, bool]]) -> None:
        if self.cursor.known_empty:
            return
        ticket = self.cursor.begin_claim()
        snapshot = set(self.live)  # the claim's transaction begins after begin_claim
        # Inserts that commit (and maybe notify) while the claim is in flight.
        for key, notify_now in during:
            if key in self.live:
                continue
            self.live.add(key)
            if notify_now:
                self.cursor.note_insert(key)
            else:
                self.unnotified.append(key)
        bound = ticket.bound
        visible = sorted(k for k in snapshot if bound is None or bound.admits(k))
        taken = visible[:n]
        for key in taken:
            self.live.discard(key)
        self.cursor.finish_claim(ticket, taken[-1] if taken else None, ran_dry=len(taken) < n)

    @rule(key=keys_strategy)
    def requeue_claimed_key(self, key: bytes) -> None:
        """A reaper or nack restores a job at its original key (possibly behind the bound)."""
        self.commit(key)

    @invariant()
    def no_live_key_is_hidden(self) -> None:
        bound = self.cursor.bound
        for key in self.live:
            if key in self.unnotified:
                continue  # committed but not yet notified: allowed to be behind the bound
            assert bound is None or bound.admits(key), (key, bound)

    @invariant()
    def empty_means_empty(self) -> None:
        if self.cursor.known_empty:
            assert self.live <= set(self.unnotified), (self.live, self.unnotified)


CursorMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
TestCursorMachine = CursorMachine.TestCase


def test_insert_behind_the_bound_while_a_claim_is_in_flight_is_found() -> None:
    """Reference 0.8.0 fix 1: the in-flight claim must not overwrite the moved-back bound."""
    cursor = ClaimCursor(Bound(b"m", inclusive=False))
    ticket = cursor.begin_claim()
    cursor.note_insert(b"c")  # a nack requeue / higher-priority enqueue lands behind the bound
    cursor.finish_claim(ticket, b"p", ran_dry=False)
    assert cursor.bound is not None
    assert cursor.bound.admits(b"c")


def test_key_committed_out_of_order_during_a_claim_stays_claimable() -> None:
    """Reference 0.8.0 fix 2: ids A < B, B commits, a claim takes B, then A commits."""
    cursor = ClaimCursor()
    ticket = cursor.begin_claim()  # first claim after a restart: no bound yet
    cursor.note_insert(b"A")  # A commits while the claim (which saw only B) is in flight
    cursor.finish_claim(ticket, b"B", ran_dry=True)
    assert cursor.bound == Bound(b"A", inclusive=True)
    assert not cursor.known_empty


def test_requeue_of_the_key_being_claimed_is_not_skipped() -> None:
    """The claimed job requeued at the same key within the claim (lease expired mid-claim)."""
    cursor = ClaimCursor(Bound(b"a", inclusive=True))
    ticket = cursor.begin_claim()
    cursor.note_insert(b"k")
    cursor.finish_claim(ticket, b"k", ran_dry=False)
    assert cursor.bound == Bound(b"k", inclusive=True)


def test_emptiness_is_revoked_by_an_insert() -> None:
    cursor = ClaimCursor()
    ticket = cursor.begin_claim()
    cursor.finish_claim(ticket, None, ran_dry=True)
    assert cursor.known_empty
    cursor.note_insert(b"x")
    assert not cursor.known_empty
    assert cursor.bound == Bound(b"x", inclusive=True)


def test_insert_during_an_empty_claim_prevents_marking_empty() -> None:
    cursor = ClaimCursor()
    ticket = cursor.begin_claim()
    cursor.note_insert(b"x")
    cursor.finish_claim(ticket, None, ran_dry=True)
    assert not cursor.known_empty
