"""Bearer tokens and scopes, the loopback rule, token files, and TLS."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import httpx
import pytest
import trio

import taquba
import taquba_server
from taquba_server import InsecureBind, InvalidTokens, Token, load_tokens, parse_tokens

TOKENS = [
    Token("p-secret", frozenset({"produce"}), name="producer"),
    Token("w-secret", frozenset({"work"}), name="worker"),
    Token("a-secret", frozenset({"admin"}), name="admin"),
]

# (method, path, body, scope)
ENDPOINTS = [
    ("POST", "/v1/jobs", {"queue_name": "q", "payload": ""}, "produce"),
    ("GET", "/v1/jobs/x", None, "produce"),
    ("GET", "/v1/queues", None, "produce"),
    ("POST", "/v1/kv/get", {"key": ""}, "produce"),
    ("POST", "/v1/blobs/list", {"directory": ""}, "produce"),
    ("POST", "/v1/queues/q/claim", {}, "work"),
    ("POST", "/v1/claims/renew", {"claims": []}, "work"),
    ("POST", "/v1/claims/x/ack", {"token": "t"}, "work"),
    ("GET", "/v1/queues/q/jobs?status=dead", None, "admin"),
    ("POST", "/v1/queues/q/purge", {"status": "dead"}, "admin"),
]
RANK = {"produce": 0, "work": 1, "admin": 2}


@pytest.fixture
async def secured(queue: taquba.Queue, nursery: trio.Nursery) -> str:
    server = taquba_server.Server(queue, port=0, tokens=TOKENS)
    return await nursery.start(server.serve)


async def call(
    http: httpx.AsyncClient, method: str, path: str, body: object, secret: str | None
) -> httpx.Response:
    headers = {} if secret is None else {"Authorization": f"Bearer {secret}"}
    return await http.request(method, path, json=body, headers=headers)


async def test_scopes(secured: str) -> None:
    async with httpx.AsyncClient(base_url=secured) as http:
        for method, path, body, scope in ENDPOINTS:
            response = await call(http, method, path, body, None)
            assert response.status_code == 401, (path, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.json()["error"]["code"] == "unauthorized"
            response = await call(http, method, path, body, "unknown")
            assert response.status_code == 401
            for token in TOKENS:
                (own,) = token.scopes
                response = await call(http, method, path, body, token.secret)
                if RANK[own] >= RANK[scope]:
                    assert response.status_code not in (401, 403), (path, own, response.text)
                else:
                    assert response.status_code == 403, (path, own)
                    assert response.json()["error"]["code"] == "forbidden"
        response = await http.get("/v1/queues", headers={"Authorization": "Basic a-secret"})
        assert response.status_code == 401
        # Open endpoints.
        assert (await http.get("/v1/health")).status_code == 200
        assert (await http.get("/v1/openapi.json")).status_code == 200


async def test_a_refused_request_writes_nothing(secured: str, queue: taquba.Queue) -> None:
    async with httpx.AsyncClient(base_url=secured) as http:
        response = await call(http, "POST", "/v1/jobs", {"queue_name": "q", "payload": ""}, "x")
        assert response.status_code == 401
    assert await queue.list_queues() == []


async def test_no_token_on_a_public_address_is_refused(queue: taquba.Queue) -> None:
    with pytest.raises(InsecureBind, match="without a token"):
        taquba_server.Server(queue, host="0.0.0.0")
    with pytest.raises(taquba.UsageError):
        taquba_server.Server(queue, host="192.0.2.1")
    taquba_server.Server(queue, host="0.0.0.0", tokens=TOKENS)
    for host in ("127.0.0.1", "localhost", "::1", "127.1.2.3"):
        taquba_server.Server(queue, host=host)


@pytest.mark.parametrize(
    "options",
    [
        {"port": -1},
        {"port": 70000},
        {"certfile": "a.pem"},
        {"shutdown_grace": -1},
        {"max_body_size": 10},
    ],
)
async def test_bad_options_are_usage_errors(
    queue: taquba.Queue, options: dict[str, object]
) -> None:
    with pytest.raises(taquba.UsageError):
        taquba_server.Server(queue, **options)  # type: ignore[arg-type]


def test_parse_tokens() -> None:
    tokens = parse_tokens("s1:produce,work; s2:admin;")
    assert [(t.secret, t.scopes) for t in tokens] == [
        ("s1", frozenset({"produce", "work"})),
        ("s2", frozenset({"admin"})),
    ]
    assert parse_tokens("") == []
    assert "s1" not in repr(tokens[0])
    for bad in ("s1", ":admin", "s1:root", "s1:"):
        with pytest.raises(InvalidTokens):
            parse_tokens(bad)
    assert tokens[0].allows("produce")
    assert tokens[0].allows("work")
    assert not tokens[0].allows("admin")


def test_load_tokens(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(
        '[[token]]\nname = "web"\nsecret = "abc"\nscopes = ["produce"]\n\n'
        '[[token]]\nsecret = "def"\nscopes = ["admin"]\n'
    )
    tokens = load_tokens(path)
    assert [(t.name, t.secret, t.scopes) for t in tokens] == [
        ("web", "abc", frozenset({"produce"})),
        ("#2", "def", frozenset({"admin"})),
    ]
    for text in (
        "[[token]]\nsecret = 1\nscopes = []\n",
        '[[token]]\nsecret = "x"\nscopes = ["root"]\n',
        '[[token]]\nsecret = "x"\nscopes = []\n',
        '[[token]]\nsecret = "x"\nscopes = ["admin"]\nextra = 1\n',
        'token = "x"\n',
        "[other]\n",
        "not toml [",
    ):
        path.write_text(text)
        with pytest.raises(InvalidTokens):
            load_tokens(path)
    with pytest.raises(InvalidTokens):
        load_tokens(tmp_path / "missing.toml")


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


async def test_tls(queue: taquba.Queue, nursery: trio.Nursery, tmp_path: Path) -> None:
    certfile, keyfile = _self_signed(tmp_path)
    server = taquba_server.Server(queue, port=0, certfile=str(certfile), keyfile=str(keyfile))
    url = await nursery.start(server.serve)
    assert url.startswith("https://127.0.0.1:")
    context = ssl.create_default_context(cafile=str(certfile))
    async with httpx.AsyncClient(base_url=url, verify=context) as http:
        response = await http.get("/v1/health")
        assert response.status_code == 200
        assert response.json()["owner"]["url"] == url
    server.shutdown()
