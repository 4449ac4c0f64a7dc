"""The anyio adapter: :class:`ProxiedStream`, :class:`ProxyProtocolListener`, the client side.

Theory of operation
-------------------
A handshake reads bytes from the connection into a :class:`HeaderParser` until it yields a header
or an error, under one deadline (``header_timeout``) that also covers the wait for a handshake
slot. The policy layer (:func:`proxyproto._policy.judge_reading`) then says whether the
connection is handed over with the header's addresses, handed over as a direct connection, or
closed. Bytes read
past the header (or, for a direct connection, every byte read) are served first by the
:class:`ProxiedStream`; after them, ``receive()`` goes straight to the transport.

The listener runs each handshake in the connection's own task (the inner listener's ``serve``
starts one per connection), so a slow client never holds up ``accept()``. A proxy sends its whole
header at once, so nearly every handshake is over after its first read. The others -- the peer
has sent part of a header and the rest has not come -- are the ones bounded: at most
``max_pending_handshakes`` of them at once, with slots from an anyio
:class:`~anyio.CapacityLimiter`. A connection that has sent nothing holds no slot (it costs a task
and a socket until its deadline), so a flood of idle connections cannot keep real clients out.
A partial handshake that finds every slot taken evicts the one that has held its slot the
longest, if that one is older than ``eviction_age``, and takes over its slot (the token changes
hands directly, so it does not queue behind other waiters); otherwise it waits for a free slot,
but only until the oldest grows old enough to evict, and tries again. Slow senders grow old and
are the ones evicted, while a burst of real clients arriving together never evict each other.

A refused connection (invalid or missing header, policy, validator, timeout, eviction) is closed
forcefully, counted, and logged on the ``proxyproto`` logger in one line with the peer's address;
the handler never sees it and the listener keeps serving. Exceptions from the handler propagate,
as with anyio's own listeners.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial, wraps
from typing import Any

import anyio
import attrs
from anyio.abc import ByteStream, Listener, SocketAttribute, TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream
from anyio.streams.tls import TLSStream

from ._config import ProxyProtocolConfig
from ._errors import HeaderRejected, InvalidHeader, ProxyProtocolError
from ._model import Address, Header, Transport
from ._parser import NEED_DATA, HeaderParser
from ._policy import (
    EMPTY,
    Action,
    PeerAddress,
    Policy,
    Refusal,
    carries_address,
    judge_reading,
    refusal_level,
    resolve,
    sent_nothing,
    validator_refusal,
)
from ._text import format_address

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
        self.transport_stream = transport_stream
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
        handshake = _Handshake(transport_stream, config)
        with anyio.move_on_after(config.header_timeout) as scope:
            await handshake.read()
        try:
            return await handshake.judge(scope)
        except Refusal as refusal:
            if refusal.kind == "timeout":
                raise TimeoutError(refusal.reason) from None
            if refusal.kind in ("policy", "validator"):
                raise HeaderRejected(refusal.reason) from refusal.__cause__
            raise InvalidHeader(refusal.reason) from refusal.__cause__

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


@attrs.frozen
class HandshakeOutcome:
    """What a handshake decided, for an adapter that serves the connection over a transport of its
    own (``proxyproto.trio``): :func:`take_outcome` hands it over."""

    header: Header | None
    #: The bytes read past the header, not yet served.
    leftover: bytes
    #: Whether the header's addresses replace the connection's.
    use_addresses: bool
    policy: Policy
    peer_address: PeerAddress


def take_outcome(stream: ProxiedStream) -> HandshakeOutcome:
    """The decisions of ``stream``'s handshake, and its unread bytes: they are the caller's now
    (``stream`` is not read from again)."""
    leftover, stream._leftover = stream._leftover, b""
    return HandshakeOutcome(
        stream.header, leftover, stream._use_addresses, stream._policy, stream._peer_address
    )


class _Handshake:
    """One connection's handshake: what was read, then what to make of it."""

    def __init__(self, transport: ByteStream, config: ProxyProtocolConfig) -> None:
        self.transport = transport
        self.config = config
        # Read once: anyio asks the socket each time, and a reset socket no longer knows.
        self.attributes: Mapping[Any, Callable[[], Any]] = transport.extra_attributes
        self.peer = _peer_of(self.attributes)
        #: Chosen by read(), from the peer: a policy callable is the user's code and may raise.
        self.policy = Policy.REQUIRE
        #: Whether the stream made keeps its real addresses (set by judge()).
        self.direct = True
        self.parser = HeaderParser(max_header_size=config.max_header_size, versions=config.versions)
        self.error: ProxyProtocolError | None = None
        #: True while waiting for a handshake slot.
        self.waiting_for_slot = False
        #: Set when a newer connection took this one's slot.
        self.evicted = False

    async def read(self, take_slot: Callable[[], Awaitable[None]] | None = None) -> None:
        """Feed the parser until it has a header or an error. The caller sets the deadline.

        ``take_slot`` is awaited once, when the first bytes did not complete the header: a
        connection that sent nothing yet holds no slot, and one whose header came whole (the
        common case: a proxy sends it at once) never needs one.
        """
        self.policy = resolve(self.config.policy, self.peer)
        if self.policy is Policy.SKIP:
            return
        parser = self.parser
        try:
            while parser.next_event() is NEED_DATA:
                if take_slot is not None and parser.trailing_data:
                    self.waiting_for_slot = True
                    await take_slot()
                    self.waiting_for_slot = False
                    take_slot = None
                try:
                    data = await self.transport.receive()
                except anyio.EndOfStream:
                    data = b""
                parser.receive_data(data)
        except ProxyProtocolError as error:
            self.error = error

    async def judge(self, deadline: anyio.CancelScope) -> ProxiedStream:
        """Decide, run the validator, build the stream; raise :class:`Refusal` to close."""
        config, parser, policy = self.config, self.parser, self.policy
        timeout = config.header_timeout
        if self.evicted:
            raise Refusal("evicted", "evicted: every handshake slot was taken, this one longest")
        if self.waiting_for_slot:
            raise Refusal("timeout", f"no handshake slot within {timeout:g}s")
        if policy is Policy.SKIP:
            return ProxiedStream(
                self.transport,
                policy=policy,
                peer_address=self.peer,
                transport_attributes=self.attributes,
            )
        header = parser.header
        timed_out = header is None and deadline.cancelled_caught
        action = judge_reading(
            policy, parser, self.error, timed_out=timed_out, header_timeout=timeout
        )
        self.direct = action is not Action.PROXIED or not carries_address(header)
        if action is Action.PROXIED and config.validator is not None and header is not None:
            with anyio.CancelScope(deadline=deadline.deadline) as scope:
                accepted = await _validate(config, header, self.peer)
            if scope.cancelled_caught:
                raise Refusal("timeout", f"the validator took more than {timeout:g}s")
            if not accepted:
                raise Refusal("validator", validator_refusal())
        return ProxiedStream(
            self.transport,
            header,
            leftover=parser.trailing_data,
            use_addresses=action is Action.PROXIED,
            policy=policy,
            peer_address=self.peer,
            transport_attributes=self.attributes,
        )


