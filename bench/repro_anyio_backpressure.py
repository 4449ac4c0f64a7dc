"""A minimal reproduction, for anyio's issue tracker, of unbounded reading on asyncio.

Plain anyio, no proxyproto: an echo server whose handler does some work before its first read,
and a client that sends and never reads. On the asyncio backend the accepted stream's transport
is never paused while ``receive()`` always finds data queued, so the server buffers everything
the client sends; on trio the client's ``send()`` blocks after a few MiB.

    python bench/repro_anyio_backpressure.py asyncio   # pushed 1024 MiB; max RSS ~1 GB
    python bench/repro_anyio_backpressure.py trio      # pushed ~6 MiB; max RSS ~26 MB

proxyproto bounds its own streams (``proxyproto._adapters.backpressure``).
"""

from __future__ import annotations

import resource
import socket
import sys

import anyio
from anyio.abc import SocketAttribute, SocketStream

LIMIT = 1 << 30


def client(port: int, pushed: list[int]) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(2.0)  # a send blocked for 2 s: the server stopped taking bytes
        try:
            while pushed[0] < LIMIT:
                pushed[0] += sock.send(b"x" * 65536)
        except TimeoutError:
            pass


async def handler(stream: SocketStream) -> None:
    await anyio.sleep(0.1)  # some work before the first read: bytes are queued meanwhile
    async with stream:
        try:
            while True:  # echo; the client never reads, so send() blocks, and reading goes on
                await stream.send(await stream.receive())
        except (anyio.BrokenResourceError, anyio.EndOfStream):
            pass  # the client gave up


async def main(backend: str) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port, pushed = listener.extra(SocketAttribute.local_port), [0]
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handler)
        await anyio.to_thread.run_sync(client, port, pushed)
        tg.cancel_scope.cancel()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"{backend}: pushed {pushed[0] >> 20} MiB; max RSS {rss} MiB")


if __name__ == "__main__":
    backend = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    anyio.run(main, backend, backend=backend)
