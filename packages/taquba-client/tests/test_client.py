"""AsyncClient under trio against an in-process server: every call, and the error tree."""

from __future__ import annotations

import datetime as dt

import pytest
import trio

import taquba
import taquba_client as tc
import taquba_server
from client_support import ServerHandle, start_server


async def test_enqueue_get_and_wait_for_completion(server: ServerHandle) -> None:
    async with tc.AsyncClient(server.url) as client:
        result = await client.enqueue("emails", b"hello", headers={"k": "v"}, priority=5)
        assert result.created
        job = await client.get_job(result.id)
        assert (job.queue_name, job.payload, job.status, job.priority) == (
            "emails",
            b"hello",
            tc.JobStatus.PENDING,
            5,
        )
        assert job.headers == {"k": "v"}
        async with trio.open_nursery() as nursery:

            async def work() -> None:
                claims = await client.claim_batch("emails", 10, wait=5)
                assert [c.id for c in claims] == [result.id]
                await client.ack(claims[0])

            nursery.start_soon(work)
            with trio.fail_after(10):
                done = await client.wait_for_completion(result.id)
        assert done is not None
        assert done.status is tc.JobStatus.DONE
        stats = await client.stats("emails")
        assert stats.done == 1
        assert "emails" in await client.list_queues()


async def test_enqueue_with_the_same_id_is_idempotent(server: ServerHandle) -> None:
    async with tc.AsyncClient(server.url) as client:
        first = await client.enqueue("q", b"x", job_id="job-1")
        again = await client.enqueue("q", b"x", job_id="job-1")
        assert (first.created, again.created) == (True, False)
        with pytest.raises(tc.DuplicateJobId) as info:
            await client.enqueue("q", b"other", job_id="job-1")
        assert isinstance(info.value, tc.Conflict)
        assert info.value.status == 409


async def test_enqueue_options_and_batch(server: ServerHandle) -> None:
    async with tc.AsyncClient(server.url) as client:
        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        scheduled = await client.enqueue("q", b"a", run_at=later, max_attempts=7)
        delayed = await client.enqueue("q", b"b", delay=3600)
        assert (await client.get_job(scheduled.id)).status is tc.JobStatus.SCHEDULED
        assert (await client.get_job(scheduled.id)).max_attempts == 7
        assert (await client.get_job(delayed.id)).status is tc.JobStatus.SCHEDULED
        d1 = await client.enqueue("q", b"c", dedup_key="d")
        d2 = await client.enqueue("q", b"c2", dedup_key="d")
        assert d2 == tc.EnqueueResult(d1.id, False)
        results = await client.enqueue_batch(
            [tc.EnqueueRequest(queue_name="q", payload=bytes([i])) for i in range(5)],
            kv_writes={b"batch": b"1"},
        )
        assert all(r.created for r in results)
        assert len({r.id for r in results}) == 5
        assert await client.kv_get(b"batch") == b"1"
        with pytest.raises(tc.UsageError):
            await client.enqueue("q", b"x", run_at=dt.datetime(2030, 1, 1))


async def test_kv_expect_and_errors(server: ServerHandle) -> None:
    async with tc.AsyncClient(server.url) as client:
        await client.enqueue("q", b"x", kv_writes={b"k": b"1"}, kv_expect={b"k": None})
        with pytest.raises(tc.KvConflict):
            await client.enqueue("q", b"y", kv_expect={b"k": None})
        with pytest.raises(tc.JobNotFound) as info:
            await client.get_job("nope")
        assert isinstance(info.value, tc.NotFound)
        with pytest.raises(tc.InvalidRequest) as bad:
            await client.enqueue("q", b"x", priority=-1)
        assert bad.value.status == 400
        with pytest.raises(tc.InvalidRequest):
            await client.claim_batch("q", 0)


