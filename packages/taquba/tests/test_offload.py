"""Payload offload (`QueueConfig.payload_offload_threshold`, `JobRecord.payload_ref`).

Run on memory, local-disk and S3 (moto) stores. The promise: a payload above the threshold
lives in an object of its own, written before the enqueue's transaction under a fresh name;
records keep a reference and never rewrite it; claims and reads return the payload; the
object goes after the commit that removes the job's last record (and after an enqueue that
created nothing), stays for a dead job, and a failed write leaves nothing behind. A missing
object is `PayloadMissing` for a live job; a job removed meanwhile reads as absent, a settled
(done or dead) one with an empty payload, and a wait goes on through a live job's missing object.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio

import taquba
from taquba import (
    CancelOutcome,
    Effects,
    EnqueueRequest,
    InvalidArgument,
    JobRecord,
    JobStatus,
    MockClock,
    PayloadMissing,
    QueueConfig,
    StorageError,
    StorageUnavailable,
    Store,
)
from taquba._payloads import payload_dir
from taquba._records import decode_job, encode_job
from taquba.testing import Fault, inject_faults

FAST = {"flush_interval": 0.005, "reaper_interval": 3600.0, "scheduler_interval": 3600.0}
THRESHOLD = 16
CONFIG = QueueConfig(
    lease_duration=10, retry_backoff_base=0, max_attempts=2, payload_offload_threshold=THRESHOLD
)
QUEUES = {
    "kept": QueueConfig(lease_duration=10, keep_done=60, payload_offload_threshold=THRESHOLD),
    "dying": QueueConfig(
        lease_duration=10, max_attempts=1, dead_retention=60, payload_offload_threshold=THRESHOLD
    ),
    "inline": QueueConfig(lease_duration=10),
}
BIG = b"B" * 100
SMALL = b"s" * THRESHOLD  # at the threshold: stays inline


@pytest.fixture
def clock() -> MockClock:
    return MockClock()


@pytest.fixture
async def queue(store: Store, clock: MockClock) -> AsyncIterator[taquba.Queue]:
    async with taquba.open_queue(
        store, "off", config=CONFIG, queues=QUEUES, clock=clock, **FAST
    ) as q:
        yield q


async def objects(queue: taquba.Queue) -> list[str]:
    """The names of the payload objects of the queue's database."""
    return await queue.store.list_blobs(payload_dir(queue.store, queue.name))


async def stored(queue: taquba.Queue, job_id: str) -> JobRecord | None:
    """The job's record as stored (not materialized)."""
    found = await queue._locate(job_id)
    return decode_job(found[1]) if found is not None else None


async def claim(queue: taquba.Queue, name: str = "w") -> taquba.Claim:
    got = await queue.claim(name)
    assert got is not None
    return got


