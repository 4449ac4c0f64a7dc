"""One place that turns an address into what each surface expects (sans-IO).

Addresses are kept in anyio's shape (:data:`proxyproto._core.model.Address`): ``(host, port)`` for
INET and INET6, a path for UNIX, ``None`` for none. A header never carries an IPv6 scope id
(v1 text has no room for one, v2's INET6 block has none), but the real peer of a link-local
connection does: ``socket.getpeername()`` gives ``(host, port, flowinfo, scope_id)`` with the
host without ``%``.

The rule, the same on every surface: **the scope id stays, as ``host%scope_id``** in the
``(host, port)`` shape, as anyio's ``SocketAttribute.remote_address`` does. A link-local address
means nothing without its interface, and the ``%`` form is what Python reads back:
``ipaddress.ip_address("fe80::1%2")`` (3.9+) and ``socket.getaddrinfo``/``getnameinfo`` accept
it. Where a surface needs a socket address (``getpeername()`` on an ``AF_INET6`` facade), the
scope id goes back to the fourth field and the host loses its ``%``.
"""

from __future__ import annotations

import socket
from typing import Any

from .model import Address

__all__ = ("asgi_client", "from_sockaddr", "peername", "socket_family", "two_field_peername")


def from_sockaddr(sockaddr: Any) -> Address:
    """A socket address (as ``getpeername()`` returns it) in anyio's shape.

    ``(host, port)`` for AF_INET; ``("host%scope_id", port)`` for AF_INET6 with a scope id;
    a ``str`` path for AF_UNIX (bytes decoded, as anyio does); ``None`` for an unnamed peer.
    """
    if isinstance(sockaddr, tuple):
        host, port = str(sockaddr[0]), int(sockaddr[1])
        if len(sockaddr) == 4 and sockaddr[3] and "%" not in host:
            host = f"{host}%{sockaddr[3]}"
        return (host, port)
    if isinstance(sockaddr, bytes):
        return sockaddr.decode(errors="surrogateescape")
    if isinstance(sockaddr, str):
        return sockaddr
    return None


def peername(address: Address, family: int) -> Any:
    """``address`` as ``getpeername()`` of a socket of ``family`` would give it.

    ``(host, port, 0, scope_id)`` on AF_INET6 (the host without ``%``), ``(host, port)`` on
    AF_INET (an IPv6 client behind a proxy reached over IPv4 keeps its ``%scope_id``, a 2-tuple
    having no field for it), the path for a UNIX address, ``None`` for none.
    """
    if not isinstance(address, tuple):
        return address
    host, port = address
    if family == socket.AF_INET6:
        bare, _, scope = host.partition("%")
        if not scope:
            return (host, port, 0, 0)
        if scope.isdigit():
            return (bare, port, 0, int(scope))
        try:
            return (bare, port, 0, socket.if_nametoindex(scope))
        except OSError:
            return (host, port, 0, 0)
    return (host, port)


def asgi_client(address: Address) -> tuple[str, int] | None:
    """ASGI's ``scope["client"]``: ``(host, port)`` (scope id kept), ``None`` for UNIX or none.

    The ASGI spec allows only a ``(host, port)`` pair or ``None``; a path is not a client
    address, and an app that unpacks ``host, port = scope["client"]`` must not fail on it.
    """
    if isinstance(address, tuple):
        return (str(address[0]), int(address[1]))
    return None


def socket_family(address: Address, family: int) -> int:
    """The family a socket facade reports to a server that reads ``family`` to decide what
    ``getpeername()`` is: ``AF_UNIX`` for a UNIX address, else the connection's own."""
    if isinstance(address, str):
        return socket.AF_UNIX
    return family


def two_field_peername(address: Address, family: int) -> Any:
    """``getpeername()`` for a server that keeps only the first two fields of an AF_INET6
    socket address (Hypercorn's ``parse_socket_addr``): as :func:`peername`, except that the
    host keeps its ``%scope_id``, so that the server's ``(host, port)`` is the one every other
    surface gives."""
    sockaddr = peername(address, family)
    if isinstance(sockaddr, tuple) and len(sockaddr) == 4 and isinstance(address, tuple):
        return (str(address[0]), *sockaddr[1:])
    return sockaddr
