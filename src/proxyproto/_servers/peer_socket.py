"""The socket Hypercorn's workers (asyncio and trio) read the client from.

Hypercorn reads ``getpeername()`` and ``family`` of the connection's socket for
``scope["client"]``; :class:`PeerSocket` answers with the header's client.
"""

from __future__ import annotations

from typing import Any

from proxyproto._core.address import from_sockaddr, socket_family, two_field_peername
from proxyproto._handshake.policy import PeerAddress

__all__ = ("PeerSocket",)


class PeerSocket:
    """The connection's socket as Hypercorn reads it: ``getpeername()`` is the client from the
    header (the real peer when there is none), with an IPv6 scope id kept in the host, since
    Hypercorn keeps only two fields of an AF_INET6 address (see :mod:`proxyproto._core.address`).

    Every connection goes through one, direct ones too, so that ``scope["client"]`` has the
    same shape on both workers, with or without a header.
    """

    def __init__(self, socket: Any, peer: PeerAddress = None) -> None:
        self._socket = socket
        self._peer = peer

    @property
    def family(self) -> int:
        # Hypercorn reads the family to decide what getpeername() is: a UNIX client must show
        # AF_UNIX, or scope["client"] would be the bare path (ASGI allows a pair or None).
        return socket_family(self._peer, self._socket.family)

    def getpeername(self) -> Any:
        peer = self._peer if self._peer is not None else from_sockaddr(self._socket.getpeername())
        return two_field_peername(peer, self._socket.family)

    def getsockname(self) -> Any:
        return self._socket.getsockname()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._socket, name)
