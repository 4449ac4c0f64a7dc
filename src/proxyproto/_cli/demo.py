"""``proxyproto demo``: a PROXY-protocol server and a load balancer's connection, in one process.

A :class:`ProxyProtocolListener` serves on a free loopback port. A client plays the load balancer:
it connects, sends a v2 header with TLVs and a CRC32C for a made-up TLS client, then a request.
The server answers with what it recovered; the demo prints that beside what the client claimed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import SocketAttribute

from proxyproto._adapters.anyio import (
    ProxiedStream,
    ProxyAttribute,
    ProxyProtocolListener,
    connect_tcp,
)
from proxyproto._core.model import Header, SSLClient, SSLInfo, TLVs
from proxyproto._handshake.config import ProxyProtocolConfig
from proxyproto._handshake.policy import trusted_proxies

from .args import add_backend_option, add_command
from .output import fail

if TYPE_CHECKING:
    from .args import Subparsers

__all__ = ["add", "run_demo"]

CLIENT = ("203.0.113.7", 51234)
DESTINATION = ("198.51.100.10", 443)
REQUEST = b"GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n"


def _claimed_header() -> Header:
    ssl = SSLInfo(
        client=SSLClient.SSL | SSLClient.CERT_CONN | SSLClient.CERT_SESS,
        verify=0,
        version="TLSv1.3",
        cn="alice.example",
        cipher="TLS_AES_128_GCM_SHA256",
    )
    tlvs = TLVs(
        alpn=b"h2",
        authority="shop.example",
        unique_id=bytes.fromhex("5ca1ab1e0ddba11cafef00d5"),
        ssl=ssl,
        aws_vpce_id="vpce-08d2bf15fac5001c9",
    )
    return Header.proxy(CLIENT, DESTINATION, tlvs=tlvs)


def _address(address: object) -> str:
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address)


def _observe(stream: ProxiedStream, request: bytes) -> dict[str, str]:
    """What an application sees on an accepted stream."""
    header = stream.extra(ProxyAttribute.header)
    ssl = header.tlvs.ssl or SSLInfo()
    return {
        "remote_address": _address(stream.extra(SocketAttribute.remote_address)),
        "destination": _address(stream.extra(ProxyAttribute.destination)),
        "real peer (the proxy)": _address(stream.extra(ProxyAttribute.peer_address)),
        "ALPN": repr(header.tlvs.alpn),
        "AUTHORITY": str(header.tlvs.authority),
        "UNIQUE_ID": (header.tlvs.unique_id or b"").hex(),
        "SSL version": str(ssl.version),
        "SSL client CN": str(ssl.cn),
        "SSL verified cert": str(ssl.verified_cert),
        "AWS VPC endpoint": str(header.tlvs.aws_vpce_id),
        "CRC32C": "verified" if header.tlvs.crc32c is not None else "absent",
        "first bytes": repr(request[:16]),
    }


async def run_demo(say: Callable[[str], Any] = print) -> bool:
    """Run the demo; ``True`` when the server recovered everything the client claimed."""
    observed: dict[str, str] = {}
    done = anyio.Event()
    inner = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = inner.extra(SocketAttribute.local_port)
    # Only this machine may send a header: a forged one from elsewhere would be refused.
    config = ProxyProtocolConfig(policy=trusted_proxies(["127.0.0.1", "::1"]), header_timeout=5)
    listener = ProxyProtocolListener(inner, config)

    async def handle(stream: ProxiedStream) -> None:
        async with stream:
            request = b""
            while not request.endswith(b"\r\n\r\n"):
                request += await stream.receive()
            observed.update(_observe(stream, request))
            client = observed["remote_address"]
            await stream.send(b"HTTP/1.1 200 OK\r\n\r\nHello, " + client.encode() + b"\n")
        done.set()

    claimed = _claimed_header()
    with anyio.fail_after(10):
        async with listener, anyio.create_task_group() as task_group:
            task_group.start_soon(listener.serve, handle)
            say(f"A server with a ProxyProtocolListener is listening on 127.0.0.1:{port}.")
            say(
                f"A load balancer connects for the TLS client {_address(CLIENT)}, sends a "
                f"{len(claimed.to_bytes(crc32c=True))}-byte PROXY v2 header, then the request.\n"
            )
            async with await connect_tcp("127.0.0.1", port, header=claimed, crc32c=True) as stream:
                await stream.send(REQUEST)
                reply = b""
                while True:
                    try:
                        reply += await stream.receive()
                    except anyio.EndOfStream:
                        break
            await done.wait()
            task_group.cancel_scope.cancel()

    ssl = claimed.tlvs.ssl or SSLInfo()
    expected = {
        "remote_address": _address(CLIENT),
        "destination": _address(DESTINATION),
        "real peer (the proxy)": observed.get("real peer (the proxy)", "?"),
        "ALPN": repr(claimed.tlvs.alpn),
        "AUTHORITY": str(claimed.tlvs.authority),
        "UNIQUE_ID": (claimed.tlvs.unique_id or b"").hex(),
        "SSL version": str(ssl.version),
        "SSL client CN": str(ssl.cn),
        "SSL verified cert": "True",
        "AWS VPC endpoint": str(claimed.tlvs.aws_vpce_id),
        "CRC32C": "verified",
        "first bytes": repr(REQUEST[:16]),
    }
    rows = [("", "the client claimed", "the server recovered")]
    rows += [(name, value, observed.get(name, "(nothing)")) for name, value in expected.items()]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for index, (name, before, after) in enumerate(rows):
        mark = "" if index == 0 or before == after else "  <- DIFFERS"
        say(f"  {name:<{widths[0]}}  {before:<{widths[1]}}  {after:<{widths[2]}}{mark}".rstrip())
    body = reply.partition(b"\r\n\r\n")[2].decode().strip()
    say(f"\nThe server answered: {body!r}")
    ok = all(observed.get(name) == value for name, value in expected.items())
    stats = listener.statistics()
    say(
        f"Listener counters: {stats.accepted} accepted, {sum(stats.rejected.values())} refused, "
        f"{stats.timed_out} timed out."
    )
    return ok


def add(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "demo",
        _demo,
        "run a PROXY-protocol server and a balancer's connection to it",
        "Start a server with a ProxyProtocolListener on a free loopback port, connect to it\n"
        "as a load balancer would (a v2 header with TLVs and a CRC32C, then a request), and\n"
        "show what the server recovered beside what the balancer claimed.\n"
        "Exit status 0 when everything matches.",
        "examples:\n  proxyproto demo\n  proxyproto demo --backend trio",
    )
    add_backend_option(parser)


def _demo(args: argparse.Namespace) -> int:
    ok = anyio.run(run_demo, backend=args.backend)
    if not ok:
        return fail("demo: the server did not recover what the client claimed")
    print("\nNext: `proxyproto parse --help`, `proxyproto build --help`.")
    return 0
