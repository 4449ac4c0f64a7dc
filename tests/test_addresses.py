"""One rule for addresses on every surface (proxyproto._address).

A UNIX client is ``None`` in ASGI's ``scope["client"]`` (Uvicorn, Hypercorn on both workers) and
the app that unpacks it still answers; an IPv6 scope id, which only a real link-local peer has
(no header carries one), stays as ``host%scope_id`` in the ``(host, port)`` shape and goes back to
the fourth field of a socket address.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import anyio
import pytest

import proxyproto as pp
from proxyproto._address import asgi_client, from_sockaddr, peername, socket_family

pytest.importorskip("hypercorn")
pytest.importorskip("uvicorn")

import proxyproto.uvicorn as ppu
from asgi_helpers import hypercorn_task, read_response, serve_lifespan, uvicorn_thread

UNIX = pp.Header.proxy("/run/client.sock", "/run/server.sock").to_bytes()
REQUEST = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with ``scope["client"]`` as an app would use it: unpacked when there is one."""
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    client = scope["client"]
    if client is not None:
        host, port = client
        client = [host, port]
    body = json.dumps({"client": client}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


@pytest.mark.anyio
async def test_hypercorn_unix_client_is_none(anyio_backend: str) -> None:
    # anyio_backend picks Hypercorn's worker: asyncio or trio.
    async with hypercorn_task(app) as port:
        with anyio.fail_after(15):
            status, answer = await anyio.to_thread.run_sync(_exchange, ("127.0.0.1", port))
    assert (status, answer) == (200, {"client": None})


def test_uvicorn_unix_client_is_none() -> None:
    protocol = ppu._protocol_class("h11", pp.ProxyProtocolConfig())
    with uvicorn_thread(app, http=protocol) as (address, _server, _thread):
        assert _exchange(address) == (200, {"client": None})


def _exchange(address: tuple[str, int]) -> tuple[int, dict[str, Any]]:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(UNIX + REQUEST)
        return read_response(sock, bytearray())


# The conversions themselves, with socket-style addresses as getpeername() returns them (a
# link-local interface is not something the sandbox can count on).


def test_a_link_local_peer_keeps_its_scope_id() -> None:
    assert from_sockaddr(("fe80::1", 443, 0, 2)) == ("fe80::1%2", 443)
    assert from_sockaddr(("::1", 443, 0, 0)) == ("::1", 443)
    assert from_sockaddr(("127.0.0.1", 443)) == ("127.0.0.1", 443)
    assert from_sockaddr(b"/run/a.sock") == "/run/a.sock"
    assert from_sockaddr("") == ""
    assert from_sockaddr(None) is None


def test_peername_gives_the_scope_id_back_to_the_socket_address() -> None:
    assert peername(("fe80::1%2", 443), socket.AF_INET6) == ("fe80::1", 443, 0, 2)
    assert peername(("2001:db8::7", 443), socket.AF_INET6) == ("2001:db8::7", 443, 0, 0)
    assert peername(("2001:db8::7", 443), socket.AF_INET) == ("2001:db8::7", 443)
    assert peername(("203.0.113.7", 1), socket.AF_INET) == ("203.0.113.7", 1)
    assert peername("/run/a.sock", socket.AF_INET6) == "/run/a.sock"
    assert peername(from_sockaddr(("fe80::1", 443, 0, 2)), socket.AF_INET6) == (
        "fe80::1",
        443,
        0,
        2,
    )


def test_asgi_client_is_a_pair_or_none() -> None:
    assert asgi_client(("fe80::1%2", 443)) == ("fe80::1%2", 443)
    assert asgi_client("/run/a.sock") is None
    assert asgi_client("\0abstract") is None
    assert asgi_client(None) is None


def test_a_unix_client_shows_af_unix() -> None:
    assert socket_family("/run/a.sock", socket.AF_INET) == socket.AF_UNIX
    assert socket_family(("::1", 1), socket.AF_INET) == socket.AF_INET


def test_the_scope_id_form_is_what_python_reads() -> None:
    import ipaddress

    assert ipaddress.IPv6Address("fe80::1%2").scope_id == "2"
    assert str(ipaddress.ip_address("fe80::1%2")) == "fe80::1%2"


# The same real link-local peer on every surface that keeps its scope id (Hypercorn's own code
# keeps two fields of an AF_INET6 address, see docs/core.rst). LOCAL: the real peer stays.


def _link_local() -> tuple[str, int] | None:
    """A link-local address of this host and its interface index, if it has one."""
    try:
        with open("/proc/net/if_inet6") as lines:
            for line in lines:
                fields = line.split()
                if fields[0].startswith("fe80"):
                    packed = bytes.fromhex(fields[0])
                    return socket.inet_ntop(socket.AF_INET6, packed), int(fields[1], 16)
    except OSError:
        pass
    return None


LINK_LOCAL = _link_local()
needs_link_local = pytest.mark.skipif(LINK_LOCAL is None, reason="no link-local IPv6 address")


def _bound(kind: int = socket.SOCK_STREAM) -> socket.socket:
    assert LINK_LOCAL is not None
    host, index = LINK_LOCAL
    sock = socket.socket(socket.AF_INET6, kind)
    sock.bind((host, 0, 0, index))
    if kind == socket.SOCK_STREAM:
        sock.listen(4)
    return sock


def _client_of(server: socket.socket) -> socket.socket:
    client = socket.socket(socket.AF_INET6)
    client.settimeout(10)
    client.connect(server.getsockname())
    return client


def _connect_local(server: socket.socket) -> tuple[socket.socket, tuple[str, int]]:
    """A client of ``server`` that sent a LOCAL header, and its address as anyio shows it."""
    client = _client_of(server)
    client.sendall(pp.Header.local().to_bytes())
    host, port, _flowinfo, scope_id = client.getsockname()
    return client, (f"{host}%{scope_id}", port)


@needs_link_local
@pytest.mark.anyio
async def test_a_link_local_peer_is_host_percent_scope_on_anyio_and_trio(
    anyio_backend: str,
) -> None:
    from anyio.abc import SocketAttribute, SocketListener

    with anyio.fail_after(15):
        server = _bound()
        listener = await SocketListener.from_socket(server)
        client, expected = _connect_local(server)
        with client:
            async with listener, await listener.accept() as raw:
                proxied = await pp.ProxiedStream.wrap(raw)
                assert proxied.extra(pp.ProxyAttribute.peer_address) == expected
                assert proxied.extra(SocketAttribute.remote_address) == expected
        if anyio_backend == "trio":
            import trio

            import proxyproto.trio as pp_trio

            server = _bound()
            client, expected = _connect_local(server)
            with client, trio.socket.from_stdlib_socket(server) as trio_server:
                stream = trio.SocketStream((await trio_server.accept())[0])
                trio_proxied = await pp_trio.ProxiedStream.wrap(stream)
                assert trio_proxied.peer_address == expected
                assert trio_proxied.socket.getpeername() == client.getsockname()
                await stream.aclose()


@needs_link_local
@pytest.mark.anyio
async def test_a_link_local_sender_is_host_percent_scope_on_udp() -> None:
    from anyio.abc import UDPSocket

    with anyio.fail_after(15):
        async with pp.ProxiedUDPSocket(
            await UDPSocket.from_socket(_bound(socket.SOCK_DGRAM))
        ) as server:
            with _bound(socket.SOCK_DGRAM) as sender:
                sender.sendto(
                    pp.Header.local().to_bytes() + b"health",
                    server.transport_socket.extra(
                        anyio.abc.SocketAttribute.raw_socket
                    ).getsockname(),
                )
                host, port, _flowinfo, scope_id = sender.getsockname()
                datagram = await server.receive()
    assert datagram.source == datagram.peer == (f"{host}%{scope_id}", port)


@needs_link_local
def test_a_link_local_client_is_host_percent_scope_on_uvicorn() -> None:
    protocol = ppu._protocol_class("h11", pp.ProxyProtocolConfig())
    listening = _bound()
    with uvicorn_thread(app, http=protocol, sock=listening), _client_of(listening) as sock:
        sock.sendall(pp.Header.local().to_bytes() + REQUEST)
        status, answer = read_response(sock, bytearray())
        host, port, _flowinfo, scope_id = sock.getsockname()
    assert (status, answer) == (200, {"client": [f"{host}%{scope_id}", port]})
