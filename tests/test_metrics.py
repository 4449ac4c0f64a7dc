"""Prometheus metrics (``proxyproto.prometheus``, ``--metrics``): every counter's exact value.

The collector is checked against an anyio listener in this process (both backends); then
``/metrics`` is scraped from a real ``proxyproto relay`` and a real ``proxyproto hypercorn
--workers 2`` after a known mix of connections: proxied v1 and v2, direct (no header under
``use``, or LOCAL), invalid, missing, timed out, empty. Each connection is over (the server
closed it) before the next starts; counters are read in a loop until they settle or a deadline
passes, then compared exactly -- no timing is asserted.
"""

from __future__ import annotations

import collections
import contextlib
import os
import socket
import struct
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import anyio
import pytest

import proxyproto as pp
from cli_process import PROXYPROTO, TIMEOUT, SessionProcess, in_session, read_to_end, without

prometheus_client = pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import proxyproto.prometheus  # noqa: E402
from proxyproto._adapters.metrics import (  # noqa: E402
    RelayCounters,
    SnapshotWriter,
    merge,
    read_shared,
    samples,
    track_relay,
)
from proxyproto._handshake.engine import DURATION_BUCKETS  # noqa: E402

V1 = b"PROXY TCP4 203.0.113.9 198.51.100.10 51234 443\r\n"
V2 = pp.Header.proxy(("203.0.113.9", 51234), ("198.51.100.10", 443)).to_bytes()
LOCAL = pp.Header.local().to_bytes()
INVALID = b"PROXY XX\r\n"
PARTIAL = b"PROXY TCP4 203.0.113.9 "
REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"

Key = tuple[str, frozenset[tuple[str, str]]]


def values(text: str) -> dict[Key, float]:
    """Every sample of a ``/metrics`` page, by name and labels."""
    found: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


def expected(surface: str, listener: str, **counts: float) -> dict[Key, float]:
    """The samples for ``counts``: ``proxied_v1``, ``refused_invalid``, ``timed_out``, ..."""
    where = {"surface": surface, "listener": listener}
    wanted: dict[Key, float] = {}
    for mode, version in (("proxied", "1"), ("proxied", "2"), ("direct", "none")):
        count = counts.pop(f"{mode}_v{version}", 0)
        labels = {**where, "mode": mode, "version": version}
        wanted["proxyproto_connections_accepted_total", frozenset(labels.items())] = count
    for version in ("1", "2"):
        labels = {**where, "mode": "direct", "version": version}
        count = counts.pop(f"direct_v{version}", 0)
        wanted["proxyproto_connections_accepted_total", frozenset(labels.items())] = count
    for reason in ("empty", "missing", "invalid", "closed", "policy", "validator", "error"):
        labels = {**where, "reason": reason}
        count = counts.pop(f"refused_{reason}", 0)
        wanted["proxyproto_connections_refused_total", frozenset(labels.items())] = count
    for name in ("timed_out", "evicted"):
        key = (f"proxyproto_handshakes_{name}_total", frozenset(where.items()))
        wanted[key] = counts.pop(name, 0)
    wanted["proxyproto_handshakes_in_flight", frozenset(where.items())] = 0
    assert not counts, counts
    return wanted


def settled(read: Callable[[], dict[Key, float]], wanted: dict[Key, float]) -> dict[Key, float]:
    """What ``read()`` gives for ``wanted``'s keys once they equal it, or at the deadline."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        got = read()
        seen = {key: got.get(key) for key in wanted}
        if seen == wanted or time.monotonic() > deadline:
            return seen  # type: ignore[return-value]
        time.sleep(0.1)


def scrape(port: int) -> dict[Key, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return values(answer.read().decode())


def exchange(port: int, data: bytes, *, reset: bool = False) -> bytes:
    """Connect, send ``data``, read until the server closes; what it answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        if reset:
            # A connect-and-reset, as a health check may do: nothing sent.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return b""
        if data:
            sock.sendall(data)
        else:
            sock.shutdown(socket.SHUT_WR)  # a connect-and-close
        return read_to_end(sock)


