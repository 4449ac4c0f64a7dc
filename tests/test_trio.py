"""proxyproto.trio: the native trio stream and listener, on memory streams and on loopback TCP."""

from __future__ import annotations

import ast
import errno
import logging
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
import trustme

import proxyproto as pp
from proxyproto._adapters import accept
from proxyproto.trio import ProxiedSocket, ProxiedStream, ProxyProtocolListener

pytestmark = pytest.mark.anyio

CLIENT = ("203.0.113.7", 51234)
DESTINATION = ("198.51.100.10", 443)
HEADER = pp.Header.proxy(CLIENT, DESTINATION)
TIME_LIMIT = 10


@pytest.fixture
def anyio_backend() -> str:
    """This module is trio-native: its tests run on trio only."""
    return "trio"


# --- the stream ----------------------------------------------------------------------------------


async def _proxied_pair(
    make_pair: Callable[[], tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]],
) -> tuple[ProxiedStream, ProxiedStream]:
    """Two ProxiedStreams talking to each other, each having read a header from the other."""
    left, right = make_pair()
    wrapped: dict[str, ProxiedStream] = {}

    async def side(name: str, stream: trio.abc.HalfCloseableStream) -> None:
        wrapped[name] = await ProxiedStream.wrap(stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(left.send_all, HEADER.to_bytes())
        nursery.start_soon(right.send_all, HEADER.to_bytes())
        nursery.start_soon(side, "left", left)
        nursery.start_soon(side, "right", right)
    return wrapped["left"], wrapped["right"]


async def _proxied_socket_pair() -> tuple[ProxiedStream, ProxiedStream]:
    left, right = trio.socket.socketpair()
    return await _proxied_pair(lambda: (trio.SocketStream(left), trio.SocketStream(right)))


async def _fill(stream: ProxiedStream) -> None:
    """Send until the socket's buffers are full (as trio's own socket stream tests do)."""

    async def sender() -> None:
        while True:
            await stream.send_all(b"x" * 10000)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()


async def _clogged_proxied_socket_pair() -> tuple[ProxiedStream, ProxiedStream]:
    left, right = await _proxied_socket_pair()
    await _fill(left)
    await _fill(right)
    return left, right


async def test_trio_stream_checks() -> None:
    with trio.fail_after(TIME_LIMIT):
        await trio.testing.check_two_way_stream(
            lambda: _proxied_pair(trio.testing.memory_stream_pair),
            lambda: _proxied_pair(trio.testing.lockstep_stream_pair),
        )
        await trio.testing.check_half_closeable_stream(
            lambda: _proxied_pair(trio.testing.memory_stream_pair), None
        )
        await trio.testing.check_half_closeable_stream(
            _proxied_socket_pair, _clogged_proxied_socket_pair
        )


async def test_bytes_after_the_header_come_first_and_whole() -> None:
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(HEADER.to_bytes() + b"hello, ")
    with trio.fail_after(TIME_LIMIT):
        stream = await ProxiedStream.wrap(right)
        await left.send_all(b"world")
        assert stream.header == HEADER
        assert await stream.receive_some(3) == b"hel"
        assert await stream.receive_some() == b"lo, "
        assert await stream.receive_some() == b"world"
        with pytest.raises(ValueError, match="max_bytes"):
            await stream.receive_some(0)
        await left.send_eof()
        assert await stream.receive_some() == b""
        await stream.send_all(b"reply")
        assert await left.receive_some() == b"reply"
        await stream.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_some()


async def test_a_stream_over_a_memory_stream_has_no_socket() -> None:
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(HEADER.to_bytes())
    stream = await ProxiedStream.wrap(right)
    assert not hasattr(stream, "socket")
    assert stream.peer_address is None
    assert stream.policy is pp.Policy.REQUIRE


async def test_wrap_refuses_like_the_anyio_adapter() -> None:
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(pp.InvalidHeader):
        await ProxiedStream.wrap(right)

    left, right = trio.testing.memory_stream_pair()
    await left.send_all(HEADER.to_bytes()[:10])
    with pytest.raises(TimeoutError):
        await ProxiedStream.wrap(right, pp.ProxyProtocolConfig(header_timeout=0.05))

    left, right = trio.testing.memory_stream_pair()
    await left.send_all(HEADER.to_bytes())
    config = pp.ProxyProtocolConfig(validator=lambda header, peer: False)
    with pytest.raises(pp.HeaderRejected):
        await ProxiedStream.wrap(right, config)


async def test_use_passes_a_headerless_stream_through() -> None:
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(b"GET / HTTP/1.1\r\n")
    stream = await ProxiedStream.wrap(right, pp.ProxyProtocolConfig(policy=pp.Policy.USE))
    assert stream.header is None
    assert stream.policy is pp.Policy.USE
    assert await stream.receive_some() == b"GET / HTTP/1.1\r\n"


async def test_send_eof_needs_a_half_closeable_transport() -> None:
    send, receive = trio.testing.memory_stream_one_way_pair()
    stream = ProxiedStream(trio.StapledStream(send, receive))
    await stream.send_eof()  # a StapledStream can
    assert await receive.receive_some() == b""
    plain = ProxiedStream(_NoHalfClose(trio.StapledStream(send, receive)))
    with pytest.raises(NotImplementedError):
        await plain.send_eof()


class _NoHalfClose(trio.abc.Stream):
    """A stream that cannot half-close."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


# --- over TCP ------------------------------------------------------------------------------------


async def _read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


async def _read_line(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some()
        if not chunk:
            break
        data += chunk
    return data


async def _report(stream: ProxiedStream) -> None:
    """The application: one line in, the addresses it sees and the line out."""
    line = await _read_line(stream)
    sock = stream.socket
    await stream.send_all(repr((sock.getpeername(), sock.getsockname()[0], line)).encode())


async def _serve(
    nursery: trio.Nursery,
    handler: Callable[[Any], Awaitable[object]],
    config: pp.ProxyProtocolConfig | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[ProxyProtocolListener, int]:
    (inner,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = ProxyProtocolListener(inner, config)
    serving: trio.abc.Listener[Any] = listener
    if ssl_context is not None:
        serving = trio.SSLListener(listener, ssl_context)
    await nursery.start(trio.serve_listeners, handler, [serving])
    return listener, inner.socket.getsockname()[1]


async def _ask(port: int, data: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        return await _read_all(stream)


async def test_serve_listeners_serves_others_while_a_client_stays_silent() -> None:
    with trio.fail_after(TIME_LIMIT):
        async with trio.open_nursery() as nursery:
            listener, port = await _serve(nursery, _report)
            silent = await trio.open_tcp_stream("127.0.0.1", port)
            partial = await trio.open_tcp_stream("127.0.0.1", port)
            await partial.send_all(HEADER.to_bytes()[:7])
            with trio.fail_after(2):  # far less than header_timeout (5s)
                for n in range(5):
                    answer = await _ask(port, HEADER.to_bytes() + f"hello {n}\n".encode())
                    assert answer == repr((CLIENT, "127.0.0.1", f"hello {n}\n".encode())).encode()
            stats = listener.statistics()
            assert stats.accepted == 5
            assert stats.in_flight == 2
            await silent.aclose()
            await partial.aclose()
            nursery.cancel_scope.cancel()


async def test_accept_directly_and_aclose() -> None:
    with trio.fail_after(TIME_LIMIT):
        (inner,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = inner.socket.getsockname()[1]
        listener = ProxyProtocolListener(inner)
        client = await trio.open_tcp_stream("127.0.0.1", port)
        await client.send_all(HEADER.to_bytes() + b"early")
        stream = await listener.accept()
        assert stream.header == HEADER
        assert await stream.receive_some() == b"early"
        assert stream.socket.getpeername() == CLIENT
        assert stream.peer_address == client.socket.getsockname()
        await stream.aclose()
        await client.aclose()

        async def accept_then_fail() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await listener.accept()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept_then_fail)
            await trio.testing.wait_all_tasks_blocked()
            await listener.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await listener.accept()


class _FailingOnce(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose first accept() fails (with ``error``), then serves ``streams``."""

    def __init__(self, streams: list[trio.abc.Stream], error: OSError) -> None:
        self.streams = streams
        self.error = error
        self.failed = False

    async def accept(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        if not self.failed:
            self.failed = True
            raise self.error
        if not self.streams:
            await trio.sleep_forever()
        return self.streams.pop(0)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_an_inner_accept_error_reaches_the_caller_then_accepting_goes_on() -> None:
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(HEADER.to_bytes() + b"after")
    with trio.fail_after(TIME_LIMIT):
        failing = _FailingOnce([server], OSError(errno.EIO, "Input/output error"))
        async with ProxyProtocolListener(failing) as listener:
            with pytest.raises(OSError, match="Input/output error"):
                await listener.accept()
            stream = await listener.accept()
            assert stream.header == HEADER
            assert await stream.receive_some() == b"after"


async def test_running_out_of_descriptors_is_waited_out(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EMFILE from the inner listener is retried, as trio.serve_listeners would, and logged."""
    monkeypatch.setattr(accept, "exhaustion", accept.Exhaustion())  # a fresh rate limit
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(HEADER.to_bytes() + b"after")
    caplog.set_level(logging.INFO, logger="proxyproto")
    with trio.fail_after(TIME_LIMIT):
        failing = _FailingOnce([server], OSError(errno.EMFILE, "Too many open files"))
        async with ProxyProtocolListener(failing) as listener:
            stream = await listener.accept()
            assert stream.header == HEADER
            assert await stream.receive_some() == b"after"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "EMFILE" in warnings[0].getMessage()
    assert any("works again" in r.getMessage() for r in caplog.records)


async def test_connections_are_taken_only_by_accept() -> None:
    """Nobody accepting: connections wait in the kernel's backlog, none is taken ahead of
    accept(), and all are served once accept() is called again."""
    with trio.fail_after(TIME_LIMIT):
        (inner,) = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=64)
        port = inner.socket.getsockname()[1]
        async with ProxyProtocolListener(inner) as listener:
            clients = []
            for n in range(30):
                client = await trio.open_tcp_stream("127.0.0.1", port)
                await client.send_all(HEADER.to_bytes() + f"{n}".encode())
                clients.append(client)
            first = await listener.accept()
            await trio.testing.wait_all_tasks_blocked()
            assert listener.statistics().accepted == 1  # nothing handshaken ahead of accept()
            streams = [first] + [await listener.accept() for _ in range(29)]
            assert listener.statistics().accepted == 30
            seen = sorted([int(await stream.receive_some()) for stream in streams])
            assert seen == list(range(30))
            for resource in (*streams, *clients):
                await resource.aclose()


async def test_a_header_in_two_parts_reaches_the_accept_that_waits() -> None:
    """A header cut in two is finished in the background while accept() waits for the next
    connection: that wait is cut short and returns the stream, with no other client coming."""
    with trio.fail_after(TIME_LIMIT):
        (inner,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = inner.socket.getsockname()[1]
        async with ProxyProtocolListener(inner) as listener:
            accepted: list[ProxiedStream] = []

            async def accept_one() -> None:
                accepted.append(await listener.accept())

            data = HEADER.to_bytes()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(accept_one)
                client = await trio.open_tcp_stream("127.0.0.1", port)
                await client.send_all(data[:7])
                await trio.testing.wait_all_tasks_blocked()  # the rest is awaited
                assert not accepted
                assert listener.statistics().in_flight == 1
                await client.send_all(data[7:] + b"rest")
            [stream] = accepted
            assert stream.header == HEADER
            assert await stream.receive_some() == b"rest"
            await stream.aclose()
            await client.aclose()


async def test_a_second_accept_while_one_waits_is_busy_as_trio_s_own() -> None:
    """Two tasks cannot wait on one trio socket: a second accept() meanwhile raises
    trio.BusyResourceError (trio's listener does the same), and takes nothing."""
    with trio.fail_after(TIME_LIMIT):
        (inner,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = inner.socket.getsockname()[1]
        async with ProxyProtocolListener(inner) as listener:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(listener.accept)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(trio.BusyResourceError):
                    await listener.accept()
                with pytest.raises(trio.BusyResourceError):
                    await inner.accept()
                nursery.cancel_scope.cancel()
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await client.send_all(HEADER.to_bytes() + b"next")
            stream = await listener.accept()  # the cancelled wait left nothing behind
            assert stream.header == HEADER
            assert await stream.receive_some() == b"next"
            await stream.aclose()
            await client.aclose()


async def test_a_handshake_nursery_of_your_own() -> None:
    with trio.fail_after(TIME_LIMIT):
        async with trio.open_nursery() as nursery:
            (inner,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = inner.socket.getsockname()[1]
            listener = ProxyProtocolListener(inner, handshake_nursery=nursery)
            silent = await trio.open_tcp_stream("127.0.0.1", port)
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await client.send_all(HEADER.to_bytes())
            stream = await listener.accept()
            assert stream.socket.getpeername() == CLIENT
            await listener.aclose()  # ends the silent client's handshake, not our nursery
            assert await _read_all(silent) == b""
            for resource in (stream, silent, client):
                await resource.aclose()


async def test_the_socket_facade() -> None:
    v6_header = pp.Header.proxy(("2001:db8::7", 51234), ("2001:db8::1", 443))
    with trio.fail_after(TIME_LIMIT):
        (inner,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = inner.socket.getsockname()[1]
        async with ProxyProtocolListener(inner) as listener:
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await client.send_all(v6_header.to_bytes())
            stream = await listener.accept()
            sock = stream.socket
            assert isinstance(sock, ProxiedSocket)
            assert sock is stream.socket
            # The header's client, though the connection (and so the family) is IPv4.
            assert sock.getpeername() == ("2001:db8::7", 51234)
            assert sock.family == socket.AF_INET
            assert sock.type == socket.SOCK_STREAM
            transport = stream.transport_stream
            assert isinstance(transport, trio.SocketStream)
            assert sock.getsockname() == transport.socket.getsockname() == ("127.0.0.1", port)
            assert sock.fileno() == transport.socket.fileno()
            assert transport.socket.getpeername() == client.socket.getsockname()
            assert "ProxiedSocket" in repr(sock)
            await stream.aclose()
            await client.aclose()


async def test_ipv6_sockets_get_four_tuples() -> None:
    try:
        (inner,) = await trio.open_tcp_listeners(0, host="::1")
    except OSError:  # pragma: no cover - hosts without IPv6
        pytest.skip("no IPv6 loopback")
    port = inner.socket.getsockname()[1]
    with trio.fail_after(TIME_LIMIT):
        async with ProxyProtocolListener(inner) as listener:
            client = await trio.open_tcp_stream("::1", port)
            await client.send_all(HEADER.to_bytes())
            stream = await listener.accept()
            assert stream.socket.getpeername() == (*CLIENT, 0, 0)
            assert stream.peer_address == client.socket.getsockname()[:2]
            await stream.aclose()
            await client.aclose()


async def test_tls_on_top(tmp_path: Any) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async def handler(stream: trio.SSLStream[ProxiedStream]) -> None:
        line = await _read_line(stream)
        proxied = stream.transport_stream
        peer = proxied.socket.getpeername()
        await stream.send_all(repr((peer, proxied.header == HEADER, line)).encode())
        await stream.aclose()

    with trio.fail_after(TIME_LIMIT):
        async with trio.open_nursery() as nursery:
            listener, port = await _serve(nursery, handler, ssl_context=server_context)
            silent = await trio.open_tcp_stream("127.0.0.1", port)
            transport = await trio.open_tcp_stream("127.0.0.1", port)
            await transport.send_all(HEADER.to_bytes())
            client = trio.SSLStream(transport, client_context, server_hostname="localhost")
            await client.send_all(b"over TLS\n")
            assert await _read_all(client) == repr((CLIENT, True, b"over TLS\n")).encode()
            await client.aclose()
            await silent.aclose()
            assert listener.statistics().accepted == 1
            nursery.cancel_scope.cancel()


async def test_policies_and_counters(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxyproto")
    with trio.fail_after(TIME_LIMIT):
        async with trio.open_nursery() as nursery:
            required, required_port = await _serve(nursery, _report)
            used, used_port = await _serve(
                nursery, _report, pp.ProxyProtocolConfig(policy=pp.Policy.USE)
            )
            # REQUIRE: a headerless client is closed and never reaches the handler.
            assert await _ask(required_port, b"GET / HTTP/1.1\r\n") == b""
            assert (
                await _ask(required_port, HEADER.to_bytes() + b"hi\n")
                == repr((CLIENT, "127.0.0.1", b"hi\n")).encode()
            )
            # USE: a headerless client is a direct connection, seen as itself.
            answer = await _ask(used_port, b"hi\n")
            peer, local, line = ast.literal_eval(answer.decode())
            assert peer[0] == local == "127.0.0.1"
            assert line == b"hi\n"
            assert (
                await _ask(used_port, HEADER.to_bytes() + b"hi\n")
                == repr((CLIENT, "127.0.0.1", b"hi\n")).encode()
            )
            nursery.cancel_scope.cancel()
    assert required.statistics() == pp.ListenerStatistics(
        accepted=1, direct=0, rejected={"missing": 1}, timed_out=0, evicted=0, in_flight=0
    )
    assert used.statistics() == pp.ListenerStatistics(
        accepted=2, direct=1, rejected={}, timed_out=0, evicted=0, in_flight=0
    )
    assert any("refused connection from 127.0.0.1:" in m for m in caplog.messages)


@pytest.mark.parametrize("leave", ["close", "reset"])
async def test_a_health_check_that_connects_and_leaves_is_counted_as_empty_at_debug(
    caplog: pytest.LogCaptureFixture, leave: str
) -> None:
    """HAProxy's checks connect, then close or reset without a byte: routine, so DEBUG, and the
    peer is named even when it reset before its connection was accepted."""
    caplog.set_level(logging.DEBUG, logger="proxyproto")
    checks = 3
    with trio.fail_after(TIME_LIMIT):
        (inner,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = inner.socket.getsockname()[1]
        ports = set()
        for _ in range(checks):
            client = trio.socket.socket()
            await client.connect(("127.0.0.1", port))
            ports.add(client.getsockname()[1])
            if leave == "reset":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
        # Only now does anyone accept: every check is gone before its connection is accepted.
        async with ProxyProtocolListener(inner) as listener, trio.open_nursery() as nursery:
            nursery.start_soon(listener.accept)
            while listener.statistics().rejected.get("empty", 0) < checks:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert listener.statistics().rejected == {"empty": checks}
    records = [r for r in caplog.records if r.name == "proxyproto"]
    assert [r.levelno for r in records] == [logging.DEBUG] * checks, caplog.messages
    assert {r.getMessage() for r in records} == {
        f"refused connection from 127.0.0.1:{port}: closed or reset before sending a byte"
        for port in ports
    }


async def test_timeouts_and_eviction_follow_the_config() -> None:
    config = pp.ProxyProtocolConfig(header_timeout=0.3, max_pending_handshakes=1, eviction_age=0)
    with trio.fail_after(TIME_LIMIT):
        async with trio.open_nursery() as nursery:
            listener, port = await _serve(nursery, _report, config)
            first = await trio.open_tcp_stream("127.0.0.1", port)
            await first.send_all(HEADER.to_bytes()[:7])
            await trio.sleep(0.05)
            second = await trio.open_tcp_stream("127.0.0.1", port)
            await second.send_all(HEADER.to_bytes()[:7])
            assert await _read_all(first) == b""  # evicted by the second
            assert await _read_all(second) == b""  # timed out
            await trio.testing.wait_all_tasks_blocked()  # the refusal is counted after closing
            stats = listener.statistics()
            assert (stats.evicted, stats.timed_out, stats.accepted) == (1, 1, 0)
            await first.aclose()
            await second.aclose()
            nursery.cancel_scope.cancel()
