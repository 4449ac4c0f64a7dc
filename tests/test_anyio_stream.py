"""The anyio adapter over real TCP: ProxiedStream, policies, trust, config and the client side.

Every test runs on asyncio and trio (``anyio_backend`` in ``conftest.py``), over real sockets on
127.0.0.1 (and ::1 where the family matters), bounded by ``fail_after``; servers stop when their
task group is cancelled. In most tests the test itself is the server: :func:`tcp_server` hands
over each accepted connection and the test calls :meth:`ProxiedStream.wrap` on it, so each outcome
is asserted where it happens. Nothing sleeps to synchronise: the only waits are the
``header_timeout`` that a test is about.
"""

from __future__ import annotations

import hashlib
import random
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs
import pytest
import trustme
from anyio.abc import ByteStream, SocketAttribute, SocketStream
from anyio.lowlevel import checkpoint
from anyio.streams.memory import MemoryObjectReceiveStream
from anyio.streams.tls import TLSAttribute, TLSListener, TLSStream

import proxyproto as pp
from interop import has_ipv6_loopback
from wire import v2 as raw_v2

pytestmark = pytest.mark.anyio

#: The bound on every test.
TIMEOUT = 5
#: ``header_timeout`` where waiting it out is the point.
SHORT = 0.2

CLIENT = ("203.0.113.7", 51234)
DESTINATION = ("198.51.100.10", 443)
HEADER_V1 = pp.Header.proxy(CLIENT, DESTINATION, version=1)
#: As received: a parsed header also lists its TLVs in ``raw``, and encodes to the same bytes.
HEADER_V2 = pp.parse(
    pp.Header.proxy(
        CLIENT, DESTINATION, tlvs=pp.TLVs(authority="example.com", unique_id=b"\x01req-42")
    ).to_bytes()
)[0]
PAYLOAD = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
#: What a server-speaks-first exchange sends each way (SMTP-like).
BANNER = b"220 ready\r\n"
REPLY = b"HELO client\r\n"

REQUIRE, USE, IGNORE, REJECT, SKIP = (
    pp.Policy.REQUIRE,
    pp.Policy.USE,
    pp.Policy.IGNORE,
    pp.Policy.REJECT,
    pp.Policy.SKIP,
)


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="this host has no IPv6 loopback")


# =============================================================================== helpers


class Server:
    """A listening TCP server; :meth:`accept` gives the test each connection, unread."""

    def __init__(self, host: str, port: int, accepted: MemoryObjectReceiveStream[SocketStream]):
        self.host = host
        self.port = port
        self._accepted = accepted

    async def connect(self) -> SocketStream:
        return await anyio.connect_tcp(self.host, self.port)

    async def accept(self) -> SocketStream:
        return await self._accepted.receive()