# --- the collector, in this process --------------------------------------------------------------


@pytest.mark.anyio
async def test_collector_counts_an_anyio_listener() -> None:
    name = f"test-{uuid.uuid4()}"
    config = pp.ProxyProtocolConfig(policy=pp.Policy.USE, header_timeout=0.5)
    inner = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    listener = pp.ProxyProtocolListener(inner, config)
    proxyproto.prometheus.track(listener, name)
    port = inner.extra(anyio.abc.SocketAttribute.local_port)

    async def handle(stream: pp.ProxiedStream) -> None:
        async with stream:
            await stream.send(b"ok")

    async def connect(data: bytes) -> None:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(data)
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while await stream.receive():
                    pass

    registry = prometheus_client.CollectorRegistry()
    registry.register(proxyproto.prometheus.ProxyProtocolCollector())
    async with listener, anyio.create_task_group() as task_group:
        task_group.start_soon(listener.serve, handle, task_group)
        for data in (V1, V2, V2, LOCAL, b"hello", INVALID, PARTIAL):
            await connect(data)
        wanted = expected(
            "anyio",
            name,
            proxied_v1=1,
            proxied_v2=2,
            direct_v2=1,
            direct_vnone=1,
            refused_invalid=1,
            timed_out=1,
        )
        got: dict[Key, float | None] = {}
        with anyio.move_on_after(TIMEOUT):
            while True:
                page = values(prometheus_client.generate_latest(registry).decode())
                got = {key: page.get(key) for key in wanted}
                if got == wanted:
                    break
                await anyio.sleep(0.05)
        task_group.cancel_scope.cancel()
    assert got == wanted
    where = frozenset({"surface": "anyio", "listener": name}.items())
    page = values(prometheus_client.generate_latest(registry).decode())
    # Five handshakes accepted, each in one of the duration buckets.
    assert page["proxyproto_handshake_duration_seconds_count", where] == 5
    assert page["proxyproto_handshake_duration_seconds_bucket", where | {("le", "+Inf")}] == 5
    assert listener.statistics().accepted == 5


@pytest.mark.anyio
async def test_collector_counts_a_udp_socket() -> None:
    name = f"udp-{uuid.uuid4()}"
    config = pp.ProxyProtocolConfig(policy=pp.Policy.USE)
    header = pp.Header.proxy(
        ("203.0.113.9", 5353), ("198.51.100.10", 53), transport=pp.Transport.DGRAM
    )
    server_udp = await anyio.create_udp_socket(local_host="127.0.0.1", local_port=0)
    client = await anyio.create_udp_socket(local_host="127.0.0.1", local_port=0)
    port = server_udp.extra(anyio.abc.SocketAttribute.local_port)
    registry = prometheus_client.CollectorRegistry()
    registry.register(proxyproto.prometheus.ProxyProtocolCollector())
    async with pp.ProxiedUDPSocket(server_udp, config) as server, client:
        proxyproto.prometheus.track(server, name)
        for datagram in (header.to_bytes() + b"a", b"direct", INVALID, header.to_bytes() + b"b"):
            await client.sendto(datagram, "127.0.0.1", port)
        with anyio.fail_after(TIMEOUT):
            for _ in range(3):  # the invalid one is dropped on the way
                await server.receive()
    page = values(prometheus_client.generate_latest(registry).decode())
    where = {"surface": "udp", "listener": name}

    def value(metric: str, **labels: str) -> float:
        return page[metric, frozenset({**where, **labels}.items())]

    assert value("proxyproto_datagrams_received_total") == 4
    assert value("proxyproto_datagrams_delivered_total", mode="proxied") == 2
    assert value("proxyproto_datagrams_delivered_total", mode="direct") == 1
    assert value("proxyproto_datagrams_dropped_total", reason="invalid") == 1
    assert value("proxyproto_datagrams_dropped_total", reason="missing") == 0


