"""One rule for addresses on every surface (proxyproto._core.address).

A UNIX client is ``None`` in ASGI's ``scope["client"]`` (Uvicorn, Hypercorn on both workers) and
the app that unpacks it still answers; an IPv6 scope id, which only a real link-local peer has
(no header carries one), stays as ``host%scope_id`` in the ``(host, port)`` shape and goes back to
the fourth field of a socket address.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import anyio
import pytest

import proxyproto as pp
from proxyproto._core.address import (
    asgi_client,
    from_sockaddr,
    peername,
    socket_family,
    two_field_peername,
)

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


def test_two_field_peername_keeps_the_scope_id_in_the_host() -> None:
    # For Hypercorn, which keeps (sockaddr[0], sockaddr[1]) of an AF_INET6 address.
    assert two_field_peername(("fe80::1%2", 443), socket.AF_INET6) == ("fe80::1%2", 443, 0, 2)
    assert two_field_peername(("2001:db8::7", 443), socket.AF_INET6) == ("2001:db8::7", 443, 0, 0)
    assert two_field_peername(("203.0.113.7", 1), socket.AF_INET) == ("203.0.113.7", 1)
    assert two_field_peername("/run/a.sock", socket.AF_UNIX) == "/run/a.sock"
    assert two_field_peername(None, socket.AF_INET6) is None


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


# No test here connects to a real link-local address: this suite sends traffic to loopback only,
# and loopback (127.0.0.1, ::1) has no scope id. The conversions above are what every surface
# calls (anyio, proxyproto.trio, the asyncio handshake, Uvicorn, UDP).


class LinkLocalTransport(asyncio.Transport):
    """The parts of an asyncio transport accepted from a link-local IPv6 peer that a server
    reads for the client."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return ("fe80::1", 51234, 0, 2)
        if name == "socket":
            return self
        return default

    def getpeername(self) -> tuple[str, int, int, int]:
        return ("fe80::1", 51234, 0, 2)


def test_uvicorn_websocket_upgrade_of_a_direct_link_local_client_keeps_the_scope_id() -> None:
    # Uvicorn's WebSocket protocols take the client from get_remote_addr(transport), which
    # drops the scope id; an upgrade is given the transport with the client the HTTP scope had.
    from uvicorn.protocols.utils import get_remote_addr

    from proxyproto._adapters.asyncio import peer_of

    transport = LinkLocalTransport()
    assert get_remote_addr(transport) == ("fe80::1", 51234)
    client = peer_of(transport)
    upgraded = ppu._ProxiedTransport(transport, client)
    assert get_remote_addr(upgraded) == ("fe80::1%2", 51234) == asgi_client(client)
