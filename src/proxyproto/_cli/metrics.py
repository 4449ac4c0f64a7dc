"""``--metrics HOST:PORT`` of ``relay``, ``echo`` and ``hypercorn``: Prometheus metrics of the
PROXY handshakes (:mod:`proxyproto.prometheus`) at ``http://HOST:PORT/metrics``.

prometheus_client's HTTP server runs in a daemon thread and reads the counters when scraped, so
it works the same under the relay's event loop and in Hypercorn's supervisor, which has none.
With worker processes, the supervisor serves the sums of the counts the workers write into a
temporary directory (``directory``; see :mod:`proxyproto._adapters.metrics`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Callable

from proxyproto._core.extras import missing

from .args import PROG, listen_address
from .output import fail, format_address, os_error_text

__all__ = [
    "add_metrics_option",
    "check_metrics",
    "run_with_metrics",
    "start_metrics",
    "start_worker_metrics",
]


def add_metrics_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--metrics",
        type=listen_address,
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (the prometheus extra)",
    )


def check_metrics(command: str) -> int:
    """0 when ``--metrics`` can work; else 1, having said which extra to install."""
    try:
        import prometheus_client  # noqa: F401
    except ModuleNotFoundError as error:
        message = missing(error, f"{PROG} {command} --metrics")
        if message is None:
            raise
        return fail(message)
    return 0


def start_metrics(
    address: tuple[str, int], command: str, directory: str | os.PathLike[str] | None = None
) -> Callable[[], None] | int:
    """Serve ``/metrics`` on ``address`` (only there), print ``metrics on http://.../metrics``;
    returns the function that stops it, or the exit status 1 when it cannot (one line said why).

    ``directory``: the sums of the counts written there by worker processes, not this process's.
    """
    if check_metrics(command):
        return 1
    from prometheus_client import CollectorRegistry, start_http_server

    from proxyproto.prometheus import ProxyProtocolCollector

    registry = CollectorRegistry(auto_describe=True)
    registry.register(ProxyProtocolCollector(directory))
    host, port = address
    try:
        server, thread = start_http_server(port, host, registry=registry)
    except OSError as error:
        return fail(f"cannot serve metrics on {format_address(address)}: {os_error_text(error)}")
    bound = server.server_address
    print(f"metrics on http://{format_address((host, int(bound[1])))}/metrics", flush=True)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop


def start_worker_metrics(
    address: tuple[str, int], command: str
) -> tuple[str, Callable[[], None]] | int:
    """:func:`start_metrics` for worker processes: the sums of the counts they write into a new
    temporary directory (:class:`~proxyproto._adapters.metrics.SnapshotWriter`). Returns the
    directory and the function that stops serving and removes it, or the exit status 1."""
    directory = tempfile.mkdtemp(prefix="proxyproto-metrics-")
    started = start_metrics(address, command, directory)
    if isinstance(started, int):
        shutil.rmtree(directory, ignore_errors=True)
        return started
    stop_serving = started

    def stop() -> None:
        stop_serving()
        shutil.rmtree(directory, ignore_errors=True)

    return directory, stop


def run_with_metrics(address: tuple[str, int] | None, command: str, main: Callable[[], int]) -> int:
    """``main()``, with ``/metrics`` served on ``address`` meanwhile (none when ``None``); the
    exit status is ``main``'s, or 1 when the metrics cannot be served (one line said why)."""
    if address is None:
        return main()
    stop = start_metrics(address, command)
    if isinstance(stop, int):
        return stop
    try:
        return main()
    finally:
        stop()
