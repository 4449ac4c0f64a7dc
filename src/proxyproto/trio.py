"""Native trio: :class:`ProxiedStream`, :class:`ProxyProtocolListener`, :class:`ProxiedSocket`.

Theory of operation
-------------------
Nothing here decides anything: the handshake engine (:mod:`proxyproto._handshake.engine`) does, as
for every other surface. A handshake reads with trio's ``receive_some()`` under trio's
``move_on_after`` and feeds :class:`proxyproto._handshake.engine.Handshake`, which chooses the
policy, judges what was read and asks the validator (awaited under the same deadline). The listener
keeps the engine's :class:`~proxyproto._handshake.engine.Admission` (handshake slots and eviction,
waited for with a :class:`trio.Event`), :class:`~proxyproto._handshake.engine.Counters`
(:meth:`ProxyProtocolListener.statistics`) and :class:`~proxyproto._handshake.engine.RefusalLog`
(lines on the ``proxyproto`` logger), so its behaviour is the anyio listener's by construction.

trio's :meth:`~trio.abc.Listener.accept` returns one connection at a time, but a handshake may
take up to ``header_timeout``, so a handshake that has to wait cannot run inside ``accept()``: a
silent client would hold up everyone behind it. ``accept()`` takes a connection from the inner
listener and starts its handshake at once with what has arrived (``os.read`` of the socket, which
does not wait): behind a proxy the whole header is there, and the stream is returned from that
same call, with no task and no wake-up more than trio's own listener costs. A handshake that must
wait (a header cut in two, a validator to await, a refusal to close and log) goes on in the
background: in the ``handshake_nursery`` given to the listener, or else in a nursery of a trio
system task -- the way trio's own DTLS endpoint runs its background work -- started when first
needed (so the listener works wherever a trio listener does: in :func:`trio.serve_listeners`,
under :class:`trio.SSLListener`) and ended by :meth:`~ProxyProtocolListener.aclose` or by the end
of the run. Its stream is queued, and it cancels the wait of an ``accept()`` blocked on the inner
listener, which then returns it. Running out of descriptors (``EMFILE`` and the like) is waited
out in ``accept()``, as :func:`trio.serve_listeners` does (:mod:`proxyproto._adapters.accept`);
another error from the inner listener's ``accept()`` is raised as it is, and the next call accepts
again. So a silent client costs a task and a socket until its deadline, never anyone else's
``accept()``.
"""

from __future__ import annotations

import contextvars
import errno
import logging
import os
from collections import deque
from functools import partial
from typing import Any

from ._core.extras import require

with require("proxyproto.trio"):
    import trio

from ._adapters import accept
from ._core.address import from_sockaddr, peername, socket_family
from ._core.model import Address, Header
from ._handshake import engine
from ._handshake.config import ProxyProtocolConfig
from ._handshake.engine import ListenerStatistics
from ._handshake.policy import Action, PeerAddress, Policy, carries_address

__all__ = ("ListenerStatistics", "ProxiedSocket", "ProxiedStream", "ProxyProtocolListener")

logger = logging.getLogger("proxyproto")

_DEFAULT_CONFIG = ProxyProtocolConfig()


class ProxiedSocket:
    """The ``socket`` of a :class:`ProxiedStream`: the transport's trio socket, except for the peer.

    :meth:`getpeername` answers with the header's source when the header's addresses are in use
    (a PROXY header under ``REQUIRE`` or ``USE``), in the shape of the socket's family: a
    ``(host, port)`` pair on ``AF_INET``, ``(host, port, 0, 0)`` on ``AF_INET6``, a path for a
    header with UNIX addresses (see :ref:`addresses`). Everything else -- ``getsockname()``,
    ``type``, ``fileno()``, socket options -- is the real socket's, and so is ``family``, except
    that a UNIX client shows ``AF_UNIX`` (servers read ``family`` to decide what
    ``getpeername()`` is). An IPv6 client behind a proxy that reached you over IPv4 shows
    ``AF_INET`` with an IPv6 ``getpeername()``. The proxy's address is
    :attr:`ProxiedStream.peer_address`.

    It is not a :class:`trio.socket.SocketType` instance; attribute access is delegated.
    """

    def __init__(self, socket: trio.socket.SocketType, source: Address | None) -> None:
        self._socket = socket
        self._source = source

    def getpeername(self) -> Any:
        """The client's address from the header, or the real peer's when none is in use."""
        source = self._source
        if source is None:
            return self._socket.getpeername()
        return peername(source, self._socket.family)

    @property
    def family(self) -> int:
        """The connection's family, except ``AF_UNIX`` when the client is a UNIX address."""
        return socket_family(self._source, self._socket.family)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._socket, name)

    def __repr__(self) -> str:
        return f"<ProxiedSocket {self._socket!r} peer={self._source!r}>"


