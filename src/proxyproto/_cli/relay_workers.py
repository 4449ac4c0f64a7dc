"""``proxyproto relay --workers N``: N processes, each its own event loop, sharing the ports.

Theory of operation. Every worker runs :func:`~proxyproto._cli.relay_server.serve_relay` on the
same routes and binds every ``listen`` address itself, with SO_REUSEPORT
(:attr:`RelaySettings.reuse_port`): the kernel spreads the connections of a TCP port over the
workers' listening sockets, and the datagrams of a UDP port by a hash of their addresses (so one
client's datagrams, and its pseudo connection, stay with one worker). There is no socket passing
and no shared state: each worker reads the configuration file itself and applies its changes
(:class:`~proxyproto._cli.relay_config.RelayConfig`'s polling), so a reload reaches every
worker; each writes its own access-log lines to the stderr they share (one write per line), each
ending in ``worker=N``.

What happens to the workers (signals, a worker that dies) is decided once, for this and
``proxyproto hypercorn``, in :func:`proxyproto._cli.workers.run_workers`: SIGINT / SIGTERM are
forwarded to every worker as SIGTERM (each stops accepting and gives its connections ``grace``),
a second one too (each closes its connections at once); a worker that exits with a failure
status stops the others (exit status 1); a worker that exits cleanly alone is replaced. A
worker whose parent has gone stops as on SIGTERM.

Port 0 on the command line (``--listen HOST:0``) is chosen once, here: a socket bound with
SO_REUSEPORT (never listening, so never handed a connection) holds the port until every worker
listens, then ``listening on`` is printed. With ``--metrics``, each worker writes its counts to a
temporary directory (:class:`~proxyproto._adapters.metrics.SnapshotWriter`) and the parent serves
their sums, as for ``proxyproto hypercorn``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from .args import run
from .metrics import start_worker_metrics
from .output import log_to_stderr
from .relay_config import RelayConfig
from .relay_server import RelaySettings, serve_relay
from .relay_udp import UDPRelay
from .workers import run_workers, watch_parent

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.synchronize import Event as EventType

__all__ = ["reserve_port", "reuse_port_missing", "serve_workers"]

#: How often a worker writes its counts for ``--metrics`` (seconds).
_METRICS_INTERVAL = 0.5


def reuse_port_missing() -> str | None:
    """Why ``--workers`` cannot work here, or ``None``: it needs SO_REUSEPORT spreading the
    connections over the sockets that share a port, which Linux does (other systems have the
    option, but hand every connection to one of them)."""
    if hasattr(socket, "SO_REUSEPORT") and sys.platform.startswith("linux"):
        return None
    return "--workers needs SO_REUSEPORT with load spreading (Linux), which this system lacks"


def reserve_port(address: tuple[str, int], *, udp: bool) -> socket.socket:
    """A socket bound to ``address`` (port 0: a free one) with SO_REUSEPORT, not listening.

    :raises OSError: it cannot be bound.
    """
    host, port = address
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    family, _, _, _, where = socket.getaddrinfo(
        host or None, port, type=kind, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(where)
    except BaseException:
        sock.close()
        raise
    return sock


class _WorkerFormatter(logging.Formatter):
    """The command line's log lines, each ending in ``worker=N``."""

    def __init__(self, base: logging.Formatter | None, number: int) -> None:
        super().__init__()
        self._base = base or logging.Formatter()
        self._suffix = f" worker={number}"

    def format(self, record: logging.LogRecord) -> str:
        return self._base.format(record) + self._suffix


def _worker(
    routes: Sequence[RelaySettings],
    config: RelayConfig | None,
    backend: str,
    metrics_dir: str | None,
    number: int,
    ready: Connection,
    shutdown_event: EventType,
) -> None:
    """A worker process's target (``spawn``: a fresh interpreter, given pickled arguments)."""
    from proxyproto._adapters.metrics import SnapshotWriter

    log_to_stderr()
    for handler in logging.getLogger("proxyproto").handlers:
        if getattr(handler, "_proxyproto_cli", False):
            handler.setFormatter(_WorkerFormatter(handler.formatter, number))
    # SIGINT stays ignored (inherited): the parent forwards SIGINT and SIGTERM as SIGTERM.
    watch_parent(lambda: os.kill(os.getpid(), signal.SIGTERM))

    def started(addresses: list[list[str]]) -> None:
        ready.send(addresses)
        ready.close()

    writer = None if metrics_dir is None else SnapshotWriter(metrics_dir, _METRICS_INTERVAL).start()
    try:
        main = partial(
            serve_relay, routes, config, UDPRelay, signals=(signal.SIGTERM,), started=started
        )
        status = run(backend, main)
    finally:
        if writer is not None:
            writer.stop()
    sys.exit(status)


def serve_workers(
    routes: Sequence[RelaySettings],
    config: RelayConfig | None,
    backend: str,
    *,
    metrics: tuple[str, int] | None = None,
    reserved: Sequence[socket.socket] = (),
) -> int:
    """Run ``routes[0].workers`` relay workers until a signal; returns the exit status
    (:func:`~proxyproto._cli.workers.run_workers`'s, or 1 when ``--metrics`` cannot serve).

    ``reserved``: the sockets holding the ports chosen for port 0, closed once every worker
    listens.
    """
    directory = None
    stop_metrics = None
    try:
        if metrics is not None:
            shared = start_worker_metrics(metrics, "relay")
            if isinstance(shared, int):
                return shared
            directory, stop_metrics = shared

        def ready(messages: list[Any]) -> None:
            for sock in reserved:
                sock.close()
            for addresses in messages[0]:
                print(f"listening on {', '.join(addresses)}", flush=True)

        kwargs: Mapping[str, Any] = {
            "routes": tuple(routes),
            "config": config,
            "backend": backend,
            "metrics_dir": directory,
        }
        return run_workers(
            routes[0].workers,
            _worker,
            kwargs,
            "proxyproto-relay-worker",
            forward_signals=True,
            ready=ready,
        )
    finally:
        for sock in reserved:
            sock.close()
        if stop_metrics is not None:
            stop_metrics()
