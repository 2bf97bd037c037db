"""``GET /metrics``: the queue's Prometheus metrics over HTTP, parsed with prometheus-client."""

from __future__ import annotations

import httpx
import pytest
import trio
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import taquba
import taquba_server
from taquba.prometheus import PrometheusObserver
from taquba.testing import Fault, inject_faults, open_test_queue
from taquba_server import Token


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_what_the_api_did(
    server: taquba_server.Server, queue: taquba.Queue
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        for _ in range(3):
            response = await http.post("/v1/jobs", json={"queue_name": "m", "payload": ""})
            assert response.status_code == 200, response.text
        response = await http.post("/v1/queues/m/claim", json={"max_jobs": 2})
        claims = response.json()["claims"]
        assert len(claims) == 2
        first, second = claims
        ack = await http.post(
            f"/v1/claims/{first['job']['id']}/ack", json={"token": first["token"]}
        )
        assert ack.status_code == 200, ack.text
        dead = await http.post(
            f"/v1/claims/{second['job']['id']}/dead",
            json={"token": second["token"], "reason": "no"},
        )
        assert dead.status_code == 200, dead.text
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert sample(found, "taquba_jobs_enqueued_total", queue="m") == 3
    assert sample(found, "taquba_jobs_claimed_total", queue="m") == 2
    assert sample(found, "taquba_jobs_acked_total", queue="m") == 1
    assert sample(found, "taquba_jobs_dead_lettered_total", queue="m") == 1
    assert sample(found, "taquba_job_latency_seconds_count", queue="m", outcome="acked") == 1
    assert sample(found, "taquba_queue_depth", queue="m", status="pending") == 1
    assert sample(found, "taquba_queue_depth", queue="m", status="dead") == 1
    assert sample(found, "taquba_queue_depth", queue="m", status="done") == 1
    assert sample(found, "taquba_commit_durable_seconds_count") > 0


async def test_metrics_scope(queue: taquba.Queue, nursery: trio.Nursery) -> None:
    tokens = [
        Token("m-secret", frozenset({"metrics"})),
        Token("a-secret", frozenset({"admin"})),
        Token("w-secret", frozenset({"work"})),
    ]
    server = taquba_server.Server(queue, port=0, tokens=tokens)
    url = await nursery.start(server.serve)
    async with httpx.AsyncClient(base_url=url) as http:

        async def get(path: str, secret: str | None) -> httpx.Response:
            headers = {} if secret is None else {"Authorization": f"Bearer {secret}"}
            return await http.get(path, headers=headers)

        assert (await get("/metrics", None)).status_code == 401
        assert (await get("/metrics", "nope")).status_code == 401
        forbidden = await get("/metrics", "w-secret")
        assert forbidden.status_code == 403
        assert forbidden.json()["error"]["code"] == "forbidden"
        assert (await get("/metrics", "m-secret")).status_code == 200
        assert (await get("/metrics", "a-secret")).status_code == 200
        # A metrics token reaches nothing else.
        assert (await get("/v1/queues", "m-secret")).status_code == 403
    server.shutdown()


async def test_serves_the_applications_own_observer(nursery: trio.Nursery) -> None:
    registry = CollectorRegistry()
    mine = PrometheusObserver(registry, namespace="app")
    async with open_test_queue() as queue:
        queue.add_observer(mine)
        server = taquba_server.Server(queue, port=0)
        url = await nursery.start(server.serve)
        assert [o for o in queue.observers if isinstance(o, PrometheusObserver)] == [mine]
        async with httpx.AsyncClient(base_url=url) as http:
            await http.post("/v1/jobs", json={"queue_name": "own", "payload": ""})
            found = samples((await http.get("/metrics")).text)
        assert sample(found, "app_jobs_enqueued_total", queue="own") == 1
        assert registry.get_sample_value("app_jobs_enqueued_total", {"queue": "own"}) == 1
        server.shutdown()


def test_metrics_scope_token_parsing() -> None:
    (token,) = taquba_server.parse_tokens("s:metrics")
    assert token.scopes == frozenset({"metrics"})
    assert token.allows("metrics")
    assert not token.allows("produce")
    (admin,) = taquba_server.parse_tokens("s:admin")
    assert admin.allows("metrics")
    (worker,) = taquba_server.parse_tokens("s:work")
    assert not worker.allows("metrics")
    with pytest.raises(taquba_server.InvalidTokens):
        taquba_server.parse_tokens("s:metric")


async def test_a_failing_or_slow_depth_read_does_not_fail_the_scrape(
    server: taquba_server.Server, queue: taquba.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    await queue.enqueue("d", b"")
    async with httpx.AsyncClient(base_url=server.url) as http:
        with inject_faults() as faults, caplog.at_level("WARNING", logger="taquba_server"):
            faults.on_read(Fault.unavailable(), times=None)
            response = await http.get("/metrics")
            faults.clear()
        assert response.status_code == 200
        found = samples(response.text)
        assert sample(found, "taquba_jobs_enqueued_total", queue="d") == 1  # counters still
        assert sample(found, "taquba_queue_depth", queue="d", status="pending") == 0  # no depth
        assert "could not read the queue depth" in caplog.text
        # The next scrape reads it (a failed read does not count as fresh).
        found = samples((await http.get("/metrics")).text)
        assert sample(found, "taquba_queue_depth", queue="d", status="pending") == 1


async def test_a_slow_depth_read_is_bounded(
    queue: taquba.Queue, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    server = taquba_server.Server(queue, port=0)
    url = await nursery.start(server.serve)
    await queue.enqueue("s", b"")
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        with inject_faults() as faults, caplog.at_level("WARNING", logger="taquba_server"):
            faults.on_read(Fault.slow(60.0), times=None)
            response = await http.get("/metrics")  # waits DEPTH_REFRESH_BOUND, not 60 s
            faults.clear()
    assert response.status_code == 200
    assert sample(samples(response.text), "taquba_jobs_enqueued_total", queue="s") == 1
    assert "the queue depth read took over" in caplog.text
    server.shutdown()
