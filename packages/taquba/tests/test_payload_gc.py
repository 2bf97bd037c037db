"""Collecting orphaned payload objects (`Queue.collect_payloads_now`, `taquba._payload_gc`).

Run on memory, local-disk and S3 (moto) stores. The promise: an object older than the grace
period that no job record references (in any status) and no enqueue in flight wrote is
deleted; every other object is kept, including the object of a job that moves between
spaces while the collection reads, and of an enqueue whose transaction has not committed
yet; names that are not refs are never touched.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import ulid
from hypothesis import given
from hypothesis import strategies as st

import taquba
from taquba import InvalidArgument, JobStatus, MockClock, PayloadCollection, QueueConfig, Store
from taquba._adapter import Snapshot
from taquba._cli import main
from taquba._keys import Space, pending_key, quarantine_key, space_prefix
from taquba._payload_gc import Verdict, classify, record_refs, ref_time_ms, refs_in
from taquba._payloads import payload_dir
from taquba._records import encode_job
from taquba.testing import open_child

FAST = {"flush_interval": 0.005, "reaper_interval": 3600.0, "scheduler_interval": 3600.0}
THRESHOLD = 16
HOUR = 3600.0
CONFIG = QueueConfig(
    lease_duration=600, retry_backoff_base=0, max_attempts=2, payload_offload_threshold=THRESHOLD
)
QUEUES = {
    "kept": QueueConfig(lease_duration=600, keep_done=86_400, payload_offload_threshold=THRESHOLD),
    "dying": QueueConfig(lease_duration=600, max_attempts=1, payload_offload_threshold=THRESHOLD),
}
BIG = b"B" * 100
CHILD = Path(__file__).with_name("crash_child.py")


@pytest.fixture
def clock() -> MockClock:
    return MockClock()


@pytest.fixture
async def queue(store: Store, clock: MockClock) -> AsyncIterator[taquba.Queue]:
    async with taquba.open_queue(
        store, "gc", config=CONFIG, queues=QUEUES, clock=clock, **FAST
    ) as q:
        yield q


def directory(queue: taquba.Queue) -> str:
    return payload_dir(queue.store, queue.name)


async def objects(queue: taquba.Queue) -> list[str]:
    """The names in the queue database's payload directory."""
    return await queue.store.list_blobs(directory(queue))


async def make_orphan(queue: taquba.Queue, monkeypatch: pytest.MonkeyPatch) -> str:
    """Enqueue, claim and ack a job whose post-commit delete fails: return its orphan's ref."""
    before = set(await objects(queue))
    await queue.enqueue("orphans", BIG)
    claim = await queue.claim("orphans")
    assert claim is not None
    original = Store.delete_blob

    async def failing(self: Store, path: str) -> bool:
        raise taquba.StorageUnavailable("injected: the delete after the commit failed")

    monkeypatch.setattr(Store, "delete_blob", failing)
    await queue.ack(claim)  # committed; the delete fails and is only logged
    monkeypatch.setattr(Store, "delete_blob", original)
    [ref] = set(await objects(queue)) - before
    assert await queue.get_job(claim.id) is None
    return ref


def counts(result: PayloadCollection) -> tuple[int, int, int, int, int, int]:
    return (
        result.examined,
        result.deleted,
        result.young,
        result.referenced,
        result.foreign,
        result.failed,
    )


# ---------------------------------------------------------------------------- pure core


@given(st.integers(0, 2**48 - 1), st.integers(0, 2**80 - 1), st.integers(0, 2**48))
def test_a_refs_time_is_read_from_its_name(ms: int, rand: int, cutoff: int) -> None:
    name = ulid.from_int((ms << 80) | rand).str
    assert ref_time_ms(name) == ms
    assert classify(name, cutoff) is (Verdict.YOUNG if ms >= cutoff else Verdict.CANDIDATE)
    assert refs_in(b"\x92\xa3abc\xda\x00\x1a" + name.encode() + b"\xc0") == {name}


@given(st.text(max_size=40))
def test_names_that_are_not_upper_case_ulids_are_foreign(name: str) -> None:
    upper = len(name) == 26 and name[0] in "01234567"
    upper = upper and all(ch in "0123456789ABCDEFGHJKMNPQRSTVWXYZ" for ch in name)
    assert (classify(name, 0) is Verdict.FOREIGN) is not upper


