"""The PROXY handshake on a plain asyncio transport, for servers built on asyncio protocols.

Uvicorn, and Hypercorn's asyncio worker, serve connections with :class:`asyncio.Protocol`
objects, not tasks. :class:`TransportHandshake` reads a header there: the protocol that owns the
transport passes on its ``data_received`` / ``eof_received`` / ``connection_lost`` calls until the
handshake is over, then the connection belongs to the server. No task, no stream layer: while
the header is read, a connection costs its transport, the engine's handshake and one
place on a :class:`HandshakeClock` (``header_timeout``); a proxy's header, which comes whole in the
first segment, is over in that one ``data_received`` call.

All of a server's handshakes have the same ``header_timeout``, so the one that started first is the
first to run out of time: one :class:`HandshakeClock` per event loop and timeout keeps them in the
order they started, with a single timer for the oldest, rather than a timer per connection (a
``call_later`` and its cancellation cost more than the rest of a connection's bookkeeping).

Nothing is decided here: the handshake engine (:class:`proxyproto._handshake.engine.Handshake`)
chooses the policy for the peer, says what to make of what was read and asks the validator; its
counters (:class:`~proxyproto._handshake.engine.Counters`) and its rate-limited refusal log are the
clock's, one per server, with the same kinds and levels as every other surface. There are no
handshake slots here: a partial header holds no task and never holds up an accept, so
``max_pending_handshakes`` and ``eviction_age`` do not apply; ``header_timeout`` bounds how long one
lasts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from proxyproto._core.address import from_sockaddr
from proxyproto._core.model import Header
from proxyproto._handshake.config import ProxyProtocolConfig
from proxyproto._handshake.engine import (
    EMPTY,
    Counters,
    Handshake,
    Refusal,
    RefusalKind,
    RefusalLog,
    register,
    validator_timed_out,
)
from proxyproto._handshake.policy import Action, PeerAddress

__all__ = ["Accept", "HandshakeClock", "TransportHandshake", "peer_of"]

#: Called once when a connection is accepted: the header whose addresses replace the
#: connection's (``None`` for a direct connection, or a header without addresses), and the bytes
#: read after the header (for a direct connection, every byte read), which the server must see
#: first.
Accept = Callable[[Header | None, bytes], None]


def peer_of(transport: asyncio.BaseTransport) -> PeerAddress:
    """The real peer's address: ``(host, port)`` for IP, a path for UNIX sockets, or ``None``."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, list):
        peer = tuple(peer)
    # A link-local IPv6 peer keeps its scope id, as host%scope_id (proxyproto._core.address).
    return from_sockaddr(peer) or None


class HandshakeClock:
    """The deadlines of the handshakes under way on one event loop with one ``header_timeout``,
    and their counters and refusal log.

    Handshakes are kept in the order they started, which is the order their time runs out; one
    timer, set for the oldest, times out every handshake whose deadline has passed and is set
    again for the next. A server has one, made on its event loop with its ``header_timeout``;
    ``surface`` (``"uvicorn"``, ``"hypercorn"``) counts its connections in that surface's
    process-wide totals (:func:`proxyproto._handshake.engine.surface_statistics`), and ``name``
    is its ``listener`` label in the metrics (the server's bind address).
    """

    __slots__ = ("_loop", "_pending", "_timeout", "_timer", "counters", "log")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        timeout: float,
        surface: str | None = None,
        name: str | None = None,
    ) -> None:
        self._loop = loop
        self._timeout = timeout
        #: Each handshake under way and its deadline, oldest first.
        self._pending: dict[TransportHandshake, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        #: The counters of the handshakes timed here.
        self.counters = Counters()
        #: Their refusals' log.
        self.log = RefusalLog(loop.time)
        if surface is not None:
            register(surface, self.counters, name)

    def start(self, handshake: TransportHandshake) -> float:
        """Give ``handshake`` its deadline: ``timeout`` seconds from now; returns now."""
        now = self._loop.time()
        deadline = now + self._timeout
        self._pending[handshake] = deadline
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._expire)
        return now

    def stop(self, handshake: TransportHandshake) -> None:
        """``handshake`` is over: it has no deadline any more."""
        self._pending.pop(handshake, None)

    def __len__(self) -> int:
        return len(self._pending)

    def close_all(self) -> None:
        """Close every connection whose handshake is under way (a server shutting down)."""
        for handshake in list(self._pending):
            handshake.close()

    def _expire(self) -> None:
        self._timer = None
        now = self._loop.time()
        pending = self._pending
        while pending:
            handshake, deadline = next(iter(pending.items()))
            if deadline > now:
                self._timer = self._loop.call_at(deadline, self._expire)
                return
            del pending[handshake]
            handshake.time_out()


