"""The owner record (heartbeat) and `Queue.purge`."""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable

import pytest
import trio

import taquba
from taquba import JobStatus, OwnerInfo, QueueConfig, Store
from taquba import _owner as owner  # pyright: ignore[reportPrivateUsage]
from taquba.testing import Fault, inject_faults, open_test_queue

FAST = {"flush_interval": 0.01, "reaper_interval": 3600.0, "scheduler_interval": 3600.0}
POLL = 0.05


async def eventually(check: Callable[[], Awaitable[bool]], limit: float = 10.0) -> None:
    with trio.fail_after(limit):
        while not await check():  # noqa: ASYNC110 - polls storage, which has no event to wait on
            await trio.sleep(POLL)


def _info(**changes: object) -> OwnerInfo:
    fields: dict[str, object] = {
        "owner_id": "ab12",
        "pid": 42,
        "hostname": "box",
        "started_at": 1_000,
        "heartbeat_at": 2_000,
        "interval": 5.0,
        "address": None,
        "version": "0.9.1",
    }
    fields.update(changes)
    return OwnerInfo(**fields)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- the record


@pytest.mark.parametrize("address", [None, "http://127.0.0.1:8000"])
def test_owner_record_round_trip(address: str | None) -> None:
    info = _info(address=address)
    assert owner.decode_owner(owner.encode_owner(info)) == info


def test_an_int_interval_decodes_as_float_and_unknown_fields_are_ignored() -> None:
    raw = taquba._records.encode_map(  # pyright: ignore[reportPrivateUsage]
        {**_fields(_info()), "interval": 2, "future": [1, 2]}
    )
    assert owner.decode_owner(raw) == _info(interval=2.0)


def _fields(info: OwnerInfo) -> dict[str, object]:
    return {name: getattr(info, name) for name in OwnerInfo.__dataclass_fields__}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xc1garbage",
        b"\x93\x01\x02\x03",  # a msgpack list
        taquba._records.encode_map({"pid": 1}),  # pyright: ignore[reportPrivateUsage]
        taquba._records.encode_map(  # pyright: ignore[reportPrivateUsage]
            {**_fields(_info()), "pid": "forty-two"}
        ),
        taquba._records.encode_map(  # pyright: ignore[reportPrivateUsage]
            {**_fields(_info()), "interval": 0}
        ),
        taquba._records.encode_map(  # pyright: ignore[reportPrivateUsage]
            {**_fields(_info()), "pid": True}
        ),
    ],
)
def test_a_garbage_owner_record_is_a_data_error(raw: bytes) -> None:
    with pytest.raises(taquba.DataError):
        owner.decode_owner(raw)


def test_freshness_is_three_intervals() -> None:
    info = _info(heartbeat_at=10_000, interval=2.0)
    assert info.is_fresh(10_000)
    assert info.is_fresh(16_000)
    assert not info.is_fresh(16_001)
    assert not _info(heartbeat_at=0).is_fresh()
    assert _info(heartbeat_at=owner.now_ms()).is_fresh()
    assert "pid 42 on box" in info.describe()
    assert "serving http://x" in _info(address="http://x").describe()


# ---------------------------------------------------------------------------- the heartbeat


async def test_the_writer_publishes_refreshes_and_removes_its_record(file_store: Store) -> None:
    async with taquba.open_queue(file_store, "app", heartbeat_interval=0.05, **FAST) as queue:
        mine = queue.owner_info()
        assert mine.pid == os.getpid() and mine.hostname == socket.gethostname()
        assert mine.version == taquba.__version__ and mine.interval == 0.05
        assert mine.address is None
        async with taquba.open_reader(file_store, "app", poll_interval=POLL) as reader:
            seen: list[OwnerInfo] = []

            async def published() -> bool:
                # Written at open without waiting for durability: a reader sees it after the
                # writer's next flush.
                info = await reader.owner()
                seen.append(info) if info is not None else None
                return info is not None

            await eventually(published)
            first = seen[-1]
            assert first.owner_id == mine.owner_id
            # Fresh for three intervals after its heartbeat (judged at a fixed time: the reader
            # may see the record late on a loaded machine, the 50 ms interval being a test's).
            assert first.is_fresh(first.heartbeat_at + 3 * 50)
            assert not first.is_fresh(first.heartbeat_at + 3 * 50 + 1)

            async def refreshed() -> bool:
                seen = await reader.owner()
                return seen is not None and seen.heartbeat_at > first.heartbeat_at

            await eventually(refreshed)
            queue.set_owner_address("http://127.0.0.1:8123")
            assert queue.owner_info().address == "http://127.0.0.1:8123"

            async def addressed() -> bool:
                seen = await reader.owner()
                return seen is not None and seen.address == "http://127.0.0.1:8123"

            await eventually(addressed)
    async with taquba.open_reader(file_store, "app", poll_interval=POLL) as reader:
        assert await reader.owner() is None


async def test_set_owner_address_checks_its_argument() -> None:
    async with open_test_queue() as queue:
        with pytest.raises(taquba.InvalidArgument):
            queue.set_owner_address(8000)  # type: ignore[arg-type]
        queue.set_owner_address(None)


