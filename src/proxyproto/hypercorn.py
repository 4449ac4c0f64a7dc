"""Hypercorn with the PROXY protocol: :func:`serve`, on trio or asyncio, whichever runs it.

Theory of operation
-------------------
Hypercorn builds its listeners inside its worker function, with no hook for wrapping them, so
:func:`serve` runs a worker of its own: the same steps as Hypercorn's ``worker_serve`` (lifespan,
``config.create_sockets()``, a :class:`~hypercorn.asyncio.tcp_server.TCPServer` per connection,
graceful shutdown under ``graceful_timeout``) with the listeners wrapped. It uses Hypercorn's own
classes for everything after the handshake: each Hypercorn object the copy mirrors or calls is
listed, with its fingerprint in each release checked, in
:mod:`proxyproto._servers.hypercorn_compat`, and a drift test names any that a release changes.

Nothing here decides anything: each handshake is a :class:`proxyproto.ProxyProtocolListener`'s
(trio: :class:`proxyproto.trio.ProxyProtocolListener`, which runs that same handshake) or, on
asyncio in cleartext, a :class:`proxyproto._adapters.asyncio.TransportHandshake`, with the ``proxy``
config's policy, validator, timeout and log lines, through the same decision functions.

On **trio**, Hypercorn's ``TCPServer`` takes a trio stream and asks ``stream.socket.getpeername()``
(or, under TLS, ``stream.transport_stream.socket``) for ``scope["client"]``. Each socket listener
is wrapped in a :class:`proxyproto.trio.ProxyProtocolListener`, whose streams answer with the
header's client; with TLS, ``trio.SSLListener`` goes on top, as Hypercorn puts it on the socket
listener -- the header is cleartext before TLS.

On **asyncio**, Hypercorn runs ``asyncio.start_server``, whose ``TCPServer`` wants an
``asyncio.StreamReader`` / ``StreamWriter`` pair; with TLS in the transport, which would start
TLS on the header's bytes. Cleartext sockets are served by ``loop.create_server`` with a
:class:`_HandshakeProtocol`, which reads the header off the transport
(:class:`proxyproto._adapters.asyncio.TransportHandshake`, as for Uvicorn); once the connection is
accepted it gets the pair ``start_server`` would have made, the bytes after the header fed to
the reader first, and a writer whose ``get_extra_info("socket")`` answers ``getpeername()`` with
the header's client. TLS sockets are anyio listeners instead
(:meth:`anyio.abc.SocketListener.from_socket`, on the running asyncio loop): after the
handshake, TLS is an :class:`anyio.streams.tls.TLSStream` over the proxied stream, so bytes that
came with the header (a ClientHello sent in the same segment) are not lost -- asyncio's
``start_tls`` cannot be handed bytes already read -- and the stream goes to ``TCPServer``
through a small reader/writer pair (:class:`_StreamReader`, :class:`_StreamWriter`) whose
``get_extra_info("ssl_object")`` is the TLS object (for ALPN: HTTP/2 over TLS works).

The command line, ``proxyproto hypercorn APP ...`` with its worker processes, is an application
of this module: :mod:`proxyproto._cli.hypercorn` and :mod:`proxyproto._cli.supervisor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket as _stdlib_socket
import ssl
from collections.abc import Awaitable, Callable
from functools import partial
from random import randint
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import ByteStream, SocketAttribute, SocketListener
from anyio.streams.tls import TLSAttribute, TLSStream

from ._core.extras import require

with require("proxyproto.hypercorn"):
    import hypercorn  # noqa: F401  # only to say early, and in one line, that it is missing
    import sniffio

from ._adapters.anyio import ProxiedStream, ProxyAttribute, ProxyProtocolListener
from ._adapters.asyncio import HandshakeClock, TransportHandshake
from ._core.model import Header
from ._core.text import format_address
from ._handshake.config import ProxyProtocolConfig
from ._handshake.engine import Counters, ListenerStatistics, register, surface_statistics
from ._handshake.policy import PeerAddress
from ._servers.asgi_scope import HypercornConnectionApp, trusted_header
from ._servers.peer_socket import PeerSocket

if TYPE_CHECKING:
    from hypercorn.config import Config, Sockets
    from hypercorn.typing import AppWrapper, Framework

__all__ = ("serve", "statistics")

logger = logging.getLogger("proxyproto")

ShutdownTrigger = Callable[[], Awaitable[Any]]


async def serve(
    app: Framework,
    config: Config,
    *,
    proxy: ProxyProtocolConfig | None = None,
    shutdown_trigger: ShutdownTrigger | None = None,
    tls_extension: bool = False,
) -> None:
    """Serve ``app`` with Hypercorn, reading a PROXY header on every connection first.

    Like :func:`hypercorn.trio.serve` and :func:`hypercorn.asyncio.serve`, on whichever of the two
    runs it: ``scope["client"]`` is the client from the header, on every request of a
    connection. ``proxy`` says how headers are read (default: ``ProxyProtocolConfig()``, so
    ``REQUIRE``: a connection without a header is closed before Hypercorn sees it). TLS from
    ``config`` (``certfile``/``keyfile``) starts after the header.

    >>> async def main() -> None:
    ...     config = hypercorn.config.Config()
    ...     config.bind = ["0.0.0.0:8000"]
    ...     proxy = ProxyProtocolConfig(policy=trusted_proxies(["10.0.0.0/8"]))
    ...     await serve(app, config, proxy=proxy)

    Without ``shutdown_trigger`` it serves until cancelled (on asyncio, also until SIGINT or
    SIGTERM, as Hypercorn does). ``config.workers`` is ignored: one process.

    Every HTTP and WebSocket scope gets ``scope["extensions"]["proxy_protocol"]`` (the header
    and the real peer). ``tls_extension=True`` adds the ASGI TLS extension,
    ``scope["extensions"]["tls"]``, filled from the header's SSL TLV when it says the client's
    connection was TLS (TLS ended at the balancer); never otherwise, as the ASGI spec forbids
    it on connections that are not TLS. See ``docs/behind-balancers.rst``.

    :raises NotImplementedError: ``config.quic_bind`` is set (HTTP/3 is not supported), or the
        running library is neither trio nor asyncio.
    """
    from hypercorn.utils import wrap_app

    proxy = proxy or ProxyProtocolConfig()
    wrapped = wrap_app(app, config.wsgi_max_body_size, None)
    library = sniffio.current_async_library()
    worker = {"trio": _trio_worker, "asyncio": _asyncio_worker}.get(library)
    if worker is None:
        raise NotImplementedError(f"Hypercorn runs on trio or asyncio, not {library}")
    await worker(
        wrapped, config, proxy, shutdown_trigger=shutdown_trigger, tls_extension=tls_extension
    )


def _check_no_quic(sockets: Sockets) -> None:
    if sockets.quic_sockets:
        for sock in sockets.quic_sockets:
            sock.close()
        raise NotImplementedError("QUIC (quic_bind) is not supported behind the PROXY protocol")


def _bind(family: int, address: Any) -> str:
    from hypercorn.utils import repr_socket_addr

    return repr_socket_addr(family, address)


def statistics() -> ListenerStatistics:
    """The PROXY handshake counters of every Hypercorn server :func:`serve` ran in this process,
    summed over its listeners (both workers, TLS or not, servers that have stopped included):
    the same fields as :meth:`proxyproto.ProxyProtocolListener.statistics`."""
    return surface_statistics("hypercorn")


# --- trio --------------------------------------------------------------------------------------


async def _trio_worker(
    app: AppWrapper,
    config: Config,
    proxy: ProxyProtocolConfig,
    *,
    sockets: Sockets | None = None,
    shutdown_trigger: ShutdownTrigger | None = None,
    tls_extension: bool = False,
) -> None:
    # hypercorn.trio.run.worker_serve, with each socket listener wrapped.
    import trio
    from hypercorn.trio.lifespan import Lifespan
    from hypercorn.trio.statsd import StatsdLogger
    from hypercorn.trio.tcp_server import TCPServer
    from hypercorn.trio.worker_context import WorkerContext
    from hypercorn.typing import ConnectionState, LifespanState

    from . import trio as pp_trio
    from ._servers.hypercorn_trio import HypercornListener

    config.set_statsd_logger_class(StatsdLogger)
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(app, config, lifespan_state)
    max_requests = None
    if config.max_requests is not None:
        max_requests = config.max_requests + randint(0, config.max_requests_jitter)
    context = WorkerContext(max_requests)

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()

        async with trio.open_nursery() as server_nursery:
            if sockets is None:
                sockets = config.create_sockets()
                for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
                    sock.listen(config.backlog)
            _check_no_quic(sockets)
            ssl_context = config.create_ssl_context()
            listeners: list[trio.abc.Listener[Any]] = []
            for sock in sockets.secure_sockets:
                assert ssl_context is not None
                inner = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                bind = _bind(sock.family, sock.getsockname())
                listeners.append(
                    trio.SSLListener(
                        HypercornListener(pp_trio.ProxyProtocolListener(inner, proxy), bind),
                        ssl_context,
                        https_compatible=True,
                    )
                )
                await config.log.info(f"Running on https://{bind} (PROXY protocol)")
            for sock in sockets.insecure_sockets:
                inner = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                bind = _bind(sock.family, sock.getsockname())
                listeners.append(
                    HypercornListener(pp_trio.ProxyProtocolListener(inner, proxy), bind)
                )
                await config.log.info(f"Running on http://{bind} (PROXY protocol)")

            try:
                async with trio.open_nursery() as nursery:

                    async def stop_when(trigger: ShutdownTrigger) -> None:
                        await trigger()
                        nursery.cancel_scope.cancel()

                    if shutdown_trigger is not None:
                        nursery.start_soon(stop_when, shutdown_trigger)
                    nursery.start_soon(stop_when, context.terminate.wait)
                    nursery.start_soon(
                        partial(
                            trio.serve_listeners,
                            partial(
                                _trio_connection,
                                tls_extension,
                                TCPServer,
                                app,
                                config,
                                context,
                                ConnectionState(lifespan_state.copy()),
                            ),
                            listeners,
                            handler_nursery=server_nursery,
                        )
                    )
            except BaseException as error:
                # Ctrl-C is a graceful shutdown and a quiet return, as in Hypercorn's own
                # worker_serve (which splits KeyboardInterrupt off the nursery's group).
                if not _only_keyboard_interrupts(error):
                    raise
            finally:
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout

        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


async def _trio_connection(
    tls_extension: bool,
    server: Any,
    app: AppWrapper,
    config: Config,
    context: Any,
    state: Any,
    stream: Any,
) -> None:
    """Hypercorn's trio ``TCPServer`` on one connection, its app giving every scope the
    ``proxy_protocol`` extension. ``stream`` is a ``HypercornStream``, or a ``trio.SSLStream``
    over one."""
    proxied = getattr(stream, "transport_stream", stream).stream
    connection_app = HypercornConnectionApp(
        app,
        trusted_header(proxied.header, proxied.policy),
        proxied.peer_address,
        tls_extension=tls_extension,
    )
    await server(connection_app, config, context, state, stream)


def _only_keyboard_interrupts(error: BaseException) -> bool:
    """Whether ``error`` is a :exc:`KeyboardInterrupt`, or a group of nothing else."""
    if isinstance(error, KeyboardInterrupt):
        return True
    nested = getattr(error, "exceptions", None)  # a BaseExceptionGroup (exceptiongroup on 3.10)
    return bool(nested) and all(_only_keyboard_interrupts(e) for e in nested)  # type: ignore[union-attr]


# --- asyncio -----------------------------------------------------------------------------------


async def _asyncio_worker(
    app: AppWrapper,
    config: Config,
    proxy: ProxyProtocolConfig,
    *,
    sockets: Sockets | None = None,
    shutdown_trigger: ShutdownTrigger | None = None,
    tls_extension: bool = False,
) -> None:
    # hypercorn.asyncio.run.worker_serve: cleartext sockets served by asyncio servers whose protocol
    # reads the header first (_Cleartext), TLS sockets by anyio listeners.
    from hypercorn.asyncio.lifespan import Lifespan
    from hypercorn.asyncio.statsd import StatsdLogger
    from hypercorn.asyncio.tcp_server import TCPServer
    from hypercorn.asyncio.worker_context import WorkerContext
    from hypercorn.typing import LifespanState

    config.set_statsd_logger_class(StatsdLogger)
    loop = asyncio.get_running_loop()
    installed_signals: list[int] = []
    if shutdown_trigger is None:
        signalled = asyncio.Event()
        for name in ("SIGINT", "SIGTERM"):
            try:
                loop.add_signal_handler(getattr(signal, name), signalled.set)
            except (NotImplementedError, RuntimeError, ValueError):
                continue  # not the main thread, or not POSIX: cancellation still works
            installed_signals.append(getattr(signal, name))
        shutdown_trigger = signalled.wait

    lifespan_state: LifespanState = {}
    lifespan = Lifespan(app, config, loop, lifespan_state)
    lifespan_task = loop.create_task(lifespan.handle_lifespan())
    try:
        await lifespan.wait_for_startup()
        if lifespan_task.done() and (exception := lifespan_task.exception()) is not None:
            raise exception

        if sockets is None:
            sockets = config.create_sockets()
        _check_no_quic(sockets)
        ssl_context = config.create_ssl_context()
        max_requests = None
        if config.max_requests is not None:
            max_requests = config.max_requests + randint(0, config.max_requests_jitter)
        context = WorkerContext(max_requests)

        cleartext = _Cleartext(app, config, proxy, context, lifespan_state, loop, tls_extension)
        servers: list[asyncio.Server] = []
        listeners: list[ProxyProtocolListener] = []
        # The metrics' listener labels: the bind addresses, as Hypercorn logs them.
        binds: list[tuple[str, Counters]] = []
        names: list[str] = []
        try:
            for sock in sockets.insecure_sockets:
                sock.listen(config.backlog)
                bind = _bind(sock.family, sock.getsockname())
                protocol, counters = cleartext.protocol_factory()
                servers.append(
                    await loop.create_server(protocol, sock=sock, backlog=config.backlog)
                )
                binds.append((bind, counters))
                await config.log.info(f"Running on http://{bind} (PROXY protocol)")
            for sock in sockets.secure_sockets:
                sock.listen(config.backlog)
                inner = await SocketListener.from_socket(sock)
                listeners.append(ProxyProtocolListener(inner, proxy))
                bind = _bind(sock.family, sock.getsockname())
                names.append(bind)
                await config.log.info(f"Running on https://{bind} (PROXY protocol)")
        except BaseException:
            for server in servers:
                server.close()
            for listener in listeners:
                await listener.aclose()
            raise
        for bind, counters in binds:
            register("hypercorn", counters, bind)
        for listener, name in zip(listeners, names, strict=True):
            register("hypercorn", listener._counters, name)

        async def handle_tls(stream: ProxiedStream) -> None:
            assert ssl_context is not None
            peer = stream.extra(SocketAttribute.remote_address, None)
            raw_socket = stream.extra(SocketAttribute.raw_socket, None)
            served: ByteStream = stream
            try:
                with anyio.fail_after(config.ssl_handshake_timeout):
                    served = await TLSStream.wrap(
                        stream, server_side=True, ssl_context=ssl_context, standard_compatible=False
                    )
                reader = _StreamReader(served)
                writer = _StreamWriter(served, reader, raw_socket, peer)
                app_ = _anyio_connection_app(app, stream, tls_extension)
                await TCPServer(app_, loop, config, context, lifespan_state, reader, writer)  # type: ignore[arg-type]
            except (TimeoutError, ssl.SSLError, anyio.BrokenResourceError, anyio.EndOfStream):
                logger.debug("TLS handshake with %s failed", format_address(peer), exc_info=True)
            finally:
                await anyio.aclose_forcefully(served)

        async with anyio.create_task_group() as tls_connections:
            try:
                async with anyio.create_task_group() as accepting:

                    async def stop_when(trigger: ShutdownTrigger) -> None:
                        await trigger()
                        accepting.cancel_scope.cancel()

                    accepting.start_soon(stop_when, shutdown_trigger)
                    accepting.start_soon(stop_when, context.terminate.wait)
                    for listener in listeners:
                        accepting.start_soon(listener.serve, handle_tls, tls_connections)
            finally:
                with anyio.CancelScope(shield=True):
                    deadline = anyio.current_time() + config.graceful_timeout
                    for listener in listeners:
                        await listener.listener.aclose()
                    await cleartext.stop_accepting(servers, deadline)  # open connections stay
                    await context.terminated.set()
                    tls_connections.cancel_scope.deadline = deadline
                    await cleartext.finish(deadline)
    finally:
        for signum in installed_signals:
            loop.remove_signal_handler(signum)
        with anyio.CancelScope(shield=True):
            if not lifespan_task.done():
                await lifespan.wait_for_shutdown()
            lifespan_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lifespan_task


def _anyio_connection_app(app: AppWrapper, stream: ProxiedStream, tls_extension: bool) -> Any:
    """``app`` for one TLS connection of the asyncio worker, with the scope extension."""
    header = stream.extra(ProxyAttribute.header, None)
    policy = stream.extra(ProxyAttribute.policy)
    peer = stream.extra(ProxyAttribute.peer_address, None)
    return HypercornConnectionApp(
        app, trusted_header(header, policy), peer, tls_extension=tls_extension
    )


class _Cleartext:
    """Hypercorn's asyncio ``TCPServer`` on cleartext connections, each after its handshake.

    Each connection's protocol is first a :class:`_HandshakeProtocol` running a
    :class:`~proxyproto._adapters.asyncio.TransportHandshake`. Once it is accepted, the transport
    gets the protocol and stream pair that :func:`asyncio.start_server` would have made (Hypercorn's
    own server uses those), the bytes after the header are fed to the reader first, and
    ``TCPServer`` runs in a task, as under Hypercorn's ``asyncio.start_server``.
    """

    def __init__(
        self,
        app: AppWrapper,
        config: Config,
        proxy: ProxyProtocolConfig,
        context: Any,
        lifespan_state: Any,
        loop: asyncio.AbstractEventLoop,
        tls_extension: bool,
    ) -> None:
        from hypercorn.asyncio.tcp_server import TCPServer

        self._app = app
        self._tls_extension = tls_extension
        self._server = partial(
            _asyncio_tcp_server, TCPServer, loop, config, context, lifespan_state
        )
        self._proxy = proxy
        self._loop = loop
        #: The handshakes under way, with their deadlines: one clock per socket (its counters
        #: are that bind's in the metrics).
        self.clocks: list[HandshakeClock] = []
        #: The connections served.
        self.tasks: set[asyncio.Task[None]] = set()
        #: Connections accepted whose protocol has not had connection_made() yet.
        self.connecting = 0

    def protocol_factory(self) -> tuple[Callable[[], asyncio.Protocol], Counters]:
        """A protocol factory for one socket's :meth:`asyncio.loop.create_server`, with its own
        clock, and that clock's counters."""
        clock = HandshakeClock(self._loop, self._proxy.header_timeout)
        self.clocks.append(clock)
        return partial(_HandshakeProtocol, self, clock), clock.counters

    def handshake(self, transport: asyncio.Transport, clock: HandshakeClock) -> TransportHandshake:
        def accept(header: Header | None, leftover: bytes) -> None:
            self._serve(transport, handshake, header, leftover)

        handshake = TransportHandshake(transport, self._proxy, accept, self._loop, clock)
        return handshake

    def _serve(
        self,
        transport: asyncio.Transport,
        handshake: TransportHandshake,
        header: Header | None,
        leftover: bytes,
    ) -> None:
        loop = self._loop
        reader = asyncio.StreamReader(limit=_STREAM_LIMIT, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if leftover:
            protocol.data_received(leftover)
        writer = _ProxiedStreamWriter(transport, protocol, reader, loop, header)
        task = loop.create_task(self._run(reader, writer, handshake))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handshake: TransportHandshake,
    ) -> None:
        app = HypercornConnectionApp(
            self._app, handshake.header, handshake.peer, tls_extension=self._tls_extension
        )
        await self._server(app, reader, writer)

    async def stop_accepting(self, servers: list[asyncio.Server], deadline: float) -> None:
        """Stop ``servers`` accepting, then close them once the connections they accepted have
        their protocol (or ``deadline`` passed).

        Accepting stops first, with :meth:`~asyncio.loop.remove_reader` on the listening sockets:
        a connection accepted a moment ago gets its transport and protocol a turn of the loop
        later, from a task, and on Python 3.10 a server already closed by then makes that fail
        (``Server._attach()`` asserts the server is open) and drops the connection.
        """
        for server in servers:
            for sock in server.sockets:
                self._loop.remove_reader(sock.fileno())
        for _ in range(_ACCEPT_TURNS):
            await asyncio.sleep(0)
        while self.connecting and anyio.current_time() < deadline:
            await asyncio.sleep(_SHUTDOWN_POLL)
        for server in servers:
            server.close()

    async def finish(self, deadline: float) -> None:
        """Let the connections finish until ``deadline`` (anyio's clock): those being served, and
        those still in their handshake, which were accepted before the shutdown and may yet send
        a request (as under Hypercorn's own server). Then close and cancel what is left."""
        while self.tasks or any(len(clock) for clock in self.clocks) or self.connecting:
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                break
            if self.tasks:
                # A handshake ended meanwhile adds a task: look again at least this often.
                await asyncio.wait(set(self.tasks), timeout=min(remaining, _SHUTDOWN_POLL))
            else:
                await asyncio.sleep(min(remaining, _SHUTDOWN_POLL))
        for clock in self.clocks:
            clock.close_all()
        tasks = set(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def _asyncio_tcp_server(
    server: Any, loop: Any, config: Config, context: Any, state: Any, app: Any, *streams: Any
) -> Any:
    """Hypercorn's asyncio ``TCPServer`` with this connection's app."""
    return server(app, loop, config, context, state, *streams)


#: How often a shutdown looks whether the handshakes under way have ended, in seconds.
_SHUTDOWN_POLL = 0.05
#: Turns of the event loop from asyncio's accept() to the making of the protocol (one on CPython
#: 3.10-3.13: the task that makes the protocol and the transport), and two more.
_ACCEPT_TURNS = 3

#: What Hypercorn's asyncio server uses for its ``StreamReader`` (asyncio's default).
_STREAM_LIMIT = 2**16


class _HandshakeProtocol(asyncio.Protocol):
    """A cleartext connection's protocol while its PROXY handshake is under way."""

    __slots__ = ("_cleartext", "_clock", "_handshake", "_transport")

    def __init__(self, cleartext: _Cleartext, clock: HandshakeClock) -> None:
        self._cleartext = cleartext
        self._clock = clock
        cleartext.connecting += 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._cleartext.connecting -= 1
        self._transport = transport
        self._handshake = self._cleartext.handshake(transport, self._clock)
        self._handshake.start()

    def data_received(self, data: bytes) -> None:
        self._handshake.data_received(data)

    def eof_received(self) -> bool | None:
        if self._handshake.eof_received():
            # Accepted by this EOF: the stream protocol hears it (and keeps the transport open
            # for the answer, as it would have).
            return self._transport.get_protocol().eof_received()  # type: ignore[attr-defined, no-any-return]
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._handshake.connection_lost()


class _ProxiedStreamWriter(asyncio.StreamWriter):
    """asyncio's ``StreamWriter``, whose socket is a :class:`PeerSocket` and whose
    ``peername`` is the header's client (the real peer's for a direct connection)."""

    def __init__(
        self,
        transport: asyncio.Transport,
        protocol: asyncio.StreamReaderProtocol,
        reader: asyncio.StreamReader,
        loop: asyncio.AbstractEventLoop,
        header: Header | None,
    ) -> None:
        super().__init__(transport, protocol, reader, loop)
        self._pp_source = header.source if header is not None else None
        self._pp_socket = PeerSocket(transport.get_extra_info("socket"), self._pp_source)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self._pp_socket
        if name == "peername" and self._pp_source is not None:
            return self._pp_source
        return super().get_extra_info(name, default)


class _StreamReader:
    """What Hypercorn's asyncio ``TCPServer`` reads with: ``read()`` and ``at_eof()``."""

    def __init__(self, stream: ByteStream) -> None:
        self._stream = stream
        self._eof = False
        self._reading: anyio.CancelScope | None = None

    def at_eof(self) -> bool:
        return self._eof

    async def read(self, n: int = -1) -> bytes:
        if self._eof:
            return b""
        with anyio.CancelScope() as self._reading:
            try:
                return await self._stream.receive(65536 if n < 1 else n)
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                pass
            except anyio.BrokenResourceError as error:
                raise ConnectionResetError(str(error)) from error
            finally:
                self._reading = None
        self._eof = True
        return b""

    def feed_eof(self) -> None:
        """End a pending :meth:`read` with EOF, as closing an asyncio transport does."""
        self._eof = True
        if self._reading is not None:
            self._reading.cancel()


class _StreamWriter:
    """What Hypercorn's asyncio ``TCPServer`` writes with, over an anyio byte stream (TLS).

    ``write()`` buffers and ``drain()`` sends (Hypercorn always drains after writing, under a
    lock); ``get_extra_info("socket")`` is a :class:`PeerSocket` answering ``getpeername()``
    with the client from the header.
    """

    def __init__(
        self,
        stream: ByteStream,
        reader: _StreamReader,
        raw_socket: _stdlib_socket.socket | None,
        peer: PeerAddress,
    ) -> None:
        self._stream = stream
        self._reader = reader
        self._buffer = bytearray()
        self._closing = False
        self._closed = False
        self._socket = PeerSocket(raw_socket, peer) if raw_socket is not None else None
        self._peer = peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self._socket
        if name == "peername":
            return self._peer
        if name == "sockname":
            return self._socket.getsockname() if self._socket is not None else default
        if name == "ssl_object":
            return self._stream.extra(TLSAttribute.ssl_object, default)
        return default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            raise ConnectionResetError("the connection is closing")
        self._buffer += data

    async def drain(self) -> None:
        if self._closing:
            raise ConnectionResetError("the connection is closing")
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            try:
                await self._stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError) as error:
                raise ConnectionResetError(str(error)) from error

    def write_eof(self) -> None:
        # asyncio's write_eof() is synchronous; Hypercorn calls it just before close(), and
        # tolerates NotImplementedError (as from a TLS transport).
        raise NotImplementedError("half-close is not supported here")

    def close(self) -> None:
        self._closing = True
        self._reader.feed_eof()

    def is_closing(self) -> bool:
        return self._closing

    async def wait_closed(self) -> None:
        self._closing = True
        if not self._closed:
            self._closed = True
            await self._aclose()

    async def _aclose(self) -> None:
        try:
            with anyio.move_on_after(1):
                await self._stream.aclose()
        except (anyio.BrokenResourceError, OSError, ssl.SSLError):
            pass
        finally:
            await anyio.aclose_forcefully(self._stream)
