"""httpx transports that open each connection the way a load balancer does: a PROXY header first.

httpx hands connections to httpcore, and httpcore opens them through a *network backend*
(``httpcore.NetworkBackend`` / ``AsyncNetworkBackend``), its documented hook for custom I/O.
The transports here are httpx's own ``HTTPTransport`` / ``AsyncHTTPTransport``, with their
connection pool's backend wrapped in one that writes the header on each new TCP connection
before httpcore sends anything (before TLS too, as the spec requires). Everything else --
keep-alive, HTTP/2, TLS, limits -- is httpx's, so one header goes out per *connection*, not per
request.

httpx's transports take no backend argument: :func:`_wrap_backend` is the one place that
reaches into the pool (``_network_backend``, an httpcore attribute stable since httpcore 0.14).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeAlias

import anyio
import httpcore
import httpx

from ._wire import HeaderSpec, header_bytes, segments

__all__ = ["AsyncProxyProtocolTransport", "ProxyProtocolTransport"]

#: A fixed header (or raw bytes), or a function called for each new connection that returns one.
TransportHeader: TypeAlias = HeaderSpec | Callable[[], HeaderSpec]


class _HeaderPlan:
    """The header, how it is cut, and what was sent: shared by the sync and async transports."""

    def __init__(
        self,
        header: TransportHeader,
        *,
        crc32c: bool,
        split_at: Sequence[int],
        byte_at_a_time: bool,
    ) -> None:
        self.header: TransportHeader = header
        self.crc32c = crc32c
        self.split_at: Sequence[int] = split_at
        self.byte_at_a_time = byte_at_a_time
        self.sent: list[bytes] = []
        if not callable(header):
            self._pieces_of(header)  # a bad split or crc32c on raw bytes fails here, not later

    def _pieces_of(self, header: HeaderSpec) -> list[bytes]:
        data = header_bytes(header, crc32c=self.crc32c)
        return segments(data, split_at=self.split_at, byte_at_a_time=self.byte_at_a_time)

    def next_pieces(self) -> list[bytes]:
        header = self.header() if callable(self.header) else self.header
        pieces = self._pieces_of(header)
        self.sent.append(b"".join(pieces))
        return pieces


class _SyncBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend, plan: _HeaderPlan) -> None:
        self._inner = inner
        self._plan = plan

    def _send_header(
        self, stream: httpcore.NetworkStream, timeout: float | None
    ) -> httpcore.NetworkStream:
        try:
            for piece in self._plan.next_pieces():
                stream.write(piece, timeout=timeout)
        except BaseException:
            stream.close()
            raise
        return stream

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return self._send_header(stream, timeout)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return self._send_header(stream, timeout)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _AsyncBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, inner: httpcore.AsyncNetworkBackend, plan: _HeaderPlan) -> None:
        self._inner = inner
        self._plan = plan

    async def _send_header(
        self, stream: httpcore.AsyncNetworkStream, timeout: float | None
    ) -> httpcore.AsyncNetworkStream:
        try:
            for index, piece in enumerate(self._plan.next_pieces()):
                if index:
                    await anyio.sleep(0)  # let each piece leave on its own
                await stream.write(piece, timeout=timeout)
        except BaseException:
            await stream.aclose()
            raise
        return stream

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return await self._send_header(stream, timeout)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return await self._send_header(stream, timeout)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _HeaderAttributes:
    """The transports' ``__init__``, and their ``header`` and ``sent``, kept in their
    :class:`_HeaderPlan`; ``_header_backend`` (the sync or async one) wraps the pool's backend."""

    plan: _HeaderPlan
    _header_backend: Callable[[Any, _HeaderPlan], Any]

    def __init__(
        self,
        header: TransportHeader,
        *,
        crc32c: bool = False,
        split_at: Sequence[int] = (),
        byte_at_a_time: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)  # httpx's HTTPTransport or AsyncHTTPTransport
        self.plan = _HeaderPlan(
            header, crc32c=crc32c, split_at=split_at, byte_at_a_time=byte_at_a_time
        )
        _wrap_backend(self, lambda inner: self._header_backend(inner, self.plan))

    @property
    def header(self) -> TransportHeader:
        """What each new connection sends first; setting it applies to connections opened
        afterwards (a keep-alive connection keeps the header it was opened with)."""
        return self.plan.header

    @header.setter
    def header(self, header: TransportHeader) -> None:
        if not callable(header):
            self.plan._pieces_of(header)
        self.plan.header = header

    @property
    def sent(self) -> list[bytes]:
        """The header bytes sent on each connection opened so far, in order."""
        return self.plan.sent


def _wrap_backend(transport: Any, wrap: Callable[[Any], Any]) -> None:
    """Replace the transport's pool's network backend with ``wrap(backend)``."""
    pool = getattr(transport, "_pool", None)
    if pool is None or not hasattr(pool, "_network_backend"):
        raise RuntimeError(
            f"httpx {httpx.__version__} / httpcore {httpcore.__version__}: the transport has no "
            "connection pool with a network backend to wrap (proxyproto.testing needs updating)"
        )
    pool._network_backend = wrap(pool._network_backend)


class ProxyProtocolTransport(_HeaderAttributes, httpx.HTTPTransport):
    """``httpx.HTTPTransport`` that sends ``header`` first on every connection it opens.

    ``header`` is a :class:`~proxyproto.Header`, raw bytes (sent as they are), or a function
    called for each new connection that returns either. ``crc32c`` adds a CRC32C TLV to a v2
    header; ``split_at`` cuts the header into separate writes at those offsets,
    ``byte_at_a_time`` into single bytes. Other keywords go to ``httpx.HTTPTransport``
    (``verify=`` for TLS after the header, ``http2=``, ``retries=``...).

    >>> import httpx, proxyproto as pp
    >>> from proxyproto.testing import ProxyProtocolTransport
    >>> header = pp.Header.proxy(("203.0.113.9", 40000), ("10.0.0.5", 443),
    ...                          tlvs=pp.TLVs(aws_vpce_id="vpce-0123456789abcdef0"))
    >>> client = httpx.Client(transport=ProxyProtocolTransport(header))
    >>> # client.get("http://127.0.0.1:8000/") -- the server sees 203.0.113.9:40000
    """

    _header_backend = _SyncBackend


class AsyncProxyProtocolTransport(_HeaderAttributes, httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` that sends ``header`` first on every connection it opens;
    the arguments are :class:`ProxyProtocolTransport`'s. Runs on asyncio and trio.

    >>> import httpx, proxyproto as pp
    >>> from proxyproto.testing import AsyncProxyProtocolTransport
    >>> async def whoami(url: str) -> httpx.Response:
    ...     header = pp.Header.proxy(("203.0.113.9", 40000), ("10.0.0.5", 443))
    ...     async with httpx.AsyncClient(transport=AsyncProxyProtocolTransport(header)) as client:
    ...         return await client.get(url)
    """

    _header_backend = _AsyncBackend
