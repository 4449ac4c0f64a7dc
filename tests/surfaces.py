"""Every server surface of proxyproto behind one kind of driver, for ``tests/test_promises.py``.

A *surface* is a way a user serves connections through a PROXY handshake: the anyio
:class:`proxyproto.ProxyProtocolListener` (on asyncio and on trio), the native
:class:`proxyproto.trio.ProxyProtocolListener`, Uvicorn (the h11 protocol class), Hypercorn's
:func:`proxyproto.hypercorn.serve` (asyncio and trio workers), ``proxyproto relay`` (a child
process) and :class:`proxyproto.ProxiedUDPSocket` (asyncio and trio).

Each server runs in a thread of its own with its own event loop (an anyio blocking portal per
backend, Uvicorn's own thread, or a child process), so that the test's client side may run on
either anyio backend. A server records what its application saw -- the client's address and the
bytes after the header (:class:`Seen`) -- and answers ``ok`` (an HTTP 200 on the HTTP surfaces,
whose application sees an HTTP request: :meth:`Surface.frame`). The :class:`Pool` starts each
(surface, configuration) once per test module, and stops them all at its end.

Log lines are read from the ``proxyproto`` logger (a handler of ours) or from the relay's stderr,
and picked out by the client's port, which each line names. Counters come from each surface's
``statistics()``, in one shape (:func:`counters`).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from contextlib import ExitStack, contextmanager, suppress
from typing import Any, cast

import anyio
import attrs
from anyio.abc import SocketAttribute, TaskStatus
from anyio.from_thread import BlockingPortal, start_blocking_portal

import proxyproto as pp
from asgi_helpers import serve_lifespan, uvicorn_thread
from cli_process import TIMEOUT, CliProcess, launch
from loopback_servers import TCPServer

#: Surfaces whose application is HTTP (the bytes after the header are an HTTP request).
HTTP_SURFACES = frozenset({"uvicorn", "hypercorn-asyncio", "hypercorn-trio"})
#: Every stream surface, and the datagram ones.
STREAM_SURFACES = (
    "anyio-asyncio",
    "anyio-trio",
    "trio",
    "uvicorn",
    "hypercorn-asyncio",
    "hypercorn-trio",
    "relay",
)
DATAGRAM_SURFACES = ("udp-asyncio", "udp-trio")
SURFACES = STREAM_SURFACES + DATAGRAM_SURFACES

#: Handshake slots and eviction exist on these (the asyncio-protocol path has none, by design).
EVICTING_SURFACES = frozenset({"anyio-asyncio", "anyio-trio", "trio", "hypercorn-trio"})

Address = tuple[str, int]


@attrs.frozen
class Seen:
    """What an application saw of one connection (or datagram)."""

    client: Any
    data: bytes


class Surface:
    """How the bytes after a header look to one surface's application."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.http = name in HTTP_SURFACES
        self.datagram = name in DATAGRAM_SURFACES

    def frame(self, body: bytes) -> tuple[bytes, bytes]:
        """What a client sends after the header to get ``body`` to the application, and what
        the application then records as its data."""
        if not self.http:
            return body, body
        request = (
            b"POST /promise HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        return request + body, b"POST /promise " + body

    def served(self, response: bytes) -> bool:
        """Whether ``response`` is the application's answer."""
        return response.startswith(b"HTTP/1.1 200") if self.http else response == b"ok"


# --- log lines -------------------------------------------------------------------------------


@attrs.frozen
class Line:
    level: int
    message: str
    traceback: bool


class LogCapture(logging.Handler):
    """Every record of the ``proxyproto`` logger itself (not its children), from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[Line] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name != "proxyproto":
            return
        line = Line(record.levelno, record.getMessage(), record.exc_info is not None)
        with self._lock:
            self.lines.append(line)

    def snapshot(self) -> list[Line]:
        with self._lock:
            return list(self.lines)

    @contextmanager
    def installed(self) -> Iterator[LogCapture]:
        logger = logging.getLogger("proxyproto")
        level = logger.level
        logger.addHandler(self)
        logger.setLevel(logging.DEBUG)
        try:
            yield self
        finally:
            logger.removeHandler(self)
            logger.setLevel(level)


def names_port(message: str, port: int) -> bool:
    """Whether ``message`` names the peer ``127.0.0.1:port``."""
    return re.search(rf"127\.0\.0\.1:{port}(?!\d)", message) is not None


# --- counters --------------------------------------------------------------------------------


def counters(statistics: Any) -> Counter[str]:
    """A surface's statistics in one shape: ``accepted``, ``direct``, ``rejected.KIND`` (timed
    out and evicted as ``rejected.timeout`` and ``rejected.evicted``), ``in_flight``."""
    found: Counter[str] = Counter()
    if isinstance(statistics, pp.DatagramStatistics):
        found["accepted"] = statistics.delivered
        found["direct"] = statistics.direct
        for kind, count in statistics.dropped.items():
            found[f"rejected.{kind}"] = count
        return found
    found["accepted"] = statistics.accepted
    found["direct"] = statistics.direct
    for kind, count in statistics.rejected.items():
        found[f"rejected.{kind}"] = count
    found["rejected.timeout"] += statistics.timed_out
    found["rejected.evicted"] += statistics.evicted
    found["in_flight"] = statistics.in_flight
    return found


# --- the servers -----------------------------------------------------------------------------


class Server:
    """One running server of a surface, with one configuration."""

    def __init__(self, surface: Surface, pool: Pool) -> None:
        self.surface = surface
        self.pool = pool
        self.seen: list[Seen] = []
        self.address: Address = ("127.0.0.1", 0)
        self._lock = threading.Lock()

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def find(self, token: bytes) -> list[Seen]:
        """What the application saw of the connections whose data holds ``token``."""
        with self._lock:
            return [seen for seen in self.seen if token in seen.data]

    def mark(self) -> int:
        """Where the log is now: a client's lines are those after its connection started (a
        port is reused by later connections)."""
        return len(self.pool.log.snapshot())

    def lines(self, port: int, since: int = 0) -> list[Line]:
        """The log lines since ``since`` that name the peer ``127.0.0.1:port``."""
        lines = self.pool.log.snapshot()[since:]
        return [line for line in lines if names_port(line.message, port)]

    #: Servers with the same key share their counters (a module-level ``statistics()``).
    counter_key: object = None

    def statistics(self) -> Any:
        """The surface's ``statistics()``; ``None`` where there is none to read (the relay)."""
        raise NotImplementedError


