"""The UDP half of ``proxyproto relay`` (``--udp``): per-client pseudo connections.

Theory of operation. One :class:`UDPRelay` owns a UDP socket wrapped in a
:class:`~proxyproto.ProxiedUDPSocket`, so every datagram is judged by the handshake engine as the
TCP relay's connections are (``SKIP`` without ``accept_proxy``; with it, a v2 header from every
datagram of a trusted sender, anyone else dropped and counted in :attr:`UDPRelay.dropped`).

A *pseudo connection* (:class:`_Flow`) is what a client's datagrams share: it is keyed by the
client (the datagram's source, or the header's with ``accept_proxy``) and the real sender, and
owns a connected UDP socket to a target (the first of :func:`target_order`) and a task that reads
the target's replies and sends them, without a header, from the listening socket to the real
sender. With ``send_proxy`` v2, every datagram to the target carries a DGRAM v2 header (spec
2.2): the client as source, the inbound header's destination (else the listening address) as
destination.

Bounds. A pseudo connection ends after ``udp_idle_lifetime`` seconds without a datagram either
way. At most ``udp_max_connections`` are open (default: from ``RLIMIT_NOFILE``,
:func:`default_max_connections`): a new client evicts the least recently used one, whose socket
is closed before the new one is opened, so a flood of spoofed sources costs a bounded number of
descriptors and bounded memory. Each one ends with one access-log line, as the TCP relay's, with
the datagrams counted (``end=idle|evicted|stopped``).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

import anyio
from anyio.abc import ConnectedUDPSocket, SocketAttribute, TaskGroup

from proxyproto._adapters.udp import ProxiedDatagram, ProxiedUDPSocket, build_datagram
from proxyproto._core.errors import HeaderEncodingError
from proxyproto._core.model import Address, Header, Transport
from proxyproto._handshake.policy import carries_address

from .output import format_address
from .output import os_error_text as _os_error_text
from .output import pair as _pair
from .relay_server import RelaySettings, outbound_tlvs, target_order

__all__ = ["UDPRelay", "default_max_connections"]

logger = logging.getLogger("proxyproto.relay")

_Target = tuple[str, int]
#: rpxy-l4's default idle lifetime of a UDP pseudo connection, in seconds.
DEFAULT_IDLE_LIFETIME = 30.0


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


class _Flow:
    """One pseudo connection: a client's datagrams, its target socket and its reply task."""

    def __init__(
        self, peer: tuple[str, int], client: Address, target: _Target, upstream: ConnectedUDPSocket
    ) -> None:
        self.peer = peer
        self.client = client
        self.target = target
        self.upstream = upstream
        self.header: bytes = b""
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


class UDPRelay:
    """A running UDP relay: :meth:`serve` until :meth:`stop` (what :class:`Relay` offers)."""

    def __init__(self, settings: RelaySettings) -> None:
        self.settings = settings
        self._receiving = anyio.CancelScope()
        self._socket: ProxiedUDPSocket | None = None
        self._flows: OrderedDict[tuple[Any, tuple[str, int]], _Flow] = OrderedDict()
        self._send_lock = anyio.Lock()
        self._local: Address = None
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
        """Stop receiving and end every pseudo connection (UDP has nothing to drain)."""
        self._receiving.cancel()

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
        host, port = self.settings.listen
        udp = await anyio.create_udp_socket(
            local_host=host or "0.0.0.0", local_port=port, reuse_port=self.settings.reuse_port
        )
        sock = self._socket = ProxiedUDPSocket(udp, self.settings.proxy_config())
        self._local = _pair(udp.extra(SocketAttribute.local_address))
        self.addresses = [format_address(self._local)]
        async with anyio.create_task_group() as flows:
            try:
                task_status.started()
                with self._receiving:
                    while True:
                        datagram = await sock.receive()
                        await self._forward(datagram, flows)
            finally:
                for flow in self._flows.values():
                    flow.end = flow.end or "stopped"
                flows.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await sock.aclose()

    async def _forward(self, datagram: ProxiedDatagram, flows: TaskGroup) -> None:
        key = (datagram.source, datagram.peer)
        flow = self._flows.get(key)
        if flow is None:
            flow = await self._open(datagram, flows)
            if flow is None:
                return
        else:
            self._flows.move_to_end(key)
        flow.last = anyio.current_time()
        try:
            await flow.upstream.send(
                flow.header + datagram.payload if flow.header else datagram.payload
            )
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return  # a datagram lost, as UDP may
        flow.counts[0] += 1
        flow.counts[1] += len(datagram.payload)

    async def _open(self, datagram: ProxiedDatagram, flows: TaskGroup) -> _Flow | None:
        settings = self.settings
        cap = settings.udp_max_connections or default_max_connections()
        while len(self._flows) >= cap:
            _, oldest = self._flows.popitem(last=False)
            oldest.end = "evicted"
            oldest.scope.cancel()
            await oldest.close()  # before the new socket: descriptors stay bounded
        header = b""
        if settings.send_proxy:
            try:
                header = self._header(datagram)
            except HeaderEncodingError as error:
                logger.warning(
                    "client %s: cannot send a header: %s", format_address(datagram.source), error
                )
                return None
        errors = []
        for target in target_order(settings.targets, settings.balance, datagram.source):
            try:
                upstream = await anyio.create_connected_udp_socket(*target)
            except OSError as error:
                errors.append(f"{format_address(target)}: {_os_error_text(error)}")
                continue
            flow = _Flow(datagram.peer, datagram.source, target, upstream)
            flow.header = header
            self._flows[(datagram.source, datagram.peer)] = flow
            flows.start_soon(self._pump, flow)
            return flow
        logger.warning(
            "client %s: no target reachable (%s)",
            format_address(datagram.source),
            "; ".join(errors),
        )
        return None

    def _header(self, datagram: ProxiedDatagram) -> bytes:
        """The v2 DGRAM header in front of each of this client's datagrams."""
        settings = self.settings
        inbound = datagram.header
        tlvs = outbound_tlvs(inbound, settings)
        if inbound is not None and not carries_address(inbound):
            header = Header.local(tlvs=tlvs)
        else:
            destination = datagram.destination or self._local
            assert datagram.source is not None
            assert destination is not None
            header = Header.proxy(
                datagram.source, destination, transport=Transport.DGRAM, tlvs=tlvs
            )
        return build_datagram(header, b"", crc32c=settings.crc32c)

    async def _pump(self, flow: _Flow) -> None:
        """Send the target's replies to the client's real sender until idle, evicted or stopped."""
        lifetime = self.settings.udp_idle_lifetime
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
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as error:
            flow.end = flow.end or f"error ({type(error).__name__})"
        except OSError as error:
            flow.end = flow.end or f"error ({_os_error_text(error)})"
        finally:
            key = (flow.client, flow.peer)
            if self._flows.get(key) is flow:
                del self._flows[key]
            await flow.close()
            self._log(flow, flow.end or "stopped")

    def _log(self, flow: _Flow, end: str) -> None:
        up_datagrams, up, down_datagrams, down = flow.counts
        logger.info(
            "peer=%s client=%s target=%s route=%s up=%d down=%d datagrams_up=%d"
            " datagrams_down=%d duration=%.3f end=%s",
            format_address(flow.peer),
            format_address(flow.client),
            format_address(flow.target),
            self.settings.key.replace(" ", "_"),
            up,
            down,
            up_datagrams,
            down_datagrams,
            time.monotonic() - flow.started,
            end.replace(" ", "_"),
        )
