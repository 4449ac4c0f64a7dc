"""The handshake engine: what to make of what a connection (or a datagram) sent. Sans-IO.

Theory of operation
-------------------
Every surface -- the anyio listener and :meth:`ProxiedStream.wrap`, native trio, the asyncio
protocols behind Uvicorn and Hypercorn, UDP -- reads bytes its own way and asks this module
everything else, so that no behaviour is decided in two places:

* :class:`Handshake` is one connection's handshake: the policy for its peer, the bytes fed to it
  (``receive_data(b"")`` is the peer's EOF), and :meth:`Handshake.judge` once reading is over,
  which returns the :class:`~proxyproto._handshake.policy.Action` or raises a :class:`Refusal`. A
  header that comes whole in the first segment (what a proxy sends) is parsed once, with no
  :class:`~proxyproto.HeaderParser` made.
* :func:`judge_reading` is that decision as a pure function of facts (a header or none, whether
  a signature came, whether the peer closed or sent nothing, the parser's error, the deadline);
  :func:`judge_datagram` the same for one datagram.
* :func:`validate` calls the validator: it returns ``None`` (accepted), raises :class:`Refusal`,
  or returns an awaitable the surface awaits under the handshake's deadline; a validator still
  running at the deadline is :func:`validator_timed_out` -- kind ``timeout`` -- everywhere.
* :class:`RefusalKind` names every way a handshake ends without a connection, with its log
  level; :class:`Counters` counts them (a snapshot is :class:`ListenerStatistics`), and
  :class:`RefusalLog` logs them, one line each for the first ten of each kind in a ten-second
  window and a summary line for the rest, so a flood gives periodic summaries, not a line per
  connection.
* :class:`Admission` bounds the partial handshakes (``max_pending_handshakes``): when that many
  are under way, a new one evicts the oldest of those partial for ``eviction_age``, in a batch
  if need be, and never waits.
* :class:`Handshakes` runs those steps for a listener (anyio's or trio's, each passing its
  :class:`Primitives`: cancel scopes and clock), counting and logging each end;
  :func:`read_handshake` the same for one stream, without the bound.

The engine imports no I/O framework and never sleeps; a clock, where it needs one, is the
surface's (passed in as a number or a function).
"""

from __future__ import annotations

import enum
import inspect
import logging
import time
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import attrs

from proxyproto._core import v1, v2
from proxyproto._core.errors import (
    HeaderRejected,
    InvalidHeader,
    InvalidSignature,
    ProxyProtocolError,
)
from proxyproto._core.model import Header
from proxyproto._core.parser import (
    NEED_DATA,
    HeaderParser,
    VersionNotAccepted,
    parse_datagram,
    parse_whole,
)
from proxyproto._core.text import format_address, printable

from .config import ProxyProtocolConfig, Validator
from .policy import Action, PeerAddress, Policy, carries_address, decide, resolve

__all__ = [
    "BY_VERSION_LABELS",
    "DURATION_BUCKETS",
    "EMPTY",
    "Admission",
    "Counters",
    "Handshake",
    "Handshakes",
    "ListenerStatistics",
    "Primitives",
    "Refusal",
    "RefusalKind",
    "RefusalLog",
    "Started",
    "Ticket",
    "judge_datagram",
    "judge_header",
    "judge_reading",
    "read_handshake",
    "register",
    "registered",
    "show_peer",
    "surface_statistics",
    "validate",
    "validator_refusal",
    "validator_timed_out",
]

logger = logging.getLogger("proxyproto")

_Stream = TypeVar("_Stream")


class RefusalKind(str, enum.Enum):
    """Why a handshake ended without a connection (a datagram was dropped); the value is the key
    in the counters (``statistics().rejected``, ``.dropped``)."""

    #: The peer closed or reset before sending a byte (a health check).
    EMPTY = "empty"
    #: No header where its policy needs one.
    MISSING = "missing"
    #: A broken header.
    INVALID = "invalid"
    #: The peer closed before its header was complete.
    CLOSED = "closed"
    #: A header its policy forbids.
    POLICY = "policy"
    #: The validator said no.
    VALIDATOR = "validator"
    #: No complete header (or no validator's answer) within ``header_timeout``.
    TIMEOUT = "timeout"
    #: Closed to make room for a newer handshake (``eviction_age``).
    EVICTED = "evicted"
    #: A network error, or a policy or validator that raised.
    ERROR = "error"

    @property
    def level(self) -> int:
        """The log level of a refusal of this kind.

        A connection that went away without a byte is routine: DEBUG. One that went away later
        (timeout, evicted, closed, error) is worth an INFO line; a peer that sent what it must
        not (missing, invalid, policy, validator), a WARNING.
        """
        return _LEVELS[self]


