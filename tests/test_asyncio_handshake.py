"""proxyproto._adapters.asyncio: the handshake that asyncio protocol servers (Uvicorn, Hypercorn)
run.

It lives in asyncio protocols, so these tests run an asyncio event loop themselves, with real
loopback sockets: a server made by ``loop.create_server`` whose protocol runs a
:class:`TransportHandshake` on one :class:`HandshakeClock`, as the integrations do.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

import pytest

import proxyproto as pp
from proxyproto._adapters.asyncio import HandshakeClock, TransportHandshake

CLIENT = ("203.0.113.7", 51234)
V2 = pp.Header.proxy(CLIENT, ("198.51.100.10", 443)).to_bytes()
DEADLINE = 10


class Recorder(asyncio.Protocol):
    """Runs the handshake, then records what the server would get."""

    def __init__(self, config: pp.ProxyProtocolConfig, clock: HandshakeClock, log: list[object]):
        self.config, self.clock, self.log = config, clock, log
        self.received = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        loop = asyncio.get_running_loop()
        self.handshake = TransportHandshake(transport, self.config, self.accept, loop, self.clock)
        self.handshake.start()

    def accept(self, header: pp.Header | None, leftover: bytes) -> None:
        self.log.append(("accepted", header.source if header else None))
        self.received = leftover

    def data_received(self, data: bytes) -> None:
        if self.handshake.accepted:
            self.received += data
        else:
            self.handshake.data_received(data)

    def eof_received(self) -> bool:
        if self.handshake.accepted or self.handshake.eof_received():
            self.log.append(("eof", self.received))
            self.transport.write(b"bye")
            self.transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.handshake.connection_lost()


async def serve(
    config: pp.ProxyProtocolConfig, log: list[object]
) -> tuple[asyncio.Server, HandshakeClock, int]:
    loop = asyncio.get_running_loop()
    clock = HandshakeClock(loop, config.header_timeout)
    server = await loop.create_server(lambda: Recorder(config, clock, log), "127.0.0.1", 0)
    return server, clock, server.sockets[0].getsockname()[1]


async def closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes."""
    return await reader.read()


def test_partial_headers_time_out_oldest_first(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "proxyproto")

    async def main() -> None:
        log: list[object] = []
        server, clock, port = await serve(pp.ProxyProtocolConfig(header_timeout=0.3), log)
        async with server:
            ends: list[str] = []

            async def slow(name: str, delay: float) -> None:
                await asyncio.sleep(delay)
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(V2[:10])
                assert await closed(reader) == b""
                ends.append(name)
                writer.close()

            async def whole() -> None:
                await asyncio.sleep(0.05)
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(V2 + b"hello")
                writer.write_eof()
                assert await closed(reader) == b"bye"
                ends.append("whole")
                writer.close()

            await asyncio.wait_for(
                asyncio.gather(slow("first", 0), slow("second", 0.1), whole()), DEADLINE
            )
            # The whole header was served at once, between the two that ran out of time.
            assert ends == ["whole", "first", "second"]
            assert log == [("accepted", CLIENT), ("eof", b"hello")]
            assert len(clock) == 0

    asyncio.run(main())
    assert caplog.text.count("no complete PROXY header within 0.3s") == 2


def test_a_direct_connection_ended_by_eof_is_accepted_with_every_byte() -> None:
    async def main() -> None:
        log: list[object] = []
        server, clock, port = await serve(pp.ProxyProtocolConfig(policy=pp.Policy.USE), log)
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PRO")  # could start a header, until EOF says it does not
            writer.write_eof()
            assert await asyncio.wait_for(closed(reader), DEADLINE) == b"bye"
            writer.close()
            assert log == [("accepted", None), ("eof", b"PRO")]
            assert len(clock) == 0

    asyncio.run(main())


