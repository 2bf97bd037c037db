"""Property-based fuzzing of every endpoint from the served OpenAPI document (schemathesis).

A live server runs on loopback in a thread of its own (schemathesis calls it with
``requests``). For every operation, positive and negative cases: no 5xx, every response
conforms to the documented status codes, media types and schemas, and invalid data is refused.
"""

from __future__ import annotations

import base64
import queue as threadqueue
import threading
from collections.abc import Iterator
from typing import Any

import hypothesis
import ormsgpack
import pytest
import schemathesis
import trio
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

import taquba_server
from taquba.testing import open_test_queue

MAX_EXAMPLES = 20
SECRET = "fuzz-secret"

OPERATIONS = [
    "enqueue", "enqueue_batch", "get_job", "cancel_job", "wait_job", "list_queues",
    "queue_stats", "config", "claim", "wait_queue", "renew", "ack", "nack", "dead_letter",
    "settle", "kv_get", "kv_put", "kv_delete", "kv_cas", "kv_scan", "blob_get", "blob_put",
    "blob_delete", "blob_list", "list_jobs", "dead_jobs", "requeue", "purge", "quarantine",
    "health", "get_job_history", "wake_job",
]  # fmt: skip
"""Every operation but ``openapi`` (the document itself: schemathesis leaves it out)."""


def _as_json_form(value: object) -> object:
    """A decoded MessagePack body in its JSON form (bin as base64), as the document describes."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _as_json_form(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_json_form(v) for v in value]
    return value


def _fit_ints(value: object) -> object:
    """MessagePack has no integers past 64 bits: send those (fuzzed) as floats."""
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return float(value)
    if isinstance(value, dict):
        return {k: _fit_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fit_ints(v) for v in value]
    return value


@schemathesis.serializer("application/msgpack")
def _msgpack_body(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    return ormsgpack.packb(_fit_ints(value))


@schemathesis.deserializer("application/msgpack")
def _msgpack_response(ctx: schemathesis.DeserializationContext, response: Any) -> Any:
    return _as_json_form(ormsgpack.unpackb(response.content))


@pytest.fixture(scope="module")
def live_url() -> Iterator[str]:
    """A server over a memory store, served from a trio loop in another thread."""
    handoff: threadqueue.Queue[tuple[str, trio.lowlevel.TrioToken, taquba_server.Server]] = (
        threadqueue.Queue()
    )

    async def run() -> None:
        # Short waits, so fuzzed long polls stay cheap: the cap is what matters here.
        async with open_test_queue() as queue:
            await queue.enqueue("q", b"job", job_id="known-job")
            token = taquba_server.Token(SECRET, frozenset({"admin"}))
            server = taquba_server.Server(queue, port=0, shutdown_grace=5, tokens=[token])
            async with trio.open_nursery() as nursery:
                url = await nursery.start(server.serve)
                handoff.put((url, trio.lowlevel.current_trio_token(), server))

    thread = threading.Thread(target=trio.run, args=(run,), daemon=True)
    thread.start()
    url, token, server = handoff.get(timeout=30)
    yield url
    trio.from_thread.run_sync(server.shutdown, trio_token=token)
    thread.join(30)
    assert not thread.is_alive()


@pytest.fixture(scope="module")
def schema(live_url: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{live_url}/v1/openapi.json")


def _operation(schema: schemathesis.BaseSchema, operation_id: str) -> schemathesis.APIOperation:
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.definition.raw.get("operationId") == operation_id:
            return operation
    raise AssertionError(f"no operation {operation_id}")


def test_the_document_lists_every_operation(schema: schemathesis.BaseSchema) -> None:
    found = [result.ok().definition.raw["operationId"] for result in schema.get_all_operations()]
    assert sorted(found) == sorted(OPERATIONS)


def _fuzz(schema: schemathesis.BaseSchema, live_url: str, operation_id: str, mode: Any) -> None:
    operation = _operation(schema, operation_id)
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    if mode == schemathesis.GenerationMode.NEGATIVE:
        checks.append(negative_data_rejection)

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        # Long polls capped: a fuzzed wait up to 60 s would make the budget minutes.
        if isinstance(case.body, dict):
            for name in ("wait", "timeout"):
                value = case.body.get(name)
                if isinstance(value, int | float) and not isinstance(value, bool) and value > 0.05:
                    case.body[name] = 0.05
        if isinstance(case.query, dict) and "timeout" in case.query:
            case.query["timeout"] = 0.05
        # The generated bearer secret is random: a case whose headers are meant to be valid
        # gets the real one; one whose headers are the invalid part keeps its own (401).
        components = case.meta.components if case.meta is not None else {}
        headers_invalid = any(
            str(getattr(location, "value", location)) == "header" and not info.mode.is_positive
            for location, info in components.items()
        )
        if not headers_invalid and case.headers is not None and "Authorization" in case.headers:
            case.headers["Authorization"] = f"Bearer {SECRET}"
        response = case.call(base_url=live_url, timeout=30)
        case.validate_response(response, checks=checks)

    run()


@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_fuzz_valid_requests(
    schema: schemathesis.BaseSchema, live_url: str, operation_id: str
) -> None:
    _fuzz(schema, live_url, operation_id, schemathesis.GenerationMode.POSITIVE)


@pytest.mark.slow  # about 30 s for the whole set
@pytest.mark.parametrize("operation_id", [o for o in OPERATIONS if o != "health"])
def test_fuzz_invalid_requests(
    schema: schemathesis.BaseSchema, live_url: str, operation_id: str
) -> None:
    _fuzz(schema, live_url, operation_id, schemathesis.GenerationMode.NEGATIVE)
