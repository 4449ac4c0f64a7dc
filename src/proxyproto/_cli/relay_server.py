"""The L4 TCP relay behind ``proxyproto relay``: accept, pick a target, copy bytes both ways.

Theory of operation. One :class:`Relay` owns a TCP listener wrapped in a
:class:`~proxyproto.ProxyProtocolListener` (``SKIP`` when headers are not accepted, so there is one
code path). Each accepted connection runs in its own task: the handshake (bounded by the header
timeout), then a connection to a target chosen by the balancing rule -- a target that refuses or
does not answer within the connect timeout is skipped for the next, each tried at most once --
then, with ``send_proxy``, a header that describes the client (the header's client when one was
accepted, so a chain keeps the original address; LOCAL for an inbound LOCAL; IPv4 for an
IPv4-mapped pair), with the TLVs kept from the inbound header and those added
(:func:`outbound_header`), and two copying tasks, one per direction. The end of one direction is
passed on as a half-close (``send_eof``); when both directions are done, or one fails, or (with
``idle_timeout``) no byte moved either way for that long, both sides are closed and one
access-log line is written, with the bytes counted as they flowed.

Protocol routing. With ``protocols`` (:class:`ProtocolRoute`), a connection's first bytes are
read after the handshake, for at most ``probe_timeout`` seconds, by a sans-IO
:class:`~proxyproto._cli.probe.Prober`; the first route that accepts the match
(:func:`choose_route`) gives the targets and the balancing rule, else ``targets`` (the default
route), else the connection is dropped (``end=no-route (...)``, counted in ``unrouted``). The
bytes read are sent to the target first; a TLS ClientHello's SNI and ALPN go into the v2 header
(:func:`sniffed_tlvs`). That decision is :func:`route_for`, which the UDP relay
(:mod:`proxyproto._cli.relay_udp`) takes too, on a QUIC or WireGuard match; a route's protocol
must be one of its listener's transport (:meth:`RelaySettings.problem`). Connections and bytes
per route, and the unrouted by reason, are counted for ``--metrics``
(:class:`~proxyproto._adapters.metrics.RelayCounters`).

Shutdown (:meth:`Relay.stop`, which SIGINT / SIGTERM call) stops accepting and closes the
listener at once, lets the open connections finish for up to ``grace`` seconds, then cancels
them. A second signal cancels them at once.

Access log: one line per connection on the ``proxyproto.relay`` logger at INFO, as ``key=value``
pairs (see :meth:`Relay._log`); warnings (no target reachable) on the same logger.

Routes and reload. :func:`serve_relay` runs one :class:`Relay` per route (a listening address
with its settings), under a :class:`_Relays`. With a
:class:`~proxyproto._cli.relay_config.RelayConfig` (``--config``, read by
:mod:`proxyproto._cli.relay_config`) it
polls the file's status every :data:`POLL_INTERVAL` seconds; when it changes, the file is read
again and, when valid, applied: a route whose settings changed gets them for its *new*
connections (:meth:`Relay.update`: each connection reads the settings once, when it starts, so
open ones keep theirs), a removed route (or one whose ``listen`` changed) is stopped as on
SIGTERM -- its listener closes at once, its open connections get its grace period -- and a new
one is opened. An invalid file is logged and the settings in force stay.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import signal
import socket
import stat
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import attrs
from anyio.abc import ByteStream, SocketAttribute

from proxyproto._adapters import accept
from proxyproto._adapters.anyio import (
    ProxiedStream,
    ProxyAttribute,
    ProxyProtocolListener,
    header_for,
)
from proxyproto._adapters.backpressure import bound_reading
from proxyproto._adapters.connect import connect_tcp
from proxyproto._adapters.metrics import RelayCounters, track_relay
from proxyproto._core.errors import HeaderEncodingError
from proxyproto._core.model import Command, Family, Header, TLVs, TLVType
from proxyproto._handshake.config import ProxyProtocolConfig
from proxyproto._handshake.engine import register
from proxyproto._handshake.policy import Policy

from .args import TRUSTED_UNIX, proxy_config
from .output import format_address
from .output import os_error_text as _os_error_text
from .output import pair as _pair
from .probe import NEED_MORE, Match, Prober, ProbeUnavailable, require

if TYPE_CHECKING:
    # The configuration file's reader imports this module (RelaySettings): no import back.
    from .relay_config import RelayConfig

__all__ = [
    "BALANCE_MODES",
    "ProtocolRoute",
    "Relay",
    "RelaySettings",
    "RouteChoice",
    "choose_route",
    "route_for",
    "serve_relay",
]

logger = logging.getLogger("proxyproto.relay")

#: How much one receive() may return. Large, so that bulk transfers cost few Python calls.
CHUNK_SIZE = 256 * 1024

#: ``none``: targets in order; ``random``: a fresh order per connection; ``source-ip`` /
#: ``source-socket``: an order that starts at a hash of the client's IP (and port), so a client
#: keeps its target while that target answers.
BALANCE_MODES = ("none", "random", "source-ip", "source-socket")

_Target = tuple[str, int]
#: A target: ``(host, port)``, or a UNIX socket's path (TCP relaying only).
_Destination = tuple[str, int] | str
_FAILURES = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)


@attrs.frozen
class ProtocolRoute:
    """Where a connection of one protocol goes (a ``[protocols.NAME]`` table of the config).

    A connection takes the first route whose ``protocol`` its first bytes match and whose
    filters, when set, accept its ClientHello: one of ``server_names`` (an exact name, or
    ``*.example.com`` for any name under it) and one of ``alpns`` among the protocols offered.
    """

    name: str
    protocol: str
    targets: tuple[_Destination, ...]
    server_names: tuple[str, ...] = ()
    alpns: tuple[bytes, ...] = ()
    #: The route's balancing rule; ``None``: the listener's.
    balance: str | None = None
    #: The route's outbound PROXY version (0, 1, 2; TCP routes only); ``None``: the listener's.
    send_proxy: int | None = None
    #: A TCP route's idle timeout (0: never); ``None``: the listener's ``idle_timeout``.
    idle_timeout: float | None = None
    #: A UDP route's pseudo-connection idle lifetime; ``None``: the listener's.
    udp_idle_lifetime: float | None = None

    def accepts(self, match: Match) -> tuple[bool, bytes | None]:
        """Whether the route takes ``match``, and the ALPN for the outbound header's TLV.

        The TLV holds one protocol, and the relay does not see the server's choice: it carries
        the client's first offered protocol this route accepts (with no ``alpns`` filter, the
        client's first), its most preferred one.
        """
        if match.protocol != self.protocol:
            return False, None
        if self.server_names and not any(
            _name_matches(pattern, match.server_name) for pattern in self.server_names
        ):
            return False, None
        if not self.alpns:
            return True, match.alpns[0] if match.alpns else None
        for alpn in match.alpns:
            if alpn in self.alpns:
                return True, alpn
        return False, None


def _name_matches(pattern: str, name: str | None) -> bool:
    if name is None:
        return False
    if pattern.startswith("*."):
        return name.endswith(pattern[1:]) and len(name) > len(pattern) - 1
    return name == pattern


@attrs.frozen
class RelaySettings:
    """What ``proxyproto relay`` is told on its command line."""

    #: ``(host, port)``, or a UNIX socket's path (TCP relaying only).
    listen: _Destination
    #: Empty only with ``protocols`` (no default route).
    targets: tuple[_Destination, ...] = ()
    #: 0 (no header), 1 or 2: the header prepended to each target connection.
    send_proxy: int = 0
    accept_proxy: bool = False
    #: The only peers that may connect (addresses and networks), each of which must send a
    #: header under ``accept_proxy``; empty: every peer may connect.
    trusted: tuple[str, ...] = ()
    balance: str = "none"
    header_timeout: float = ProxyProtocolConfig().header_timeout
    connect_timeout: float = 5.0
    grace: float = 10.0
    #: A configuration file's ``name`` for the route: what identifies it across reloads
    #: (default: its ``listen`` address).
    name: str = ""
    #: The inbound header's TLVs copied onto the outbound v2 header: ``"none"``, ``"all"``, or
    #: the TLV types to copy (CRC32C and NOOP never are: see ``crc32c``).
    keep_tlvs: str | tuple[int, ...] = "none"
    #: Fixed TLVs ``(type, value)`` added to every outbound v2 header; they replace kept ones
    #: of the same type.
    add_tlvs: tuple[tuple[int, bytes], ...] = ()
    #: Add a fresh UNIQUE_ID TLV (a UUID4 as text) to every outbound v2 header.
    unique_id: bool = False
    #: Append a CRC32C TLV to every outbound v2 header.
    crc32c: bool = False
    #: Seconds without a byte either way after which an established connection is closed
    #: (0: never).
    idle_timeout: float = 0.0
    #: Protocol routes, tried in order on the connection's first bytes; ``targets`` (when
    #: any) is the default route for a connection that matches none, else it is dropped.
    protocols: tuple[ProtocolRoute, ...] = ()
    #: Seconds a client gets to send the first bytes that decide its protocol.
    probe_timeout: float = 2.0
    #: Relay UDP datagrams instead of TCP connections (:mod:`proxyproto._cli.relay_udp`).
    udp: bool = False
    #: Seconds without a datagram either way after which a UDP pseudo connection ends.
    udp_idle_lifetime: float = 30.0
    #: The most UDP pseudo connections open at once (0: derived from ``RLIMIT_NOFILE``).
    udp_max_connections: int = 0
    #: Worker processes, each binding ``listen`` with SO_REUSEPORT
    #: (:mod:`proxyproto._cli.relay_workers`); read once, at the start.
    workers: int = 1

    def problem(self) -> tuple[str, str] | None:
        """What makes the header settings unusable together: ``(config key, why)``, or ``None``.

        (``trusted`` without ``accept_proxy`` is checked where each surface words it.)
        """
        if self.udp and any(
            isinstance(target, str)
            for target in (*self.targets, *(t for r in self.protocols for t in r.targets))
        ):
            return "to", "UNIX socket targets are for TCP relaying only"
        if self.udp and self.send_proxy == 1:
            return "send_proxy", "v1 cannot describe UDP: use v2 (one header per datagram)"
        if isinstance(self.listen, str):
            if self.udp:
                return "listen", "UNIX-socket listeners are for TCP relaying only"
            if self.workers > 1:
                return "listen", (
                    "a UNIX socket cannot be shared by workers (SO_REUSEPORT does not apply"
                    " to UNIX sockets): run one process, or listen on HOST:PORT"
                )
            if self.trusted and TRUSTED_UNIX not in self.trusted:
                return "trusted", (
                    "no entry covers the peers of a UNIX-socket listener: add unix to trust"
                    " them (their headers are then accepted)"
                )
        elif self.workers > 1 and self.listen[1] == 0:
            return "listen", "port 0 with workers: each worker would pick a port of its own"
        for route in self.protocols:
            # A route's protocol is probed on one transport only: QUIC and WireGuard on UDP,
            # the others on TCP.
            try:
                require([route.protocol], datagram=self.udp)
            except ProbeUnavailable as error:
                where = "a UDP listener (udp = true)" if self.udp else "a TCP listener"
                return "protocols", f"{route.name}: {error}, and this is {where}"
        if self.send_proxy != 2:
            for name, used in (
                ("keep_tlvs", self.keep_tlvs != "none"),
                ("add_tlv", bool(self.add_tlvs)),
                ("unique_id", self.unique_id),
                ("send_proxy_crc32c", self.crc32c),
            ):
                if used:
                    return name, "needs send_proxy v2 (only v2 headers carry TLVs)"
        if self.unique_id and any(kind == TLVType.UNIQUE_ID for kind, _ in self.add_tlvs):
            return "add_tlv", "a fixed unique_id and a generated one (unique_id) exclude each other"
        try:
            # Together, the added TLVs must still make a header (each one alone was checked).
            Header.local(tlvs=TLVs(raw=self.add_tlvs)).to_bytes(crc32c=self.crc32c)
        except HeaderEncodingError as error:
            return "add_tlv", str(error)
        return None

    @property
    def reuse_port(self) -> bool:
        """Bind ``listen`` with SO_REUSEPORT: the workers share it, the kernel spreads the
        connections (TCP) or the clients, by a hash of their address (UDP)."""
        return self.workers > 1

    @property
    def key(self) -> str:
        """What identifies the route across reloads: its name, else its listening address."""
        return self.name or format_address(self.listen)

    def proxy_config(self) -> ProxyProtocolConfig:
        """The inbound listener's configuration."""
        read = Policy.REQUIRE if self.accept_proxy else Policy.SKIP
        return proxy_config(
            trusted=self.trusted,
            policy=read,
            header_timeout=self.header_timeout,
            refuse_strangers=True,
        )