class TransportHandshake:
    """Reads one connection's PROXY header off its asyncio transport, for the engine
    (:class:`proxyproto._handshake.engine.Handshake`) to decide.

    The owning protocol creates it in ``connection_made`` and calls :meth:`start`, then forwards
    ``data_received`` and ``eof_received`` to it until ``accept`` has been called, and
    ``connection_lost`` always. ``accept`` is called at most once, from inside one of those calls
    (or from the validator's task); a refused connection is closed, counted and logged instead.
    """

    __slots__ = (
        "_accept",
        "_action",
        "_clock",
        "_config",
        "_engine",
        "_extra",
        "_loop",
        "_started",
        "_transport",
        "_validation",
        "accepted",
        "done",
        "header",
        "peer",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        config: ProxyProtocolConfig,
        accept: Accept,
        loop: asyncio.AbstractEventLoop,
        clock: HandshakeClock,
    ) -> None:
        self._transport = transport
        self._config = config
        self._accept = accept
        self._loop = loop
        self._clock = clock
        # Made by start(): the policy for the peer is the user's code and may raise.
        self._engine: Handshake | None = None
        # While a validator decides: the action, and the bytes that came meanwhile.
        self._action = Action.DIRECT
        self._extra = b""
        self._validation: asyncio.Task[None] | None = None
        # When its clock started (the loop's time); 0 under SKIP, which reads nothing.
        self._started = 0.0
        #: True once the handshake is over: accepted, or the connection closed.
        self.done = False
        #: True once ``accept`` was called: the connection is the server's.
        self.accepted = False
        #: The real peer (the proxy, or a direct client).
        self.peer = peer_of(transport)
        #: Once accepted: the header, when one was received and trusted (not under ``IGNORE``),
        #: LOCAL ones too; else ``None``. What the ASGI scope extension shows the app.
        self.header: Header | None = None

    def start(self) -> None:
        """Choose the policy for the peer and start the clock (``SKIP``: accept at once)."""
        self._clock.counters.in_flight += 1
        try:
            engine = self._engine = Handshake(self._config, self.peer)
        except Exception as error:
            self._end_with(error)
            return
        if not engine.reads:
            self._hand_over(Action.DIRECT)
            return
        self._started = self._clock.start(self)

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        if self._validation is not None:  # reading is paused while a validator runs
            self._extra += data
            return
        assert self._engine is not None
        if self._engine.receive_data(data):
            self._judge()

    def eof_received(self) -> bool:
        """The peer's EOF; returns whether this accepted the connection (then the server's
        protocol should hear of the EOF too)."""
        if self.done or self._validation is not None:
            return False
        assert self._engine is not None
        if self._engine.receive_data(b""):
            self._judge()
        return self.accepted

    def connection_lost(self) -> None:
        """The connection is gone: stop the clock and any validator.

        A peer that reset the connection before sending a byte (a health check) is refused as
        ``empty``; one that goes away in the middle of its header as ``error``.
        """
        if self.done:
            self._accept = _accept_nothing
            return
        engine = self._engine
        if engine is None or engine.sent_nothing:
            self._refuse(RefusalKind.EMPTY, EMPTY)
        else:
            self._refuse(RefusalKind.ERROR, "the connection was lost before the handshake ended")

    def close(self) -> None:
        """Close a connection whose handshake is not over (a server shutting down)."""
        if not self.done:
            self._finish()
            self._transport.close()

    # --- the decision ------------------------------------------------------------------------

    def time_out(self) -> None:
        """The ``header_timeout`` has passed (called by the :class:`HandshakeClock`)."""
        if self._validation is not None:
            self._validation.cancel()
            self._validation = None
            refusal = validator_timed_out(self._config.header_timeout)
            self._refuse(refusal.kind, refusal.reason)
            return
        if not self.done:
            self._judge(timed_out=True)

    def _judge(self, *, timed_out: bool = False) -> None:
        """Decide what was read, run the validator on a header whose addresses are to be used,
        then hand over."""
        engine = self._engine
        assert engine is not None
        try:
            action = engine.judge(timed_out=timed_out)
            pending = engine.validation(action)
        except Exception as error:
            self._end_with(error)
            return
        if pending is not None:
            self._transport.pause_reading()
            self._action = action
            self._validation = self._loop.create_task(self._await_validator(pending))
            return
        self._hand_over(action)

    async def _await_validator(self, pending: Awaitable[None]) -> None:
        try:
            await pending
        except Exception as error:
            self._validation = None
            self._end_with(error)
            return
        self._validation = None
        if self.done or self._transport.is_closing():
            return
        self._transport.resume_reading()
        self._hand_over(self._action)

    # --- the ends ----------------------------------------------------------------------------

    def _finish(self) -> None:
        """The handshake is over, whichever way: out of the clock and the count under way."""
        self._clock.stop(self)
        if self._validation is not None:
            self._validation.cancel()
            self._validation = None
        self.done = True
        self._clock.counters.in_flight -= 1
        # Let go of the owner's callback: it would hold the owner in a reference cycle, and a
        # connection's objects are then freed by the garbage collector, not when it closes.
        self._accept = _accept_nothing

    def _end_with(self, error: Exception) -> None:
        """End the handshake on what the engine raised: a refusal, or (called in the ``except``
        block, so that the traceback is logged) an error of the user's policy or validator."""
        if isinstance(error, Refusal):
            self._refuse(error.kind, error.reason)
        else:
            self._fail()

    def _refuse(self, kind: RefusalKind, reason: str) -> None:
        self._finish()
        self._transport.close()
        clock = self._clock
        clock.counters.rejected[kind] += 1
        clock.log.refused(kind, self.peer, reason)

    def _fail(self) -> None:
        # Not the peer's doing (a policy or validator that raised): a traceback helps.
        self._finish()
        self._transport.close()
        clock = self._clock
        clock.counters.rejected[RefusalKind.ERROR] += 1
        clock.log.failed(self.peer)

    def _hand_over(self, action: Action) -> None:
        engine = self._engine
        assert engine is not None
        accept = self._accept
        self._finish()
        self.accepted = True
        received = engine.header
        if action is Action.PROXIED:
            self.header = received
        header = received if engine.uses_addresses(action) else None
        self._clock.counters.accept(
            0 if received is None else received.version,
            header is None,
            self._loop.time() - self._started if self._started else 0.0,
        )
        accept(header, engine.leftover + self._extra if self._extra else engine.leftover)


def _accept_nothing(header: Header | None, leftover: bytes) -> None:
    """What a handshake calls once it is over: nothing."""