@pytest.mark.parametrize(
    "name",
    [
        "readme.txt",
        "01arz3ndektsv4rrffq69g5fav",  # lower case: not how refs are written
        "01ARZ3NDEKTSV4RRFFQ69G5FA",  # 25 characters
        "81ARZ3NDEKTSV4RRFFQ69G5FAV",  # past the 48-bit timestamp
        "01ARZ3NDEKTSV4RRFFQ69G5FAI",  # I is not Crockford base32
        "sub/01ARZ3NDEKTSV4RRFFQ69G5FAV",
    ],
)
def test_examples_of_foreign_names(name: str) -> None:
    assert ref_time_ms(name) is None
    assert classify(name, 2**48) is Verdict.FOREIGN


def test_an_undecodable_record_keeps_whatever_it_may_reference() -> None:
    ref = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    job = taquba.JobRecord(
        id="j",
        queue_name="q",
        payload=b"",
        status=JobStatus.PENDING,
        priority=1,
        attempts=0,
        max_attempts=1,
        enqueued_at=0,
        payload_ref=ref,
    )
    assert record_refs(encode_job(job)) == {ref}
    assert record_refs(encode_job(job.replace(payload_ref=None))) == set()
    assert record_refs(b"\xff garbage " + encode_job(job)[3:]) == {ref}


# ---------------------------------------------------------------------------- collection