def test_a_refused_connection_leaves_the_clock() -> None:
    async def main() -> None:
        log: list[object] = []
        server, clock, port = await serve(pp.ProxyProtocolConfig(header_timeout=60), log)
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PROXY TCP4 192.0.2.1 ")
            await asyncio.sleep(0.05)
            assert len(clock) == 1
            writer.write(b"nonsense 1 2\r\n")  # the rest of the header is not one
            assert await asyncio.wait_for(closed(reader), DEADLINE) == b""
            writer.close()
            assert len(clock) == 0
            assert log == []

    asyncio.run(main())


def test_close_all_closes_pending_handshakes_only() -> None:
    async def main() -> None:
        log: list[object] = []
        server, clock, port = await serve(pp.ProxyProtocolConfig(header_timeout=60), log)
        async with server:
            pending_reader, pending_writer = await asyncio.open_connection("127.0.0.1", port)
            pending_writer.write(V2[:20])
            served_reader, served_writer = await asyncio.open_connection("127.0.0.1", port)
            served_writer.write(V2)
            await asyncio.sleep(0.05)
            assert len(clock) == 1
            clock.close_all()
            assert await asyncio.wait_for(closed(pending_reader), DEADLINE) == b""
            served_writer.write_eof()
            assert await asyncio.wait_for(closed(served_reader), DEADLINE) == b"bye"
            for writer in (pending_writer, served_writer):
                writer.close()
            assert log == [("accepted", CLIENT), ("eof", b"")]

    asyncio.run(main())


@pytest.mark.parametrize(
    ("config", "accepted"),
    [
        # A whole header in the first bytes is read in one go: the limits hold all the same.
        (pp.ProxyProtocolConfig(max_header_size=len(V2) - 1), []),
        (pp.ProxyProtocolConfig(max_header_size=len(V2)), [("accepted", CLIENT)]),
        # A version not accepted is no header at all: under USE, every byte is the server's.
        (pp.ProxyProtocolConfig(versions=[1], policy=pp.Policy.USE), [("accepted", None)]),
        (pp.ProxyProtocolConfig(policy=pp.Policy.REJECT), []),
        (pp.ProxyProtocolConfig(policy=pp.Policy.IGNORE), [("accepted", None)]),
    ],
    ids=["too-large", "just-fits", "other-version", "reject", "ignore"],
)
def test_a_whole_header_in_the_first_bytes(
    config: pp.ProxyProtocolConfig, accepted: list[object]
) -> None:
    async def main() -> None:
        log: list[object] = []
        server, clock, port = await serve(config, log)
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(V2 + b"hello")
            writer.write_eof()
            answer = await asyncio.wait_for(closed(reader), DEADLINE)
            writer.close()
        assert len(clock) == 0
        if not accepted:
            assert (answer, log) == (b"", [])
            return
        assert answer == b"bye"
        rest = V2 + b"hello" if config.versions == frozenset({1}) else b"hello"
        assert log == [*accepted, ("eof", rest)]

    asyncio.run(main())


@pytest.mark.parametrize("leave", ["close", "reset"])
def test_a_health_check_that_connects_and_leaves_is_logged_at_debug(
    caplog: pytest.LogCaptureFixture, leave: str
) -> None:
    """HAProxy's checks connect, then close or reset without a byte: routine, so DEBUG."""
    caplog.set_level(logging.DEBUG, "proxyproto")
    checks = 3

    def records() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "proxyproto"]

    async def logged(count: int) -> None:
        while len(records()) < count:
            await asyncio.sleep(0.01)

    async def main() -> set[int]:
        log: list[object] = []
        ports: set[int] = set()
        server, clock, port = await serve(pp.ProxyProtocolConfig(header_timeout=60), log)
        async with server:
            for _ in range(checks):
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                sock = writer.get_extra_info("socket")
                ports.add(sock.getsockname()[1])
                if leave == "reset":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.close()
                await writer.wait_closed()
            await asyncio.wait_for(logged(checks), DEADLINE)
            assert len(clock) == 0
            assert log == []
        return ports

    ports = asyncio.run(main())
    assert [r.levelno for r in records()] == [logging.DEBUG] * checks, caplog.messages
    assert {r.getMessage() for r in records()} == {
        f"refused connection from 127.0.0.1:{port}: closed or reset before sending a byte"
        for port in ports
    }
