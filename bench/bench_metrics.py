"""What Prometheus metrics cost: connections per second through ``ProxyProtocolListener`` with
and without ``proxyproto.prometheus`` registered and scraped, and the engine's per-connection
counting (``Counters.accept``) in nanoseconds.

Run ``python bench/bench_metrics.py`` (``--seconds``, ``--rounds``, ``--backend``). A server
subprocess (one anyio event loop) serves ``plain`` (the listener alone) or ``exporter`` (the
listener tracked by the collector, ``/metrics`` served by prometheus_client's thread and scraped
by the client once a second) -- and with ``--baseline-src DIR``, ``before``: the plain listener
of another checkout (main's, before the engine counted versions and durations); a client
subprocess opens connections from threads (a v2 header
and 100 bytes, 100 bytes back) for ``--seconds``. Rounds interleave the modes; the
figures are medians and the ratio exporter / plain. It only prints: no timing is asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import timeit
import urllib.request
from collections.abc import Sequence
from pathlib import Path

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


def client(port: int, metrics_port: int, seconds: float, concurrency: int) -> None:
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
            time.sleep(1)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    if metrics_port:
        threads.append(threading.Thread(target=scraper))
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"cps": sum(done) / (time.monotonic() - started)}), flush=True)


def one_round(mode: str, args: argparse.Namespace) -> float:
    src = args.baseline_src if mode == "before" else str(SRC)
    serve_as = "plain" if mode == "before" else mode
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", serve_as, "--backend", args.backend, "--src", src],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        ports = json.loads(server.stdout.readline())
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--client",
                str(ports["port"]),
                str(ports["metrics_port"]),
                "--seconds",
                str(args.seconds),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=args.seconds + 60,
        )
        return float(json.loads(out.stdout)["cps"])
    finally:
        server.terminate()
        server.wait(10)


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
    parser.add_argument("--client", nargs=2, type=int, metavar=("PORT", "METRICS_PORT"))
    parser.add_argument("--backend", default="asyncio", choices=("asyncio", "trio"))
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
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
        client(*args.client, args.seconds, args.concurrency)
        return 0
    modes = ("before", "plain", "exporter") if args.baseline_src else ("plain", "exporter")
    results: dict[str, list[float]] = {mode: [] for mode in modes}
    rng = random.Random(args.seed)
    for _ in range(args.rounds):
        # A new order each round, so that no mode always runs right after another.
        for mode in rng.sample(modes, len(modes)):
            results[mode].append(one_round(mode, args))
    medians = {mode: statistics.median(results[mode]) for mode in modes}
    print(f"backend {args.backend}, {args.rounds} rounds of {args.seconds:g}s, interleaved")
    for mode in modes:
        print(f"  {mode:9} {medians[mode]:8.0f} conn/s  {[round(x) for x in results[mode]]}")
    print(f"  ratio exporter/plain: {medians['exporter'] / medians['plain']:.3f}")
    if args.baseline_src:
        print(f"  ratio plain/before:   {medians['plain'] / medians['before']:.3f}")
    old, new = counting_ns()
    print(f"  counting per accepted connection: {old:.0f} ns before, {new:.0f} ns with metrics")
    return 0


if __name__ == "__main__":
    sys.exit(main())
