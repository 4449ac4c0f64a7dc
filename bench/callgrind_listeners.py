"""Server-side instructions per short connection: the listeners against plain ones.

Wall-clock figures are noisy on a shared machine; instruction counts are not. Three surfaces:
``anyio-asyncio`` and ``anyio-trio`` (:class:`proxyproto.ProxyProtocolListener` against the
plain anyio listener, both served with ``serve()``) and ``trio`` (``proxyproto.trio`` against
trio's own listener, both under ``trio.serve_listeners``). The server runs under
``valgrind --tool=callgrind`` and a client in this process makes N short connections one after
the other, as ``bench_anyio.py``'s: a v2 PROXY header (the ``pp`` side only) and 100 bytes in
one segment, 100 bytes back, close. Two runs per surface and side, with ``--small`` and
``--large`` connections: the difference of their totals over the difference of their counts is
the cost of one connection, without the interpreter's start and stop.

    python bench/callgrind_listeners.py [--surface trio] [--small 100 --large 600]

Prints instructions per connection for each side and the ratio pp / plain; ``--keep DIR`` keeps
the callgrind files. Needs valgrind (and trio). No assertions.
"""

from __future__ import annotations

import argparse
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
SIZE = 100
SURFACES = ("anyio-asyncio", "anyio-trio", "trio")


def _handler(receive: str, send: str, count: int, done: Any) -> Any:
    """A handler that reads SIZE bytes with ``stream.<receive>()``, answers SIZE with
    ``stream.<send>()`` and closes; ``done()`` once ``count`` were served."""
    served = 0

    async def handler(stream: Any) -> None:
        nonlocal served
        async with stream:
            got = 0
            while got < SIZE:
                got += len(await getattr(stream, receive)(65536))
            await getattr(stream, send)(b"y" * SIZE)
        served += 1
        if served == count:
            done()

    return handler


def run_server(surface: str, side: str, port: int, count: int) -> None:
    """Serve ``count`` connections (each: read SIZE bytes, answer SIZE), then return."""
    use_src()
    if surface == "trio":
        _serve_native_trio(side, port, count)
        return
    import anyio

    import proxyproto

    async def main() -> None:
        done = anyio.Event()
        handler = _handler("receive", "send", count, done.set)
        inner = await anyio.create_tcp_listener(local_host=HOST, local_port=port)
        listener: Any = proxyproto.ProxyProtocolListener(inner) if side == "pp" else inner
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(listener.serve, handler)
            await done.wait()
            task_group.cancel_scope.cancel()

    anyio.run(main, backend=surface.removeprefix("anyio-"))


def _serve_native_trio(side: str, port: int, count: int) -> None:
    import trio

    import proxyproto.trio

    async def main() -> None:
        done = trio.Event()
        handler = _handler("receive_some", "send_all", count, done.set)
        (inner,) = await trio.open_tcp_listeners(port, host=HOST)
        listener: Any = proxyproto.trio.ProxyProtocolListener(inner) if side == "pp" else inner
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, handler, [listener])
            await done.wait()
            nursery.cancel_scope.cancel()

    trio.run(main)


def exchange(sock: socket.socket, header: bytes) -> None:
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(header + b"x" * SIZE)
        got = 0
        while got < SIZE:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"EOF after {got} bytes of the reply")
            got += len(chunk)


def measure(surface: str, side: str, count: int, out: Path) -> int:
    """Total instructions of a server that served ``count`` connections (plus 20 warm-up)."""
    port = free_port()
    header = v2_header(CLAIMED, (HOST, port)) if side == "pp" else b""
    command = [sys.executable, __file__, "_server", surface, side, str(port), str(count + 20)]

    def drive(server: subprocess.Popen[bytes]) -> None:
        exchange(connect_when_up(port, server, f"{surface} {side}"), header)
        for _ in range(count + 19):
            exchange(socket.create_connection((HOST, port), timeout=30), header)

    return callgrind_total(command, out, drive, stop=False)


def main() -> int:
    if sys.argv[1:2] == ["_server"]:
        surface, side, port, count = sys.argv[2:6]
        run_server(surface, side, int(port), int(count))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--surface", action="append", choices=SURFACES, help="default all")
    parser.add_argument("--small", type=int, default=100, help="connections, first run")
    parser.add_argument("--large", type=int, default=600, help="connections, second run")
    parser.add_argument("--keep", metavar="DIR", help="keep the callgrind files there")
    args = parser.parse_args()
    directory = Path(args.keep or tempfile.mkdtemp(prefix="callgrind-listeners-"))
    directory.mkdir(parents=True, exist_ok=True)
    print(f"server instructions per connection ({args.large} - {args.small} of them)")
    for surface in args.surface or SURFACES:
        per_connection_counts(
            surface,
            ("pp", "plain"),
            args.small,
            args.large,
            lambda side, n, surface=surface: measure(
                surface, side, n, directory / f"{surface}-{side}-{n}.out"
            ),
        )
    if not args.keep:
        for path in directory.iterdir():
            path.unlink()
        os.rmdir(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