def target_order(
    targets: Sequence[_Destination],
    balance: str,
    client: Any,
    *,
    rng: random.Random | None = None,
) -> list[_Destination]:
    """Every target once, in the order ``balance`` tries them for ``client`` (an address).

    The hashes are CRC-32 of the address text: stable across restarts and processes, unlike
    ``hash()``.

    >>> target_order([("a", 1), ("b", 1), ("c", 1)], "source-ip", ("192.0.2.1", 5000))
    [('c', 1), ('a', 1), ('b', 1)]
    """
    order = list(targets)
    if balance == "none" or len(order) < 2:
        return order
    if balance == "random":
        (rng or random).shuffle(order)
        return order
    if not isinstance(client, tuple):
        return order  # a UNIX client has no IP to hash
    key = str(client[0]) if balance == "source-ip" else f"{client[0]}|{client[1]}"
    start = zlib.crc32(key.encode()) % len(order)
    return order[start:] + order[:start]


def outbound_header(
    client: ByteStream,
    settings: RelaySettings,
    sniffed: tuple[tuple[int, bytes], ...] = (),
) -> Header:
    """The header sent to the target for ``client``, a connection through the handshake.

    It describes the client (the inbound header's, when one was accepted); an inbound header
    without a client address (LOCAL, v1 UNKNOWN, v2 UNSPEC) gives a LOCAL one (v1: UNKNOWN), so
    the target too uses the real endpoints. A client of a UNIX-socket listener without an
    inbound header has no TCP address to name: LOCAL too (v1: UNKNOWN). An IPv4-mapped IPv6 pair
    (``::ffff:a.b.c.d``, a dual-stack listener's IPv4 client) is sent as IPv4. v2 carries the
    TLVs of :func:`outbound_tlvs`, ``sniffed`` ones (:func:`sniffed_tlvs`) among them.
    """
    version = settings.send_proxy
    inbound = client.extra(ProxyAttribute.header, None)
    tlvs = outbound_tlvs(inbound, settings, sniffed) if version == 2 else None
    if inbound is None:
        # A UNIX-socket listener's client: no TCP address of its own.
        unnamed = not isinstance(client.extra(SocketAttribute.remote_address, None), tuple)
    else:
        unnamed = inbound.command is Command.LOCAL or inbound.source is None
    if unnamed:
        return Header.local(tlvs=tlvs) if version == 2 else Header.unknown()
    header = header_for(client, version=version, tlvs=tlvs)
    if header.command is Command.LOCAL:
        return Header.local(tlvs=tlvs)
    if header.family is Family.INET6:
        source, destination = _ipv4_mapped(header.source), _ipv4_mapped(header.destination)
        if source is not None and destination is not None:
            return Header.proxy(source, destination, version=version, tlvs=tlvs)
    return header


