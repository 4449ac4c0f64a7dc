"""What the ASGI integration tests (and ``bench/bench_asgi.py``) share: the lifespan protocol, a
200 answer, Hypercorn in a task, Uvicorn in a thread, and reading HTTP/1.1 answers with a JSON
body from a plain socket."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio

if TYPE_CHECKING:  # imported by the benchmark before it has chosen which proxyproto to use
    from anyio.abc import ByteStream

    import proxyproto as pp


async def serve_lifespan(receive: Any, send: Any) -> None:
    """Answer the ASGI lifespan protocol until shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def send_ok(send: Any, body: bytes, content_type: bytes | None = b"application/json") -> None:
    """Answer an HTTP request: 200 with ``body``, its Content-Length and, unless ``None``, this
    Content-Type."""
    headers = [(b"content-length", str(len(body)).encode())]
    if content_type is not None:
        headers.insert(0, (b"content-type", content_type))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def hypercorn_task(
    app: Any,
    proxy: pp.ProxyProtocolConfig | None = None,
    *,
    certs: tuple[Path, Path] | None = None,
    stop: anyio.Event | None = None,
    host: str = "127.0.0.1",
    tls_extension: bool = False,
) -> AsyncIterator[int]:
    """``proxyproto.hypercorn.serve(app)`` on ``host`` (127.0.0.1 or ::1) in a task, under a
    15 s deadline: yields the port. The socket is bound here (so the port is known and
    connections queue before the server runs) and handed over as ``fd://N``;
    ``graceful_timeout`` is 1 s.

    Setting ``stop`` starts the shutdown early; it starts at the end of the block anyway.
    """
    from hypercorn.config import Config

    import proxyproto.hypercorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.bind((host, 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.graceful_timeout = 1
    config.accesslog = None
    if certs is not None:
        config.certfile, config.keyfile = (str(path) for path in certs)
    stop = stop or anyio.Event()
    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: proxyproto.hypercorn.serve(
                    cast(Any, app),
                    config,
                    proxy=proxy,
                    shutdown_trigger=stop.wait,
                    tls_extension=tls_extension,
                )
            )
            try:
                yield port
            finally:
                stop.set()


@contextmanager
def uvicorn_thread(
    app: Any, *, sock: socket.socket | None = None, **config: Any
) -> Iterator[tuple[tuple[str, int], Any, threading.Thread]]:
    """Uvicorn serving ``app`` on a free 127.0.0.1 port (or the bound ``sock``) in a thread, with
    ``config`` for ``uvicorn.Config``; yields the address, the server and the thread.

    On exit it asks the server to stop and fails if it has not within 10 s (then forces it).
    """
    import uvicorn

    if sock is None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(
            app, **{"lifespan": "off", "log_level": "warning", "proxy_headers": False, **config}
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped at startup"
            assert time.monotonic() < deadline, "uvicorn did not start within 10s"
            time.sleep(0.01)
        yield sock.getsockname()[:2], server, thread
    finally:
        server.should_exit = True
        thread.join(10)
        stopped = not thread.is_alive()
        if not stopped:
            server.force_exit = True
            thread.join(5)
        sock.close()
        assert stopped, "uvicorn did not stop within 10s"


def read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, dict[str, Any]]:
    """One HTTP/1.1 response (with Content-Length) from ``sock``: its status and JSON body.

    ``buffer`` keeps what arrived after it, for the next response on a keep-alive connection.
    """
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {bytes(buffer)!r}")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(
        int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length:")
    )
    buffer[:] = rest
    while len(buffer) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the middle of a response body")
        buffer += chunk
    body = bytes(buffer[:length])
    del buffer[:length]
    return status, json.loads(body)


async def receive_ok(stream: ByteStream, buffer: bytearray) -> dict[str, Any]:
    """One HTTP/1.1 response from ``stream``, which must be a 200 with a Content-Length: its JSON
    body. ``buffer`` keeps what arrived after it, as for :func:`read_response`."""
    while b"\r\n\r\n" not in buffer:
        buffer += await stream.receive()
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        rest += await stream.receive()
    buffer[:] = rest[length:]
    return json.loads(rest[:length])  # type: ignore[no-any-return]


def keep_alive_clients(address: tuple[str, int], requests: int) -> tuple[list[Any], list[Any]]:
    """``requests`` GETs one after another on one connection to ``address``, no PROXY header:
    this end's address and each answer's ``client``, both as JSON has them (lists).

    Through a proxy that sends the header, each ``client`` should be this end's address.
    """
    with socket.create_connection(address, timeout=20) as sock:
        me = list(sock.getsockname()[:2])
        buffer = bytearray()
        clients = []
        for _ in range(requests):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            status, body = read_response(sock, buffer)
            assert status == 200, body
            clients.append(body["client"])
    return me, clients
