"""QueueReader: read-only access next to a live writer, in this process and in another."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import taquba
from taquba import (
    DatabaseNotFound,
    JobStatus,
    QueueConfig,
    Store,
    _adapter,  # pyright: ignore[reportPrivateUsage]
    _database,  # pyright: ignore[reportPrivateUsage]
    _keys,  # pyright: ignore[reportPrivateUsage]
)
from taquba.testing import open_child

CHILD = Path(__file__).with_name("crash_child.py")
FAST = {"flush_interval": 0.01, "reaper_interval": 3600.0, "scheduler_interval": 3600.0}
POLL = 0.05


async def eventually(check: Callable[[], Awaitable[bool]], limit: float = 10.0) -> None:
    with trio.fail_after(limit):
        while not await check():  # noqa: ASYNC110 - polls storage, which has no event to wait on
            await trio.sleep(POLL)


async def test_a_reader_follows_a_writer_without_disturbing_it(store: Store) -> None:
    config = QueueConfig(keep_done=3600)
    async with taquba.open_queue(store, "app", config=config, **FAST) as queue:
        first = await queue.enqueue("mail", b"one")
        await queue.enqueue("mail", b"two", priority=0)
        await queue.enqueue("sms", b"three")
        await queue.kv_put(b"cfg/a", b"1")
        claim = await queue.claim("mail")
        assert claim is not None
        async with taquba.open_reader(store, "app", poll_interval=POLL) as reader:
            assert reader.name == "app" and reader.store is store
            assert await reader.list_queues() == ["mail", "sms"]

            async def sees_the_claim() -> bool:
                # A claim commits without waiting for its flush; a reader sees durable state.
                stats = await reader.stats("mail")
                return stats == taquba.QueueStats("mail", pending=1, claimed=1)

            await eventually(sees_the_claim)
            # Claimed jobs stay claimed for a reader: it recovers nothing.
            claimed = (await reader.list_jobs("mail", JobStatus.CLAIMED)).jobs
            assert [job.id for job in claimed] == [claim.id]
            job = await reader.get_job(claim.id)
            assert job is not None and job.status is JobStatus.CLAIMED
            assert await reader.get_job("01ZZZZZZZZZZZZZZZZZZZZZZZZ") is None
            assert await reader.kv_get(b"cfg/a") == b"1"
            assert (await reader.kv_scan(b"cfg/")).entries == [(b"cfg/a", b"1")]

            # The writer keeps working, and the reader catches up with it.
            await queue.ack(claim)
            await queue.dead_letter(await _claim(queue, "mail"), "bad")

            async def caught_up() -> bool:
                stats = await reader.stats("mail")
                return (stats.done, stats.dead) == (1, 1)

            await eventually(caught_up)
            done = await reader.get_job(claim.id)
            assert done is not None and done.status is JobStatus.DONE
            assert [j.payload for j in await reader.dead_jobs("mail")] == [b"one"]
            assert (await reader.dead_jobs("mail"))[0].id == first.id
            # Keyword callers name the queue ``queue_name``, as on `Queue`.
            assert (await reader.stats(queue_name="mail")).queue_name == "mail"
            assert (await reader.dead_jobs(queue_name="mail"))[0].queue_name == "mail"
            page = await reader.list_jobs(queue_name="mail", status=JobStatus.DEAD)
            assert [j.id for j in page.jobs] == [first.id]
        assert queue.failure is None
        await queue.enqueue("mail", b"after the reader")  # still the writer


async def _claim(queue: taquba.Queue, name: str) -> taquba.Claim:
    claim = await queue.claim(name)
    assert claim is not None
    return claim


async def test_a_reader_never_creates_a_database(store: Store) -> None:
    with pytest.raises(DatabaseNotFound) as caught:
        async with taquba.open_reader(store, "missing"):
            pass
    assert caught.value.name == "missing"
    assert isinstance(caught.value, taquba.UsageError)
    with pytest.raises(DatabaseNotFound):  # still not there: the failed open wrote nothing
        async with taquba.open_reader(store, "missing"):
            pass


@pytest.mark.parametrize("poll", [0.0, -1.0, float("nan")])
async def test_a_bad_poll_interval_is_a_usage_error(memory_store: Store, poll: float) -> None:
    with pytest.raises(taquba.UsageError):
        async with taquba.open_reader(memory_store, "x", poll_interval=poll):
            pass


async def test_stats_read_across_a_fold_are_read_again(
    file_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reader reads the base counters, then the deltas. Here the writer folds the deltas
    # into the base between the two, and the reader loads that before scanning: the first
    # read sees neither (pending 0); only a second read is right.
    async with taquba.open_queue(file_store, "app", **FAST) as queue:
        for _ in range(5):
            await queue.enqueue("q", b"x")
        async with taquba.open_reader(file_store, "app", poll_interval=POLL) as reader:

            async def sees_all() -> bool:
                return (await reader.stats("q")).pending == 5

            await eventually(sees_all)
            real_scan = _adapter.Reader.scan
            folded: list[bool] = []

            async def scan_after_a_fold(self: _adapter.Reader, prefix: bytes, **kw: Any) -> Any:
                if prefix.startswith(bytes([_keys.Space.STATS_DELTA])) and not folded:
                    folded.append(True)
                    await queue.fold_stats_now()
                    stats_key = _keys.stats_key("q")
                    await eventually(lambda: _has(self, stats_key))
                return await real_scan(self, prefix, **kw)

            monkeypatch.setattr(_adapter.Reader, "scan", scan_after_a_fold)
            assert (await reader.stats("q")).pending == 5
            assert folded


async def _has(reader: _adapter.Reader, key: bytes) -> bool:
    return await reader.get(key) is not None


async def test_a_reader_next_to_a_writer_process_in_full_flow(tmp_path: Path) -> None:
    """Another process enqueues, claims and acks (done records kept) while we read.

    It folds its counters every few milliseconds. Every `stats` must be the counters of one moment:
    none negative, and the job total never shrinking between reads (no job is ever removed
    in this flow), which a read that straddled a fold would break. The writer is not fenced:
    it keeps reporting new enqueues after our reads, and its database checks out afterwards.
    """
    store_dir = tmp_path / "store"
    with trio.fail_after(60):
        async with open_child(CHILD, "storm", store_dir, "fold", cwd=tmp_path) as child:
            await child.expect("READY")
            await child.read_until(lambda: len(child.tagged("ENQ")) >= 50)
            totals: list[int] = []
            async with taquba.open_reader(store_dir, "storm", poll_interval=POLL) as reader:
                # At least 60 reads, and on until the writer's progress shows (not timed).
                while len(totals) < 60 or totals[-1] <= totals[0]:
                    stats = await reader.stats("w")
                    fields = (stats.pending, stats.claimed, stats.done, stats.dead)
                    assert min(fields) >= 0, stats
                    assert stats.dead == 0 and stats.scheduled == 0
                    totals.append(stats.pending + stats.claimed + stats.done)
                    await trio.sleep(0.02)
            assert totals == sorted(totals), totals
            assert totals[-1] > totals[0]  # the writer made progress while we read
            seen = len(child.tagged("ENQ"))
            await child.read_until(lambda: len(child.tagged("ENQ")) >= seen + 50)
            await child.kill()
    async with taquba.open_queue(store_dir, "storm", **FAST) as queue:
        stats = await queue.stats("w")
        assert stats.pending + stats.done >= totals[-1]


async def test_a_reader_keeps_a_small_block_cache(
    file_store: Store, block_misses: Callable[[str], Callable[[], int]]
) -> None:
    """Its cache holds 16 MiB of data blocks, not SlateDB's default 512 MiB.

    24 MiB of values, flushed to an SST, are read twice through a reader whose builder also
    installs SlateDB's own metrics recorder: the second pass misses its blocks again (with the
    default cache, it would hit every one).
    """
    import slatedb.uniffi as sdb

    from taquba._objectstore import object_store_of  # pyright: ignore[reportPrivateUsage]

    count, size = 24 * 1024, 1024
    assert count * size > _database.READER_BLOCK_CACHE_BYTES  # pyright: ignore[reportPrivateUsage]
    object_store = object_store_of(file_store)
    db = await sdb.DbBuilder(file_store.db_path("big"), object_store).build()
    try:
        for start in range(0, count, 1024):
            batch = sdb.WriteBatch()
            for i in range(start, start + 1024):
                batch.put(_keys.user_key(b"%06d" % i), bytes([i % 251]) * size)
            await db.write(batch)
        await db.flush_with_options(sdb.FlushOptions(flush_type=sdb.FlushType.MEM_TABLE))
    finally:
        await db.shutdown()

    count_misses = block_misses("DbReaderBuilder")

    async with taquba.open_reader(file_store, "big") as reader:
        misses = []
        for _ in range(2):
            before = count_misses()
            for i in range(0, count, 4):
                assert await reader.kv_get(b"%06d" % i) == bytes([i % 251]) * size
            misses.append(count_misses() - before)
    assert misses[0] > 0
    assert misses[1] >= misses[0] // 2  # evicted: the cache is smaller than what was read
