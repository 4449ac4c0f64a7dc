"""A fake load balancer and a raw client: the two ends a test of a server behind the PROXY
protocol needs, on anyio (asyncio or trio).

The balancer listens on loopback; for each connection it accepts it connects to the server under
test, writes a PROXY header there -- whole, cut at chosen offsets, or a byte at a time -- and then
relays bytes both ways until both sides are done, as HAProxy's ``send-proxy`` does. The header
describes the accepted connection unless the test says otherwise, so a client that goes through
the balancer is seen by the server as itself.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import anyio
from anyio.abc import ByteStream, SocketAttribute, SocketStream, TaskGroup
from anyio.streams.tls import TLSStream

from proxyproto._adapters.anyio import connect_tcp, header_for
from proxyproto._core.model import Header

from ._wire import HeaderSpec, header_bytes, segments

__all__ = [
    "FakeBalancer",
    "HeaderChoice",
    "fake_balancer",
    "open_connection",
    "open_socket",
    "send_segments",
]

#: What the balancer sends: a fixed header (or raw bytes), a function of the accepted client
#: connection that returns one, or ``None`` for the header that describes that connection
#: (its peer as the source, the balancer's address as the destination, v2).
HeaderChoice: TypeAlias = HeaderSpec | Callable[[SocketStream], HeaderSpec] | None

# Relayed in chunks of this size; the relay holds at most one chunk per direction.
_CHUNK = 65536


async def send_segments(
    stream: ByteStream,
    data: bytes,
    *,
    split_at: Sequence[int] = (),
    byte_at_a_time: bool = False,
    pause: float = 0.0,
) -> None:
    """Send ``data`` on ``stream`` in the writes :func:`proxyproto.testing.segments` cuts it into.

    Between writes the task sleeps ``pause`` seconds (by default it only yields to the event
    loop), so that on loopback each write usually arrives on its own; a pause makes it likely
    that the server reads each one separately too (TCP may still merge them: a server must not
    care either way).
    """
    await _send_pieces(
        stream, segments(data, split_at=split_at, byte_at_a_time=byte_at_a_time), pause
    )


async def _send_pieces(stream: ByteStream, pieces: Sequence[bytes], pause: float) -> None:
    for index, piece in enumerate(pieces):
        if index:
            await anyio.sleep(pause)
        await stream.send(piece)


class _FirstWrite(ByteStream):
    """Sends ``first`` in the same write as the first bytes sent on it: the end of a header and
    a TLS ClientHello in one segment, as a balancer that relays the client's first bytes at once
    sends them."""

    def __init__(self, stream: ByteStream, first: bytes) -> None:
        self.stream, self._first = stream, first

    async def send(self, item: bytes) -> None:
        item, self._first = self._first + item, b""
        await self.stream.send(item)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self.stream.receive(max_bytes)

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self.stream.extra_attributes


class FakeBalancer:
    """A fake balancer in front of ``target``; :func:`fake_balancer` (or the ``fake_balancer``
    fixture) makes one and starts it. The arguments are :func:`fake_balancer`'s.

    Its attributes can change while it runs; each new connection uses the values of the moment.
    """

    def __init__(
        self,
        target: tuple[str, int],
        header: HeaderChoice = None,
        *,
        crc32c: bool = False,
        split_at: Sequence[int] = (),
        byte_at_a_time: bool = False,
        pause: float = 0.0,
    ) -> None:
        # Checked now, not on the first connection (where the error would only close it).
        if header is not None and not callable(header):
            segments(
                header_bytes(header, crc32c=crc32c),
                split_at=split_at,
                byte_at_a_time=byte_at_a_time,
            )
        #: The server under test, ``(host, port)``.
        self.target = target
        #: What is sent to it first on each connection (see :data:`HeaderChoice`).
        self.header: HeaderChoice = header
        #: A v2 header gets a CRC32C TLV.
        self.crc32c = crc32c
        #: Offsets at which the header is cut into separate writes.
        self.split_at: Sequence[int] = split_at
        #: Send the header one byte per write.
        self.byte_at_a_time = byte_at_a_time
        #: Seconds between the header's writes.
        self.pause = pause
        #: Connections accepted so far.
        self.connections = 0
        #: The header bytes sent on each connection, in order of acceptance.
        self.sent: list[bytes] = []
        self._address: tuple[str, int] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Where clients connect: ``(host, port)`` on loopback."""
        if self._address is None:
            raise RuntimeError("the balancer is not listening")
        return self._address

    @property
    def host(self) -> str:
        return self.address[0]

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the balancer, for an HTTP client (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def header_for(self, client: SocketStream) -> bytes:
        """The header bytes for the accepted connection ``client``."""
        choice = self.header
        spec: HeaderSpec
        if choice is None:
            spec = header_for(client)
        elif callable(choice):
            spec = choice(client)
        else:
            spec = choice
        return header_bytes(spec, crc32c=self.crc32c)

    async def start(self, task_group: TaskGroup, host: str = "127.0.0.1") -> None:
        """Listen on a free port of ``host`` and serve in ``task_group`` until it is cancelled.

        :func:`fake_balancer` does this in a task group of its own; a pytest fixture does it in
        one that outlives the test, whatever scopes the test opens meanwhile.
        """
        if self._address is not None:
            raise RuntimeError("the balancer is already listening")
        listener = await anyio.create_tcp_listener(local_host=host, local_port=0)
        self._address = _pair(listener.extra(SocketAttribute.local_address))
        task_group.start_soon(self._serve, listener)

    async def _serve(self, listener: Any) -> None:
        async with listener:
            await listener.serve(self._handle)

    async def _handle(self, client: SocketStream) -> None:
        self.connections += 1
        async with client:
            data = self.header_for(client)
            self.sent.append(data)
            try:
                upstream = await anyio.connect_tcp(*self.target)
            except OSError:
                return  # the server is not there: the client sees its connection closed
            async with upstream:
                try:
                    await send_segments(
                        upstream,
                        data,
                        split_at=self.split_at,
                        byte_at_a_time=self.byte_at_a_time,
                        pause=self.pause,
                    )
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_pump, client, upstream)
                    tg.start_soon(_pump, upstream, client)


