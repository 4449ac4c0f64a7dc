"""An oversubscribed slowloris flood against ``ProxyProtocolListener``, with prompt clients.

``python bench/bench_slowloris.py [--backend asyncio|trio] [--slow 640] [--slots 64]
[--prompt 50] [--seconds 20]``: a server process (one ``ProxyProtocolListener`` on 127.0.0.1,
``max_pending_handshakes=--slots``, logging to a file), a flood process that keeps ``--slow``
connections open, each sending a header's first 10 bytes and nothing more, reconnecting as soon
as the server closes it, and, once the flood is in, ``--prompt`` clients one after another whose
header comes in two segments 5 ms apart. It prints how many prompt clients were served, their
latency (median, p90, max), the server's CPU time, its counters and the size of its log. It
makes no assertions and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# v2 PROXY TCP4 203.0.113.7:54202 -> 198.51.100.7:443: signature, version/command, family,
# length, addresses, ports.
HEADER = bytes.fromhex("0d0a0d0a000d0a515549540a 21 11 000c cb007107 c6336407 d3ba 01bb")
REQUEST = b"GET / HTTP/1.1\r\n\r\n"


def server(backend: str, slots: int, log: str) -> None:
    import logging

    import anyio

    import proxyproto as pp

    logging.basicConfig(filename=log, level=logging.INFO)

    async def handle(stream: pp.ProxiedStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(b"ok")

    async def main() -> None:
        inner = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        listener = pp.ProxyProtocolListener(
            inner, pp.ProxyProtocolConfig(max_pending_handshakes=slots)
        )
        print(json.dumps({"port": listener.extra(anyio.abc.SocketAttribute.local_port)}))
        sys.stdout.flush()
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)
            await anyio.to_thread.run_sync(sys.stdin.readline)
            stats = listener.statistics()
            usage = os.times()
            print(
                json.dumps(
                    {
                        "cpu_s": usage.user + usage.system,
                        "accepted": stats.accepted,
                        "evicted": stats.evicted,
                        "timed_out": stats.timed_out,
                        "rejected": dict(stats.rejected),
                    }
                )
            )
            sys.stdout.flush()
            tg.cancel_scope.cancel()

    anyio.run(main, backend=backend)


def flood(port: int, slow: int) -> None:
    import asyncio

    async def one() -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(HEADER[:10])
                await reader.read()
                writer.close()
            except OSError:
                await asyncio.sleep(0.01)

    async def main() -> None:
        tasks = [asyncio.create_task(one()) for _ in range(slow)]
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        for task in tasks:
            task.cancel()

    asyncio.run(main())


def prompt_client(port: int) -> float | None:
    start = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(HEADER[:10])
            time.sleep(0.005)
            sock.sendall(HEADER[10:] + REQUEST)
            if sock.recv(16) != b"ok":
                return None
    except OSError:
        return None
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="asyncio")
    parser.add_argument("--slow", type=int, default=640)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--prompt", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "server":
        server(args.backend, args.slots, args.log)
        return 0
    if args.role == "flood":
        flood(args.port, args.slow)
        return 0
    me = [sys.executable, __file__, "--backend", args.backend]
    with tempfile.TemporaryDirectory() as tmp:
        log = str(Path(tmp) / "server.log")
        srv = subprocess.Popen(
            [*me, "--role", "server", "--slots", str(args.slots), "--log", log],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert srv.stdout is not None
        assert srv.stdin is not None
        port = json.loads(srv.stdout.readline())["port"]
        fl = subprocess.Popen(
            [*me, "--role", "flood", "--port", str(port), "--slow", str(args.slow)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert fl.stdout is not None
        assert fl.stdin is not None
        fl.stdout.readline()
        time.sleep(2)  # the flood is in and older than eviction_age
        latencies: list[float] = []
        served = 0
        deadline = time.monotonic() + args.seconds
        for _ in range(args.prompt):
            latency = prompt_client(port)
            if latency is not None:
                served += 1
                latencies.append(latency)
            time.sleep(max(0.0, min(0.1, deadline - time.monotonic())))
        fl.stdin.write("\n")
        fl.stdin.flush()
        fl.wait(30)
        srv.stdin.write("\n")
        srv.stdin.flush()
        result = json.loads(srv.stdout.readline())
        srv.wait(30)
        log_bytes = os.path.getsize(log) if os.path.exists(log) else 0
    latencies.sort()
    p90 = latencies[max(0, int(0.9 * len(latencies)) - 1)] if latencies else float("nan")
    print(
        f"{args.backend}: {args.slow} slow senders, {args.slots} slots: "
        f"{served}/{args.prompt} prompt clients served; latency ms median "
        f"{1000 * statistics.median(latencies) if latencies else float('nan'):.1f}, "
        f"p90 {1000 * p90:.1f}, max {1000 * max(latencies, default=float('nan')):.1f}; "
        f"server CPU {result['cpu_s']:.1f} s; evicted {result['evicted']}, "
        f"timed out {result['timed_out']}, rejected {result['rejected']}; "
        f"log {log_bytes / 1024:.1f} KiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
