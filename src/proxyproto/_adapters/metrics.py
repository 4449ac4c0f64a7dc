"""The counters of a process as plain data, summed by listener, and shared between processes.

Theory of operation
-------------------
Metrics cost nothing per connection: the handshakes bump their plain integers
(:class:`~proxyproto._handshake.engine.Counters`), and an exporter reads them when it is
scraped. :func:`samples` is that reading: every registered surface's counters (the engine's
registry) and every tracked UDP socket's (:func:`track_datagrams`), summed by ``(surface,
listener)``, and the relay's counts by route (:class:`RelayCounters`, :func:`track_relay`),
summed by ``(transport, listener)``, as JSON-ready dictionaries (:class:`Samples`). Reading
from another thread (an HTTP server's) is safe: the counters are ints and lists and dicts of
fixed size, copied whole (a relay's dicts by route and reason grow, and are copied with
``dict()``, which holds the GIL throughout).

Worker processes (``proxyproto hypercorn --workers N``, Uvicorn's ``--workers``) each count
alone. Each one runs a :class:`SnapshotWriter`, a thread that writes the process's samples to
``DIRECTORY/PID.json`` every ``interval`` seconds and once more when it stops (written to a
temporary file, then renamed: a reader never sees half a file); :func:`read_shared` sums the
files of a directory. Counters of a worker that has exited stay in the sum (its last file stays),
so totals never go down when a worker is replaced.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from proxyproto._handshake.engine import DURATION_BUCKETS, RefusalKind, registered

if TYPE_CHECKING:
    from .udp import ProxiedUDPSocket

__all__ = [
    "ROUTE_COUNTS",
    "RelayCounters",
    "Samples",
    "SnapshotWriter",
    "merge",
    "read_shared",
    "samples",
    "track_datagrams",
    "track_relay",
]


class Samples(TypedDict):
    """A process's counters (or several processes' sums), by listener."""

    #: One dictionary per ``(surface, listener)`` of TCP handshakes: ``surface``, ``listener``,
    #: ``by_version`` (``Counters.by_version``), ``rejected`` (by kind, every kind),
    #: ``in_flight``, ``durations`` (``Counters.durations``) and ``duration_sum``.
    tcp: list[dict[str, Any]]
    #: One per ``(surface, listener)`` of UDP sockets: ``received``, ``delivered``, ``direct``
    #: and ``dropped`` (by kind, every kind).
    udp: list[dict[str, Any]]
    #: One per ``(transport, listener)`` of the relay (:class:`RelayCounters`): ``transport``
    #: (``tcp`` or ``udp``), ``listener``, ``routes`` (route name -> :data:`ROUTE_COUNTS`),
    #: ``unrouted`` (reason -> count) and ``evicted``.
    relay: list[dict[str, Any]]


# The UDP sockets counted in samples(): (listener name, socket). Kept for the process's lifetime,
# as the engine's registry keeps its counters.
_DATAGRAMS: list[tuple[str, ProxiedUDPSocket]] = []


def track_datagrams(sock: ProxiedUDPSocket, name: str) -> None:
    """Count ``sock``'s datagrams in :func:`samples` (once), as listener ``name``."""
    if not any(kept is sock for _, kept in _DATAGRAMS):
        _DATAGRAMS.append((name, sock))


#: What :attr:`RelayCounters.routes` counts per route, in this order.
ROUTE_COUNTS = ("connections", "bytes_up", "bytes_down", "datagrams_up", "datagrams_down")


class RelayCounters:
    """One relay listener's counts by route, for ``--metrics``: plain integers bumped by the
    relay, read when scraped (as the engine's :class:`~proxyproto._handshake.engine.Counters`).

    ``transport`` is ``tcp`` or ``udp``; ``listener`` the bound address(es).
    """

    __slots__ = ("evicted", "listener", "routes", "transport", "unrouted")

    def __init__(self, transport: str, listener: str) -> None:
        self.transport = transport
        self.listener = listener
        #: Per route name: the counts of :data:`ROUTE_COUNTS` (a UDP pseudo connection is a
        #: connection; "up" is client to target).
        self.routes: dict[str, list[int]] = {}
        #: Connections (UDP: pseudo connections, each with the datagrams it had) dropped for
        #: matching no route, by reason: the protocol matched that no route took, ``unknown``,
        #: and for UDP ``datagrams`` (every datagram so dropped).
        self.unrouted: dict[str, int] = {}
        #: UDP pseudo connections ended to make room for a new client.
        self.evicted = 0

    def route(self, name: str) -> list[int]:
        """The counts of route ``name``, bumped in place by the relay."""
        counts = self.routes.get(name)
        if counts is None:
            counts = self.routes[name] = [0] * len(ROUTE_COUNTS)
        return counts

    def drop(self, reason: str, count: int = 1) -> None:
        """Count ``count`` unrouted under ``reason``."""
        self.unrouted[reason] = self.unrouted.get(reason, 0) + count


# The relay listeners counted in samples(), for the process's lifetime.
_RELAYS: list[RelayCounters] = []


def track_relay(counters: RelayCounters) -> RelayCounters:
    """Count ``counters`` in :func:`samples` (once); returns them."""
    if not any(kept is counters for kept in _RELAYS):
        _RELAYS.append(counters)
    return counters


def _empty_relay(transport: str, listener: str) -> dict[str, Any]:
    return {
        "transport": transport,
        "listener": listener,
        "routes": {},
        "unrouted": {},
        "evicted": 0,
    }


def _add_relay(total: dict[str, Any], more: dict[str, Any]) -> None:
    routes = total["routes"]
    for name, counts in more["routes"].items():
        kept = routes.get(name) or [0] * len(ROUTE_COUNTS)
        routes[name] = [a + b for a, b in zip(kept, counts, strict=True)]
    unrouted = total["unrouted"]
    for reason, count in more["unrouted"].items():
        unrouted[reason] = unrouted.get(reason, 0) + count
    total["evicted"] += more["evicted"]


