"""proxyproto.hypercorn: real Hypercorn, real requests, on trio and on asyncio.

Each test binds a socket on 127.0.0.1 itself (so the port is known and connections queue before
the server runs), hands it to Hypercorn as ``fd://N``, and stops the server with its
``shutdown_trigger``, the whole test under a deadline. Headers are sent with our own testing kit,
the ``proxy_connection`` fixture of the pytest plugin (``proxyproto.testing.open_connection``):
whole or cut, in the request's segment (``coalesce``) or alone, raw bytes for broken ones, TLS
after them.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
import trustme
from anyio.abc import ByteStream, SocketAttribute

import proxyproto as pp
from haproxy_peer import HAProxy, find_haproxy, hostport
from interop import listen, require_haproxy
from require_peer import ci_is_set, require_curl

pytest.importorskip("hypercorn")

import proxyproto.hypercorn
from asgi_helpers import hypercorn_task, receive_ok, send_ok, serve_lifespan

pytestmark = pytest.mark.anyio

CLIENT = ("203.0.113.7", 51234)
SERVER = ("198.51.100.10", 443)
V1 = b"PROXY TCP4 203.0.113.7 198.51.100.10 51234 443\r\n"
HEADER = pp.Header.proxy(CLIENT, SERVER)
V2 = HEADER.to_bytes()
REQUEST = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers every request with a JSON object: the client, the HTTP version and the scheme."""
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    assert scope["type"] == "http"
    body = json.dumps(
        {
            "client": list(scope["client"]),
            "http_version": scope["http_version"],
            "scheme": scope["scheme"],
        }
    ).encode()
    await send_ok(send, body)


def running(
    proxy: pp.ProxyProtocolConfig | None = None,
    *,
    certs: tuple[Path, Path] | None = None,
    stop: anyio.Event | None = None,
    host: str = "127.0.0.1",
) -> AbstractAsyncContextManager[int]:
    """Hypercorn serving :func:`app` on ``host`` with the PROXY protocol: yields the port."""
    return hypercorn_task(app, proxy, certs=certs, stop=stop, host=host)


async def closed_without_response(stream: ByteStream) -> bool:
    try:
        with anyio.fail_after(5):
            data = await stream.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        return True
    raise AssertionError(f"got {data!r}")


@pytest.mark.parametrize("header", [V1, V2], ids=["v1", "v2"])
async def test_header_and_request_in_one_segment(header: bytes, proxy_connection: Any) -> None:
    async with running() as port:
        stream = await proxy_connection("127.0.0.1", port, header, REQUEST, coalesce=True)
        answer = await receive_ok(stream, bytearray())
    assert answer == {"client": list(CLIENT), "http_version": "1.1", "scheme": "http"}


async def test_every_request_on_a_keep_alive_connection_carries_the_client(
    proxy_connection: Any,
) -> None:
    async with running() as port:
        stream = await proxy_connection("127.0.0.1", port, HEADER)
        buffer = bytearray()
        for _ in range(3):
            await stream.send(REQUEST)
            assert (await receive_ok(stream, buffer))["client"] == list(CLIENT)
        await stream.send(REQUEST * 2)  # pipelined
        for _ in range(2):
            assert (await receive_ok(stream, buffer))["client"] == list(CLIENT)


