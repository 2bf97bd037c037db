"""`taquba_workflow.webhook`: a run's end delivered once as a signed webhook (the extra)."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest

pytest.importorskip("taquba_webhooks", reason="the webhooks extra is not installed")

import hypercorn.config
import hypercorn.trio
import trio

import taquba
import taquba_webhooks as tw
from taquba import JobStatus, MockClock, Store
from taquba_workflow import (
    Cancel,
    Fail,
    ReservedHeader,
    RunOutcome,
    RunSpec,
    Runtime,
    Step,
    StepOutcome,
    Succeed,
    TerminalEffects,
    TerminalStatus,
)
from taquba_workflow.webhook import (
    DEFAULT_URL_HEADER,
    EVENT_TYPE_PREFIX,
    WebhookOnTermination,
    webhook_id,
)
from wf_support import jobs_in, opened, run_all

URL = "https://hooks.example.com/runs?token=abc"


async def decide(step: Step[str]) -> StepOutcome[str, dict[str, int]]:
    if step.payload == "ok":
        return Succeed({"n": 1})
    if step.payload == "bad":
        return Fail("boom")
    return Cancel("not wanted")


async def deliveries(queue: taquba.Queue, name: str = tw.DEFAULT_QUEUE_NAME) -> list[Any]:
    """The pending delivery jobs of ``name``, decoded."""
    return [
        tw.decode_request(j.payload, job_id=j.id)
        for j in await jobs_in(queue, JobStatus.PENDING, name)
    ]


@pytest.mark.parametrize(
    ("payload", "status", "result", "error"),
    [
        ("ok", TerminalStatus.SUCCEEDED, {"n": 1}, None),
        ("bad", TerminalStatus.FAILED, None, "boom"),
        ("stop", TerminalStatus.CANCELLED, None, "not wanted"),
    ],
)
async def test_each_end_enqueues_one_delivery_of_its_outcome(
    store: Store, payload: str, status: TerminalStatus, result: object, error: str | None
) -> None:
    hook = WebhookOnTermination[dict[str, int]](signing_key="runs")
    async with opened(store) as queue:
        runtime = Runtime(queue, decide, hook, payload_type=str, result_type=dict[str, int])
        headers = {DEFAULT_URL_HEADER: URL, "tenant": "acme"}
        await runtime.submit(RunSpec(input=payload, run_id="run-1", headers=headers))
        await run_all(runtime)
        [request] = await deliveries(queue)
        assert request.url == URL
        assert request.method == "POST"
        assert request.signing_key == "runs"
        assert request.headers == {"content-type": "application/json"}
        event = json.loads(request.body)
        assert event["type"] == EVENT_TYPE_PREFIX + status.value
        data = event["data"]
        assert data["run_id"] == "run-1"
        assert data["status"] == status.value
        assert data["result"] == result
        assert data["result_encoding"] == "json"
        assert data["error"] == error
        assert data["headers"] == {"tenant": "acme"}  # the URL (and its token) is not echoed
        assert data["final_step"] == 0
        assert event["timestamp"].endswith("+00:00")
        assert request.id is not None and request.id.startswith("wfrun_")
        hook_stats = await queue.stats(runtime.hook_queue_name)
        assert (hook_stats.done, hook_stats.dead) == (1, 0)


async def test_the_webhook_id_is_stable_per_end_and_new_for_the_next(clock: MockClock) -> None:
    def outcome(finished_at_ms: int) -> RunOutcome[bytes]:
        return RunOutcome(
            run_id="r/1 é",
            status=TerminalStatus.FAILED,
            result=None,
            error="x",
            headers={},
            final_step=2,
            finished_at_ms=finished_at_ms,
        )

    assert webhook_id(outcome(5)) == webhook_id(outcome(5))
    assert webhook_id(outcome(5)) != webhook_id(outcome(6))
    tw.WebhookRequest("https://example.com", id=webhook_id(outcome(5)))  # a valid webhook-id


class FailingOnce:
    """Wraps the webhook hook: the first call stages the delivery, then raises."""

    def __init__(self, inner: WebhookOnTermination[Any]) -> None:
        self.inner = inner
        self.calls = 0

    async def on_termination(self, outcome: RunOutcome[Any]) -> TerminalEffects | None:
        self.calls += 1
        effects = await self.inner.on_termination(outcome)
        if self.calls == 1:
            raise RuntimeError("the hook failed after staging the delivery")
        return effects


async def test_a_redelivered_notification_enqueues_the_delivery_once(store: Store) -> None:
    hook = FailingOnce(WebhookOnTermination(signing_key=None))
    async with opened(store) as queue:
        runtime = Runtime(queue, decide, hook, payload_type=str, result_type=dict[str, int])
        await runtime.submit(RunSpec(input="ok", run_id="r", headers={"webhook-url": URL}))
        await run_all(runtime)
        await run_all(runtime)
        assert hook.calls == 2
        assert len(await deliveries(queue)) == 1


async def test_a_run_without_the_header_gets_no_delivery(
    memory_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    hook = WebhookOnTermination[dict[str, int]](signing_key="runs", url_header="x-callback")
    caplog.set_level(logging.DEBUG, "taquba_workflow")
    async with opened(memory_store) as queue:
        runtime = Runtime(queue, decide, hook, payload_type=str, result_type=dict[str, int])
        # the default header name is not the configured one
        await runtime.submit(RunSpec(input="ok", run_id="r", headers={"webhook-url": URL}))
        await run_all(runtime)
        assert await deliveries(queue) == []
        stats = await queue.stats(runtime.hook_queue_name)
        assert (stats.done, stats.dead) == (1, 0)
    assert "no 'x-callback' header" in caplog.text


@pytest.mark.parametrize("url", ["not a url", "ftp://example.com/x", "/relative", ""])
async def test_an_invalid_url_is_skipped_with_a_warning(
    memory_store: Store, caplog: pytest.LogCaptureFixture, url: str
) -> None:
    hook = WebhookOnTermination[dict[str, int]](signing_key="runs")
    async with opened(memory_store) as queue:
        runtime = Runtime(queue, decide, hook, payload_type=str, result_type=dict[str, int])
        await runtime.submit(RunSpec(input="bad", run_id="r", headers={"webhook-url": url}))
        await run_all(runtime)
        assert await deliveries(queue) == []
        stats = await queue.stats(runtime.hook_queue_name)
        assert (stats.done, stats.dead) == (1, 0)  # acknowledged: a retry could not fix it
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "run r: no webhook sent" in record.getMessage()


@dataclass(frozen=True)
class Item:
    sku: str
    qty: int


async def items(step: Step[str]) -> StepOutcome[str, dict[str, Item]]:
    return Succeed({"a": Item("sku-1", 2)})


async def test_a_result_needing_its_type_dead_letters_without_it_and_is_sent_with_it(
    memory_store: Store,
) -> None:
    async with opened(memory_store) as queue:
        untyped = WebhookOnTermination[dict[str, Item]](signing_key=None)
        runtime = Runtime(queue, items, untyped, payload_type=str, result_type=dict[str, Item])
        await runtime.submit(RunSpec(input="", run_id="r1", headers={"webhook-url": URL}))
        await run_all(runtime)
        assert await deliveries(queue) == []
        stats = await queue.stats(runtime.hook_queue_name)
        assert stats.dead == 1  # PermanentStepError: fix the hook and requeue the notification

        typed = WebhookOnTermination(signing_key=None, result_type=dict[str, Item])
        runtime = Runtime(queue, items, typed, payload_type=str, result_type=dict[str, Item])
        await runtime.submit(RunSpec(input="", run_id="r2", headers={"webhook-url": URL}))
        await run_all(runtime)
        [request] = await deliveries(queue)
        assert json.loads(request.body)["data"]["result"] == {"a": {"sku": "sku-1", "qty": 2}}


async def test_a_bytes_result_is_sent_as_base64(memory_store: Store) -> None:
    async def raw(step: Step[bytes]) -> StepOutcome[bytes, bytes]:
        return Succeed(b"\x00\xffraw")

    async with opened(memory_store) as queue:
        runtime = Runtime(queue, raw, WebhookOnTermination(signing_key=None, queue_name="out"))
        await runtime.submit(RunSpec(input=b"", run_id="r", headers={"webhook-url": URL}))
        await run_all(runtime)
        [request] = await deliveries(queue, "out")
        data = json.loads(request.body)["data"]
        assert data["result_encoding"] == "base64"
        assert base64.b64decode(data["result"]) == b"\x00\xffraw"


async def test_stage_adds_the_delivery_to_a_hook_of_ones_own() -> None:
    hook = WebhookOnTermination[str](signing_key="runs", include_headers=False, max_attempts=7)
    outcome = RunOutcome(
        run_id="r",
        status=TerminalStatus.SUCCEEDED,
        result="done",
        error=None,
        headers={"webhook-url": URL, "tenant": "acme"},
        final_step=1,
        finished_at_ms=1_000,
    )
    effects = TerminalEffects()
    effects.kv_put(b"app/r", b"done")
    request = hook.stage(outcome, effects)
    assert request is not None
    [enqueue] = effects.enqueues
    assert enqueue.queue_name == tw.DEFAULT_QUEUE_NAME
    assert enqueue.max_attempts == 7
    assert enqueue.dedup_key == webhook_id(outcome)
    decoded = tw.decode_request(enqueue.payload)
    assert decoded == request
    assert json.loads(decoded.body) == {
        "type": "workflow.run.succeeded",
        "timestamp": "1970-01-01T00:00:01+00:00",
        "data": {
            "run_id": "r",
            "status": "succeeded",
            "result": "done",
            "result_encoding": "json",
            "error": None,
            "headers": {},
            "final_step": 1,
            "finished_at_ms": 1_000,
        },
    }
    assert hook.stage(dataclasses.replace(outcome, headers={}), effects) is None
    assert len(effects.enqueues) == 1


def test_the_configuration_is_checked() -> None:
    with pytest.raises(ReservedHeader):
        WebhookOnTermination(signing_key=None, url_header="workflow.webhook_url")
    with pytest.raises(taquba.UsageError):
        WebhookOnTermination(signing_key=None, url_header="")
    with pytest.raises(taquba.UsageError):
        WebhookOnTermination(signing_key="", queue_name="w")
    with pytest.raises(taquba.UsageError):
        WebhookOnTermination(signing_key=None, queue_name="")
    hook = WebhookOnTermination(signing_key=None, url_header="cb", queue_name="w")
    assert (hook.url_header, hook.queue_name) == ("cb", "w")
    assert "cb" in repr(hook)


# ------------------------------------------------------------------ end to end, real worker


class Receiver:
    """An ASGI app on loopback that records every request and answers 204."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.arrived = trio.Event()
        self.base_url = ""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self.requests.append((scope["path"], headers, body))
        self.arrived.set()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def start_receiver(nursery: trio.Nursery) -> Receiver:
    app = Receiver()
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.2
    binds = await nursery.start(partial(hypercorn.trio.serve, app, config))  # type: ignore[arg-type]
    app.base_url = binds[0]
    return app


