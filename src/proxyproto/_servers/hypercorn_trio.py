"""The streams Hypercorn's trio worker is given: ``socket`` is Hypercorn's view of the client.

Hypercorn's trio ``TCPServer`` reads ``stream.socket`` (``stream.transport_stream.socket``
under TLS) for ``scope["client"]`` and keeps two fields of an AF_INET6 address; the socket of
these streams keeps an IPv6 scope id in the host, on direct connections too (see
:mod:`proxyproto._core.address`).
"""

from __future__ import annotations

from typing import Any

import trio

from proxyproto import trio as pp_trio
from proxyproto._handshake.engine import register

from .peer_socket import PeerSocket

__all__ = ("HypercornListener",)


class HypercornListener(trio.abc.Listener["HypercornStream"]):
    """A :class:`proxyproto.trio.ProxyProtocolListener` whose streams are
    :class:`HypercornStream`."""

    def __init__(self, listener: pp_trio.ProxyProtocolListener, name: str | None = None) -> None:
        self.listener = listener
        # Its connections count in proxyproto.hypercorn.statistics(); ``name`` (the bind
        # address) is its listener label in the metrics.
        register("hypercorn", listener._counters, name)

    async def accept(self) -> HypercornStream:
        return HypercornStream(await self.listener.accept())

    async def aclose(self) -> None:
        await self.listener.aclose()


class HypercornStream(trio.abc.HalfCloseableStream):
    """A :class:`proxyproto.trio.ProxiedStream`, with ``socket`` as Hypercorn reads it."""

    def __init__(self, stream: pp_trio.ProxiedStream) -> None:
        self.stream = stream
        self.socket: Any = PeerSocket(stream.socket)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()
