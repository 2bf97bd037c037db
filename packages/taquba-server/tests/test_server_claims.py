"""Claims over HTTP: fencing by the core, long polls, disconnects, graceful shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import trio
import trio.testing

import taquba
import taquba_server
from taquba.testing import open_test_queue


@pytest.fixture
def clock() -> taquba.MockClock:
    return taquba.MockClock()


@pytest.fixture
async def mock_queue(clock: taquba.MockClock) -> AsyncIterator[taquba.Queue]:
    async with open_test_queue(clock=clock) as queue:
        yield queue


async def start(
    queue: taquba.Queue, nursery: trio.Nursery, **options: object
) -> tuple[taquba_server.Server, str]:
    server = taquba_server.Server(queue, port=0, **options)  # type: ignore[arg-type]
    url = await nursery.start(server.serve)
    return server, url


async def test_a_late_ack_after_the_reaper_is_410(
    mock_queue: taquba.Queue, clock: taquba.MockClock, nursery: trio.Nursery
) -> None:
    server, url = await start(mock_queue, nursery)
    job = await mock_queue.enqueue("q", b"p")
    async with httpx.AsyncClient(base_url=url) as http:
        claim = (await http.post("/v1/queues/q/claim", json={"lease": 1})).json()["claims"][0]
        assert server._app.held_claims == 1
        clock.advance(2)
        assert await mock_queue.reap_now() == 1
        renew = await http.post(
            "/v1/claims/renew",
            json={"claims": [{"job_id": job.id, "token": claim["token"], "extension": 10}]},
        )
        assert renew.json()["results"][0]["lost"] is True
        response = await http.post(f"/v1/claims/{job.id}/ack", json={"token": claim["token"]})
        assert response.status_code == 410
        assert response.json()["error"]["code"] == "claim_lost"
        assert server._app.held_claims == 0
        # The job is back, and a new claim gets a new token; the old one stays refused.
        again = (await http.post("/v1/queues/q/claim", json={})).json()["claims"][0]
        assert again["job"]["attempts"] == 2
        assert again["token"] != claim["token"]
        response = await http.post(
            f"/v1/claims/{job.id}/nack", json={"token": claim["token"], "error": "late"}
        )
        assert response.status_code == 410
        response = await http.post(f"/v1/claims/{job.id}/ack", json={"token": again["token"]})
        assert response.status_code == 200
    assert await mock_queue.get_job(job.id) is None
    server.shutdown()


async def test_claims_reaped_unseen_are_forgotten(
    mock_queue: taquba.Queue, clock: taquba.MockClock, nursery: trio.Nursery
) -> None:
    server, url = await start(mock_queue, nursery)
    await mock_queue.enqueue("q", b"p")
    async with httpx.AsyncClient(base_url=url) as http:
        await http.post("/v1/queues/q/claim", json={"lease": 1})
        assert server._app.held_claims == 1
        clock.advance(2)
        await mock_queue.reap_now()
        server._app._last_sweep = 0.0  # the next claim sweeps at once
        await http.post("/v1/queues/other/claim", json={})
        assert server._app.held_claims == 0
    server.shutdown()


async def test_a_long_poll_returns_as_soon_as_a_job_arrives(
    queue: taquba.Queue, nursery: trio.Nursery
) -> None:
    _, url = await start(queue, nursery)
    answers: list[httpx.Response] = []
    done = trio.Event()
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:

        async def poll() -> None:
            answers.append(await http.post("/v1/queues/q/claim", json={"wait": 30}))
            done.set()

        nursery.start_soon(poll)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()
        started = trio.current_time()
        job = await queue.enqueue("q", b"now")
        with trio.fail_after(10):
            await done.wait()
        assert trio.current_time() - started < 5
        claims = answers[0].json()["claims"]
        assert [c["job"]["id"] for c in claims] == [job.id]


async def test_a_long_poll_ends_empty_after_its_wait(
    queue: taquba.Queue, nursery: trio.Nursery
) -> None:
    _, url = await start(queue, nursery)
    async with httpx.AsyncClient(base_url=url) as http:
        started = trio.current_time()
        response = await http.post("/v1/queues/q/claim", json={"wait": 0.2})
        assert response.json() == {"claims": []}
        assert trio.current_time() - started >= 0.2
        response = await http.post("/v1/queues/q/wait", json={"timeout": 0.1})
        assert response.json() == {"ready": False}
        response = await http.post("/v1/queues/q/claim", json={"wait": 60.5})
        assert response.status_code == 400


async def test_queue_wait_wakes_on_an_enqueue(queue: taquba.Queue, nursery: trio.Nursery) -> None:
    _, url = await start(queue, nursery)
    answers: list[httpx.Response] = []
    done = trio.Event()
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:

        async def wait() -> None:
            answers.append(await http.post("/v1/queues/q/wait", json={"timeout": 30}))
            done.set()

        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        await queue.enqueue("q", b"x")
        with trio.fail_after(10):
            await done.wait()
        assert answers[0].json() == {"ready": True}
        assert (await queue.stats("q")).pending == 1  # a hint only: nothing claimed


async def test_a_client_that_disconnects_from_a_long_poll_claims_nothing(
    queue: taquba.Queue, nursery: trio.Nursery
) -> None:
    server, url = await start(queue, nursery)
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        scopes: list[trio.CancelScope] = []

        async def poll() -> None:
            with trio.CancelScope() as scope:
                scopes.append(scope)
                await http.post("/v1/queues/q/claim", json={"wait": 30})

        nursery.start_soon(poll)
        await trio.testing.wait_all_tasks_blocked()
        assert len(server._app._polls) == 1
        scopes[0].cancel()  # the client goes away mid-poll
        with trio.fail_after(10):
            while server._app._polls:  # noqa: ASYNC110 - the server's own bookkeeping
                await trio.sleep(0.01)
        await queue.enqueue("q", b"x")
        await trio.testing.wait_all_tasks_blocked()
        assert (await queue.stats("q")).pending == 1
        assert server._app.held_claims == 0


async def test_graceful_shutdown_ends_an_in_flight_long_poll(
    queue: taquba.Queue, nursery: trio.Nursery
) -> None:
    server = taquba_server.Server(queue, port=0, shutdown_grace=10)
    stopped = trio.Event()

    async def serve(task_status: trio.TaskStatus[str]) -> None:
        await server.serve(task_status=task_status)
        stopped.set()

    url = await nursery.start(serve)
    answers: list[httpx.Response] = []
    done = trio.Event()
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:

        async def poll() -> None:
            answers.append(await http.post("/v1/queues/q/claim", json={"wait": 60}))
            done.set()

        nursery.start_soon(poll)
        await trio.testing.wait_all_tasks_blocked()
        started = trio.current_time()
        server.shutdown()
        server.shutdown()  # idempotent
        with trio.fail_after(10):
            await done.wait()
            await stopped.wait()
        assert trio.current_time() - started < 5
        assert answers[0].status_code == 200
        assert answers[0].json() == {"claims": []}
        with pytest.raises(httpx.TransportError):
            await http.get("/v1/health")
    assert queue.failure is None  # the server does not close the queue


async def test_shutdown_lets_a_request_in_flight_finish(
    queue: taquba.Queue, nursery: trio.Nursery
) -> None:
    server, url = await start(queue, nursery, shutdown_grace=10)
    job = await queue.enqueue("q", b"p")
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        claim = (await http.post("/v1/queues/q/claim", json={})).json()["claims"][0]
        app = server._app
        app.closing = True  # as shutdown() sets it: new requests are refused with 503
        response = await http.post(f"/v1/claims/{job.id}/ack", json={"token": claim["token"]})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "unavailable"
        assert (await http.get("/v1/health")).json()["status"] == "degraded"
    server.shutdown()


async def test_shutdown_before_serve_returns_at_once(queue: taquba.Queue) -> None:
    server = taquba_server.Server(queue, port=0)
    server.shutdown()
    with trio.fail_after(5):
        await server.serve()
    assert server.url is None


async def test_serve_twice_is_a_usage_error(queue: taquba.Queue, nursery: trio.Nursery) -> None:
    server, _ = await start(queue, nursery)
    with pytest.raises(taquba.UsageError):
        await server.serve()
    server.shutdown()


async def test_the_owner_record_carries_the_url(queue: taquba.Queue, nursery: trio.Nursery) -> None:
    server = taquba_server.Server(queue, port=0, advertise_url="https://queue.example")
    url = await nursery.start(server.serve)
    assert url.startswith("http://127.0.0.1:")
    assert server.url == url
    info = queue.owner_info()
    assert info.address == "https://queue.example"
    server.shutdown()


async def test_storage_unavailable_is_503(queue: taquba.Queue, nursery: trio.Nursery) -> None:
    _, url = await start(queue, nursery)
    from taquba.testing import Fault, inject_faults

    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        with inject_faults() as faults:
            faults.on_write(Fault.unavailable(), times=None)
            response = await http.post("/v1/jobs", json={"queue_name": "q", "payload": ""})
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "unavailable"


async def test_ipv6_loopback(queue: taquba.Queue, nursery: trio.Nursery) -> None:
    import socket

    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    server = taquba_server.Server(queue, host="::1", port=0)
    url = await nursery.start(server.serve)
    assert url.startswith("http://[::1]:")
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/v1/health")).status_code == 200
    server.shutdown()


async def test_a_taken_port_raises_before_started(
    queue: taquba.Queue, nursery: trio.Nursery
) -> None:
    server, url = await start(queue, nursery)
    port = int(url.rsplit(":", 1)[1])
    other = taquba_server.Server(queue, port=port)
    with pytest.raises(OSError, match="in use"):
        await nursery.start(other.serve)
    server.shutdown()


async def test_a_fenced_owner_stops_serving(nursery: trio.Nursery) -> None:
    store = taquba.Store.memory()
    async with open_test_queue(store) as queue:
        server = taquba_server.Server(queue, port=0)
        errors: list[BaseException] = []
        stopped = trio.Event()

        async def serve(task_status: trio.TaskStatus[str]) -> None:
            try:
                await server.serve(task_status=task_status)
            except taquba.TaqubaError as exc:
                errors.append(exc)
            stopped.set()

        url = await nursery.start(serve)
        async with open_test_queue(store):  # a second writer fences the first
            with trio.fail_after(10):
                await stopped.wait()
        assert isinstance(errors[0], taquba.Fenced)
        async with httpx.AsyncClient(base_url=url) as http:
            with pytest.raises(httpx.TransportError):
                await http.get("/v1/health")


@pytest.mark.parametrize("shutdown_first", [True, False], ids=["after-shutdown", "unasked"])
async def test_a_queue_closed_under_the_server(shutdown_first: bool) -> None:
    # The application's orderly stop (shutdown, then its queue's `async with` ends while the
    # server still drains) returns cleanly; a queue closed without a shutdown is an error.
    errors: list[BaseException] = []
    returned = trio.Event()
    async with trio.open_nursery() as nursery:
        async with open_test_queue() as queue:
            server = taquba_server.Server(queue, port=0)

            async def serve(task_status: trio.TaskStatus[str]) -> None:
                try:
                    await server.serve(task_status=task_status)
                except taquba.TaqubaError as exc:
                    errors.append(exc)
                returned.set()

            await nursery.start(serve)
            if shutdown_first:
                server.shutdown()
        with trio.fail_after(30):
            await returned.wait()
    if shutdown_first:
        assert errors == []
    else:
        assert len(errors) == 1
        assert isinstance(errors[0], taquba.QueueClosed)
