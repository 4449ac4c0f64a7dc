"""The anyio adapter: :class:`ProxiedStream`, :class:`ProxyProtocolListener`, the client side.

Theory of operation
-------------------
Nothing here decides anything: the handshake engine (:mod:`proxyproto._handshake.engine`) does, as
for every surface. A handshake (:class:`proxyproto._handshake.engine.Handshakes`, run with anyio's
cancel scopes, events and clock) reads bytes from the connection into the engine's
:class:`~proxyproto._handshake.engine.Handshake` under one deadline (``header_timeout``) that also
covers the wait for a handshake slot and the validator, and the engine says whether the connection
is handed over with the header's addresses, handed over as a direct connection, or closed. Bytes
read past the header (or, for a direct connection, every byte read) are served first by the
:class:`ProxiedStream`; after them, ``receive()`` goes straight to the transport.

The listener runs each handshake in the connection's own task (the inner listener's ``serve``
starts one per connection), so a slow client never holds up ``accept()``. A proxy sends its whole
header at once, so nearly every handshake is over after its first read. The others -- the peer
has sent part of a header and the rest has not come -- are the ones bounded (the engine's
:class:`~proxyproto._handshake.engine.Admission`): when ``max_pending_handshakes`` of them are under
way, a new one evicts the oldest of those that have been partial for ``eviction_age``, as many as it
takes, and goes on reading at once -- it never waits for a slot. A connection that has sent
nothing is not counted (it costs a task and a socket until its deadline), so a flood of idle
connections cannot keep real clients out; a real header split across segments completes in a
round trip, while slow senders grow old and are the ones evicted; a burst of real clients
arriving together is younger than ``eviction_age`` and never evicts itself.

A refused connection (invalid or missing header, policy, validator, timeout, eviction) is closed
forcefully, counted, and logged on the ``proxyproto`` logger with the peer's address (the first
ten refusals of each kind in ten seconds one line each, then a summary line per window); the
handler never sees it and the listener keeps serving. Exceptions from the handler propagate, as
with anyio's own listeners.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial, wraps
from typing import Any

import anyio
import attrs
from anyio.abc import ByteStream, Listener, SocketAttribute, SocketStream, TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream
from anyio.streams.tls import TLSStream

from proxyproto._core.address import from_sockaddr
from proxyproto._core.model import Address, Header, Transport
from proxyproto._handshake.config import ProxyProtocolConfig
from proxyproto._handshake.engine import (
    Handshake,
    Handshakes,
    ListenerStatistics,
    Primitives,
    Refusal,
    read_handshake,
)
from proxyproto._handshake.policy import Action, PeerAddress, Policy, carries_address

from . import accept
from .backpressure import bound_reading, first_read_nowait

__all__ = [
    "ListenerStatistics",
    "ProxiedStream",
    "ProxyAttribute",
    "ProxyProtocolListener",
    "connect_tcp",
    "header_for",
    "send_header",
]

logger = logging.getLogger("proxyproto")

_DEFAULT_CONFIG = ProxyProtocolConfig()


class ProxyAttribute(anyio.TypedAttributeSet):
    """Attributes of a :class:`ProxiedStream`, read with ``stream.extra(ProxyAttribute.x)``.

    ``header`` is there when a header was received (under ``IGNORE`` too); ``source`` and
    ``destination`` when its addresses are in use. ``peer_address`` is always there.
    """

    #: The PROXY header as received.
    header: Header = anyio.typed_attribute()
    #: The client's address, from the header (also ``SocketAttribute.remote_address``).
    source: Address = anyio.typed_attribute()
    #: The address the client connected to, from the header.
    destination: Address = anyio.typed_attribute()
    #: The real peer of the connection: the proxy, or the client of a direct connection.
    peer_address: PeerAddress = anyio.typed_attribute()
    #: The policy this connection was handled with.
    policy: Policy = anyio.typed_attribute()


class ProxiedStream(ByteStream):
    """A byte stream that has been through the PROXY handshake.

    It answers ``SocketAttribute.remote_address`` (and ``remote_port``) with the header's source
    when the header carries addresses and the policy uses them; the local address, the family and
    the raw socket stay the real ones (``raw_socket.getpeername()`` still shows the proxy). The
    rest is under :class:`ProxyAttribute`. Bytes that arrived after the header are served first.

    Usually made by :meth:`wrap` or a :class:`ProxyProtocolListener`.
    """

    def __init__(
        self,
        transport_stream: ByteStream,
        header: Header | None = None,
        *,
        leftover: bytes = b"",
        use_addresses: bool = True,
        policy: Policy = Policy.REQUIRE,
        peer_address: PeerAddress = None,
        transport_attributes: Mapping[Any, Callable[[], Any]] | None = None,
    ) -> None:
        #: The stream the header was read from.
        self.transport_stream = bound_reading(transport_stream)
        #: The header, or ``None`` for a direct connection.
        self.header = header
        self._leftover = leftover
        if peer_address is None:
            peer_address = transport_stream.extra(SocketAttribute.remote_address, None)
        self._use_addresses = use_addresses
        self._policy = policy
        self._peer_address = peer_address
        # A snapshot of the transport's attributes when the caller already has one: anyio's
        # socket streams rebuild theirs, peer lookups included, on every access.
        self._transport_attributes = transport_attributes
        # Built when first asked for: anyio's socket streams rebuild theirs on every access, a
        # cost per connection that servers which never look should not pay.
        self._extra: Mapping[Any, Callable[[], Any]] | None = None
        if type(self).send is ProxiedStream.send:
            # Nothing of ours to do per chunk sent: the transport's own send().
            self.send = self.transport_stream.send  # type: ignore[method-assign]
        if not leftover:
            self._serve_transport_directly()

    @classmethod
    async def wrap(
        cls, transport_stream: ByteStream, config: ProxyProtocolConfig | None = None
    ) -> ProxiedStream:
        """Read the header from ``transport_stream`` and return the ready stream.

        The handshake follows ``config`` (policy, timeout, validator); its
        ``max_pending_handshakes`` is the listener's business and is ignored here.

        >>> async def handle(stream: anyio.abc.SocketStream) -> None:
        ...     proxied = await ProxiedStream.wrap(stream)
        ...     client = proxied.extra(anyio.abc.SocketAttribute.remote_address)

        :raises InvalidHeader: a broken header (or none, under ``REQUIRE``).
        :raises HeaderRejected: the policy or the validator refused the connection.
        :raises TimeoutError: no complete header within ``header_timeout``.
        :raises anyio.BrokenResourceError: the peer reset the connection before its address could
            be read.
        """
        config = config or _DEFAULT_CONFIG
        attributes = transport_stream.extra_attributes
        peer = _peer_of(attributes)
        try:
            handshake, action = await read_handshake(
                _primitives(), config, peer, transport_stream.receive
            )
        except Refusal as refusal:
            raise refusal.as_error() from refusal.__cause__
        return _stream(transport_stream, attributes, handshake, action)

    def _make_extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        use_addresses, policy, peer = self._use_addresses, self._policy, self._peer_address
        attributes: dict[Any, Callable[[], Any]] = dict(
            self._transport_attributes or self.transport_stream.extra_attributes
        )
        attributes[ProxyAttribute.peer_address] = lambda: peer
        if peer is not None:
            # The address as it was at the handshake: a socket reset since then forgets its
            # peer, and a handler must not find remote_address gone.
            attributes[SocketAttribute.remote_address] = lambda: peer
            if isinstance(peer, tuple):
                peer_port = peer[1]
                attributes[SocketAttribute.remote_port] = lambda: peer_port
        attributes[ProxyAttribute.policy] = lambda: policy
        header = self.header
        if header is None:
            return attributes
        attributes[ProxyAttribute.header] = lambda: header
        if use_addresses and carries_address(header):
            source, destination = header.source, header.destination
            attributes[ProxyAttribute.source] = lambda: source
            attributes[ProxyAttribute.destination] = lambda: destination
            attributes[SocketAttribute.remote_address] = lambda: source
            if isinstance(source, tuple):
                port = source[1]
                attributes[SocketAttribute.remote_port] = lambda: port
            else:
                attributes.pop(SocketAttribute.remote_port, None)
        return attributes

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        if self._extra is None:
            self._extra = self._make_extra_attributes()
        return self._extra

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if max_bytes < 1:
            raise ValueError("max_bytes must be a positive integer")
        if self._leftover:
            chunk, self._leftover = self._leftover[:max_bytes], self._leftover[max_bytes:]
            if not self._leftover:
                self._serve_transport_directly()
            return chunk
        return await self.transport_stream.receive(max_bytes)

    def _serve_transport_directly(self) -> None:
        # Once the bytes read past the header are served, nothing is left to do per chunk: the
        # transport's own receive() takes over, without a layer of ours on every call.
        self.receive = self.transport_stream.receive  # type: ignore[method-assign]

    async def send(self, item: bytes) -> None:
        await self.transport_stream.send(item)

    async def send_eof(self) -> None:
        await self.transport_stream.send_eof()

    async def aclose(self) -> None:
        self._leftover = b""
        self._serve_transport_directly()
        await self.transport_stream.aclose()


def _stream(
    transport: ByteStream,
    attributes: Mapping[Any, Callable[[], Any]] | None,
    handshake: Handshake,
    action: Action,
) -> ProxiedStream:
    """The stream a handshake made: the engine's decisions over ``transport``."""
    keywords = handshake.stream_keywords(action)
    return ProxiedStream(transport, handshake.header, transport_attributes=attributes, **keywords)


