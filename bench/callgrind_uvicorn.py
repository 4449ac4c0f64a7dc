"""Server-side instructions per short connection, Uvicorn with proxyproto against plain Uvicorn.

Wall-clock figures are noisy on a shared machine; instruction counts are not. For each parser
(h11, httptools, zttp) and side (``pp``: ``proxyproto.uvicorn``'s class, ``plain``: Uvicorn's
own), a Uvicorn server runs under ``valgrind --tool=callgrind`` and a client in this process
makes N short connections one after the other (one request each, ``Connection: close``; the
proxyproto side sends a v2 PROXY header first, in the same segment), then the server is stopped
with SIGTERM. Two runs per parser and side, with ``--small`` and ``--large`` connections: the
difference of their totals over the difference of their counts is the cost of one connection,
without the interpreter's start and stop.

    python bench/callgrind_uvicorn.py [--http h11 --http zttp] [--small 100 --large 600]

``--mode keepalive``: requests on one connection instead (the header once).

Prints instructions per connection (or request) for each side and the ratio pp / plain;
``--keep DIR`` keeps the callgrind files (``callgrind_annotate`` reads them). Needs valgrind.
No assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _harness import (
    HOST,
    callgrind_total,
    connect_when_up,
    free_port,
    per_connection_counts,
    use_src,
    v2_header,
)

CLAIMED = ("127.0.0.9", 51234)
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
REQUEST_KA = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
PARSERS = ("h11", "httptools", "zttp")
CLASSES = {"h11": "H11", "httptools": "HttpTools", "zttp": "Zttp"}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """200 with the client's host as the body (bench_asgi.py's app)."""
    body = (scope.get("client") or ("-", 0))[0].encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


def run_server(http: str, side: str, port: int, module: str) -> None:
    use_src()
    import importlib

    import uvicorn

    cls: Any = http
    if side != "plain":
        cls = getattr(importlib.import_module(module), f"ProxyProtocol{CLASSES[http]}Protocol")
    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        http=cls,
        lifespan="off",
        access_log=False,
        log_level="warning",
        loop="none",
    )
    asyncio.run(uvicorn.Server(config).serve())


def request(port: int, header: bytes, connected: socket.socket | None = None) -> bytes:
    with connected or socket.create_connection((HOST, port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(header + REQUEST)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    if not data.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"bad response: {data[:60]!r}")
    return data


def keepalive(port: int, header: bytes, count: int) -> None:
    """``count`` requests one after the other on one connection (the header once)."""
    with socket.create_connection((HOST, port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(count):
            sock.sendall((header if i == 0 else b"") + REQUEST_KA)
            data = b""
            while not data.endswith(b"\r\n\r\n" + (CLAIMED[0] if header else HOST).encode()):
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("EOF in a keep-alive response")
                data += chunk


def measure(http: str, side: str, count: int, module: str, out: Path, mode: str = "short") -> int:
    """Total instructions of a server that served ``count`` connections (plus 20 warm-up), or
    with ``mode="keepalive"`` ``count`` requests on one connection."""
    port = free_port()
    command = [sys.executable, __file__, "_server", http, side, str(port), module]
    header = v2_header(CLAIMED, (HOST, port)) if side != "plain" else b""

    def drive(server: subprocess.Popen[bytes]) -> None:
        request(port, header, connect_when_up(port, server, f"{http} {side}"))
        if mode == "keepalive":
            keepalive(port, header, count)
        for _ in range(19 + (count if mode == "short" else 0)):
            body = request(port, header).rsplit(b"\r\n\r\n", 1)[1]
            expected = CLAIMED[0] if side != "plain" else HOST
            if body.decode() != expected:
                raise RuntimeError(f"{http} {side}: client {body!r}, expected {expected!r}")

    return callgrind_total(command, out, drive)


def main() -> int:
    if sys.argv[1:2] == ["_server"]:
        http, side, port, module = sys.argv[2:6]
        run_server(http, side, int(port), module)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--http", action="append", choices=PARSERS, help="repeat; default all")
    parser.add_argument("--side", action="append", choices=("pp", "plain"), help="default both")
    parser.add_argument("--small", type=int, default=100, help="connections, first run")
    parser.add_argument("--large", type=int, default=600, help="connections, second run")
    parser.add_argument(
        "--module", default="proxyproto.uvicorn", help="where the pp classes come from"
    )
    parser.add_argument(
        "--mode",
        choices=("short", "keepalive"),
        default="short",
        help="short: one request per connection; keepalive: requests on one connection",
    )
    parser.add_argument("--keep", metavar="DIR", help="keep the callgrind files there")
    args = parser.parse_args()
    directory = Path(args.keep or tempfile.mkdtemp(prefix="callgrind-uvicorn-"))
    directory.mkdir(parents=True, exist_ok=True)
    unit = "short connection" if args.mode == "short" else "keep-alive request"
    print(f"instructions per {unit} ({args.large} - {args.small} of them)")
    for http in args.http or PARSERS:
        if importlib.util.find_spec(http) is None:
            print(f"  {http:<10} skipped: not installed", flush=True)
            continue
        per_connection_counts(
            http,
            args.side or ("pp", "plain"),
            args.small,
            args.large,
            lambda side, n, http=http: measure(
                http, side, n, args.module, directory / f"{http}-{side}-{n}.out", args.mode
            ),
        )
    if not args.keep:
        for path in directory.iterdir():
            path.unlink()
        os.rmdir(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