class ListenerServer(Server):
    """The anyio listener, the native trio listener, or a ProxiedUDPSocket, in a portal."""

    source: Any = None

    def statistics(self) -> Any:
        return self.source.statistics()


class UvicornServer(Server):
    counter_key = "uvicorn"

    def statistics(self) -> Any:
        import proxyproto.uvicorn

        return proxyproto.uvicorn.statistics()


class HypercornServer(Server):
    counter_key = "hypercorn"

    def statistics(self) -> Any:
        import proxyproto.hypercorn

        return proxyproto.hypercorn.statistics()


class RelayServer(Server):
    """``proxyproto relay`` in a child process, relaying to a :class:`Target` in this one."""

    process: CliProcess

    def __init__(self, surface: Surface, pool: Pool) -> None:
        super().__init__(surface, pool)
        self._stderr: list[Line] = []

    def statistics(self) -> Any:
        return None

    def mark(self) -> int:
        self.lines(0)
        return len(self._stderr)

    def lines(self, port: int, since: int = 0) -> list[Line]:
        while True:
            try:
                text = self.process.stderr.get_nowait()
            except queue.Empty:
                break
            if text is None:
                break
            # "%(asctime)s %(levelname)s %(message)s", the date as "YYYY-MM-DD HH:MM:SS".
            parts = text.split(" ", 3)
            if len(parts) == 4 and parts[2] in _LEVELS:
                if not parts[3].startswith("peer="):  # not the relay's access log
                    self._stderr.append(Line(_LEVELS[parts[2]], parts[3], False))
            elif text.startswith("Traceback") and self._stderr:
                last = self._stderr[-1]
                self._stderr[-1] = Line(last.level, last.message, True)
        return [line for line in self._stderr[since:] if names_port(line.message, port)]


_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}


