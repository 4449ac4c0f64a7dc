"""proxyproto.testing without pytest: an ASGI application on Hypercorn behind the PROXY protocol,
reached the three ways the kit offers, on asyncio and then on trio.

- an httpx client whose transport sends a PROXY header on each connection: "this request came
  from 203.0.113.9 through an AWS VPC endpoint";
- a fake balancer in front of the server, which sends its header a byte at a time (as a slow
  balancer might) and then relays a plain httpx client's bytes;
- a raw connection that sends a broken header, which the server refuses.
"""

import logging
import socket
import sys
from typing import Any

import anyio
import httpx
import sniffio
from hypercorn.config import Config

import proxyproto as pp
import proxyproto.hypercorn
from proxyproto.testing import AsyncProxyProtocolTransport, fake_balancer, open_connection

# The server logs each refused connection on the "proxyproto" logger, one line each.
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(message)s")
logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request

AWS = pp.Header.proxy(
    ("203.0.113.9", 40000),  # the client
    ("10.0.0.5", 443),  # the address it connected to
    tlvs=pp.TLVs(aws_vpce_id="vpce-0123456789abcdef0", authority="api.example"),
)


async def app(scope: Any, receive: Any, send: Any) -> None:
    """The application under test: says who the client is."""
    if scope["type"] == "lifespan":  # nothing to set up: complete each step
        while True:
            step = (await receive())["type"]  # lifespan.startup, then lifespan.shutdown
            await send({"type": f"{step}.complete"})
            if step == "lifespan.shutdown":
                return
    host, port = scope["client"]
    body = f"hello {host}:{port}".encode()
    length = (b"content-length", b"%d" % len(body))
    await send({"type": "http.response.start", "status": 200, "headers": [length]})
    await send({"type": "http.response.body", "body": body})


async def serve(sock: socket.socket, stop: anyio.Event) -> None:
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = config.errorlog = None
    await proxyproto.hypercorn.serve(app, config, shutdown_trigger=stop.wait)


async def main() -> None:
    backend = sniffio.current_async_library()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    host, port = sock.getsockname()
    stop = anyio.Event()
    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve, sock, stop)

            # 1. The transport: one header per connection the client opens.
            transport = AsyncProxyProtocolTransport(AWS)
            async with httpx.AsyncClient(transport=transport) as client:
                response = await client.get(f"http://{host}:{port}/")
            print(f"{backend}, through the transport: {response.text}")

            # 2. The fake balancer: the header a byte at a time, then the client's own bytes.
            async with (
                fake_balancer((host, port), AWS, byte_at_a_time=True) as balancer,
                httpx.AsyncClient() as client,
            ):
                response = await client.get(balancer.url)
            print(f"{backend}, through the balancer: {response.text}")

            # 3. A raw connection with a broken header: closed without an answer.
            request = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"
            broken = b"PROXY TCP4 203.0.113.9\r\n"
            async with await open_connection(host, port, broken, request) as stream:
                try:
                    answer = await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    answer = b""
            print(f"{backend}, a broken header: {'refused' if not answer else 'answered'}")
            stop.set()


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
    anyio.run(main, backend="trio")