_LEVELS = {
    RefusalKind.EMPTY: logging.DEBUG,
    RefusalKind.TIMEOUT: logging.INFO,
    RefusalKind.EVICTED: logging.INFO,
    RefusalKind.CLOSED: logging.INFO,
    RefusalKind.ERROR: logging.INFO,
    RefusalKind.MISSING: logging.WARNING,
    RefusalKind.INVALID: logging.WARNING,
    RefusalKind.POLICY: logging.WARNING,
    RefusalKind.VALIDATOR: logging.WARNING,
}


class Refusal(Exception):
    """A handshake that ends with the connection closed (or the datagram dropped).

    ``kind`` (a :class:`RefusalKind`; its value may be given) is for the counters and the log
    level, ``reason`` for the log line. A policy callable may raise it to refuse a peer.
    """

    def __init__(self, kind: RefusalKind | str, reason: str) -> None:
        super().__init__(reason)
        self.kind = RefusalKind(kind)
        self.reason = reason

    def as_error(self) -> Exception:
        """The exception ``ProxiedStream.wrap()`` raises for this refusal (on anyio and trio):
        :exc:`TimeoutError`, :class:`~proxyproto.HeaderRejected` (the policy or the validator
        said no) or :class:`~proxyproto.InvalidHeader`."""
        if self.kind is RefusalKind.TIMEOUT:
            return TimeoutError(self.reason)
        if self.kind in (RefusalKind.POLICY, RefusalKind.VALIDATOR):
            return HeaderRejected(self.reason)
        return InvalidHeader(self.reason)


#: The reason logged for a connection closed or reset before it sent a byte (kind ``empty``).
EMPTY = "closed or reset before sending a byte"


# --- the decisions -------------------------------------------------------------------------------


def judge_reading(
    policy: Policy,
    header: Header | None,
    *,
    signature_seen: bool,
    closed: bool,
    sent_nothing: bool,
    error: ProxyProtocolError | None,
    timed_out: bool,
    header_timeout: float,
) -> Action:
    """What to make of what a handshake read; raises :class:`Refusal` when it must close.

    :param header: the header, when a valid one arrived.
    :param signature_seen: a whole signature (or the version) was recognised.
    :param closed: the peer closed (EOF) before reading stopped.
    :param sent_nothing: not a single byte arrived.
    :param error: what the parser raised, if it did.
    :param timed_out: the deadline passed before reading stopped.
    """
    if header is not None:
        return judge_header(policy, header)
    if timed_out and (signature_seen or policy is Policy.REQUIRE):
        raise Refusal(RefusalKind.TIMEOUT, f"no complete PROXY header within {header_timeout:g}s")
    if error is not None and not isinstance(error, InvalidSignature):
        raise Refusal(RefusalKind.CLOSED if closed else RefusalKind.INVALID, str(error)) from error
    action, reason = decide(policy, None, signature_seen=signature_seen)
    if action is Action.CLOSE:
        if closed and sent_nothing:
            raise Refusal(RefusalKind.EMPTY, EMPTY)
        if closed:
            raise Refusal(RefusalKind.CLOSED, f"{reason}: {error}")
        if isinstance(error, VersionNotAccepted):
            # A header came, of a version not accepted here: "no PROXY header" would mislead.
            raise Refusal(RefusalKind.MISSING, f"{error}, and its policy ({policy.name}) needs one")
        raise Refusal(RefusalKind.MISSING, f"{reason} ({error})" if error is not None else reason)
    return action


def judge_header(policy: Policy, header: Header) -> Action:
    """:func:`judge_reading`'s answer once a valid header arrived."""
    action, reason = decide(policy, header, signature_seen=True)
    if action is Action.CLOSE:
        raise Refusal(RefusalKind.POLICY, reason)
    return action


def judge_datagram(
    policy: Policy, data: bytes, max_header_size: int
) -> tuple[Action, Header | None, bytes]:
    """What to make of one datagram (spec 2.2: each is parsed on its own, an incomplete header
    is invalid): the action, the header and the payload; raises :class:`Refusal` to drop it."""
    if policy is Policy.SKIP:
        return Action.DIRECT, None, data
    header: Header | None = None
    error: InvalidHeader | None = None
    payload = data
    try:
        header, payload = parse_datagram(data)
    except InvalidHeader as exception:
        error = exception
    # A whole signature is a header, broken or not; anything else is a headerless datagram.
    signature_seen = data.startswith((v2.SIGNATURE, v1.PREFIX))
    if header is not None and len(data) - len(payload) > max_header_size:
        raise Refusal(
            RefusalKind.INVALID,
            f"the header is {len(data) - len(payload)} bytes, more than max_header_size "
            f"({max_header_size})",
        )
    action = judge_reading(
        policy,
        header,
        signature_seen=signature_seen,
        closed=False,
        sent_nothing=False,
        error=error if signature_seen else None,
        timed_out=False,
        header_timeout=0,
    )
    return action, header, payload