def _empty_tcp(surface: str, listener: str) -> dict[str, Any]:
    return {
        "surface": surface,
        "listener": listener,
        "by_version": [0] * 6,
        "rejected": dict.fromkeys((kind.value for kind in RefusalKind), 0),
        "in_flight": 0,
        "durations": [0] * (len(DURATION_BUCKETS) + 1),
        "duration_sum": 0.0,
    }


def _empty_udp(surface: str, listener: str) -> dict[str, Any]:
    return {
        "surface": surface,
        "listener": listener,
        "received": 0,
        "delivered": 0,
        "direct": 0,
        "dropped": dict.fromkeys((kind.value for kind in RefusalKind), 0),
    }


def _add(total: dict[str, Any], more: dict[str, Any]) -> None:
    """Add ``more``'s counts into ``total`` (both of one kind)."""
    for key, value in more.items():
        if key in ("surface", "listener"):
            continue
        if isinstance(value, dict):
            counts = total[key]
            for kind, count in value.items():
                counts[kind] = counts.get(kind, 0) + count
        elif isinstance(value, list):
            total[key] = [a + b for a, b in zip(total[key], value, strict=True)]
        else:
            total[key] += value


def samples() -> Samples:
    """This process's counters now, summed by ``(surface, listener)``."""
    tcp: dict[tuple[str, str], dict[str, Any]] = {}
    for surface, kept in list(registered().items()):
        for counters in list(kept):
            listener = counters.name or ""
            entry = tcp.get((surface, listener))
            if entry is None:
                entry = tcp[surface, listener] = _empty_tcp(surface, listener)
            _add(
                entry,
                {
                    "by_version": list(counters.by_version),
                    "rejected": {kind.value: n for kind, n in dict(counters.rejected).items()},
                    "in_flight": counters.in_flight,
                    "durations": list(counters.durations),
                    "duration_sum": counters.duration_sum,
                },
            )
    udp: dict[tuple[str, str], dict[str, Any]] = {}
    for name, sock in list(_DATAGRAMS):
        statistics = sock.statistics()
        entry = udp.get(("udp", name))
        if entry is None:
            entry = udp["udp", name] = _empty_udp("udp", name)
        _add(
            entry,
            {
                "received": statistics.received,
                "delivered": statistics.delivered,
                "direct": statistics.direct,
                "dropped": dict(statistics.dropped),
            },
        )
    relay: dict[tuple[str, str], dict[str, Any]] = {}
    for relayed in list(_RELAYS):
        key = (relayed.transport, relayed.listener)
        entry = relay.get(key)
        if entry is None:
            entry = relay[key] = _empty_relay(*key)
        _add_relay(
            entry,
            {
                "routes": {name: list(counts) for name, counts in dict(relayed.routes).items()},
                "unrouted": dict(relayed.unrouted),
                "evicted": relayed.evicted,
            },
        )
    return {"tcp": list(tcp.values()), "udp": list(udp.values()), "relay": list(relay.values())}


def merge(parts: Iterable[Samples]) -> Samples:
    """The sum of several processes' samples, by ``(surface, listener)``."""
    tcp: dict[tuple[str, str], dict[str, Any]] = {}
    udp: dict[tuple[str, str], dict[str, Any]] = {}
    relay: dict[tuple[str, str], dict[str, Any]] = {}
    for part in parts:
        for kind, table, empty in (("tcp", tcp, _empty_tcp), ("udp", udp, _empty_udp)):
            for entry in part[kind]:  # type: ignore[literal-required]
                key = (entry["surface"], entry["listener"])
                total = table.get(key)
                if total is None:
                    total = table[key] = empty(*key)
                _add(total, entry)
        for entry in part.get("relay", []):  # absent from an older process's file
            key = (entry["transport"], entry["listener"])
            total = relay.get(key)
            if total is None:
                total = relay[key] = _empty_relay(*key)
            _add_relay(total, entry)
    return {"tcp": list(tcp.values()), "udp": list(udp.values()), "relay": list(relay.values())}


def read_shared(directory: str | os.PathLike[str]) -> Samples:
    """The sum of the samples the processes sharing ``directory`` wrote (:class:`SnapshotWriter`).

    A file that cannot be read or parsed (a process writing its first one, a stray file) is
    skipped.
    """
    parts: list[Samples] = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "tcp" in data and "udp" in data:
            parts.append(data)  # type: ignore[arg-type]
    return merge(parts)


class SnapshotWriter:
    """Writes this process's :func:`samples` to ``directory/PID.json`` every ``interval``
    seconds, from a daemon thread, and once more on :meth:`stop`.

    >>> writer = SnapshotWriter("/run/proxyproto-metrics")  # doctest: +SKIP
    >>> writer.start()  # doctest: +SKIP
    """

    def __init__(self, directory: str | os.PathLike[str], interval: float = 1.0) -> None:
        self.path = Path(directory) / f"{os.getpid()}.json"
        self.interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="proxyproto-metrics-writer", daemon=True
        )

    def start(self) -> SnapshotWriter:
        """Write now, then every ``interval`` seconds; returns itself."""
        self.write()
        self._thread.start()
        return self

    def write(self) -> None:
        """Write the samples now (to a temporary file, renamed over the last one)."""
        temporary = self.path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(samples()), encoding="utf-8")
            os.replace(temporary, self.path)
        except OSError:
            pass  # the directory is gone (the supervisor cleaned it up): nothing to tell

    def stop(self) -> None:
        """Stop the thread and write a last time."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()
        self.write()

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.write()