async def _unix_listener(path: str) -> tuple[anyio.abc.Listener[Any], tuple[str, int]]:
    """A listener on the UNIX socket ``path``, and ``(path, inode)`` to remove it by at the end.

    A socket file left by a relay that died is replaced, but only when nothing listens on it
    (connecting is refused); a live one, or a file that is not a socket, is an error. The
    file's permissions are what the umask gives.

    :raises OSError: ``path`` is in use, is not a socket, or cannot be bound.
    """
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(status.st_mode):
            raise OSError(f"{path} exists and is not a socket (not replaced)")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.setblocking(False)  # a full backlog answers EAGAIN: someone listens
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)  # stale: its relay is gone
        except FileNotFoundError:
            pass  # removed meanwhile
        except BlockingIOError:
            raise OSError(f"another process listens on {path}") from None
        else:
            raise OSError(f"another process listens on {path}")
        finally:
            probe.close()
    listener = await anyio.create_unix_listener(path)
    try:
        return listener, (path, os.stat(path).st_ino)
    except BaseException:
        await listener.aclose()
        raise


def _remove_socket_file(path: str, inode: int) -> None:
    """Remove the socket file ``path`` if it is still the one bound (``inode``)."""
    try:
        if os.lstat(path).st_ino == inode:
            os.unlink(path)
    except OSError:
        pass  # gone already, or replaced by someone else's: theirs stays


