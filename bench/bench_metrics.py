"""What Prometheus metrics cost: connections per second through ``ProxyProtocolListener`` with
and without ``proxyproto.prometheus`` registered and scraped, and the engine's per-connection
counting (``Counters.accept``) in nanoseconds.

Run ``python bench/bench_metrics.py`` (``--seconds``, ``--rounds``, ``--warmup``,
``--backend``). One server subprocess per mode (one anyio event loop each), all started at once
and kept up for the whole run: ``plain`` (the listener alone), ``exporter`` (the listener tracked
by the collector, ``/metrics`` served by prometheus_client's thread and scraped by the client
once a second while it is loaded) and, with ``--baseline-src DIR``, ``before`` (the plain
listener of another checkout). One client subprocess opens connections from threads (a v2
header and 100 bytes, 100 bytes back) to one server at a time, for a slice of ``--seconds``.

On a machine shared with other work the load changes from second to second, so the modes are
never compared across a long stretch: each round is one slice per mode, back to back, in a new
random order, and the ratio exporter / plain is taken *within* each round. It prints the
median of those ratios with their interquartile range and extremes (the spread: a ratio whose
IQR holds 1.0 is no measurable cost), and each mode's median connections per second. It only
prints: no timing is asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import subprocess
import sys
import threading
import time
import timeit
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _harness import Child, emit, interleaved, median, quartiles

SRC = Path(__file__).resolve().parents[1] / "src"
HOST = "127.0.0.1"
REQUEST = b"q" * 100
REPLY = b"r" * 100


def serve(mode: str, backend: str, src: str) -> None:
    sys.path.insert(0, src)
    import anyio

    import proxyproto as pp

    async def handle(stream: pp.ProxiedStream) -> None:
        async with stream:
            got = b""
            while len(got) < len(REQUEST):
                got += await stream.receive()
            await stream.send(REPLY)

    async def main() -> None:
        inner = await anyio.create_tcp_listener(local_host=HOST, local_port=0)
        listener = pp.ProxyProtocolListener(inner, pp.ProxyProtocolConfig())
        metrics_port = 0
        if mode == "exporter":
            import prometheus_client

            import proxyproto.prometheus

            proxyproto.prometheus.track(listener, "bench")
            registry = prometheus_client.CollectorRegistry()
            registry.register(proxyproto.prometheus.ProxyProtocolCollector())
            server, _ = prometheus_client.start_http_server(0, HOST, registry=registry)
            metrics_port = server.server_address[1]
        port = inner.extra(anyio.abc.SocketAttribute.local_port)
        print(json.dumps({"port": port, "metrics_port": metrics_port}), flush=True)
        async with listener:
            await listener.serve(handle)

    anyio.run(main, backend=backend)


def client(concurrency: int) -> None:
    """Answer each ``{"port", "metrics_port", "seconds"}`` line on stdin with the connections per
    second of :func:`one_slice`."""
    for line in sys.stdin:
        ask = json.loads(line)
        emit({"cps": one_slice(ask["port"], ask["metrics_port"], ask["seconds"], concurrency)})


def one_slice(port: int, metrics_port: int, seconds: float, concurrency: int) -> float:
    """Connections per second opened to ``port`` for ``seconds`` from ``concurrency`` threads,
    scraping ``metrics_port`` once a second meanwhile (if given)."""
    sys.path.insert(0, str(SRC))
    import proxyproto as pp

    header = pp.Header.proxy(("203.0.113.7", 51234), (HOST, port)).to_bytes()
    done = [0] * concurrency
    end = time.monotonic() + seconds

    def worker(i: int) -> None:
        while time.monotonic() < end:
            with socket.create_connection((HOST, port)) as sock:
                sock.sendall(header + REQUEST)
                got = b""
                while len(got) < len(REPLY):
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise RuntimeError("closed early")
                    got += chunk
            done[i] += 1

    def scraper() -> None:
        while time.monotonic() < end:
            with urllib.request.urlopen(f"http://{HOST}:{metrics_port}/metrics") as answer:
                answer.read()
            # Not past the slice's end: the slice lasts as long as its workers.
            time.sleep(max(0.0, min(1.0, end - time.monotonic())))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    if metrics_port:
        threads.append(threading.Thread(target=scraper))
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.monotonic() - started)


def start_server(mode: str, args: argparse.Namespace) -> tuple[subprocess.Popen[str], Any]:
    """The server of ``mode`` in a subprocess, and its ports."""
    src = args.baseline_src if mode == "before" else str(SRC)
    serve_as = "plain" if mode == "before" else mode
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", serve_as, "--backend", args.backend, "--src", src],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    return server, json.loads(server.stdout.readline())


def spread(ratios: Sequence[float]) -> str:
    """A ratio's median, interquartile range and extremes, as printed."""
    low, high = quartiles(ratios)
    return (
        f"median {median(ratios):.3f}, IQR {low:.3f}-{high:.3f}, "
        f"min-max {min(ratios):.3f}-{max(ratios):.3f} ({len(ratios)} rounds)"
    )