def patch_store(
    monkeypatch: pytest.MonkeyPatch, method: str, make: Callable[[Any], Any]
) -> list[str]:
    """Replace ``Store.<method>`` with ``make(original)``; return the paths it was called with."""
    original = getattr(Store, method)
    calls: list[str] = []
    replacement = make(original)

    async def recorded(self: Store, path: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(path)
        return await replacement(self, path, *args, **kwargs)

    monkeypatch.setattr(Store, method, recorded)
    return calls


# ---------------------------------------------------------------------------- config, records


@pytest.mark.parametrize("value", [-1, True, 1.5, "10", 2**63])
def test_the_threshold_is_validated(value: object) -> None:
    with pytest.raises(InvalidArgument) as caught:
        QueueConfig(payload_offload_threshold=value)  # type: ignore[arg-type]
    assert caught.value.argument == "payload_offload_threshold"


def test_the_ref_round_trips_and_is_left_out_when_unset() -> None:
    job = JobRecord(
        id="j",
        queue_name="q",
        payload=b"",
        status=JobStatus.PENDING,
        priority=1,
        attempts=0,
        max_attempts=1,
        enqueued_at=0,
        payload_ref="01REF",
    )
    assert decode_job(encode_job(job)) == job
    assert b"payload_ref" not in encode_job(job.replace(payload_ref=None))


# ---------------------------------------------------------------------------- round trips


async def test_a_large_payload_is_offloaded_and_materialized(queue: taquba.Queue) -> None:
    job = await queue.enqueue("w", BIG)
    [name] = await objects(queue)
    record = await stored(queue, job.id)
    assert record is not None
    assert record.payload == b""
    assert record.payload_ref == name
    got = await queue.get_job(job.id)
    assert got is not None
    assert (got.payload, got.payload_ref) == (BIG, name)
    [listed] = (await queue.list_jobs("w", JobStatus.PENDING)).jobs
    assert listed.payload == BIG
    first = await claim(queue)
    assert first.payload == BIG
    assert first.job.payload_ref == name
    # Transitions keep the stored form: the claimed record still has no inline payload.
    record = await stored(queue, job.id)
    assert record is not None
    assert (record.status, record.payload, record.payload_ref) == (JobStatus.CLAIMED, b"", name)
    await queue.nack(first, "again")
    again = await claim(queue)
    assert (again.payload, again.attempts) == (BIG, 2)
    assert await objects(queue) == [name]
    await queue.ack(again)
    assert await objects(queue) == []
    assert await queue.get_job(job.id) is None


async def test_payloads_at_the_threshold_or_on_other_queues_stay_inline(
    queue: taquba.Queue,
) -> None:
    small = await queue.enqueue("w", SMALL)
    other = await queue.enqueue("inline", BIG)
    assert await objects(queue) == []
    for job_id, payload in ((small.id, SMALL), (other.id, BIG)):
        record = await stored(queue, job_id)
        assert record is not None
        assert (record.payload, record.payload_ref) == (payload, None)
    assert (await claim(queue, "inline")).payload == BIG


async def test_a_scheduled_job_offloads_and_materializes_after_promotion(
    queue: taquba.Queue, clock: MockClock
) -> None:
    job = await queue.enqueue("w", BIG, delay=5)
    assert len(await objects(queue)) == 1
    clock.advance(6)
    assert await queue.promote_scheduled_now() == 1
    got = await claim(queue)
    assert (got.id, got.payload) == (job.id, BIG)


# ---------------------------------------------------------------------------- deletion


async def test_dead_letter_keeps_the_object_and_requeue_delivers_it(
    queue: taquba.Queue,
) -> None:
    job = await queue.enqueue("w", BIG)
    await queue.dead_letter(await claim(queue), "no")
    assert len(await objects(queue)) == 1
    [dead] = await queue.dead_jobs("w")
    assert dead.payload == BIG
    await queue.requeue_dead_job(dead)
    again = await claim(queue)
    assert (again.id, again.payload) == (job.id, BIG)
    await queue.ack(again)
    assert await objects(queue) == []


async def test_the_reaper_keeps_the_object(queue: taquba.Queue, clock: MockClock) -> None:
    await queue.enqueue("dying", BIG)
    await claim(queue, "dying")
    clock.advance(11)
    assert await queue.reap_now() == 1
    [dead] = await queue.dead_jobs("dying")
    assert dead.payload == BIG
    assert len(await objects(queue)) == 1


async def test_kept_done_jobs_keep_the_object_until_the_sweep(
    queue: taquba.Queue, clock: MockClock
) -> None:
    job = await queue.enqueue("kept", BIG)
    await queue.ack(await claim(queue, "kept"))
    done = await queue.get_job(job.id)
    assert done is not None
    assert (done.status, done.payload) == (JobStatus.DONE, BIG)
    assert len(await objects(queue)) == 1
    clock.advance(61)
    assert await queue.sweep_now() == 1
    assert await objects(queue) == []


async def test_the_dead_sweep_and_purge_delete_objects(
    queue: taquba.Queue, clock: MockClock
) -> None:
    await queue.enqueue("dying", BIG)
    await queue.nack(await claim(queue, "dying"), "boom")
    clock.advance(61)
    assert await queue.sweep_now() == 1
    assert await objects(queue) == []
    await queue.enqueue("dying", BIG)
    await queue.nack(await claim(queue, "dying"), "boom")
    assert len(await objects(queue)) == 1
    assert await queue.purge("dying", JobStatus.DEAD) == 1
    assert await objects(queue) == []


async def test_cancel_deletes_the_object_of_a_pending_or_scheduled_job_only(
    queue: taquba.Queue,
) -> None:
    pending = await queue.enqueue("w", BIG)
    scheduled = await queue.enqueue("w", BIG, delay=60)
    assert len(await objects(queue)) == 2
    assert await queue.cancel(pending.id) is CancelOutcome.REMOVED
    assert await queue.cancel(scheduled.id) is CancelOutcome.REMOVED
    assert await objects(queue) == []
    claimed = await queue.enqueue("w", BIG)
    got = await claim(queue)
    assert await queue.cancel(claimed.id) is CancelOutcome.REQUESTED
    assert len(await objects(queue)) == 1
    await queue.ack(got)
    assert await objects(queue) == []


async def test_a_failed_delete_after_an_ack_still_acks(
    queue: taquba.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await queue.enqueue("w", BIG)
    got = await claim(queue)

    def failing(original: Any) -> Any:
        async def delete(self: Store, path: str) -> bool:
            raise StorageUnavailable("injected: delete failed")

        return delete

    calls = patch_store(monkeypatch, "delete_blob", failing)
    await queue.ack(got)  # no error: the object is orphaned
    assert len(calls) == 1
    assert await queue.get_job(job.id) is None
    assert len(await objects(queue)) == 1


# ---------------------------------------------------------------------------- losing enqueues


async def test_a_dedup_hit_deletes_the_new_object_and_keeps_the_existing_one(
    queue: taquba.Queue,
) -> None:
    first = await queue.enqueue("w", BIG, dedup_key="k")
    [name] = await objects(queue)
    second = await queue.enqueue("w", BIG + b"2", dedup_key="k")
    assert (second.id, second.created) == (first.id, False)
    assert await objects(queue) == [name]
    results = await queue.enqueue_batch(
        [
            EnqueueRequest(queue_name="w", payload=BIG, dedup_key="k"),
            EnqueueRequest(queue_name="w", payload=BIG),
        ]
    )
    assert [r.created for r in results] == [False, True]
    assert len(await objects(queue)) == 2
    got = await queue.get_job(first.id)
    assert got is not None
    assert got.payload == BIG


async def test_a_duplicate_id_keeps_the_live_jobs_object(queue: taquba.Queue) -> None:
    await queue.enqueue("w", BIG, job_id="same")
    [name] = await objects(queue)
    with pytest.raises(taquba.DuplicateJobId):
        await queue.enqueue("w", b"X" * 100, job_id="same")
    assert await objects(queue) == [name]
    got = await queue.get_job("same")
    assert got is not None
    assert got.payload == BIG


async def test_a_kv_conflict_deletes_the_object(queue: taquba.Queue) -> None:
    await queue.kv_put(b"k", b"1")
    with pytest.raises(taquba.KvConflict):
        await queue.enqueue("w", BIG, kv_expect={b"k": None})
    assert await objects(queue) == []


async def test_a_failed_object_write_fails_the_enqueue_with_nothing_written(
    queue: taquba.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(original: Any) -> Any:
        async def put(self: Store, path: str, data: bytes, **kwargs: Any) -> bool:
            raise StorageUnavailable("injected: put failed")

        return put

    patch_store(monkeypatch, "put_blob", failing)
    with pytest.raises(StorageUnavailable, match="put failed"):
        await queue.enqueue("w", BIG, job_id="j1")
    monkeypatch.undo()
    assert await queue.get_job("j1") is None
    assert (await queue.stats("w")).pending == 0
    assert await objects(queue) == []
    assert await queue.claim("w") is None


async def test_a_batch_deletes_its_earlier_objects_when_a_write_fails(
    queue: taquba.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    def third_fails(original: Any) -> Any:
        count = [0]

        async def put(self: Store, path: str, data: bytes, **kwargs: Any) -> bool:
            count[0] += 1
            if count[0] == 3:
                raise StorageError("injected: put failed")
            return await original(self, path, data, **kwargs)

        return put

    calls = patch_store(monkeypatch, "put_blob", third_fails)
    requests = [EnqueueRequest(queue_name="w", payload=BIG, job_id=f"j{i}") for i in range(4)]
    requests.insert(1, EnqueueRequest(queue_name="w", payload=SMALL, job_id="small"))
    with pytest.raises(StorageError, match="put failed"):
        await queue.enqueue_batch(requests)
    assert len(calls) == 3  # two written, the third failed, the fourth never tried
    assert await objects(queue) == []
    assert (await queue.stats("w")).pending == 0
    monkeypatch.undo()
    results = await queue.enqueue_batch(requests)
    assert all(r.created for r in results)
    assert len(await objects(queue)) == 4
    payloads = {c.id: c.payload for c in await queue.claim_batch("w", 10)}
    assert payloads == {"small": SMALL, **{f"j{i}": BIG for i in range(4)}}


async def test_an_unknown_commit_outcome_keeps_the_object_of_a_committed_job(
    queue: taquba.Queue,
) -> None:
    with inject_faults() as faults:
        faults.on_write(Fault.unknown(), durable=True)
        with pytest.raises(StorageUnavailable):
            await queue.enqueue("w", BIG, job_id="applied")
    got = await queue.get_job("applied")  # the write landed: its object must stay
    assert got is not None
    assert got.payload == BIG
    with inject_faults() as faults:
        faults.on_write(Fault.lost(), durable=True)
        with pytest.raises(StorageUnavailable):
            await queue.enqueue("w", BIG, job_id="lost")
    assert await queue.get_job("lost") is None
    assert len(await objects(queue)) == 1


# ---------------------------------------------------------------------------- effects


async def test_follow_up_enqueues_offload_and_drop_unused_objects(
    queue: taquba.Queue,
) -> None:
    await queue.enqueue("w", b"a")
    await queue.enqueue("w", b"b")
    await queue.enqueue("w", b"c")
    held = await queue.enqueue("next", BIG, dedup_key="taken")
    # ack_with: one created (offloaded), one deduplicated (its new object deleted).
    results = await queue.ack_with(
        await claim(queue),
        Effects(
            enqueues=[
                EnqueueRequest(queue_name="next", payload=BIG + b"1"),
                EnqueueRequest(queue_name="next", payload=BIG + b"2", dedup_key="taken"),
            ]
        ),
    )
    assert [r.created for r in results] == [True, False]
    assert results[1].id == held.id
    assert len(await objects(queue)) == 2
    follow = await queue.get_job(results[0].id)
    assert follow is not None
    assert follow.payload == BIG + b"1"
    # A nack that retries applies no effects_if_dead: their objects go.
    effects = Effects(enqueues=[EnqueueRequest(queue_name="next", payload=BIG + b"3")])
    second = await claim(queue)
    result = await queue.nack(second, "retry", effects_if_dead=effects)
    assert not result.dead
    assert len(await objects(queue)) == 2
    # At the last attempt the nack dead-letters and applies them.
    third = await claim(queue)
    assert third.id == second.id
    result = await queue.nack(third, "dead", effects_if_dead=effects)
    assert result.dead
    assert len(await objects(queue)) == 3
    # A settlement that loses its claim writes nothing: its follow-up objects go.
    last = await claim(queue)
    await queue.ack(last)
    with pytest.raises(taquba.ClaimLost):
        await queue.ack_with(last, effects)
    with pytest.raises(taquba.ClaimLost):
        await queue.dead_letter(last, "late", effects=effects)
    assert len(await objects(queue)) == 3


# ---------------------------------------------------------------------------- missing objects


async def delete_objects(queue: taquba.Queue) -> None:
    directory = payload_dir(queue.store, queue.name)
    for name in await objects(queue):
        assert await queue.store.delete_blob(f"{directory}/{name}")


async def test_a_missing_object_is_a_typed_error(queue: taquba.Queue) -> None:
    claimed = await queue.enqueue("w", BIG + b"claimed")
    await claim(queue)
    job = await queue.enqueue("w", BIG)
    scheduled = await queue.enqueue("w", BIG, delay=60)
    await delete_objects(queue)
    with pytest.raises(PayloadMissing) as caught:
        await queue.get_job(job.id)
    assert caught.value.job_id == job.id
    assert not caught.value.transient
    assert isinstance(caught.value, StorageError)
    for live in (claimed, scheduled):  # every live status: the job would run without it
        with pytest.raises(PayloadMissing):
            await queue.get_job(live.id)
    for status in (JobStatus.PENDING, JobStatus.CLAIMED, JobStatus.SCHEDULED):
        with pytest.raises(PayloadMissing):
            await queue.list_jobs("w", status)


async def test_a_job_removed_while_its_object_is_read_reads_as_absent(
    queue: taquba.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await queue.enqueue("w", BIG)
    kept = await queue.enqueue("w", BIG)

    # A cancel racing the read: the record and the object go between the two reads.
    real_get = Store.get_blob
    racing: list[str] = [job.id]

    async def racing_get(self: Store, path: str) -> bytes | None:
        record = await stored(queue, racing[0])
        if record is not None and path.endswith(f"/{record.payload_ref}"):
            assert await queue.cancel(racing[0]) is CancelOutcome.REMOVED
        return await real_get(self, path)

    monkeypatch.setattr(Store, "get_blob", racing_get)
    assert await queue.get_job(job.id) is None
    racing[0] = (await queue.enqueue("w", BIG)).id
    page = await queue.list_jobs("w", JobStatus.PENDING)
    assert [j.id for j in page.jobs] == [kept.id]
    assert page.jobs[0].payload == BIG


async def test_a_claim_whose_object_is_missing_dead_letters_that_job(
    queue: taquba.Queue,
) -> None:
    lost = await queue.enqueue("w", BIG)
    await delete_objects(queue)
    good = await queue.enqueue("w", BIG + b"ok")
    got = await claim(queue)  # the lost job is set aside, the next one delivered
    assert (got.id, got.payload) == (good.id, BIG + b"ok")
    record = await stored(queue, lost.id)
    assert record is not None
    assert record.status is JobStatus.DEAD
    assert record.last_error is not None
    assert "missing" in record.last_error
    assert await queue.claim("w") is None


async def test_a_dead_job_whose_object_is_missing_stays_readable(queue: taquba.Queue) -> None:
    """The dead-letter inbox, `get_job` and the layers reading dead jobs keep working.

    The job reads with an empty payload and its ref; a requeue is dead-lettered again at its
    claim (nothing is delivered without its payload).
    """
    lost = await queue.enqueue("w", BIG)
    other = await queue.enqueue("w", BIG + b"dead")
    for _ in range(2):  # both dead, only one object missing
        await queue.dead_letter(await claim(queue), "gave up")
    directory = payload_dir(queue.store, queue.name)
    before = await stored(queue, lost.id)
    assert before is not None
    ref = before.payload_ref
    assert await queue.store.delete_blob(f"{directory}/{ref}")
    record = await queue.get_job(lost.id)
    assert record is not None
    assert (record.status, record.payload, record.payload_ref) == (JobStatus.DEAD, b"", ref)
    dead = {job.id: job.payload for job in await queue.dead_jobs("w")}
    assert dead == {lost.id: b"", other.id: BIG + b"dead"}
    page = await queue.list_jobs("w", JobStatus.DEAD)
    assert {job.id: job.payload for job in page.jobs} == dead
    await queue.requeue_dead_job(record)
    with pytest.raises(PayloadMissing):  # pending again: a live job's missing object is an error
        await queue.get_job(lost.id)
    assert await queue.claim("w") is None  # set aside at its claim, not delivered
    again = await queue.get_job(lost.id)
    assert again is not None and again.status is JobStatus.DEAD
    assert "missing" in (again.last_error or "")


async def test_a_kept_done_job_whose_object_is_missing_stays_readable(
    queue: taquba.Queue,
) -> None:
    """Like a dead job: nothing runs it again, so it reads with an empty payload and its ref."""
    job = await queue.enqueue("kept", BIG)
    await queue.ack(await claim(queue, "kept"))
    before = await stored(queue, job.id)
    assert before is not None
    await delete_objects(queue)
    record = await queue.get_job(job.id)
    assert record is not None
    assert (record.status, record.payload, record.payload_ref) == (
        JobStatus.DONE,
        b"",
        before.payload_ref,
    )
    assert (await queue.list_jobs("kept", JobStatus.DONE)).jobs == [record]
    assert await queue.wait_for_completion(job.id) == record


async def test_waiting_for_a_live_job_whose_object_is_missing_ends_at_its_dead_letter(
    queue: taquba.Queue,
) -> None:
    """The wait goes on through the live job's missing object until the claim sets it aside."""
    lost = await queue.enqueue("w", BIG)
    await delete_objects(queue)
    # The job is pending: the wait must still be waiting when cancelled, not fail at once on
    # the missing object (which it did by reading the job with its payload).
    with trio.move_on_after(0.2) as waiting:
        await queue.wait_for_completion(lost.id)
    assert waiting.cancelled_caught
    ended: list[JobRecord | None] = []

    async def wait() -> None:
        ended.append(await queue.wait_for_completion(lost.id))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        assert await queue.claim("w") is None  # dead-letters it: nothing to deliver
    [record] = ended
    assert record is not None
    assert (record.id, record.status, record.payload) == (lost.id, JobStatus.DEAD, b"")
    assert "missing" in (record.last_error or "")


async def test_listings_without_payloads_read_no_object(queue: taquba.Queue) -> None:
    pending = await queue.enqueue("w", BIG)
    small = await queue.enqueue("w", SMALL)
    await queue.dead_letter(await claim(queue), "no")  # the big one, first in claim order
    await queue.enqueue("w", BIG + b"2")
    await delete_objects(queue)  # a read of any object would raise PayloadMissing now
    page = await queue.list_jobs("w", JobStatus.PENDING, payloads=False)
    assert {j.id: j.payload for j in page.jobs if j.id == small.id} == {small.id: SMALL}
    assert all(j.payload == b"" and j.payload_ref for j in page.jobs if j.id != small.id)
    [dead] = (await queue.list_jobs("w", JobStatus.DEAD, payloads=False)).jobs
    assert (dead.id, dead.payload) == (pending.id, b"")
    assert dead.payload_ref is not None
    with pytest.raises(PayloadMissing):
        await queue.list_jobs("w", JobStatus.PENDING)


async def test_a_missing_object_does_not_stop_a_worker(queue: taquba.Queue) -> None:
    lost = await queue.enqueue("w", BIG)
    await delete_objects(queue)
    seen: list[bytes] = []
    done = trio.Event()

    async def handler(record: JobRecord, lease: taquba.LeaseHandle) -> None:
        seen.append(record.payload)
        if len(seen) == 2:
            done.set()

    worker = taquba.Worker(queue, "w", handler, concurrency=2, poll_interval=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.serve)
        await queue.enqueue("w", BIG + b"1")
        await queue.enqueue("w", SMALL)
        with trio.fail_after(10):
            await done.wait()
        worker.shutdown()
    assert sorted(seen) == sorted([BIG + b"1", SMALL])
    record = await stored(queue, lost.id)
    assert record is not None
    assert record.status is JobStatus.DEAD


async def test_a_reader_materializes_and_reports_a_missing_object_as_transient(
    queue: taquba.Queue, store: Store
) -> None:
    job = await queue.enqueue("w", BIG)
    await queue._database.flush()
    async with taquba.open_reader(store, "off", poll_interval=0.05) as reader:
        got = await reader.get_job(job.id)
        assert got is not None
        assert got.payload == BIG
        [listed] = (await reader.list_jobs("w", JobStatus.PENDING)).jobs
        assert listed.payload == BIG
        await delete_objects(queue)
        with pytest.raises(PayloadMissing) as caught:
            await reader.get_job(job.id)
        assert caught.value.transient
