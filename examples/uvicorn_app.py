"""Uvicorn behind a load balancer that speaks the PROXY protocol: ``scope["client"]`` is the client.

Run it: ``python examples/uvicorn_app.py``. It serves the app on loopback with
:func:`proxyproto.uvicorn.run`, connects to it the way HAProxy's ``send-proxy-v2`` would (a
header, then two requests on one connection), shows a headerless request refused, and stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

import proxyproto as pp
import proxyproto.uvicorn


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Any ASGI app: this one answers with the client's address."""
    host, port = scope["client"]
    body = f"hello {host} port {port}".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def serve(port: int) -> None:
    """What a deployment runs: only the balancer (here 127.0.0.1) may, and must, send a header."""
    proxyproto.uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        proxy=pp.ProxyProtocolConfig(policy=pp.trusted_proxies(["127.0.0.1"])),
        proxy_headers=False,  # the PROXY header says who the client is, not X-Forwarded-For
        log_level="warning",
    )


REQUEST = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"


def body_of_response(sock: socket.socket) -> str:
    """Read one response (head, then Content-Length bytes of body) and return its body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().partition(b"content-length:")[2].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(4096)
    return body.decode()


def act_as_balancer(port: int) -> None:
    header = pp.Header.proxy(("203.0.113.7", 51234), ("198.51.100.10", 443)).to_bytes()
    deadline = time.monotonic() + 10
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            break
        except ConnectionRefusedError:  # not listening yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    with sock:
        sock.sendall(header + REQUEST)  # header and request in one segment
        print("first request:", body_of_response(sock))
        sock.sendall(REQUEST)
        print("same connection:", body_of_response(sock))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(REQUEST)
        print("no header:", "refused" if sock.recv(4096) == b"" else "served")
    os.kill(os.getpid(), signal.SIGINT)  # stop Uvicorn as Ctrl-C would


def main() -> None:
    logging.basicConfig(stream=sys.stdout, format="%(name)s: %(message)s")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    threading.Thread(target=act_as_balancer, args=(port,), daemon=True).start()
    # Uvicorn re-raises the SIGINT it handled once it has stopped.
    with contextlib.suppress(KeyboardInterrupt):
        serve(port)
    print("Uvicorn stopped")


if __name__ == "__main__":
    main()