async def _pump(source: SocketStream, sink: SocketStream) -> None:
    """Copy ``source`` to ``sink`` until EOF, then half-close ``sink``: each direction ends on
    its own, as a TCP proxy's does. A reset on either side ends this direction quietly."""
    try:
        async for chunk in source:
            await sink.send(chunk)
        await sink.send_eof()
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        # The other direction may still be waiting on a peer that is gone: stop it too.
        await anyio.aclose_forcefully(source)
        await anyio.aclose_forcefully(sink)


def _pair(address: Any) -> tuple[str, int]:
    return (str(address[0]), int(address[1]))


@asynccontextmanager
async def fake_balancer(
    target: tuple[str, int],
    header: HeaderChoice = None,
    *,
    crc32c: bool = False,
    split_at: Sequence[int] = (),
    byte_at_a_time: bool = False,
    pause: float = 0.0,
    host: str = "127.0.0.1",
) -> AsyncIterator[FakeBalancer]:
    """A fake balancer in front of ``target`` for the duration of the block.

    It listens on a free port of ``host`` (``127.0.0.1`` or ``::1``); connect to
    :attr:`FakeBalancer.address` (or :attr:`~FakeBalancer.url`). Each connection it accepts
    opens one to ``target``, which first receives ``header`` (see :data:`HeaderChoice`; v2
    with ``crc32c`` gets a checksum TLV), cut at ``split_at`` or sent a byte at a time
    (``pause`` seconds between the writes), then the
    client's bytes; the server's answer goes back to the client. Leaving the block closes every
    connection.

    >>> import anyio, proxyproto as pp
    >>> from proxyproto.testing import fake_balancer
    >>> async def test_app(port: int) -> None:
    ...     aws = pp.Header.proxy(("203.0.113.9", 40000), ("10.0.0.5", 443),
    ...                           tlvs=pp.TLVs(aws_vpce_id="vpce-0123456789abcdef0"))
    ...     async with fake_balancer(("127.0.0.1", port), aws, split_at=[16]) as balancer:
    ...         stream = await anyio.connect_tcp(*balancer.address)
    """
    balancer = FakeBalancer(
        target,
        header,
        crc32c=crc32c,
        split_at=split_at,
        byte_at_a_time=byte_at_a_time,
        pause=pause,
    )
    async with anyio.create_task_group() as tg:
        await balancer.start(tg, host)
        try:
            yield balancer
        finally:
            tg.cancel_scope.cancel()


def _cut(
    header: HeaderSpec,
    crc32c: bool,
    split_at: Sequence[int],
    byte_at_a_time: bool,
    coalesce: bool,
) -> tuple[list[bytes], bytes]:
    """The header's writes, checked before connecting, and (with ``coalesce``) the last one
    apart, to go with the payload: ``(pieces, last)``."""
    pieces = segments(
        header_bytes(header, crc32c=crc32c), split_at=split_at, byte_at_a_time=byte_at_a_time
    )
    last = pieces.pop() if coalesce and pieces else b""
    return pieces, last