def _ipv4_mapped(address: Any) -> tuple[str, int] | None:
    """``(a.b.c.d, port)`` for an IPv4-mapped ``(::ffff:a.b.c.d, port)``, else ``None``."""
    mapped = ipaddress.IPv6Address(address[0]).ipv4_mapped
    return None if mapped is None else (str(mapped), address[1])


#: TLVs never copied from an inbound header: the builder makes them itself (``crc32c``,
#: ``pad_to``), and a copied checksum would be wrong.
_NEVER_KEPT = (TLVType.CRC32C, TLVType.NOOP)


def outbound_tlvs(
    inbound: Header | None,
    settings: RelaySettings,
    sniffed: tuple[tuple[int, bytes], ...] = (),
) -> TLVs | None:
    """The TLVs of the outbound v2 header: the kept inbound ones (in wire order), the sniffed
    ones (AUTHORITY and ALPN from the client's ClientHello), then the added.

    Kept and added TLVs are copied as raw ``(type, value)`` entries, so the builder encodes them
    unchanged; a sniffed type replaces every kept TLV of that type (what the relay saw itself
    wins over what an upstream said), an added type every kept or sniffed one.
    """
    fixed = {kind for kind, _ in settings.add_tlvs}
    added = [(kind, value) for kind, value in sniffed if kind not in fixed]
    added += settings.add_tlvs
    if settings.unique_id:
        added.append((TLVType.UNIQUE_ID, str(uuid.uuid4()).encode("ascii")))
    kept: list[tuple[int, bytes]] = []
    if inbound is not None and settings.keep_tlvs != "none":
        replaced = {kind for kind, _ in added}
        kept = [
            (kind, value)
            for kind, value in inbound.tlvs.raw
            if kind not in _NEVER_KEPT
            and kind not in replaced
            and (settings.keep_tlvs == "all" or kind in settings.keep_tlvs)
        ]
    raw = tuple(kept + added)
    return TLVs(raw=raw) if raw else None


def sniffed_tlvs(match: Match | None, alpn: bytes | None) -> tuple[tuple[int, bytes], ...]:
    """AUTHORITY (the SNI) and ALPN TLVs for what a probe read in the client's first bytes."""
    tlvs: list[tuple[int, bytes]] = []
    if match is not None and match.server_name is not None:
        tlvs.append((TLVType.AUTHORITY, match.server_name.encode("ascii")))
    if alpn is not None:
        tlvs.append((TLVType.ALPN, alpn))
    return tuple(tlvs)


@attrs.frozen
class RouteChoice:
    """Where a connection (or a UDP pseudo connection) goes, once its first bytes are probed."""

    #: The route for the access log: the listener's key, ``KEY/NAME`` for a protocol route.
    name: str
    #: Its name in the metrics: the ``[protocols.NAME]`` name, or ``default``.
    label: str
    #: Empty when it is dropped (no route took it and there is no default route).
    targets: tuple[_Destination, ...]
    balance: str
    #: AUTHORITY and ALPN TLVs for the outbound v2 header (:func:`sniffed_tlvs`).
    sniffed: tuple[tuple[int, bytes], ...] = ()
    #: Why it is dropped: the protocol matched that no route took, or ``unknown``.
    unrouted: str | None = None
    #: The outbound PROXY version for a TCP connection (the route's, else the listener's).
    send_proxy: int = 0
    #: Seconds without a byte (TCP: 0, never) or a datagram (UDP) either way after which the
    #: connection ends: the route's, else the listener's ``idle_timeout`` / ``udp_idle_lifetime``.
    idle: float = 0.0


