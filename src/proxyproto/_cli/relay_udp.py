"""The UDP half of ``proxyproto relay`` (``--udp``): per-client pseudo connections.

Theory of operation. One :class:`UDPRelay` owns a UDP socket wrapped in a
:class:`~proxyproto.ProxiedUDPSocket`, so every datagram is judged by the handshake engine as the
TCP relay's connections are (``SKIP`` without ``accept_proxy``; with it, a v2 header from every
datagram of a trusted sender, anyone else dropped and counted in :attr:`UDPRelay.dropped`).

A *pseudo connection* (:class:`_Flow`) is what a client's datagrams share: it is keyed by the
client (the datagram's source, or the header's with ``accept_proxy``) and the real sender, and
owns a connected UDP socket to a target (the first of :func:`target_order` that opens) and a
task that reads the target's replies and sends them, without a header, from the listening
socket to the real sender. With ``send_proxy`` v2, every datagram to the target carries a DGRAM
v2 header (spec 2.2): the client as source, the inbound header's destination (else the
listening address) as destination.

Protocol routing. With ``protocols`` (``quic``, ``wireguard``), a new client's datagrams are
held (:class:`_Probe`, at most :data:`MAX_PROBE_DATAGRAMS` of them, for at most
``probe_timeout`` seconds) and fed to a sans-IO :class:`~proxyproto._cli.probe.DatagramProber`
until it decides: a QUIC ClientHello spread over several Initial datagrams (CRYPTO frames
continuing in the next packets) is put together there. The decision is the TCP relay's
(:func:`~proxyproto._cli.relay_server.route_for`): the route's targets and balancing, else the
default route (``targets``), else the pseudo connection is dropped -- its datagrams counted in
the metrics and logged as one summary line per :data:`SUMMARY_PERIOD`, never a line per
datagram. The held datagrams then go to the target in order, and the ClientHello's SNI and ALPN
ride in every outbound v2 header as AUTHORITY and ALPN TLVs.

Dual stack. Listening on ``::`` (or on all interfaces, an empty host) opens one IPv6 socket with
``IPV6_V6ONLY`` off, so IPv4 clients arrive too, as IPv4-mapped addresses (``::ffff:a.b.c.d``):
they are turned back into IPv4 for the access log and the header (UDP4, with ``0.0.0.0`` as
destination when the listening address is the IPv6 wildcard).

Bounds. A pseudo connection ends after ``udp_idle_lifetime`` seconds (its protocol route's own,
when it has one: :attr:`RouteChoice.idle`) without a datagram either way. At most
``udp_max_connections`` are open (default: from ``RLIMIT_NOFILE``,
:func:`default_max_connections`): a new client evicts the least recently used one, whose socket
is closed before the new one is opened, so a flood of spoofed sources costs a bounded number of
descriptors and bounded memory; as many clients may be probing, holding at most
:data:`MAX_PROBE_DATAGRAMS` datagrams each (the oldest dropped first). Each pseudo connection
ends with one access-log line, as the TCP relay's, with the datagrams counted
(``end=idle|evicted|stopped``).

Shutdown. :meth:`UDPRelay.stop` (SIGINT, SIGTERM) stops taking new clients at once -- their
datagrams are dropped -- while the open pseudo connections go on until idle, for at most
``grace`` seconds; then the socket is closed. ``stop(now=True)`` (a second signal) closes it at
once.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections import OrderedDict
from typing import Any

import anyio
from anyio.abc import ConnectedUDPSocket, SocketAttribute, TaskGroup, UDPSocket

from proxyproto._adapters.metrics import RelayCounters, track_datagrams, track_relay
from proxyproto._adapters.udp import ProxiedDatagram, ProxiedUDPSocket, build_datagram
from proxyproto._core.errors import HeaderEncodingError
from proxyproto._core.model import Address, Header, Transport
from proxyproto._handshake.policy import carries_address

from .output import format_address
from .output import os_error_text as _os_error_text
from .output import pair as _pair
from .probe import NEED_MORE, DatagramProber, Match
from .relay_server import RelaySettings, RouteChoice, outbound_tlvs, route_for, target_order

__all__ = ["UDPRelay", "default_max_connections"]

logger = logging.getLogger("proxyproto.relay")

_Target = tuple[str, int]
#: rpxy-l4's default idle lifetime of a UDP pseudo connection, in seconds.
DEFAULT_IDLE_LIFETIME = 30.0
#: The most datagrams of a new client held while its protocol is probed: a QUIC ClientHello
#: with post-quantum key shares takes two Initial datagrams; past this it is no match.
MAX_PROBE_DATAGRAMS = 4
#: Seconds between two summary lines of the pseudo connections dropped for want of a route.
SUMMARY_PERIOD = 10.0


def default_max_connections() -> int:
    """The default cap on pseudo connections: half the descriptors left by ``RLIMIT_NOFILE``.

    ``max(16, min(1024, (soft - 64) // 2))``: each pseudo connection holds one descriptor,
    and some are kept for the rest of the process.
    """
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # pragma: no cover - no resource module
        return 1024
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(16, min(1024, (soft - 64) // 2))


def unmapped(address: Address) -> Address:
    """``(a.b.c.d, port)`` for an IPv4-mapped ``(::ffff:a.b.c.d, port)``; else ``address``."""
    if isinstance(address, tuple) and ":" in address[0]:
        try:
            mapped = ipaddress.IPv6Address(address[0]).ipv4_mapped
        except ValueError:  # a scoped address (fe80::1%eth0)
            return address
        if mapped is not None:
            return (str(mapped), address[1])
    return address


def _same_family(source: tuple[str, int], destination: tuple[str, int]) -> tuple[str, int]:
    """``destination`` in ``source``'s family, for a header (an IPv4 client of a dual-stack
    socket bound to ``::`` sent to the IPv4 wildcard, as far as the relay can tell)."""
    plain = unmapped(destination)
    assert isinstance(plain, tuple)
    if (":" in source[0]) == (":" in plain[0]):
        return plain
    return ("::" if ":" in source[0] else "0.0.0.0", plain[1])


async def _listen(host: str, port: int, *, reuse_port: bool) -> UDPSocket:
    """The listening socket: ``::`` is dual stack (``IPV6_V6ONLY`` off), and so is an empty
    host (every interface), which falls back to ``0.0.0.0`` where IPv6 is off. ``reuse_port``
    sets SO_REUSEPORT (the workers share the address)."""
    if host not in ("", "::"):
        return await anyio.create_udp_socket(
            local_host=host, local_port=port, reuse_port=reuse_port
        )
    try:
        raw = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            raw.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            if reuse_port:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            raw.bind(("::", port))
        except BaseException:
            raw.close()
            raise
    except OSError:
        if host:
            raise
        return await anyio.create_udp_socket(
            local_host="0.0.0.0", local_port=port, reuse_port=reuse_port
        )
    return await UDPSocket.from_socket(raw)


class _Flow:
    """One pseudo connection: a client's datagrams, its target socket and its reply task."""

    def __init__(
        self,
        peer: tuple[str, int],
        client: Address,
        target: _Target,
        upstream: ConnectedUDPSocket,
        route: str,
        counts: list[int],
        key: tuple[Any, tuple[str, int]],
    ) -> None:
        #: The flow's key in the relay's table (the client as received, and the real sender).
        self.key = key
        self.peer = peer
        self.client = client
        self.target = target
        self.upstream = upstream
        #: The route in the access log, and its counts in the metrics (``ROUTE_COUNTS``).
        self.route = route
        self.routed = counts
        self.header: bytes = b""
        #: Seconds without a datagram either way after which it ends (its route's).
        self.lifetime = 30.0
        self.started = time.monotonic()
        self.last = anyio.current_time()
        #: datagrams up, bytes up, datagrams down, bytes down
        self.counts = [0, 0, 0, 0]
        self.end = ""
        self.scope = anyio.CancelScope()
        self.closed = False

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            with anyio.CancelScope(shield=True):
                await self.upstream.aclose()


class _Probe:
    """A new client's datagrams held while its protocol is probed."""

    __slots__ = ("datagrams", "deadline", "first", "prober")

    def __init__(self, first: ProxiedDatagram, protocols: list[str], deadline: float) -> None:
        self.first = first
        self.prober = DatagramProber(protocols)
        self.datagrams: list[bytes] = []
        self.deadline = deadline


class _UnroutedLog:
    """The pseudo connections dropped for want of a route: the first of each
    :data:`SUMMARY_PERIOD` told at once, the rest in one summary line when the period is over
    (logged by the next drop, or at the end)."""

    def __init__(self) -> None:
        self._start: float | None = None
        self._untold: dict[str, int] = {}
        self._datagrams = 0

    def dropped(self, client: Address, reason: str, datagrams: int) -> None:
        now = anyio.current_time()
        if self._start is None or now - self._start >= SUMMARY_PERIOD:
            self.flush()
            self._start = now
            logger.info(
                "client %s: no route (%s): %d datagram(s) dropped; more are summarised every %gs",
                format_address(client),
                reason,
                datagrams,
                SUMMARY_PERIOD,
            )
            return
        self._untold[reason] = self._untold.get(reason, 0) + 1
        self._datagrams += datagrams

    def flush(self) -> None:
        if self._untold:
            logger.info(
                "no route: %d more pseudo connection(s) dropped (%d datagrams): %s",
                sum(self._untold.values()),
                self._datagrams,
                ", ".join(f"{reason} {count}" for reason, count in sorted(self._untold.items())),
            )
        self._untold, self._datagrams = {}, 0


class UDPRelay:
    """A running UDP relay: :meth:`serve` until :meth:`stop` (what :class:`Relay` offers)."""

    def __init__(self, settings: RelaySettings) -> None:
        self.settings = settings
        self._receiving = anyio.CancelScope()
        self._socket: ProxiedUDPSocket | None = None
        self._flows: OrderedDict[tuple[Any, tuple[str, int]], _Flow] = OrderedDict()
        #: New clients whose protocol is being probed, oldest first.
        self._probing: OrderedDict[tuple[Any, tuple[str, int]], _Probe] = OrderedDict()
        self._send_lock = anyio.Lock()
        self._local: Address = None
        self._stopping = False
        self._at_once = False
        self._unrouted_log = _UnroutedLog()
        #: The counts by route for ``--metrics`` (registered once listening).
        self.counters = RelayCounters("udp", "")
        #: Set once the listening socket is closed (stopped, or never opened).
        self.closed = anyio.Event()
        #: The addresses listened on, once :meth:`serve` has started.
        self.addresses: list[str] = []

    @property
    def dropped(self) -> int:
        """Datagrams dropped by the judging (untrusted, no header, invalid)."""
        if self._socket is None:
            return 0
        return sum(self._socket.statistics().dropped.values())

    def update(self, settings: RelaySettings) -> None:
        """New settings for the pseudo connections opened from now on."""
        self.settings = settings
        if self._socket is not None:
            self._socket.config = settings.proxy_config()

    def stop(self, *, now: bool = False) -> None:
        """Take no new client; end the pseudo connections once idle, within ``grace`` seconds
        (with ``now``, at once), then close the socket."""
        first = not self._stopping
        self._stopping = True
        self._probing.clear()
        if now or not self._flows:
            self._at_once = self._at_once or now
            self._receiving.cancel()
        elif first:
            self._receiving.deadline = anyio.current_time() + self.settings.grace

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen, relay every datagram, return once stopped.

        :raises OSError: the listening address cannot be bound.
        """
        try:
            await self._receive(task_status)
        finally:
            self.closed.set()

    async def _receive(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        listen = self.settings.listen
        assert not isinstance(listen, str)  # RelaySettings.problem(): TCP relaying only
        udp = await _listen(*listen, reuse_port=self.settings.reuse_port)
        sock = self._socket = ProxiedUDPSocket(udp, self.settings.proxy_config())
        self._local = _pair(udp.extra(SocketAttribute.local_address))
        self.addresses = [format_address(self._local)]
        # Counted in --metrics: the judging's drops (proxyproto_datagrams_*), the routes.
        track_datagrams(sock, self.addresses[0])
        self.counters.listener = self.addresses[0]
        track_relay(self.counters)
        async with anyio.create_task_group() as flows:
            try:
                task_status.started()
                with self._receiving:
                    while True:
                        if not self._probing:
                            await self._forward(await sock.receive(), flows)
                            continue
                        # While clients are being probed, wake up for the oldest's deadline.
                        oldest = next(iter(self._probing.values()))
                        datagram = None
                        with anyio.move_on_after(oldest.deadline - anyio.current_time()):
                            datagram = await sock.receive()
                        if datagram is not None:
                            await self._forward(datagram, flows)
                        await self._expire(flows)
            finally:
                if self._flows and self._stopping and not self._at_once:
                    logger.info(
                        "grace period over: closing %d pseudo connection(s)", len(self._flows)
                    )
                for flow in self._flows.values():
                    flow.end = flow.end or "stopped"
                self._unrouted_log.flush()
                flows.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await sock.aclose()

    async def _forward(self, datagram: ProxiedDatagram, flows: TaskGroup) -> None:
        key = (datagram.source, datagram.peer)
        flow = self._flows.get(key)
        if flow is not None:
            self._flows.move_to_end(key)
            await self._send(flow, datagram.payload)
            return
        if self._stopping:
            return  # the grace period: the open pseudo connections only
        settings = self.settings
        if not settings.protocols:
            flow = await self._open(datagram, route_for(settings, None), flows)
            if flow is not None:
                await self._send(flow, datagram.payload)
            return
        probe = self._probing.get(key)
        if probe is None:
            cap = settings.udp_max_connections or default_max_connections()
            while len(self._probing) >= cap:
                _, oldest = self._probing.popitem(last=False)
                self._drop(oldest, "unknown")
            deadline = anyio.current_time() + settings.probe_timeout
            probe = self._probing[key] = _Probe(
                datagram, [route.protocol for route in settings.protocols], deadline
            )
        probe.datagrams.append(datagram.payload)
        result = probe.prober.receive_datagram(datagram.payload)
        if result is NEED_MORE and len(probe.datagrams) < MAX_PROBE_DATAGRAMS:
            return
        del self._probing[key]
        await self._route(probe, result if isinstance(result, Match) else None, flows)

    async def _expire(self, flows: TaskGroup) -> None:
        """Decide for the clients probed for ``probe_timeout`` without a decision: no match."""
        now = anyio.current_time()
        while self._probing:
            key, probe = next(iter(self._probing.items()))
            if probe.deadline > now:
                return
            del self._probing[key]
            await self._route(probe, None, flows)

    async def _route(self, probe: _Probe, match: Match | None, flows: TaskGroup) -> None:
        """Open the pseudo connection the routing decision gives, with the held datagrams."""
        choice = route_for(self.settings, match)
        if choice.unrouted is not None:
            self._drop(probe, choice.unrouted)
            return
        flow = await self._open(probe.first, choice, flows)
        if flow is not None:
            for payload in probe.datagrams:
                await self._send(flow, payload)

    def _drop(self, probe: _Probe, reason: str) -> None:
        self.counters.drop(reason)
        self.counters.drop("datagrams", len(probe.datagrams))
        self._unrouted_log.dropped(unmapped(probe.first.source), reason, len(probe.datagrams))

    async def _send(self, flow: _Flow, payload: bytes) -> None:
        flow.last = anyio.current_time()
        try:
            await flow.upstream.send(flow.header + payload if flow.header else payload)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return  # a datagram lost, as UDP may
        flow.counts[0] += 1
        flow.counts[1] += len(payload)
        flow.routed[1] += len(payload)
        flow.routed[3] += 1

    async def _open(
        self, datagram: ProxiedDatagram, choice: RouteChoice, flows: TaskGroup
    ) -> _Flow | None:
        settings = self.settings
        cap = settings.udp_max_connections or default_max_connections()
        while len(self._flows) >= cap:
            _, oldest = self._flows.popitem(last=False)
            oldest.end = "evicted"
            oldest.scope.cancel()
            self.counters.evicted += 1
            await oldest.close()  # before the new socket: descriptors stay bounded
        client = unmapped(datagram.source)
        header = b""
        if settings.send_proxy:
            try:
                header = self._header(datagram, client, choice.sniffed)
            except HeaderEncodingError as error:
                logger.warning("client %s: cannot send a header: %s", format_address(client), error)
                return None
        errors = []
        for target in target_order(choice.targets, choice.balance, client):
            # RelaySettings.problem() refuses UNIX targets for UDP listeners.
            assert not isinstance(target, str)
            try:
                upstream = await anyio.create_connected_udp_socket(*target)
            except OSError as error:
                errors.append(f"{format_address(target)}: {_os_error_text(error)}")
                continue
            routed = self.counters.route(choice.label)
            routed[0] += 1
            key = (datagram.source, datagram.peer)
            flow = _Flow(datagram.peer, client, target, upstream, choice.name, routed, key)
            flow.header = header
            flow.lifetime = choice.idle
            self._flows[key] = flow
            flows.start_soon(self._pump, flow)
            return flow
        logger.warning(
            "client %s: no target reachable (%s)", format_address(client), "; ".join(errors)
        )
        return None

    def _header(
        self, datagram: ProxiedDatagram, client: Address, sniffed: tuple[tuple[int, bytes], ...]
    ) -> bytes:
        """The v2 DGRAM header in front of each of this client's datagrams."""
        settings = self.settings
        inbound = datagram.header
        tlvs = outbound_tlvs(inbound, settings, sniffed)
        if inbound is not None and not carries_address(inbound):
            header = Header.local(tlvs=tlvs)
        else:
            destination = datagram.destination or self._local
            assert isinstance(client, tuple)
            assert isinstance(destination, tuple)
            header = Header.proxy(
                client, _same_family(client, destination), transport=Transport.DGRAM, tlvs=tlvs
            )
        return build_datagram(header, b"", crc32c=settings.crc32c)

    async def _pump(self, flow: _Flow) -> None:
        """Send the target's replies to the client's real sender until idle, evicted or stopped."""
        lifetime = flow.lifetime
        assert self._socket is not None
        sock = self._socket
        try:
            with flow.scope:
                while True:
                    remaining = flow.last + lifetime - anyio.current_time()
                    if remaining <= 0:
                        flow.end = "idle"
                        return
                    with anyio.move_on_after(remaining):
                        try:
                            data = await flow.upstream.receive()
                        except OSError:
                            continue  # an ICMP error for an earlier datagram: UDP goes on
                        flow.last = anyio.current_time()
                        async with self._send_lock:
                            await sock.send(data, flow.peer)
                        flow.counts[2] += 1
                        flow.counts[3] += len(data)
                        flow.routed[2] += len(data)
                        flow.routed[4] += 1
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as error:
            flow.end = flow.end or f"error ({type(error).__name__})"
        except OSError as error:
            flow.end = flow.end or f"error ({_os_error_text(error)})"
        finally:
            if self._flows.get(flow.key) is flow:
                del self._flows[flow.key]
            await flow.close()
            self._log(flow, flow.end or "stopped")
            if self._stopping and not self._flows:
                self._receiving.cancel()  # the last one of the grace period

    def _log(self, flow: _Flow, end: str) -> None:
        up_datagrams, up, down_datagrams, down = flow.counts
        logger.info(
            "peer=%s client=%s target=%s route=%s up=%d down=%d datagrams_up=%d"
            " datagrams_down=%d duration=%.3f end=%s",
            format_address(flow.peer),
            format_address(flow.client),
            format_address(flow.target),
            flow.route.replace(" ", "_"),
            up,
            down,
            up_datagrams,
            down_datagrams,
            time.monotonic() - flow.started,
            end.replace(" ", "_"),
        )