class ProxyProtocolListener(Listener[ProxiedStream]):
    """Wraps any anyio listener: every connection goes through the PROXY handshake first.

    >>> async def main() -> None:
    ...     listener = ProxyProtocolListener(
    ...         await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=8000),
    ...         ProxyProtocolConfig(policy=trusted_proxies(["10.0.0.0/8"])),
    ...     )
    ...     await listener.serve(handle)  # handle(stream) gets only ready ProxiedStreams

    TLS terminated here goes on top, the header being cleartext before it:
    ``TLSListener(ProxyProtocolListener(...), ssl_context)``.
    """

    def __init__(self, listener: Listener[Any], config: ProxyProtocolConfig | None = None) -> None:
        #: The listener whose connections are handshaken.
        self.listener = listener
        #: The configuration in force.
        self.config = config or _DEFAULT_CONFIG
        # The engine's: slots and eviction, counters, the refusal log.
        self._engine = Handshakes(self.config, _ANYIO)
        self._counters = self._engine.counters

    async def serve(
        self, handler: Callable[[ProxiedStream], Any], task_group: TaskGroup | None = None
    ) -> None:
        """Accept connections forever; call ``handler`` with each one that passes the handshake.

        Each handshake runs in its connection's own task. Exceptions from ``handler`` propagate
        (as with anyio's listeners): catch what your handler may raise.
        """

        @wraps(handler)
        async def handle(transport: ByteStream) -> None:
            stream, rest = self._handshake_nowait(transport)
            if rest is not None:
                stream = await rest
            if stream is not None:
                await handler(stream)

        # Ours, not the inner listener's serve(): it survives EMFILE and bounds reading.
        await accept.serve(self.listener, handle, task_group)

    @asynccontextmanager
    async def ready_streams(
        self, max_buffer_size: float = 0
    ) -> AsyncIterator[MemoryObjectReceiveStream[ProxiedStream]]:
        """For applications that run their own loop: an iterator of handshaken streams.

        >>> async def main(listener: ProxyProtocolListener) -> None:
        ...     async with listener.ready_streams() as streams, anyio.create_task_group() as tg:
        ...         async for stream in streams:
        ...             tg.start_soon(handle, stream)

        Handshakes run in tasks of their own while you iterate, so a slow client never holds
        up the others. Streams not taken when the block exits are closed.
        """
        send, receive = anyio.create_memory_object_stream[ProxiedStream](max_buffer_size)

        async def deliver(stream: ProxiedStream) -> None:
            try:
                await send.send(stream)
            except BaseException:
                await anyio.aclose_forcefully(stream)
                raise

        with send, receive:
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(self.serve, deliver, task_group)
                try:
                    yield receive
                finally:
                    task_group.cancel_scope.cancel()
            # Every deliver() is over: what is still buffered was never taken.
            while True:
                try:
                    stream = receive.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
                await anyio.aclose_forcefully(stream)

    async def handshake(self, transport: ByteStream) -> ProxiedStream | None:
        """Run the handshake of one accepted connection, under this listener's bounds.

        Returns the ready stream, or ``None`` when the connection was refused (it is then closed,
        counted and logged). For servers that accept connections themselves.
        """
        stream, rest = self._handshake_nowait(transport)
        return stream if rest is None else await rest

    def _handshake_nowait(
        self, transport: ByteStream
    ) -> tuple[ProxiedStream | None, Awaitable[ProxiedStream | None] | None]:
        """:meth:`handshake` as far as it goes without waiting: ``(stream, None)`` for a header
        that came whole (no coroutine at all then), else ``(None, the rest to await)``."""
        engine = self._engine
        engine.io = _primitives()
        raw = _raw_socket(transport)
        if raw is not None:
            # The peer straight from the socket: anyio's extra_attributes would build a dict of
            # every attribute (two system calls) to answer it; the stream builds it if asked.
            find_peer = _peer_finder(transport, raw)
            make_stream = partial(_stream, transport, None)
            started = engine.start(find_peer, _nowait(transport, raw))
            stream = engine.run_nowait(started, make_stream)
            if stream is not None:
                return stream, None
            return None, engine.run(
                transport, find_peer, transport.receive, make_stream, started=started
            )
        # Read once: anyio asks the socket each time, and a reset socket no longer knows.
        attributes = transport.extra_attributes
        return None, engine.run(
            transport,
            partial(_peer_of, attributes),
            transport.receive,
            partial(_stream, transport, attributes),
        )

    def statistics(self) -> ListenerStatistics:
        """The counters so far."""
        return self._counters.snapshot()

    async def aclose(self) -> None:
        await self.listener.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self.listener.extra_attributes


