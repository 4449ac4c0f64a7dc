"""WebSockets behind the PROXY protocol, on real Hypercorn and Uvicorn servers on loopback.

A client sends a v2 header, then a hand-written HTTP/1.1 Upgrade; the app accepts and sends
``scope["client"]`` as a text message, which must be the header's source, then echoes one
(masked) text frame. Also: a Uvicorn shutdown while a handshake is pending is bounded in time.
The frame codec is the minimum RFC 6455 needs: unfragmented frames, masked from the client.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import Any

import anyio
import pytest
from anyio.abc import ByteStream

import proxyproto as pp
from asgi_helpers import hypercorn_task, serve_lifespan, uvicorn_thread

pytest.importorskip("wsproto")

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, CLOSE = 0x1, 0x8
SERVER = ("198.51.100.10", 443)
SERVER6 = ("2001:db8::1", 443)
SOURCES = [
    pytest.param(("203.0.113.7", 51234), SERVER, id="ipv4"),
    pytest.param(("2001:db8::7", 40000), SERVER6, id="ipv6"),
]
SPLITS = [pytest.param(True, id="one-segment"), pytest.param(False, id="header-then-upgrade")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accepts a WebSocket, sends ``scope["client"]`` as JSON text, then echoes text messages."""
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    assert scope["type"] == "websocket", scope["type"]
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": json.dumps(list(scope["client"]))})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": "echo:" + message["text"]})


# --- a minimal WebSocket client codec ---------------------------------------------------------


def upgrade_request(key: bytes) -> bytes:
    return (
        b"GET /ws HTTP/1.1\r\n"
        b"Host: test\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"\r\n"
    )


def new_key() -> bytes:
    return base64.b64encode(os.urandom(16))