async def test_a_real_worker_delivers_the_signed_outcome(nursery: trio.Nursery) -> None:
    receiver = await start_receiver(nursery)
    secret = tw.generate_secret()
    async with opened() as queue:
        runtime = Runtime(
            queue,
            decide,
            WebhookOnTermination(signing_key="runs"),
            payload_type=str,
            result_type=dict[str, int],
            poll_interval=0.05,
        )
        worker = tw.WebhookWorker(
            queue,
            secrets={"runs": [secret]},
            policy=tw.DestinationPolicy(allow=["127.0.0.0/8"]),  # the receiver is on loopback
            poll_interval=0.05,
        )
        with trio.fail_after(30):
            async with trio.open_nursery() as inner:
                await inner.start(runtime.serve)
                await inner.start(worker.serve)
                url = receiver.base_url + "/runs/in"
                await runtime.submit(RunSpec(input="ok", run_id="r", headers={"webhook-url": url}))
                await receiver.arrived.wait()
                runtime.shutdown()
                worker.shutdown()  # graceful: the delivery in flight settles first
        stats = await queue.stats(tw.DEFAULT_QUEUE_NAME)
        assert (stats.done, stats.pending, stats.dead) == (1, 0, 0)
    [(path, headers, body)] = receiver.requests
    assert path == "/runs/in"
    delivered_id = tw.verify_webhook(body, headers, secret)
    assert delivered_id.startswith("wfrun_")
    assert headers["content-type"] == "application/json"
    event = json.loads(body)
    assert event["type"] == "workflow.run.succeeded"
    assert event["data"]["run_id"] == "r"
    assert event["data"]["result"] == {"n": 1}
    with pytest.raises(tw.VerificationError):
        tw.verify_webhook(body, headers, tw.generate_secret())


def test_pyright_sees_the_public_names() -> None:
    import taquba_workflow.webhook as module
    from taquba.testing import check_type_completeness

    check_type_completeness(module)
