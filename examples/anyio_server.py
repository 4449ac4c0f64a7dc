"""A server behind a load balancer, three ways: ``serve()``, ``ready_streams()`` and ``wrap()``.

Each server starts on a free loopback port. A client plays the load balancer: it connects, sends a
PROXY v2 header for the client 203.0.113.7:51234, then a line. The application answers with the
address it sees through ``SocketAttribute.remote_address``: the client's, not the balancer's.
"""

import logging
import sys

import anyio
from anyio.abc import ByteStream, SocketAttribute, SocketStream, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream

import proxyproto as pp

# Refused connections are logged on the "proxyproto" logger, one line each.
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(message)s")

CLIENT = ("203.0.113.7", 51234)
DESTINATION = ("198.51.100.10", 443)


async def respond(stream: pp.ProxiedStream) -> None:
    """The application: one line in, one line out. It sees the client, not the balancer."""
    client = stream.extra(SocketAttribute.remote_address)  # the header's source
    reached = stream.extra(pp.ProxyAttribute.destination)  # where the client connected to
    # The socket itself still shows the balancer: never ask it, ask remote_address.
    assert stream.extra(SocketAttribute.raw_socket).getpeername() != client
    line = await BufferedByteReceiveStream(stream).receive_until(b"\n", 1024)
    await stream.send(f"{line.decode()} from {client} via {reached}\n".encode())


async def handle(stream: pp.ProxiedStream) -> None:
    """What the server calls for each connection. An exception that escapes a handler ends
    serve() and every other connection with it, so one connection's failure is handled here."""
    client = stream.extra(SocketAttribute.remote_address)
    async with stream:
        try:
            await respond(stream)
        except (anyio.BrokenResourceError, anyio.IncompleteRead, anyio.DelimiterNotFound) as error:
            # The client went away or misbehaved: its own business, no traceback.
            print(f"connection from {client} failed: {type(error).__name__}")
        except Exception:
            logging.exception("bug while serving %s", client)


# 1. The usual way: wrap the listener, then serve() calls handle() with each ready stream.
async def run_server(*, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
    listener = pp.ProxyProtocolListener(
        await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    )
    async with listener:
        task_status.started(listener.extra(SocketAttribute.local_port))
        await listener.serve(handle)


# 2. An accept loop of your own: ready_streams() yields streams whose handshake is over.
async def run_accept_loop(*, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
    listener = pp.ProxyProtocolListener(
        await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    )
    async with listener, listener.ready_streams() as streams, anyio.create_task_group() as tg:
        task_status.started(listener.extra(SocketAttribute.local_port))
        async for stream in streams:
            tg.start_soon(handle, stream)


# 3. One connection at a time, for servers that accept connections themselves.
async def handle_connection(transport: SocketStream) -> None:
    try:
        stream = await pp.ProxiedStream.wrap(transport)
    except (pp.ProxyProtocolError, TimeoutError) as error:
        await anyio.aclose_forcefully(transport)  # wrap() leaves closing to you
        print(f"refused: {error}")
        return
    await handle(stream)


async def run_plain_listener(*, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
    async with await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0) as listener:
        task_status.started(listener.extra(SocketAttribute.local_port))
        await listener.serve(handle_connection)


async def talk(port: int, header: pp.Header | None, line: bytes = b"hello\n") -> bytes:
    """Play the load balancer (or, without a header, a client that reached the server directly)."""
    stream: ByteStream
    if header is None:
        stream = await anyio.connect_tcp("127.0.0.1", port)
    else:
        stream = await pp.connect_tcp("127.0.0.1", port, header=header)
    reply = b""
    async with stream:
        await stream.send(line)
        await stream.send_eof()
        try:
            async for chunk in stream:
                reply += chunk
        except anyio.BrokenResourceError:
            pass  # a refused connection may be reset rather than closed
    return reply


async def main() -> None:
    header = pp.Header.proxy(CLIENT, DESTINATION)
    expected = b"hello from ('203.0.113.7', 51234) via ('198.51.100.10', 443)\n"
    with anyio.fail_after(10):
        for name, server in [
            ("serve()", run_server),
            ("ready_streams()", run_accept_loop),
            ("wrap()", run_plain_listener),
        ]:
            async with anyio.create_task_group() as tg:
                port = await tg.start(server)
                # A client that hangs up mid-line: its handler fails, the server carries on.
                assert await talk(port, header, b"hel") == b""
                reply = await talk(port, header)
                print(f"{name}: {reply.decode().strip()}")
                assert reply == expected, reply
                # No header: the default policy (REQUIRE) closes the connection unanswered.
                assert await talk(port, None) == b""
                tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main)
