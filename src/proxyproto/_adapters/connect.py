"""Connecting to a TCP target given as an IP address: :func:`connect_tcp`.

:func:`anyio.connect_tcp` races the addresses of a name ("happy eyeballs") in a task group, and
does so for a single IP address too: a task group, a task, an event and a cancel scope per
connection. For a relay that connects once per client that is as much again as the rest of the
connect: a loopback connect, accept and close took about 350 us through it and 190 us without on
asyncio, 300 and 110 us on trio. A target that is an IP address has nothing to race: a
non-blocking ``connect()``, waited for with :func:`anyio.wait_writable`, then
:meth:`anyio.abc.SocketStream.from_socket`. A host name still goes to :func:`anyio.connect_tcp`,
as does every target on a platform other than POSIX (where asyncio's proactor loop cannot wait
for a socket).
"""

from __future__ import annotations

import os
import socket
from ipaddress import ip_address

import anyio
import anyio.lowlevel
from anyio.abc import SocketStream

__all__ = ["connect_tcp"]

_POSIX = os.name == "posix"


async def connect_tcp(host: str, port: int) -> SocketStream:
    """A TCP stream to ``host:port``, with ``TCP_NODELAY`` set (as anyio's own).

    :raises OSError: the connection failed (its ``errno`` says why), or ``host`` did not resolve.
    """
    family = _family_of(host) if _POSIX else None
    if family is None:
        return await anyio.connect_tcp(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.connect((host, port))
        except BlockingIOError:
            await anyio.wait_writable(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, os.strerror(error)) from None
        else:
            await anyio.lowlevel.checkpoint()  # connected at once: still a checkpoint
        return await SocketStream.from_socket(sock)
    except BaseException:
        sock.close()
        raise


def _family_of(host: str) -> socket.AddressFamily | None:
    """``AF_INET`` or ``AF_INET6`` for an IP address (a scoped IPv6 one too); ``None`` for a
    name."""
    try:
        address = ip_address(host)
    except ValueError:
        return None
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET
