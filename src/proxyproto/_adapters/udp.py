"""UDP over anyio: :class:`ProxiedUDPSocket` for servers, :func:`send_datagram` for proxies.

Theory of operation
-------------------
Over UDP, a proxy puts a v2 header in front of every datagram it forwards, header and payload in
one datagram (spec 2.2), and every datagram is parsed on its own: there is no connection to
remember a header by, so an incomplete header is invalid, never a reason to wait.

:class:`ProxiedUDPSocket` wraps an anyio :class:`~anyio.abc.UDPSocket`. ``receive()`` reads
datagrams until one is deliverable and returns it as a :class:`ProxiedDatagram`: the payload,
the client from the header (``source``), and the real sender (``peer``, the proxy), to which
replies go. Whether a datagram is deliverable is the handshake engine's decision
(:func:`proxyproto._handshake.engine.judge_datagram`), the same as for a TCP connection, with "close
the connection" read as "drop the datagram", the same refusal kinds and log levels. A dropped
datagram is counted and logged (:class:`~proxyproto._handshake.engine.RefusalLog`: a flood of junk
must not become a flood of log lines) and never raises: one bad datagram from anyone on the network
must not stop a server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

import anyio
import attrs
from anyio.abc import ConnectedUDPSocket, UDPSocket, UnreliableObjectReceiveStream

from proxyproto._core.address import from_sockaddr
from proxyproto._core.errors import HeaderEncodingError
from proxyproto._core.model import Address, Command, Header, Transport
from proxyproto._handshake.config import ProxyProtocolConfig
from proxyproto._handshake.engine import (
    Refusal,
    RefusalKind,
    RefusalLog,
    judge_datagram,
    validate,
    validator_timed_out,
)
from proxyproto._handshake.policy import Action, carries_address, resolve

__all__ = [
    "DatagramStatistics",
    "ProxiedDatagram",
    "ProxiedUDPSocket",
    "build_datagram",
    "send_datagram",
]

logger = logging.getLogger("proxyproto")

_DEFAULT_CONFIG = ProxyProtocolConfig()


@attrs.frozen
class ProxiedDatagram:
    """One datagram received by a :class:`ProxiedUDPSocket`, its header stripped.

    ``source`` is the client: the header's source when the header carries addresses and the
    policy uses them, otherwise the real sender (``peer``). Reply to ``peer``: the proxy relays
    the reply to the client (see :meth:`ProxiedUDPSocket.reply`).
    """

    #: The application's bytes, without the header.
    payload: bytes = attrs.field(repr=lambda payload: f"<{len(payload)} bytes>")
    #: The client's address: from the header, or ``peer`` for a datagram sent directly.
    source: Address
    #: The address the client sent to, from the header; ``None`` when no header's addresses
    #: are used (a direct datagram, LOCAL, UNSPEC, the ``IGNORE`` policy).
    destination: Address
    #: The real sender, ``(host, port)``: the proxy, or the client of a direct datagram.
    peer: tuple[str, int]
    #: The header as received; ``None`` when there was none (or under ``SKIP``).
    header: Header | None


@attrs.frozen
class DatagramStatistics:
    """A snapshot of a :class:`ProxiedUDPSocket`'s counters, for operators."""

    #: Datagrams read from the socket.
    received: int
    #: Datagrams returned by ``receive()``.
    delivered: int
    #: Of those, direct ones: no header's addresses used (no header, LOCAL, ``IGNORE``, ``SKIP``).
    direct: int
    #: Datagrams dropped, by reason: ``invalid`` (a truncated or broken header, a v1 header, a
    #: stream transport, a header over ``max_header_size``), ``missing`` (no header where one is
    #: required), ``policy`` (a header its policy forbids), ``validator``, ``error`` (a policy
    #: or validator that raised).
    dropped: Mapping[str, int]


