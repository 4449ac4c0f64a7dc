"""What the balancer told us, in an ASGI app: ``scope["extensions"]["proxy_protocol"]``.

The application reads the AWS VPC endpoint id and the client certificate's CN from the PROXY
header's TLVs (what AWS's Network Load Balancer and HAProxy's ``send-proxy-v2-ssl-cn`` send),
and the real peer: the balancer. It is plain ASGI; under Starlette or FastAPI the same dict is
``request.scope["extensions"]["proxy_protocol"]`` (or ``websocket.scope[...]``). Served by
``proxyproto.hypercorn.serve`` here; ``proxyproto.uvicorn`` gives the same scope.
"""

import socket
from typing import Any

import anyio
from hypercorn.config import Config

import proxyproto as pp
import proxyproto.hypercorn

REQUEST = b"GET / HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n"


def who(scope: Any) -> str:
    """One line about the request, from the PROXY header (None on a direct connection)."""
    proxy_protocol = scope["extensions"]["proxy_protocol"]
    header: pp.Header | None = proxy_protocol["header"]
    balancer = proxy_protocol["peer_address"]  # (host, port), or a path for a UNIX socket
    if header is None:
        return f"direct from {scope['client']}"
    tlvs = header.tlvs
    cn = tlvs.ssl.cn if tlvs.ssl is not None and tlvs.ssl.verified_cert else None
    via = balancer[0] if isinstance(balancer, tuple) else balancer
    return f"client {header.source} via {via}, endpoint {tlvs.aws_vpce_id}, cn {cn}"


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return  # the lifespan: nothing to set up (returning at once is enough for Hypercorn)
    body = who(scope).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def main() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = config.errorlog = None
    stop = anyio.Event()
    tlvs = pp.TLVs(
        aws_vpce_id="vpce-0123456789abcdef0",
        ssl=pp.SSLInfo(client=pp.SSLClient.SSL | pp.SSLClient.CERT_CONN, verify=0, cn="alice"),
    )
    header = pp.Header.proxy(("203.0.113.7", 51234), ("198.51.100.10", 443), tlvs=tlvs)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: proxyproto.hypercorn.serve(app, config, shutdown_trigger=stop.wait))
        async with await pp.connect_tcp("127.0.0.1", port, header=header) as stream:
            await stream.send(REQUEST)
            response = b""
            try:
                while True:
                    response += await stream.receive()
            except anyio.EndOfStream:
                pass
        print(response.partition(b"\r\n\r\n")[2].decode())
        stop.set()


if __name__ == "__main__":
    anyio.run(main)
