"""The worker processes of ``proxyproto hypercorn``, and the parent that supervises them.

It does what Hypercorn's ``run()`` does for several workers: the parent has bound the sockets
(:func:`proxyproto._cli.hypercorn.main`); :func:`supervise` starts each worker in a ``spawn``
process handed the sockets and a shared :class:`multiprocessing.Event`, and sets the event on
SIGINT or SIGTERM; each worker polls it (as Hypercorn's ``check_multiprocess_shutdown_event``
does), stops accepting, and gives open connections ``graceful_timeout``. One worker without
``--max-requests`` runs in the parent instead (:func:`run_in_process`). A worker is
:mod:`proxyproto.hypercorn`'s, on the sockets given. What happens to the workers (signals, a
worker that exits) is decided in :func:`proxyproto._cli.workers.run_workers`, which ``proxyproto
relay --workers`` uses too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from functools import partial
from typing import TYPE_CHECKING

import anyio
import attrs

from proxyproto._adapters.metrics import SnapshotWriter
from proxyproto._handshake.config import ProxyProtocolConfig
from proxyproto._handshake.policy import Policy
from proxyproto.hypercorn import ShutdownTrigger, _asyncio_worker, _trio_worker

from .args import proxy_config
from .output import log_to_stderr
from .workers import run_workers

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event as EventType

    from hypercorn.config import Config, Sockets
    from hypercorn.typing import AppWrapper

__all__ = ["ProxyOptions", "run_in_process", "supervise"]

logger = logging.getLogger("proxyproto")

#: How often a worker writes its counts for ``--metrics`` (seconds).
_METRICS_INTERVAL = 0.5


@attrs.frozen
class ProxyOptions:
    """The PROXY options of the command line, as plain data that pickles (for the workers)."""

    trusted: tuple[str, ...] = ()
    policy: Policy | None = None
    header_timeout: float | None = None
    #: With ``--metrics`` and worker processes: where each worker writes its counts.
    metrics_dir: str | None = None
    #: ``--tls-extension``: the ASGI TLS extension from the header's SSL TLV.
    tls_extension: bool = False

    def config(self) -> ProxyProtocolConfig:
        """The config: :func:`proxyproto._cli.args.proxy_config` of these options."""
        return proxy_config(
            trusted=self.trusted, policy=self.policy, header_timeout=self.header_timeout
        )


class _Stop:
    """A worker's shutdown trigger: a signal, the parent's event, or the parent gone."""

    def __init__(self, event: EventType | None) -> None:
        self._event = event
        self._parent = os.getppid()
        self.signalled = False

    def on_signal(self, signum: int, frame: object) -> None:
        if self.signalled and self._event is None:
            raise KeyboardInterrupt  # in this process, a second Ctrl-C does not wait
        self.signalled = True

    def is_set(self) -> bool:
        if self.signalled:
            return True
        if self._event is None:
            return False
        return self._event.is_set() or os.getppid() != self._parent

    async def wait(self) -> None:
        while not self.is_set():
            await anyio.sleep(0.1)


def _run_worker(
    app: AppWrapper,
    config: Config,
    options: ProxyOptions,
    sockets: Sockets,
    shutdown_trigger: ShutdownTrigger,
) -> None:
    for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
        sock.listen(config.backlog)
    worker = partial(
        _trio_worker if config.worker_class == "trio" else _asyncio_worker,
        app,
        config,
        options.config(),
        sockets=sockets,
        shutdown_trigger=shutdown_trigger,
        tls_extension=options.tls_extension,
    )
    if config.worker_class == "trio":
        import trio

        trio.run(worker)
    else:
        asyncio.run(worker())


def run_in_process(app: AppWrapper, config: Config, options: ProxyOptions, sockets: Sockets) -> int:
    stop = _Stop(None)
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, stop.on_signal)
    try:
        _run_worker(app, config, options, sockets, stop.wait)
    except KeyboardInterrupt:
        return 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def _worker_process(
    config: Config, options: ProxyOptions, sockets: Sockets, shutdown_event: EventType
) -> None:
    """A worker process's target (``spawn``: a fresh interpreter, given pickled arguments)."""
    from hypercorn.utils import load_application

    log_to_stderr()
    stop = _Stop(shutdown_event)
    # SIGINT is ignored (inherited from the parent, which handles Ctrl-C for the process group);
    # a SIGTERM sent to a worker directly stops it gracefully too.
    signal.signal(signal.SIGTERM, stop.on_signal)
    app = load_application(config.application_path, config.wsgi_max_body_size)
    if options.metrics_dir is None:
        _run_worker(app, config, options, sockets, stop.wait)
        return
    writer = SnapshotWriter(options.metrics_dir, _METRICS_INTERVAL).start()
    try:
        _run_worker(app, config, options, sockets, stop.wait)
    finally:
        writer.stop()


def supervise(config: Config, options: ProxyOptions, sockets: Sockets) -> int:
    """Hypercorn's ``run()`` for several workers: start them, stop them on a signal
    (:func:`proxyproto._cli.workers.run_workers` decides what happens to them)."""
    return run_workers(
        config.workers,
        _worker_process,
        {"config": config, "options": options, "sockets": sockets},
        "proxyproto-hypercorn-worker",
    )