def test_shared_samples_are_summed(tmp_path: Path) -> None:
    """What several processes wrote sums by listener (here: one process written twice, under
    two names, so the sum is twice its counts)."""
    mine = samples()
    SnapshotWriter(tmp_path).write()
    (tmp_path / "other.json").write_text((tmp_path / f"{os.getpid()}.json").read_text())
    (tmp_path / "broken.json").write_text("{")
    assert read_shared(tmp_path) == merge([mine, mine])


def test_relay_counts_are_summed_across_processes(tmp_path: Path) -> None:
    """The relay's counts by route (``--workers``: one file per process) sum by listener and
    route; a file written before they existed (no ``relay`` part) still reads."""
    counters = track_relay(RelayCounters("udp", "198.51.100.1:53 (test)"))
    counters.route("dns")[:] = [2, 100, 300, 4, 5]
    counters.drop("quic")
    counters.evicted = 3
    mine = samples()
    [entry] = [e for e in mine["relay"] if e["listener"] == "198.51.100.1:53 (test)"]
    older = {"tcp": mine["tcp"], "udp": mine["udp"]}
    summed = merge([mine, mine, older])  # type: ignore[list-item]
    [total] = [e for e in summed["relay"] if e["listener"] == entry["listener"]]
    assert total["routes"] == {"dns": [4, 200, 600, 8, 10]}
    assert (total["unrouted"], total["evicted"]) == ({"quic": 2}, 6)
    page = values(prometheus_client.generate_latest(registry_of()).decode())
    where = {"transport": "udp", "listener": entry["listener"]}

    def value(metric: str, **labels: str) -> float:
        return page[metric, frozenset({**where, **labels}.items())]

    assert value("proxyproto_relay_connections_total", route="dns") == 2
    assert value("proxyproto_relay_bytes_total", route="dns", direction="down") == 300
    assert value("proxyproto_relay_datagrams_total", route="dns", direction="up") == 4
    assert value("proxyproto_relay_unrouted_total", reason="quic") == 1
    assert value("proxyproto_relay_evicted_total") == 3


def registry_of() -> Any:
    registry = prometheus_client.CollectorRegistry()
    registry.register(proxyproto.prometheus.ProxyProtocolCollector())
    return registry


def test_track_refuses_other_objects() -> None:
    with pytest.raises(TypeError):
        proxyproto.prometheus.track(object(), "x")


# --- lower bounds: zero before the first connection, the fastest handshakes, in flight back to 0


def page_of(registry: Any) -> dict[Key, float]:
    return values(prometheus_client.generate_latest(registry).decode())


def local_registry() -> Any:
    registry = prometheus_client.CollectorRegistry()
    registry.register(proxyproto.prometheus.ProxyProtocolCollector())
    return registry


def buckets(page: dict[Key, float], where: dict[str, str]) -> dict[str, float]:
    """The duration histogram's cumulative buckets for ``where``, by ``le``."""
    found: dict[str, float] = {}
    for (name, labels), value in page.items():
        pairs = dict(labels)
        le = pairs.pop("le", None)
        if name == "proxyproto_handshake_duration_seconds_bucket" and pairs == where:
            assert le is not None
            found[le] = value
    return found


@pytest.mark.anyio
async def test_a_tracked_listener_starts_at_zero() -> None:
    # Every series is exported from the start, at 0: a rate() or an alert on a counter that has
    # not moved yet sees 0, not "no data".
    name = f"zero-{uuid.uuid4()}"
    inner = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with pp.ProxyProtocolListener(inner, pp.ProxyProtocolConfig()) as listener:
        proxyproto.prometheus.track(listener, name)
        page = page_of(local_registry())
    wanted = expected("anyio", name)
    assert {key: page.get(key) for key in wanted} == wanted
    where = {"surface": "anyio", "listener": name}
    histogram = buckets(page, where)
    assert len(histogram) == len(DURATION_BUCKETS) + 1
    assert set(histogram.values()) == {0}
    assert page["proxyproto_handshake_duration_seconds_count", frozenset(where.items())] == 0
    assert page["proxyproto_handshake_duration_seconds_sum", frozenset(where.items())] == 0


