"""What the ASGI integration tests share: the lifespan protocol, and Uvicorn in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


async def serve_lifespan(receive: Any, send: Any) -> None:
    """Answer the ASGI lifespan protocol until shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


@contextmanager
def uvicorn_thread(
    app: Any, **config: Any
) -> Iterator[tuple[tuple[str, int], Any, threading.Thread]]:
    """Uvicorn serving ``app`` on a free 127.0.0.1 port in a thread, with ``config`` for
    ``uvicorn.Config``; yields the address, the server and the thread.

    On exit it asks the server to stop and fails if it has not within 10 s (then forces it).
    """
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="off", log_level="warning", proxy_headers=False, **config)
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