def counting_ns() -> tuple[float, float]:
    """ns per accepted connection: the counting before (two increments) and now (accept())."""
    sys.path.insert(0, str(SRC))
    from proxyproto._handshake.engine import Counters

    counters = Counters()

    def before() -> None:
        counters.accepted += 1
        if False:
            counters.direct += 1

    def now() -> None:
        counters.accept(2, False, 0.00004)

    number = 1_000_000
    old = min(timeit.repeat(before, number=number, repeat=5)) / number * 1e9
    new = min(timeit.repeat(now, number=number, repeat=5)) / number * 1e9
    return old, new


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=("plain", "exporter"))
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="asyncio", choices=("asyncio", "trio"))
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one slice")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--warmup", type=int, default=2, help="rounds run first, not counted")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1, help="the order of the modes per round")
    parser.add_argument("--src", default=str(SRC), help=argparse.SUPPRESS)
    parser.add_argument(
        "--baseline-src",
        metavar="DIR",
        help="also serve 'before': the plain listener from another checkout's src (e.g. main's,"
        " before the engine counted versions and durations)",
    )
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.backend, args.src)
        return 0
    if args.client:
        client(args.concurrency)
        return 0
    modes = ("before", "plain", "exporter") if args.baseline_src else ("plain", "exporter")
    results: dict[str, list[float]] = {mode: [] for mode in modes}
    # Every server runs for the whole benchmark, idle but for its own slices: a round is one
    # slice per mode, back to back in a random order, so that both sides of a ratio meet the
    # same load from the rest of the machine, and a round's ratio is taken within the round.
    servers = {mode: start_server(mode, args) for mode in modes}
    load = Child(
        __file__,
        ["--client", "--concurrency", str(args.concurrency)],
        timeout=args.seconds + 60,
    )
    try:
        round_results: dict[str, float] = {}
        rounds: list[dict[str, float]] = []
        for measured, mode in interleaved(
            random.Random(args.seed), modes, args.warmup, args.rounds
        ):
            ports = servers[mode][1]
            ask = {"port": ports["port"], "metrics_port": ports["metrics_port"]}
            cps = float(load.call({**ask, "seconds": args.seconds})["cps"])
            if measured:
                results[mode].append(cps)
                round_results[mode] = cps
                if len(round_results) == len(modes):
                    rounds.append(round_results)
                    round_results = {}
    finally:
        load.close()
        for server, _ in servers.values():
            server.terminate()
            server.wait(10)
    print(
        f"backend {args.backend}, {args.rounds} rounds (after {args.warmup} warm-up) of one "
        f"{args.seconds:g}s slice per mode, in a random order each round"
    )
    for mode in modes:
        low, high = quartiles(results[mode])
        print(f"  {mode:9} median {median(results[mode]):8.0f} conn/s (IQR {low:.0f}-{high:.0f})")
    print(
        "  ratio exporter/plain, per round: " + spread([r["exporter"] / r["plain"] for r in rounds])
    )
    if args.baseline_src:
        print(
            "  ratio plain/before, per round:   "
            + spread([r["plain"] / r["before"] for r in rounds])
        )
    old, new = counting_ns()
    print(f"  counting per accepted connection: {old:.0f} ns before, {new:.0f} ns with metrics")
    return 0


if __name__ == "__main__":
    sys.exit(main())