@pytest.mark.parametrize("interval", [0, -1.0, float("nan"), "5"])
async def test_a_bad_heartbeat_interval_is_refused(interval: object) -> None:
    with pytest.raises(taquba.InvalidArgument):
        async with taquba.open_queue(Store.memory(), heartbeat_interval=interval):  # type: ignore[arg-type]
            pass


async def test_a_failing_heartbeat_is_retried_and_never_stops_the_queue() -> None:
    async with open_test_queue(store=None) as queue:
        with inject_faults() as faults:
            # Heartbeat writes are plain non-durable puts; enqueues are durable commits.
            faults.on_write(Fault.unavailable(), times=3, durable=False)
            queue.set_owner_address("http://a")  # wakes the heartbeat now
            with trio.fail_after(10):
                while faults.armed:  # noqa: ASYNC110 - the faults are consumed by the heartbeat
                    await trio.sleep(0.01)
            assert [f.site for f in faults.injected] == ["put"] * 3
            assert queue.health().retried >= 3
            await queue.enqueue("q", b"x")
        assert queue.failure is None
        with trio.fail_after(10):
            while not queue.health().healthy:
                queue.set_owner_address("http://b")
                await trio.sleep(0.01)


async def test_a_permanent_heartbeat_failure_at_open_does_not_fail_the_open() -> None:
    with inject_faults() as faults:
        faults.on_write(Fault.permanent(), times=1, durable=False)
        async with open_test_queue() as queue:
            assert faults.injected and faults.injected[0].site == "put"
            await queue.enqueue("q", b"x")


# ---------------------------------------------------------------------------- purge


async def _dead_jobs(queue: taquba.Queue, queue_name: str, count: int) -> list[str]:
    requests = [taquba.EnqueueRequest(queue_name=queue_name, payload=b"x") for _ in range(count)]
    ids = [result.id for result in await queue.enqueue_batch(requests)]
    claims = await queue.claim_batch(queue_name, count)
    async with trio.open_nursery() as nursery:
        for claim in claims:
            nursery.start_soon(queue.dead_letter, claim, "boom")
    return ids


async def test_purge_dead_empties_the_inbox_and_keeps_counters() -> None:
    async with open_test_queue() as queue:
        await _dead_jobs(queue, "a", 300)  # more than one page
        kept = await _dead_jobs(queue, "b", 2)
        await queue.enqueue("a", b"alive")
        assert (await queue.stats("a")).dead == 300
        assert await queue.purge("a", JobStatus.DEAD) == 300
        assert await queue.stats("a") == taquba.QueueStats("a", pending=1)
        assert await queue.dead_jobs("a") == []
        assert [j.id for j in await queue.dead_jobs("b")] == kept
        assert (await queue.stats("b")).dead == 2
        await queue.fold_stats_now()
        assert await queue.stats("a") == taquba.QueueStats("a", pending=1)
        assert await queue.purge("a", JobStatus.DEAD) == 0
        job = await queue.get_job(kept[0])
        assert job is not None
        assert await queue.get_job((await queue.enqueue("a", b"y")).id) is not None


async def test_purge_done_deletes_only_that_queues_kept_records() -> None:
    async with open_test_queue(config=QueueConfig(keep_done=3600)) as queue:
        for name in ("a", "b", "a"):
            await queue.enqueue(name, b"x")
            claim = await queue.claim(name)
            assert claim is not None
            await queue.ack(claim)
        assert await queue.purge("a", JobStatus.DONE) == 2
        assert (await queue.list_jobs("a", JobStatus.DONE)).jobs == []
        assert len((await queue.list_jobs("b", JobStatus.DONE)).jobs) == 1
        assert (await queue.stats("a")).done == 2  # cumulative


@pytest.mark.parametrize("status", [JobStatus.PENDING, JobStatus.CLAIMED, "nope", None])
async def test_purge_refuses_a_live_status(status: object) -> None:
    async with open_test_queue() as queue:
        with pytest.raises(taquba.InvalidArgument):
            await queue.purge("a", status)  # type: ignore[arg-type]


async def test_purge_racing_with_requeue_keeps_counters_exact() -> None:
    async with open_test_queue() as queue:
        ids = await _dead_jobs(queue, "a", 400)
        records = await queue.dead_jobs("a", limit=1000)
        requeued: list[str] = []
        purged: list[int] = []

        async def requeue_some() -> None:
            for job in records[::-1][:150]:
                try:
                    await queue.requeue_dead_job(job)
                except taquba.JobNotFound:
                    continue
                requeued.append(job.id)

        async def purge() -> None:
            purged.append(await queue.purge("a", JobStatus.DEAD))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(requeue_some)
            nursery.start_soon(purge)
        assert purged[0] + len(requeued) == len(ids)
        stats = await queue.stats("a")
        assert stats.dead == 0 and stats.pending == len(requeued)
        pending = (await queue.list_jobs("a", JobStatus.PENDING, limit=1000)).jobs
        assert sorted(j.id for j in pending) == sorted(requeued)
