"""The server over a queue that offloads payloads (`taquba.QueueConfig.payload_offload_threshold`).

The server has no option of its own for offload: it serves the `taquba.Queue` it is given, so
an embedding application opens the queue with per-queue configs (``queues={...}``) and the
server inherits them. Every record it sends (a job, a claim, a listing, a dead letter, a wait)
must carry the materialized payload, never the empty inline one of the stored record, and the
wire form has no ``payload_ref`` (where a payload lives is the queue's business). The dashboard's
job page shows the payload and its size.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

import taquba
import taquba_server
from taquba import QueueConfig, Store
from taquba.testing import open_test_queue

if TYPE_CHECKING:
    from conftest import Api

pytest_plugins = ["taquba.testing.pytest_plugin"]

THRESHOLD = 64
BIG = bytes(range(256)) * 40  # binary, far above the threshold
OTHER = b"o" * 3000
QUEUES = {
    "big": QueueConfig(
        payload_offload_threshold=THRESHOLD,
        retry_backoff_base=0.0,
        max_attempts=3,
        keep_done=math.inf,
    )
}
WIRE_FIELDS = {
    "id", "queue_name", "payload", "status", "priority", "attempts", "max_attempts",
    "enqueued_at", "headers", "claimed_at", "run_at", "last_error", "dedup_key",
    "completed_at", "failed_at", "cancel_requested", "woken_at", "wake_payload",
    "history_size",
}  # fmt: skip


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest) -> Store:
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
async def queue(store: Store) -> AsyncIterator[taquba.Queue]:
    # The default config inlines; the "big" queue offloads (a per-queue config).
    config = QueueConfig(retry_backoff_base=0.0)
    async with open_test_queue(store, config=config, queues=QUEUES) as queue:
        yield queue


async def payload_objects(queue: taquba.Queue) -> list[str]:
    """The offloaded payload objects in the queue's store (``db/<name>/payloads/<ref>``)."""
    return [name for name in await queue.store.list_blobs("db") if "/payloads/" in name]


async def enqueue(api: Api, payload: bytes = BIG, **extra: object) -> str:
    status, body = await api.post("/v1/jobs", {"queue_name": "big", "payload": payload, **extra})
    assert status == 200, body
    return body["id"]


async def claim_one(api: Api) -> dict[str, Any]:
    status, body = await api.post("/v1/queues/big/claim", {"max_jobs": 1, "lease": 30})
    assert status == 200, body
    [claim] = body["claims"]
    return claim


def check_job(api: Api, job: dict[str, Any], payload: bytes = BIG) -> None:
    assert set(job) == WIRE_FIELDS  # no payload_ref on the wire
    assert job["payload"] == api.b(payload)


async def test_a_large_job_over_the_wire_from_enqueue_to_requeue(
    api: Api, queue: taquba.Queue
) -> None:
    job_id = await enqueue(api, headers={"h": "v"})
    stored = await queue.get_job(job_id)
    assert stored is not None and stored.payload_ref is not None  # offloaded
    assert await enqueue(api, payload=b"s" * THRESHOLD) != job_id  # at the threshold: inline

    status, job = await api.get(f"/v1/jobs/{job_id}")
    assert status == 200
    check_job(api, job)
    status, page = await api.get("/v1/queues/big/jobs", status="pending")
    assert status == 200
    assert {j["id"]: j["payload"] for j in page["jobs"]}[job_id] == api.b(BIG)

    # A retry, then a dead letter: every claim carries the whole payload.
    claim = await claim_one(api)
    check_job(api, claim["job"])
    status, body = await api.post(
        f"/v1/claims/{job_id}/nack", {"token": claim["token"], "error": "again", "retry_after": 0}
    )
    assert status == 200, body
    claim = await claim_one(api)
    if claim["job"]["id"] != job_id:  # the inline job came first
        claim = await claim_one(api)
    assert claim["job"]["attempts"] == 2
    check_job(api, claim["job"])
    status, body = await api.post(
        f"/v1/claims/{job_id}/dead", {"token": claim["token"], "reason": "bad"}
    )
    assert status == 200, body
    status, body = await api.get("/v1/queues/big/dead")
    assert status == 200
    [dead] = body["jobs"]
    check_job(api, dead)
    status, body = await api.get(f"/v1/jobs/{job_id}/history")
    assert status == 200
    assert [a["outcome"] for a in body["history"]] == ["retried", "dead_lettered"]

    # Requeued from the dead-letter inbox: the same object, read again.
    assert await api.post(f"/v1/jobs/{job_id}/requeue") == (200, {})
    status, job = await api.get(f"/v1/jobs/{job_id}")
    assert (status, job["status"], job["attempts"]) == (200, "pending", 0)
    check_job(api, job)
    claim = await claim_one(api)
    if claim["job"]["id"] != job_id:
        claim = await claim_one(api)
    check_job(api, claim["job"])
    effects = {"enqueues": [{"queue_name": "big", "payload": OTHER, "job_id": "follow-up"}]}
    status, body = await api.post(
        f"/v1/claims/{job_id}/ack", {"token": claim["token"], "effects": effects}
    )
    assert status == 200, body
    # Kept done (keep_done): the done record still reads whole; so does the follow-up.
    status, body = await api.get(f"/v1/jobs/{job_id}/wait", timeout=5)
    assert status == 200, body
    assert body["finished"] is True
    check_job(api, body["job"])
    status, follow_up = await api.get("/v1/jobs/follow-up")
    assert status == 200
    check_job(api, follow_up, OTHER)
    follow = await queue.get_job("follow-up")
    assert follow is not None and follow.payload_ref is not None


