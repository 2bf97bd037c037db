"""Idempotent submission: one job per key and input, whatever state the first one is in."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
import trio

import taquba
from taquba import CancelOutcome, JobStatus, QueueConfig, Store
from taquba.testing import open_test_queue
from taquba_jobs import (
    InputMismatch,
    Job,
    JobCancelled,
    JobContext,
    JobFailed,
    JobRunner,
)
from taquba_jobs._records import dedup_key

FAST_RETRY = QueueConfig(retry_backoff_base=0, lease_duration=30)


@dataclass(frozen=True)
class Charge:
    account: str
    cents: int


class Ledger:
    """Counts executions per input, and lets a test hold jobs while they run."""

    def __init__(self) -> None:
        self.calls = Counter[str]()
        self.running = trio.Event()
        self.release = trio.Event()
        self.release.set()
        self.fail = False

    def job(self, name: str = "tests.charge") -> Job[Charge, str]:
        async def charge(ctx: JobContext, request: Charge) -> str:
            self.calls[request.account] += 1
            self.running.set()
            await self.release.wait()
            if self.fail:
                raise ValueError(f"declined {request.account}")
            return f"{request.account}:{request.cents}"

        return Job(charge, name=name, permanent_errors=(ValueError,))


def make_runner(queue: taquba.Queue, *jobs: Job[Any, Any]) -> JobRunner:
    return JobRunner(queue, jobs, poll_interval=0.05)


async def settled(queue: taquba.Queue, job_id: str) -> None:
    """Wait until the queue settled the job: a handle resolves just before the ack."""
    with trio.fail_after(30):  # a hang guard
        while await queue.get_job(job_id) is not None:  # noqa: ASYNC110 - watching storage
            await trio.sleep(0.01)


async def test_a_pending_duplicate_collapses_into_the_first_job(queue: taquba.Queue) -> None:
    charge = Ledger().job()
    runner = make_runner(queue, charge)
    first = await runner.submit(charge, Charge("a", 1), idempotency_key="k")
    second = await runner.submit(charge, Charge("a", 1), idempotency_key="k")
    assert first.newly_submitted
    assert not second.newly_submitted
    assert second.job_id == first.job_id
    assert (await queue.stats("jobs")).pending == 1


async def test_a_resubmit_while_the_first_job_runs_creates_no_second_job(
    queue: taquba.Queue, serving: Any
) -> None:
    """The reference enqueued a second job here (its dedup index is released at claim)."""
    ledger = Ledger()
    ledger.release = trio.Event()
    charge = ledger.job()
    runner = make_runner(queue, charge)
    async with serving(runner):
        first = await runner.submit(charge, Charge("a", 5), idempotency_key="pay-1")
        await ledger.running.wait()
        record = await queue.get_job(first.job_id)
        assert record is not None
        assert record.status is JobStatus.CLAIMED
        again = await runner.submit(charge, Charge("a", 5), idempotency_key="pay-1")
        assert again.job_id == first.job_id
        assert not again.newly_submitted
        stats = await queue.stats("jobs")
        assert (stats.pending, stats.scheduled, stats.claimed) == (0, 0, 1)
        ledger.release.set()
        assert await again.result() == "a:5"
    assert ledger.calls == {"a": 1}
    assert (await queue.stats("jobs")).done == 1


@pytest.mark.parametrize("store_kind", ["memory", "file"])
async def test_a_resubmit_after_completion_short_circuits_to_the_stored_outcome(
    request: pytest.FixtureRequest, store_kind: str, serving: Any
) -> None:
    """Reference §16 item 27: also after a restart, for successes and failures alike."""
    store: Store = request.getfixturevalue(f"{store_kind}_store")
    ledger = Ledger()
    charge = ledger.job()
    async with open_test_queue(store, config=FAST_RETRY) as queue:
        runner = make_runner(queue, charge)
        async with serving(runner):
            ok = await runner.submit(charge, Charge("ok", 1), idempotency_key="ok")
            assert await ok.result() == "ok:1"
            ledger.fail = True
            bad = await runner.submit(charge, Charge("bad", 1), idempotency_key="bad")
            with pytest.raises(JobFailed):
                await bad.result()
            again = await runner.submit(charge, Charge("ok", 1), idempotency_key="ok")
            assert (again.job_id, again.newly_submitted) == (ok.job_id, False)
    ledger.fail = False
    async with open_test_queue(store, config=FAST_RETRY) as queue:
        runner = make_runner(queue, charge)
        async with serving(runner):
            ok2 = await runner.submit(charge, Charge("ok", 1), idempotency_key="ok")
            bad2 = await runner.submit(charge, Charge("bad", 1), idempotency_key="bad")
            assert (ok2.job_id, ok2.newly_submitted) == (ok.job_id, False)
            assert (bad2.job_id, bad2.newly_submitted) == (bad.job_id, False)
            assert await ok2.result() == "ok:1"
            with pytest.raises(JobFailed, match="declined bad"):
                await bad2.result()
    assert ledger.calls == {"ok": 1, "bad": 1}


@pytest.mark.parametrize("store_kind", ["memory", "file"])
async def test_the_same_key_with_another_input_is_an_input_mismatch(
    request: pytest.FixtureRequest, store_kind: str
) -> None:
    """Reference §16 item 26: also after a restart."""
    store: Store = request.getfixturevalue(f"{store_kind}_store")
    ledger = Ledger()
    charge, other = ledger.job(), ledger.job("tests.other")
    async with open_test_queue(store) as queue:
        runner = make_runner(queue, charge, other)
        first = await runner.submit(charge, Charge("a", 1), idempotency_key="k")
        with pytest.raises(InputMismatch) as info:
            await runner.submit(charge, Charge("a", 2), idempotency_key="k")
        assert (info.value.key, info.value.job_id) == ("k", first.job_id)
        with pytest.raises(InputMismatch):
            await runner.submit(other, Charge("a", 1), idempotency_key="k")  # another job
    async with open_test_queue(store) as queue:
        runner = make_runner(queue, charge, other)
        with pytest.raises(InputMismatch):
            await runner.submit(charge, Charge("a", 2), idempotency_key="k")
        assert (await queue.stats("jobs")).pending == 1


async def test_racing_submissions_of_one_key_create_one_job(
    queue: taquba.Queue, serving: Any
) -> None:
    ledger = Ledger()
    charge = ledger.job()
    runner = make_runner(queue, charge)
    handles: list[Any] = []
    async with trio.open_nursery() as nursery:
        for _ in range(20):

            async def submit_one() -> None:
                handles.append(await runner.submit(charge, Charge("r", 1), idempotency_key="race"))

            nursery.start_soon(submit_one)
    assert len({h.job_id for h in handles}) == 1
    assert sum(h.newly_submitted for h in handles) == 1
    assert (await queue.stats("jobs")).pending == 1
    async with serving(runner):
        assert {await h.result() for h in handles} == {"r:1"}
    assert ledger.calls == {"r": 1}


async def test_keys_are_scoped_to_the_queue_name(queue: taquba.Queue) -> None:
    charge = Ledger().job()
    a = await make_runner(queue, charge).submit(charge, Charge("a", 1), idempotency_key="k")
    other = JobRunner(queue, [charge], queue_name="other")
    b = await other.submit(charge, Charge("a", 2), idempotency_key="k")
    assert b.newly_submitted
    assert a.job_id != b.job_id


async def test_a_cancelled_job_stays_the_answer_for_its_key(queue: taquba.Queue) -> None:
    charge = Ledger().job()
    runner = make_runner(queue, charge)
    first = await runner.submit(charge, Charge("c", 1), idempotency_key="cancel-me")
    assert await runner.cancel(first.job_id) is CancelOutcome.REMOVED
    again = await runner.submit(charge, Charge("c", 1), idempotency_key="cancel-me")
    assert (again.job_id, again.newly_submitted) == (first.job_id, False)
    with pytest.raises(JobCancelled):
        await again.result()


async def test_a_stale_record_whose_job_and_result_are_gone_is_replaced(
    queue: taquba.Queue, serving: Any
) -> None:
    """E.g. a retention sweep interrupted between the result and the dedup record."""
    ledger = Ledger()
    charge = ledger.job()
    runner = make_runner(queue, charge)
    async with serving(runner):
        first = await runner.submit(charge, Charge("s", 1), idempotency_key="stale")
        await first.result()
        await settled(queue, first.job_id)
        assert await queue.store.delete_blob(runner.result_path(first.job_id))
        assert await queue.kv_get(dedup_key("jobs", "stale")) is not None
        again = await runner.submit(charge, Charge("s", 1), idempotency_key="stale")
        assert again.newly_submitted
        assert again.job_id != first.job_id
        assert await again.result() == "s:1"
        with pytest.raises(InputMismatch):  # the replaced record still guards the key
            await runner.submit(charge, Charge("s", 2), idempotency_key="stale")
    assert ledger.calls == {"s": 2}


async def test_invalid_idempotency_keys_are_refused(queue: taquba.Queue) -> None:
    charge = Ledger().job()
    runner = make_runner(queue, charge)
    for key in ("", "k" * 1025):
        with pytest.raises(taquba.InvalidArgument, match="idempotency_key"):
            await runner.submit(charge, Charge("a", 1), idempotency_key=key)