async def test_a_headerless_request_is_refused_under_require(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running() as port, await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(REQUEST)
        assert await closed_without_response(stream)
    assert "no PROXY header" in caplog.text


async def test_use_serves_direct_connections_with_their_real_address() -> None:
    proxy = pp.ProxyProtocolConfig(policy=pp.Policy.USE)
    async with running(proxy) as port, await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(REQUEST)
        answer = await receive_ok(stream, bytearray())
        assert answer["client"] == list(stream.extra(SocketAttribute.local_address))


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
@pytest.mark.parametrize("local", [False, True], ids=["no-header", "LOCAL"])
async def test_a_direct_client_is_its_real_address_on_both_families(
    host: str, local: bool, proxy_connection: Any
) -> None:
    proxy = pp.ProxyProtocolConfig(policy=pp.Policy.USE)
    header = pp.Header.local() if local else b""
    async with running(proxy, host=host) as port:
        stream = await proxy_connection(host, port, header, REQUEST, coalesce=True)
        answer = await receive_ok(stream, bytearray())
        assert answer["client"] == list(stream.extra(SocketAttribute.local_address))


class LinkLocalSocket:
    """What a socket accepted from a link-local IPv6 peer answers (loopback has no scope id,
    and tests reach no other address)."""

    family = socket.AF_INET6

    def getpeername(self) -> tuple[str, int, int, int]:
        return ("fe80::1", 51234, 0, 2)


def test_hypercorn_keeps_the_scope_id_of_a_direct_link_local_client() -> None:
    # Hypercorn keeps two fields of an AF_INET6 address; both workers hand it a PeerSocket
    # (the trio worker over proxyproto.trio's socket), whose host keeps the scope id, as
    # scope["client"] is on every other surface.
    from hypercorn.utils import parse_socket_addr

    import proxyproto.trio as pp_trio
    from proxyproto._servers.peer_socket import PeerSocket

    for sock in (LinkLocalSocket(), pp_trio.ProxiedSocket(LinkLocalSocket(), None)):  # type: ignore[arg-type]
        facade = PeerSocket(sock)
        assert parse_socket_addr(facade.family, facade.getpeername()) == ("fe80::1%2", 51234)
    proxied = PeerSocket(LinkLocalSocket(), ("2001:db8::7", 443))
    assert parse_socket_addr(proxied.family, proxied.getpeername()) == ("2001:db8::7", 443)


async def test_an_untrusted_peer_is_refused(proxy_connection: Any) -> None:
    proxy = pp.ProxyProtocolConfig(policy=pp.trusted_proxies(["10.0.0.0/8"]))
    async with running(proxy) as port:
        stream = await proxy_connection("127.0.0.1", port, HEADER, REQUEST, coalesce=True)
        assert await closed_without_response(stream)


async def test_a_header_in_pieces_then_the_request(proxy_connection: Any) -> None:
    async with running() as port:
        # Separate segments, 10 ms apart: the handshake reads several times.
        stream = await proxy_connection(
            "127.0.0.1", port, HEADER, REQUEST, split_at=[5, 17], pause=0.01
        )
        assert (await receive_ok(stream, bytearray()))["client"] == list(CLIENT)


async def test_a_request_then_eof_is_answered(proxy_connection: Any) -> None:
    request = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    async with running() as port:
        stream = await proxy_connection("127.0.0.1", port, HEADER, request, coalesce=True)
        await stream.send_eof()  # half-close: the answer still comes
        assert (await receive_ok(stream, bytearray()))["client"] == list(CLIENT)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_the_validator_decides(
    asynchronous: bool, caplog: pytest.LogCaptureFixture, proxy_connection: Any
) -> None:
    def verdict(header: pp.Header, peer: pp.PeerAddress) -> bool:
        return header.source == CLIENT

    async def async_verdict(header: pp.Header, peer: pp.PeerAddress) -> bool:
        await anyio.sleep(0.01)
        return verdict(header, peer)

    proxy = pp.ProxyProtocolConfig(validator=async_verdict if asynchronous else verdict)
    async with running(proxy) as port:
        stream = await proxy_connection("127.0.0.1", port, HEADER, REQUEST, coalesce=True)
        assert (await receive_ok(stream, bytearray()))["client"] == list(CLIENT)
        other = pp.Header.proxy(("192.0.2.99", 1), SERVER)
        stream = await proxy_connection("127.0.0.1", port, other, REQUEST, coalesce=True)
        assert await closed_without_response(stream)
    assert "the validator refused the header" in caplog.text


async def test_a_broken_header_and_a_silent_client_are_refused(
    caplog: pytest.LogCaptureFixture, proxy_connection: Any
) -> None:
    caplog.set_level(logging.INFO, "proxyproto")
    proxy = pp.ProxyProtocolConfig(header_timeout=0.2)
    broken = b"PROXY TCP4 203.0.113.7 nonsense\r\n"  # raw bytes: the kit sends them as they are
    async with running(proxy) as port:
        stream = await proxy_connection("127.0.0.1", port, broken, REQUEST, coalesce=True)
        assert await closed_without_response(stream)
        stream = await proxy_connection(
            "127.0.0.1", port, V2[:20]
        )  # part of a header, then nothing
        assert await closed_without_response(stream)
    assert "refused connection from 127.0.0.1" in caplog.text
    assert "no complete PROXY header within 0.2s" in caplog.text


async def test_shutdown_closes_a_pending_handshake(proxy_connection: Any) -> None:
    """A connection still sending its header holds up neither the shutdown nor the others."""
    async with anyio.create_task_group():
        with anyio.fail_after(10):
            async with running(pp.ProxyProtocolConfig(header_timeout=60)) as port:
                silent = await proxy_connection("127.0.0.1", port, V2[:10])
                stream = await proxy_connection("127.0.0.1", port, HEADER, REQUEST, coalesce=True)
                assert (await receive_ok(stream, bytearray()))["client"] == list(CLIENT)
            # The server has stopped (well before the 60 s header timeout): the connection is
            # closed.
            assert await closed_without_response(silent)


async def test_a_handshake_under_way_at_shutdown(anyio_backend: str, proxy_connection: Any) -> None:
    """On asyncio, a connection accepted before the shutdown and still sending its header gets
    ``graceful_timeout`` to finish, as any connection being served does (Hypercorn's own server
    would have served it). On trio, closing the listener ends it, like a connection still in
    the kernel's backlog."""
    stop = anyio.Event()
    with anyio.fail_after(10):
        async with running(stop=stop) as port:
            # The header's first 10 bytes now, the rest once the shutdown is under way: the kit
            # sends the first part; the rest is written below, after the stop.
            stream = await proxy_connection("127.0.0.1", port, V2[:10])
            await anyio.sleep(0.05)  # accepted, and its handshake under way
            stop.set()
            while True:  # until the server has stopped listening: the shutdown is under way
                try:
                    probe = await anyio.connect_tcp("127.0.0.1", port)
                except OSError:
                    break
                await probe.aclose()
                await anyio.sleep(0.01)
            await stream.send(V2[10:] + b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            if anyio_backend == "asyncio":
                assert (await receive_ok(stream, bytearray()))["client"] == list(CLIENT)
            else:
                assert await closed_without_response(stream)


async def test_tls_after_the_header(
    ca: trustme.CA, server_certs: tuple[Path, Path], proxy_connection: Any
) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.set_alpn_protocols(["http/1.1"])
    async with running(certs=server_certs) as port:
        stream = await proxy_connection("127.0.0.1", port, HEADER, **tls(context))
        buffer = bytearray()
        for _ in range(2):
            await stream.send(REQUEST)
            answer = await receive_ok(stream, buffer)
            assert answer == {"client": list(CLIENT), "http_version": "1.1", "scheme": "https"}


def tls(context: ssl.SSLContext) -> dict[str, Any]:
    """The TLS options of ``proxy_connection`` for Hypercorn's certificate."""
    return {"ssl_context": context, "tls_hostname": "localhost", "tls_standard_compatible": False}


async def h2_get_twice(stream: ByteStream) -> list[dict[str, Any]]:
    """Two GET requests on two HTTP/2 streams of one connection: their JSON bodies."""
    import h2.config
    import h2.connection
    import h2.events

    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    headers = [(":method", "GET"), (":path", "/"), (":scheme", "https"), (":authority", "t")]
    for stream_id in (1, 3):
        connection.send_headers(stream_id, headers, end_stream=True)
    await stream.send(connection.data_to_send())
    bodies: dict[int, bytes] = {1: b"", 3: b""}
    ended: set[int] = set()
    while ended != {1, 3}:
        for event in connection.receive_data(await stream.receive()):
            if isinstance(event, h2.events.DataReceived):
                assert event.stream_id is not None
                bodies[event.stream_id] += event.data
                connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                assert event.stream_id is not None
                ended.add(event.stream_id)
        await stream.send(connection.data_to_send())
    return [json.loads(body) for body in bodies.values()]


async def test_http2_over_tls(
    ca: trustme.CA, server_certs: tuple[Path, Path], proxy_connection: Any
) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.set_alpn_protocols(["h2"])
    async with running(certs=server_certs) as port:
        stream = await proxy_connection("127.0.0.1", port, HEADER, **tls(context))
        answers = await h2_get_twice(stream)
    expected = {"client": list(CLIENT), "http_version": "2", "scheme": "https"}
    assert answers == [expected, expected]


async def test_http2_prior_knowledge_in_cleartext(proxy_connection: Any) -> None:
    async with running() as port:
        stream = await proxy_connection("127.0.0.1", port, HEADER)
        answers = await h2_get_twice(stream)
    expected = {"client": list(CLIENT), "http_version": "2", "scheme": "http"}
    assert answers == [expected, expected]


async def test_tls_client_hello_in_the_header_segment(
    ca: trustme.CA, server_certs: tuple[Path, Path], proxy_connection: Any
) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with running(certs=server_certs) as port:
        # coalesce: the header and the ClientHello in one write.
        stream = await proxy_connection("127.0.0.1", port, V1, coalesce=True, **tls(context))
        await stream.send(REQUEST)
        answer = await receive_ok(stream, bytearray())
    assert answer == {"client": list(CLIENT), "http_version": "1.1", "scheme": "https"}


async def test_curl_haproxy_protocol() -> None:
    curl = require_curl()
    async with running() as port:
        # curl sends a v1 header with its own address: a response at all shows the header was
        # read (REQUIRE refuses a connection without one).
        result = await anyio.run_process(
            [curl, "--silent", "--show-error", "--haproxy-protocol", f"http://127.0.0.1:{port}/"]
        )
    assert json.loads(result.stdout)["client"][0] == "127.0.0.1"


@pytest.mark.haproxy
async def test_behind_haproxy_send_proxy_v2() -> None:
    haproxy = require_haproxy(find_haproxy(), ci=ci_is_set())
    async with running() as port:
        front = socket.socket()
        front.bind(("127.0.0.1", 0))
        front_port = front.getsockname()[1]
        front.close()
        config = listen(
            hostport("127.0.0.1", front_port), f"{hostport('127.0.0.1', port)} send-proxy-v2"
        )
        with HAProxy(config, binary=haproxy):
            async with await anyio.connect_tcp("127.0.0.1", front_port) as stream:
                me = stream.extra(SocketAttribute.local_address)
                await stream.send(REQUEST)
                answer = await receive_ok(stream, bytearray())
    # The client's own address and port, though Hypercorn's peer is HAProxy.
    assert answer["client"] == list(me)


@pytest.mark.parametrize(
    "options",
    [{}, {"crc32c": True, "split_at": [5, 16], "pause": 0.01}, {"byte_at_a_time": True}],
    ids=["whole", "crc32c-split", "byte-at-a-time"],
)
async def test_behind_the_fake_balancer(fake_balancer: Any, options: dict[str, Any]) -> None:
    # HAProxy's send-proxy-v2 (above) without HAProxy: the kit's balancer describes the client
    # that connected to it, so each answer names this socket, not the balancer's connection.
    async with running() as port:
        balancer = await fake_balancer(("127.0.0.1", port), **options)
        async with await anyio.connect_tcp(*balancer.address) as stream:
            me = stream.extra(SocketAttribute.local_address)
            buffer = bytearray()
            for _ in range(2):  # one header for the connection's every request
                await stream.send(REQUEST)
                assert (await receive_ok(stream, buffer))["client"] == list(me)
    assert balancer.connections == 1
    header, _ = pp.parse(balancer.sent[0])
    assert header.source == tuple(me)
    assert (header.tlvs.crc32c is not None) is bool(options.get("crc32c"))


async def test_x_forwarded_for_leaves_the_client_alone(proxy_connection: Any) -> None:
    # No ProxyFixMiddleware (docs/hypercorn.rst says to leave it out): the end user's forwarded
    # headers name neither the client nor the scheme.
    spoof = REQUEST.replace(
        b"\r\n\r\n", b"\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\r\n"
    )
    assert spoof != REQUEST
    async with running() as port:
        stream = await proxy_connection("127.0.0.1", port, V1, spoof, coalesce=True)
        answer = await receive_ok(stream, bytearray())
    assert (answer["client"], answer["scheme"]) == (list(CLIENT), "http")


async def test_a_peer_that_leaves_without_a_byte_is_counted_and_logged_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A health check that connects and leaves: rejected["empty"], one DEBUG line naming it; on
    # asyncio through the asyncio worker's protocol handshake, on trio through proxyproto.trio.
    caplog.set_level(logging.DEBUG, "proxyproto")
    before = proxyproto.hypercorn.statistics().rejected.get("empty", 0)
    async with running() as port:
        stream = await anyio.connect_tcp("127.0.0.1", port)
        local_port = stream.extra(SocketAttribute.local_port)
        await stream.aclose()
        with anyio.fail_after(10):
            while proxyproto.hypercorn.statistics().rejected.get("empty", 0) == before:
                await anyio.sleep(0.01)
    assert proxyproto.hypercorn.statistics().rejected["empty"] == before + 1
    [record] = [r for r in caplog.records if f"127.0.0.1:{local_port}" in r.getMessage()]
    assert record.levelno == logging.DEBUG
    assert "before sending a byte" in record.getMessage()


SERVE_ON_TRIO = """
import socket
import sys

import trio
from hypercorn.config import Config

import {module}


async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({{"type": "http.response.start", "status": 204, "headers": []}})
        await send({{"type": "http.response.body", "body": b""}})
        return
    while (await receive())["type"] != "lifespan.shutdown":
        await send({{"type": "lifespan.startup.complete"}})
    await send({{"type": "lifespan.shutdown.complete"}})


sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen()
print(sock.getsockname()[1], flush=True)
config = Config()
config.bind = [f"fd://{{sock.detach()}}"]
config.graceful_timeout = 1
config.accesslog = None
trio.run({module}.serve, app, config)
"""


@pytest.mark.parametrize("module", ["proxyproto.hypercorn", "hypercorn.trio"])
def test_trio_serve_exits_quietly_on_ctrl_c(module: str) -> None:
    """SIGINT (Ctrl-C) to a process running ``trio.run(serve, app, config)``: exit 0, no
    traceback, as with ``hypercorn.trio.serve`` (checked too)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    process = subprocess.Popen(
        [sys.executable, "-c", SERVE_ON_TRIO.format(module=module)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        int(process.stdout.readline())  # bound
        first = process.stderr.readline()
        assert b"Running on" in first, first
        # Idle, waiting for connections (a Ctrl-C while it starts, or in the middle of a request,
        # is another story, for Hypercorn's own serve too: trio raises it wherever it lands).
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert b"Traceback" not in stderr, stderr.decode()
    assert process.returncode == 0, stderr.decode()


async def test_each_cleartext_bind_is_its_own_listener_in_the_counters() -> None:
    """Two cleartext binds: each has its own counters, named by its address (the metrics'
    ``listener`` label), on both workers."""
    from hypercorn.config import Config

    from proxyproto._handshake.engine import registered

    socks = [socket.socket() for _ in range(2)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
    names = [f"127.0.0.1:{sock.getsockname()[1]}" for sock in socks]
    config = Config()
    config.bind = [f"fd://{sock.detach()}" for sock in socks]
    config.graceful_timeout = 1
    config.accesslog = None

    def counted(name: str) -> int:
        return sum(c.accepted for c in registered().get("hypercorn", ()) if c.name == name)

    before = [counted(name) for name in names]
    stop = anyio.Event()
    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: proxyproto.hypercorn.serve(
                    cast(Any, app), config, shutdown_trigger=stop.wait
                )
            )
            try:
                port = int(names[1].rsplit(":", 1)[1])
                async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                    await stream.send(V2 + REQUEST)
                    assert (await receive_ok(stream, bytearray()))["client"] == list(CLIENT)
            finally:
                stop.set()
    assert [counted(name) for name in names] == [before[0], before[1] + 1]
