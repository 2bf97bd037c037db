"""The fault injector: each kind of fault lands where the real fault would."""

from __future__ import annotations

import pytest

import taquba
from taquba.testing import Fault, inject_faults, open_test_queue


async def _count(queue: taquba.Queue) -> int:
    return (await queue.stats("q")).pending


async def test_unknown_applies_the_write_and_reports_unavailable() -> None:
    async with open_test_queue() as queue:
        with inject_faults() as faults:
            faults.on_write(Fault.unknown())
            with pytest.raises(taquba.StorageUnavailable, match="outcome unknown"):
                await queue.enqueue("q", b"x", job_id="j1")
        assert faults.injected[0].site == "commit"
        assert faults.injected[0].durable
        assert (await queue.get_job("j1")) is not None


async def test_lost_reports_unavailable_and_applies_nothing() -> None:
    async with open_test_queue() as queue:
        with inject_faults() as faults:
            faults.on_write(Fault.lost())
            with pytest.raises(taquba.StorageUnavailable, match="outcome unknown"):
                await queue.enqueue("q", b"x", job_id="j1")
        assert (await queue.get_job("j1")) is None
        assert await _count(queue) == 0


@pytest.mark.parametrize(
    ("fault", "error"),
    [(Fault.unavailable(), taquba.StorageUnavailable), (Fault.permanent(), taquba.StorageError)],
)
async def test_failures_apply_nothing(fault: Fault, error: type[Exception]) -> None:
    async with open_test_queue() as queue:
        with inject_faults() as faults:
            faults.on_write(fault)
            with pytest.raises(error) as caught:
                await queue.enqueue("q", b"x", job_id="j1")
        assert caught.value.transient is (fault.kind == "unavailable")  # type: ignore[attr-defined]
        assert (await queue.get_job("j1")) is None
        # The queue keeps working afterwards.
        await queue.enqueue("q", b"x", job_id="j2")
        assert await _count(queue) == 1


async def test_a_conflict_is_retried_by_the_transaction_loop() -> None:
    async with open_test_queue() as queue:
        with inject_faults() as faults:
            faults.on_write(Fault.conflict(), times=3)
            await queue.enqueue("q", b"x", job_id="j1")
        assert [f.fault.kind for f in faults.injected] == ["conflict"] * 3
        assert await _count(queue) == 1


async def test_conflicts_only_hit_transactions_and_skip_counts_matches() -> None:
    async with open_test_queue() as queue:
        with inject_faults() as faults:
            faults.on_write(Fault.unavailable(), skip=1, durable=True)
            await queue.enqueue("q", b"x", job_id="j1")  # skipped
            with pytest.raises(taquba.StorageUnavailable):
                await queue.enqueue("q", b"x", job_id="j2")
            assert faults.armed == 0
            await queue.enqueue("q", b"x", job_id="j3")
        assert await _count(queue) == 2


async def test_read_faults() -> None:
    async with open_test_queue() as queue:
        await queue.enqueue("q", b"x", job_id="j1")
        with inject_faults() as faults:
            faults.on_read(Fault.unavailable())
            with pytest.raises(taquba.StorageUnavailable):
                await queue.get_job("j1")
            faults.on_read(Fault.slow(0.01))
            assert (await queue.get_job("j1")) is not None
        assert [f.site for f in faults.injected] == ["get", "get"]


async def test_slow_durability_past_the_deadline_is_an_unknown_outcome() -> None:
    async with open_test_queue(commit_deadline=0.2) as queue:
        with inject_faults() as faults:
            faults.on_write(Fault.slow(5.0))
            with pytest.raises(taquba.StorageUnavailable, match="outcome unknown"):
                await queue.enqueue("q", b"x", job_id="j1")
        assert (await queue.get_job("j1")) is not None


def test_bad_rules_are_usage_errors() -> None:
    with pytest.raises(taquba.UsageError):
        Fault("explode")  # type: ignore[arg-type]
    with pytest.raises(taquba.UsageError):
        Fault.slow(float("nan"))
    with inject_faults() as faults:
        with pytest.raises(taquba.UsageError):
            faults.on_read(Fault.unknown())
        with pytest.raises(taquba.UsageError):
            faults.on_write(Fault.lost(), probability=2)
        with pytest.raises(taquba.UsageError):
            faults.on_write(Fault.lost(), times=0)
