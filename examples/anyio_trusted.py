"""Trust only your proxies, and check what they say: ``trusted_proxies()`` and a validator.

The proxy here is 127.0.0.1; a stranger connects from 127.0.0.2 (on Linux all of 127.0.0.0/8 is
loopback). The proxy terminates TLS and reports the client's certificate in the SSL TLV; the
validator lets a connection in only when that certificate was presented *and* verified.
"""

import logging
import sys

import anyio
from anyio.abc import SocketAttribute, TaskStatus

import proxyproto as pp

# One line per refused connection: WARNING for a forged or refused header.
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(message)s")

PROXY = "127.0.0.1"  # in production: your balancers' addresses or subnets
STRANGER = "127.0.0.2"
CLIENT = ("203.0.113.7", 51234)
DESTINATION = ("198.51.100.10", 443)


def require_client_certificate(header: pp.Header, peer: pp.PeerAddress) -> bool:
    """Accept a client only if the proxy verified its TLS client certificate."""
    if header.command is pp.Command.LOCAL:
        return True  # the proxy's own health check: no client, no certificate
    ssl = header.tlvs.ssl
    if ssl is None or not ssl.verified_cert:  # not ssl.verify == 0 alone: see SSLInfo
        raise pp.HeaderRejected("no verified client certificate")
    return True


config = pp.ProxyProtocolConfig(
    # A header is required from the proxy; from anyone else, a header is refused (REJECT).
    policy=pp.trusted_proxies([PROXY], otherwise=pp.Policy.REJECT),
    validator=require_client_certificate,
    header_timeout=2,
)


async def handle(stream: pp.ProxiedStream) -> None:
    async with stream:
        header = stream.extra(pp.ProxyAttribute.header)
        client = stream.extra(SocketAttribute.remote_address)
        cn = header.tlvs.ssl.cn if header.tlvs.ssl else None
        await stream.send(f"{header.command.name} {client} cn={cn}\n".encode())


async def run_server(*, task_status: TaskStatus[pp.ProxyProtocolListener]) -> None:
    listener = pp.ProxyProtocolListener(
        await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0), config
    )
    async with listener:
        task_status.started(listener)
        await listener.serve(handle)


async def connect(port: int, header: pp.Header, *, local_host: str = PROXY) -> bytes:
    """Send ``header`` from ``local_host``; what the server answered (b"" when refused)."""
    reply = b""
    async with await pp.connect_tcp("127.0.0.1", port, header=header, local_host=local_host) as s:
        try:
            async for chunk in s:
                reply += chunk
        except anyio.BrokenResourceError:
            pass  # a refused connection may be reset rather than closed
    return reply


async def main() -> None:
    verified = pp.SSLInfo(
        client=pp.SSLClient.SSL | pp.SSLClient.CERT_CONN, verify=0, cn="alice.example"
    )
    no_cert = pp.SSLInfo(client=pp.SSLClient.SSL, verify=0)  # verify is 0 here too!
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            listener: pp.ProxyProtocolListener = await tg.start(run_server)
            port = listener.extra(SocketAttribute.local_port)

            with_cert = pp.Header.proxy(CLIENT, DESTINATION, tlvs=pp.TLVs(ssl=verified))
            reply = await connect(port, with_cert)
            print(f"proxy, verified certificate: {reply.decode().strip()}")
            assert reply == b"PROXY ('203.0.113.7', 51234) cn=alice.example\n"

            # A LOCAL header changes no address: remote_address is the proxy's own.
            reply = await connect(port, pp.Header.local())
            assert reply.startswith(b"LOCAL ('127.0.0.1', "), reply
            print("proxy, health check (LOCAL): served as the proxy's own connection")

            without_cert = pp.Header.proxy(CLIENT, DESTINATION, tlvs=pp.TLVs(ssl=no_cert))
            assert await connect(port, without_cert) == b""
            print("proxy, no client certificate: refused by the validator")

            # The same header from a peer that is not a proxy: a forgery, refused unread.
            assert await connect(port, with_cert, local_host=STRANGER) == b""
            print("stranger, forged header: refused by the policy")

            while listener.statistics().in_flight:  # let the last refusal be counted
                await anyio.sleep(0.01)
            stats = listener.statistics()
            print(f"accepted {stats.accepted}, refused {dict(sorted(stats.rejected.items()))}")
            assert stats.accepted == 2
            assert stats.rejected == {"validator": 1, "policy": 1}
            tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main)