class _PeerGone(anyio.BrokenResourceError):
    """The socket was reset before the handshake could read its peer's address."""


#: What the engine's handshakes wait with, on anyio.
_ANYIO = Primitives.of(anyio, end_of_stream=(anyio.EndOfStream,), peer_gone=_PeerGone)
#: The same with the running backend's own cancel scopes and clock (its ``CancelScope`` class, the
#: event loop's ``time()``; on trio, trio's): anyio's front ends look the backend up on each call,
#: and on trio wrap trio's scopes -- about 15 us of a 300 us connection there.
_BY_BACKEND: dict[str, Primitives] = {}


def _asyncio_time() -> float:
    return asyncio.get_running_loop().time()


def _primitives() -> Primitives:
    """The engine's primitives for the backend anyio runs on now."""
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        backend = "trio"
    elif asyncio._get_running_loop() is not None:
        backend = "asyncio"
    else:  # neither: let anyio say what it runs on
        return _ANYIO
    io = _BY_BACKEND.get(backend)
    if io is None:
        if trio is not None and backend == "trio":
            io = attrs.evolve(_ANYIO, cancel_scope=trio.CancelScope, current_time=trio.current_time)
        else:
            scope = type(anyio.CancelScope())  # the backend's class, which anyio's makes
            io = attrs.evolve(_ANYIO, cancel_scope=scope, current_time=_asyncio_time)
        io = _BY_BACKEND[backend] = io
    return io


