"""Every endpoint of wire protocol v1, in JSON and in MessagePack, against a real server."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import ormsgpack
import pytest
import trio

import taquba
import taquba_server
from taquba.testing import open_test_queue

if TYPE_CHECKING:
    from conftest import Api


async def enqueue(api: Api, queue_name: str = "q", payload: bytes = b"p", **extra: object) -> str:
    status, body = await api.post(
        "/v1/jobs", {"queue_name": queue_name, "payload": payload, **extra}
    )
    assert status == 200, body
    assert body["created"] is True
    return body["id"]


async def claim_one(api: Api, queue_name: str = "q", **extra: object) -> dict[str, object]:
    status, body = await api.post(f"/v1/queues/{queue_name}/claim", {"max_jobs": 1, **extra})
    assert status == 200, body
    assert len(body["claims"]) == 1, body
    return body["claims"][0]


async def test_enqueue_and_get_job(api: Api) -> None:
    job_id = await enqueue(api, payload=b"\x00\xffhello", priority=5, headers={"h": "v"})
    status, job = await api.get(f"/v1/jobs/{job_id}")
    assert status == 200
    assert job["id"] == job_id
    assert job["payload"] == api.b(b"\x00\xffhello")
    assert job["status"] == "pending"
    assert job["priority"] == 5
    assert job["headers"] == {"h": "v"}
    assert job["claimed_at"] is None
    assert set(job) == {
        "id", "queue_name", "payload", "status", "priority", "attempts", "max_attempts",
        "enqueued_at", "headers", "claimed_at", "run_at", "last_error", "dedup_key",
        "completed_at", "failed_at", "cancel_requested", "woken_at", "wake_payload",
        "history_size",
    }  # fmt: skip
    assert (job["woken_at"], job["wake_payload"], job["history_size"]) == (None, None, 0)


async def test_get_unknown_job_is_404(api: Api) -> None:
    status, body = await api.get("/v1/jobs/nope")
    assert status == 404
    assert body["error"]["code"] == "job_not_found"
    status, body = await api.get("/v1/jobs/bad%20id")
    assert status == 400
    assert body["error"]["code"] == "invalid_request"
    assert body["error"]["field"] == "id"


async def test_enqueue_with_run_at_delay_and_dedup(api: Api, queue: taquba.Queue) -> None:
    later = queue.clock.now_ms() + 3_600_000 if hasattr(queue.clock, "now_ms") else None
    job_id = await enqueue(api, delay=3600)
    status, job = await api.get(f"/v1/jobs/{job_id}")
    assert job["status"] == "scheduled"
    assert job["run_at"] is not None
    del later
    first = await enqueue(api, dedup_key="k")
    status, body = await api.post(
        "/v1/jobs", {"queue_name": "q", "payload": b"x", "dedup_key": "k"}
    )
    assert status == 200
    assert body == {"id": first, "created": False}
    status, body = await api.post(
        "/v1/jobs", {"queue_name": "q", "payload": b"x", "run_at": 1, "delay": 1}
    )
    assert status == 400
    assert body["error"]["code"] == "invalid_argument"


async def test_idempotent_enqueue_retry(api: Api) -> None:
    request = {"queue_name": "q", "payload": b"once", "job_id": "client-id-1"}
    status, first = await api.post("/v1/jobs", request)
    assert (status, first) == (200, {"id": "client-id-1", "created": True})
    status, again = await api.post("/v1/jobs", request)
    assert (status, again) == (200, {"id": "client-id-1", "created": False})
    status, body = await api.post("/v1/jobs", {**request, "payload": b"other"})
    assert status == 409
    assert body["error"]["code"] == "duplicate_job_id"
    status, body = await api.post("/v1/jobs", {**request, "queue_name": "elsewhere"})
    assert status == 409


async def test_enqueue_with_kv_writes_and_expect(api: Api, queue: taquba.Queue) -> None:
    body = {"queue_name": "q", "payload": b"p", "kv_writes": [{"key": b"k", "value": b"v"}]}
    status, _ = await api.post("/v1/jobs", body)
    assert status == 200
    assert await queue.kv_get(b"k") == b"v"
    status, error = await api.post(
        "/v1/jobs",
        {"queue_name": "q", "payload": b"p", "kv_expect": [{"key": b"k", "value": None}]},
    )
    assert status == 409
    assert error["error"]["code"] == "kv_conflict"
    assert (await queue.stats("q")).pending == 1  # nothing written


async def test_enqueue_batch(api: Api, queue: taquba.Queue) -> None:
    jobs = [
        {"queue_name": "a", "payload": b"1", "job_id": "j1"},
        {"queue_name": "b", "payload": b"2"},
    ]
    status, body = await api.post("/v1/jobs/batch", {"jobs": jobs})
    assert status == 200
    assert [r["created"] for r in body["results"]] == [True, True]
    assert body["results"][0]["id"] == "j1"
    # A retry of a batch whose jobs all carry ids answers created false.
    retry = [jobs[0]]
    status, body = await api.post("/v1/jobs/batch", {"jobs": retry})
    assert (status, body) == (200, {"results": [{"id": "j1", "created": False}]})
    # All or nothing: a bad item writes nothing.
    before = await queue.stats("a")
    status, body = await api.post(
        "/v1/jobs/batch",
        {
            "jobs": [
                {"queue_name": "a", "payload": b"x"},
                {"queue_name": "a", "payload": b"y", "priority": -1},
            ]
        },
    )
    assert status == 400
    assert body["error"]["field"] == "jobs[1].priority"
    assert await queue.stats("a") == before


async def test_cancel(api: Api) -> None:
    job_id = await enqueue(api)
    assert await api.post(f"/v1/jobs/{job_id}/cancel") == (200, {"outcome": "removed"})
    assert await api.post(f"/v1/jobs/{job_id}/cancel") == (200, {"outcome": "not_found"})
    job_id = await enqueue(api)
    claim = await claim_one(api)
    assert await api.post(f"/v1/jobs/{job_id}/cancel") == (200, {"outcome": "requested"})
    status, body = await api.post(
        "/v1/claims/renew",
        {"claims": [{"job_id": job_id, "token": claim["token"], "extension": 5}]},
    )
    assert status == 200
    assert body["results"][0]["cancel_requested"] is True


async def test_job_history_of_retries_and_a_dead_letter(api: Api) -> None:
    job_id = await enqueue(api, max_attempts=3)
    assert await api.get(f"/v1/jobs/{job_id}/history") == (200, {"history": []})
    for error in ("boom", "boom again"):
        claim = await claim_one(api)
        status, body = await api.post(
            f"/v1/claims/{job_id}/nack", {"token": claim["token"], "error": error}
        )
        assert (status, body["dead"]) == (200, False)
    claim = await claim_one(api)
    status, _ = await api.post(
        f"/v1/claims/{job_id}/dead", {"token": claim["token"], "reason": "no"}
    )
    assert status == 200
    status, body = await api.get(f"/v1/jobs/{job_id}/history")
    assert status == 200
    history = body["history"]
    assert [(a["attempt"], a["outcome"], a["error"]) for a in history] == [
        (1, "retried", "boom"),
        (2, "retried", "boom again"),
        (3, "dead_lettered", "no"),
    ]
    for entry in history:
        assert set(entry) == {"attempt", "outcome", "recorded_at", "claimed_at", "error"}
        assert entry["recorded_at"] >= entry["claimed_at"] > 0
    status, job = await api.get(f"/v1/jobs/{job_id}")
    assert (status, job["history_size"], job["status"]) == (200, 3, "dead")
    # A requeue is an entry of its own, with no attempt.
    assert await api.post(f"/v1/jobs/{job_id}/requeue") == (200, {})
    status, body = await api.get(f"/v1/jobs/{job_id}/history")
    assert body["history"][-1]["outcome"] == "requeued"
    assert (body["history"][-1]["attempt"], body["history"][-1]["claimed_at"]) == (0, None)


async def test_job_history_of_an_unknown_or_malformed_id(api: Api) -> None:
    status, body = await api.get("/v1/jobs/nope/history")
    assert status == 404
    assert body["error"]["code"] == "job_not_found"
    status, body = await api.get("/v1/jobs/bad%20id/history")
    assert status == 400
    assert (body["error"]["code"], body["error"]["field"]) == ("invalid_request", "id")


async def test_wake_a_scheduled_job_with_a_payload(api: Api, queue: taquba.Queue) -> None:
    job_id = await enqueue(api, delay=3600)
    assert await api.post(f"/v1/jobs/{job_id}/wake", {"payload": b"\x00go"}) == (
        200,
        {"outcome": "woken"},
    )
    claimed: Any = (await claim_one(api))["job"]
    assert claimed["id"] == job_id
    assert claimed["wake_payload"] == api.b(b"\x00go")
    assert claimed["woken_at"] is not None
    assert await api.post(f"/v1/jobs/{job_id}/wake", {"payload": b"again"}) == (
        200,
        {"outcome": "not_scheduled"},
    )
    assert await api.post("/v1/jobs/unknown/wake") == (200, {"outcome": "not_found"})
    # Without a payload (an empty body, or null) the job is woken with none.
    other = await enqueue(api, delay=3600)
    assert await api.post(f"/v1/jobs/{other}/wake", {"payload": None}) == (
        200,
        {"outcome": "woken"},
    )
    job = await queue.get_job(other)
    assert job is not None
    assert (job.status, job.wake_payload) == (taquba.JobStatus.PENDING, None)
    assert job.woken_at is not None


async def test_a_bad_wake_is_refused_and_changes_nothing(
    http: httpx.AsyncClient, queue: taquba.Queue
) -> None:
    job_id = (await queue.enqueue("q", b"p", delay=3600)).id
    json_headers = {"content-type": "application/json"}
    for body, field in [
        ({"payload": "not base64!"}, "payload"),
        ({"payload": "cA="}, "payload"),
        ({"payload": 5}, "payload"),
        ({"payload": "cA==", "extra": 1}, "extra"),
    ]:
        response = await http.post(
            f"/v1/jobs/{job_id}/wake", content=json.dumps(body), headers=json_headers
        )
        assert response.status_code == 400, body
        assert response.json()["error"]["field"] == field
    response = await http.post(
        f"/v1/jobs/{job_id}/wake",
        content=ormsgpack.packb({"payload": "cA=="}),
        headers={"content-type": "application/msgpack"},
    )
    assert response.status_code == 400  # MessagePack wants bin
    response = await http.post("/v1/jobs/bad%20id/wake", json={"payload": "cA=="})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "id"
    job = await queue.get_job(job_id)
    assert job is not None
    assert (job.status, job.woken_at, job.wake_payload) == (taquba.JobStatus.SCHEDULED, None, None)


async def test_wait_for_a_job(api: Api, nursery: trio.Nursery) -> None:
    job_id = await enqueue(api)
    status, body = await api.get(f"/v1/jobs/{job_id}/wait", timeout=0.05)
    assert status == 200
    assert body["finished"] is False
    assert body["job"]["status"] == "pending"
    assert await api.get("/v1/jobs/unknown/wait", timeout=1) == (
        200,
        {"job": None, "finished": True},
    )

    results: list[object] = []
    done = trio.Event()

    async def waiter() -> None:
        results.append(await api.get(f"/v1/jobs/{job_id}/wait", timeout=30))
        done.set()

    nursery.start_soon(waiter)
    claim = await claim_one(api)
    await trio.testing.wait_all_tasks_blocked()
    status, _ = await api.post(f"/v1/claims/{job_id}/ack", {"token": claim["token"]})
    assert status == 200
    with trio.fail_after(10):
        await done.wait()
    assert results[0] == (200, {"job": None, "finished": True})
    status, body = await api.get(f"/v1/jobs/{job_id}/wait", timeout=61)
    assert status == 400
    assert body["error"]["field"] == "timeout"


async def test_queues_stats_and_config(api: Api) -> None:
    await enqueue(api, "alpha")
    assert await api.get("/v1/queues") == (200, {"queues": ["alpha"]})
    status, stats = await api.get("/v1/queues/alpha/stats")
    assert status == 200
    assert stats == {
        "queue_name": "alpha", "pending": 1, "scheduled": 0, "claimed": 0, "done": 0,
        "dead": 0, "quarantined": 0,
    }  # fmt: skip
    status, config = await api.get("/v1/config")
    assert status == 200
    assert config["name"] == "test"
    assert config["default"]["max_attempts"] == 3
    assert config["default"]["keep_done"] is None
    assert set(config["queues"]) == {"alpha"}


async def test_config_reports_the_payload_offload_threshold(nursery: trio.Nursery) -> None:
    offloading = taquba.QueueConfig(payload_offload_threshold=1024)
    async with open_test_queue(queues={"big": offloading}) as queue:
        await queue.enqueue("big", b"x")  # /v1/config lists the queues that held a job
        server = taquba_server.Server(queue, port=0, shutdown_grace=5.0)
        await nursery.start(server.serve)
        assert server.url is not None
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            response = await http.get("/v1/config")
            server.shutdown()
    assert response.status_code == 200
    config = response.json()
    assert config["queues"]["big"]["payload_offload_threshold"] == 1024
    assert config["default"]["payload_offload_threshold"] is None


async def test_claim_renew_ack(api: Api, queue: taquba.Queue) -> None:
    job_id = await enqueue(api, payload=b"work")
    claim = await claim_one(api, lease=10)
    assert claim["job"]["id"] == job_id
    assert claim["job"]["payload"] == api.b(b"work")
    assert claim["job"]["status"] == "claimed"
    assert claim["lease_expires_at"] > claim["job"]["claimed_at"]
    status, body = await api.post(
        "/v1/claims/renew",
        {"claims": [
            {"job_id": job_id, "token": claim["token"], "extension": 60},
            {"job_id": job_id, "token": "wrong", "extension": 60},
            {"job_id": "other", "token": claim["token"], "extension": 60},
        ]},
    )  # fmt: skip
    assert status == 200
    first, wrong, other = body["results"]
    assert first["lost"] is False
    assert first["expires_at"] >= claim["lease_expires_at"]
    assert wrong == {"job_id": job_id, "expires_at": None, "cancel_requested": False, "lost": True}
    assert other["lost"] is True
    effects = {
        "enqueues": [{"queue_name": "next", "payload": b"n"}],
        "kv_writes": [{"key": b"done", "value": b"1"}],
    }
    status, body = await api.post(
        f"/v1/claims/{job_id}/ack", {"token": claim["token"], "effects": effects}
    )
    assert status == 200
    assert [r["created"] for r in body["enqueued"]] == [True]
    assert await queue.kv_get(b"done") == b"1"
    assert await queue.get_job(job_id) is None
    status, body = await api.post(f"/v1/claims/{job_id}/ack", {"token": claim["token"]})
    assert status == 410
    assert body["error"]["code"] == "claim_lost"


async def test_claim_empty_and_batch(api: Api) -> None:
    assert await api.post("/v1/queues/q/claim", {}) == (200, {"claims": []})
    assert await api.post("/v1/queues/q/claim") == (200, {"claims": []})
    for _ in range(3):
        await enqueue(api)
    status, body = await api.post("/v1/queues/q/claim", {"max_jobs": 5})
    assert status == 200
    assert len(body["claims"]) == 3
    assert len({c["token"] for c in body["claims"]}) == 3
    status, body = await api.post("/v1/queues/q/claim", {"max_jobs": 257})
    assert status == 400
    assert body["error"]["field"] == "max_jobs"


async def test_nack_retries_then_dead(api: Api, queue: taquba.Queue) -> None:
    job_id = await enqueue(api, max_attempts=2)
    claim = await claim_one(api)
    status, body = await api.post(
        f"/v1/claims/{job_id}/nack", {"token": claim["token"], "error": "boom", "retry_after": 0}
    )
    assert (status, body) == (200, {"dead": False, "enqueued": []})
    claim = await claim_one(api)
    status, body = await api.post(
        f"/v1/claims/{job_id}/nack",
        {
            "token": claim["token"],
            "error": "boom again",
            "kv_writes": [{"key": b"attempt", "value": b"2"}],
            "effects_if_dead": {"enqueues": [{"queue_name": "alerts", "payload": b"!"}]},
        },
    )
    assert status == 200
    assert body["dead"] is True
    assert len(body["enqueued"]) == 1
    job = await queue.get_job(job_id)
    assert job is not None
    assert job.status == taquba.JobStatus.DEAD
    assert job.last_error == "boom again"


async def test_dead_letter_and_requeue(api: Api, queue: taquba.Queue) -> None:
    job_id = await enqueue(api)
    claim = await claim_one(api)
    status, body = await api.post(
        f"/v1/claims/{job_id}/dead", {"token": claim["token"], "reason": "bad"}
    )
    assert (status, body) == (200, {"enqueued": []})
    status, body = await api.get("/v1/queues/q/dead")
    assert status == 200
    assert [j["id"] for j in body["jobs"]] == [job_id]
    assert body["jobs"][0]["last_error"] == "bad"
    assert await api.post(f"/v1/jobs/{job_id}/requeue") == (200, {})
    status, body = await api.post(f"/v1/jobs/{job_id}/requeue")
    assert status == 409
    assert body["error"]["code"] == "invalid_state"
    status, body = await api.post("/v1/jobs/unknown/requeue")
    assert status == 404
    assert body["error"]["code"] == "job_not_found"


async def test_settle_batch(api: Api, queue: taquba.Queue) -> None:
    ids = [await enqueue(api) for _ in range(3)]
    status, body = await api.post("/v1/queues/q/claim", {"max_jobs": 3})
    tokens = {c["job"]["id"]: c["token"] for c in body["claims"]}
    settlements = [
        {"job_id": ids[0], "action": "ack", "token": tokens[ids[0]]},
        {"job_id": ids[1], "action": "nack", "token": tokens[ids[1]], "error": "e"},
        {"job_id": ids[2], "action": "dead", "token": tokens[ids[2]], "reason": "r"},
        {"job_id": ids[0], "action": "ack", "token": tokens[ids[0]]},
    ]
    status, body = await api.post("/v1/claims/settle", {"settlements": settlements})
    assert status == 200
    ok = [r["ok"] for r in body["results"]]
    assert ok == [True, True, True, False]
    assert body["results"][1]["dead"] is False
    assert body["results"][3]["error"]["code"] == "claim_lost"
    # The fields of one action do not apply to another.
    status, body = await api.post(
        "/v1/claims/settle",
        {"settlements": [{"job_id": ids[0], "action": "ack", "token": "t", "reason": "x"}]},
    )
    assert status == 400
    assert body["error"]["field"] == "settlements[0].reason"
    status, body = await api.post(
        "/v1/claims/settle", {"settlements": [{"job_id": ids[0], "action": "nack", "token": "t"}]}
    )
    assert status == 400
    assert body["error"]["field"] == "settlements[0].error"


async def test_kv_endpoints(api: Api) -> None:
    assert await api.post("/v1/kv/get", {"key": b"a"}) == (200, {"value": None})
    assert await api.post("/v1/kv/put", {"key": b"a", "value": b"1"}) == (200, {})
    assert await api.post("/v1/kv/get", {"key": b"a"}) == (200, {"value": api.b(b"1")})
    assert await api.post("/v1/kv/cas", {"key": b"a", "expected": b"0", "new": b"2"}) == (
        200,
        {"swapped": False},
    )
    assert await api.post("/v1/kv/cas", {"key": b"a", "expected": b"1", "new": b"2"}) == (
        200,
        {"swapped": True},
    )
    await api.post("/v1/kv/put", {"key": b"ab", "value": b"3"})
    await api.post("/v1/kv/put", {"key": b"b", "value": b"4"})
    status, page = await api.post("/v1/kv/scan", {"prefix": b"a", "limit": 1})
    assert status == 200
    assert page["entries"] == [{"key": api.b(b"a"), "value": api.b(b"2")}]
    assert page["next_cursor"] is not None
    cursor = page["next_cursor"]
    if api.encoding == "json":
        import base64

        cursor = base64.b64decode(cursor)
    status, page = await api.post("/v1/kv/scan", {"prefix": b"a", "cursor": cursor})
    assert page["entries"] == [{"key": api.b(b"ab"), "value": api.b(b"3")}]
    assert await api.post("/v1/kv/delete", {"key": b"a"}) == (200, {})
    assert await api.post("/v1/kv/get", {"key": b"a"}) == (200, {"value": None})


async def test_blob_endpoints(api: Api) -> None:
    assert await api.post("/v1/blobs/get", {"path": "d/x"}) == (200, {"data": None})
    assert await api.post("/v1/blobs/put", {"path": "d/x", "data": b"X"}) == (
        200,
        {"written": True},
    )
    assert await api.post("/v1/blobs/put", {"path": "d/x", "data": b"Y", "create_only": True}) == (
        200,
        {"written": False},
    )
    assert await api.post("/v1/blobs/get", {"path": "d/x"}) == (200, {"data": api.b(b"X")})
    await api.post("/v1/blobs/put", {"path": "d/y", "data": b""})
    assert await api.post("/v1/blobs/list", {"directory": "d"}) == (200, {"paths": ["x", "y"]})
    assert await api.post("/v1/blobs/list", {"directory": "d", "start_after": "x", "limit": 5}) == (
        200,
        {"paths": ["y"]},
    )
    assert await api.post("/v1/blobs/delete", {"path": "d/x"}) == (200, {"deleted": True})
    assert await api.post("/v1/blobs/delete", {"path": "d/x"}) == (200, {"deleted": False})
    status, body = await api.post("/v1/blobs/get", {"path": "../etc/passwd"})
    assert status == 400
    assert body["error"]["code"] == "invalid_argument"


async def test_list_jobs_quarantine_and_purge(api: Api, queue: taquba.Queue) -> None:
    for _ in range(3):
        await enqueue(api)
    status, page = await api.get("/v1/queues/q/jobs", status="pending", limit=2)
    assert status == 200
    assert len(page["jobs"]) == 2
    cursor = page["next_cursor"]
    if api.encoding == "msgpack":
        import base64

        cursor = base64.b64encode(cursor).decode()
    status, page = await api.get("/v1/queues/q/jobs", status="pending", cursor=cursor)
    assert status == 200
    assert len(page["jobs"]) == 1
    status, body = await api.get("/v1/queues/q/jobs", status="nope")
    assert status == 400
    assert body["error"]["field"] == "status"
    status, body = await api.get("/v1/queues/q/jobs")
    assert status == 400
    assert body["error"]["field"] == "status"
    status, body = await api.get("/v1/queues/q/jobs", status="pending", extra=1)
    assert status == 400
    assert body["error"]["field"] == "extra"
    assert await api.get("/v1/queues/q/quarantine", limit=10) == (200, {"records": []})
    claim = await claim_one(api)
    await api.post(
        f"/v1/claims/{claim['job']['id']}/dead", {"token": claim["token"], "reason": "r"}
    )
    assert (await queue.stats("q")).dead == 1
    assert await api.post("/v1/queues/q/purge", {"status": "dead"}) == (200, {"removed": 1})
    assert (await queue.stats("q")).dead == 0
    status, body = await api.post("/v1/queues/q/purge", {"status": "pending"})
    assert status == 400


async def test_health_and_openapi(api: Api, queue: taquba.Queue) -> None:
    status, health = await api.get("/v1/health")
    assert status == 200
    assert health["status"] == "ok"
    assert health["name"] == "test"
    assert health["owner"]["url"].startswith("http://127.0.0.1:")
    status, doc = await api.get("/v1/openapi.json")
    assert status == 200
    assert doc["openapi"] == "3.1.0"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "queue_name"),
        ({"queue_name": "q"}, "payload"),
        ({"queue_name": "q", "payload": "not base64!"}, "payload"),
        ({"queue_name": 5, "payload": "cA=="}, "queue_name"),
        ({"queue_name": "q", "payload": "cA==", "priorty": 1}, "priorty"),
        ({"queue_name": "q", "payload": "cA==", "priority": True}, "priority"),
        ({"queue_name": "q", "payload": "cA==", "priority": 1.5}, "priority"),
        ({"queue_name": "q", "payload": "cA==", "headers": {"a": 1}}, "headers.a"),
        ({"queue_name": "q", "payload": "cA==", "job_id": "a b"}, None),
        (
            {"queue_name": "q", "payload": "cA==", "kv_writes": [{"key": "aw=="}]},
            "kv_writes[0].value",
        ),
        ({"queue_name": "", "payload": "cA=="}, "queue_name"),
        ({"queue_name": "\ud800", "payload": "cA=="}, "queue_name"),
        ([1, 2], None),
    ],
)
async def test_malformed_json_bodies_are_400(
    http: httpx.AsyncClient, queue: taquba.Queue, body: object, field: str | None
) -> None:
    response = await http.post(
        "/v1/jobs", content=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] in ("invalid_request", "invalid_id")
    if field is not None:
        assert error["field"] == field
    assert await queue.list_queues() == []


@pytest.mark.parametrize(
    "content",
    [
        b"{",
        b"NaN",
        b'{"queue_name": "q", "payload": "cA==", "delay": NaN}',
        b"\xff\xfe",
        b"[" * 100_000,
    ],
)
async def test_undecodable_json_is_400(http: httpx.AsyncClient, content: bytes) -> None:
    response = await http.post(
        "/v1/jobs", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


async def test_msgpack_needs_bin_for_bytes(http: httpx.AsyncClient) -> None:
    body = ormsgpack.packb({"queue_name": "q", "payload": "a string"})
    response = await http.post(
        "/v1/jobs", content=body, headers={"Content-Type": "application/msgpack"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/msgpack"
    assert ormsgpack.unpackb(response.content)["error"]["field"] == "payload"
    response = await http.post(
        "/v1/jobs", content=b"\xc1", headers={"Content-Type": "application/msgpack"}
    )
    assert response.status_code == 400


async def test_media_types_and_body_limit(queue: taquba.Queue, nursery: trio.Nursery) -> None:
    import taquba_server

    server = taquba_server.Server(queue, port=0, max_body_size=2048)
    url = await nursery.start(server.serve)
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.post(
            "/v1/jobs", content=b"queue_name=q", headers={"Content-Type": "text/plain"}
        )
        assert response.status_code == 415
        assert response.json()["error"]["code"] == "unsupported_media_type"
        response = await http.post("/v1/jobs", content=b"{}")
        assert response.status_code == 415
        big = {"queue_name": "q", "payload": "A" * 4096}
        response = await http.post("/v1/jobs", json=big)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"

        async def chunks():  # no Content-Length: the limit applies while streaming
            for _ in range(10):
                yield b" " * 1000

        response = await http.post(
            "/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413
        # JSON request, MessagePack answer by Accept
        response = await http.post(
            "/v1/queues/q/claim", json={}, headers={"Accept": "application/msgpack"}
        )
        assert response.status_code == 200
        assert ormsgpack.unpackb(response.content) == {"claims": []}
        response = await http.get("/v1/nowhere")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        response = await http.delete("/v1/jobs/x")
        assert response.status_code == 405
        assert response.json()["error"]["code"] == "method_not_allowed"
    assert await queue.list_queues() == []
    server.shutdown()


async def test_a_failed_settlement_writes_nothing_and_keeps_the_claim(
    api: Api, queue: taquba.Queue
) -> None:
    existing = await enqueue(api, job_id="taken")
    job_id = await enqueue(api, "work")
    claim = await claim_one(api, "work")
    effects = {
        "enqueues": [{"queue_name": "next", "payload": b"n", "job_id": existing}],
        "kv_writes": [{"key": b"side", "value": b"effect"}],
    }
    status, body = await api.post(
        f"/v1/claims/{job_id}/ack", {"token": claim["token"], "effects": effects}
    )
    assert status == 409
    assert body["error"]["code"] == "duplicate_job_id"
    assert await queue.kv_get(b"side") is None
    assert "next" not in await queue.list_queues()
    job = await queue.get_job(job_id)
    assert job is not None
    assert job.status == taquba.JobStatus.CLAIMED
    status, _ = await api.post(f"/v1/claims/{job_id}/ack", {"token": claim["token"]})
    assert status == 200
