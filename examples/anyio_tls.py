"""TLS after PROXY: the balancer passes TLS through, the application terminates it.

The header always comes first, in cleartext; the TLS handshake follows it. So the TLS listener
goes *outside* the PROXY one: ``TLSListener(ProxyProtocolListener(...), ssl_context)``. Through
the TLS stream, ``SocketAttribute.remote_address`` is still the client from the header.
Certificates come from ``trustme``, a throwaway CA for tests.
"""

import ssl

import anyio
import trustme
from anyio.abc import SocketAttribute, TaskStatus
from anyio.streams.tls import TLSAttribute, TLSListener, TLSStream

import proxyproto as pp

CLIENT = ("203.0.113.7", 51234)
DESTINATION = ("198.51.100.10", 443)

ca = trustme.CA()
server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ca.issue_cert("app.example").configure_cert(server_context)
server_context.set_alpn_protocols(["http/1.1"])


async def handle(stream: TLSStream) -> None:
    async with stream:
        client = stream.extra(SocketAttribute.remote_address)  # from the PROXY header
        header = stream.extra(pp.ProxyAttribute.header)  # ProxyAttribute works through TLS too
        alpn = stream.extra(TLSAttribute.alpn_protocol)  # and so does TLSAttribute
        await stream.send(f"hello {client} over {alpn}, header v{header.version}\n".encode())


async def run_server(*, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
    proxied = pp.ProxyProtocolListener(
        await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    )
    async with TLSListener(proxied, server_context) as listener:
        task_status.started(proxied.extra(SocketAttribute.local_port))
        await listener.serve(handle)


async def main() -> None:
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    client_context.set_alpn_protocols(["http/1.1"])
    header = pp.Header.proxy(CLIENT, DESTINATION)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            port = await tg.start(run_server)
            # What a balancer in TCP mode does: the header, then the client's TLS bytes. Here the
            # client side is one process, so connect_tcp() does both: header, then TLS.
            stream = await pp.connect_tcp(
                "127.0.0.1",
                port,
                header=header,
                ssl_context=client_context,
                tls_hostname="app.example",
            )
            async with stream:
                reply = await stream.receive()
            print(f"over TLS: {reply.decode().strip()}")
            assert reply == b"hello ('203.0.113.7', 51234) over http/1.1, header v2\n", reply
            tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main)