def test_the_fastest_handshakes_fall_in_the_first_bucket() -> None:
    # A header in the connection's first segment on loopback is handed over in tens of
    # microseconds: the first bucket (100 us) holds it, so the histogram tells the fast ones
    # apart from a balancer that sends its header late. Zero (a clock that did not move) and
    # the first bound itself count there too (Prometheus buckets are "le", less or equal).
    from proxyproto._handshake.engine import Counters, register

    name = f"fast-{uuid.uuid4()}"
    counters = register("anyio", Counters(), name)
    first = DURATION_BUCKETS[0]
    assert first <= 0.0001
    for duration in (0.0, 0.000_001, first):
        counters.accept(2, False, duration)
    counters.accept(2, False, first * 1.5)
    histogram = buckets(page_of(local_registry()), {"surface": "anyio", "listener": name})
    assert histogram[repr(first)] == 3
    assert histogram[repr(DURATION_BUCKETS[1])] == 4
    assert histogram["+Inf"] == 4


@pytest.mark.anyio
async def test_in_flight_rises_then_returns_to_zero() -> None:
    # One handshake under way (half a header), one that times out: the gauge counts them while
    # they last, and is back at 0 once each is over, whichever way it ended.
    name = f"flight-{uuid.uuid4()}"
    config = pp.ProxyProtocolConfig(header_timeout=1.0)
    inner = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    listener = pp.ProxyProtocolListener(inner, config)
    proxyproto.prometheus.track(listener, name)
    port = inner.extra(anyio.abc.SocketAttribute.local_port)
    registry = local_registry()
    gauge = (
        "proxyproto_handshakes_in_flight",
        frozenset({"surface": "anyio", "listener": name}.items()),
    )

    async def handle(stream: pp.ProxiedStream) -> None:
        async with stream:
            await stream.send(b"ok")

    async def until(count: int) -> None:
        with anyio.fail_after(TIMEOUT):
            while page_of(registry)[gauge] != count:
                await anyio.sleep(0.01)

    async with listener, anyio.create_task_group() as task_group:
        task_group.start_soon(listener.serve, handle, task_group)
        assert page_of(registry)[gauge] == 0
        finishing = await anyio.connect_tcp("127.0.0.1", port)
        silent = await anyio.connect_tcp("127.0.0.1", port)
        await finishing.send(V2[:10])
        await silent.send(V2[:10])
        await until(2)
        await finishing.send(V2[10:])
        assert await finishing.receive() == b"ok"
        await until(1)
        async with silent:  # its header_timeout runs out
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                await silent.receive()
        await until(0)
        await finishing.aclose()
        task_group.cancel_scope.cancel()
    page = page_of(registry)
    where = frozenset({"surface": "anyio", "listener": name}.items())
    assert page["proxyproto_handshakes_timed_out_total", where] == 1
    assert page[gauge] == 0


# --- proxyproto relay --metrics ----------------------------------------------------------------


class Running(SessionProcess):
    """A ``proxyproto`` command started with ``--metrics 127.0.0.1:0``: its ports."""

    def start(self) -> None:
        first = self.next_line()
        assert first.startswith("metrics on http://127.0.0.1:"), first
        self.metrics_port = int(first.rsplit(":", 1)[1].split("/")[0])
        super().start()


def running(tmp_path: Path, *args: str) -> contextlib.AbstractContextManager[Running]:
    return in_session(Running, tmp_path, *args, "--metrics", "127.0.0.1:0")


