"""The SSRF guard: the pure policy, and refusals before any connection in the worker."""

from __future__ import annotations

import ipaddress
import ssl

import pytest
import trio
from hypothesis import example, given
from hypothesis import strategies as st

import taquba
import taquba_webhooks as tw
from taquba_webhooks._guard import embedded_ipv4
from webhooks_support import (
    LOOPBACK,
    FakeResolver,
    Receiver,
    RecordingSocketFactory,
    Reply,
    run_worker,
    start_receiver,
    webhook_worker,
)

DEFAULT = tw.DestinationPolicy()


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.5.6.7", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.0.0.1", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fc00::1", "a private address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("169.254.1.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("fe80::1%eth0", "a link-local address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("192.0.0.192", "a cloud metadata address"),
        ("100.64.0.1", "not a globally routable address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("ff0e::1", "a multicast address"),
        ("240.0.0.1", "a private address"),
        ("192.0.2.1", "a private address"),
        ("::ffff:127.0.0.1", "an address embedding 127.0.0.1, a loopback address"),
        (
            "::ffff:169.254.169.254",
            "an address embedding 169.254.169.254, a cloud metadata address",
        ),
        ("2002:7f00:1::", "an address embedding 127.0.0.1, a loopback address"),
        ("64:ff9b::a00:1", "an address embedding 10.0.0.1, a private address"),
    ],
)
def test_default_policy_refuses_non_global_addresses(address: str, reason: str) -> None:
    assert DEFAULT.check(address) == reason


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111"])
def test_default_policy_allows_global_unicast(address: str) -> None:
    assert DEFAULT.check(address) is None


def test_allow_and_deny_lists() -> None:
    policy = tw.DestinationPolicy(allow=["10.20.0.0/16", "127.0.0.1"], deny=["8.8.8.0/24"])
    assert policy.check("10.20.3.4") is None
    assert policy.check("10.21.0.1") == "a private address"
    assert policy.check("127.0.0.1") is None
    assert policy.check("127.0.0.2") == "a loopback address"
    assert policy.check("::ffff:127.0.0.1") is None  # the embedded address is allowed
    assert policy.check("8.8.8.8") == "a denied address"
    assert policy.check("1.1.1.1") is None
    assert tw.DestinationPolicy(allow=["0.0.0.0/0", "::/0"]).check("169.254.169.254") is None
    with pytest.raises(taquba.InvalidArgument, match="allow must hold IP networks"):
        tw.DestinationPolicy(allow=["example.com"])
    with pytest.raises(taquba.InvalidArgument, match="deny must hold IP networks"):
        tw.DestinationPolicy(deny=["10.0.0.0/33"])
    with pytest.raises(taquba.InvalidArgument, match="address must be an IP address"):
        policy.check("example.com")


@given(st.ip_addresses())
@example(ipaddress.IPv6Address("2002:100::"))  # 6to4 of a public address: allowed
def test_policy_is_total_and_agrees_with_ipaddress(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    reason = DEFAULT.check(ip)
    # An IPv6 address that embeds an IPv4 one (mapped, 6to4, NAT64, compatible) is judged by
    # the IPv4 address, which `ipaddress` does not do for `is_global`.
    judged = (embedded_ipv4(ip) or ip) if isinstance(ip, ipaddress.IPv6Address) else ip
    if reason is None:
        assert judged.is_global and not judged.is_multicast
        assert not (judged.is_loopback or judged.is_private or judged.is_link_local)
    if judged.is_loopback or judged.is_private or judged.is_link_local or not judged.is_global:
        assert reason is not None


def _embeddings(v4: ipaddress.IPv4Address) -> dict[str, ipaddress.IPv6Address]:
    """Every IPv6 form that embeds ``v4``."""
    value = int(v4)
    forms = {
        "mapped": ipaddress.IPv6Address(0xFFFF << 32 | value),
        "6to4": ipaddress.IPv6Address(0x2002 << 112 | value << 80 | 0x1234),
        "nat64": ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | value),
    }
    if value > 1:  # :: and ::1 are the unspecified and loopback addresses themselves
        forms["compatible"] = ipaddress.IPv6Address(value)
    return forms


