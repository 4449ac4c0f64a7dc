"""Prometheus metrics of every PROXY handshake in the process (the ``prometheus`` extra).

:class:`ProxyProtocolCollector` is a ``prometheus_client`` collector: when scraped, it reads the
counters every surface keeps anyway -- Uvicorn's, Hypercorn's, the listeners given to
:func:`track` -- so it costs nothing per connection. Register it once::

    import prometheus_client
    import proxyproto.prometheus

    prometheus_client.REGISTRY.register(proxyproto.prometheus.ProxyProtocolCollector())
    prometheus_client.start_http_server(9100, "127.0.0.1")

The metrics (``surface``: ``uvicorn``, ``hypercorn``, ``anyio``, ``trio``, ``relay``, ``echo``,
``udp``; ``listener``: the name given to :func:`track`, or the bound address -- Uvicorn's and
Hypercorn's too):

=================================================  =================================================
``proxyproto_connections_accepted_total``          connections handed over; ``mode``: ``proxied``
                                                   (the header's addresses used) or ``direct``;
                                                   ``version``: ``1``, ``2`` or ``none``
``proxyproto_connections_refused_total``           closed by the handshake; ``reason``: ``empty``,
                                                   ``missing``, ``invalid``, ``closed``, ``policy``,
                                                   ``validator``, ``error``
``proxyproto_handshakes_timed_out_total``          no header within ``header_timeout``
``proxyproto_handshakes_evicted_total``            closed to make room (``eviction_age``)
``proxyproto_handshakes_in_flight``                handshakes under way (a gauge)
``proxyproto_handshake_duration_seconds``          accepted handshakes' durations (a histogram)
``proxyproto_datagrams_received_total``            UDP datagrams read
``proxyproto_datagrams_delivered_total``           handed over; ``mode``: ``proxied`` or ``direct``
``proxyproto_datagrams_dropped_total``             dropped; ``reason`` as for connections
``proxyproto_relay_connections_total``             ``proxyproto relay``: connections (UDP: pseudo
                                                   connections) sent to a target, by ``transport``
                                                   (``tcp``, ``udp``), ``listener`` and ``route``
                                                   (a ``[protocols.NAME]`` name, or ``default``)
``proxyproto_relay_bytes_total``                   the bytes they carried, by ``direction``
                                                   (``up``: client to target, ``down``); TCP counts
                                                   a connection's when it ends
``proxyproto_relay_datagrams_total``               UDP datagrams relayed, by ``direction``
``proxyproto_relay_unrouted_total``                connections matching no route (no default
                                                   route), by ``reason``: the protocol no route
                                                   took, ``unknown``; UDP: ``datagrams`` too
``proxyproto_relay_evicted_total``                 UDP pseudo connections ended for a new client
                                                   (the ``udp_max_connections`` cap)
=================================================  =================================================

Every handshake ends in exactly one of accepted, refused, timed out and evicted.

With worker processes, each one counts alone: give each a :func:`share` of one directory, and
serve a ``ProxyProtocolCollector(directory=...)`` of it anywhere: it sums every worker's counts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from ._core.extras import require

with require("proxyproto.prometheus"):
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector

from ._adapters.metrics import (
    ROUTE_COUNTS,
    Samples,
    SnapshotWriter,
    read_shared,
    samples,
    track_datagrams,
)
from ._adapters.udp import ProxiedUDPSocket
from ._handshake.engine import BY_VERSION_LABELS, DURATION_BUCKETS, RefusalKind, register

__all__ = ("ProxyProtocolCollector", "SnapshotWriter", "share", "track")

#: The refusal kinds counted apart from ``refused`` (as in ``statistics()``).
_APART = (RefusalKind.TIMEOUT.value, RefusalKind.EVICTED.value)
_REFUSED = tuple(kind.value for kind in RefusalKind if kind.value not in _APART)


def track(listener: Any, name: str | None = None) -> None:
    """Count ``listener`` in the metrics: a :class:`proxyproto.ProxyProtocolListener`, a
    :class:`proxyproto.trio.ProxyProtocolListener` or a :class:`proxyproto.ProxiedUDPSocket`.

    ``name`` is its ``listener`` label (default: the address it listens on). Uvicorn's and
    Hypercorn's listeners are counted without this. Listeners are counted for the process's
    lifetime (a stopped one's counts stay in the totals).
    """
    if name is None:
        name = _address_of(listener)
    if isinstance(listener, ProxiedUDPSocket):
        track_datagrams(listener, name)
        return
    counters = getattr(listener, "_counters", None)
    if counters is None:
        raise TypeError(f"cannot count {type(listener).__name__}: not a PROXY listener")
    surface = "trio" if type(listener).__module__ == "proxyproto.trio" else "anyio"
    register(surface, counters, name)


def _address_of(listener: Any) -> str:
    from ._core.text import format_address

    for candidate in (
        getattr(listener, "transport_socket", None),
        getattr(listener, "listener", None),
    ):
        if candidate is None:
            continue
        try:
            import anyio.abc

            address = candidate.extra(anyio.abc.SocketAttribute.local_address)
        except Exception:
            continue
        if isinstance(address, tuple):
            address = (address[0], address[1])
        return format_address(address)
    return ""


def share(directory: str | os.PathLike[str], interval: float = 1.0) -> SnapshotWriter:
    """Write this process's counts into ``directory`` every ``interval`` seconds (a daemon
    thread), for a :class:`ProxyProtocolCollector` of that directory to sum; returns the
    writer, whose ``stop()`` writes a last time. For worker processes (Uvicorn's ``--workers``):
    call it in each worker, e.g. at the application's lifespan startup."""
    return SnapshotWriter(directory, interval).start()


class ProxyProtocolCollector(Collector):
    """The metrics of this process's PROXY handshakes, read when scraped; with ``directory``,
    the sums of what the processes sharing it wrote (:func:`share`) instead."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = directory

    def describe(self) -> list[Metric]:
        return list(_families({"tcp": [], "udp": [], "relay": []}))

    def collect(self) -> Iterator[Metric]:
        data = samples() if self.directory is None else read_shared(self.directory)
        return _families(data)


def _families(data: Samples) -> Iterator[Metric]:
    where = ["surface", "listener"]
    accepted = CounterMetricFamily(
        "proxyproto_connections_accepted",
        "Connections handed over after their PROXY handshake, proxied (the header's addresses "
        "used) or direct, by header version.",
        labels=[*where, "mode", "version"],
    )
    refused = CounterMetricFamily(
        "proxyproto_connections_refused",
        "Connections closed by the PROXY handshake, by reason.",
        labels=[*where, "reason"],
    )
    timed_out = CounterMetricFamily(
        "proxyproto_handshakes_timed_out",
        "Connections closed because no complete PROXY header came within header_timeout.",
        labels=where,
    )
    evicted = CounterMetricFamily(
        "proxyproto_handshakes_evicted",
        "Partial PROXY handshakes closed to make room for newer ones.",
        labels=where,
    )
    in_flight = GaugeMetricFamily(
        "proxyproto_handshakes_in_flight", "PROXY handshakes under way.", labels=where
    )
    duration = HistogramMetricFamily(
        "proxyproto_handshake_duration_seconds",
        "How long accepted PROXY handshakes took, from the connection to its hand-over.",
        labels=where,
    )
    for entry in data["tcp"]:
        labels = [entry["surface"], entry["listener"]]
        by_version = entry["by_version"]
        for index, (mode, version) in BY_VERSION_LABELS.items():
            accepted.add_metric([*labels, mode, version], by_version[index])
        rejected = entry["rejected"]
        for reason in _REFUSED:
            refused.add_metric([*labels, reason], rejected.get(reason, 0))
        timed_out.add_metric(labels, rejected.get(RefusalKind.TIMEOUT.value, 0))
        evicted.add_metric(labels, rejected.get(RefusalKind.EVICTED.value, 0))
        in_flight.add_metric(labels, entry["in_flight"])
        buckets: list[tuple[str, float]] = []
        cumulative = 0
        for bound, count in zip((*DURATION_BUCKETS, float("inf")), entry["durations"], strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        duration.add_metric(labels, buckets, entry["duration_sum"])
    received = CounterMetricFamily(
        "proxyproto_datagrams_received", "UDP datagrams read.", labels=where
    )
    delivered = CounterMetricFamily(
        "proxyproto_datagrams_delivered",
        "UDP datagrams handed over, proxied or direct.",
        labels=[*where, "mode"],
    )
    dropped = CounterMetricFamily(
        "proxyproto_datagrams_dropped",
        "UDP datagrams dropped, by reason.",
        labels=[*where, "reason"],
    )
    for entry in data["udp"]:
        labels = [entry["surface"], entry["listener"]]
        received.add_metric(labels, entry["received"])
        delivered.add_metric([*labels, "proxied"], entry["delivered"] - entry["direct"])
        delivered.add_metric([*labels, "direct"], entry["direct"])
        for kind in RefusalKind:
            dropped.add_metric([*labels, kind.value], entry["dropped"].get(kind.value, 0))
    yield from (accepted, refused, timed_out, evicted, in_flight, duration)
    yield from (received, delivered, dropped)
    yield from _relay_families(data)


def _relay_families(data: Samples) -> Iterator[Metric]:
    def counter(name: str, text: str, *labels: str) -> CounterMetricFamily:
        return CounterMetricFamily(f"proxyproto_relay_{name}", text, labels=[*where, *labels])

    where = ["transport", "listener"]
    up = "(up: client to target)"
    connections = counter(
        "connections", "Relayed connections (UDP: pseudo connections) sent to a target.", "route"
    )
    carried = counter("bytes", f"Bytes relayed, by route and direction {up}.", "route", "direction")
    datagrams = counter(
        "datagrams", f"UDP datagrams relayed, by route and direction {up}.", "route", "direction"
    )
    unrouted = counter(
        "unrouted", "Connections dropped for matching no protocol route, by reason.", "reason"
    )
    evicted = counter("evicted", "UDP pseudo connections ended to make room for a new client.")
    for entry in data.get("relay", []):
        labels = [entry["transport"], entry["listener"]]
        for route, counts in entry["routes"].items():
            count = dict(zip(ROUTE_COUNTS, counts, strict=True))
            connections.add_metric([*labels, route], count["connections"])
            for direction in ("up", "down"):
                carried.add_metric([*labels, route, direction], count[f"bytes_{direction}"])
                if entry["transport"] == "udp":
                    datagrams.add_metric(
                        [*labels, route, direction], count[f"datagrams_{direction}"]
                    )
        for reason, count in entry["unrouted"].items():
            unrouted.add_metric([*labels, reason], count)
        if entry["transport"] == "udp":
            evicted.add_metric(labels, entry["evicted"])
    yield from (connections, carried, datagrams, unrouted, evicted)