def check_101(head: bytes, key: bytes) -> None:
    """The handshake response: 101 and the Sec-WebSocket-Accept that ``key`` calls for."""
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 101"), head
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:])
    }
    expected = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
    assert headers.get("sec-websocket-accept") == expected, head
    assert headers.get("upgrade", "").lower() == "websocket", head


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame: masked, as RFC 6455 requires of clients."""
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    mask = os.urandom(4)
    return head + mask + bytes(byte ^ mask[n % 4] for n, byte in enumerate(payload))


def decode_frame(buffer: bytearray) -> tuple[int, bytes] | None:
    """A whole server frame from the front of ``buffer`` (removed), or None if incomplete."""
    if len(buffer) < 2:
        return None
    first, second = buffer[0], buffer[1]
    assert first & 0x80, "fragmented frames are not expected here"
    assert not second & 0x80, "a server must not mask its frames"
    length, offset = second & 0x7F, 2
    if length == 126:
        if len(buffer) < 4:
            return None
        (length,), offset = struct.unpack("!H", buffer[2:4]), 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        (length,), offset = struct.unpack("!Q", buffer[2:10]), 10
    if len(buffer) < offset + length:
        return None
    payload = bytes(buffer[offset : offset + length])
    del buffer[: offset + length]
    return first & 0x0F, payload


def close_payload(code: int = 1000) -> bytes:
    return struct.pack("!H", code)


# --- Hypercorn (asyncio and trio workers) -----------------------------------------------------


def hypercorn_running() -> AbstractAsyncContextManager[int]:
    """Hypercorn serving :func:`app` on 127.0.0.1 with the PROXY protocol: yields the port."""
    pytest.importorskip("hypercorn")
    return hypercorn_task(app)


async def receive_head(stream: ByteStream, buffer: bytearray) -> bytes:
    while b"\r\n\r\n" not in buffer:
        buffer += await stream.receive()
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    buffer[:] = rest
    return head


async def receive_frame(stream: ByteStream, buffer: bytearray) -> tuple[int, bytes]:
    while (frame := decode_frame(buffer)) is None:
        buffer += await stream.receive()
    return frame


@pytest.mark.anyio
@pytest.mark.parametrize("together", SPLITS)
@pytest.mark.parametrize(("source", "destination"), SOURCES)
async def test_hypercorn_websocket_client_is_the_header_source(
    source: tuple[str, int], destination: tuple[str, int], together: bool
) -> None:
    header = pp.Header.proxy(source, destination).to_bytes()
    assert header.startswith(b"\r\n\r\n\x00\r\nQUIT\n")  # v2
    key = new_key()
    async with (
        hypercorn_running() as port,
        await anyio.connect_tcp("127.0.0.1", port) as stream,
    ):
        if together:
            await stream.send(header + upgrade_request(key))
        else:
            await stream.send(header)
            await anyio.sleep(0.05)
            await stream.send(upgrade_request(key))
        buffer = bytearray()
        check_101(await receive_head(stream, buffer), key)
        assert await receive_frame(stream, buffer) == (TEXT, json.dumps(list(source)).encode())
        await stream.send(encode_frame(TEXT, b"hi"))
        assert await receive_frame(stream, buffer) == (TEXT, b"echo:hi")
        await stream.send(encode_frame(CLOSE, close_payload()))
        opcode, payload = await receive_frame(stream, buffer)
        assert opcode == CLOSE
        assert payload[:2] == close_payload()


# --- Uvicorn (h11) ----------------------------------------------------------------------------


@contextmanager
def uvicorn_server(
    proxy: pp.ProxyProtocolConfig, **config: Any
) -> Iterator[tuple[tuple[str, int], Any, threading.Thread]]:
    """Uvicorn (h11, wsproto) with ``proxy`` and ``config`` (for ``uvicorn.Config``) in a
    thread; always stopped (or failed) on exit."""
    pytest.importorskip("uvicorn")
    import proxyproto.uvicorn as ppu

    http = ppu._protocol_class("h11", proxy)
    with uvicorn_thread(app, http=http, ws="wsproto", **config) as running:
        yield running


def recv_head(sock: socket.socket, buffer: bytearray) -> bytes:
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before the handshake response: {bytes(buffer)!r}")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    buffer[:] = rest
    return head


def recv_frame(sock: socket.socket, buffer: bytearray) -> tuple[int, bytes]:
    while (frame := decode_frame(buffer)) is None:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed in the middle of a frame: {bytes(buffer)!r}")
        buffer += chunk
    return frame


@pytest.mark.parametrize("together", SPLITS)
@pytest.mark.parametrize(("source", "destination"), SOURCES)
def test_uvicorn_websocket_client_is_the_header_source(
    source: tuple[str, int], destination: tuple[str, int], together: bool
) -> None:
    header = pp.Header.proxy(source, destination).to_bytes()
    key = new_key()
    with (
        uvicorn_server(pp.ProxyProtocolConfig()) as (address, _, _),
        socket.create_connection(address, timeout=10) as sock,
    ):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if together:
            sock.sendall(header + upgrade_request(key))
        else:
            sock.sendall(header)
            time.sleep(0.05)
            sock.sendall(upgrade_request(key))
        buffer = bytearray()
        check_101(recv_head(sock, buffer), key)
        assert recv_frame(sock, buffer) == (TEXT, json.dumps(list(source)).encode())
        sock.sendall(encode_frame(TEXT, b"hi"))
        assert recv_frame(sock, buffer) == (TEXT, b"echo:hi")
        sock.sendall(encode_frame(CLOSE, close_payload()))
        opcode, payload = recv_frame(sock, buffer)
        assert opcode == CLOSE
        assert payload[:2] == close_payload()


def test_uvicorn_shutdown_with_a_handshake_pending() -> None:
    """Half a header, then should_exit: the shutdown ends the handshake, so the server stops
    and the client sees EOF.

    No clock is raced: uvicorn waits for its connections without a graceful timeout, and the
    header timeout is far longer than the test, so uvicorn can only stop if the shutdown itself
    ended the pending handshake.
    """
    header = pp.Header.proxy(("203.0.113.7", 51234), SERVER).to_bytes()
    proxy = pp.ProxyProtocolConfig(header_timeout=120)
    with (
        uvicorn_server(proxy, timeout_graceful_shutdown=None) as (address, server, thread),
        socket.create_connection(address, timeout=10) as sock,
    ):
        sock.sendall(header[: len(header) // 2])
        deadline = time.monotonic() + 5
        while not server.server_state.connections:  # the handshake is under way
            assert time.monotonic() < deadline, "the connection never reached the server"
            time.sleep(0.01)
        server.should_exit = True
        thread.join(60)  # a bound on the test, half the header timeout
        assert not thread.is_alive(), "uvicorn still waits for the pending handshake"
        assert not server.force_exit
        assert not server.server_state.connections
        sock.settimeout(5)
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""  # closed, with a reset
        assert data == b"", f"the pending client got {data!r}"


def test_uvicorn_websocket_x_forwarded_for_is_not_trusted() -> None:
    # Uvicorn's default proxy_headers=True and every peer allowed: the end user's
    # X-Forwarded-For still does not name the client, on a WebSocket as on HTTP.
    pytest.importorskip("uvicorn")
    import proxyproto.uvicorn as ppu

    source = ("203.0.113.7", 51234)
    header = pp.Header.proxy(source, SERVER).to_bytes()
    key = new_key()
    request = upgrade_request(key).replace(b"\r\n\r\n", b"\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n")
    protocol = ppu._protocol_class("h11", pp.ProxyProtocolConfig())
    with (
        uvicorn_thread(
            app, http=protocol, ws="wsproto", proxy_headers=True, forwarded_allow_ips="*"
        ) as (
            address,
            _,
            _,
        ),
        socket.create_connection(address, timeout=10) as sock,
    ):
        sock.sendall(header + request)
        buffer = bytearray()
        check_101(recv_head(sock, buffer), key)
        assert recv_frame(sock, buffer) == (TEXT, json.dumps(list(source)).encode())
        sock.sendall(encode_frame(CLOSE, close_payload()))
        assert recv_frame(sock, buffer)[0] == CLOSE