def validator_refusal(rejection: HeaderRejected | None = None) -> str:
    """The reason to log when the validator says no, with its own message if it raised one.

    The message may quote the header's fields, which are the peer's text: it is escaped
    (:func:`~proxyproto._core.text.printable`), so that it cannot forge a log line.
    """
    if rejection is None:
        return "the validator refused the header"
    return f"the validator refused the header: {printable(str(rejection))}"


def validator_timed_out(header_timeout: float) -> Refusal:
    """The refusal of a handshake whose validator was still running at its deadline."""
    return Refusal(RefusalKind.TIMEOUT, f"the validator took more than {header_timeout:g}s")


def validate(validator: Validator, header: Header, peer: PeerAddress) -> Awaitable[None] | None:
    """Ask ``validator`` about ``header``: ``None`` when it accepted, :class:`Refusal` raised when
    it refused; an asynchronous one gives an awaitable that returns or raises the same, which the
    surface awaits under the handshake's deadline (past it: :func:`validator_timed_out`).

    Any other exception is the validator's bug, for the surface to log with its traceback.
    """
    try:
        verdict = validator(header, peer)
    except HeaderRejected as rejection:
        raise Refusal(RefusalKind.VALIDATOR, validator_refusal(rejection)) from None
    if inspect.isawaitable(verdict):
        return _awaited(verdict)
    if not verdict:
        raise Refusal(RefusalKind.VALIDATOR, validator_refusal())
    return None


async def _awaited(verdict: Awaitable[bool]) -> None:
    try:
        accepted = await verdict
    except HeaderRejected as rejection:
        raise Refusal(RefusalKind.VALIDATOR, validator_refusal(rejection)) from None
    if not accepted:
        raise Refusal(RefusalKind.VALIDATOR, validator_refusal())


# --- one connection's handshake --------------------------------------------------------------


class Handshake:
    """One connection's handshake, sans-IO: feed it what the peer sends, then ask :meth:`judge`.

    >>> handshake = Handshake(ProxyProtocolConfig(), ("192.0.2.1", 4000))
    >>> handshake.receive_data(b"PROXY TCP4 192.0.2.7 192.0.2.1 5000 80\\r\\nGET /")
    True
    >>> handshake.judge(), handshake.header.source, handshake.leftover
    (<Action.PROXIED: 'proxied'>, ('192.0.2.7', 5000), b'GET /')

    :raises Refusal: (from the constructor) the policy callable refused the peer itself.
    """

    __slots__ = ("_error", "_header", "_leftover", "_parser", "config", "peer", "policy")

    def __init__(self, config: ProxyProtocolConfig, peer: PeerAddress) -> None:
        #: The configuration in force.
        self.config = config
        #: The real peer: the proxy, or a direct client.
        self.peer = peer
        #: The policy for this peer (a policy callable is the user's code: it may raise).
        self.policy: Policy = resolve(config.policy, peer)
        # Made when the first bytes are not a whole header.
        self._parser: HeaderParser | None = None
        self._header: Header | None = None
        self._leftover = b""
        self._error: ProxyProtocolError | None = None

    @property
    def reads(self) -> bool:
        """Whether anything is to be read at all (not under ``SKIP``)."""
        return self.policy is not Policy.SKIP

    def receive_data(self, data: bytes) -> bool:
        """Feed what the peer sent (``b""``: its EOF); ``True`` once reading is over (a header,
        an error, or the EOF), when :meth:`judge` decides."""
        parser = self._parser
        if parser is None:
            if data:
                config = self.config
                whole = parse_whole(data, config.max_header_size, config.versions)
                if whole is not None:
                    self._header, size = whole
                    self._leftover = data[size:]
                    return True
            parser = self._parser = self._new_parser()
        try:
            parser.receive_data(data)
            return parser.next_event() is not NEED_DATA
        except ProxyProtocolError as error:
            self._error = error
            return True

    @property
    def partial(self) -> bool:
        """Some bytes came, not a whole header yet: the handshakes that hold a slot."""
        parser = self._parser
        return parser is not None and bool(parser.trailing_data) and parser.header is None

    @property
    def sent_nothing(self) -> bool:
        """Not a byte has arrived."""
        if self._header is not None:
            return False
        parser = self._parser
        return parser is None or (
            parser.header is None and parser.version is None and not parser.trailing_data
        )

    @property
    def header(self) -> Header | None:
        """The header received, if a valid one came."""
        if self._parser is not None:
            return self._parser.header
        return self._header

    @property
    def leftover(self) -> bytes:
        """The bytes after the header (for a direct connection, every byte read)."""
        if self._parser is not None:
            return self._parser.trailing_data
        return self._leftover

    def judge(self, *, timed_out: bool = False) -> Action:
        """What to make of what was read (``timed_out``: the deadline passed first).

        :raises Refusal: the connection must be closed.
        """
        policy = self.policy
        if policy is Policy.SKIP:
            return Action.DIRECT
        parser = self._parser
        if parser is None:
            if self._header is not None:
                return judge_header(policy, self._header)
            parser = self._parser = self._new_parser()
        return judge_reading(
            policy,
            parser.header,
            signature_seen=parser.version is not None,
            closed=parser.closed,
            sent_nothing=self.sent_nothing,
            error=self._error,
            timed_out=timed_out,
            header_timeout=self.config.header_timeout,
        )

    def validation(self, action: Action) -> Awaitable[None] | None:
        """The validator's say on a header whose addresses are to be used (see :func:`validate`);
        ``None`` when there is nothing to ask or it accepted."""
        validator, header = self.config.validator, self.header
        if action is not Action.PROXIED or validator is None or header is None:
            return None
        return validate(validator, header, self.peer)

    def stream_keywords(self, action: Action) -> dict[str, Any]:
        """What the handshake decided, as the keywords of both ``ProxiedStream`` classes (anyio's
        and trio's), after the transport and the header."""
        return {
            "leftover": self.leftover,
            "use_addresses": action is Action.PROXIED,
            "policy": self.policy,
            "peer_address": self.peer,
        }

    def uses_addresses(self, action: Action) -> bool:
        """Whether the header's addresses replace the connection's (else it is direct)."""
        return action is Action.PROXIED and carries_address(self.header)

    def _new_parser(self) -> HeaderParser:
        config = self.config
        return HeaderParser(max_header_size=config.max_header_size, versions=config.versions)


