"""Read backpressure for anyio's asyncio socket streams: :func:`bound_reading`.

Theory of operation
-------------------
anyio (4.16) serves a socket stream on asyncio with a protocol that queues every chunk the
transport reads. Its ``receive()`` pops the queue; only when the queue is empty does it resume the
transport, wait for data, and pause the transport again. A stream from :func:`anyio.connect_tcp`
starts paused, so it reads only while someone waits in ``receive()``. An *accepted* stream starts
reading and is only paused after a ``receive()`` that had to wait: one whose reader always finds
data queued -- a peer that sends faster than the application reads, or that never reads what the
application sends back, so the application stops reading -- never pauses, and the queue grows
without bound (gigabytes in seconds on loopback). Behind a proxy this is every connection: the
header and the first bytes come in one segment, so the handshake's first ``receive()`` finds data.

:func:`bound_reading` pauses such a transport, which puts it where a connected stream starts:
from then on anyio's own ``receive()`` resumes reading only while it waits, and what sits in the
queue is at most what came in one read (the event loop's read size, 256 KiB) beyond what the
application asked for. A :class:`~proxyproto.ProxiedStream` calls it on its transport when it is
made, that is once the handshake is over -- not before: the handshake's first ``receive()`` then
finds the header queued without another trip through the event loop, and what comes in during a
handshake is bounded by its deadline. So every stream handed to an application by a
:class:`~proxyproto.ProxyProtocolListener` (Hypercorn's TLS binds, ``proxyproto echo``) or by
:meth:`ProxiedStream.wrap` is bounded, and every stream the relay reads from: its inbound ones
are ProxiedStreams, and it bounds its connections to targets itself (anyio's ``connect_tcp``
streams start paused today; the call keeps them so should that change).

This reaches into anyio's private attributes (``SocketStream._transport``), so every step is
guarded: it acts only on a class whose ``receive()`` itself resumes and pauses the transport (read
from its code object, once per class) and whose instances have a transport that can pause. An
anyio that renames or reworks any of it makes :func:`bound_reading` do nothing -- today's
unbounded behaviour, never an error and never a transport paused that nobody would resume.
trio's streams read the socket only when asked and need nothing.
"""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = ["bound_reading"]

T = TypeVar("T")

#: Per stream class: whether its instances are anyio asyncio socket streams we know how to bound.
_BOUNDABLE: dict[type, bool] = {}

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

    The pause is only safe where ``receive()`` resumes the transport when it finds nothing queued
    (and pauses it after): that is what anyio's ``connect_tcp`` streams rely on. The names it uses
    are read from the method's code object, so a ``receive()`` that no longer does is left alone.
    """
    if not kind.__module__.startswith("anyio._backends._asyncio"):
        return False
    receive = getattr(kind, "receive", None)
    code = getattr(receive, "__code__", None)
    if code is None:
        return False
    names = set(code.co_names)
    return {"_transport", "resume_reading", "pause_reading"} <= names


def _pause(stream: Any) -> None:
    transport = getattr(stream, "_transport", None)
    is_reading = getattr(transport, "is_reading", None)
    pause_reading = getattr(transport, "pause_reading", None)
    if is_reading is None or pause_reading is None:
        return
    try:
        if is_reading():
            pause_reading()
    except (RuntimeError, NotImplementedError, AttributeError):
        # A transport that cannot pause (or is closing in a way we did not foresee): as before.
        pass
