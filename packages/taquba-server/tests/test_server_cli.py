"""The ``taquba-server`` command in real child processes: start, signals, crash and restart."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest
import trio

import taquba
from taquba.testing import Child, open_child
from taquba_server._cli import main

PREFIX = "taquba-server listening on "


async def listening(child: Child) -> str:
    with trio.fail_after(30):
        line = await child.expect(lambda line: line.startswith(PREFIX))
    return line.removeprefix(PREFIX)


def store_url(tmp_path: Path) -> str:
    return (tmp_path / "store").as_uri()


async def test_sigint_stops_gracefully_and_closes_the_store(tmp_path: Path) -> None:
    store = store_url(tmp_path)
    async with open_child("-m", "taquba_server", "--store", store, "--port", "0") as child:
        url = await listening(child)
        assert url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=url) as http:
            response = await http.post("/v1/jobs", json={"queue_name": "q", "payload": "eA=="})
            assert response.status_code == 200
            job_id = response.json()["id"]
            assert (await http.get("/v1/health")).json()["owner"]["url"] == url
        child.process.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            await child.expect_exit(0)
    assert "Traceback" not in child.stderr()
    async with taquba.open_reader(store) as reader:
        assert await reader.owner() is None  # a clean close removes the owner record
        job = await reader.get_job(job_id)
        assert job is not None
        assert job.status == taquba.JobStatus.PENDING


async def test_sigterm_ends_a_long_poll_and_stops(tmp_path: Path, nursery: trio.Nursery) -> None:
    async with open_child(
        "-m", "taquba_server", "--store", store_url(tmp_path), "--port", "0"
    ) as child:
        url = await listening(child)
        answers: list[httpx.Response] = []
        done = trio.Event()
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:

            async def poll() -> None:
                answers.append(await http.post("/v1/queues/q/claim", json={"wait": 60}))
                done.set()

            nursery.start_soon(poll)
            # The poll is in flight once the server has answered a later request.
            assert (await http.get("/v1/health")).status_code == 200
            child.process.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                await done.wait()
                await child.expect_exit(0)
        # The poll ends with its empty answer; if it reached the server only after the
        # shutdown began (the health answer does not prove it arrived), it gets the 503.
        # The in-process test of graceful shutdown pins the first case down.
        answer = answers[0].json()
        assert answer == {"claims": []} or answer["error"]["code"] == "unavailable", answer


async def test_a_second_sigint_stops_at_once(tmp_path: Path) -> None:
    argv = ["-m", "taquba_server", "--store", store_url(tmp_path), "--port", "0"]
    async with open_child(*argv, "--shutdown-grace", "120") as child:
        url = await listening(child)
        host, port = url.removeprefix("http://").rsplit(":", 1)
        # A request whose body never comes keeps the graceful shutdown waiting.
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(
            b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/v1/health")).status_code == 200
        child.process.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            while "shutting down" not in child.stderr():  # noqa: ASYNC110 - a file, not an event
                await trio.sleep(0.05)
        assert child.returncode is None
        child.process.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            await child.expect_exit(130)
        await stream.aclose()


async def test_sigkill_mid_claim_then_restart(tmp_path: Path) -> None:
    store = store_url(tmp_path)
    argv = ["-m", "taquba_server", "--store", store, "--port", "0"]
    async with open_child(*argv) as child:
        url = await listening(child)
        async with httpx.AsyncClient(base_url=url) as http:
            response = await http.post("/v1/jobs", json={"queue_name": "q", "payload": "eA=="})
            job_id = response.json()["id"]
            claim = (await http.post("/v1/queues/q/claim", json={"lease": 2})).json()["claims"][0]
            assert claim["job"]["id"] == job_id
        await child.kill()
    async with open_child(*argv) as child:
        url = await listening(child)
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            response = await http.post(f"/v1/claims/{job_id}/ack", json={"token": claim["token"]})
            assert response.status_code == 410
            assert response.json()["error"]["code"] == "claim_lost"
            response = await http.post("/v1/queues/q/claim", json={"wait": 30})
            (again,) = response.json()["claims"]
            assert again["job"]["id"] == job_id
            assert again["token"] != claim["token"]
            response = await http.post(f"/v1/claims/{job_id}/ack", json={"token": claim["token"]})
            assert response.status_code == 410
            response = await http.post(f"/v1/claims/{job_id}/ack", json={"token": again["token"]})
            assert response.status_code == 200
        child.process.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            await child.expect_exit(0)


async def test_the_setup_hook_runs_in_the_owner(tmp_path: Path) -> None:
    (tmp_path / "owner_setup.py").write_text(
        "import trio\n\n"
        "async def setup(queue, nursery):\n"
        "    await queue.kv_put(b'setup', b'ran')\n"
        "    nursery.start_soon(trio.sleep_forever)\n"
    )
    argv = ["-m", "taquba_server", "--store", "memory://", "--port", "0"]
    env = {"PYTHONPATH": str(tmp_path), "TAQUBA_SERVER_TOKENS": "sekrit:admin"}
    extra = ["--setup", "owner_setup:setup", "--advertise-url", "https://queue.example"]
    async with open_child(*argv, *extra, env=env) as child:
        url = await listening(child)
        async with httpx.AsyncClient(base_url=url) as http:
            health = (await http.get("/v1/health")).json()
            assert health["owner"]["url"] == "https://queue.example"
            response = await http.post("/v1/kv/get", json={"key": "c2V0dXA="})
            assert response.status_code == 401
            headers = {"Authorization": "Bearer sekrit"}
            response = await http.post("/v1/kv/get", json={"key": "c2V0dXA="}, headers=headers)
            assert response.json() == {"value": "cmFu"}
        child.process.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            await child.expect_exit(0)


async def test_sigint_before_listening_stops_at_once(tmp_path: Path) -> None:
    (tmp_path / "stuck_setup.py").write_text(
        "import trio\n\n"
        "async def setup(queue, nursery):\n"
        "    print('setup running', flush=True)\n"
        "    await trio.sleep_forever()\n"
    )
    argv = ["-m", "taquba_server", "--store", store_url(tmp_path), "--port", "0"]
    env = {"PYTHONPATH": str(tmp_path)}
    async with open_child(*argv, "--setup", "stuck_setup:setup", env=env) as child:
        with trio.fail_after(30):
            await child.expect("setup running")
        child.process.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            await child.expect_exit(130)


@pytest.mark.parametrize(
    "argv",
    [
        ["--store", "memory://", "--host", "0.0.0.0"],
        ["--store", "memory://", "--setup", "nowhere"],
        ["--store", "memory://", "--setup", "no_such_module_x:setup"],
        ["--store", "memory://", "--tokens-file", "/nonexistent/tokens.toml"],
        ["--store", "nosuch://x"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "taquba-server: error:" in capsys.readouterr().err


def test_a_taken_port_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert main(["--store", "memory://", "--port", str(port)]) == 1
    assert "taquba-server: error:" in capsys.readouterr().err


async def test_lease_duration_and_reaper_interval(tmp_path: Path) -> None:
    argv = ["-m", "taquba_server", "--store", store_url(tmp_path), "--port", "0"]
    async with open_child(*argv, "--lease-duration", "1", "--reaper-interval", "0.1") as child:
        url = await listening(child)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            config = (await http.get("/v1/config")).json()
            assert config["default"]["lease_duration"] == 1
            response = await http.post("/v1/jobs", json={"queue_name": "q", "payload": "eA=="})
            job_id = response.json()["id"]
            (claim,) = (await http.post("/v1/queues/q/claim", json={})).json()["claims"]
            assert claim["job"]["id"] == job_id
            # never renewed: the reaper hands the job out again after its 1 s lease
            with trio.fail_after(10):
                response = await http.post("/v1/queues/q/claim", json={"wait": 8})
            (again,) = response.json()["claims"]
            assert (again["job"]["id"], again["job"]["attempts"]) == (job_id, 2)
        child.process.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            await child.expect_exit(0)


@pytest.mark.parametrize("option", ["--lease-duration", "--reaper-interval"])
def test_bad_intervals_exit_2(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--store", "memory://", "--port", "0", option, "-1"]) == 2
    assert "taquba-server: error:" in capsys.readouterr().err