def _peer_of(attributes: Mapping[Any, Callable[[], Any]]) -> PeerAddress:
    """The real peer's address from a transport's attributes; ``None`` if it has none."""
    getter = attributes.get(SocketAttribute.remote_address)
    if getter is None:
        if SocketAttribute.raw_socket in attributes:
            # A socket that cannot say who its peer is has been reset already.
            raise _PeerGone("the peer reset the connection before its header was read")
        return None
    try:
        peer: PeerAddress = getter()
    except OSError as error:
        raise _PeerGone(f"the peer's address cannot be read: {error}") from None
    return peer


def _raw_socket(transport: ByteStream) -> Any:
    """The socket under one of anyio's own socket streams (``None`` for any other stream).

    anyio's streams all have it (the abstract ``_raw_socket`` their attributes are made of);
    a stream without one, or with something else there, takes the way of its attributes.
    """
    kind = type(transport)
    is_socket_stream = _SOCKET_STREAMS.get(kind)
    if is_socket_stream is None:  # an ABC's isinstance() is slow: once per class
        is_socket_stream = _SOCKET_STREAMS[kind] = issubclass(kind, SocketStream)
    if not is_socket_stream:
        return None
    raw = getattr(transport, "_raw_socket", None)
    return raw if callable(getattr(raw, "getpeername", None)) else None


