"""The L4 TCP relay behind ``proxyproto relay``: accept, pick a target, copy bytes both ways.

Theory of operation. One :class:`Relay` owns a TCP listener wrapped in a
:class:`~proxyproto.ProxyProtocolListener` (``SKIP`` when headers are not accepted, so there is one
code path). Each accepted connection runs in its own task: the handshake (bounded by the header
timeout), then a connection to a target chosen by the balancing rule -- a target that refuses or
does not answer within the connect timeout is skipped for the next, each tried at most once --
then, with ``send_proxy``, a header that describes the client (the header's client when one was
accepted, so a chain keeps the original address), and two copying tasks, one per direction. The
end of one direction is passed on as a half-close (``send_eof``); when both directions are done,
or one fails, both sides are closed and one access-log line is written.

Shutdown (:meth:`Relay.stop`, which SIGINT / SIGTERM call) stops accepting and closes the
listener at once, lets the open connections finish for up to ``grace`` seconds, then cancels
them. A second signal cancels them at once.

Access log: one line per connection on the ``proxyproto.relay`` logger at INFO, as ``key=value``
pairs (see :meth:`Relay._log`); warnings (no target reachable) on the same logger.
"""

from __future__ import annotations

import logging
import random
import signal
import sys
import time
import zlib
from collections.abc import Sequence
from typing import Any

import anyio
import attrs
from anyio.abc import ByteStream, SocketAttribute

from ._anyio import ProxiedStream, ProxyAttribute, ProxyProtocolListener, header_for
from ._cli import _os_error_text, _pair, format_address
from ._config import ProxyProtocolConfig
from ._policy import Policy, trusted_proxies

__all__ = ["BALANCE_MODES", "Relay", "RelaySettings", "serve_relay"]

logger = logging.getLogger("proxyproto.relay")

#: How much one receive() may return. Large, so that bulk transfers cost few Python calls.
CHUNK_SIZE = 256 * 1024

#: ``none``: targets in order; ``random``: a fresh order per connection; ``source-ip`` /
#: ``source-socket``: an order that starts at a hash of the client's IP (and port), so a client
#: keeps its target while that target answers.
BALANCE_MODES = ("none", "random", "source-ip", "source-socket")

_Target = tuple[str, int]
_FAILURES = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)


@attrs.frozen
class RelaySettings:
    """What ``proxyproto relay`` is told on its command line."""

    listen: _Target
    targets: tuple[_Target, ...]
    #: 0 (no header), 1 or 2: the header prepended to each target connection.
    send_proxy: int = 0
    accept_proxy: bool = False
    #: Peers whose headers are accepted; empty: every peer must send one.
    trusted: tuple[str, ...] = ()
    balance: str = "none"
    header_timeout: float = ProxyProtocolConfig().header_timeout
    connect_timeout: float = 5.0
    grace: float = 10.0

    def proxy_config(self) -> ProxyProtocolConfig:
        """The inbound listener's configuration."""
        if not self.accept_proxy:
            return ProxyProtocolConfig(policy=Policy.SKIP)
        if self.trusted:
            # A trusted upstream must send a header; anyone else is refused outright.
            return ProxyProtocolConfig(
                policy=trusted_proxies(self.trusted), header_timeout=self.header_timeout
            )
        return ProxyProtocolConfig(policy=Policy.REQUIRE, header_timeout=self.header_timeout)


def target_order(
    targets: Sequence[_Target], balance: str, client: Any, *, rng: random.Random | None = None
) -> list[_Target]:
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