class ProxiedUDPSocket(UnreliableObjectReceiveStream[ProxiedDatagram]):
    """An anyio UDP socket behind a proxy: each datagram's v2 header stripped, its client reported.

    >>> async def serve() -> None:
    ...     udp = await anyio.create_udp_socket(local_host="0.0.0.0", local_port=5353)
    ...     config = ProxyProtocolConfig(policy=trusted_proxies(["10.0.0.0/8"]))
    ...     async with ProxiedUDPSocket(udp, config) as sock:
    ...         async for datagram in sock:
    ...             print(datagram.source, datagram.payload)
    ...             await sock.reply(datagram, b"answer")

    Of ``config``, the ``policy`` (per sender, with the same meaning as for TCP, a dropped
    datagram standing for a closed connection), the ``validator`` (an async one is awaited under
    ``header_timeout``) and ``max_header_size`` apply; the other fields are about connections.

    Datagrams that fail (truncated, invalid, v1, a stream transport, refused by the policy or the
    validator) are dropped, counted in :meth:`statistics` and logged on the ``proxyproto`` logger;
    ``receive()`` never raises for them. Iterating (``async for``) ends once :meth:`aclose` is
    called, from the loop's body or another task.
    """

    def __init__(
        self, transport_socket: UDPSocket, config: ProxyProtocolConfig | None = None
    ) -> None:
        #: The UDP socket datagrams are read from and replies sent on.
        self.transport_socket = transport_socket
        #: The configuration in force.
        self.config = config or _DEFAULT_CONFIG
        self._received = 0
        self._delivered = 0
        self._direct = 0
        self._dropped = dict.fromkeys(RefusalKind, 0)
        self._log = RefusalLog(
            anyio.current_time,
            "dropped datagram from %s: %s",
            "dropped datagrams",
            "datagram from %s dropped",
        )
        self._closed = False

    async def __anext__(self) -> ProxiedDatagram:
        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            # A server loop (``async for``) stops when another task, or its own body, closes
            # the socket: closing is how a UDP server is told to stop.
            if self._closed:
                raise StopAsyncIteration from None
            raise

    async def receive(self) -> ProxiedDatagram:
        """The next deliverable datagram; those dropped on the way are counted and logged.

        :raises anyio.ClosedResourceError: the socket was closed.
        """
        while True:
            data, address = await self.transport_socket.receive()
            # asyncio reports IPv6 senders as 4-tuples; anyio's addresses are (host, port), with
            # a link-local sender's scope id kept as host%scope_id (proxyproto._core.address).
            peer = cast("tuple[str, int]", from_sockaddr(address))
            self._received += 1
            try:
                datagram = await self._judge(data, peer)
            except Refusal as refusal:
                self._dropped[refusal.kind] += 1
                self._log.refused(refusal.kind, peer, refusal.reason)
                continue
            except Exception:
                # Not the sender's doing (a policy or validator that raised): a traceback helps.
                self._dropped[RefusalKind.ERROR] += 1
                self._log.failed(peer)
                continue
            self._delivered += 1
            if datagram.header is None or datagram.destination is None:
                self._direct += 1
            return datagram

    async def _judge(self, data: bytes, peer: tuple[str, int]) -> ProxiedDatagram:
        config = self.config
        policy = resolve(config.policy, peer)
        action, header, payload = judge_datagram(policy, data, config.max_header_size)
        if action is Action.DIRECT or header is None:
            return ProxiedDatagram(payload, peer, None, peer, header)
        if config.validator is not None:
            pending = validate(config.validator, header, peer)
            if pending is not None:
                with anyio.move_on_after(config.header_timeout) as scope:
                    await pending
                if scope.cancelled_caught:
                    raise validator_timed_out(config.header_timeout)
        if not carries_address(header):
            return ProxiedDatagram(payload, peer, None, peer, header)
        return ProxiedDatagram(payload, header.source, header.destination, peer, header)

    def statistics(self) -> DatagramStatistics:
        """The counters so far."""
        return DatagramStatistics(
            received=self._received,
            delivered=self._delivered,
            direct=self._direct,
            dropped={kind.value: count for kind, count in self._dropped.items() if count},
        )

    async def send(self, payload: bytes, to: tuple[str, int]) -> None:
        """Send ``payload`` as it is to ``to``, usually a datagram's ``peer`` (the proxy)."""
        await self.transport_socket.send((payload, to))

    async def reply(
        self, datagram: ProxiedDatagram, payload: bytes, *, with_header: bool = False
    ) -> None:
        """Send ``payload`` back to the proxy that relayed ``datagram``, for its client.

        The reply goes to ``datagram.peer``, the real sender: the proxy keeps the flow's state
        and relays it to the client. Proxies that put a PROXY header on the datagrams they
        forward expect replies without one, the default. ``with_header=True`` puts the
        received header's mirror in front (source and destination swapped, DGRAM), for a
        proxy documented to route replies by it.

        :raises HeaderEncodingError: ``with_header`` for a datagram whose header carried no
            addresses (or that had no header).
        """
        if with_header:
            received = datagram.header
            if (
                received is None
                or received.command is not Command.PROXY
                or received.source is None
                or received.destination is None
            ):
                raise HeaderEncodingError(
                    "with_header: the datagram had no header with addresses to mirror"
                )
            header = Header.proxy(received.destination, received.source, transport=Transport.DGRAM)
            payload = build_datagram(header, payload)
        await self.transport_socket.send((payload, datagram.peer))

    async def aclose(self) -> None:
        self._closed = True
        await self.transport_socket.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self.transport_socket.extra_attributes