def route_for(settings: RelaySettings, match: Match | None) -> RouteChoice:
    """The routing decision, the same for TCP connections and UDP pseudo connections: the first
    protocol route that takes ``match`` (:func:`choose_route`), else the default route (the
    listener's ``targets``), else dropped ("protocol sanitization")."""
    chosen, alpn = choose_route(settings.protocols, match)
    sniffed = sniffed_tlvs(match, alpn)
    idle = settings.udp_idle_lifetime if settings.udp else settings.idle_timeout
    if chosen is not None:
        name = f"{settings.key}/{chosen.name}"
        balance = chosen.balance or settings.balance
        version = settings.send_proxy if chosen.send_proxy is None else chosen.send_proxy
        own = chosen.udp_idle_lifetime if settings.udp else chosen.idle_timeout
        return RouteChoice(
            name,
            chosen.name,
            chosen.targets,
            balance,
            sniffed,
            send_proxy=version,
            idle=idle if own is None else own,
        )
    version = settings.send_proxy
    if settings.targets:
        return RouteChoice(
            settings.key,
            "default",
            settings.targets,
            settings.balance,
            sniffed,
            send_proxy=version,
            idle=idle,
        )
    reason = match.protocol if match is not None else "unknown"
    return RouteChoice(
        settings.key, "default", (), settings.balance, sniffed, reason, version, idle
    )