async def test_an_idempotent_retry_of_a_large_enqueue_is_recognised(
    api: Api, queue: taquba.Queue
) -> None:
    first = await api.post("/v1/jobs", {"queue_name": "big", "payload": BIG, "job_id": "j"})
    again = await api.post("/v1/jobs", {"queue_name": "big", "payload": BIG, "job_id": "j"})
    assert first == (200, {"id": "j", "created": True})
    assert again == (200, {"id": "j", "created": False})  # compared with the stored payload
    status, body = await api.post(
        "/v1/jobs", {"queue_name": "big", "payload": OTHER, "job_id": "j"}
    )
    assert status == 409
    assert body["error"]["code"] == "duplicate_job_id"
    status, body = await api.post(
        "/v1/jobs/batch",
        {"jobs": [{"queue_name": "big", "payload": BIG, "job_id": "j"}]},
    )
    assert status == 200, body
    assert body["results"] == [{"id": "j", "created": False}]
    assert len(await payload_objects(queue)) == 1  # the refused enqueues' objects are gone


def payload_shown(html: str) -> str:
    found = re.search(r'<pre class="payload"[^>]*>(.*?)</pre>', html, re.S)
    assert found, "no payload on the page"
    return found.group(1)


async def test_the_dashboard_shows_a_large_payload_and_requeues_it(
    server: taquba_server.Server, queue: taquba.Queue
) -> None:
    text = b'{"report": "' + b"r" * 5000 + b'"}'
    result = await queue.enqueue("big", text)
    claim = await queue.claim("big")
    assert claim is not None
    await queue.dead_letter(claim, "no")
    assert server.url is not None
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        page = await client.get(f"/ui/jobs/{result.id}", params={"view": "text"})
        assert page.status_code == 200, page.text
        assert f"({len(text)} bytes)" in page.text
        assert payload_shown(page.text).startswith("{&#34;report&#34;: &#34;rrrr")
        assert "payload_ref" not in page.text
        dead = await client.get("/ui/dead", params={"name": "big"})
        assert dead.status_code == 200
        assert result.id in dead.text
        overview = await client.get("/ui/")
        assert overview.status_code == 200
        csrf = re.search(r'name="csrf" value="([^"]+)"', dead.text)
        assert csrf is not None
        done = await client.post(
            "/ui/actions/requeue",
            data={"job_id": result.id, "csrf": csrf.group(1), "confirm": "yes"},
        )
        assert done.status_code == 303
    with trio.fail_after(10):
        again = await queue.claim("big")
    assert again is not None and again.job.payload == text


async def test_the_dashboard_lists_without_reading_payload_objects(
    server: taquba_server.Server, queue: taquba.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listing pages show no payload, so they read no object (the overview refreshes every
    15 s, and on S3 each read is a billed GET); the job page reads its one."""
    ids = [(await queue.enqueue("big", BIG + bytes([i]))).id for i in range(3)]
    claim = await queue.claim("big")
    assert claim is not None
    await queue.dead_letter(claim, "no")
    reads: list[str] = []
    real_get = Store.get_blob

    async def counted(self: Store, path: str) -> bytes | None:
        reads.append(path)
        return await real_get(self, path)

    monkeypatch.setattr(Store, "get_blob", counted)
    assert server.url is not None
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        for path, params in [
            ("/ui/", {}),
            ("/ui/queue", {"name": "big", "status": "pending"}),
            ("/ui/dead", {"name": "big"}),
        ]:
            page = await client.get(path, params=params)
            assert page.status_code == 200, page.text
        assert [r for r in reads if "/payloads/" in r] == []
        page = await client.get(f"/ui/jobs/{ids[1]}")
        assert page.status_code == 200
    assert len([r for r in reads if "/payloads/" in r]) == 1


@pytest.mark.parametrize("store", ["s3"], indirect=True)
async def test_a_large_job_on_s3(api: Api, queue: taquba.Queue) -> None:
    job_id = await enqueue(api)
    claim = await claim_one(api)
    check_job(api, claim["job"])
    status, body = await api.post(f"/v1/claims/{job_id}/ack", {"token": claim["token"]})
    assert status == 200, body
    status, job = await api.get(f"/v1/jobs/{job_id}")
    assert status == 200
    check_job(api, job)