# --- counting ----------------------------------------------------------------------------------


@attrs.frozen
class ListenerStatistics:
    """A snapshot of a listener's counters, for operators: the same on every TCP surface."""

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


#: ``Counters.by_version`` index -> the exporters' ``(mode, version)`` labels.
BY_VERSION_LABELS = {
    1: ("proxied", "1"),
    2: ("proxied", "2"),
    3: ("direct", "none"),
    4: ("direct", "1"),
    5: ("direct", "2"),
}

#: The upper bounds (seconds) of the buckets of the handshake duration histogram
#: (:attr:`Counters.durations`), after Prometheus's default buckets shifted down: a proxy's header
#: comes in the first segment, so most handshakes take well under a millisecond.
DURATION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Counters:
    """A listener's counters: plain integers, bumped by its handshakes.

    Besides what :class:`ListenerStatistics` shows, for a metrics exporter: the accepted
    connections by whether they are proxied or direct and by the header's version
    (:attr:`by_version`), and how long accepted handshakes took (:attr:`durations`,
    :attr:`duration_sum`), each bumped once per accepted connection by :meth:`accept`. ``name``
    is the listener's name in the registry (:func:`register`).
    """

    __slots__ = (
        "accepted",
        "by_version",
        "direct",
        "duration_sum",
        "durations",
        "in_flight",
        "name",
        "rejected",
    )

    def __init__(self) -> None:
        self.accepted = 0
        self.direct = 0
        self.in_flight = 0
        #: Refusals by kind.
        self.rejected = dict.fromkeys(RefusalKind, 0)
        #: Accepted connections, at ``version + 3 * direct``: version 0 for no header, so
        #: ``[_, proxied v1, proxied v2, direct without a header, direct v1, direct v2]`` (a
        #: direct connection may have had a header: LOCAL, UNKNOWN, ``IGNORE``).
        self.by_version = [0] * 6
        #: Accepted handshakes by duration: one count per :data:`DURATION_BUCKETS` bound (not
        #: cumulative), and a last one for longer ones.
        self.durations = [0] * (len(DURATION_BUCKETS) + 1)
        #: The sum of those durations, in seconds.
        self.duration_sum = 0.0
        #: The listener's name in the registry; ``None`` when it was given none.
        self.name: str | None = None

    def accept(self, version: int, direct: bool, duration: float) -> None:
        """Count one accepted connection: its header's version (0 when it had none), whether it
        is direct (no header's addresses used), and how long its handshake took."""
        self.accepted += 1
        if direct:
            self.direct += 1
            self.by_version[version + 3] += 1
        else:
            self.by_version[version] += 1
        self.durations[bisect_left(DURATION_BUCKETS, duration)] += 1
        self.duration_sum += duration

    def snapshot(self) -> ListenerStatistics:
        """The counters now, as :class:`ListenerStatistics`."""
        rejected = self.rejected
        return ListenerStatistics(
            accepted=self.accepted,
            direct=self.direct,
            rejected={
                kind.value: count
                for kind, count in rejected.items()
                if count and kind not in (RefusalKind.TIMEOUT, RefusalKind.EVICTED)
            },
            timed_out=rejected[RefusalKind.TIMEOUT],
            evicted=rejected[RefusalKind.EVICTED],
            in_flight=self.in_flight,
        )