def _nowait(transport: ByteStream, raw: Any) -> Callable[[], bytes | None] | None:
    """The first read of a handshake, without waiting: where the stream reads ``raw`` itself
    when asked (anyio's trio backend, UNIX sockets), a stdlib socket in non-blocking mode; on
    asyncio, where a TCP stream's transport reads the socket (``raw`` is asyncio's
    ``TransportSocket``), what its protocol has queued or else the socket
    (:func:`~proxyproto._adapters.backpressure.first_read_nowait`)."""
    if isinstance(raw, socket.socket) and raw.gettimeout() == 0.0:
        return partial(accept.read_nowait, raw.recv)
    return first_read_nowait(transport, raw)


#: Per stream class: whether it is an anyio SocketStream.
_SOCKET_STREAMS: dict[type, bool] = {}


def _peer_finder(transport: ByteStream, raw: Any) -> Callable[[], PeerAddress]:
    """How to find the peer of ``transport`` (whose socket is ``raw``): on asyncio, the address
    its transport read when it was made (``get_extra_info("peername")``, no system call), else
    the socket's."""
    asyncio_transport = getattr(transport, "_transport", None)
    if asyncio_transport is not None and isinstance(asyncio_transport, asyncio.BaseTransport):
        return partial(_peer_of_transport, asyncio_transport, raw)
    return partial(_peer_of_socket, raw)


def _peer_of_transport(asyncio_transport: asyncio.BaseTransport, raw: Any) -> PeerAddress:
    peername = asyncio_transport.get_extra_info("peername")
    if peername is None:  # it could not tell (reset already): the socket says why
        return _peer_of_socket(raw)
    return from_sockaddr(peername)


def _peer_of_socket(raw: Any) -> PeerAddress:
    """:func:`_peer_of` from the socket itself, in the shape of anyio's ``remote_address``."""
    try:
        sockaddr = raw.getpeername()
    except OSError as error:
        raise _PeerGone(f"the peer's address cannot be read: {error}") from None
    return from_sockaddr(sockaddr)


# --- the client side ---------------------------------------------------------------------------


async def send_header(stream: ByteStream, header: Header, *, crc32c: bool = False) -> None:
    """Send ``header`` on ``stream``: what a proxy does first on each connection it opens."""
    await stream.send(header.to_bytes(crc32c=crc32c))


async def connect_tcp(
    remote_host: str,
    remote_port: int,
    *,
    header: Header,
    crc32c: bool = False,
    ssl_context: Any = None,
    tls_hostname: str | None = None,
    tls_standard_compatible: bool = True,
    **kwargs: Any,
) -> ByteStream:
    """Connect, send ``header``, and (with ``ssl_context``) start TLS after it.

    The header always goes first, in cleartext, as the spec requires; other keywords go to
    :func:`anyio.connect_tcp`.

    >>> async def main() -> None:
    ...     header = Header.proxy(("203.0.113.7", 51234), ("198.51.100.10", 443))
    ...     stream = await connect_tcp("127.0.0.1", 8000, header=header)
    """
    stream: ByteStream = await anyio.connect_tcp(remote_host, remote_port, **kwargs)
    try:
        await send_header(stream, header, crc32c=crc32c)
        if ssl_context is not None:
            stream = await TLSStream.wrap(
                stream,
                hostname=tls_hostname or remote_host,
                ssl_context=ssl_context,
                standard_compatible=tls_standard_compatible,
            )
    except BaseException:
        await anyio.aclose_forcefully(stream)
        raise
    return stream


def header_for(stream: ByteStream, *, version: int = 2, tlvs: Any = None) -> Header:
    """The PROXY header that describes ``stream`` to a next hop: its client and where it came in.

    For a :class:`ProxiedStream` that is the header's client and destination, so a chain of
    relays keeps the original client; otherwise the connection's own peer and local address.
    LOCAL (``Header.local()``) when the stream has no IP or UNIX address to describe.
    """
    source = stream.extra(SocketAttribute.remote_address, None)
    destination = stream.extra(ProxyAttribute.destination, None)
    if destination is None:
        destination = stream.extra(SocketAttribute.local_address, None)
    if isinstance(source, tuple) and isinstance(destination, tuple):
        source, destination = (source[0], source[1]), (destination[0], destination[1])
    elif not (isinstance(source, str) and isinstance(destination, str)):
        return Header.local()
    if version == 1 and not isinstance(source, tuple):
        return Header.unknown()
    return Header.proxy(source, destination, version=version, transport=Transport.STREAM, tlvs=tlvs)
