"""A relay in the middle: receive PROXY headers, send them on to the next hop.

front proxy --PROXY v2--> relay --PROXY v2--> (another relay --PROXY v2-->) backend

The relay accepts proxied connections and opens one to the backend per client, sending
``header_for(stream)``: the header that describes the stream it accepted. For a proxied stream
that is the original client and the address it reached, so the backend sees the client, not the
relay, however many relays are chained.
"""

from collections.abc import Awaitable, Callable
from functools import partial

import anyio
from anyio.abc import ByteStream, SocketAttribute, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream

import proxyproto as pp

CLIENT = ("203.0.113.7", 51234)
DESTINATION = ("198.51.100.10", 443)


async def backend(stream: pp.ProxiedStream) -> None:
    """The application at the end of the chain."""
    async with stream:
        line = await BufferedByteReceiveStream(stream).receive_until(b"\n", 1024)
        client = stream.extra(SocketAttribute.remote_address)
        reached = stream.extra(pp.ProxyAttribute.destination)
        await stream.send(f"{line.decode()} from {client} to {reached}\n".encode())


async def pipe(source: ByteStream, sink: ByteStream, both: anyio.CancelScope) -> None:
    """Copy until EOF, then pass the EOF on (a half-close); a reset ends both directions."""
    try:
        async for chunk in source:
            await sink.send(chunk)
        await sink.send_eof()
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        both.cancel()


async def relay(backend_port: int, stream: pp.ProxiedStream) -> None:
    """The relay's handler: one connection to the backend per client, then copy both ways."""
    async with stream:
        header = pp.header_for(stream)  # the client and destination this stream was accepted for
        try:
            upstream = await pp.connect_tcp("127.0.0.1", backend_port, header=header)
        except OSError as error:
            # Handle what can go wrong here: an exception from a handler ends serve().
            print(f"backend unreachable: {error}")
            return
        async with upstream, anyio.create_task_group() as tg:
            tg.start_soon(pipe, stream, upstream, tg.cancel_scope)
            tg.start_soon(pipe, upstream, stream, tg.cancel_scope)


async def run_server(
    handler: Callable[[pp.ProxiedStream], Awaitable[None]],
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    listener = pp.ProxyProtocolListener(
        await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    )
    async with listener:
        task_status.started(listener.extra(SocketAttribute.local_port))
        await listener.serve(handler)


async def main() -> None:
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            backend_port = await tg.start(run_server, backend)
            second_port = await tg.start(run_server, partial(relay, backend_port))
            first_port = await tg.start(run_server, partial(relay, second_port))

            header = pp.Header.proxy(CLIENT, DESTINATION)
            for name, port in [("one relay", second_port), ("two relays", first_port)]:
                async with await pp.connect_tcp("127.0.0.1", port, header=header) as stream:
                    await stream.send(b"hello\n")
                    await stream.send_eof()
                    reply = b"".join([chunk async for chunk in stream])
                print(f"through {name}: {reply.decode().strip()}")
                assert reply == b"hello from ('203.0.113.7', 51234) to ('198.51.100.10', 443)\n"
            tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main)