@asynccontextmanager
async def tcp_server(host: str = "127.0.0.1") -> AsyncIterator[Server]:
    """Listen on ``host``, an ephemeral port; every accepted connection is closed at the end."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=0)
    send, receive = anyio.create_memory_object_stream[SocketStream](100)
    accepted: list[SocketStream] = []

    async def hand_over(stream: SocketStream) -> None:
        accepted.append(stream)
        await send.send(stream)

    try:
        async with listener, anyio.create_task_group() as task_group:
            task_group.start_soon(listener.serve, hand_over)
            yield Server(host, listener.extra(SocketAttribute.local_port), receive)
            task_group.cancel_scope.cancel()
    finally:
        send.close()
        receive.close()
        for stream in accepted:
            await anyio.aclose_forcefully(stream)


async def receive_all(stream: ByteStream, max_bytes: int = 65536) -> bytes:
    """Everything until EOF."""
    chunks = []
    while True:
        try:
            chunks.append(await stream.receive(max_bytes))
        except anyio.EndOfStream:
            return b"".join(chunks)


async def wrap_after(
    server: Server, client: SocketStream, data: bytes, config: pp.ProxyProtocolConfig | None = None
) -> pp.ProxiedStream:
    """The client sends ``data`` and EOF; the server wraps the connection."""
    await client.send(data)
    await client.send_eof()
    return await pp.ProxiedStream.wrap(await server.accept(), config)


def config(**kwargs: Any) -> pp.ProxyProtocolConfig:
    return pp.ProxyProtocolConfig(**{"header_timeout": 2, **kwargs})


def assert_direct(stream: ByteStream, peer: object) -> None:
    """The stream reports its real peer, and no address from any header."""
    assert stream.extra(SocketAttribute.remote_address) == peer
    assert isinstance(peer, tuple)
    assert stream.extra(SocketAttribute.remote_port) == peer[1]
    assert stream.extra(pp.ProxyAttribute.source, None) is None
    assert stream.extra(pp.ProxyAttribute.destination, None) is None
    assert stream.extra(pp.ProxyAttribute.peer_address) == peer


@pytest.fixture(scope="module")
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts: a trustme CA, a certificate for 127.0.0.1."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


# =============================================================================== addresses


@pytest.mark.parametrize("header", [HEADER_V1, HEADER_V2], ids=["v1", "v2"])
async def test_wrap_reports_the_header_source_and_keeps_the_real_socket(header: pp.Header) -> None:
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            proxied = await wrap_after(server, client, header.to_bytes() + PAYLOAD)
            real_peer = client.extra(SocketAttribute.local_address)
            server_address = client.extra(SocketAttribute.remote_address)

            assert proxied.extra(SocketAttribute.remote_address) == CLIENT
            assert proxied.extra(SocketAttribute.remote_port) == CLIENT[1]
            # The local side, the family and the raw socket are the real ones.
            assert proxied.extra(SocketAttribute.local_address) == server_address
            assert proxied.extra(SocketAttribute.local_port) == server.port
            assert proxied.extra(SocketAttribute.family) == socket.AF_INET
            assert proxied.extra(SocketAttribute.raw_socket).getpeername() == real_peer

            assert proxied.extra(pp.ProxyAttribute.header) == header
            assert proxied.header == header
            assert proxied.extra(pp.ProxyAttribute.source) == CLIENT
            assert proxied.extra(pp.ProxyAttribute.destination) == DESTINATION
            assert proxied.extra(pp.ProxyAttribute.peer_address) == real_peer
            assert proxied.extra(pp.ProxyAttribute.policy) is REQUIRE
            assert proxied.transport_stream is not proxied
            assert proxied.transport_stream.extra(SocketAttribute.remote_address) == real_peer

            assert await receive_all(proxied) == PAYLOAD


async def test_an_ipv6_source_over_an_ipv4_connection() -> None:
    header = pp.Header.proxy(("2001:db8::7", 40000), ("2001:db8::1", 443), version=1)
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            proxied = await wrap_after(server, client, header.to_bytes())
            assert proxied.extra(SocketAttribute.remote_address) == ("2001:db8::7", 40000)
            assert proxied.extra(SocketAttribute.remote_port) == 40000
            assert proxied.extra(SocketAttribute.family) == socket.AF_INET


@needs_ipv6
async def test_an_ipv4_source_over_an_ipv6_connection() -> None:
    with anyio.fail_after(TIMEOUT):
        async with tcp_server("::1") as server, await server.connect() as client:
            proxied = await wrap_after(server, client, HEADER_V2.to_bytes() + PAYLOAD)
            real_peer = client.extra(SocketAttribute.local_address)
            assert real_peer[0] == "::1"
            assert proxied.extra(SocketAttribute.remote_address) == CLIENT
            assert proxied.extra(SocketAttribute.family) == socket.AF_INET6
            assert proxied.extra(SocketAttribute.local_address) == ("::1", server.port)
            assert proxied.extra(SocketAttribute.raw_socket).getpeername()[:2] == real_peer
            assert proxied.extra(pp.ProxyAttribute.peer_address) == real_peer
            assert await receive_all(proxied) == PAYLOAD


async def test_a_unix_header_over_tcp_gives_the_path_and_no_port() -> None:
    header = pp.Header.proxy("/run/client.sock", "/run/app.sock")
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            proxied = await wrap_after(server, client, header.to_bytes() + PAYLOAD)
            assert proxied.extra(SocketAttribute.remote_address) == "/run/client.sock"
            assert proxied.extra(SocketAttribute.remote_port, None) is None
            with pytest.raises(anyio.TypedAttributeLookupError):
                proxied.extra(SocketAttribute.remote_port)
            assert proxied.extra(pp.ProxyAttribute.source) == "/run/client.sock"
            assert proxied.extra(pp.ProxyAttribute.destination) == "/run/app.sock"
            assert proxied.extra(SocketAttribute.family) == socket.AF_INET
            assert proxied.extra(SocketAttribute.local_port) == server.port
            assert await receive_all(proxied) == PAYLOAD


@pytest.mark.parametrize(
    "header_bytes",
    [
        pytest.param(pp.Header.local().to_bytes(), id="v2 LOCAL"),
        pytest.param(pp.Header.local().to_bytes(crc32c=True), id="v2 LOCAL crc32c"),
        pytest.param(b"PROXY UNKNOWN\r\n", id="v1 UNKNOWN"),
        pytest.param(b"PROXY UNKNOWN 192.0.2.1 192.0.2.2 1 2\r\n", id="v1 UNKNOWN with addresses"),
        pytest.param(raw_v2(0x21, 0x00, b""), id="v2 PROXY UNSPEC"),
    ],
)
@pytest.mark.parametrize("policy", [REQUIRE, USE])
async def test_headers_without_addresses_change_nothing(
    header_bytes: bytes, policy: pp.Policy
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            proxied = await wrap_after(
                server, client, header_bytes + PAYLOAD, config(policy=policy)
            )
            assert_direct(proxied, client.extra(SocketAttribute.local_address))
            assert proxied.extra(pp.ProxyAttribute.header) == pp.parse(header_bytes)[0]
            assert await receive_all(proxied) == PAYLOAD


async def test_tlvs_are_under_the_header_attribute() -> None:
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            proxied = await wrap_after(server, client, HEADER_V2.to_bytes(crc32c=True))
            tlvs = proxied.extra(pp.ProxyAttribute.header).tlvs
            assert tlvs.authority == "example.com"
            assert tlvs.unique_id == b"\x01req-42"
            assert tlvs.crc32c is not None


# =============================================================================== bytes


@pytest.mark.parametrize("size", [0, 1, 1_000, 70_000, 4 * 2**20])
@pytest.mark.parametrize("header", [HEADER_V1, HEADER_V2], ids=["v1", "v2"])
async def test_bytes_after_the_header_arrive_intact(header: pp.Header, size: int) -> None:
    """The header and the start of the payload in one segment, the rest in random chunks."""
    send_rng, receive_rng = random.Random(f"send {size}"), random.Random(f"receive {size}")
    payload = send_rng.randbytes(size)
    header_bytes = header.to_bytes()
    wire = header_bytes + payload

    with anyio.fail_after(TIMEOUT):
        async with (
            tcp_server() as server,
            await server.connect() as client,
            anyio.create_task_group() as task_group,
        ):

            async def send_in_random_chunks() -> None:
                sent = len(header_bytes) + send_rng.randint(0, min(size, 3000))
                await client.send(wire[:sent])
                while sent < len(wire):
                    step = send_rng.choice((1, 17, 1500, 65536, 300_000))
                    await client.send(wire[sent : sent + step])
                    sent += step
                await client.send_eof()

            task_group.start_soon(send_in_random_chunks)
            proxied = await pp.ProxiedStream.wrap(await server.accept())
            assert proxied.extra(SocketAttribute.remote_address) == CLIENT
            digest, received = hashlib.sha256(), 0
            while True:
                max_bytes = receive_rng.choice((1, 5, 4096, 65536, 2**20))
                try:
                    chunk = await proxied.receive(max_bytes)
                except anyio.EndOfStream:
                    break
                assert 0 < len(chunk) <= max_bytes
                digest.update(chunk)
                received += len(chunk)
            assert received == size
            assert digest.hexdigest() == hashlib.sha256(payload).hexdigest()


async def test_many_concurrent_connections_each_get_their_own_header_and_bytes() -> None:
    """20 clients at once, headers split anywhere (inside the signature too), payloads random."""
    count = 20
    expected: dict[int, str] = {}
    seen: dict[int, str] = {}

    async def client_side(server: Server, index: int) -> None:
        rng = random.Random(index)
        header = pp.Header.proxy(
            ("192.0.2.1", 1000 + index), DESTINATION, version=1 + index % 2
        ).to_bytes()
        payload = rng.randbytes(rng.randint(0, 200_000))
        expected[1000 + index] = hashlib.sha256(payload).hexdigest()
        wire = header + payload
        # One cut inside the header, the others anywhere.
        cuts = sorted(
            {
                rng.randrange(1, len(header)),
                *rng.sample(range(1, len(wire)), k=min(8, len(wire) - 1)),
            }
        )
        async with await server.connect() as client:
            for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
                await client.send(wire[start:end])
            await client.send_eof()
            assert await receive_all(client) == b"done"

    async def server_side(raw: SocketStream) -> None:
        proxied = await pp.ProxiedStream.wrap(raw)
        source = proxied.extra(pp.ProxyAttribute.source)
        assert isinstance(source, tuple)
        seen[source[1]] = hashlib.sha256(await receive_all(proxied)).hexdigest()
        await proxied.send(b"done")
        await proxied.aclose()

    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, anyio.create_task_group() as task_group:
            for index in range(count):
                task_group.start_soon(client_side, server, index)
            async with anyio.create_task_group() as servers:
                for _ in range(count):
                    servers.start_soon(server_side, await server.accept())
    assert seen == expected


async def test_receive_honours_max_bytes_while_serving_leftovers() -> None:
    payload = bytes(range(256)) * 4
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            # Header and payload in one segment: the handshake reads them together.
            proxied = await wrap_after(server, client, HEADER_V2.to_bytes() + payload)
            chunks = []
            for max_bytes in (1, 7, 100):
                chunk = await proxied.receive(max_bytes)
                assert 0 < len(chunk) <= max_bytes
                chunks.append(chunk)
            rest = await receive_all(proxied, max_bytes=7)
            assert b"".join(chunks) + rest == payload


@pytest.mark.parametrize("max_bytes", [0, -1])
async def test_receive_refuses_a_non_positive_max_bytes_like_the_transport(max_bytes: int) -> None:
    """anyio streams raise ValueError for ``max_bytes < 1``; leftovers must not change that.

    Returning ``b""`` would read as EOF to many callers; a negative slice would serve the wrong
    bytes.
    """
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            proxied = await wrap_after(server, client, HEADER_V2.to_bytes() + PAYLOAD)
            with pytest.raises(ValueError, match="max_bytes"):
                await proxied.transport_stream.receive(max_bytes)
            with pytest.raises(ValueError, match="max_bytes"):
                await proxied.receive(max_bytes)
            assert await receive_all(proxied) == PAYLOAD


async def test_send_and_half_close_both_ways() -> None:
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            # The client sends its request and its EOF with the header...
            proxied = await wrap_after(server, client, HEADER_V1.to_bytes() + PAYLOAD)
            assert await receive_all(proxied) == PAYLOAD
            # ...and still receives the reply after its EOF.
            await proxied.send(b"HTTP/1.1 200 OK\r\n\r\n")
            await proxied.send(b"body")
            await proxied.send_eof()
            assert await receive_all(client) == b"HTTP/1.1 200 OK\r\n\r\nbody"


async def test_server_half_close_then_client_keeps_sending() -> None:
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            await client.send(HEADER_V2.to_bytes() + b"first ")
            proxied = await pp.ProxiedStream.wrap(await server.accept())
            await proxied.send(BANNER)
            await proxied.send_eof()
            assert await receive_all(client) == BANNER
            await client.send(b"second")
            await client.send_eof()
            assert await receive_all(proxied) == b"first second"


async def test_aclose_closes_the_connection_and_drops_leftovers() -> None:
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            await client.send(HEADER_V2.to_bytes() + PAYLOAD)
            proxied = await pp.ProxiedStream.wrap(await server.accept())
            await proxied.aclose()
            with pytest.raises(anyio.ClosedResourceError):
                await proxied.receive()
            with pytest.raises(anyio.ClosedResourceError):
                await proxied.send(b"x")
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await client.receive()


# =============================================================================== TLS on top


async def test_tls_over_a_proxied_stream_sees_the_proxied_client(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_context, client_context = tls_contexts
    seen: dict[str, object] = {}

    async def server_side(server: Server) -> None:
        proxied = await pp.ProxiedStream.wrap(await server.accept())
        tls = await TLSStream.wrap(proxied, server_side=True, ssl_context=server_context)
        seen["remote_address"] = tls.extra(SocketAttribute.remote_address)
        seen["remote_port"] = tls.extra(SocketAttribute.remote_port)
        seen["header"] = tls.extra(pp.ProxyAttribute.header)
        seen["server_side"] = tls.extra(TLSAttribute.server_side)
        seen["header_for"] = pp.header_for(tls)
        await tls.send((await tls.receive()).upper())
        with pytest.raises(anyio.EndOfStream):
            await tls.receive()
        await tls.aclose()

    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, anyio.create_task_group() as task_group:
            task_group.start_soon(server_side, server)
            client = await pp.connect_tcp(
                server.host, server.port, header=HEADER_V2, ssl_context=client_context
            )
            async with client:
                assert isinstance(client, TLSStream)
                await client.send(b"hello over tls")
                assert await client.receive() == b"HELLO OVER TLS"
    assert seen == {
        "remote_address": CLIENT,
        "remote_port": CLIENT[1],
        "header": HEADER_V2,
        "server_side": True,
        "header_for": pp.Header.proxy(CLIENT, DESTINATION),
    }


async def test_tls_listener_over_proxy_protocol_listener(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_context, client_context = tls_contexts
    seen: list[tuple[object, object]] = []

    async def handler(tls: TLSStream) -> None:
        async with tls:
            seen.append(
                (tls.extra(SocketAttribute.remote_address), tls.extra(TLSAttribute.alpn_protocol))
            )
            await tls.send(await tls.receive())
            with pytest.raises(anyio.EndOfStream):
                await tls.receive()

    with anyio.fail_after(TIMEOUT):
        tcp = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = tcp.extra(SocketAttribute.local_port)
        inner = pp.ProxyProtocolListener(tcp, config())
        listener = TLSListener(inner, server_context)
        async with listener, anyio.create_task_group() as task_group:
            task_group.start_soon(listener.serve, handler)
            for source in (CLIENT, ("192.0.2.99", 4444)):
                header = pp.Header.proxy(source, DESTINATION)
                async with await pp.connect_tcp(
                    "127.0.0.1", port, header=header, ssl_context=client_context
                ) as client:
                    await client.send(b"ping")
                    assert await client.receive() == b"ping"
            # TLS without the cleartext header first never reaches the handler.
            # (How the client's handshake fails depends on the backend and the timing.)
            with pytest.raises((anyio.BrokenResourceError, anyio.EndOfStream, ssl.SSLError)):
                await anyio.connect_tcp(
                    "127.0.0.1", port, ssl_context=client_context, tls_hostname="127.0.0.1"
                )
            task_group.cancel_scope.cancel()
    assert seen == [(CLIENT, None), (("192.0.2.99", 4444), None)]
    assert inner.statistics().accepted == 2


# =============================================================================== policies

PROXIED, STRIPPED, DIRECT = "proxied", "stripped", "direct"
Outcome = str | type[Exception]

#: What the client does: the bytes it sends, then whether it sends EOF (else it waits for the
#: server to speak first).
SCENARIOS: dict[str, tuple[bytes, bool]] = {
    "header": (HEADER_V2.to_bytes() + PAYLOAD, True),
    "no header": (PAYLOAD, True),
    "silence": (b"", False),
    "stalled signature": (b"PRO", False),
    "broken header": (b"PROXY TCP4 192.0.2.1 198.51.100.7 056324 443\r\n" + PAYLOAD, True),
    "broken v2 header": (raw_v2(0x31, 0x11, bytes(12)) + PAYLOAD, True),
    "stalled header": (HEADER_V2.to_bytes()[:14], False),
    "EOF inside the header": (HEADER_V2.to_bytes()[:20], True),
    "EOF": (b"", True),
}

POLICIES = (REQUIRE, USE, IGNORE, REJECT, SKIP)
INVALID, REFUSED, TIMED_OUT = pp.InvalidHeader, pp.HeaderRejected, TimeoutError
# The table at the top of _handshake/policy.py, with the wire cases spelled out: what ``wrap``
# raises, or what the stream it returns reports (PROXIED: the header's addresses; STRIPPED: the
# header is there but the real addresses are kept; DIRECT: no header, every byte the client sent
# served).
TABLE: dict[str, tuple[Outcome, Outcome, Outcome, Outcome, Outcome]] = {
    #                         REQUIRE     USE         IGNORE      REJECT      SKIP
    "header":                (PROXIED,   PROXIED,    STRIPPED,   REFUSED,    DIRECT),
    "no header":             (INVALID,   DIRECT,     DIRECT,     DIRECT,     DIRECT),
    "silence":               (TIMED_OUT, DIRECT,     DIRECT,     DIRECT,     DIRECT),
    "stalled signature":     (TIMED_OUT, DIRECT,     DIRECT,     DIRECT,     DIRECT),
    "broken header":         (INVALID,   INVALID,    INVALID,    INVALID,    DIRECT),
    "broken v2 header":      (INVALID,   INVALID,    INVALID,    INVALID,    DIRECT),
    "stalled header":        (TIMED_OUT, TIMED_OUT,  TIMED_OUT,  TIMED_OUT,  DIRECT),
    "EOF inside the header": (INVALID,   INVALID,    INVALID,    INVALID,    DIRECT),
    "EOF":                   (INVALID,   DIRECT,     DIRECT,     DIRECT,     DIRECT),
}  # fmt: skip


@pytest.mark.parametrize("scenario", list(TABLE))
@pytest.mark.parametrize("policy", POLICIES, ids=[p.name for p in POLICIES])
async def test_policy_outcome(policy: pp.Policy, scenario: str) -> None:
    sent, eof = SCENARIOS[scenario]
    expected = TABLE[scenario][POLICIES.index(policy)]
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            if sent:
                await client.send(sent)
            if eof:
                await client.send_eof()
            raw = await server.accept()
            peer = client.extra(SocketAttribute.local_address)
            settings = config(policy=policy, header_timeout=SHORT)
            if not isinstance(expected, str):
                with pytest.raises(expected):
                    await pp.ProxiedStream.wrap(raw, settings)
                return

            proxied = await pp.ProxiedStream.wrap(raw, settings)
            assert proxied.extra(pp.ProxyAttribute.policy) is policy
            assert proxied.extra(pp.ProxyAttribute.peer_address) == peer
            if expected == PROXIED:
                assert proxied.extra(SocketAttribute.remote_address) == CLIENT
                assert proxied.extra(pp.ProxyAttribute.header) == HEADER_V2
                served = PAYLOAD
            elif expected == STRIPPED:
                assert_direct(proxied, peer)
                assert proxied.extra(pp.ProxyAttribute.header) == HEADER_V2
                served = PAYLOAD
            else:
                assert_direct(proxied, peer)
                assert proxied.extra(pp.ProxyAttribute.header, None) is None
                assert proxied.header is None
                served = sent  # every byte, header-looking or not
            if not eof:
                # A server-speaks-first protocol: the server talks, then the client answers.
                await proxied.send(BANNER)
                assert await client.receive() == BANNER
                await client.send(REPLY)
                await client.send_eof()
                served += REPLY
            assert await receive_all(proxied) == served


@pytest.mark.parametrize(
    ("sent", "eof", "versions"),
    [
        pytest.param(PAYLOAD, False, {1, 2}, id="HTTP"),
        pytest.param(b"\x16\x03\x01\x00\xa5\x01\x00", False, {1, 2}, id="TLS ClientHello"),
        pytest.param(HEADER_V1.to_bytes(), False, {2}, id="v1 header, versions={2}"),
        pytest.param(b"PRO", True, {1, 2}, id="EOF inside the signature"),
        pytest.param(b"", True, {1, 2}, id="EOF"),
    ],
)
async def test_require_without_a_header_raises_invalid_header(
    sent: bytes, eof: bool, versions: set[int]
) -> None:
    """``wrap``'s docstring: "InvalidHeader: a broken header (or none, under REQUIRE)".

    ``HeaderRejected`` is "a valid header that a policy or a validator refused": no header came
    here. Whatever the client did instead of sending one, the same exception.
    """
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            if sent:
                await client.send(sent)
            if eof:
                await client.send_eof()
            with pytest.raises(pp.InvalidHeader):
                await pp.ProxiedStream.wrap(await server.accept(), config(versions=versions))


async def test_policy_callable_gets_the_real_peer() -> None:
    peers: list[object] = []

    def policy(peer: pp.PeerAddress) -> pp.Policy:
        peers.append(peer)
        return USE

    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            proxied = await wrap_after(server, client, HEADER_V2.to_bytes(), config(policy=policy))
            assert proxied.extra(SocketAttribute.remote_address) == CLIENT
            assert proxied.extra(pp.ProxyAttribute.policy) is USE
            assert peers == [client.extra(SocketAttribute.local_address)]


async def test_policy_callable_returning_a_non_policy_is_an_error() -> None:
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            settings = config(policy=lambda peer: "use")
            with pytest.raises(TypeError, match="must return a Policy"):
                await wrap_after(server, client, HEADER_V2.to_bytes(), settings)


# =============================================================================== trust

#: Policies under which 127.0.0.1 is not trusted to send a header.
UNTRUSTED_LOOPBACK = [
    *(pytest.param(policy, id=policy.name) for policy in (REJECT, IGNORE, SKIP)),
    *(
        pytest.param(
            pp.trusted_proxies(["10.0.0.0/8", "2001:db8::/32"], trusted=trusted, otherwise=other),
            id=f"trusted_proxies(trusted={trusted.name},otherwise={other.name})",
        )
        for trusted in (USE, REQUIRE)
        for other in (REJECT, IGNORE, SKIP)
    ),
]

FORGED = [
    pytest.param(HEADER_V1.to_bytes(), id="v1"),
    pytest.param(HEADER_V2.to_bytes(crc32c=True), id="v2 crc32c"),
    pytest.param(pp.Header.proxy("/run/evil.sock", "/run/app.sock").to_bytes(), id="v2 UNIX"),
]


@pytest.mark.parametrize("forged", FORGED)
@pytest.mark.parametrize("policy", UNTRUSTED_LOOPBACK)
async def test_a_forged_header_from_an_untrusted_peer_never_becomes_remote_address(
    policy: pp.Policy | pp.PolicyCallable, forged: bytes
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            peer = client.extra(SocketAttribute.local_address)
            effective = policy if isinstance(policy, pp.Policy) else policy(peer)
            assert effective in (REJECT, IGNORE, SKIP)
            if effective is REJECT:
                with pytest.raises(pp.HeaderRejected, match="REJECT"):
                    await wrap_after(server, client, forged + PAYLOAD, config(policy=policy))
                return
            proxied = await wrap_after(server, client, forged + PAYLOAD, config(policy=policy))
            assert_direct(proxied, peer)
            assert pp.header_for(proxied).source == peer  # a relay would not launder it either
            served = await receive_all(proxied)
            assert served == (PAYLOAD if effective is IGNORE else forged + PAYLOAD)


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param(pp.trusted_proxies(["127.0.0.1"]), id="exact IP, REQUIRE"),
        pytest.param(
            pp.trusted_proxies(["10.0.0.0/8", "127.0.0.0/8"], trusted=USE), id="CIDR, USE"
        ),
        pytest.param(pp.trusted_proxies(["::/0", "0.0.0.0/0"]), id="everything"),
        pytest.param(USE, id="USE"),
        # USE is no trust boundary: as ``otherwise`` it lets anyone claim any address.
        pytest.param(pp.trusted_proxies(["10.0.0.0/8"], otherwise=USE), id="otherwise=USE"),
    ],
)
async def test_a_header_from_a_trusted_peer_is_used(policy: pp.Policy | pp.PolicyCallable) -> None:
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            proxied = await wrap_after(
                server, client, HEADER_V2.to_bytes() + PAYLOAD, config(policy=policy)
            )
            assert proxied.extra(SocketAttribute.remote_address) == CLIENT
            assert await receive_all(proxied) == PAYLOAD


async def test_trusted_proxies_lets_direct_clients_through_with_their_real_address() -> None:
    policy = pp.trusted_proxies(["10.0.0.0/8"], trusted=REQUIRE, otherwise=REJECT)
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            proxied = await wrap_after(server, client, PAYLOAD, config(policy=policy))
            assert_direct(proxied, client.extra(SocketAttribute.local_address))
            assert proxied.extra(pp.ProxyAttribute.policy) is REJECT
            assert await receive_all(proxied) == PAYLOAD


@needs_ipv6
@pytest.mark.parametrize(
    ("cidrs", "trusted"),
    [(["127.0.0.0/8"], False), (["::ffff:0:0/96"], False), (["::1"], True), (["::/0"], True)],
)
async def test_trust_from_an_ipv6_peer(cidrs: list[str], trusted: bool) -> None:
    settings = config(policy=pp.trusted_proxies(cidrs))
    with anyio.fail_after(TIMEOUT):
        async with tcp_server("::1") as server, await server.connect() as client:
            if not trusted:
                with pytest.raises(pp.HeaderRejected):
                    await wrap_after(server, client, HEADER_V2.to_bytes(), settings)
                return
            proxied = await wrap_after(server, client, HEADER_V2.to_bytes(), settings)
            assert proxied.extra(SocketAttribute.remote_address) == CLIENT


async def test_listener_never_hands_a_forged_header_to_the_handler() -> None:
    seen: list[object] = []

    async def handler(stream: pp.ProxiedStream) -> None:
        async with stream:
            seen.append(stream.extra(SocketAttribute.remote_address))
            await stream.send(await stream.receive())

    policy = pp.trusted_proxies(["10.0.0.0/8"])  # loopback: REJECT
    with anyio.fail_after(TIMEOUT):
        tcp = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = tcp.extra(SocketAttribute.local_port)
        listener = pp.ProxyProtocolListener(tcp, config(policy=policy))
        async with listener, anyio.create_task_group() as task_group:
            task_group.start_soon(listener.serve, handler)
            async with await pp.connect_tcp("127.0.0.1", port, header=HEADER_V2) as forged:
                await forged.send(PAYLOAD)
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await forged.receive()
            async with await anyio.connect_tcp("127.0.0.1", port) as direct:
                await direct.send(PAYLOAD)
                assert await direct.receive() == PAYLOAD
                real = direct.extra(SocketAttribute.local_address)
            task_group.cancel_scope.cancel()
    assert seen == [real]
    statistics = listener.statistics()
    assert statistics.rejected == {"policy": 1}
    assert (statistics.accepted, statistics.direct) == (1, 1)


# =============================================================================== validator


def _recording_validator(
    verdict: str, calls: list[tuple[pp.Header, pp.PeerAddress]]
) -> pp.Validator:
    if verdict.startswith("async"):

        async def async_validator(header: pp.Header, peer: pp.PeerAddress) -> bool:
            calls.append((header, peer))
            await checkpoint()
            if verdict == "async raises":
                raise pp.HeaderRejected("tenant 42 is blocked")
            return verdict == "async True"

        return async_validator

    def sync_validator(header: pp.Header, peer: pp.PeerAddress) -> bool:
        calls.append((header, peer))
        if verdict == "raises":
            raise pp.HeaderRejected("tenant 42 is blocked")
        return verdict == "True"

    return sync_validator


@pytest.mark.parametrize(
    "verdict", ["True", "False", "raises", "async True", "async False", "async raises"]
)
async def test_validator(verdict: str) -> None:
    calls: list[tuple[pp.Header, pp.PeerAddress]] = []
    settings = config(validator=_recording_validator(verdict, calls))
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            wire = HEADER_V2.to_bytes() + PAYLOAD
            if verdict.endswith("True"):
                proxied = await wrap_after(server, client, wire, settings)
                assert proxied.extra(SocketAttribute.remote_address) == CLIENT
                assert await receive_all(proxied) == PAYLOAD
            elif verdict.endswith("raises"):
                with pytest.raises(pp.HeaderRejected, match="tenant 42 is blocked"):
                    await wrap_after(server, client, wire, settings)
            else:
                with pytest.raises(pp.HeaderRejected, match="validator"):
                    await wrap_after(server, client, wire, settings)
            assert calls == [(HEADER_V2, client.extra(SocketAttribute.local_address))]


@pytest.mark.parametrize(
    ("policy", "data"),
    [(IGNORE, HEADER_V2.to_bytes() + PAYLOAD), (USE, PAYLOAD), (SKIP, HEADER_V2.to_bytes())],
)
async def test_validator_is_not_asked_when_no_header_is_used(
    policy: pp.Policy, data: bytes
) -> None:
    calls: list[tuple[pp.Header, pp.PeerAddress]] = []
    settings = config(policy=policy, validator=_recording_validator("False", calls))
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            proxied = await wrap_after(server, client, data, settings)
            assert_direct(proxied, client.extra(SocketAttribute.local_address))
    assert calls == []


async def test_a_slow_validator_times_out() -> None:
    async def stuck(header: pp.Header, peer: pp.PeerAddress) -> bool:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            settings = config(validator=stuck, header_timeout=SHORT)
            with pytest.raises(TimeoutError, match="validator"):
                await wrap_after(server, client, HEADER_V2.to_bytes(), settings)


async def test_a_validator_that_fails_raises_its_own_error() -> None:
    def broken(header: pp.Header, peer: pp.PeerAddress) -> bool:
        raise RuntimeError("validator bug")

    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            with pytest.raises(RuntimeError, match="validator bug"):
                await wrap_after(server, client, HEADER_V2.to_bytes(), config(validator=broken))


# =============================================================================== config


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"header_timeout": 0}, ValueError, "header_timeout"),
        ({"header_timeout": -1.5}, ValueError, "header_timeout"),
        ({"header_timeout": float("inf")}, ValueError, "header_timeout"),
        ({"header_timeout": float("nan")}, ValueError, "header_timeout"),
        ({"header_timeout": True}, TypeError, "header_timeout"),
        ({"header_timeout": "5"}, TypeError, "header_timeout"),
        ({"header_timeout": None}, TypeError, "header_timeout"),
        ({"max_header_size": 15}, ValueError, "max_header_size"),
        ({"max_header_size": 65552}, ValueError, "max_header_size"),
        ({"max_header_size": 4096.0}, TypeError, "max_header_size"),
        ({"max_header_size": True}, TypeError, "max_header_size"),
        ({"max_pending_handshakes": 0}, ValueError, "max_pending_handshakes"),
        ({"max_pending_handshakes": -1}, ValueError, "max_pending_handshakes"),
        ({"eviction_age": -0.1}, ValueError, "eviction_age"),
        ({"eviction_age": float("inf")}, ValueError, "eviction_age"),
        ({"versions": set()}, ValueError, "versions"),
        ({"versions": {3}}, ValueError, "versions"),
        ({"versions": {1, 2, 3}}, ValueError, "versions"),
        ({"versions": 3}, ValueError, "versions"),
        ({"policy": "require"}, TypeError, "policy"),
        ({"policy": None}, TypeError, "policy"),
        ({"validator": True}, TypeError, "validator"),
        ({"validator": "check"}, TypeError, "validator"),
    ],
)
def test_config_refuses_bad_values(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        pp.ProxyProtocolConfig(**kwargs)


def test_config_defaults_and_conversions() -> None:
    default = pp.ProxyProtocolConfig()
    assert default.header_timeout == 5
    assert default.max_header_size == 4096
    assert default.max_pending_handshakes == 1024
    assert default.versions == frozenset({1, 2})
    assert default.policy is REQUIRE
    assert default.validator is None
    # An int is one version (at run time; the annotation says Iterable[int]).
    one_version: dict[str, Any] = {"versions": 2}
    assert pp.ProxyProtocolConfig(**one_version).versions == frozenset({2})
    assert pp.ProxyProtocolConfig(versions=[1]).versions == frozenset({1})
    edges = pp.ProxyProtocolConfig(max_header_size=16, header_timeout=1)
    assert edges.max_header_size == 16
    assert pp.ProxyProtocolConfig(max_header_size=pp.MAX_HEADER_SIZE).max_header_size == 65551
    with pytest.raises(TypeError):  # keywords only
        pp.ProxyProtocolConfig(5)  # type: ignore[call-arg]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        default.header_timeout = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("size", "accepted"), [(64, True), (65, False)], ids=["at the limit", "one over"]
)
async def test_max_header_size_is_honoured_for_v2(size: int, accepted: bool) -> None:
    header_bytes = HEADER_V2.to_bytes(pad_to=size)
    assert len(header_bytes) == size
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            settings = config(max_header_size=64, policy=USE)
            if accepted:
                proxied = await wrap_after(server, client, header_bytes + PAYLOAD, settings)
                assert proxied.extra(SocketAttribute.remote_address) == CLIENT
                assert await receive_all(proxied) == PAYLOAD
            else:
                with pytest.raises(pp.InvalidHeader, match="max_header_size"):
                    await wrap_after(server, client, header_bytes + PAYLOAD, settings)


async def test_max_header_size_is_honoured_for_v1() -> None:
    line = HEADER_V1.to_bytes()
    assert len(line) > 32
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            with pytest.raises(pp.InvalidHeader, match="32"):
                await wrap_after(server, client, line, config(max_header_size=32, policy=USE))


@pytest.mark.parametrize(
    ("versions", "sent", "used"),
    [
        ({2}, HEADER_V1, False),
        (2, HEADER_V1, False),
        ({1}, HEADER_V2, False),
        ({1}, HEADER_V1, True),
        ({2}, HEADER_V2, True),
    ],
)
async def test_versions_are_honoured(versions: Any, sent: pp.Header, used: bool) -> None:
    """A header of a version not accepted is no header at all: under USE, it is payload."""
    wire = sent.to_bytes() + PAYLOAD
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            settings = config(versions=versions, policy=USE)
            proxied = await wrap_after(server, client, wire, settings)
            if used:
                assert proxied.extra(SocketAttribute.remote_address) == CLIENT
                assert await receive_all(proxied) == PAYLOAD
            else:
                assert_direct(proxied, client.extra(SocketAttribute.local_address))
                assert await receive_all(proxied) == wire


# =============================================================================== client side


async def test_send_header() -> None:
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            await pp.send_header(client, HEADER_V2)
            await client.send(PAYLOAD)
            await client.send_eof()
            proxied = await pp.ProxiedStream.wrap(await server.accept())
            assert proxied.extra(pp.ProxyAttribute.header) == HEADER_V2
            assert await receive_all(proxied) == PAYLOAD


async def test_connect_tcp_with_crc32c() -> None:
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server:
            client = await pp.connect_tcp(server.host, server.port, header=HEADER_V2, crc32c=True)
            async with client:
                await client.send(PAYLOAD)
                await client.send_eof()
                proxied = await pp.ProxiedStream.wrap(await server.accept())
                header = proxied.extra(pp.ProxyAttribute.header)
                # The parser verified it (a wrong one is refused: the next test).
                assert header.tlvs.crc32c is not None
                assert header.tlvs.authority == "example.com"
                assert proxied.extra(SocketAttribute.remote_address) == CLIENT
                assert await receive_all(proxied) == PAYLOAD


async def test_a_wrong_crc32c_is_refused() -> None:
    wire = bytearray(HEADER_V2.to_bytes(crc32c=True))
    wire[16] ^= 1  # the source address changes; the checksum does not
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            with pytest.raises(pp.InvalidHeader, match="CRC32C"):
                await wrap_after(server, client, bytes(wire), config(policy=USE))


async def test_header_for_a_plain_stream_describes_the_real_connection() -> None:
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            raw = await server.accept()
            client_port = client.extra(SocketAttribute.local_port)
            real = ("127.0.0.1", client_port)
            local = ("127.0.0.1", server.port)
            assert pp.header_for(raw) == pp.Header.proxy(real, local)
            assert pp.header_for(raw, version=1).to_bytes() == (
                f"PROXY TCP4 127.0.0.1 127.0.0.1 {client_port} {server.port}\r\n".encode()
            )
            tlvs = pp.TLVs(authority="relay.example")
            assert pp.header_for(raw, tlvs=tlvs).tlvs.authority == "relay.example"


@needs_ipv6
async def test_header_for_a_plain_ipv6_stream() -> None:
    with anyio.fail_after(TIMEOUT):
        async with tcp_server("::1") as server, await server.connect() as client:
            raw = await server.accept()
            client_port = client.extra(SocketAttribute.local_port)
            header = pp.header_for(raw)
            assert header.family is pp.Family.INET6
            assert (header.source, header.destination) == (
                ("::1", client_port),
                ("::1", server.port),
            )
            assert pp.header_for(raw, version=1).to_bytes() == (
                f"PROXY TCP6 ::1 ::1 {client_port} {server.port}\r\n".encode()
            )


@pytest.mark.parametrize("received", [HEADER_V1, HEADER_V2], ids=["v1", "v2"])
async def test_header_for_a_proxied_stream_describes_the_original_client(
    received: pp.Header,
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            proxied = await wrap_after(server, client, received.to_bytes())
            assert pp.header_for(proxied) == pp.Header.proxy(CLIENT, DESTINATION)
            assert pp.header_for(proxied, version=1).to_bytes() == HEADER_V1.to_bytes()


@pytest.mark.parametrize(
    ("received", "expected_v2", "expected_v1"),
    [
        pytest.param(
            pp.Header.proxy("/run/client.sock", "/run/app.sock"),
            pp.Header.proxy("/run/client.sock", "/run/app.sock"),
            pp.Header.unknown(),
            id="UNIX",
        ),
    ],
)
async def test_header_for_a_unix_proxied_stream(
    received: pp.Header, expected_v2: pp.Header, expected_v1: pp.Header
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            proxied = await wrap_after(server, client, received.to_bytes())
            assert pp.header_for(proxied) == expected_v2
            assert pp.header_for(proxied, version=1) == expected_v1


async def test_header_for_a_local_proxied_stream_describes_the_real_connection() -> None:
    with anyio.fail_after(TIMEOUT):
        async with tcp_server() as server, await server.connect() as client:
            proxied = await wrap_after(server, client, pp.Header.local().to_bytes())
            real = client.extra(SocketAttribute.local_address)
            assert pp.header_for(proxied) == pp.Header.proxy(real, ("127.0.0.1", server.port))


async def test_a_relay_chain_keeps_the_original_client() -> None:
    """client → relay 1 → relay 2 → backend; each relay forwards ``header_for`` its stream."""

    async def relay(
        inbound: pp.ProxiedStream, upstream: Server, version: int
    ) -> tuple[ByteStream, pp.Header]:
        header = pp.header_for(inbound, version=version)
        outbound = await pp.connect_tcp(upstream.host, upstream.port, header=header)
        await outbound.send(await receive_all(inbound))
        await outbound.send_eof()
        return outbound, header

    with anyio.fail_after(TIMEOUT):
        async with (
            tcp_server() as relay_1,
            tcp_server() as relay_2,
            tcp_server() as backend,
            await relay_1.connect() as client,
        ):
            first = await wrap_after(relay_1, client, HEADER_V2.to_bytes() + PAYLOAD)
            hop_1, header_1 = await relay(first, relay_2, version=1)
            second = await pp.ProxiedStream.wrap(await relay_2.accept())
            hop_2, header_2 = await relay(second, backend, version=2)
            last = await pp.ProxiedStream.wrap(await backend.accept())
            async with hop_1, hop_2:
                assert header_1 == HEADER_V1
                assert header_2 == pp.Header.proxy(CLIENT, DESTINATION)
                assert last.extra(SocketAttribute.remote_address) == CLIENT
                assert last.extra(pp.ProxyAttribute.destination) == DESTINATION
                # The real peer of the backend is relay 2's outbound socket.
                assert last.extra(pp.ProxyAttribute.peer_address) == hop_2.extra(
                    SocketAttribute.local_address
                )
                assert await receive_all(last) == PAYLOAD


async def test_a_reset_right_after_the_header_never_hides_the_peer() -> None:
    # HAProxy's connect-only health checks send LOCAL and reset at once. anyio asks the socket
    # for its peer each time; a reset socket no longer knows it. The handshake reads it once:
    # either the connection is refused (as "empty" when the reset threw the header away before
    # it was read), or the handler finds remote_address intact.
    seen: list[object] = []
    inner = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = inner.extra(SocketAttribute.local_port)
    listener = pp.ProxyProtocolListener(inner, pp.ProxyProtocolConfig(header_timeout=2))

    async def handle(stream: pp.ProxiedStream) -> None:
        seen.append(stream.extra(SocketAttribute.remote_address))
        seen.append(stream.extra(pp.ProxyAttribute.peer_address))
        await stream.aclose()

    with anyio.fail_after(10):
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)
            for _ in range(20):
                client = socket.create_connection(("127.0.0.1", port))
                client.sendall(pp.Header.local().to_bytes())
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
            while (
                listener.statistics().in_flight
                or sum((listener.statistics().accepted, *listener.statistics().rejected.values()))
                < 20
            ):
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    stats = listener.statistics()
    gone = sum(stats.rejected.get(kind, 0) for kind in ("empty", "closed", "error"))
    assert stats.accepted + gone == 20, stats
    assert all(isinstance(address, tuple) for address in seen)