@pytest.mark.parametrize(
    "address",
    [
        "::ffff:8.8.8.8",
        "::ffff:808:808",
        "::ffff:1.1.1.1",
        "2002:808:808::1",
        "64:ff9b::8.8.8.8",
        "::8.8.8.8",
    ],
)
def test_embedded_public_ipv4_is_allowed(address: str) -> None:
    assert DEFAULT.check(address) is None


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("::ffff:10.0.0.1", "an address embedding 10.0.0.1, a private address"),
        ("::ffff:192.168.0.1", "an address embedding 192.168.0.1, a private address"),
        ("::ffff:100.64.0.1", "an address embedding 100.64.0.1, not a globally routable address"),
        ("::ffff:0.0.0.0", "an address embedding 0.0.0.0, an unspecified address"),
        ("2002:a9fe:a9fe::", "an address embedding 169.254.169.254, a cloud metadata address"),
        ("::127.0.0.1", "an address embedding 127.0.0.1, a loopback address"),
        ("::10.1.2.3", "an address embedding 10.1.2.3, a private address"),
    ],
)
def test_embedded_refused_ipv4_is_refused(address: str, reason: str) -> None:
    assert DEFAULT.check(address) == reason


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b:1::808:808",  # NAT64 local-use prefix: not unpacked
        "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo, embedding 8.8.8.8 (obfuscated)
    ],
)
def test_other_ipv4_translation_prefixes_are_refused(address: str) -> None:
    reason = DEFAULT.check(address)
    assert reason is not None and "embedding" not in reason  # by the IPv6 rules


networks_v4 = st.lists(
    st.builds(
        lambda ip, prefix: ipaddress.IPv4Network((ip, prefix), strict=False),
        st.ip_addresses(v=4),
        st.integers(0, 32),
    ),
    max_size=3,
)


@given(st.ip_addresses(v=4), networks_v4, networks_v4)
def test_embedded_ipv4_is_judged_as_the_ipv4_address(
    v4: ipaddress.IPv4Address,
    allow: list[ipaddress.IPv4Network],
    deny: list[ipaddress.IPv4Network],
) -> None:
    for policy in (DEFAULT, tw.DestinationPolicy(allow=allow, deny=deny)):
        verdict = policy.check(v4)
        for form, v6 in _embeddings(v4).items():
            reason = policy.check(v6)
            assert (reason is None) == (verdict is None), (form, str(v6), reason, verdict)
            if verdict is not None:
                assert reason == f"an address embedding {v4}, {verdict}"


async def _refused(queue: taquba.Queue, url: str, worker: tw.WebhookWorker) -> taquba.JobRecord:
    result = await tw.enqueue_webhook(queue, tw.WebhookRequest(url, b"x"))
    await run_worker(queue, worker)
    job = await queue.get_job(result.id)
    assert job is not None and job.status is taquba.JobStatus.DEAD
    assert job.attempts == 1  # refused once, not retried
    return job


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("http://127.0.0.1:{port}/hook", "destination 127.0.0.1 refused: a loopback address"),
        ("http://10.0.0.1/hook", "destination 10.0.0.1 refused: a private address"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "destination 169.254.169.254 refused: a cloud metadata address",
        ),
        ("http://[::1]:{port}/hook", "destination ::1 refused: a loopback address"),
        # 3.13 resolves the mapped literal first ("it resolves to ..."); both refuse it.
        ("http://[::ffff:7f00:1]:{port}/hook", "an address embedding 127.0.0.1"),
        ("http://0.0.0.0:{port}/hook", "destination 0.0.0.0 refused: an unspecified address"),
        ("http://localhost:{port}/hook", "destination localhost refused: it resolves to"),
    ],
)
async def test_worker_refuses_before_connecting(
    queue: taquba.Queue,
    receiver: Receiver,
    sockets: RecordingSocketFactory,
    template: str,
    reason: str,
) -> None:
    job = await _refused(queue, template.format(port=receiver.port), webhook_worker(queue))
    assert job.last_error is not None and reason in job.last_error
    assert sockets.created == []  # no connection was even attempted
    assert receiver.received() == []
    attempt = await tw.get_attempt(queue, job.id)
    assert attempt is not None and attempt.status is None
    assert attempt.error == job.last_error
    stats = await tw.endpoint_stats(queue, tw.endpoint_of(template.format(port=receiver.port)))
    assert stats.dead == 1


async def test_any_refused_address_refuses_the_host(
    queue: taquba.Queue, fake_dns: FakeResolver, sockets: RecordingSocketFactory
) -> None:
    fake_dns.table["mixed.test"] = ["93.184.216.34", "10.0.0.7"]
    job = await _refused(queue, "http://mixed.test/hook", webhook_worker(queue))
    assert job.last_error == (
        "destination mixed.test refused: it resolves to 10.0.0.7, a private address"
    )
    assert sockets.created == []
    with pytest.raises(tw.DestinationRefused) as refused:
        await tw.check_destination("https://mixed.test/x")
    assert (refused.value.host, refused.value.address) == ("mixed.test", "10.0.0.7")