async def test_kv_and_blobs(server: ServerHandle) -> None:
    async with tc.AsyncClient(server.url) as client:
        assert await client.kv_get(b"a") is None
        await client.kv_put(b"a", b"1")
        await client.kv_put(b"b", b"2")
        assert await client.kv_cas(b"a", b"1", b"3")
        assert not await client.kv_cas(b"a", b"1", b"4")
        page = await client.kv_scan(b"", limit=10)
        assert page.entries == [(b"a", b"3"), (b"b", b"2")]
        await client.kv_delete(b"a")
        assert await client.kv_get(b"a") is None
        assert await client.blob_put("dir/x", b"data")
        assert not await client.blob_put("dir/x", b"other", create_only=True)
        assert await client.blob_get("dir/x") == b"data"
        assert await client.blob_list("dir") == ["x"]
        assert await client.blob_delete("dir/x")
        assert await client.blob_get("dir/x") is None


async def test_worker_calls_and_claim_lost(server: ServerHandle) -> None:
    async with tc.AsyncClient(server.url) as client:
        ids = [(await client.enqueue("w", bytes([i]))).id for i in range(4)]
        claims = await client.claim_batch("w", 4, lease=0.5)
        assert sorted(c.id for c in claims) == sorted(ids)
        assert 0.4 < claims[0].lease < 0.6
        renewed = await client.renew(claims[0], 30)
        assert renewed.expires_at is not None
        assert not renewed.lost
        await client.ack(
            claims[0],
            tc.Effects(
                enqueues=[tc.EnqueueRequest(queue_name="next", payload=b"n")],
                kv_writes={b"r": b"1"},
            ),
        )
        assert (await client.stats("next")).pending == 1
        nack = await client.nack(claims[1], "boom", retry_after=60)
        assert not nack.dead
        await client.dead_letter(claims[2], "bad")
        dead = await client.dead_jobs("w")
        assert [j.id for j in dead] == [claims[2].id]
        assert dead[0].last_error == "bad"
        # the last claim's 0.5 s lease runs out and the reaper takes the job back
        with trio.fail_after(20):
            while True:
                job = await client.get_job(claims[3].id)
                if job is not None and job.status is tc.JobStatus.PENDING:
                    break
                await trio.sleep(0.05)
        with pytest.raises(tc.ClaimLost) as lost:
            await client.ack(claims[3])
        assert lost.value.status == 410
        results = await client.renew_batch([(claims[3], 10)])
        assert results[0].lost
        # a settle batch reports each entry on its own
        again = await client.claim_batch("w", 1, wait=3)
        out = await client.settle([tc.Ack(claim=again[0]), tc.Ack(claim=claims[3])])
        assert out[0].ok
        assert isinstance(out[1].error, tc.ClaimLost)


async def test_cancel_requeue_purge_and_list(server: ServerHandle) -> None:
    async with tc.AsyncClient(server.url) as client:
        a = await client.enqueue("c", b"a")
        assert await client.cancel(a.id) is tc.CancelOutcome.REMOVED
        assert await client.cancel(a.id) is tc.CancelOutcome.NOT_FOUND
        b = await client.enqueue("c", b"b")
        claim = (await client.claim_batch("c", 1))[0]
        assert await client.cancel(b.id) is tc.CancelOutcome.REQUESTED
        assert (await client.renew(claim, 10)).cancel_requested
        await client.dead_letter(claim, "x")
        with pytest.raises(tc.InvalidState):
            await client.requeue((await client.enqueue("c", b"c")).id)
        await client.requeue(b.id)
        page = await client.list_jobs("c", "pending")
        assert {j.id for j in page.jobs} >= {b.id}
        claim = (await client.claim_batch("c", 1, wait=1))[0]
        await client.dead_letter(claim, "again")
        assert await client.purge("c", tc.JobStatus.DEAD) >= 1
        assert await client.dead_jobs("c") == []
        config = await client.config()
        assert config.for_queue("c")["lease_duration"] == 2.0
        assert (await client.health()).status == "ok"


