"""The example receiver and sender work together (and the README example runs)."""

from __future__ import annotations

import importlib.util
import pathlib
import re
import threading
from types import ModuleType

import pytest
import trio

import taquba
import taquba_webhooks as tw
from taquba.testing import memory_store

ROOT = pathlib.Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"


def _load(name: str) -> ModuleType:
    path = EXAMPLES / f"{name}.py"
    if not path.exists():
        pytest.skip("the examples are not part of this checkout")
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_sender_and_receiver_examples() -> None:
    receiver = _load("webhooks_receiver")
    sender = _load("webhooks_sender")
    secret = tw.generate_secret()
    server, inbox = receiver.make_server(0, [secret], quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
        stats = await sender.run(url, secret, store=memory_store(), count=3, quiet=True)
    finally:
        await trio.to_thread.run_sync(server.shutdown)
        server.server_close()
    assert len(inbox.seen) == 3
    [endpoint] = stats
    assert (endpoint.delivered, endpoint.retried, endpoint.dead) == (3, 1, 0)


async def test_receiver_rejects_a_bad_signature() -> None:
    receiver = _load("webhooks_receiver")
    sender = _load("webhooks_sender")
    server, inbox = receiver.make_server(0, [tw.generate_secret()], quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
        stats = await sender.run(
            url, tw.generate_secret(), store=memory_store(), count=1, quiet=True
        )
    finally:
        await trio.to_thread.run_sync(server.shutdown)
        server.server_close()
    assert inbox.seen == {}
    assert stats[0].dead == 1  # 401 is permanent


def test_readme_and_guide_snippets_compile() -> None:
    for path in (
        ROOT / "packages/taquba-webhooks/README.md",
        ROOT / "docs/guides/taquba-webhooks.md",
    ):
        if not path.exists():
            continue
        for block in re.findall(r"```python\n(.*?)```", path.read_text(), re.S):
            compile(block, str(path), "exec", flags=0x2000)  # PyCF_ALLOW_TOP_LEVEL_AWAIT


async def test_readme_example_runs(nursery: trio.Nursery) -> None:
    from webhooks_support import start_receiver, wait_until

    receiver = await start_receiver(nursery)
    readme = (ROOT / "packages/taquba-webhooks/README.md").read_text()
    block = re.findall(r"```python\n(.*?)```", readme, re.S)[0]
    source = (
        block.replace('STORE = "./webhooks-data"', "")
        .replace("https://hooks.example.com/in", receiver.url("/in"))
        .replace(
            "WebhookWorker(queue,",
            'WebhookWorker(queue, policy=taquba_webhooks.DestinationPolicy(allow=["127.0.0.1"]),',
        )
    )
    namespace: dict[str, object] = {"STORE": memory_store(), "__name__": "readme"}
    exec(compile(source, "README.md", "exec"), namespace)
    with trio.move_on_after(10) as scope:
        async with trio.open_nursery() as inner:
            inner.start_soon(namespace["main"])  # type: ignore[arg-type]
            await wait_until(lambda: bool(receiver.received("/in")))
            inner.cancel_scope.cancel()
    assert not scope.cancelled_caught
    [got] = receiver.received("/in")
    assert tw.verify_webhook(got.body, got.headers, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert namespace["taquba"] is taquba
