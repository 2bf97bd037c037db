"""Standard Webhooks signing, checked against the independent ``standardwebhooks`` package."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks
from hypothesis import given
from hypothesis import strategies as st

import taquba
import taquba_webhooks as tw
from taquba.testing import open_test_queue
from webhooks_support import LOOPBACK, Receiver, run_worker, webhook_worker

secrets = st.binary(min_size=1, max_size=64).map(
    lambda key: tw.SECRET_PREFIX + base64.b64encode(key).decode()
)
ids = st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True)
text_bodies = st.text(max_size=300).map(str.encode)
timestamps = st.integers(min_value=0, max_value=4_000_000_000)


@given(secrets, ids, timestamps, text_bodies)
def test_signature_matches_the_reference_implementation(
    secret: str, msg_id: str, timestamp: int, body: bytes
) -> None:
    reference = standardwebhooks.Webhook(secret).sign(
        msg_id, datetime.fromtimestamp(timestamp, tz=UTC), body.decode()
    )
    assert tw.sign(secret, msg_id, timestamp, body) == reference


@given(secrets, ids, text_bodies)
def test_reference_verifies_our_headers(secret: str, msg_id: str, body: bytes) -> None:
    headers = tw.signature_headers(secret, msg_id, int(time.time()), body)
    standardwebhooks.Webhook(secret).verify(body, headers, json_parse=False)


@given(secrets, ids, text_bodies)
def test_we_verify_reference_signatures(secret: str, msg_id: str, body: bytes) -> None:
    now = int(time.time())
    signature = standardwebhooks.Webhook(secret).sign(
        msg_id, datetime.fromtimestamp(now, tz=UTC), body.decode()
    )
    headers = {
        "Webhook-Id": msg_id,
        "Webhook-Timestamp": str(now),
        "Webhook-Signature": signature,
    }
    assert tw.verify_webhook(body, headers, secret) == msg_id


def test_rotation_signs_with_every_secret_and_either_verifies() -> None:
    old, new = tw.generate_secret(), tw.generate_secret()
    now = int(time.time())
    headers = tw.signature_headers([new, old], "msg_1", now, b'{"a":1}')
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        standardwebhooks.Webhook(secret).verify(b'{"a":1}', headers)
        assert tw.verify_webhook(b'{"a":1}', headers, secret) == "msg_1"
    # A receiver mid-rotation holds both and accepts a message signed with either alone.
    only_old = tw.signature_headers(old, "msg_2", now, b"{}")
    assert tw.verify_webhook(b"{}", only_old, [new, old]) == "msg_2"
    with pytest.raises(tw.VerificationError, match="no matching signature"):
        tw.verify_webhook(b"{}", only_old, tw.generate_secret())


def _headers(secret: str, body: bytes = b"{}", *, at: int | None = None) -> dict[str, str]:
    return tw.signature_headers(secret, "msg_x", int(time.time()) if at is None else at, body)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda h: h.pop("webhook-id"), "missing webhook-id header"),
        (lambda h: h.pop("webhook-timestamp"), "missing webhook-timestamp header"),
        (lambda h: h.pop("webhook-signature"), "missing webhook-signature header"),
        (lambda h: h.update({"webhook-timestamp": "12.5"}), "malformed webhook-timestamp"),
        (lambda h: h.update({"webhook-timestamp": "-5"}), "malformed webhook-timestamp"),
        (lambda h: h.update({"webhook-id": "msg_y"}), "no matching signature"),
        (lambda h: h.update({"webhook-signature": "v1a,AAAA"}), "no matching signature"),
        (lambda h: h.update({"webhook-signature": "v1,!!notbase64"}), "no matching signature"),
        (lambda h: h.update({"webhook-signature": "garbage"}), "no matching signature"),
    ],
)
def test_verification_failures(mutate: object, message: str) -> None:
    secret = tw.generate_secret()
    headers = _headers(secret)
    mutate(headers)  # type: ignore[operator]
    with pytest.raises(tw.VerificationError, match=message):
        tw.verify_webhook(b"{}", headers, secret)


def test_tampered_body_fails() -> None:
    secret = tw.generate_secret()
    with pytest.raises(tw.VerificationError, match="no matching signature"):
        tw.verify_webhook(b'{"amount":1000}', _headers(secret, b'{"amount":1}'), secret)


def test_timestamp_tolerance() -> None:
    secret = tw.generate_secret()
    now = 1_800_000_000
    assert tw.verify_webhook(b"{}", _headers(secret, at=now - 300), secret, now=now)
    assert tw.verify_webhook(b"{}", _headers(secret, at=now + 300), secret, now=now)
    with pytest.raises(tw.VerificationError, match="too old"):
        tw.verify_webhook(b"{}", _headers(secret, at=now - 301), secret, now=now)
    with pytest.raises(tw.VerificationError, match="too new"):
        tw.verify_webhook(b"{}", _headers(secret, at=now + 301), secret, now=now)
    with pytest.raises(tw.VerificationError, match="too old"):
        tw.verify_webhook(b"{}", _headers(secret, at=now - 20), secret, now=now, tolerance=10)
    with pytest.raises(taquba.InvalidArgument, match="tolerance"):
        tw.verify_webhook(b"{}", _headers(secret), secret, tolerance=-1)


def test_secrets() -> None:
    secret = tw.generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    key = base64.b64decode(secret.removeprefix("whsec_"))
    body, now = b"x", int(time.time())
    expected = tw.sign(secret, "m", now, body)
    assert tw.sign(secret.removeprefix("whsec_"), "m", now, body) == expected  # no prefix
    assert tw.sign(secret.rstrip("="), "m", now, body) == expected  # unpadded
    assert tw.sign(key, "m", now, body) == expected  # raw key bytes
    for bad in ("whsec_", "whsec_***", "", b""):
        with pytest.raises(tw.InvalidSecret):
            tw.sign(bad, "m", now, body)
    with pytest.raises(tw.InvalidSecret):
        tw.generate_secret(8)
    with pytest.raises(tw.InvalidSecret):
        tw.signature_headers([], "m", now, body)


async def test_worker_checks_its_secrets(queue: taquba.Queue) -> None:
    with pytest.raises(tw.InvalidSecret):
        tw.WebhookWorker(queue, secrets={"k": ["not base64!"]})
    with pytest.raises(tw.InvalidSecret):
        tw.WebhookWorker(queue, secrets={"k": []})
    with pytest.raises(tw.InvalidSecret):
        tw.WebhookWorker(queue, secrets={"k": ""})


async def test_worker_signs_each_attempt(receiver: Receiver) -> None:
    old, new = tw.generate_secret(), tw.generate_secret()
    from webhooks_support import FAST, Reply

    receiver.script("/hook", Reply(503), Reply(200))
    async with open_test_queue(config=FAST) as queue:
        request = tw.WebhookRequest.json(receiver.url(), {"type": "ping"}, signing_key="acme")
        result = await tw.enqueue_webhook(queue, request)
        await run_worker(
            queue, webhook_worker(queue, policy=LOOPBACK, secrets={"acme": [new, old]})
        )
    first, second = receiver.received()
    for got in (first, second):
        assert got.headers["webhook-id"] == result.id
        for secret in (old, new):
            assert standardwebhooks.Webhook(secret).verify(got.body, got.headers) == {
                "type": "ping"
            }
            assert tw.verify_webhook(got.body, got.headers, secret) == result.id


async def test_unknown_signing_key_dead_letters(queue: taquba.Queue, receiver: Receiver) -> None:
    request = tw.WebhookRequest(receiver.url(), b"x", signing_key="nobody")
    result = await tw.enqueue_webhook(queue, request)
    await run_worker(
        queue, webhook_worker(queue, policy=LOOPBACK, secrets={"acme": tw.generate_secret()})
    )
    job = await queue.get_job(result.id)
    assert job is not None and job.status is taquba.JobStatus.DEAD
    assert job.last_error == "signing key 'nobody' is not configured on this worker"
    assert receiver.received() == []