class Target(TCPServer):
    """A threaded TCP server that reads the relay's v2 header, then every byte to EOF, records
    them as a :class:`Seen` on ``server`` and answers ``ok``."""

    join_connections = False

    def __init__(self, server: Server) -> None:
        self.server = server
        super().__init__()

    def handle(self, conn: socket.socket, peer: Address) -> None:
        conn.settimeout(TIMEOUT)
        with conn:
            try:
                parser = pp.HeaderParser()
                while parser.next_event() is pp.NEED_DATA:
                    parser.receive_data(conn.recv(65536))
                header = parser.header
                assert header is not None
                data = bytearray(parser.trailing_data)
                while chunk := conn.recv(65536):
                    data += chunk
                self.server.record(Seen(header.source, bytes(data)))
                conn.sendall(b"ok")
            except (OSError, pp.ProxyProtocolError):
                return


# --- the applications ------------------------------------------------------------------------


async def _read_all_anyio(stream: Any) -> bytes:
    data = bytearray()
    while True:
        try:
            data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return bytes(data)


def _anyio_handler(server: Server) -> Callable[[Any], Any]:
    async def handle(stream: pp.ProxiedStream) -> None:
        async with stream:
            client = stream.extra(SocketAttribute.remote_address)
            data = await _read_all_anyio(stream)
            server.record(Seen(client, data))
            with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await stream.send(b"ok")

    return handle


def _asgi_app(server: Server) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        client = None if scope["client"] is None else tuple(scope["client"])
        server.record(Seen(client, f"{scope['method']} {scope['path']} ".encode() + body))
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def _serve_anyio(
    server: ListenerServer,
    config: pp.ProxyProtocolConfig,
    *,
    task_status: TaskStatus[Address] = anyio.TASK_STATUS_IGNORED,
) -> None:
    inner = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    listener = pp.ProxyProtocolListener(inner, config)
    server.source = listener
    async with listener, anyio.create_task_group() as tg:
        task_status.started(cast(Address, inner.extra(SocketAttribute.local_address)))
        await listener.serve(_anyio_handler(server), tg)


async def _serve_trio(
    server: ListenerServer,
    config: pp.ProxyProtocolConfig,
    *,
    task_status: TaskStatus[Address] = anyio.TASK_STATUS_IGNORED,
) -> None:
    import trio

    import proxyproto.trio

    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    listener = proxyproto.trio.ProxyProtocolListener(trio.SocketListener(sock), config)
    server.source = listener

    async def handle(stream: proxyproto.trio.ProxiedStream) -> None:
        async with stream:
            client = tuple(stream.socket.getpeername()[:2])
            data = bytearray()
            try:
                while chunk := await stream.receive_some():
                    data += chunk
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            server.record(Seen(client, bytes(data)))
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(b"ok")

    task_status.started(sock.getsockname()[:2])
    await trio.serve_listeners(handle, [listener])


async def _serve_udp(
    server: ListenerServer,
    config: pp.ProxyProtocolConfig,
    *,
    task_status: TaskStatus[Address] = anyio.TASK_STATUS_IGNORED,
) -> None:
    udp = await anyio.create_udp_socket(family=socket.AF_INET, local_host="127.0.0.1")
    async with pp.ProxiedUDPSocket(udp, config) as proxied:
        server.source = proxied
        task_status.started(cast(Address, udp.extra(SocketAttribute.local_address)))
        async for datagram in proxied:
            server.record(Seen(datagram.source, datagram.payload))
            await proxied.reply(datagram, b"ok")


async def _serve_hypercorn(
    server: Server,
    config: pp.ProxyProtocolConfig,
    *,
    task_status: TaskStatus[Address] = anyio.TASK_STATUS_IGNORED,
) -> None:
    from hypercorn.config import Config

    import proxyproto.hypercorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    address = sock.getsockname()[:2]
    hypercorn_config = Config()
    hypercorn_config.bind = [f"fd://{sock.detach()}"]
    hypercorn_config.graceful_timeout = 1
    hypercorn_config.accesslog = None
    task_status.started(address)
    await proxyproto.hypercorn.serve(_asgi_app(server), hypercorn_config, proxy=config)