async def test_allow_list_opens_loopback(queue: taquba.Queue, receiver: Receiver) -> None:
    await tw.enqueue_webhook(queue, tw.WebhookRequest(receiver.url("/ok"), b"x"))
    await run_worker(queue, webhook_worker(queue, policy=LOOPBACK))
    assert len(receiver.received("/ok")) == 1


async def test_connects_to_the_checked_address_only(
    queue: taquba.Queue, receiver: Receiver, fake_dns: FakeResolver
) -> None:
    # DNS rebinding: the first answer passes the check, later answers would not. The worker
    # resolves once and connects to the address it checked, with the name as Host header.
    fake_dns.table["rebind.test"] = lambda call: ["127.0.0.1"] if call == 1 else ["127.0.0.2"]
    policy = tw.DestinationPolicy(allow=["127.0.0.1/32"])
    await tw.enqueue_webhook(
        queue, tw.WebhookRequest(f"http://rebind.test:{receiver.port}/hook", b"x")
    )
    await run_worker(queue, webhook_worker(queue, policy=policy))
    [got] = receiver.received()
    assert got.headers["host"] == f"rebind.test:{receiver.port}"
    assert fake_dns.calls["rebind.test"] == 1


async def test_every_redirect_hop_is_checked(
    queue: taquba.Queue, receiver: Receiver, sockets: RecordingSocketFactory
) -> None:
    # 127.0.0.2 is loopback too (safe to name in a test) but outside this allow-list.
    receiver.script("/hop", Reply(307, headers={"location": "http://127.0.0.2:9/hook"}))
    policy = tw.DestinationPolicy(allow=["127.0.0.1/32"])
    job = await _refused(
        queue, receiver.url("/hop"), webhook_worker(queue, policy=policy, follow_redirects=True)
    )
    assert job.last_error == "destination 127.0.0.2 refused: a loopback address"
    assert len(sockets.created) == 1  # the first hop only


async def test_dns_failure_is_retried(queue: taquba.Queue, fake_dns: FakeResolver) -> None:
    result = await tw.enqueue_webhook(
        queue, tw.WebhookRequest("http://nowhere.test/hook", b"x"), max_attempts=2
    )
    await run_worker(queue, webhook_worker(queue))
    job = await queue.get_job(result.id)
    assert job is not None and job.status is taquba.JobStatus.DEAD and job.attempts == 2
    assert job.last_error is not None and "cannot resolve nowhere.test" in job.last_error


async def test_check_destination(fake_dns: FakeResolver) -> None:
    fake_dns.table["public.test"] = ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]
    assert await tw.check_destination("https://public.test/hook") == [
        "93.184.216.34",
        "2606:2800:220:1:248:1893:25c8:1946",
    ]
    assert await tw.check_destination("http://127.0.0.1/", policy=LOOPBACK) == ["127.0.0.1"]
    with pytest.raises(tw.DestinationRefused, match="loopback"):
        await tw.check_destination("http://[::1]:8080/")
    with pytest.raises(tw.InvalidDelivery):
        await tw.check_destination("ftp://example.com/")
    with pytest.raises(OSError, match="Name or service not known"):
        await tw.check_destination("http://unknown.test/")


async def test_https_verifies_the_host_name_while_pinning_the_address(
    queue: taquba.Queue, fake_dns: FakeResolver, tmp_path: object, nursery: trio.Nursery
) -> None:
    pytest.importorskip("cryptography")
    import pathlib

    directory = pathlib.Path(str(tmp_path))
    certfile, keyfile = _self_signed("hooks.test", directory)
    receiver = await start_receiver(nursery, certfile=str(certfile), keyfile=str(keyfile))
    fake_dns.table["hooks.test"] = ["127.0.0.1"]
    context = ssl.create_default_context(cafile=str(certfile))
    worker = webhook_worker(queue, policy=LOOPBACK, ssl_context=context)
    ok = await tw.enqueue_webhook(
        queue, tw.WebhookRequest(f"https://hooks.test:{receiver.port}/tls", b"x")
    )
    # The same server reached by its address: the certificate does not name it.
    bad = await tw.enqueue_webhook(
        queue,
        tw.WebhookRequest(f"https://127.0.0.1:{receiver.port}/tls", b"x"),
        max_attempts=1,
    )
    await run_worker(queue, worker)
    assert len(receiver.received("/tls")) == 1
    assert await queue.get_job(ok.id) is None
    job = await queue.get_job(bad.id)
    assert job is not None and job.status is taquba.JobStatus.DEAD
    assert job.last_error is not None and "CERTIFICATE_VERIFY_FAILED" in job.last_error


def _self_signed(name: str, directory: object) -> tuple[object, object]:
    import datetime
    import pathlib

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = pathlib.Path(str(directory))
    certfile = folder / "cert.pem"
    keyfile = folder / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile
