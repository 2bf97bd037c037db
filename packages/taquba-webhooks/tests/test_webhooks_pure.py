"""Pure parts: status classification, Retry-After, request validation and the payload format."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import email.utils
import enum
import json
import math
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

import taquba
import taquba_webhooks as tw
from taquba_webhooks._records import (
    decode_attempt,
    decode_stats,
    encode_attempt,
    encode_stats,
    merge_stats,
)
from taquba_webhooks._request import encode_request

C = tw.Classification


def test_classify_every_status() -> None:
    for status in range(100, 600):
        got = tw.classify_status(status)
        if 200 <= status < 300:
            assert got is C.DELIVERED, status
        elif status in (408, 425, 429) or status >= 500 or status < 200:
            assert got is C.RETRY, status
        else:
            assert got is C.PERMANENT, status
    assert tw.classify_status(999) is C.RETRY


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("0", 0.0),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("99999999999999999999999999", tw.MAX_RETRY_AFTER),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        (email.utils.formatdate(NOW + 90, usegmt=True), 90.0),
        (email.utils.formatdate(NOW - 90, usegmt=True), 0.0),
        (email.utils.formatdate(NOW + 10**6, usegmt=True), tw.MAX_RETRY_AFTER),
        (email.utils.formatdate(NOW + 30).replace("+0000", "-0000"), 30.0),
        ("Wed, 99 Foo 2015 07:28:00 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert tw.parse_retry_after(value, now=NOW) == expected


@given(st.text(max_size=40), st.floats(min_value=0, max_value=10**5))
def test_retry_after_is_none_or_within_the_cap(value: str, cap: float) -> None:
    got = tw.parse_retry_after(value, now=NOW, cap=cap)
    assert got is None or (math.isfinite(got) and 0 <= got <= cap)


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("https://Example.COM/a?b=c", "https://example.com"),
        ("https://example.com:443/x", "https://example.com"),
        ("http://example.com:80/x", "http://example.com"),
        ("http://example.com:8080/x", "http://example.com:8080"),
        ("http://[::1]:8080/x", "http://[::1]:8080"),
        ("https://bücher.example/", "https://xn--bcher-kva.example"),
    ],
)
def test_endpoint_of(url: str, endpoint: str) -> None:
    assert tw.endpoint_of(url) == endpoint


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "ftp://example.com/"}, "absolute http or https"),
        ({"url": "/relative"}, "absolute http or https"),
        ({"url": "http://"}, "invalid URL"),
        ({"method": "GET POST"}, "invalid HTTP method"),
        ({"method": ""}, "invalid HTTP method"),
        ({"headers": {"bad name": "x"}}, "invalid header name"),
        ({"headers": {"x-a": "line\r\nbreak"}}, "invalid value"),
        ({"headers": {"Webhook-Signature": "v1,x"}}, "set by the worker"),
        ({"headers": {"Host": "evil.example"}}, "set by the worker"),
        ({"headers": {"X-A": "1", "x-a": "2"}}, "given twice"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": math.inf}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"id": "has space"}, "invalid id"),
        ({"id": "a.b"}, "invalid id"),
        ({"id": "x" * 129}, "invalid id"),
        ({"endpoint": ""}, "endpoint"),
        ({"signing_key": ""}, "signing_key"),
        ({"body": "text"}, "body must be bytes"),
    ],
)
def test_request_validation(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"url": "https://example.com/hook", **kwargs}
    with pytest.raises(tw.InvalidDelivery, match=message):
        tw.WebhookRequest(**fields)  # type: ignore[arg-type]


header_names = st.from_regex(r"x-[a-z0-9]{1,10}", fullmatch=True)
requests = st.builds(
    tw.WebhookRequest,
    url=st.sampled_from(["https://example.com/hook", "http://127.0.0.1:8000/a?b=1"]),
    body=st.binary(max_size=200),
    method=st.sampled_from(["POST", "PUT", "PATCH", "DELETE"]),
    headers=st.dictionaries(header_names, st.text("abc xyz-", max_size=10), max_size=3),
    timeout=st.none() | st.floats(min_value=0.001, max_value=600),
    id=st.none() | st.from_regex(r"[A-Za-z0-9_-]{1,30}", fullmatch=True),
    endpoint=st.none() | st.text(min_size=1, max_size=20),
    signing_key=st.none() | st.text(min_size=1, max_size=10),
)


@given(requests)
def test_payload_round_trip(request: tw.WebhookRequest) -> None:
    enqueue = request.to_enqueue_request(queue_name="hooks", job_id="job-1")
    decoded = tw.decode_request(enqueue.payload)
    expected_id = request.id or "job-1"
    assert decoded == tw.WebhookRequest(
        request.url,
        request.body,
        method=request.method,
        headers=request.headers,
        timeout=request.timeout,
        id=expected_id,
        endpoint=request.endpoint,
        signing_key=request.signing_key,
    )
    assert enqueue.queue_name == "hooks"
    assert enqueue.job_id == "job-1"
    assert enqueue.headers == {"webhook.id": expected_id, "webhook.endpoint": request.endpoint_key}


def test_enqueue_request_options_and_queue_assigned_ids() -> None:
    request = tw.WebhookRequest("https://example.com/hook", b"x")
    first = request.to_enqueue_request(priority=5, delay=3.0, max_attempts=9, dedup_key="k")
    second = request.to_enqueue_request()
    assert isinstance(first, taquba.EnqueueRequest)
    assert (first.priority, first.delay, first.max_attempts, first.dedup_key) == (5, 3.0, 9, "k")
    assert first.queue_name == tw.DEFAULT_QUEUE_NAME
    # No id is fixed: the queue assigns its next monotonic id when it stages the job.
    assert first.job_id is None and second.job_id is None
    assert "webhook.id" not in first.headers
    assert tw.decode_request(first.payload).id is None
    assert tw.decode_request(first.payload, job_id="j").id == "j"
    with pytest.raises(tw.InvalidDelivery, match="cannot be a webhook-id"):
        request.to_enqueue_request(job_id="not.an.id")


async def test_enqueue_webhook_wants_a_request(queue: taquba.Queue) -> None:
    with pytest.raises(taquba.InvalidArgument, match=r"^request must be a WebhookRequest"):
        await tw.enqueue_webhook(queue, "https://example.com")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "payload",
    [
        b"not msgpack \xc1",
        b"\x92\x01\x02",  # a list
        encode_request(tw.WebhookRequest("https://example.com/"), "i").replace(
            b"\xa1v\x01", b"\xa1v\x07"
        ),
        b"\x81\xa1v\x01",  # version only
    ],
)
def test_decode_rejects_foreign_payloads(payload: bytes) -> None:
    with pytest.raises(tw.InvalidDelivery):
        tw.decode_request(payload)


def test_json_request() -> None:
    request = tw.WebhookRequest.json(
        "https://example.com/", {"ü": [1, 2]}, headers={"x-a": "b"}, id="evt_1"
    )
    assert request.body == '{"ü":[1,2]}'.encode()
    assert request.headers == {"content-type": "application/json", "x-a": "b"}
    assert request.id == "evt_1"
    # Mapping keys come out sorted: equal data, equal bytes (and signatures).
    assert tw.WebhookRequest.json("https://example.com/", {"b": 1, "a": None}).body == (
        b'{"a":null,"b":1}'
    )
    typed = tw.WebhookRequest.json(
        "https://example.com/", [1, "x"], headers={"Content-Type": "application/cloudevents+json"}
    )
    assert typed.headers == {"Content-Type": "application/cloudevents+json"}


class Kind(enum.Enum):
    PAID = "invoice.paid"


class Opaque:
    pass


@dataclasses.dataclass
class Line:
    sku: str
    amount: decimal.Decimal


@dataclasses.dataclass
class InvoicePaid:
    kind: Kind
    id: uuid.UUID
    at: datetime.datetime
    lines: list[Line]
    note: str | None = None


def test_json_request_takes_the_codec_types() -> None:
    event = InvoicePaid(
        Kind.PAID,
        uuid.UUID(int=7),
        datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        [Line("a-1", decimal.Decimal("9.50"))],
    )
    request = tw.WebhookRequest.json("https://example.com/", event, signing_key="acme")
    assert json.loads(request.body) == {
        "at": "2026-01-02T03:04:05+00:00",
        "id": "00000000-0000-0000-0000-000000000007",
        "kind": "invoice.paid",
        "lines": [{"amount": "9.50", "sku": "a-1"}],
        "note": None,
    }
    assert request.signing_key == "acme"
    assert tw.WebhookRequest.json("https://example.com/", Kind.PAID).body == b'"invoice.paid"'


def test_json_request_takes_pydantic_models() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Ping(pydantic.BaseModel):  # type: ignore[misc, name-defined]
        type: str
        n: int

    request = tw.WebhookRequest.json("https://example.com/", Ping(type="ping", n=2))
    assert request.body == b'{"n":2,"type":"ping"}'


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"raw", tw.InvalidDelivery, "cannot be sent as JSON"),
        ({"blob": b"raw"}, tw.InvalidDelivery, "cannot be sent as JSON"),
        ({"x": math.nan}, tw.InvalidDelivery, "cannot be sent as JSON"),
        (math.inf, tw.InvalidDelivery, "cannot be sent as JSON"),
        ({"when": datetime.datetime(2026, 1, 1)}, taquba.TypeMismatch, "data"),
        ({"line": Line("a", decimal.Decimal(1))}, taquba.TypeMismatch, "data"),
        (Opaque(), taquba.UnsupportedType, "Opaque"),
        (object(), taquba.TypeMismatch, "data"),
    ],
)
def test_json_request_refuses_what_json_cannot_hold(
    data: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        tw.WebhookRequest.json("https://example.com/", data)


def test_records_round_trip_and_merge() -> None:
    attempt = tw.DeliveryAttempt(
        job_id="j",
        webhook_id="w",
        attempt=2,
        at=5,
        duration_ms=7,
        url="https://example.com/",
        endpoint="https://example.com",
        outcome=tw.AttemptOutcome.RETRY,
        status=503,
        response_body=b"busy",
        response_truncated=True,
        error="HTTP 503: busy",
        retry_after=30.0,
    )
    assert decode_attempt(encode_attempt(attempt)) == attempt
    assert decode_attempt(b"junk") is None
    a = tw.EndpointStats("e", 1, 2, 3, 10, 9, 10)
    b = tw.EndpointStats("e", 1, 0, 0, 20, 20, None)
    merged = merge_stats(a, b)
    assert merged == tw.EndpointStats("e", 2, 2, 3, 20, 20, 10)
    assert merged.attempts == 7
    assert decode_stats("e", encode_stats(merged)) == merged
    assert decode_stats("e", None) == tw.EndpointStats("e")
    assert decode_stats("e", b"junk") == tw.EndpointStats("e")


async def test_worker_option_checks(queue: taquba.Queue) -> None:
    for kwargs in (
        {"default_timeout": 0},
        {"default_timeout": float("inf")},
        {"max_retry_after": -1},
        {"response_body_limit": -1},
        {"max_redirects": -1},
        {"max_connections": 0},
        {"max_connections": True},
    ):
        [name] = kwargs
        with pytest.raises(taquba.InvalidArgument, match=f"^{name} must be"):
            tw.WebhookWorker(queue, **kwargs)  # type: ignore[arg-type]
    worker = tw.WebhookWorker(queue)
    assert worker.policy == tw.DestinationPolicy()