async def test_an_orphan_left_by_a_failed_delete_is_collected(
    queue: taquba.Queue, clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = await make_orphan(queue, monkeypatch)
    clock.advance(HOUR + 1)
    result = await queue.collect_payloads_now()
    assert counts(result) == (1, 1, 0, 0, 0, 0)
    assert ref not in await objects(queue)
    assert counts(await queue.collect_payloads_now()) == (0, 0, 0, 0, 0, 0)


async def test_what_the_snapshot_saw_is_durable_before_an_object_is_deleted(
    store: Store, clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step 4 of the collector: flush, then delete.

    Nothing flushes on its own here (a WAL flush interval and a heartbeat of an hour), so a
    claim, which commits without waiting for durability, stays in the WAL buffer until the
    collector's flush. A reader opened at the first delete sees only what is durable: it must
    see the claim.
    """
    slow = {**FAST, "flush_interval": HOUR, "heartbeat_interval": HOUR}
    async with taquba.open_queue(
        store, "gc", config=CONFIG, queues=QUEUES, clock=clock, **slow
    ) as queue:
        await make_orphan(queue, monkeypatch)
        job = await queue.enqueue("late", b"small")  # durable, and inline: no object
        claim = await queue.claim("late")
        assert claim is not None

        async def durable_status() -> JobStatus | None:
            async with taquba.open_reader(store, "gc") as reader:
                record = await reader.get_job(job.id)
                return record.status if record is not None else None

        assert await durable_status() is JobStatus.PENDING  # the claim is not durable yet
        seen: list[JobStatus | None] = []
        original = Store.delete_blob

        async def observed(self: Store, path: str) -> bool:
            if not seen:
                seen.append(await durable_status())
            return await original(self, path)

        monkeypatch.setattr(Store, "delete_blob", observed)
        clock.advance(HOUR + 1)
        assert counts(await queue.collect_payloads_now()) == (1, 1, 0, 0, 0, 0)
        assert seen == [JobStatus.CLAIMED]


async def test_a_young_orphan_is_kept_until_the_grace_period_has_passed(
    queue: taquba.Queue, clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = await make_orphan(queue, monkeypatch)
    assert counts(await queue.collect_payloads_now()) == (1, 0, 1, 0, 0, 0)
    clock.advance(HOUR - 1)
    assert counts(await queue.collect_payloads_now()) == (1, 0, 1, 0, 0, 0)
    assert counts(await queue.collect_payloads_now(grace=HOUR - 2)) == (1, 1, 0, 0, 0, 0)
    assert ref not in await objects(queue)


async def test_live_jobs_in_every_status_keep_their_objects(
    queue: taquba.Queue, clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    orphan = await make_orphan(queue, monkeypatch)
    pending = await queue.enqueue("w", BIG + b"pending")
    scheduled = await queue.enqueue("s", BIG + b"scheduled", delay=10 * HOUR)
    claimed = await queue.enqueue("c", BIG + b"claimed")
    retried = await queue.enqueue("r", BIG + b"retried")
    dead = await queue.enqueue("dying", BIG + b"dead", job_id="dead")
    requeued = await queue.enqueue("dying", BIG + b"requeued", job_id="requeued")
    done = await queue.enqueue("kept", BIG + b"done")
    for _ in range(2):
        got = await queue.claim("dying")
        assert got is not None
        assert (await queue.nack(got, "boom")).dead
    [revive] = [j for j in await queue.dead_jobs("dying") if j.id == requeued.id]
    await queue.requeue_dead_job(revive)  # pending again, with the ref it had
    got = await queue.claim("kept")
    assert got is not None
    await queue.ack(got)  # kept as done
    got = await queue.claim("r")
    assert got is not None
    assert not (await queue.nack(got, "retry")).dead  # pending again, with its ref
    assert await queue.claim("c") is not None
    jobs = {
        pending.id: BIG + b"pending",
        scheduled.id: BIG + b"scheduled",
        claimed.id: BIG + b"claimed",
        retried.id: BIG + b"retried",
        dead.id: BIG + b"dead",
        requeued.id: BIG + b"requeued",
        done.id: BIG + b"done",
    }
    statuses = {(await queue.get_job(job_id)).status for job_id in jobs}  # type: ignore[union-attr]
    assert statuses == set(JobStatus)

    clock.advance(2 * HOUR)
    result = await queue.collect_payloads_now()
    assert counts(result) == (8, 1, 0, 7, 0, 0)
    assert orphan not in await objects(queue)
    for job_id, payload in jobs.items():
        job = await queue.get_job(job_id)
        assert job is not None
        assert job.payload == payload


@pytest.mark.parametrize("space", ["pending", "quarantine"])
async def test_an_undecodable_record_keeps_the_objects_it_may_reference(
    queue: taquba.Queue, clock: MockClock, monkeypatch: pytest.MonkeyPatch, space: str
) -> None:
    ref = await make_orphan(queue, monkeypatch)
    raw = b"\xc1 not a record, but it names " + ref.encode()
    if space == "pending":
        key = pending_key("w", 1, "broken")
    else:
        key = quarantine_key("w", pending_key("w", 1, "broken"))
    await queue._database.put(key, raw)  # pyright: ignore[reportPrivateUsage]
    clock.advance(2 * HOUR)
    assert counts(await queue.collect_payloads_now()) == (1, 0, 0, 1, 0, 0)
    assert await objects(queue) == [ref]


async def test_a_job_moving_between_spaces_during_the_scan_keeps_its_object(
    queue: taquba.Queue, clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job is claimed after the pending space was read and before the claimed one."""
    job = await queue.enqueue("w", BIG)
    clock.advance(2 * HOUR)
    original = Snapshot.scan
    moved: list[str] = []

    async def scan(self: Snapshot, prefix: bytes, **kwargs: Any) -> list[tuple[bytes, bytes]]:
        rows = await original(self, prefix, **kwargs)
        if prefix == space_prefix(Space.PENDING) and not moved:
            got = await queue.claim("w")  # pending -> claimed, committed now
            assert got is not None
            moved.append(got.id)
        return rows

    monkeypatch.setattr(Snapshot, "scan", scan)
    result = await queue.collect_payloads_now()
    assert moved == [job.id]
    assert counts(result) == (1, 0, 0, 1, 0, 0)
    got = await queue.get_job(job.id)
    assert got is not None
    assert (got.status, got.payload) == (JobStatus.CLAIMED, BIG)


async def test_an_enqueue_in_flight_keeps_its_object(
    queue: taquba.Queue, clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its object is written, its transaction not committed, and older than the grace period.

    The grace period does not save it here (the clock moved past it); the in-flight refs do.
    """
    written = trio.Event()
    proceed = trio.Event()
    original = Store.put_blob

    async def put(self: Store, path: str, data: bytes, **kwargs: Any) -> bool:
        done = await original(self, path, data, **kwargs)
        written.set()
        await proceed.wait()
        return done

    monkeypatch.setattr(Store, "put_blob", put)
    results: list[taquba.EnqueueResult] = []
    async with trio.open_nursery() as nursery:

        async def enqueue() -> None:
            results.append(await queue.enqueue("w", BIG, job_id="slow"))

        nursery.start_soon(enqueue)
        await written.wait()
        clock.advance(2 * HOUR)
        result = await queue.collect_payloads_now()
        assert counts(result) == (1, 0, 0, 1, 0, 0)
        proceed.set()
    assert results[0].created
    got = await queue.get_job("slow")
    assert got is not None
    assert got.payload == BIG
    # Once the enqueue is over, its object is an ordinary referenced one.
    assert counts(await queue.collect_payloads_now()) == (1, 0, 0, 1, 0, 0)


async def test_a_failed_enqueue_no_longer_counts_as_in_flight(
    queue: taquba.Queue, clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An enqueue whose cleanup failed leaves an orphan that a later collection takes."""
    original = Store.delete_blob

    async def failing(self: Store, path: str) -> bool:
        raise taquba.StorageUnavailable("injected")

    await queue.kv_put(b"k", b"1")
    monkeypatch.setattr(Store, "delete_blob", failing)
    with pytest.raises(taquba.KvConflict):
        await queue.enqueue("w", BIG, kv_expect={b"k": None})
    monkeypatch.setattr(Store, "delete_blob", original)
    assert len(await objects(queue)) == 1
    clock.advance(2 * HOUR)
    assert counts(await queue.collect_payloads_now()) == (1, 1, 0, 0, 0, 0)


async def test_names_that_are_not_refs_are_left_alone(
    queue: taquba.Queue, clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    base = directory(queue)
    foreign = ["README.txt", "sub/01ARZ3NDEKTSV4RRFFQ69G5FAV", "01arz3ndektsv4rrffq69g5fav"]
    for name in foreign:
        await queue.store.put_blob(f"{base}/{name}", b"not ours")
    clock.advance(2 * HOUR)
    result = await queue.collect_payloads_now(grace=0)
    assert counts(result) == (3, 0, 0, 0, 3, 0)
    assert sorted(await objects(queue)) == sorted(foreign)
    assert "README.txt" in caplog.text


async def test_a_failed_delete_is_counted_and_retried(
    queue: taquba.Queue, clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await make_orphan(queue, monkeypatch)
    clock.advance(2 * HOUR)

    async def failing(self: Store, path: str) -> bool:
        raise taquba.StorageUnavailable("injected")

    with monkeypatch.context() as patch:
        patch.setattr(Store, "delete_blob", failing)
        assert counts(await queue.collect_payloads_now()) == (1, 0, 0, 0, 0, 1)
    assert counts(await queue.collect_payloads_now()) == (1, 1, 0, 0, 0, 0)


async def test_a_cancelled_collection_leaves_nothing_to_undo(
    queue: taquba.Queue, clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    refs = {await make_orphan(queue, monkeypatch) for _ in range(3)}
    clock.advance(2 * HOUR)
    original = Store.delete_blob
    started = trio.Event()

    async def slow(self: Store, path: str) -> bool:
        started.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    with monkeypatch.context() as patch:
        patch.setattr(Store, "delete_blob", slow)
        with trio.move_on_after(5) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(queue.collect_payloads_now)
                await started.wait()
                nursery.cancel_scope.cancel()
        assert not scope.cancelled_caught
    assert Store.delete_blob is original
    assert set(await objects(queue)) == refs  # nothing deleted, nothing broken
    assert counts(await queue.collect_payloads_now()) == (3, 3, 0, 0, 0, 0)


async def test_no_old_object_reads_no_record(
    queue: taquba.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    await queue.enqueue("w", BIG)

    async def snapshot(self: object) -> None:
        raise AssertionError("the database was read")

    monkeypatch.setattr(taquba._adapter.Database, "snapshot", snapshot)
    assert counts(await queue.collect_payloads_now()) == (1, 0, 1, 0, 0, 0)


@pytest.mark.parametrize("grace", [-1, float("nan"), float("inf"), "1", True])
async def test_the_grace_period_is_validated(queue: taquba.Queue, grace: object) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await queue.collect_payloads_now(grace=grace)  # type: ignore[arg-type]
    assert caught.value.argument == "grace"


async def test_the_queue_collects_in_the_background(
    memory_store: Store, clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = memory_store
    collections: list[PayloadCollection] = []
    collected = trio.Event()
    original = taquba._maintenance.collect  # pyright: ignore[reportPrivateUsage]

    async def collect(*args: Any, **kwargs: Any) -> PayloadCollection:
        result = await original(*args, **kwargs)
        collections.append(result)
        if result.deleted:
            collected.set()
        return result

    monkeypatch.setattr(taquba._maintenance, "collect", collect)  # pyright: ignore[reportPrivateUsage]
    options = {**FAST, "payload_grace": 0, "payload_collect_interval": 0.01}
    async with taquba.open_queue(
        store, "gc", config=CONFIG, clock=clock, maintenance=False, **options
    ) as admin:
        ref = await make_orphan(admin, monkeypatch)  # nothing collects it: no maintenance
        assert await admin.store.get_blob(f"{directory(admin)}/{ref}") is not None
    assert collections == []
    clock.advance(1)
    async with taquba.open_queue(store, "gc", config=CONFIG, clock=clock, **options) as q:
        with trio.fail_after(10):
            await collected.wait()
        assert await objects(q) == []
    assert counts(collections[-1]) == (1, 1, 0, 0, 0, 0)


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
async def test_an_orphan_left_by_a_sigkill_between_commit_and_delete_is_collected(
    tmp_path: Path,
) -> None:
    store_dir = tmp_path / "store"
    with trio.fail_after(60):
        async with open_child(CHILD, "orphan", store_dir, cwd=tmp_path) as child:
            await child.expect("READY")
            await child.read_until(lambda: bool(child.tagged("DELETING")))
            await child.kill()
    [[job_id]] = child.tagged("ENQ")
    [[ref]] = child.tagged("DELETING")
    async with taquba.open_queue(store_dir, "orphan", **FAST) as queue:
        assert await queue.get_job(job_id) is None  # the ack was durable
        assert await objects(queue) == [ref]  # and its object is an orphan
        assert counts(await queue.collect_payloads_now()) == (1, 0, 1, 0, 0, 0)
        assert counts(await queue.collect_payloads_now(grace=0)) == (1, 1, 0, 0, 0, 0)
        assert await objects(queue) == []


# ---------------------------------------------------------------------------- CLI


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exit_:  # argparse
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_help_of_taquba_payloads_collect_offers_no_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It refuses --server (a server's owner collects by itself), so its help offers none."""
    code, out, err = cli(capsys, "payloads", "collect", "--help")
    assert (code, err) == (0, "")
    text = " ".join(out.split())
    assert "--server URL" not in text  # neither as an option nor as advice
    assert "--token" not in text
    assert "it refuses --server and $TAQUBA_SERVER" in text
    assert "stop the owner first" in text
    assert "--force" in text
    # The writer commands that do run through a server still offer it.
    code, out, err = cli(capsys, "dead", "purge", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "--server URL" in text
    assert "run the command through it with --server URL" in text


def test_taquba_payloads_collect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store_dir = tmp_path / "store"

    async def prepare() -> str:
        async with taquba.open_queue(store_dir, "gc", config=CONFIG, **FAST) as queue:
            await queue.enqueue("w", BIG)  # live: kept
            return await make_orphan(queue, monkeypatch)

    ref = trio.run(prepare)
    where = ("--store", str(store_dir), "--db", "gc")
    code, out, err = cli(capsys, "payloads", "collect", *where, "--json")
    assert (code, err) == (0, ""), out + err
    document = json.loads(out)
    assert document == {
        "store": document["store"],
        "server": None,
        "database": "gc",
        "examined": 2,
        "deleted": 0,
        "young": 2,
        "referenced": 0,
        "foreign": 0,
        "failed": 0,
    }
    code, out, err = cli(capsys, "payloads", "collect", *where, "--grace", "0")
    assert (code, err) == (0, ""), out + err
    assert out.startswith("examined 2 payload object(s): deleted 1 orphan(s); kept 0 younger")
    assert "and 1 referenced" in out

    async def remaining() -> list[str]:
        async with taquba.open_reader(store_dir, "gc") as reader:
            return await reader.store.list_blobs(payload_dir(reader.store, "gc"))

    assert ref not in trio.run(remaining)
    code, out, err = cli(capsys, "payloads", "collect", "--server", "http://127.0.0.1:9")
    assert code == 2
    assert "a taquba-server's owner collects" in err
    code, out, err = cli(capsys, "payloads", "collect", *where, "--grace", "-1")
    assert code == 2