class Pool:
    """The servers of one test module: each (surface, configuration) started once, on first use."""

    def __init__(self, configs: dict[str, pp.ProxyProtocolConfig], stack: ExitStack) -> None:
        self.configs = configs
        self.stack = stack
        self.log = stack.enter_context(LogCapture().installed())
        self._portals: dict[str, BlockingPortal] = {}
        self._servers: dict[tuple[str, str], Server] = {}
        self._futures: list[Future[Any]] = []
        self._scopes: list[tuple[BlockingPortal, anyio.CancelScope]] = []
        stack.callback(self._stop_tasks)

    def portal(self, backend: str) -> BlockingPortal:
        if backend not in self._portals:
            portal = self.stack.enter_context(
                start_blocking_portal(backend, name=f"promise servers ({backend})")
            )
            # Stopped before the block ends: whatever is left then is cancelled.
            self.stack.callback(portal.call, portal.stop, True)
            self._portals[backend] = portal
        return self._portals[backend]

    def _stop_tasks(self) -> None:
        for portal, scope in self._scopes:
            with contextlib.suppress(RuntimeError):  # the portal is gone already
                portal.call(scope.cancel)
        wait_futures(self._futures, timeout=15)

    def server(self, surface: str, config_name: str) -> Server:
        key = (surface, config_name)
        if key not in self._servers:
            self._servers[key] = self._start(Surface(surface), config_name)
        return self._servers[key]

    async def start(self, surface: str, config_name: str) -> Server:
        """:meth:`server` from a test's event loop. A server not running yet is started from a
        worker thread: a blocking portal cannot be called from inside an event loop (trio
        refuses it), and which test of a module comes first depends on selection and on
        pytest-xdist's scheduling."""
        key = (surface, config_name)
        if key in self._servers:
            return self._servers[key]
        return await anyio.to_thread.run_sync(self.server, surface, config_name)

    def _in_portal(self, server: Server, backend: str, serve: Any, config: Any) -> Server:
        portal = self.portal(backend)
        scope = portal.call(anyio.CancelScope)

        async def run(*, task_status: TaskStatus[Address]) -> None:
            with scope:
                await serve(server, config, task_status=task_status)

        future, address = portal.start_task(run)
        self._futures.append(future)
        self._scopes.append((portal, scope))
        server.address = (address[0], address[1])
        return server

    def _start(self, surface: Surface, config_name: str) -> Server:
        name = surface.name
        if name == "relay":
            return self._start_relay(surface, config_name)
        config = self.configs[config_name]
        if name in ("anyio-asyncio", "anyio-trio"):
            backend = name.partition("-")[2]
            return self._in_portal(ListenerServer(surface, self), backend, _serve_anyio, config)
        if name == "trio":
            return self._in_portal(ListenerServer(surface, self), "trio", _serve_trio, config)
        if name in ("udp-asyncio", "udp-trio"):
            backend = name.partition("-")[2]
            return self._in_portal(ListenerServer(surface, self), backend, _serve_udp, config)
        if name in ("hypercorn-asyncio", "hypercorn-trio"):
            backend = name.partition("-")[2]
            return self._in_portal(
                HypercornServer(surface, self), backend, _serve_hypercorn, config
            )
        if name == "uvicorn":
            from proxyproto.uvicorn import ProxyProtocolH11Protocol

            protocol = type(
                "PromiseProtocol", (ProxyProtocolH11Protocol,), {"proxy_config": config}
            )
            server = UvicornServer(surface, self)
            address, _, _ = self.stack.enter_context(
                uvicorn_thread(_asgi_app(server), http=protocol)
            )
            server.address = (address[0], address[1])
            return server
        raise ValueError(name)

    def _start_relay(self, surface: Surface, config_name: str) -> Server:
        server = RelayServer(surface, self)
        target = Target(server)
        self.stack.callback(target.close)
        options = {
            "require": ["--accept-proxy"],
            "skip": [],
            "trusted": ["--accept-proxy", "--trusted", "127.0.0.0/8"],
            "untrusted": ["--accept-proxy", "--trusted", "192.0.2.0/24"],
        }[config_name]
        timeout = self.configs[config_name].header_timeout
        process = self.stack.enter_context(
            launch(
                CliProcess,
                "relay",
                "--listen",
                "127.0.0.1:0",
                "--to",
                f"127.0.0.1:{target.address[1]}",
                "--send-proxy",
                "v2",
                "--header-timeout",
                f"{timeout:g}",
                "--grace",
                "1",
                *options,
            )
        )
        server.process = process
        server.address = process.address
        return server


@contextmanager
def pool(configs: dict[str, pp.ProxyProtocolConfig]) -> Iterator[Pool]:
    with ExitStack() as stack:
        yield Pool(configs, stack)


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll ``predicate`` (from a thread) until it is true or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.01)
