"""The examples run against a live server: FastAPI (asyncio) and a synchronous script."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import httpx
import trio

from client_support import ServerHandle

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_fastapi_example(server: ServerHandle) -> None:
    os.environ["TAQUBA_SERVER"] = server.url
    try:
        example = _load("client_fastapi")
    finally:
        del os.environ["TAQUBA_SERVER"]

    async def main() -> dict[str, str]:
        worker = asyncio.create_task(example.run_worker())
        try:
            async with example.app.router.lifespan_context(example.app):
                transport = httpx.ASGITransport(app=example.app)
                async with httpx.AsyncClient(transport=transport, base_url="http://app") as web:
                    response = await web.post("/shout/hello", timeout=30)
                    assert response.status_code == 200, response.text
                    return response.json()
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    answer = await trio.to_thread.run_sync(asyncio.run, main())
    assert answer["result"] == "HELLO!"


async def test_sync_example_in_a_subprocess(server: ServerHandle) -> None:
    result = await trio.run_process(
        [sys.executable, str(EXAMPLES / "client_sync.py")],
        env={**os.environ, "TAQUBA_SERVER": server.url},
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    answer = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert answer["status"] == "done"
    assert len(answer["digest"]) == 64


async def test_readme_example(server: ServerHandle) -> None:
    readme = (EXAMPLES.parent / "packages/taquba-client/README.md").read_text(encoding="utf-8")
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace("http://127.0.0.1:8700", server.url)
    await trio.to_thread.run_sync(exec, code, {})