class ProxiedStream(trio.abc.HalfCloseableStream):
    """A trio stream that has been through the PROXY handshake.

    Bytes that arrived after the header are served first by :meth:`receive_some`, then the
    transport's. :attr:`socket` answers ``getpeername()`` with the header's client (see
    :class:`ProxiedSocket`), which is where trio servers such as Hypercorn look.

    Usually made by :meth:`wrap` or a :class:`ProxyProtocolListener`.
    """

    def __init__(
        self,
        transport_stream: trio.abc.Stream,
        header: Header | None = None,
        *,
        leftover: bytes = b"",
        use_addresses: bool = True,
        policy: Policy = Policy.REQUIRE,
        peer_address: PeerAddress = None,
    ) -> None:
        #: The stream the header was read from.
        self.transport_stream = transport_stream
        #: The header, or ``None`` for a direct connection (``IGNORE`` keeps it but not its
        #: addresses).
        self.header = header
        #: The policy this connection was handled with.
        self.policy = policy
        if peer_address is None and isinstance(transport_stream, trio.SocketStream):
            try:
                peer_address = _address(transport_stream.socket.getpeername())
            except OSError:
                peer_address = None
        #: The real peer: the proxy, or the client of a direct connection.
        self.peer_address: PeerAddress = peer_address
        self._source = (
            header.source
            if header is not None and use_addresses and carries_address(header)
            else None
        )
        self._leftover = leftover
        self._socket: ProxiedSocket | None = None
        # Sending is the transport's own, without a layer of ours on every call.
        self.send_all = transport_stream.send_all  # type: ignore[method-assign]
        self.wait_send_all_might_not_block = transport_stream.wait_send_all_might_not_block  # type: ignore[method-assign]
        if not leftover:
            self._serve_transport_directly()

    @classmethod
    async def wrap(
        cls, transport_stream: trio.abc.Stream, config: ProxyProtocolConfig | None = None
    ) -> ProxiedStream:
        """Read the header from ``transport_stream`` and return the ready stream.

        The same handshake as :meth:`proxyproto.ProxiedStream.wrap`, errors included; a reset
        connection raises :exc:`trio.BrokenResourceError`. Closing ``transport_stream`` after a
        failure is the caller's business.

        >>> async def handler(transport: trio.SocketStream) -> None:
        ...     stream = await ProxiedStream.wrap(transport)
        ...     client = stream.socket.getpeername()

        :raises proxyproto.InvalidHeader: a broken header (or none, under ``REQUIRE``).
        :raises proxyproto.HeaderRejected: the policy or the validator refused the connection.
        :raises TimeoutError: no complete header within ``header_timeout``.
        """
        config = config or _DEFAULT_CONFIG
        peer = _peer_of(transport_stream)
        receive = partial(transport_stream.receive_some, _RECEIVE_SIZE)
        try:
            handshake, action = await engine.read_handshake(_TRIO, config, peer, receive)
        except engine.Refusal as refusal:
            raise refusal.as_error() from refusal.__cause__
        return _stream(transport_stream, handshake, action)

    @property
    def socket(self) -> ProxiedSocket:
        """The transport's trio socket, answering ``getpeername()`` with the header's client.

        :raises AttributeError: the transport is not a socket stream.
        """
        if self._socket is None:
            transport_socket = getattr(self.transport_stream, "socket", None)
            if transport_socket is None:
                raise AttributeError("the transport stream has no socket")
            self._socket = ProxiedSocket(transport_socket, self._source)
        return self._socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if not self._leftover:
            return await self.transport_stream.receive_some(max_bytes)
        await trio.lowlevel.checkpoint()
        size = len(self._leftover) if max_bytes is None else max_bytes
        chunk, self._leftover = self._leftover[:size], self._leftover[size:]
        if not self._leftover:
            self._serve_transport_directly()
        return chunk

    def _serve_transport_directly(self) -> None:
        # Once the bytes read past the header are served, the transport's own receive_some()
        # and aclose() take over, without a layer of ours on every call.
        self.receive_some = self.transport_stream.receive_some  # type: ignore[method-assign]
        self.aclose = self.transport_stream.aclose  # type: ignore[method-assign]

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """Half-close, if the transport can.

        :raises NotImplementedError: the transport is not a :class:`trio.abc.HalfCloseableStream`.
        """
        if not isinstance(self.transport_stream, trio.abc.HalfCloseableStream):
            raise NotImplementedError("the transport stream cannot half-close")
        await self.transport_stream.send_eof()

    async def aclose(self) -> None:
        self._leftover = b""
        self._serve_transport_directly()
        await self.transport_stream.aclose()