async def _validate(config: ProxyProtocolConfig, header: Header, peer: PeerAddress) -> bool:
    assert config.validator is not None
    try:
        verdict = config.validator(header, peer)
        if inspect.isawaitable(verdict):
            verdict = await verdict
    except HeaderRejected as rejection:
        raise Refusal("validator", validator_refusal(rejection)) from None
    return bool(verdict)


@attrs.frozen
class ListenerStatistics:
    """A snapshot of a :class:`ProxyProtocolListener`'s counters, for operators."""

    #: Connections handed to the handler (proxied and direct).
    accepted: int
    #: Of those, direct connections (no header used).
    direct: int
    #: Connections closed, by reason: ``empty`` (the peer closed or reset before sending a byte:
    #: a health check, say), ``missing`` (no header where one is required), ``invalid`` (a broken
    #: header), ``closed`` (the peer closed before its header was complete), ``policy`` (a header
    #: its policy forbids), ``validator``, ``error`` (a network error).
    rejected: Mapping[str, int]
    #: Connections closed because their header did not come within ``header_timeout``.
    timed_out: int
    #: Connections closed to make room for a newer one (see ``eviction_age``).
    evicted: int
    #: Handshakes under way now (waiting for a slot or reading).
    in_flight: int


@attrs.define(eq=False)
class _Pending:
    """One handshake holding (or about to hold) a slot. Its identity is the limiter's borrower."""

    scope: anyio.CancelScope
    handshake: _Handshake
    started: float = 0.0
    #: The borrower object the slot's token is held under: ours, or one taken over by eviction.
    token: object | None = None


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
        self._limiter = anyio.CapacityLimiter(self.config.max_pending_handshakes)
        # Handshakes holding a slot and reading, oldest first.
        self._reading: OrderedDict[_Pending, None] = OrderedDict()
        self._accepted = 0
        self._direct = 0
        self._rejected: Counter[str] = Counter()
        self._in_flight = 0

    async def serve(
        self, handler: Callable[[ProxiedStream], Any], task_group: TaskGroup | None = None
    ) -> None:
        """Accept connections forever; call ``handler`` with each one that passes the handshake.

        Each handshake runs in its connection's own task. Exceptions from ``handler`` propagate
        (as with anyio's listeners): catch what your handler may raise.
        """

        @wraps(handler)
        async def handle(transport: ByteStream) -> None:
            stream = await self.handshake(transport)
            if stream is not None:
                await handler(stream)

        await self.listener.serve(handle, task_group)

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
        config = self.config
        peer: PeerAddress = None
        handshake: _Handshake | None = None
        self._in_flight += 1
        try:
            handshake = _Handshake(transport, config)
            peer = handshake.peer
            with anyio.move_on_after(config.header_timeout) as scope:
                pending = _Pending(scope, handshake)
                try:
                    await handshake.read(partial(self._take_slot, pending))
                finally:
                    self._give_slot(pending)
            stream = await handshake.judge(scope)
        except Refusal as refusal:
            await self._refuse(transport, peer, refusal.kind, refusal.reason)
            return None
        except _PeerGone:
            # Reset before its address could be read: nothing was read from it either.
            await self._refuse(transport, peer, "empty", EMPTY)
            return None
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as error:
            if handshake is not None and sent_nothing(handshake.parser):
                await self._refuse(transport, peer, "empty", EMPTY)
            else:
                await self._refuse(transport, peer, "error", f"{type(error).__name__}: {error}")
            return None
        except Exception:
            # Not the peer's doing (a policy or validator that raised, say): a traceback helps.
            await anyio.aclose_forcefully(transport)
            self._rejected["error"] += 1
            logger.exception("PROXY handshake with %s failed", _show(peer))
            return None
        except BaseException:
            await anyio.aclose_forcefully(transport)
            raise
        finally:
            self._in_flight -= 1
        self._accepted += 1
        if handshake.direct:
            self._direct += 1
        return stream

    async def _take_slot(self, pending: _Pending) -> None:
        while pending.token is None:
            wait = math.inf
            if self._limiter.available_tokens < 1:
                if self._evict_oldest(pending):
                    break
                if self._reading:
                    # Wait for a slot, but only until the oldest handshake becomes evictable:
                    # the limiter's queue is first-come-first-served, and in a flood the
                    # connections ahead are idle ones.
                    oldest = next(iter(self._reading))
                    wait = oldest.started + self.config.eviction_age - anyio.current_time()
            with anyio.move_on_after(max(wait, 0.0)):
                await self._limiter.acquire_on_behalf_of(pending)
                pending.token = pending
        pending.started = anyio.current_time()
        self._reading[pending] = None

    def _evict_oldest(self, newcomer: _Pending) -> bool:
        """Give ``newcomer`` the slot of the oldest handshake if that one is old enough."""
        if not self._reading:
            return False
        oldest = next(iter(self._reading))
        if anyio.current_time() - oldest.started < self.config.eviction_age:
            return False
        # The newcomer takes the slot over directly: no await between here and its use.
        del self._reading[oldest]
        oldest.handshake.evicted = True
        newcomer.token, oldest.token = oldest.token, None
        oldest.scope.cancel()
        return True

    def _give_slot(self, pending: _Pending) -> None:
        self._reading.pop(pending, None)
        if pending.token is not None:
            self._limiter.release_on_behalf_of(pending.token)
            pending.token = None

    async def _refuse(
        self, transport: ByteStream, peer: PeerAddress, kind: str, reason: str
    ) -> None:
        await anyio.aclose_forcefully(transport)
        self._rejected[kind] += 1
        logger.log(refusal_level(kind), "refused connection from %s: %s", _show(peer), reason)

    def statistics(self) -> ListenerStatistics:
        """The counters so far."""
        rejected = {k: v for k, v in self._rejected.items() if k not in ("timeout", "evicted")}
        return ListenerStatistics(
            accepted=self._accepted,
            direct=self._direct,
            rejected=rejected,
            timed_out=self._rejected["timeout"],
            evicted=self._rejected["evicted"],
            in_flight=self._in_flight,
        )

    async def aclose(self) -> None:
        await self.listener.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self.listener.extra_attributes


class _PeerGone(anyio.BrokenResourceError):
    """The socket was reset before the handshake could read its peer's address."""


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


def _show(peer: PeerAddress) -> str:
    return format_address(peer) if peer else "an unknown peer"


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