#: The counters of the servers of this process, by surface (``"uvicorn"``, ``"hypercorn"``,
#: ``"relay"``, ...): what their ``statistics()`` sum, and what a metrics exporter reads
#: (:mod:`proxyproto.prometheus`). A process runs few servers, so they are kept for its lifetime
#: (the totals include servers that have stopped).
_REGISTRY: dict[str, list[Counters]] = {}


def register(surface: str, counters: Counters, name: str | None = None) -> Counters:
    """Count ``counters`` in ``surface``'s totals (once); returns them.

    ``name`` names the listener in metrics (its bound address, say); without one it keeps the
    name it had (if any). Counters of the same surface and name are summed by exporters.
    """
    if name is not None:
        counters.name = name
    kept = _REGISTRY.setdefault(surface, [])
    if not any(c is counters for c in kept):
        kept.append(counters)
    return counters


def registered() -> Mapping[str, list[Counters]]:
    """Every registered surface and its counters."""
    return _REGISTRY


def surface_statistics(surface: str) -> ListenerStatistics:
    """The sum of ``surface``'s counters in this process."""
    total = Counters()
    for counters in _REGISTRY.get(surface, ()):
        total.accepted += counters.accepted
        total.direct += counters.direct
        total.in_flight += counters.in_flight
        for kind, count in counters.rejected.items():
            total.rejected[kind] += count
    return total.snapshot()


# --- logging -----------------------------------------------------------------------------------


def show_peer(peer: object) -> str:
    """A peer's address for a log line, escaped; ``an unknown peer`` when there is none."""
    return format_address(peer) if peer else "an unknown peer"  # type: ignore[arg-type]


class RefusalLog:
    """Logs one listener's refusals: the first :attr:`BURST` of each kind in each :attr:`PERIOD`
    seconds one line each, the rest counted and told in one summary line per window, by kind.
    The budget is per kind, so that a flood of one kind (health checks that connect and leave,
    say) never hides the first refusals of another.

    ``message`` is the line's format, with the peer and the reason; ``clock`` the surface's
    (seconds, monotonic). The summary of a window is logged by the first refusal after it.
    """

    BURST = 10
    PERIOD = 10.0

    __slots__ = ("_clock", "_failure", "_logged", "_message", "_not_logged", "_start", "_what")

    def __init__(
        self,
        clock: Callable[[], float],
        message: str = "refused connection from %s: %s",
        what: str = "refused connections",
        failure: str = "PROXY handshake with %s failed",
    ) -> None:
        self._clock = clock
        self._message = message
        self._what = what
        self._failure = failure
        self._start: float | None = None
        self._logged: dict[RefusalKind, int] = {}
        self._not_logged: dict[RefusalKind, int] = {}

    def refused(self, kind: RefusalKind, peer: object, reason: str) -> None:
        """Log one refusal (rate-limited), at its kind's level."""
        if self._may_log(kind):
            logger.log(kind.level, self._message, show_peer(peer), reason)

    def failed(self, peer: object) -> None:
        """Log a handshake that failed by no fault of the peer's (a policy or validator that
        raised), with its traceback, at ERROR: a bug to see."""
        if self._may_log(RefusalKind.ERROR):
            logger.exception(self._failure, show_peer(peer))

    def _may_log(self, kind: RefusalKind) -> bool:
        now = self._clock()
        start = self._start
        if start is None or now - start >= self.PERIOD:
            if self._not_logged:
                self._summarise()
            self._start = now
            self._logged = {}
        logged = self._logged.get(kind, 0)
        if logged < self.BURST:
            self._logged[kind] = logged + 1
            return True
        self._not_logged[kind] = self._not_logged.get(kind, 0) + 1
        return False

    def _summarise(self) -> None:
        counts, self._not_logged = self._not_logged, {}
        level = max(kind.level for kind in counts)
        told = ", ".join(f"{counts[kind]} {kind.value}" for kind in RefusalKind if kind in counts)
        logger.log(
            level,
            "%d more %s were not logged in %gs: %s",
            sum(counts.values()),
            self._what,
            self.PERIOD,
            told,
        )