class Relay:
    """A running relay: :meth:`serve` until :meth:`stop`."""

    def __init__(self, settings: RelaySettings) -> None:
        self.settings = settings
        self._active = 0
        self._stopping = False
        self._idle = anyio.Event()
        self._accepting = anyio.CancelScope()
        self._connections = anyio.CancelScope()
        #: The addresses listened on, once :meth:`serve` has started.
        self.addresses: list[str] = []

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen, relay every connection, return once stopped and every connection is over.

        :raises OSError: the listening address cannot be bound.
        """
        settings = self.settings
        host, port = settings.listen
        inner = await anyio.create_tcp_listener(local_host=host, local_port=port)
        listener = ProxyProtocolListener(inner, settings.proxy_config())
        self.addresses = [
            format_address(_pair(sub.extra(SocketAttribute.local_address)))
            for sub in inner.listeners
        ]

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
                async with listener:
                    task_status.started()
                    with self._accepting:
                        await inner.serve(handle, connections)
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
        settings = self.settings
        started = time.monotonic()
        peer = _pair(client.extra(ProxyAttribute.peer_address))
        source = _pair(client.extra(SocketAttribute.remote_address, None))
        counts = [0, 0]  # client -> target, target -> client
        target: _Target | None = None
        end = "done"
        try:
            async with client:
                target, upstream = await self._connect(source)
                if upstream is None:
                    end = "no-target"
                    return
                async with upstream:
                    if settings.send_proxy:
                        header = header_for(client, version=settings.send_proxy)
                        await upstream.send(header.to_bytes())
                    end = await _splice(client, upstream, counts)
        except _FAILURES as error:
            end = f"error ({_os_error_text(error)})"
        except anyio.get_cancelled_exc_class():
            end = "cancelled"
            raise
        except Exception as error:
            # One connection's surprise must not take the relay and every other connection down.
            logger.exception("client %s: unexpected error", format_address(source))
            end = f"error ({type(error).__name__})"
        finally:
            self._log(peer, source, target, counts, time.monotonic() - started, end)

    async def _connect(self, client: Any) -> tuple[_Target | None, ByteStream | None]:
        """The first target of the balancing order that accepts a connection."""
        settings = self.settings
        errors = []
        for target in target_order(settings.targets, settings.balance, client):
            try:
                with anyio.fail_after(settings.connect_timeout):
                    return target, await anyio.connect_tcp(*target)
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
        peer: Any,
        client: Any,
        target: _Target | None,
        counts: list[int],
        duration: float,
        end: str,
    ) -> None:
        logger.info(
            "peer=%s client=%s target=%s up=%d down=%d duration=%.3f end=%s",
            format_address(peer),
            format_address(client),
            format_address(target),
            counts[0],
            counts[1],
            duration,
            end.replace(" ", "_"),
        )


async def _splice(client: ByteStream, upstream: ByteStream, counts: list[int]) -> str:
    """Copy both ways until both ends are done or one fails; ``"done"`` or what failed."""
    failures: list[str] = []
    async with anyio.create_task_group() as task_group:

        async def copy(source: ByteStream, sink: ByteStream, index: int) -> None:
            receive, send = source.receive, sink.send
            total = 0
            try:
                while True:
                    try:
                        data = await receive(CHUNK_SIZE)
                    except anyio.EndOfStream:
                        break
                    await send(data)
                    total += len(data)
                counts[index] = total
                # The half-close goes on: the other direction keeps flowing.
                await sink.send_eof()
            except _FAILURES as error:
                counts[index] = total
                failures.append(f"{'up' if index == 0 else 'down'}: {_os_error_text(error)}")
                task_group.cancel_scope.cancel()

        task_group.start_soon(copy, client, upstream, 0)
        task_group.start_soon(copy, upstream, client, 1)
    return f"reset ({failures[0]})" if failures else "done"


async def _stop_on_signals(relay: Relay, *, task_status: anyio.abc.TaskStatus[None]) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        first = True
        async for number in signals:
            name = signal.Signals(number).name
            if first:
                logger.info("stopping on %s: no new connections", name)
                relay.stop()
                first = False
            else:
                logger.info("stopping on %s: closing every connection", name)
                relay.stop(now=True)


async def serve_relay(settings: RelaySettings) -> int:
    """Run the relay until SIGINT or SIGTERM; print ``listening on ...`` once listening.

    Returns the exit status: 0 when stopped by a signal, 1 when it cannot listen.
    """
    relay = Relay(settings)
    async with anyio.create_task_group() as task_group:
        await task_group.start(_stop_on_signals, relay)
        try:
            await task_group.start(_serve_then_stop, relay, task_group.cancel_scope)
        except OSError as error:
            where = format_address(settings.listen)
            print(f"proxyproto: cannot listen on {where}: {_os_error_text(error)}", file=sys.stderr)
            task_group.cancel_scope.cancel()
            return 1
        print(f"listening on {', '.join(relay.addresses)}", flush=True)
    return 0


async def _serve_then_stop(
    relay: Relay, scope: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus[None]
) -> None:
    await relay.serve(task_status=task_status)
    scope.cancel()  # the signal watcher's job is over
