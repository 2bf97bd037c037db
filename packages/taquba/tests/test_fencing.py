"""One writer per store: a second writer fences the first, and nothing durable is lost.

In-process cases open a second queue on the same `Store` object (memory, local disk, and S3 on
moto, which honours the conditional writes SlateDB fences with); one case fences across
processes on a local-disk store. Also: a misconfigured S3 endpoint fails fast with
`StorageUnavailable` instead of hanging.
"""

from __future__ import annotations

import socket
from functools import partial
from pathlib import Path

import pytest
import trio

import taquba
from taquba import Fenced, JobRecord, JobStatus, LeaseHandle, QueueStats, Store
from taquba.testing import open_child

FAST = {"flush_interval": 0.01, "reaper_interval": 3600.0, "scheduler_interval": 3600.0}
CHILD = Path(__file__).with_name("crash_child.py")
# SlateDB notices a fence on its next write, or at its next manifest poll (1 s) when idle.
FENCE_NOTICED = 10.0


async def ids_of(queue: taquba.Queue, status: JobStatus) -> set[str]:
    page = await queue.list_jobs("w", status, limit=10_000)
    return {j.id for j in page.jobs}


async def test_a_second_writer_fences_the_first_and_keeps_its_writes(store: Store) -> None:
    async with taquba.open_queue(store, "f", **FAST) as first:
        before = [(await first.enqueue("w", b"first %d" % i)).id for i in range(3)]
        held = await first.claim("w")
        assert held is not None
        await first.kv_put(b"owner", b"first")
        async with taquba.open_queue(store, "f", **FAST) as second:
            # The new writer recovered the claim the first still believes it holds.
            assert held.id in await ids_of(second, JobStatus.PENDING) | await ids_of(
                second, JobStatus.CLAIMED
            )
            after = [(await second.enqueue("w", b"second %d" % i)).id for i in range(3)]
            await second.kv_put(b"owner", b"second")

            with pytest.raises(Fenced):
                await first.enqueue("w", b"too late")
            with pytest.raises(Fenced):
                await first.ack(held)
            with pytest.raises(Fenced):
                await first.kv_put(b"owner", b"first again")
            with pytest.raises(Fenced):
                await first.claim("w")
            with pytest.raises(Fenced):
                await first.stats("w")

            # The second writer is unaffected.
            claim = await second.claim("w")
            assert claim is not None
            await second.ack(claim)
            acked = claim.id
    async with taquba.open_queue(store, "f", **FAST) as third:
        pending = await ids_of(third, JobStatus.PENDING)
        assert pending == (set(before) | set(after)) - {acked}
        assert await third.stats("w") == QueueStats("w", pending=5, done=1)
        assert await third.kv_get(b"owner") == b"second"