# --- admission: the bound on partial handshakes ----------------------------------------------


@attrs.define(eq=False)
class Ticket:
    """One partial handshake's place in an :class:`Admission`; ``evict`` (the surface's: cancel
    its reading) is called when it loses its place to a newer one."""

    evict: Callable[[], None]
    #: When its handshake became partial.
    started: float = 0.0
    #: Whether it was evicted.
    evicted: bool = False


class Admission:
    """A bound on partial handshakes (some bytes came, not a whole header), by number and age.

    When a handshake becomes partial and ``slots`` partial ones are under way already, the
    oldest ones that have been partial for at least ``eviction_age`` are evicted, as many at once
    as it takes to make room; the newcomer is admitted whatever happens (it never waits). So:

    * a real header split across segments completes in a round trip: it is never refused, never
      waits behind a flood, and reads its second segment at once;
    * slow senders grow old and are evicted, in batches, each at most once per ``eviction_age``
      (the eviction rate is bounded by what the flood can hold, not by how fast it reconnects);
    * a burst of real clients arriving together is younger than ``eviction_age`` and never
      evicts itself: the count may then exceed ``slots`` for a moment, by at most the partial
      handshakes that arrived within ``eviction_age`` -- each holds at most ``max_header_size``.

    Sans-IO and synchronous: :meth:`admit` when a handshake becomes partial, :meth:`release`
    when it ends, however it ends.
    """

    __slots__ = ("_partial", "eviction_age", "slots")

    def __init__(self, slots: int, eviction_age: float) -> None:
        self.slots = slots
        self.eviction_age = eviction_age
        # The partial handshakes, oldest first.
        self._partial: OrderedDict[Ticket, None] = OrderedDict()

    def admit(self, ticket: Ticket, now: float) -> int:
        """``ticket``'s handshake has just become partial; returns how many were evicted for it."""
        partial = self._partial
        evicted = 0
        if len(partial) >= self.slots:
            old_enough = now - self.eviction_age
            while len(partial) >= self.slots:
                oldest = next(iter(partial))
                if oldest.started > old_enough:
                    break
                del partial[oldest]
                oldest.evicted = True
                oldest.evict()
                evicted += 1
        ticket.started = now
        partial[ticket] = None
        return evicted

    def release(self, ticket: Ticket) -> None:
        """``ticket``'s handshake is over (or it was evicted)."""
        self._partial.pop(ticket, None)

    def __len__(self) -> int:
        """How many partial handshakes are under way."""
        return len(self._partial)


# --- running a handshake: the same steps on anyio and trio -------------------------------------


@attrs.frozen
class Primitives:
    """What a handshake waits with, from the framework that runs it (anyio or trio, whose cancel
    scopes, events and clocks have the same shape): the engine imports neither."""

    #: ``CancelScope(deadline=...)``: a cancel scope (``cancel()``, ``cancelled_caught``,
    #: ``deadline``) as a context manager.
    cancel_scope: Callable[..., Any]
    #: The framework's clock.
    current_time: Callable[[], float]
    #: Closes a stream at once.
    aclose_forcefully: Callable[[Any], Awaitable[None]]
    #: What ``receive()`` raises at EOF (nothing, when it returns ``b""``).
    end_of_stream: tuple[type[BaseException], ...]
    #: What reading raises when the network fails: the connection is refused as ``error`` (or
    #: ``empty`` if it sent nothing).
    network_errors: tuple[type[BaseException], ...]
    #: What finding the peer's address raises when the peer has reset already (``empty``).
    peer_gone: type[BaseException]

    @classmethod
    def of(
        cls,
        framework: Any,
        *,
        end_of_stream: tuple[type[BaseException], ...],
        peer_gone: type[BaseException],
    ) -> Primitives:
        """The primitives of the ``anyio`` or ``trio`` module, which both name them alike."""
        return cls(
            cancel_scope=framework.CancelScope,
            current_time=framework.current_time,
            aclose_forcefully=framework.aclose_forcefully,
            end_of_stream=end_of_stream,
            network_errors=(
                OSError,
                framework.BrokenResourceError,
                framework.ClosedResourceError,
            ),
            peer_gone=peer_gone,
        )


