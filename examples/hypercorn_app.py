"""Hypercorn behind a load balancer: ``proxyproto.hypercorn.serve`` on asyncio, then on trio.

An ASGI application answers with ``scope["client"]``. The server runs on a free loopback port;
a client plays the load balancer: it sends a PROXY v2 header for the client 203.0.113.7:51234,
then two requests on one keep-alive connection. Both see the client, not the balancer. A
request without a header is refused (the default policy, REQUIRE): closed, no response.
"""

import logging
import socket
import sys
from typing import Any

import anyio
import sniffio
from hypercorn.config import Config

import proxyproto as pp
import proxyproto.hypercorn

# Refused connections are logged on the "proxyproto" logger, one line each.
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(message)s")

CLIENT = ("203.0.113.7", 51234)
DESTINATION = ("198.51.100.10", 443)
REQUEST = b"GET / HTTP/1.1\r\nHost: example\r\nConnection: keep-alive\r\n\r\n"


async def app(scope: Any, receive: Any, send: Any) -> None:
    """The application: says who the client is."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = f"hello {scope['client'][0]}:{scope['client'][1]}".encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def run_server(sock: socket.socket, stop: anyio.Event) -> None:
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # or ["0.0.0.0:8000"]
    config.accesslog = None
    config.errorlog = None
    proxy = pp.ProxyProtocolConfig(policy=pp.trusted_proxies(["127.0.0.0/8", "10.0.0.0/8"]))
    await proxyproto.hypercorn.serve(app, config, proxy=proxy, shutdown_trigger=stop.wait)


async def get_twice(port: int) -> list[bytes]:
    """Play the load balancer: the header, then two requests on the same connection."""
    header = pp.Header.proxy(CLIENT, DESTINATION)
    bodies = []
    async with await pp.connect_tcp("127.0.0.1", port, header=header) as stream:
        for _ in range(2):
            await stream.send(REQUEST)
            response = b""
            while not response.endswith(b"hello 203.0.113.7:51234"):
                response += await stream.receive()
            bodies.append(response.partition(b"\r\n\r\n")[2])
    return bodies


async def refused(port: int) -> bool:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(REQUEST)
        try:
            await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return True
    return False


async def main() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    stop = anyio.Event()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_server, sock, stop)
            for body in await get_twice(port):
                print(f"{sniffio.current_async_library()}: {body.decode()}")
            if await refused(port):
                print("no header: refused")
            stop.set()


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
    anyio.run(main, backend="trio")
