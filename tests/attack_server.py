"""``python tests/attack_server.py KIND NOFILE [CERT KEY]``: a server under a descriptor limit.

The child process of the attack tests (``test_attacks.py``) and benchmarks
(``bench/bench_attacks.py``). It lowers its own ``RLIMIT_NOFILE`` to ``NOFILE`` (0: leave it),
logs the ``proxyproto`` and ``asyncio`` loggers to stderr, and serves on 127.0.0.1, printing
``listening on 127.0.0.1:PORT`` once it accepts:

- ``anyio-asyncio``, ``anyio-trio``: a :class:`proxyproto.ProxyProtocolListener` on that anyio
  backend; ``trio``: :mod:`proxyproto.trio` under :func:`trio.serve_listeners`. Each connection
  gets ``hello CLIENT\\n`` once its header is read, then everything it sends echoed back.
- ``plain-asyncio``, ``plain-trio``: the same echo on a plain anyio listener (no PROXY header),
  beside which the benchmarks put ours.
- ``hypercorn-tls``, ``hypercorn``: :func:`proxyproto.hypercorn.serve` on asyncio, with TLS
  (``CERT`` and ``KEY`` are PEM files) or without; ``uvicorn``: :func:`proxyproto.uvicorn.run`.
  Each answers every request ``200 ok``.

Headers may take a minute (``header_timeout=60``), so that idle connections stay open as long as
a test holds them; ``ATTACK_HEADER_TIMEOUT`` and ``ATTACK_MAX_PENDING`` in the environment set
``header_timeout`` and ``max_pending_handshakes`` instead (the flood benchmark's server).
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import sys
from typing import Any, cast

from asgi_helpers import send_ok, serve_lifespan

KIND, NOFILE = sys.argv[1], int(sys.argv[2])
HOST = "127.0.0.1"


def limit_descriptors(nofile: int) -> None:
    if nofile:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    await send_ok(send, b"ok", None)


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
    import proxyproto as pp

    config = pp.ProxyProtocolConfig(
        header_timeout=float(os.environ.get("ATTACK_HEADER_TIMEOUT", 60.0)),
        max_pending_handshakes=int(os.environ.get("ATTACK_MAX_PENDING", 1024)),
    )
    if KIND.partition("-")[0] in ("anyio", "plain"):
        import anyio
        from anyio.abc import SocketAttribute

        async def echo(stream: Any) -> None:
            async with stream:
                client = stream.extra(SocketAttribute.remote_address)
                try:
                    await stream.send(f"hello {client}\n".encode())
                    while True:
                        await stream.send(await stream.receive())
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    pass

        async def serve_anyio() -> None:
            inner = await anyio.create_tcp_listener(local_host=HOST, local_port=0)
            port = inner.extra(SocketAttribute.local_port)
            listener: Any = (
                inner if KIND.startswith("plain") else pp.ProxyProtocolListener(inner, config)
            )
            async with listener:
                print(f"listening on {HOST}:{port}", flush=True)
                await listener.serve(echo)

        anyio.run(serve_anyio, backend=KIND.rpartition("-")[2])
    elif KIND == "trio":
        import trio

        import proxyproto.trio as pp_trio

        async def echo_trio(stream: pp_trio.ProxiedStream) -> None:
            async with stream:
                client = stream.socket.getpeername()
                try:
                    await stream.send_all(f"hello {client}\n".encode())
                    while data := await stream.receive_some():
                        await stream.send_all(data)
                except (trio.BrokenResourceError, OSError):
                    pass

        async def serve_trio() -> None:
            (inner,) = await trio.open_tcp_listeners(0, host=HOST)
            port = inner.socket.getsockname()[1]
            print(f"listening on {HOST}:{port}", flush=True)
            await trio.serve_listeners(echo_trio, [pp_trio.ProxyProtocolListener(inner, config)])

        trio.run(serve_trio)
    elif KIND in ("hypercorn", "hypercorn-tls"):
        import asyncio

        from hypercorn.config import Config

        import proxyproto.hypercorn

        port = free_port()
        hyper = Config()
        hyper.bind = [f"{HOST}:{port}"]
        hyper.accesslog = None
        if KIND == "hypercorn-tls":
            hyper.certfile, hyper.keyfile = sys.argv[3], sys.argv[4]

        async def serve_hypercorn() -> None:
            serving = proxyproto.hypercorn.serve(cast(Any, app), hyper, proxy=config)
            task = asyncio.ensure_future(serving)
            await asyncio.to_thread(wait_listening, port)
            print(f"listening on {HOST}:{port}", flush=True)
            await task

        asyncio.run(serve_hypercorn())
    elif KIND == "uvicorn":
        import threading

        import proxyproto.uvicorn

        port = free_port()

        def announce() -> None:
            wait_listening(port)
            print(f"listening on {HOST}:{port}", flush=True)

        threading.Thread(target=announce, daemon=True).start()
        proxyproto.uvicorn.run(
            app, proxy=config, host=HOST, port=port, log_level="warning", timeout_keep_alive=60
        )
    else:
        raise SystemExit(f"unknown kind {KIND!r}")


def wait_listening(port: int) -> None:
    """Until a connection to ``port`` is accepted by the kernel (the server has bound it)."""
    import time

    while True:
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)


if __name__ == "__main__":
    limit_descriptors(NOFILE)
    main()