class _Reader:
    """One connection's reading and judging, under ``header_timeout``: :meth:`start` does what
    needs no waiting, :meth:`finish` the rest (:meth:`run` both). Begun by
    :meth:`Handshakes.start`, it also holds the peer and the error that stopped it there, if one
    did (raised again by :meth:`Handshakes.run`, which handles it)."""

    __slots__ = (
        "action",
        "config",
        "engine",
        "error",
        "io",
        "peer",
        "pending",
        "reading",
        "started",
    )

    def __init__(self, io: Primitives) -> None:
        self.io = io
        self.engine: Handshake | None = None
        self.config: ProxyProtocolConfig | None = None
        self.peer: PeerAddress = None
        self.error: Exception | None = None
        #: When the handshake started, by :func:`time.monotonic` (a handshake judged at once
        #: needs no framework clock: its deadline is only worked out when it has to wait).
        self.started = 0.0
        #: Once started: whether more must be read; else the action judged, and the validator
        #: still to be awaited, if any.
        self.reading = False
        self.action = Action.DIRECT
        self.pending: Awaitable[None] | None = None

    @property
    def sent_nothing(self) -> bool:
        return self.engine is None or self.engine.sent_nothing

    @property
    def over(self) -> bool:
        """Whether :meth:`start` reached the end: nothing to read, no validator to await."""
        return self.engine is not None and not self.reading and self.pending is None

    def start(
        self,
        config: ProxyProtocolConfig,
        peer: PeerAddress,
        receive_nowait: Callable[[], bytes | None] | None = None,
    ) -> None:
        """Start the clock and the engine, read what has arrived if ``receive_nowait`` can (or it
        says ``None``), and judge it if it ends the reading; raises :class:`Refusal`.

        Behind a proxy the whole header is there when the handshake starts: it is then judged
        here, with no deadline to set and no checkpoint, as nothing is waited for.
        """
        self.config = config
        self.started = _monotonic()
        engine = self.engine = Handshake(config, peer)
        if engine.reads:
            first = None if receive_nowait is None else receive_nowait()
            if first is None or not engine.receive_data(first):
                self.reading = True
                return
        self._judge(timed_out=False)

    def _judge(self, *, timed_out: bool) -> None:
        assert self.engine is not None
        action = self.action = self.engine.judge(timed_out=timed_out)
        self.pending = self.engine.validation(action)

    async def finish(
        self,
        receive: Callable[[], Awaitable[bytes | bytearray]],
        admission: Admission | None = None,
    ) -> Action:
        """Go on from :meth:`start`: read under the deadline from where it left off, judge, and
        await the validator under the same deadline; raises :class:`Refusal`.

        A connection enters ``admission`` once its first bytes did not complete the header: one
        that sent nothing yet is not counted, and one whose header came whole (a proxy sends it at
        once) never is.
        """
        io, engine, config = self.io, self.engine, self.config
        assert engine is not None
        assert config is not None
        # header_timeout from the start, on the framework's clock.
        deadline_at = io.current_time() + config.header_timeout - (_monotonic() - self.started)
        if self.reading:
            timed_out = await self._read(engine, io, deadline_at, receive, admission)
            self.reading = False
            self._judge(timed_out=timed_out)
        pending = self.pending
        if pending is not None:
            self.pending = None
            with io.cancel_scope(deadline=deadline_at) as scope:
                await pending
            if scope.cancelled_caught:
                raise validator_timed_out(config.header_timeout)
        return self.action

    async def run(
        self,
        config: ProxyProtocolConfig,
        peer: PeerAddress,
        receive: Callable[[], Awaitable[bytes | bytearray]],
        admission: Admission | None = None,
        receive_nowait: Callable[[], bytes | None] | None = None,
    ) -> Action:
        """:meth:`start`, then :meth:`finish`: read until the engine has what it needs, then
        judge and ask the validator, all under one deadline; raises :class:`Refusal`."""
        self.start(config, peer, receive_nowait)
        return await self.finish(receive, admission)

    async def _read(
        self,
        engine: Handshake,
        io: Primitives,
        deadline_at: float,
        receive: Callable[[], Awaitable[bytes | bytearray]],
        admission: Admission | None,
    ) -> bool:
        """Read under the deadline until reading is over; whether the deadline passed first."""
        ticket: Ticket | None = None
        with io.cancel_scope(deadline=deadline_at) as deadline:
            try:
                while True:
                    if admission is not None and ticket is None and engine.partial:
                        ticket = Ticket(evict=deadline.cancel)
                        admission.admit(ticket, io.current_time())
                    try:
                        data = await receive()
                    except io.end_of_stream:
                        data = b""
                    if engine.receive_data(bytes(data)):
                        break
            finally:
                if ticket is not None:
                    assert admission is not None
                    admission.release(ticket)
        if ticket is not None and ticket.evicted:
            raise Refusal(
                RefusalKind.EVICTED, "evicted: too many partial headers, and this one was old"
            )
        return bool(deadline.cancelled_caught) and engine.header is None


