"""Read backpressure for anyio's asyncio socket streams: :func:`bound_reading`.

Theory of operation
-------------------
anyio (4.16) serves a socket stream on asyncio with a protocol that queues every chunk the
transport reads (``read_queue``, a deque). Its ``receive()`` pops the queue; only when the queue is
empty does it resume the transport, wait for data, and pause the transport again. A stream from
:func:`anyio.connect_tcp` starts paused, so it reads only while someone waits in ``receive()``.
An *accepted* stream starts reading and is only paused after a ``receive()`` that had to wait:
one whose reader always finds data queued -- a peer that sends faster than the application
reads, or that never reads what the application sends back, so the application stops reading --
never pauses, and the queue grows without bound (gigabytes in seconds on loopback). Behind a
proxy this is every connection: the header and the first bytes come in one segment, so the
handshake's first ``receive()`` finds data.

:func:`bound_reading` gives the stream the flow control of asyncio's own ``StreamReader``: its
protocol's queue becomes a :class:`_BoundedQueue`, which counts the bytes it holds, pauses the
transport when they pass :data:`HIGH_WATER` and resumes it when ``receive()`` has taken them
down to :data:`LOW_WATER` -- also after anyio's own pause at the end of a ``receive()`` that
waited, so the transport keeps reading ahead of the application as it does today (pausing
after every such ``receive()`` instead halves bulk throughput: a ``receive()`` would then get
one read's worth per trip through the event loop). What a connection holds is then at most
:data:`HIGH_WATER` plus one read of the event loop (256 KiB) beyond the kernel's buffers.

Where the queue cannot be replaced, the transport is only paused, once: anyio's ``receive()``
then reads while it waits, as on its connected streams -- bounded, slower for bulk.

:func:`first_read_nowait` is the handshake's first read on such a stream, without waiting: the
chunks the protocol has queued already, else what the socket holds (``os.read`` of its
descriptor, which asyncio keeps non-blocking; the transport's next read then finds the rest, in
order, as nothing was queued before). Behind a proxy the whole header is there, and it is judged
with no deadline set and no trip through the event loop. Guarded in the same way: a stream whose
``receive()`` does not pop ``read_queue`` and clear ``read_event`` gets ``None`` (the handshake
then reads with ``receive()``).

A :class:`~proxyproto.ProxiedStream` calls it on its transport when it is made, that is once the
handshake is over (the handshake's first ``receive()`` stays a fast path; what comes in during a
handshake is bounded by its deadline). So every stream handed to an application by a
:class:`~proxyproto.ProxyProtocolListener` (Hypercorn's TLS binds, ``proxyproto echo``) or by
:meth:`ProxiedStream.wrap` is bounded, and every stream the relay reads from: its inbound ones
are ProxiedStreams, and it bounds its connections to targets itself.

This reaches into anyio's private attributes (``SocketStream._transport`` and ``._protocol``,
``StreamProtocol.read_queue``), so every step is guarded: it acts only on a class whose
``receive()`` itself resumes and pauses the transport and pops ``read_queue`` (read from its
code object, once per class), and replaces the queue only if it is a plain deque that the
protocol's ``data_received()`` appends to. An anyio that renames or reworks any of it makes
:func:`bound_reading` do less or nothing -- at worst today's unbounded behaviour, never an error
and never a transport paused that nobody would resume. trio's streams read the socket only when
asked and need nothing.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

__all__ = ["bound_reading", "first_read_nowait"]

T = TypeVar("T")

#: Per stream class: whether its instances are anyio asyncio socket streams we know how to bound.
_BOUNDABLE: dict[type, bool] = {}

#: Bytes queued past which the transport is paused (asyncio's StreamReader pauses at 2 x 64 KiB;
#: larger here, so that bulk transfers pause seldom).
HIGH_WATER = 1 << 20

#: Bytes queued at or below which a paused transport is resumed.
LOW_WATER = HIGH_WATER // 2

#: How deep to look through wrappers (``transport_stream`` of ProxiedStream, TLSStream, ...).
_MAX_DEPTH = 4


def bound_reading(stream: T) -> T:
    """Pause ``stream``'s asyncio transport until a ``receive()`` waits; return ``stream``.

    Looks through wrappers that have a ``transport_stream`` (a ProxiedStream, a TLSStream) to the
    socket stream. Does nothing on trio, on streams that are not anyio's asyncio socket streams,
    on a transport already paused or closing, and on an anyio whose internals are not the ones
    this was written for.
    """
    target: Any = stream
    for _ in range(_MAX_DEPTH):
        kind = type(target)
        boundable = _BOUNDABLE.get(kind)
        if boundable is None:
            boundable = _BOUNDABLE[kind] = _is_boundable(kind)
        if boundable:
            _pause(target)
            break
        target = getattr(target, "transport_stream", None)
        if target is None:
            break
    return stream


def _is_boundable(kind: type) -> bool:
    """Whether ``kind`` is an anyio asyncio socket stream whose ``receive()`` resumes reading.

    A pause is only safe where ``receive()`` resumes the transport when it finds nothing queued
    (and pauses it after): that is what anyio's ``connect_tcp`` streams rely on. The names it uses
    are read from the method's code object, so a ``receive()`` that no longer does is left alone.
    """
    if not kind.__module__.startswith("anyio._backends._asyncio"):
        return False
    code = getattr(getattr(kind, "receive", None), "__code__", None)
    if code is None:
        return False
    names = set(code.co_names)
    return {"_transport", "_protocol", "resume_reading", "pause_reading"} <= names


def _pause(stream: Any) -> None:
    transport: Any = getattr(stream, "_transport", None)
    kind = type(transport)
    pausable = _PAUSABLE.get(kind)
    if pausable is None:  # asyncio's transports, uvloop's (which are not its subclasses)...
        names = ("is_reading", "pause_reading", "resume_reading")
        pausable = _PAUSABLE[kind] = all(callable(getattr(kind, name, None)) for name in names)
    if not pausable:
        return
    protocol: Any = getattr(stream, "_protocol", None)
    try:
        if _queue_replaceable(type(stream), protocol):
            queue = _BoundedQueue(protocol.read_queue, protocol, transport)
            protocol.read_queue = queue
            if queue.size > HIGH_WATER:
                queue.pause()
        elif transport.is_reading():
            transport.pause_reading()
    except (RuntimeError, NotImplementedError, AttributeError, TypeError):
        # A transport that cannot pause (or is closing in a way we did not foresee): as before.
        pass


#: Per transport class: whether it has ``is_reading()``, ``pause_reading()``, ``resume_reading()``.
_PAUSABLE: dict[type, bool] = {}

#: Per (stream class, protocol class): whether the protocol's read_queue can be replaced (the
#: stream's receive() pops it, the protocol's data_received() appends to it).
_QUEUE_REPLACEABLE: dict[tuple[type, type], bool] = {}


def _queue_replaceable(kind: Any, protocol: Any) -> bool:
    queue = getattr(protocol, "read_queue", None)
    if type(queue) is not deque:  # a _BoundedQueue already, or not what we know
        return False
    if not isinstance(getattr(protocol, "is_at_eof", None), bool):
        return False
    # Read from the code objects once per pair of classes: this runs on every connection.
    kinds = (kind, type(protocol))
    replaceable = _QUEUE_REPLACEABLE.get(kinds)
    if replaceable is None:
        code = getattr(getattr(kinds[1], "data_received", None), "__code__", None)
        replaceable = (
            {"read_queue", "popleft"} <= set(kind.receive.__code__.co_names)
            and code is not None
            and {"read_queue", "append"} <= set(code.co_names)
        )
        _QUEUE_REPLACEABLE[kinds] = replaceable
    return replaceable


class _BoundedQueue(deque[bytes]):
    """anyio's read queue, counting its bytes: pauses the transport above :data:`HIGH_WATER`,
    resumes it at :data:`LOW_WATER` or below when ``receive()`` takes a chunk."""

    __slots__ = ("protocol", "size", "transport")

    def __init__(self, chunks: deque[bytes], protocol: Any, transport: Any) -> None:
        super().__init__(chunks)
        self.size = sum(map(len, chunks)) if chunks else 0
        self.protocol = protocol
        self.transport = transport

    def pause(self) -> None:
        if self.transport.is_reading():
            self.transport.pause_reading()

    def append(self, chunk: bytes) -> None:  # data_received()
        super().append(chunk)
        self.size += len(chunk)
        if self.size > HIGH_WATER:
            self.pause()

    def appendleft(self, chunk: bytes) -> None:  # receive() gives back what max_bytes left
        super().appendleft(chunk)
        self.size += len(chunk)

    def popleft(self) -> bytes:  # receive()
        chunk = super().popleft()
        self.size -= len(chunk)
        # Paused by us above the high-water mark, or by anyio's receive() after it waited: read
        # ahead again (not at EOF: a resumed transport would report it a second time).
        if (
            self.size <= LOW_WATER
            and not self.protocol.is_at_eof
            and not self.transport.is_reading()
        ):
            self.transport.resume_reading()
        return chunk


def first_read_nowait(stream: Any, sock: Any = None) -> Callable[[], bytes | None] | None:
    """The handshake's first read of ``stream`` without waiting (see the module's docstring),
    where ``stream`` is an anyio asyncio socket stream we know; else ``None``. ``sock``: its
    transport's socket, when the caller has it already."""
    kind = type(stream)
    readable = _FIRST_READABLE.get(kind)
    if readable is None:
        readable = _FIRST_READABLE[kind] = _POSIX and _is_first_readable(kind)
    if not readable:
        return None
    protocol = getattr(stream, "_protocol", None)
    transport = getattr(stream, "_transport", None)
    if (
        type(getattr(protocol, "read_queue", None)) is not deque
        or not hasattr(protocol, "read_event")
        or transport is None
    ):
        return None
    if sock is None:
        sock = transport.get_extra_info("socket")
        if sock is None:
            return None
    return partial(_read_first, protocol, sock)


_POSIX = os.name == "posix"

#: Per stream class: whether :func:`first_read_nowait` knows its instances.
_FIRST_READABLE: dict[type, bool] = {}


def _is_first_readable(kind: type) -> bool:
    if not kind.__module__.startswith("anyio._backends._asyncio"):
        return False
    code = getattr(getattr(kind, "receive", None), "__code__", None)
    if code is None:
        return False
    return {"_protocol", "read_queue", "read_event", "popleft", "clear"} <= set(code.co_names)


def _read_first(protocol: Any, sock: Any) -> bytes | None:
    queue: deque[bytes] = protocol.read_queue
    if queue:
        chunk = queue.popleft()
        if not queue:
            protocol.read_event.clear()
        return chunk
    if protocol.is_at_eof or protocol.exception is not None:
        return None  # receive() says what happened
    try:
        return os.read(sock.fileno(), _FIRST_READ_SIZE)
    except (BlockingIOError, InterruptedError):
        return None


#: What the first read takes at most: a v2 header of any size fits, and anyio's receive() default.
_FIRST_READ_SIZE = 65536