def closed_port() -> int:
    """A loopback port nothing listens on (the relay's target: every relayed client is closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


#: One connection each: what the client sends (``None``: it connects and resets), the count of
#: :func:`expected` it adds to, and whether the server answers it (HTTP 200) or closes it.
Traffic = list[tuple[bytes | None, str, bool]]


def check_metrics(tmp_path: Path, surface: str, args: list[str], traffic: Traffic) -> None:
    """Run ``proxyproto *args``, make the connections of ``traffic`` one after the other, and
    compare its ``/metrics`` with what they add up to."""
    with running(tmp_path, *args) as server:
        for data, _count, answered in traffic:
            answer = exchange(server.port, data or b"", reset=data is None)
            assert answer.startswith(b"HTTP/1.1 200") if answered else answer == b"", answer
        counts = collections.Counter(count for _data, count, _answered in traffic)
        # The bind address, as the relay and Hypercorn log it.
        wanted = expected(surface, f"127.0.0.1:{server.port}", **counts)
        assert settled(lambda: scrape(server.metrics_port), wanted) == wanted


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_relay_metrics(tmp_path: Path, backend: str) -> None:
    args = ["relay", "--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{closed_port()}"]
    args += ["--accept-proxy", "--header-timeout", "0.5", "--backend", backend]
    # Its target refuses every connection: the relay answers none.
    traffic: Traffic = [(V1, "proxied_v1", False)] * 2
    traffic += [(V2, "proxied_v2", False)] * 3 + [(LOCAL, "direct_v2", False)]
    traffic += [(INVALID, "refused_invalid", False)] * 2 + [(REQUEST, "refused_missing", False)]
    traffic += [(PARTIAL, "timed_out", False)]
    traffic += [(None, "refused_empty", False), (b"", "refused_empty", False)]
    check_metrics(tmp_path, "relay", args, traffic)


# --- proxyproto hypercorn --workers 2 --metrics -----------------------------------------------


@pytest.mark.parametrize("worker_class", ["asyncio", "trio"])
def test_hypercorn_workers_metrics_are_summed(tmp_path: Path, worker_class: str) -> None:
    pytest.importorskip("hypercorn")
    args = ["hypercorn", "asgi_client_app:app", "--bind", "127.0.0.1:0", "--workers", "2"]
    args += ["--worker-class", worker_class, "--trusted", "127.0.0.1", "--policy", "use"]
    args += ["--header-timeout", "0.5"]
    traffic: Traffic = [(V1 + REQUEST, "proxied_v1", True)] * 2
    traffic += [(V2 + REQUEST, "proxied_v2", True)] * 3 + [(LOCAL + REQUEST, "direct_v2", True)]
    traffic += [(REQUEST, "direct_vnone", True)] * 2 + [(INVALID, "refused_invalid", False)] * 2
    traffic += [(PARTIAL, "timed_out", False)]
    # Summed across the workers: each connection went to one of them.
    check_metrics(tmp_path, "hypercorn", args, traffic)


def test_metrics_address_in_use_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [*PROXYPROTO, "echo", "--listen", "127.0.0.1:0", "--metrics", f"127.0.0.1:{port}"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 1
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert f"cannot serve metrics on 127.0.0.1:{port}" in line


def test_metrics_without_prometheus_client_is_one_line(tmp_path: Path) -> None:
    command = without(
        "prometheus_client",
        "proxyproto",
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 1
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert "prometheus_client" in line
    assert "'.[prometheus]'" in line


# --- OpenTelemetry attributes ----------------------------------------------------------------


def test_opentelemetry_attributes() -> None:
    from proxyproto.opentelemetry import connection_attributes

    balancer = ("10.0.0.2", 40000)
    header = pp.Header.proxy(("2001:db8::7", 51234), ("2001:db8::10", 443))
    assert connection_attributes(header, balancer) == {
        "client.address": "2001:db8::7",
        "client.port": 51234,
        "server.address": "2001:db8::10",
        "server.port": 443,
        "network.peer.address": "10.0.0.2",
        "network.peer.port": 40000,
        "network.transport": "tcp",
        "network.type": "ipv6",
    }
    as_peer = {
        "client.address": "10.0.0.2",
        "client.port": 40000,
        "network.peer.address": "10.0.0.2",
        "network.peer.port": 40000,
    }
    assert connection_attributes(None, balancer) == as_peer
    assert connection_attributes(pp.Header.local(), balancer) == as_peer
    assert connection_attributes(header, balancer, use_header=False) == as_peer
    dgram = pp.Header.proxy(("192.0.2.1", 53), ("192.0.2.2", 53), transport=pp.Transport.DGRAM)
    assert connection_attributes(dgram, balancer)["network.transport"] == "udp"


def test_hypercorn_one_worker_in_process_metrics(tmp_path: Path) -> None:
    pytest.importorskip("hypercorn")
    args = ["hypercorn", "asgi_client_app:app", "--bind", "127.0.0.1:0", "--header-timeout", "5"]
    traffic: Traffic = [(V2 + REQUEST, "proxied_v2", True), (INVALID, "refused_invalid", False)]
    check_metrics(tmp_path, "hypercorn", args, traffic)


class FakeMeter:
    """What ``instrument()`` asks of a meter: its observable instruments, by name."""

    def __init__(self) -> None:
        self.callbacks: dict[str, list[Callable[[Any], Iterable[Any]]]] = {}

    def create_observable_counter(
        self, name: str, callbacks: list[Callable[[Any], Iterable[Any]]], **_: str
    ) -> None:
        self.callbacks[name] = callbacks

    create_observable_up_down_counter = create_observable_counter

    def observe(self, name: str, **attributes: str) -> float:
        from opentelemetry.metrics import CallbackOptions

        found = [
            observation.value
            for callback in self.callbacks[name]
            for observation in callback(CallbackOptions())
            if dict(observation.attributes or {}) == attributes
        ]
        assert len(found) == 1, (name, attributes, found)
        return float(found[0])


class FakeProvider:
    def __init__(self) -> None:
        self.meter = FakeMeter()

    def get_meter(self, *args: Any, **kwargs: Any) -> FakeMeter:
        return self.meter


def test_opentelemetry_instruments_read_the_counters() -> None:
    pytest.importorskip("opentelemetry.metrics")
    from proxyproto._handshake.engine import Counters, RefusalKind, register
    from proxyproto.opentelemetry import instrument

    name = f"otel-{uuid.uuid4()}"
    counters = register("anyio", Counters(), name)
    counters.accept(1, False, 0.001)
    counters.accept(2, True, 0.001)
    counters.rejected[RefusalKind.INVALID] += 2
    counters.rejected[RefusalKind.TIMEOUT] += 1
    provider = FakeProvider()
    instrument(provider)
    meter = provider.meter
    where = {"proxyproto.surface": "anyio", "proxyproto.listener": name}
    accepted = "proxyproto.connections.accepted"
    assert (
        meter.observe(
            accepted, **where, **{"proxyproto.mode": "proxied", "proxyproto.version": "1"}
        )
        == 1
    )
    assert (
        meter.observe(accepted, **where, **{"proxyproto.mode": "direct", "proxyproto.version": "2"})
        == 1
    )
    assert (
        meter.observe(
            accepted, **where, **{"proxyproto.mode": "proxied", "proxyproto.version": "2"}
        )
        == 0
    )
    refused = "proxyproto.connections.refused"
    assert meter.observe(refused, **where, **{"proxyproto.reason": "invalid"}) == 2
    assert meter.observe("proxyproto.handshakes.timed_out", **where) == 1
    assert meter.observe("proxyproto.handshakes.evicted", **where) == 0
    assert meter.observe("proxyproto.handshakes.in_flight", **where) == 0


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_uvicorn_metrics_are_labelled_with_the_listening_address(http: str) -> None:
    pytest.importorskip("uvicorn")
    import proxyproto.uvicorn as ppu
    from asgi_client_app import app
    from asgi_helpers import uvicorn_thread

    if http == "httptools" and ppu.ProxyProtocolHttpToolsProtocol is None:
        pytest.skip("httptools is not installed")
    protocol = ppu._protocol_class(http, pp.ProxyProtocolConfig(header_timeout=5))
    registry = local_registry()
    with uvicorn_thread(app, http=protocol) as ((host, port), _server, _thread):
        assert exchange(port, V2 + REQUEST).startswith(b"HTTP/1.1 200")
        assert exchange(port, INVALID) == b""
        # The socket it serves: Server.run(sockets=[...]) on a free port of 127.0.0.1.
        wanted = expected("uvicorn", f"{host}:{port}", proxied_v2=1, refused_invalid=1)
        assert settled(lambda: page_of(registry), wanted) == wanted
