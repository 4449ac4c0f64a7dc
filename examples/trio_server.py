"""A native trio server behind a load balancer: ``trio.serve_listeners`` with PROXY protocol.

The server starts on a free loopback port. One client connects and says nothing; meanwhile a
client plays the load balancer: it connects, sends a PROXY v2 header for the client
203.0.113.7:51234, then a line. The application answers with the address it sees through
``stream.socket.getpeername()``: the client's, not the balancer's. A client without a header is
refused (the default policy, REQUIRE).
"""

import logging
import sys

import trio

import proxyproto as pp
from proxyproto.trio import ProxiedStream, ProxyProtocolListener

# Refused connections are logged on the "proxyproto" logger, one line each.
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(message)s")

CLIENT = ("203.0.113.7", 51234)
DESTINATION = ("198.51.100.10", 443)


async def handle(stream: ProxiedStream) -> None:
    """The application: one line in, one line out. It sees the client, not the balancer."""
    client = stream.socket.getpeername()  # the header's source
    line = b""
    while not line.endswith(b"\n"):
        chunk = await stream.receive_some()
        if not chunk:
            return
        line += chunk
    await stream.send_all(
        f"{line.decode().strip()} from {client} via {stream.peer_address}\n".encode()
    )


async def run_server(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    config = pp.ProxyProtocolConfig(header_timeout=5)
    port = listeners[0].socket.getsockname()[1]
    task_status.started(port)
    await trio.serve_listeners(
        handle, [ProxyProtocolListener(listener, config) for listener in listeners]
    )


async def talk(port: int, data: bytes) -> bytes:
    """Play the load balancer (or, without a header, a client that reached the server directly)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    reply = b""
    async with stream:
        await stream.send_all(data)
        try:
            while chunk := await stream.receive_some():
                reply += chunk
        except trio.BrokenResourceError:
            pass  # a refused connection may be reset rather than closed
    return reply


async def main() -> None:
    header = pp.Header.proxy(CLIENT, DESTINATION)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(run_server)
            # A silent client holds a connection open; nobody else waits for it.
            silent = await trio.open_tcp_stream("127.0.0.1", port)
            with trio.fail_after(1):
                reply = await talk(port, header.to_bytes() + b"hello\n")
            print(f"serve_listeners(): {reply.decode().split(' via ')[0]}")
            assert reply.startswith(b"hello from ('203.0.113.7', 51234) via ('127.0.0.1', ")
            # No header: the default policy (REQUIRE) closes the connection unanswered.
            assert await talk(port, b"hello\n") == b""
            print("no header: refused")
            await silent.aclose()
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