# --- the sending side --------------------------------------------------------------------------


def build_datagram(header: Header, payload: bytes, *, crc32c: bool = False) -> bytes:
    """One datagram: ``header`` (v2, DGRAM or LOCAL) and ``payload`` (spec 2.2).

    >>> header = Header.proxy(("192.0.2.1", 5353), ("198.51.100.7", 53), transport=Transport.DGRAM)
    >>> parse_datagram(build_datagram(header, b"query"))[1]
    b'query'

    :raises HeaderEncodingError: a v1 header (it can only describe TCP), or a PROXY header whose
        transport is not DGRAM (a receiver must refuse it).
    """
    if header.version != 2:
        raise HeaderEncodingError("a datagram needs a v2 header; v1 describes TCP only")
    if header.command is Command.PROXY and header.transport is not Transport.DGRAM:
        raise HeaderEncodingError(
            f"a datagram's header must declare the DGRAM transport, not {header.transport.name}"
        )
    return header.to_bytes(crc32c=crc32c) + bytes(payload)


async def send_datagram(
    udp_socket: UDPSocket | ConnectedUDPSocket,
    header: Header,
    payload: bytes,
    to: tuple[str, int] | None = None,
    *,
    crc32c: bool = False,
) -> None:
    """Send ``payload`` with ``header`` in front: what a proxy or relay does for each datagram.

    ``to`` is the destination for an unconnected :class:`~anyio.abc.UDPSocket`; leave it out for
    a :class:`~anyio.abc.ConnectedUDPSocket`.

    >>> async def forward(udp: anyio.abc.UDPSocket, client, payload: bytes) -> None:
    ...     header = Header.proxy(client, ("198.51.100.7", 53), transport=Transport.DGRAM)
    ...     await send_datagram(udp, header, payload, ("10.0.0.5", 53))

    :raises HeaderEncodingError: as :func:`build_datagram`.
    """
    datagram = build_datagram(header, payload, crc32c=crc32c)
    if isinstance(udp_socket, ConnectedUDPSocket):
        if to is not None:
            raise TypeError("a connected UDP socket sends to its peer: leave 'to' out")
        await udp_socket.send(datagram)
        return
    if to is None:
        raise TypeError("an unconnected UDP socket needs 'to', the (host, port) to send to")
    await udp_socket.send((datagram, to))