class ProxyProtocolListener(trio.abc.Listener[ProxiedStream]):
    """Wraps any trio listener: :meth:`accept` returns only connections whose handshake is over.

    The handshake is the engine's, as for :class:`proxyproto.ProxyProtocolListener`, with the
    same ``config``, bounds, eviction, counters and logging; it runs in the background, so a
    silent client never holds up ``accept()`` for the others.

    >>> async def main() -> None:
    ...     listeners = await trio.open_tcp_listeners(8000)
    ...     await trio.serve_listeners(handler, [ProxyProtocolListener(lsn) for lsn in listeners])

    TLS terminated here goes on top, the header being cleartext before it:
    ``trio.SSLListener(ProxyProtocolListener(listener), ssl_context)``.

    Handshakes run in ``handshake_nursery`` when one is given; otherwise in a nursery of a trio
    system task (as trio's own DTLS endpoint runs its background work) started by the first
    :meth:`accept` and ended by :meth:`aclose` or by the end of the run. Either way
    :meth:`aclose` (at the end of ``async with listener``, which :func:`trio.serve_listeners`
    uses) ends the handshakes under way and closes the streams not accepted yet.
    """

    def __init__(
        self,
        listener: trio.abc.Listener[trio.abc.Stream],
        config: ProxyProtocolConfig | None = None,
        *,
        handshake_nursery: trio.Nursery | None = None,
    ) -> None:
        #: The listener whose connections are handshaken.
        self.listener = listener
        #: The configuration in force.
        self.config: ProxyProtocolConfig = config or _DEFAULT_CONFIG
        # The engine's: slots and eviction, counters, the refusal log.
        self._engine = engine.Handshakes(self.config, _TRIO)
        self._counters = self._engine.counters
        # Streams whose handshake ended in the background, for the next accept().
        self._ready: deque[ProxiedStream] = deque()
        # The accept() calls waiting for a connection: a handshake that ends in the background
        # cancels one's wait, to hand it its stream.
        self._accepting: list[trio.CancelScope] = []
        # Handshakes under way, cancelled by aclose(): only needed in a nursery of the caller's;
        # aclose() cancels a system task's nursery whole.
        self._handshakes: set[trio.CancelScope] | None = (
            None if handshake_nursery is None else set()
        )
        self._nursery = handshake_nursery
        # How many handshakes go on in the background, and accept() calls are under way; and
        # whether one waits on the inner socket with no cancel scope (see accept()).
        self._background = 0
        self._callers = 0
        self._waiting_unscoped = False
        self._system_task_started: trio.Event | None = None
        self._system_scope = trio.CancelScope()
        self._closed = False

    async def accept(self) -> ProxiedStream:
        """The next connection whose handshake is over.

        :raises trio.ClosedResourceError: the listener was closed.
        :raises OSError: the inner listener's ``accept()`` failed (``EIO``, say: ``EMFILE`` and
            the like are waited out); the next call accepts again.
        :raises trio.BusyResourceError: another task is waiting in ``accept()`` on a
            :class:`trio.SocketListener` (whose own ``accept()`` raises the same).
        """
        if self._waiting_unscoped:
            raise trio.BusyResourceError("another task is already accepting on this listener")
        self._callers += 1
        try:
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("the listener was closed")
                if self._ready:
                    await trio.lowlevel.checkpoint()
                    if self._ready:
                        return self._ready.popleft()
                    continue
                accepted = await self._wait_for_connection()
                if accepted is None:
                    continue  # a handshake ended in the background, or the listener was closed
                stream = await self._handshake_now(*accepted)
                if stream is not None:
                    return stream
        finally:
            self._callers -= 1

    async def _wait_for_connection(self) -> tuple[trio.abc.Stream, PeerAddress] | None:
        """The inner listener's next connection; ``None`` when a handshake that ended in the
        background (or :meth:`aclose`) cancelled the wait.

        Only a handshake in the background can end while ``accept()`` waits, and only an
        ``accept()`` call starts one: the only call, on a :class:`trio.SocketListener` with none
        in the background, waits without a cancel scope (entering and leaving one costs about a
        tenth of a connection's work), and a second call meanwhile raises
        :class:`trio.BusyResourceError`, as the socket's own ``accept()`` would. :meth:`aclose`
        wakes that wait by closing the socket.
        """
        if (
            self._background
            or self._callers > 1
            or not isinstance(self.listener, trio.SocketListener)
        ):
            with trio.CancelScope() as waiting:
                self._accepting.append(waiting)
                try:
                    return await self._accept_transport()
                finally:
                    self._accepting.remove(waiting)
            return None
        self._waiting_unscoped = True
        try:
            return await self._accept_transport()
        except trio.ClosedResourceError:
            if self._closed:
                raise trio.ClosedResourceError("the listener was closed") from None
            raise
        finally:
            self._waiting_unscoped = False

    async def _handshake_now(
        self, transport: trio.abc.Stream, peer: PeerAddress
    ) -> ProxiedStream | None:
        """The stream of a handshake that needs no wait (a header that came whole, no validator
        to await); else ``None``, the handshake going on in the background."""
        handshakes = self._engine
        try:
            started = handshakes.start(
                partial(_peer_of, transport) if peer is None else partial(_known, peer),
                _nowait(transport),
            )
            stream = handshakes.run_nowait(started, partial(_stream, transport))
            if stream is not None:
                return stream
            nursery = (
                self._nursery if self._nursery is not None else await self._handshake_nursery()
            )
            nursery.start_soon(self._handshake, transport, started)
            self._background += 1
        except BaseException:
            await trio.aclose_forcefully(transport)
            raise
        return None

    async def _accept_transport(self) -> tuple[trio.abc.Stream, PeerAddress]:
        """The inner listener's next connection, and its peer's address when accept() gave it.

        A :class:`trio.SocketListener`'s socket is accepted here, as its own ``accept()`` does
        (the same errors raised, the same ones skipped), to keep the address ``accept()``
        returns: a peer that resets at once (a health check) has none to ask for afterwards.
        Running out of descriptors (``EMFILE`` and the like) is waited out, as
        :func:`trio.serve_listeners` does, and logged rate-limited
        (:mod:`proxyproto._adapters.accept`).
        """
        listener = self.listener
        if not isinstance(listener, trio.SocketListener):
            return await accept.accept_retrying(listener.accept, repr(listener)), None
        while True:
            try:
                sock, sockaddr = await listener.socket.accept()
            except OSError as error:
                if error.errno in _CLOSED_ERRNOS:
                    raise trio.ClosedResourceError from None
                if error.errno in accept.EXHAUSTION_ERRNOS:
                    where = partial(accept.describe_socket, listener.socket)
                    await accept.wait_out(error, where, sleep=trio.sleep)
                elif error.errno not in _SKIPPED_ACCEPT_ERRNOS:
                    raise
            else:
                if accept.exhaustion.in_streak:
                    accept.exhaustion.succeeded()
                return trio.SocketStream(sock), _address(sockaddr)

    async def _handshake(self, transport: trio.abc.Stream, started: engine.Started) -> None:
        """A handshake that waits (for more of the header, or a validator), in the background;
        its stream is handed to an ``accept()``."""
        try:
            if self._handshakes is None:
                stream = await self._run_handshake(transport, started)
            else:
                with trio.CancelScope() as scope:
                    self._handshakes.add(scope)
                    try:
                        if self._closed:
                            scope.cancel()
                        stream = await self._run_handshake(transport, started)
                    finally:
                        self._handshakes.discard(scope)
                if scope.cancelled_caught:
                    return  # the listener was closed: the handshake closed the transport
            if stream is None:
                return  # refused: closed, counted and logged by the handshake
            if self._closed:
                await trio.aclose_forcefully(stream)
                return
            self._ready.append(stream)
            if self._accepting:
                self._accepting[0].cancel()
        finally:
            self._background -= 1

    async def _run_handshake(
        self, transport: trio.abc.Stream, started: engine.Started
    ) -> ProxiedStream | None:
        """Go on with a handshake, under this listener's bounds: the ready stream, or ``None``
        when the connection was refused (it is then closed, counted and logged)."""
        return await self._engine.run(
            transport,
            partial(_known, started.peer),
            partial(transport.receive_some, _RECEIVE_SIZE),
            partial(_stream, transport),
            started=started,
        )

    async def _handshake_nursery(self) -> trio.Nursery:
        if self._nursery is None:
            if self._system_task_started is None:
                self._system_task_started = trio.Event()
                trio.lowlevel.spawn_system_task(
                    self._run_system_nursery,
                    name=f"proxyproto handshakes for {self.listener!r}",
                    context=contextvars.copy_context(),
                )
            await self._system_task_started.wait()
        nursery: trio.Nursery | None = self._nursery
        if nursery is None:  # the system task ended before it could open its nursery
            raise trio.ClosedResourceError("the listener was closed")
        return nursery

    async def _run_system_nursery(self) -> None:
        assert self._system_task_started is not None
        try:
            with self._system_scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self._system_task_started.set()
                    await trio.sleep_forever()
        finally:
            self._system_task_started.set()

    def statistics(self) -> ListenerStatistics:
        """The counters so far (see :class:`proxyproto.ListenerStatistics`)."""
        return self._counters.snapshot()

    async def aclose(self) -> None:
        """Close the inner listener, end the handshakes under way and the streams not accepted."""
        self._closed = True
        for waiting in self._accepting:
            waiting.cancel()
        self._system_scope.cancel()
        for scope in self._handshakes or ():
            scope.cancel()
        try:
            await self.listener.aclose()
        finally:
            while self._ready:
                await trio.aclose_forcefully(self._ready.popleft())


