"""The pure parts: schema checks, body codecs, content negotiation (hypothesis)."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taquba_server import _wire as w
from taquba_server._codec import decode_body, encode_body, media_type_of, response_encoding
from taquba_server._schema import BadRequest

BODIES = [
    w.ENQUEUE_BODY, w.ENQUEUE_BATCH_BODY, w.CLAIM_BODY, w.WAIT_BODY, w.RENEW_BODY, w.ACK_BODY,
    w.NACK_BODY, w.DEAD_BODY, w.SETTLE_BODY, w.KEY_BODY, w.PUT_BODY, w.CAS_BODY, w.SCAN_BODY,
    w.PATH_BODY, w.BLOB_PUT_BODY, w.BLOB_LIST_BODY, w.PURGE_BODY, w.EMPTY_BODY,
]  # fmt: skip

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
keys = st.sampled_from(
    ["queue_name", "payload", "priority", "jobs", "token", "effects", "key", "value", "claims",
     "max_jobs", "wait", "lease", "settlements", "action", "job_id", "status", "path", "data"]
)  # fmt: skip
bodies = st.dictionaries(keys, values, max_size=6)


@settings(max_examples=300, deadline=None)
@given(body=bodies | values, binary=st.booleans(), index=st.integers(0, len(BODIES) - 1))
def test_a_check_either_accepts_or_names_the_problem(
    body: object, binary: bool, index: int
) -> None:
    """Whatever comes in, the only error is BadRequest: never an exception that would be a 500."""
    message = "accepted"
    try:
        BODIES[index].check(body, "", binary=binary)
    except BadRequest as exc:
        message = exc.message
    assert message


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=64), encoding=st.sampled_from(["json", "msgpack"]))
def test_decoding_garbage_is_a_bad_request(raw: bytes, encoding: str) -> None:
    with contextlib.suppress(BadRequest):
        decode_body(raw, encoding)  # type: ignore[arg-type]


@given(data=st.binary())
def test_bytes_are_base64_in_json_and_bin_in_msgpack(data: bytes) -> None:
    body = {"value": data, "nested": [{"key": data}]}
    as_json = json.loads(encode_body(body, "json"))
    assert base64.b64decode(as_json["value"]) == data
    assert w.KEY_BODY.check({"key": as_json["value"]}, "", binary=False) == {"key": data}
    assert decode_body(encode_body(body, "msgpack"), "msgpack") == body


def test_errors_name_the_field_path() -> None:
    with pytest.raises(BadRequest) as caught:
        w.ENQUEUE_BATCH_BODY.check(
            {
                "jobs": [
                    {"queue_name": "q", "payload": ""},
                    {"queue_name": "q", "payload": "", "x": 1},
                ]
            },
            "",
            binary=False,
        )
    assert caught.value.field_path == "jobs[1].x"
    with pytest.raises(BadRequest) as caught:
        w.ACK_BODY.check(
            {"token": "t", "effects": {"kv_writes": [{"key": "", "value": 5}]}}, "", binary=False
        )
    assert caught.value.field_path == "effects.kv_writes[0].value"
    for bad in ("abc", "YQ", "YQ=", "Y Q==", "YQ==\n"):
        with pytest.raises(BadRequest):
            w.KEY_BODY.check({"key": bad}, "", binary=False)
    with pytest.raises(BadRequest):
        w.CLAIM_BODY.check({"wait": float("nan")}, "", binary=False)
    with pytest.raises(BadRequest):
        w.CLAIM_BODY.check({"lease": 0}, "", binary=False)


@pytest.mark.parametrize(
    ("accept", "default", "expected"),
    [
        (None, "json", "json"),
        ("", "msgpack", "msgpack"),
        ("*/*", "msgpack", "msgpack"),
        ("application/msgpack", "json", "msgpack"),
        ("application/json, application/msgpack;q=0.5", "msgpack", "json"),
        ("application/json;q=0.1, application/msgpack", "json", "msgpack"),
        ("text/html", "json", "json"),
        ("application/msgpack;q=0", "json", "json"),
        ("application/x-msgpack", "json", "msgpack"),
        ("application/msgpack;q=bogus, application/json", "msgpack", "json"),
    ],
)
def test_response_encoding(accept: str | None, default: str, expected: str) -> None:
    assert response_encoding(accept, default) == expected  # type: ignore[arg-type]


def test_media_type_of() -> None:
    assert media_type_of("application/json; charset=utf-8") == "json"
    assert media_type_of("Application/MsgPack") == "msgpack"
    assert media_type_of("text/plain") is None
    assert media_type_of(None) is None
