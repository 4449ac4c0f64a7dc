"""proxyproto._adapters.connect: the relay's TCP connect to an IP address, on loopback."""

from __future__ import annotations

import contextlib
import errno
import os
import socket

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketListener

from interop import has_ipv6_loopback
from proxyproto._adapters.connect import connect_tcp

pytestmark = pytest.mark.anyio

TIME_LIMIT = 10


def _closed_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def _only(listener: anyio.abc.Listener[object]) -> SocketListener:
    """The one socket listener of anyio's multi-listener for one address."""
    inner = getattr(listener, "listeners", [listener])[0]
    assert isinstance(inner, SocketListener)
    return inner


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


HOSTS = [
    "127.0.0.1",
    pytest.param(
        "::1",
        marks=pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback"),
    ),
]


@pytest.mark.parametrize("host", HOSTS)
async def test_an_ip_address_is_connected_both_ways(host: str) -> None:
    with anyio.fail_after(TIME_LIMIT):
        async with await anyio.create_tcp_listener(local_host=host, local_port=0) as listener:
            port = listener.extra(SocketAttribute.local_port)
            async with anyio.create_task_group() as task_group:

                async def echo_once() -> None:
                    async with await _only(listener).accept() as accepted:
                        await accepted.send(await accepted.receive())

                task_group.start_soon(echo_once)
                async with await connect_tcp(host, port) as stream:
                    raw = stream.extra(SocketAttribute.raw_socket)
                    assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                    assert stream.extra(SocketAttribute.remote_port) == port
                    await stream.send(b"ping")
                    assert await stream.receive() == b"ping"


async def test_a_refused_connection_says_why_and_leaks_no_descriptor() -> None:
    port = _closed_port("127.0.0.1")
    before = _open_descriptors()
    with anyio.fail_after(TIME_LIMIT):
        for _ in range(20):
            with pytest.raises(ConnectionRefusedError) as raised:
                await connect_tcp("127.0.0.1", port)
            assert raised.value.errno == errno.ECONNREFUSED
    assert _open_descriptors() <= before


async def test_a_cancelled_connect_closes_its_socket() -> None:
    # A listener that never accepts, its backlog full: the kernel drops the next SYNs, so the
    # next connect() stays pending until cancelled.
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):
                filler = socket.socket()
                filler.setblocking(False)
                fillers.append(filler)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
            before = _open_descriptors()
            with anyio.fail_after(TIME_LIMIT):
                with anyio.move_on_after(0.3) as waited:
                    stream = await connect_tcp("127.0.0.1", port)
                    await stream.aclose()
            assert waited.cancelled_caught  # it was pending, then cancelled
            assert _open_descriptors() <= before
        finally:
            for filler in fillers:
                filler.close()


async def test_a_host_name_goes_through_anyio() -> None:
    with anyio.fail_after(TIME_LIMIT):
        async with await anyio.create_tcp_listener(
            local_host="127.0.0.1", local_port=0
        ) as listener:
            port = listener.extra(SocketAttribute.local_port)
            async with anyio.create_task_group() as task_group:

                async def accept_once() -> None:
                    async with await _only(listener).accept():
                        pass

                task_group.start_soon(accept_once)
                async with await connect_tcp("localhost", port) as stream:
                    assert stream.extra(SocketAttribute.remote_address) == ("127.0.0.1", port)