#: ``accept()`` errors that say the listening socket is closed (trio's SocketListener's too).
_CLOSED_ERRNOS = frozenset({errno.EBADF, errno.ENOTSOCK})

#: ``accept()`` errors about one connection that went wrong, not the listener: the next is
#: accepted instead (the ones trio's SocketListener skips, where the platform has them).
_SKIPPED_ACCEPT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EPERM",
        "ECONNABORTED",
        "EPROTO",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
        "ENOSR",
        "ESOCKTNOSUPPORT",
        "EPROTONOSUPPORT",
        "ETIMEDOUT",
        "ECONNRESET",
    )
    if hasattr(errno, name)
)


def _stream(
    transport: trio.abc.Stream, handshake: engine.Handshake, action: Action
) -> ProxiedStream:
    """The stream a handshake made: the engine's decisions over ``transport``."""
    return ProxiedStream(transport, handshake.header, **handshake.stream_keywords(action))


#: How much one read of a handshake asks for (as anyio's ``receive()``).
_RECEIVE_SIZE = 65536


class _PeerGone(trio.BrokenResourceError):
    """The socket was reset before the handshake could read its peer's address."""


def _peer_of(transport: trio.abc.Stream) -> PeerAddress:
    """The real peer's address; ``None`` for a transport that is not a socket stream."""
    if not isinstance(transport, trio.SocketStream):
        return None
    try:
        return _address(transport.socket.getpeername())
    except OSError as error:
        raise _PeerGone(f"the peer's address cannot be read: {error}") from None


def _nowait(transport: trio.abc.Stream) -> Any:
    """The first read of a handshake, without waiting: ``os.read`` of a socket stream's
    descriptor, which trio keeps non-blocking (POSIX; elsewhere ``None``, and the first read is
    ``receive_some()``'s). trio's socket has no synchronous ``recv()`` of its own."""
    if _POSIX and type(transport) is trio.SocketStream:
        return partial(accept.read_nowait, partial(os.read, transport.socket.fileno()))
    return None


_POSIX = os.name == "posix"


def _known(peer: PeerAddress) -> PeerAddress:
    return peer


#: What the engine's handshakes wait with, on trio.
# receive_some() returns b"" at EOF: nothing is raised for it.
_TRIO = engine.Primitives.of(trio, end_of_stream=(), peer_gone=_PeerGone)


def _address(sockaddr: Any) -> PeerAddress:
    """A socket address in the shape of anyio's ``remote_address``: ``(host, port)`` or a path."""
    return from_sockaddr(sockaddr)