async def read_handshake(
    io: Primitives,
    config: ProxyProtocolConfig,
    peer: PeerAddress,
    receive: Callable[[], Awaitable[bytes | bytearray]],
) -> tuple[Handshake, Action]:
    """One connection's handshake, for ``ProxiedStream.wrap()`` (no slots, no counters):
    the engine's handshake and its action; raises :class:`Refusal`."""
    reader = _Reader(io)
    action = await reader.run(config, peer, receive)
    assert reader.engine is not None
    return reader.engine, action


#: A handshake begun by :meth:`Handshakes.start` (its reader).
Started = _Reader

_monotonic = time.monotonic


class Handshakes:
    """A listener's handshakes (anyio's and trio's): its :class:`Admission`, :class:`Counters`
    and :class:`RefusalLog`, and the steps of each one, whatever the framework."""

    __slots__ = ("admission", "config", "counters", "io", "log")

    def __init__(self, config: ProxyProtocolConfig, io: Primitives) -> None:
        self.config = config
        self.io = io
        self.admission = Admission(config.max_pending_handshakes, config.eviction_age)
        self.counters = Counters()
        self.log = RefusalLog(io.current_time)

    def start(
        self,
        find_peer: Callable[[], PeerAddress],
        receive_nowait: Callable[[], bytes | None] | None = None,
    ) -> Started:
        """Begin one connection's handshake with what needs no waiting (see
        :meth:`_Reader.start`); :meth:`run_nowait` or :meth:`run` goes on from it."""
        started = _Reader(self.io)
        self.counters.in_flight += 1
        try:
            started.peer = find_peer()
            started.start(self.config, started.peer, receive_nowait)
        except Exception as error:
            started.error = error
        except BaseException:
            self.counters.in_flight -= 1
            raise
        return started

    def run_nowait(
        self, started: Started, make_stream: Callable[[Handshake, Action], _Stream]
    ) -> _Stream | None:
        """The stream of a handshake that :meth:`start` took to its end (a header that came
        whole, no validator to await), counted; ``None`` when anything is left to do, a refusal
        included: :meth:`run` then does it, with ``started``."""
        if started.error is not None or not started.over:
            return None
        assert started.engine is not None
        try:
            stream = make_stream(started.engine, started.action)
        except Exception as error:
            started.error = error
            return None
        self.counters.in_flight -= 1
        self._count_accepted(started)
        return stream

    async def run(
        self,
        transport: Any,
        find_peer: Callable[[], PeerAddress],
        receive: Callable[[], Awaitable[bytes | bytearray]],
        make_stream: Callable[[Handshake, Action], _Stream],
        receive_nowait: Callable[[], bytes | None] | None = None,
        started: Started | None = None,
    ) -> _Stream | None:
        """Run one connection's handshake (from ``started``, when :meth:`start` began it): the
        stream ``make_stream`` makes of it, or ``None`` when it was refused (``transport`` is
        then closed, counted and logged). ``receive_nowait``: see :meth:`_Reader.start`."""
        if started is None:
            started = self.start(find_peer, receive_nowait)
        io, counters = self.io, self.counters
        peer = started.peer
        try:
            if started.error is not None:
                error, started.error = started.error, None
                raise error
            action = await started.finish(receive, self.admission)
            assert started.engine is not None
            stream = make_stream(started.engine, action)
        except Refusal as refusal:
            await self._refuse(transport, peer, refusal.kind, refusal.reason)
            return None
        except io.peer_gone:
            # Reset before its address could be read: nothing was read from it either.
            await self._refuse(transport, peer, RefusalKind.EMPTY, EMPTY)
            return None
        except io.network_errors as error:
            if started.sent_nothing:
                await self._refuse(transport, peer, RefusalKind.EMPTY, EMPTY)
            else:
                reason = f"{type(error).__name__}: {error}"
                await self._refuse(transport, peer, RefusalKind.ERROR, reason)
            return None
        except Exception:
            # Not the peer's doing (a policy or validator that raised, say): a traceback helps.
            await io.aclose_forcefully(transport)
            counters.rejected[RefusalKind.ERROR] += 1
            self.log.failed(peer)
            return None
        except BaseException:
            await io.aclose_forcefully(transport)
            raise
        finally:
            counters.in_flight -= 1
        self._count_accepted(started)
        return stream

    def _count_accepted(self, reader: _Reader) -> None:
        engine = reader.engine
        assert engine is not None
        header = engine.header
        self.counters.accept(
            0 if header is None else header.version,
            not engine.uses_addresses(reader.action),
            _monotonic() - reader.started,
        )

    async def _refuse(
        self, transport: Any, peer: PeerAddress, kind: RefusalKind, reason: str
    ) -> None:
        await self.io.aclose_forcefully(transport)
        self.counters.rejected[kind] += 1
        self.log.refused(kind, peer, reason)
