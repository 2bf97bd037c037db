"""The SSRF guard: which addresses a delivery may connect to, enforced at connect time.

`DestinationPolicy.check` is a pure function of one address. The HTTP transport the worker
uses resolves each destination host once with trio's ``getaddrinfo``, checks *every* resolved
address, and then opens the TCP connection to one of those checked addresses (an IP literal),
never to the host name. A DNS answer that changes between the check and the connection
(DNS rebinding) therefore cannot redirect the connection: there is no second lookup. TLS still
uses the host name for SNI and certificate verification, and the ``Host`` header is the URL's.
Every connection is checked this way, including those made to follow redirects.
"""

from __future__ import annotations

import ipaddress
import socket
import typing
from dataclasses import dataclass, field

import httpcore
import httpx
import trio

import taquba

from ._errors import DestinationRefused, InvalidDelivery

if typing.TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator, Iterable, Sequence

__all__ = ["METADATA_ADDRESSES", "DestinationPolicy", "check_destination"]

IPAddress: typing.TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: typing.TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
    )
)
"""Cloud instance-metadata addresses; refused by default (most are also non-global)."""

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _networks(argument: str, values: Iterable[str | IPNetwork]) -> tuple[IPNetwork, ...]:
    networks: list[IPNetwork] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except (TypeError, ValueError):
            raise taquba.InvalidArgument(
                argument, value, "must hold IP networks such as '10.0.0.0/8' or '::1/128'"
            ) from None
    return tuple(networks)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it embeds one (library-internal).

    - IPv4-mapped ``::ffff:a.b.c.d`` (``::ffff:0:0/96``, RFC 4291): what dual-stack sockets
      use for IPv4 peers; a connection to it *is* an IPv4 connection.
    - 6to4 ``2002:AABB:CCDD::/48`` (``2002::/16``, RFC 3056): relayed to the IPv4 address.
    - NAT64 well-known prefix ``64:ff9b::a.b.c.d`` (``64:ff9b::/96``, RFC 6052): translated
      to the IPv4 address by a NAT64 gateway.
    - IPv4-compatible ``::a.b.c.d`` (``::/96``, deprecated by RFC 4291), except ``::`` and
      ``::1``, which are the IPv6 unspecified and loopback addresses.

    Not treated as embedding: Teredo (``2001::/32``, refused anyway as not global) and the
    NAT64 local-use prefix ``64:ff9b:1::/48`` (RFC 8215; refused by the IPv6 rules).
    """
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _default_refusal(address: IPAddress) -> str | None:
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "not a globally routable address"
    return None


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    """Which addresses deliveries may connect to (the SSRF guard).

    By default only globally routable unicast addresses are allowed: loopback, private
    (RFC 1918, ULA), link-local, cloud-metadata (`METADATA_ADDRESSES`), shared (CGNAT),
    multicast, unspecified, reserved and documentation addresses are refused.

    An IPv6 address that embeds an IPv4 address is judged by that IPv4 address alone, by
    ``deny``, ``allow`` and the default rules, unless an IPv6 ``deny`` or ``allow`` network
    holds it: ``::ffff:8.8.8.8`` is allowed like ``8.8.8.8``, ``::ffff:127.0.0.1`` refused like
    ``127.0.0.1``. The forms are IPv4-mapped (``::ffff:0:0/96``), 6to4 (``2002::/16``), NAT64
    with the well-known prefix (``64:ff9b::/96``) and IPv4-compatible (``::/96``, but ``::``
    and ``::1`` are themselves). Teredo and the NAT64 local-use prefix ``64:ff9b:1::/48`` are
    not unpacked; the IPv6 rules refuse them.

    ``deny`` is checked first, then ``allow``, then the default rules. To deliver to a
    service on your own network, or to loopback in tests, allow its range explicitly:
    ``DestinationPolicy(allow=["127.0.0.0/8", "::1/128"])``. Allowing ``0.0.0.0/0`` and
    ``::/0`` switches the guard off.

    Raises:
        taquba.InvalidArgument: an entry of ``allow`` or ``deny`` is not an IP network.
    """

    allow: Sequence[str | IPNetwork] = ()
    """Networks opened despite the default rules, e.g. ``"10.20.0.0/16"``."""
    deny: Sequence[str | IPNetwork] = ()
    """Networks refused even if otherwise allowed."""
    _allow: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)
    _deny: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow", tuple(self.allow))
        object.__setattr__(self, "deny", tuple(self.deny))
        object.__setattr__(self, "_allow", _networks("allow", self.allow))
        object.__setattr__(self, "_deny", _networks("deny", self.deny))

    def check(self, address: str | IPAddress) -> str | None:
        """Why ``address`` is refused (e.g. ``"a private address"``), or None if allowed.

        Raises:
            taquba.InvalidArgument: ``address`` is not an IP address.
        """
        try:
            ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        except ValueError:
            raise taquba.InvalidArgument("address", address, "must be an IP address") from None
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        if any(ip in network for network in self._deny):
            return "a denied address"
        if any(ip in network for network in self._allow):
            return None
        if isinstance(ip, ipaddress.IPv6Address):
            embedded = embedded_ipv4(ip)
            if embedded is not None:
                # The embedded IPv4 address decides, allowed or refused: a connection to
                # ::ffff:8.8.8.8 reaches 8.8.8.8. (The IPv6 rules would refuse every such
                # form: ::ffff:0:0/96, ::/96 and 64:ff9b::/96 lie in the reserved ::/8.)
                if any(embedded in network for network in self._deny):
                    return f"an address embedding {embedded}, a denied address"
                if any(embedded in network for network in self._allow):
                    return None
                reason = _default_refusal(embedded)
                return None if reason is None else f"an address embedding {embedded}, {reason}"
        return _default_refusal(ip)


async def resolve_checked(
    host: str, port: int, policy: DestinationPolicy
) -> list[tuple[socket.AddressFamily, str]]:
    """Resolve ``host`` once and check every address; return them in resolver order.

    Raises:
        DestinationRefused: any resolved address is refused (none is returned).
        OSError: resolution failed (``socket.gaierror``) or returned nothing.
    """
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(literal)
    except ValueError:
        ip = None
    if ip is not None:
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        candidates = [(family, str(ip))]
    else:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        candidates: list[tuple[socket.AddressFamily, str]] = []
        for family, _type, _proto, _canonname, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            entry = (family, str(sockaddr[0]))
            if entry not in candidates:
                candidates.append(entry)
        if not candidates:
            raise OSError(f"{host} did not resolve to any IP address")
    for _family, address in candidates:
        reason = policy.check(address)
        if reason is not None:
            raise DestinationRefused(host, address, reason)
    return candidates


async def check_destination(url: str, *, policy: DestinationPolicy | None = None) -> list[str]:
    """Resolve a URL's host and apply the SSRF guard, as the worker does before connecting.

    Use it to vet endpoint URLs when users register them, so a bad one is refused at once
    rather than dead-lettered at delivery time. The worker checks again at every connection:
    DNS answers change.

    Returns:
        The resolved addresses, all allowed.

    Raises:
        InvalidDelivery: ``url`` is not an absolute http(s) URL.
        DestinationRefused: an address the host resolves to is refused.
        OSError: the host name does not resolve.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise InvalidDelivery(f"invalid URL {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidDelivery(f"invalid URL {url!r}: must be an absolute http or https URL")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    resolved = await resolve_checked(parsed.raw_host.decode("ascii"), port, policy or _DEFAULT)
    return [address for _family, address in resolved]


_DEFAULT = DestinationPolicy()


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses the policy allows."""

    def __init__(self, policy: DestinationPolicy) -> None:
        self._policy = policy
        # httpcore types TrioBackend through an import fallback; it is an AsyncNetworkBackend.
        self._inner = typing.cast("httpcore.AsyncNetworkBackend", httpcore.TrioBackend())

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's backend interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve, check every address, then connect to a checked address literal."""
        try:
            with trio.fail_after(float("inf") if timeout is None else timeout):
                candidates = await resolve_checked(host, port, self._policy)
        except trio.TooSlowError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        options = list(socket_options or ())
        error: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for _family, address in candidates:
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's backend interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Unix sockets are never a webhook destination."""
        raise httpcore.UnsupportedProtocol("unix sockets are not webhook destinations")

    async def sleep(self, seconds: float) -> None:
        """Sleep with trio."""
        await trio.sleep(seconds)


def _exception_map() -> list[tuple[type[Exception], type[httpx.TransportError]]]:
    # Most specific first; mirrors httpx's own transport.
    return [
        (httpcore.ConnectTimeout, httpx.ConnectTimeout),
        (httpcore.ReadTimeout, httpx.ReadTimeout),
        (httpcore.WriteTimeout, httpx.WriteTimeout),
        (httpcore.PoolTimeout, httpx.PoolTimeout),
        (httpcore.TimeoutException, httpx.TimeoutException),
        (httpcore.ConnectError, httpx.ConnectError),
        (httpcore.ReadError, httpx.ReadError),
        (httpcore.WriteError, httpx.WriteError),
        (httpcore.NetworkError, httpx.NetworkError),
        (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
        (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
        (httpcore.LocalProtocolError, httpx.LocalProtocolError),
        (httpcore.ProtocolError, httpx.ProtocolError),
    ]


_EXCEPTIONS = _exception_map()


def _map_error(exc: Exception) -> Exception:
    for source, target in _EXCEPTIONS:
        if isinstance(exc, source):
            return target(str(exc))
    return exc


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: typing.AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except Exception as exc:
            mapped = _map_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        closer = getattr(self._stream, "aclose", None)
        if closer is not None:
            await closer()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport over an httpcore pool whose every connection is SSRF-checked.

    No proxy support: a proxy would make the connection for us, past the guard.
    """

    def __init__(
        self,
        policy: DestinationPolicy,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 100,
        max_keepalive_connections: int = 20,
        keepalive_expiry: float = 5.0,
    ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(),
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
            keepalive_expiry=keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=GuardedBackend(policy),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request through the guarded pool."""
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = await self._pool.handle_async_request(core_request)
        except Exception as exc:
            mapped = _map_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        assert isinstance(response.stream, typing.AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
        )

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._pool.aclose()