async def test_job_history_of_retries(server: ServerHandle) -> None:
    async with tc.AsyncClient(server.url) as client:
        job_id = (await client.enqueue("h", b"x", max_attempts=3)).id
        assert await client.get_job_history(job_id) == []
        for error in ("first", "second"):
            [claim] = await client.claim_batch("h", 1, wait=5)
            assert not (await client.nack(claim, error)).dead
        [claim] = await client.claim_batch("h", 1, wait=5)
        await client.ack(claim)  # the test queue keeps done jobs: the ack is an entry too
        history = await client.get_job_history(job_id)
        assert history is not None
        assert [(a.attempt, a.outcome, a.error) for a in history] == [
            (1, tc.AttemptOutcome.RETRIED, "first"),
            (2, tc.AttemptOutcome.RETRIED, "second"),
            (3, tc.AttemptOutcome.COMPLETED, None),
        ]
        assert all(isinstance(a, tc.JobAttempt) for a in history)
        assert all(a.claimed_at is not None and a.recorded_at >= a.claimed_at for a in history)
        assert (await client.get_job(job_id)).history_size == 3
        assert await client.get_job_history("unknown") is None
        with pytest.raises(tc.InvalidRequest):
            await client.get_job_history("bad id")


async def test_wake_scheduled(server: ServerHandle) -> None:
    async with tc.AsyncClient(server.url) as client:
        job_id = (await client.enqueue("w", b"x", delay=3600)).id
        fresh = await client.get_job(job_id)
        assert (fresh.woken_at, fresh.wake_payload, fresh.history_size) == (None, None, 0)
        assert await client.wake_scheduled(job_id, b"signal") is tc.WakeOutcome.WOKEN
        [claim] = await client.claim_batch("w", 1)
        assert claim.id == job_id
        assert claim.job.wake_payload == b"signal"
        assert claim.job.woken_at is not None
        assert await client.wake_scheduled(job_id, b"again") is tc.WakeOutcome.NOT_SCHEDULED
        assert await client.wake_scheduled("unknown") is tc.WakeOutcome.NOT_FOUND
        other = (await client.enqueue("w", b"y", delay=3600)).id
        assert await client.wake_scheduled(other) is tc.WakeOutcome.WOKEN
        woken = await client.get_job(other)
        assert (woken.status, woken.wake_payload) == (tc.JobStatus.PENDING, None)
        with pytest.raises(tc.InvalidRequest):
            await client.wake_scheduled("bad id", b"x")


async def test_auth_errors(nursery: trio.Nursery, queue: taquba.Queue) -> None:
    tokens = taquba_server.parse_tokens("p:produce;w:work;a:admin")
    handle = await start_server(nursery, queue, tokens=tokens)
    async with tc.AsyncClient(handle.url) as anonymous:
        with pytest.raises(tc.Unauthorized):
            await anonymous.enqueue("q", b"x")
    async with tc.AsyncClient(handle.url, token="p") as producer:
        await producer.enqueue("q", b"x")
        with pytest.raises(tc.Forbidden):
            await producer.claim_batch("q")
    async with tc.AsyncClient(handle.url, token="w") as worker:
        assert len(await worker.claim_batch("q")) == 1
        with pytest.raises(tc.Forbidden):
            await worker.dead_jobs("q")


def test_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAQUBA_SERVER", raising=False)
    with pytest.raises(tc.UsageError):
        tc.Client()
    monkeypatch.setenv("TAQUBA_SERVER", "http://127.0.0.1:1/")
    monkeypatch.setenv("TAQUBA_TOKEN", "secret")
    with tc.Client() as client:
        assert client.base_url == "http://127.0.0.1:1"


def test_retry_policy_schedule() -> None:
    policy = tc.RetryPolicy(initial_delay=1.0, max_delay=4.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert policy.delay(1, retry_after=3.0) == 3.0
    assert policy.delay(1, retry_after=30.0) == 4.0
    jittery = tc.RetryPolicy(initial_delay=1.0, jitter=0.5)
    assert all(0.5 <= jittery.delay(1) <= 1.0 for _ in range(100))
    with pytest.raises(tc.UsageError):
        tc.RetryPolicy(attempts=0)


async def test_unreachable_server_is_server_unavailable() -> None:
    policy = tc.RetryPolicy(attempts=2, initial_delay=0.01, max_delay=0.01)
    async with tc.AsyncClient("http://127.0.0.1:9", retry=policy) as client:
        with pytest.raises(tc.ServerUnavailable) as info:
            await client.enqueue("q", b"x")
        assert info.value.transient