async def serve_and_record(
    queue: taquba.Queue,
    handler: taquba.Handler,
    outcome: list[BaseException | None],
    done: trio.Event,
    *,
    concurrency: int,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``w`` with a `Worker` and record how `serve` ended (Cancelled propagates)."""
    worker = taquba.Worker(queue, "w", handler, concurrency=concurrency, poll_interval=0.05)
    try:
        await worker.serve(task_status=task_status)
        outcome.append(None)
    except Exception as exc:  # the test inspects it
        outcome.append(exc)
    finally:
        done.set()


@pytest.mark.parametrize("concurrency", [1, 4], ids=["one-at-a-time", "concurrent"])
async def test_an_idle_worker_ends_with_fenced(memory_store: Store, concurrency: int) -> None:
    """A worker waiting for work when the store is taken over ends with `Fenced` itself.

    Not a hang, and not an `ExceptionGroup` wrapping it: callers write ``except Fenced``.
    """
    handled: list[str] = []

    async def handler(job: JobRecord, lease: LeaseHandle) -> None:
        handled.append(job.id)

    outcome: list[BaseException | None] = []
    done = trio.Event()
    async with taquba.open_queue(memory_store, "f", **FAST) as first:
        await first.enqueue("w", b"x")
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(serve_and_record, first, handler, outcome, done, concurrency=concurrency)
            )
            while not handled:  # noqa: ASYNC110 - the handler is ours; a short poll is fine
                await trio.sleep(0.01)
            await trio.sleep(0.1)  # idle now
            async with taquba.open_queue(memory_store, "f", **FAST) as second:
                await second.enqueue("w", b"for the new owner")
                with trio.move_on_after(FENCE_NOTICED):
                    await done.wait()
            nursery.cancel_scope.cancel()
    assert outcome, f"the worker still runs {FENCE_NOTICED} s after being fenced"
    assert type(outcome[0]) is Fenced, f"the worker ended with {outcome[0]!r}, not Fenced"


async def test_a_busy_worker_ends_with_fenced_when_its_handler_settles(
    memory_store: Store,
) -> None:
    """One job at a time: the settlement of the job in flight is what meets the fence."""
    started = trio.Event()
    release = trio.Event()

    async def handler(job: JobRecord, lease: LeaseHandle) -> None:
        started.set()
        await release.wait()

    outcome: list[BaseException | None] = []
    done = trio.Event()
    async with taquba.open_queue(memory_store, "f", **FAST) as first:
        job = await first.enqueue("w", b"x")
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(serve_and_record, first, handler, outcome, done, concurrency=1)
            )
            await started.wait()
            async with taquba.open_queue(memory_store, "f", **FAST) as second:
                release.set()  # its ack must fail: the store belongs to `second` now
                with trio.move_on_after(FENCE_NOTICED):
                    await done.wait()
                record = await second.get_job(job.id)
                assert record is not None and record.status is JobStatus.PENDING
            nursery.cancel_scope.cancel()
    assert outcome and type(outcome[0]) is Fenced, outcome


async def test_a_worker_at_capacity_ends_with_fenced(memory_store: Store) -> None:
    """Every slot busy with a long handler: the worker must still stop when fenced.

    Its deliveries are void (the new writer already requeued the jobs and will deliver them
    again), so running the handlers on only duplicates side effects. `Worker.serve` documents
    that any other error "cancels the jobs in flight and is raised as itself".
    """
    started: list[str] = []

    async def handler(job: JobRecord, lease: LeaseHandle) -> None:
        started.append(job.id)
        await trio.sleep_forever()

    outcome: list[BaseException | None] = []
    done = trio.Event()
    async with taquba.open_queue(memory_store, "f", **FAST) as first:
        for i in range(2):
            await first.enqueue("w", b"%d" % i)
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(serve_and_record, first, handler, outcome, done, concurrency=2)
            )
            while len(started) < 2:  # noqa: ASYNC110 - the handler is ours
                await trio.sleep(0.01)
            async with taquba.open_queue(memory_store, "f", **FAST) as second:
                await second.enqueue("w", b"for the new owner")
                with trio.move_on_after(FENCE_NOTICED):
                    await done.wait()
            nursery.cancel_scope.cancel()
    assert outcome, f"the worker still runs {FENCE_NOTICED} s after being fenced"
    assert type(outcome[0]) is Fenced, outcome


async def test_a_writer_in_another_process_fences_this_one(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    lines: list[str] = []
    async with taquba.open_queue(store_dir, "fence", **FAST) as first:
        before = [(await first.enqueue("w", b"first %d" % i)).id for i in range(3)]
        held = await first.claim("w")
        assert held is not None
        with trio.fail_after(60):
            async with open_child(CHILD, "fence", store_dir, "5", cwd=tmp_path) as child:
                await child.expect_exit(0)
        lines = child.lines
        assert lines[0] == "READY" and lines[-1] == "CLOSED"
        with pytest.raises(Fenced):
            await first.enqueue("w", b"too late")
        with pytest.raises(Fenced):
            await first.ack(held)
    after = [line.split()[1] for line in lines if line.startswith("ENQ ")]
    assert len(after) == 5
    async with taquba.open_queue(store_dir, "fence", **FAST) as third:
        assert await ids_of(third, JobStatus.PENDING) == set(before) | set(after)
        assert await third.stats("w") == QueueStats("w", pending=8)


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the socket is


@pytest.mark.slow
async def test_an_unreachable_s3_endpoint_fails_open_with_storage_unavailable() -> None:
    """A misconfigured endpoint must not hang: finite retries, then `StorageUnavailable`.

    With the default ``max_retries`` this takes 6 to 25 s here (retry backoff has jitter, and
    load stretches it). `open_queue` itself gives up after 30 s, so the guard sits above that
    deadline rather than on it, where it would race it.
    """
    store = Store.from_url(
        "s3://nowhere/prefix",
        endpoint=f"http://127.0.0.1:{_closed_port()}",
        region="us-east-1",
        access_key_id="x",
        secret_access_key="y",
    )
    with trio.fail_after(40), pytest.raises(taquba.StorageUnavailable):
        async with taquba.open_queue(store, "q", **FAST):
            pass