async def open_connection(
    host: str,
    port: int,
    header: HeaderSpec,
    payload: bytes = b"",
    *,
    crc32c: bool = False,
    split_at: Sequence[int] = (),
    byte_at_a_time: bool = False,
    pause: float = 0.0,
    coalesce: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    tls_hostname: str | None = None,
    tls_standard_compatible: bool = True,
    **kwargs: Any,
) -> ByteStream:
    """Connect to ``host:port``, send ``header`` then ``payload``, and return the stream.

    A :class:`~proxyproto.Header` sent whole goes through :func:`proxyproto.connect_tcp`; raw
    bytes or a header cut at ``split_at`` / a byte at a time (``pause`` seconds between the
    writes) are written as asked. ``coalesce`` sends the header's last write and the payload
    -- or, with TLS, the ClientHello -- in one write, so that they arrive in one segment, as
    from a balancer that has the client's first bytes already. ``ssl_context`` starts TLS after
    the header (``tls_hostname``, ``tls_standard_compatible`` as for
    :func:`proxyproto.connect_tcp`); other keywords go to :func:`anyio.connect_tcp`. Close the
    stream when done (``async with stream:``).

    >>> import proxyproto as pp
    >>> from proxyproto.testing import open_connection
    >>> async def ask(port: int) -> bytes:
    ...     header = pp.Header.proxy(("203.0.113.9", 40000), ("192.0.2.1", 80))
    ...     async with await open_connection("127.0.0.1", port, header, b"ping\\n") as stream:
    ...         return await stream.receive()
    """
    stream: ByteStream
    if isinstance(header, Header) and not (split_at or byte_at_a_time or coalesce):
        stream = await connect_tcp(
            host,
            port,
            header=header,
            crc32c=crc32c,
            ssl_context=ssl_context,
            tls_hostname=tls_hostname,
            tls_standard_compatible=tls_standard_compatible,
            **kwargs,
        )
        rest = payload
    else:
        pieces, last = _cut(header, crc32c, split_at, byte_at_a_time, coalesce)
        stream = await anyio.connect_tcp(host, port, **kwargs)
        try:
            await _send_pieces(stream, pieces, pause)
            if ssl_context is not None:
                if pieces:
                    await anyio.sleep(pause)
                stream = await TLSStream.wrap(
                    _FirstWrite(stream, last) if last else stream,
                    hostname=tls_hostname or host,
                    ssl_context=ssl_context,
                    standard_compatible=tls_standard_compatible,
                )
                rest = payload
            else:
                if pieces and last:
                    await anyio.sleep(pause)
                rest = last + payload
        except BaseException:
            await anyio.aclose_forcefully(stream)
            raise
    if rest:
        try:
            await stream.send(rest)
        except BaseException:
            await anyio.aclose_forcefully(stream)
            raise
    return stream


def open_socket(
    host: str,
    port: int,
    header: HeaderSpec,
    payload: bytes = b"",
    *,
    crc32c: bool = False,
    split_at: Sequence[int] = (),
    byte_at_a_time: bool = False,
    pause: float = 0.0,
    coalesce: bool = False,
    timeout: float | None = 10.0,
) -> socket.socket:
    """:func:`open_connection` without an event loop, for a test that runs its server in a
    thread (Uvicorn's ``Server.run``, a WSGI server): a connected blocking ``socket.socket``
    (``timeout``, ``TCP_NODELAY``) that has sent ``header`` and ``payload``. Close it when done
    (``with sock:``). TLS is not offered here: wrap the socket with ``ssl`` after the header.

    >>> import proxyproto as pp
    >>> from proxyproto.testing import open_socket
    >>> def ask(port: int) -> bytes:
    ...     header = pp.Header.proxy(("203.0.113.9", 40000), ("192.0.2.1", 80))
    ...     with open_socket("127.0.0.1", port, header, b"ping\\n", coalesce=True) as sock:
    ...         return sock.recv(65536)
    """
    pieces, last = _cut(header, crc32c, split_at, byte_at_a_time, coalesce)
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for index, piece in enumerate([*pieces, last + payload]):
            if index and piece:
                time.sleep(pause)
            if piece:
                sock.sendall(piece)
    except BaseException:
        sock.close()
        raise
    return sock