class Relay:
    """A running relay: :meth:`serve` until :meth:`stop`."""

    def __init__(self, settings: RelaySettings) -> None:
        self.settings = settings
        self._active = 0
        self._stopping = False
        self._idle = anyio.Event()
        self._accepting = anyio.CancelScope()
        self._connections = anyio.CancelScope()
        self._listener: ProxyProtocolListener | None = None
        #: Set once the listening socket is closed (stopped, or never opened).
        self.closed = anyio.Event()
        #: The addresses listened on, once :meth:`serve` has started.
        self.addresses: list[str] = []
        #: Connections dropped because their first bytes matched no protocol route and there
        #: is no default route ("protocol sanitization").
        self.unrouted = 0
        #: The counts by route for ``--metrics`` (registered once listening).
        self.counters = RelayCounters("tcp", "")

    def update(self, settings: RelaySettings) -> None:
        """New settings for the connections accepted from now on (``listen`` is not changed)."""
        self.settings = settings
        if self._listener is not None:
            # Each handshake reads the listener's configuration once, when it starts.
            self._listener.config = settings.proxy_config()

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen, relay every connection, return once stopped and every connection is over.

        :raises OSError: the listening address cannot be bound.
        """
        settings = self.settings
        inner: anyio.abc.Listener[Any]
        socket_file: tuple[str, int] | None = None  # a UNIX socket's path and inode
        try:
            if isinstance(settings.listen, str):
                inner, socket_file = await _unix_listener(settings.listen)
                self.addresses = [format_address(settings.listen)]
            else:
                host, port = settings.listen
                tcp = await anyio.create_tcp_listener(
                    local_host=host, local_port=port, reuse_port=settings.reuse_port
                )
                self.addresses = [
                    format_address(_pair(sub.extra(SocketAttribute.local_address)))
                    for sub in tcp.listeners
                ]
                inner = tcp
        except BaseException:
            self.closed.set()
            raise
        listener = self._listener = ProxyProtocolListener(inner, settings.proxy_config())
        # Counted in --metrics (proxyproto.prometheus), one listener label per route.
        register("relay", listener._counters, ", ".join(self.addresses))
        self.counters.listener = ", ".join(self.addresses)
        track_relay(self.counters)

        async def handle(transport: ByteStream) -> None:
            self._active += 1
            try:
                stream = await listener.handshake(transport)
                if stream is not None:
                    await self._relay(stream)
            finally:
                self._active -= 1
                if self._active == 0 and self._stopping:
                    self._idle.set()

        with self._connections:
            async with anyio.create_task_group() as connections:
                try:
                    async with listener:
                        task_status.started()
                        with self._accepting:
                            await accept.serve(inner, handle, connections)
                finally:
                    if socket_file is not None:
                        _remove_socket_file(*socket_file)
                    self.closed.set()
                # Not accepting any more, and the listening socket is closed.
                if self._active:
                    with anyio.move_on_after(settings.grace):
                        await self._idle.wait()
                    if self._active:
                        logger.info("grace period over: closing %d connection(s)", self._active)
                connections.cancel_scope.cancel()

    def stop(self, *, now: bool = False) -> None:
        """Stop accepting; with ``now``, also cancel the open connections."""
        self._stopping = True
        if self._active == 0:
            self._idle.set()
        self._accepting.cancel()
        if now:
            self._connections.cancel()

    async def _relay(self, client: ProxiedStream) -> None:
        settings = self.settings  # once: a reload changes only the connections after it
        started = time.monotonic()
        peer = _pair(client.extra(ProxyAttribute.peer_address))
        source = _pair(client.extra(SocketAttribute.remote_address, None))
        if isinstance(settings.listen, str):
            # A UNIX client's own socket has no name (''): the log names the listener's path.
            if not peer:
                peer = settings.listen
            if not source:
                source = settings.listen
        counts = [0, 0]  # client -> target, target -> client
        target: _Destination | None = None
        end = "done"
        route = settings.key
        routed: list[int] | None = None  # the route's counts in the metrics
        try:
            async with client:
                first, ended = b"", False
                if settings.protocols:
                    first, ended, match = await _probe(client, settings)
                    choice = route_for(settings, match)
                else:
                    choice = route_for(settings, None)
                route = choice.name
                if choice.unrouted is not None:
                    self.unrouted += 1
                    self.counters.drop(choice.unrouted)
                    end = f"no-route ({choice.unrouted})"
                    return
                target, upstream = await self._connect(
                    settings, source, choice.targets, choice.balance
                )
                if upstream is None:
                    end = "no-target"
                    return
                routed = self.counters.route(choice.label)
                routed[0] += 1
                async with upstream:
                    if choice.send_proxy:
                        if choice.send_proxy != settings.send_proxy:
                            settings = attrs.evolve(settings, send_proxy=choice.send_proxy)
                        header = outbound_header(client, settings, choice.sniffed)
                        await upstream.send(header.to_bytes(crc32c=settings.crc32c))
                    end = await _splice(client, upstream, counts, choice.idle, first, ended)
        except _FAILURES as error:
            end = f"error ({_os_error_text(error)})"
        except HeaderEncodingError as error:
            # Kept and added TLVs over the v2 length limit, say: this connection only.
            logger.warning("client %s: cannot send a header: %s", format_address(source), error)
            end = "error (header)"
        except anyio.get_cancelled_exc_class():
            end = "cancelled"
            raise
        except Exception as error:
            # One connection's surprise must not take the relay and every other connection down.
            logger.exception("client %s: unexpected error", format_address(source))
            end = f"error ({type(error).__name__})"
        finally:
            if routed is not None:
                routed[1] += counts[0]
                routed[2] += counts[1]
            self._log(route, peer, source, target, counts, time.monotonic() - started, end)

    async def _connect(
        self, settings: RelaySettings, client: Any, targets: Sequence[_Destination], balance: str
    ) -> tuple[_Destination | None, ByteStream | None]:
        """The first target of the balancing order that accepts a connection."""
        errors = []
        for target in target_order(targets, balance, client):
            try:
                with anyio.fail_after(settings.connect_timeout):
                    if isinstance(target, str):
                        return target, bound_reading(await anyio.connect_unix(target))
                    return target, bound_reading(await connect_tcp(*target))
            except TimeoutError:
                errors.append(f"{format_address(target)}: no answer")
            except OSError as error:
                errors.append(f"{format_address(target)}: {_os_error_text(error)}")
        logger.warning(
            "client %s: no target reachable (%s)", format_address(client), "; ".join(errors)
        )
        return None, None

    def _log(
        self,
        route: str,
        peer: Any,
        client: Any,
        target: _Destination | None,
        counts: list[int],
        duration: float,
        end: str,
    ) -> None:
        logger.info(
            # The line starts with peer= (log readers rely on it), the route after the target.
            "peer=%s client=%s target=%s route=%s up=%d down=%d duration=%.3f end=%s",
            format_address(peer),
            format_address(client),
            format_address(target),
            route.replace(" ", "_"),
            counts[0],
            counts[1],
            duration,
            end.replace(" ", "_"),
        )


async def _probe(client: ByteStream, settings: RelaySettings) -> tuple[bytes, bool, Match | None]:
    """Read the client's first bytes until the probes decide or ``probe_timeout`` passes.

    Returns every byte read (to forward), whether the client's side ended, and the match.
    """
    prober = Prober(route.protocol for route in settings.protocols)
    result: object = NEED_MORE
    ended = False
    with anyio.move_on_after(settings.probe_timeout):
        while result is NEED_MORE:
            try:
                data = await client.receive(CHUNK_SIZE)
            except anyio.EndOfStream:
                ended = True
                data = b""
            result = prober.receive_data(data)
    return prober.data, ended, result if isinstance(result, Match) else None


def choose_route(
    routes: Sequence[ProtocolRoute], match: Match | None
) -> tuple[ProtocolRoute | None, bytes | None]:
    """The first route that takes ``match``, and the ALPN it chose; ``(None, alpn)`` if none.

    (The datagram relay can call it on a :class:`~proxyproto._cli.probe.DatagramProber`'s
    match.)
    """
    if match is None:
        return None, None
    for route in routes:
        taken, alpn = route.accepts(match)
        if taken:
            return route, alpn
    return None, match.alpns[0] if match.alpns else None


async def _splice(
    client: ByteStream,
    upstream: ByteStream,
    counts: list[int],
    idle_timeout: float = 0.0,
    first: bytes = b"",
    ended: bool = False,
) -> str:
    """Copy both ways until both ends are done or one fails; ``"done"`` or what ended it.

    ``first`` (the bytes a probe read) goes to ``upstream`` before anything else; with
    ``ended``, the client's side had already ended then.

    ``counts`` grows as bytes flow, so a connection cancelled midway (the grace period) reports
    what it carried. With ``idle_timeout``, a watchdog ends the connection (``"idle"``) once no
    byte came either way for that long.
    """
    failures: list[str] = []
    # When a byte last moved, either way; read by the watchdog only.
    last = [time.monotonic()]
    done = [0]
    async with anyio.create_task_group() as task_group:
        watchdog = anyio.CancelScope()

        async def copy(
            source: ByteStream, sink: ByteStream, index: int, first: bytes, ended: bool
        ) -> None:
            receive, send = source.receive, sink.send
            try:
                if first:
                    await send(first)
                    counts[index] += len(first)
                while not ended:
                    try:
                        data = await receive(CHUNK_SIZE)
                    except anyio.EndOfStream:
                        break
                    if idle_timeout:
                        last[0] = time.monotonic()
                    await send(data)
                    counts[index] += len(data)
                    if idle_timeout:
                        last[0] = time.monotonic()  # a slow reader is not idle
                # The half-close goes on: the other direction keeps flowing.
                await sink.send_eof()
            except _FAILURES as error:
                failures.append(f"{'up' if index == 0 else 'down'}: {_os_error_text(error)}")
                task_group.cancel_scope.cancel()
            done[0] += 1
            if done[0] == 2:
                watchdog.cancel()

        async def watch() -> None:
            with watchdog:
                while True:
                    left = last[0] + idle_timeout - time.monotonic()
                    if left <= 0:
                        failures.append("idle")
                        task_group.cancel_scope.cancel()
                        return
                    await anyio.sleep(left)

        task_group.start_soon(copy, upstream, client, 1, b"", False)
        if idle_timeout:
            task_group.start_soon(watch)
        # Client to target in this task: one task fewer per connection.
        await copy(client, upstream, 0, first, ended)
    if failures and failures[0] == "idle":
        return "idle"
    return f"reset ({failures[0]})" if failures else "done"


# =============================================================================== serving

#: Seconds between two looks at the configuration file's status.
POLL_INTERVAL = 1.0


class _Route(Protocol):
    """What :class:`_Relays` uses of a route's relay: a :class:`Relay`, or a UDP one."""

    settings: RelaySettings
    closed: anyio.Event
    addresses: list[str]

    def update(self, settings: RelaySettings) -> None: ...

    def stop(self, *, now: bool = False) -> None: ...

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = ...) -> None: ...


