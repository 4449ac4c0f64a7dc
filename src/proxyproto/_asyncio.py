"""The PROXY handshake on a plain asyncio transport, for servers built on asyncio protocols.

Uvicorn, and Hypercorn's asyncio worker, serve connections with :class:`asyncio.Protocol`
objects, not tasks. :class:`TransportHandshake` reads a header there: the protocol that owns the
transport passes on its ``data_received`` / ``eof_received`` / ``connection_lost`` calls until the
handshake is over, then the connection belongs to the server. No task, no stream layer: while
the header is read, a connection costs its transport, a :class:`~proxyproto.HeaderParser` and one
place on a :class:`HandshakeClock` (``header_timeout``); a proxy's header, which comes whole in the
first segment, is over in that one ``data_received`` call.

All of a server's handshakes have the same ``header_timeout``, so the one that started first is the
first to run out of time: one :class:`HandshakeClock` per event loop and timeout keeps them in the
order they started, with a single timer for the oldest, rather than a timer per connection (a
``call_later`` and its cancellation cost more than the rest of a connection's bookkeeping).

The decisions are every adapter's: the policy for the peer
(:func:`~proxyproto._policy.resolve`), what to make of what was read
(:func:`~proxyproto._policy.judge_reading`), the validator, and one log line on the
``proxyproto`` logger per refused connection, at the anyio listener's levels. There are no
handshake slots here: a partial header holds no task and never holds up an accept, so
``max_pending_handshakes`` and ``eviction_age`` do not apply; ``header_timeout`` bounds how long
one lasts.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

from ._address import from_sockaddr
from ._anyio import _show
from ._config import ProxyProtocolConfig
from ._errors import HeaderRejected, ProxyProtocolError
from ._model import Header
from ._parser import NEED_DATA, HeaderParser, parse_whole
from ._policy import (
    EMPTY,
    Action,
    PeerAddress,
    Policy,
    Refusal,
    carries_address,
    judge_header,
    judge_reading,
    refusal_level,
    resolve,
    validator_refusal,
)

__all__ = ["Accept", "HandshakeClock", "TransportHandshake", "peer_of"]

logger = logging.getLogger("proxyproto")

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
    # A link-local IPv6 peer keeps its scope id, as host%scope_id (proxyproto._address).
    return from_sockaddr(peer) or None


class HandshakeClock:
    """The deadlines of the handshakes under way on one event loop with one ``header_timeout``.

    Handshakes are kept in the order they started, which is the order their time runs out; one
    timer, set for the oldest, times out every handshake whose deadline has passed and is set
    again for the next. A server has one, made on its event loop with its ``header_timeout``.
    """

    __slots__ = ("_loop", "_pending", "_timeout", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self._timeout = timeout
        #: Each handshake under way and its deadline, oldest first.
        self._pending: dict[TransportHandshake, float] = {}
        self._timer: asyncio.TimerHandle | None = None

    def start(self, handshake: TransportHandshake) -> None:
        """Give ``handshake`` its deadline: ``timeout`` seconds from now."""
        deadline = self._loop.time() + self._timeout
        self._pending[handshake] = deadline
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._expire)

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
    """Reads one connection's PROXY header off its asyncio transport.

    The owning protocol creates it in ``connection_made`` and calls :meth:`start`, then forwards
    ``data_received`` and ``eof_received`` to it until ``accept`` has been called, and
    ``connection_lost`` always. ``accept`` is called at most once, from inside one of those calls
    (or from the validator's task); a refused connection is closed and logged instead.
    """

    __slots__ = (
        "_accept",
        "_clock",
        "_config",
        "_header",
        "_leftover",
        "_loop",
        "_parser",
        "_policy",
        "_transport",
        "_validation",
        "accepted",
        "done",
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
        # Made when the first bytes are not a whole header (see _whole_header()).
        self._parser: HeaderParser | None = None
        # The header and the bytes after it while a validator decides.
        self._header: Header | None = None
        self._leftover = b""
        self._policy = Policy.SKIP
        self._clock = clock
        self._validation: asyncio.Task[None] | None = None
        #: True once the handshake is over: accepted, or the connection closed.
        self.done = False
        #: True once ``accept`` was called: the connection is the server's.
        self.accepted = False
        #: The real peer (the proxy, or a direct client).
        self.peer = peer_of(transport)

    def start(self) -> None:
        """Choose the policy for the peer and start the clock (``SKIP``: accept at once)."""
        config = self._config
        try:
            self._policy = resolve(config.policy, self.peer)
        except Exception:
            self._fail()
            return
        if self._policy is Policy.SKIP:
            self._hand_over(None, b"")
            return
        self._clock.start(self)

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        if self._validation is not None:  # reading is paused while a validator runs
            self._leftover += data
            return
        parser = self._parser
        if parser is None:
            if self._whole_header(data):
                return
            parser = self._parser = self._new_parser()
        parser.receive_data(data)
        self._advance(parser)

    def eof_received(self) -> bool:
        """The peer's EOF; returns whether this accepted the connection (then the server's
        protocol should hear of the EOF too)."""
        if self.done or self._validation is not None:
            return False
        parser = self._parser
        if parser is None:
            parser = self._parser = self._new_parser()
        elif parser.closed:
            return False
        parser.receive_data(b"")
        self._advance(parser)
        return self.accepted

    def connection_lost(self) -> None:
        """The connection is gone: stop the clock and any validator.

        A peer that reset the connection before sending a byte (a health check) is refused as
        ``empty``; one that goes away later is the server's to notice, as before.
        """
        if not self.done and self._parser is None and self._validation is None:
            self._refuse("empty", EMPTY)
            return
        self._stop()
        self.done = True
        self._accept = _accept_nothing

    def close(self) -> None:
        """Close a connection whose handshake is not over (a server shutting down)."""
        if not self.done:
            self._stop()
            self.done = True
            self._transport.close()

    # --- the decision ------------------------------------------------------------------------

    def _new_parser(self) -> HeaderParser:
        config = self._config
        return HeaderParser(max_header_size=config.max_header_size, versions=config.versions)

    def _whole_header(self, data: bytes) -> bool:
        """Decide at once if the first bytes hold a whole header (what a proxy sends): one
        :func:`~proxyproto._parser.parse_whole`, no parser to make. Anything else is the parser's
        to read, and to say what is wrong with (its own first look repeats that parse)."""
        config = self._config
        whole = parse_whole(data, config.max_header_size, config.versions)
        if whole is None:
            return False
        header, size = whole
        try:
            action = judge_header(self._policy, header)
        except Refusal as refusal:
            self._refuse(refusal.kind, refusal.reason)
            return True
        self._decided(action, header, data[size:])
        return True

    def _advance(self, parser: HeaderParser) -> None:
        try:
            if parser.next_event() is NEED_DATA:
                return
        except ProxyProtocolError as error:
            self._judge(parser, error)
            return
        self._judge(parser, None)

    def time_out(self) -> None:
        """The ``header_timeout`` has passed (called by the :class:`HandshakeClock`)."""
        if self._validation is not None:
            self._validation.cancel()
            self._validation = None
            timeout = self._config.header_timeout
            self._refuse("timeout", f"the validator took more than {timeout:g}s")
            return
        if not self.done:
            self._judge(self._parser or self._new_parser(), None, timed_out=True)

    def _judge(
        self, parser: HeaderParser, error: ProxyProtocolError | None, *, timed_out: bool = False
    ) -> None:
        try:
            action = judge_reading(
                self._policy,
                parser,
                error,
                timed_out=timed_out,
                header_timeout=self._config.header_timeout,
            )
        except Refusal as refusal:
            self._refuse(refusal.kind, refusal.reason)
            return
        self._decided(action, parser.header, parser.trailing_data)

    def _decided(self, action: Action, header: Header | None, leftover: bytes) -> None:
        """Run the validator on a header whose addresses are to be used, then hand over."""
        validator = self._config.validator
        try:
            if action is Action.PROXIED and validator is not None and header is not None:
                verdict = self._call_validator(validator, header)
                if inspect.isawaitable(verdict):
                    self._transport.pause_reading()
                    self._header, self._leftover = header, leftover
                    self._validation = self._loop.create_task(self._await_validator(verdict))
                    return
                if not verdict:
                    raise Refusal("validator", validator_refusal())
        except Refusal as refusal:
            self._refuse(refusal.kind, refusal.reason)
            return
        except Exception:
            self._fail()
            return
        self._hand_over(header if action is Action.PROXIED else None, leftover)

    def _call_validator(
        self, validator: Callable[..., bool | Awaitable[bool]], header: Header
    ) -> bool | Awaitable[bool]:
        try:
            return validator(header, self.peer)
        except HeaderRejected as rejection:
            raise Refusal("validator", validator_refusal(rejection)) from None

    async def _await_validator(self, verdict: Awaitable[bool]) -> None:
        try:
            accepted = await verdict
        except HeaderRejected as rejection:
            self._validation = None
            self._refuse("validator", validator_refusal(rejection))
            return
        except Exception:
            self._validation = None
            self._fail()
            return
        self._validation = None
        if self.done or self._transport.is_closing():
            return
        if not accepted:
            self._refuse("validator", validator_refusal())
            return
        self._transport.resume_reading()
        self._hand_over(self._header, self._leftover)

    # --- the ends ----------------------------------------------------------------------------

    def _stop(self) -> None:
        self._clock.stop(self)
        if self._validation is not None:
            self._validation.cancel()
            self._validation = None

    def _refuse(self, kind: str, reason: str) -> None:
        self._stop()
        self.done = True
        self._accept = _accept_nothing
        self._transport.close()
        logger.log(refusal_level(kind), "refused connection from %s: %s", _show(self.peer), reason)

    def _fail(self) -> None:
        # Not the peer's doing (a policy or validator that raised): a traceback helps.
        self._stop()
        self.done = True
        self._accept = _accept_nothing
        self._transport.close()
        logger.exception("PROXY handshake with %s failed", _show(self.peer))

    def _hand_over(self, header: Header | None, leftover: bytes) -> None:
        self._stop()
        self.done = self.accepted = True
        # Let go of the owner's callback: it would hold the owner in a reference cycle, and a
        # connection's objects are then freed by the garbage collector, not when it closes.
        accept, self._accept = self._accept, _accept_nothing
        accept(header if carries_address(header) else None, leftover)


def _accept_nothing(header: Header | None, leftover: bytes) -> None:
    """What a handshake calls once it is over: nothing."""