class _Relays:
    """The running routes, one :class:`Relay` each, and the configuration file's watcher."""

    def __init__(
        self,
        config: RelayConfig | None,
        udp_relay: Callable[[RelaySettings], _Route] | None = None,
    ) -> None:
        self.config = config
        #: What relays a ``udp`` route (:class:`proxyproto._cli.relay_udp.UDPRelay`).
        self.udp_relay = udp_relay
        #: The routes in force, by :attr:`RelaySettings.key`.
        self.routes: dict[str, _Route] = {}
        #: Every relay still serving, removed routes finishing their connections included.
        self._running: set[_Route] = set()
        self._stopping = False
        self._watching = anyio.CancelScope()
        self._task_group: anyio.abc.TaskGroup | None = None
        #: What stopped the start: the route that could not listen, and why.
        self.failure: tuple[RelaySettings, OSError] | None = None
        #: Print ``listening on`` once every route listens at the start.
        self.announce = True

    async def run(
        self,
        routes: Sequence[RelaySettings],
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Open every route, then serve (and watch the file) until stopped and drained."""
        async with anyio.create_task_group() as task_group:
            self._task_group = task_group
            for settings in routes:
                try:
                    relay = await self._open(settings)
                except OSError as error:
                    self.failure = (settings, error)
                    self.stop(now=True)
                    task_status.started()
                    return
                self.routes[settings.key] = relay
            # Before saying so: a change made once "listening" is printed is seen.
            stamp = self.config.stamp() if self.config is not None else None
            for relay in self.routes.values() if self.announce else ():
                print(f"listening on {', '.join(relay.addresses)}", flush=True)
            if self.config is not None and not self._stopping:
                task_group.start_soon(self._watch, self.config, stamp)
            task_status.started()

    async def _open(self, settings: RelaySettings) -> _Route:
        assert self._task_group is not None
        relay: _Route
        if settings.udp:
            # proxyproto._cli.relay_udp.UDPRelay, given by the command line (it imports this).
            if self.udp_relay is None:
                raise OSError("no UDP relay given to serve_relay()")
            relay = self.udp_relay(settings)
        else:
            relay = Relay(settings)
        await self._task_group.start(self._serve, relay)
        return relay

    async def _serve(self, relay: _Route, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        self._running.add(relay)
        try:
            await relay.serve(task_status=task_status)
        finally:
            self._running.discard(relay)

    def stop(self, *, now: bool = False) -> None:
        """Stop every route (and the watcher); with ``now``, cancel the open connections too."""
        self._stopping = True
        self._watching.cancel()
        for relay in list(self._running):
            relay.stop(now=now)

    async def _watch(self, config: RelayConfig, stamp: tuple[int, int, int] | None) -> None:
        with self._watching:
            while True:
                await anyio.sleep(POLL_INTERVAL)
                new = config.stamp()
                if new == stamp:
                    continue
                stamp = new
                try:
                    routes = config.load()
                except ValueError as error:  # relay_config.ConfigError, a ValueError
                    logger.error("reload: %s; the settings in force stay", error)
                    continue
                await self.apply(routes)

    async def apply(self, routes: Sequence[RelaySettings]) -> None:
        """Make ``routes`` the routes in force (see the module's docstring)."""
        wanted = {settings.key: settings for settings in routes}
        closed, updated, opened, failed = [], [], [], []
        stopped: list[_Route] = []
        for key, relay in list(self.routes.items()):
            settings = wanted.get(key)
            if settings is None or (settings.listen, settings.udp) != (
                relay.settings.listen,
                relay.settings.udp,
            ):
                relay.stop()
                stopped.append(relay)
                del self.routes[key]
                closed.append(key)
            elif settings != relay.settings:
                relay.update(settings)
                updated.append(key)
        # A listening address given up is free again before it is opened anew.
        with anyio.move_on_after(5):
            for relay in stopped:
                await relay.closed.wait()
        for key, settings in wanted.items():
            if key in self.routes or self._stopping:
                continue
            try:
                relay = await self._open(settings)
            except OSError as error:
                where = format_address(settings.listen)
                logger.error("reload: cannot listen on %s: %s", where, _os_error_text(error))
                failed.append(key)
                continue
            self.routes[key] = relay
            opened.append(f"{key} ({', '.join(relay.addresses)})")
            print(f"listening on {', '.join(relay.addresses)}", flush=True)
        if not (closed or updated or opened or failed):
            logger.info("reload: %s unchanged", self.config.path if self.config else "")
            return
        logger.info(
            "reload applied: %d route(s); updated: %s; opened: %s; closed: %s%s",
            len(self.routes),
            ", ".join(updated) or "-",
            ", ".join(opened) or "-",
            ", ".join(closed) or "-",
            f"; not opened: {', '.join(failed)}" if failed else "",
        )


async def _stop_on_signals(
    relays: _Relays, numbers: Sequence[signal.Signals], *, task_status: anyio.abc.TaskStatus[None]
) -> None:
    with anyio.open_signal_receiver(*numbers) as signals:
        task_status.started()
        first = True
        async for number in signals:
            name = signal.Signals(number).name
            if first:
                logger.info("stopping on %s: no new connections", name)
                relays.stop()
                first = False
            else:
                logger.info("stopping on %s: closing every connection", name)
                relays.stop(now=True)


async def serve_relay(
    settings: RelaySettings | Sequence[RelaySettings],
    config: RelayConfig | None = None,
    udp_relay: Callable[[RelaySettings], _Route] | None = None,
    *,
    signals: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
    started: Callable[[list[list[str]]], None] | None = None,
) -> int:
    """Run the relay's routes until one of ``signals``; print ``listening on ...`` per route.

    With ``config``, the file is watched and re-read when it changes (``settings`` are what it
    held at the start). ``udp_relay`` serves the ``udp`` routes
    (:class:`proxyproto._cli.relay_udp.UDPRelay`, which imports this module). Returns the exit
    status: 0 when stopped by a signal, 1 when a route cannot listen at the start. With
    ``started`` (a worker process), that is called with each route's addresses instead of the
    first ``listening on`` lines.
    """
    routes = (settings,) if isinstance(settings, RelaySettings) else tuple(settings)
    relays = _Relays(config, udp_relay)
    relays.announce = started is None
    async with anyio.create_task_group() as task_group:
        await task_group.start(_stop_on_signals, relays, signals)
        await task_group.start(_run_then_stop, relays, routes, task_group.cancel_scope)
        if relays.failure is not None:
            route, error = relays.failure
            where = format_address(route.listen)
            print(f"proxyproto: cannot listen on {where}: {_os_error_text(error)}", file=sys.stderr)
            task_group.cancel_scope.cancel()
            return 1
        if started is not None:
            started([relay.addresses for relay in relays.routes.values()])
    return 0


async def _run_then_stop(
    relays: _Relays,
    routes: Sequence[RelaySettings],
    scope: anyio.CancelScope,
    *,
    task_status: anyio.abc.TaskStatus[None],
) -> None:
    await relays.run(routes, task_status=task_status)
    scope.cancel()  # the signal watcher's job is over
