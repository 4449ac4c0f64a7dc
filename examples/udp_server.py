"""A UDP server behind a proxy that puts a PROXY v2 header on every datagram.

The server answers each client by name; the "proxy" here is a plain UDP socket on loopback that
sends datagrams for two clients, one broken datagram, and one from a stranger without a header.
"""

import logging
import sys

import anyio
from anyio.abc import SocketAttribute

import proxyproto as pp

SERVICE = ("198.51.100.7", 53)


async def run_server(server: pp.ProxiedUDPSocket) -> None:
    async for datagram in server:
        print(f"{datagram.payload.decode()} from {datagram.source} via {datagram.peer[0]}")
        # Replies go to datagram.peer, the proxy, which relays them to the client.
        await server.reply(datagram, b"hello " + str(datagram.source).encode())


async def main() -> None:
    # Dropped datagrams are logged on the "proxyproto" logger, one line each (rate-limited).
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(message)s")
    config = pp.ProxyProtocolConfig(policy=pp.trusted_proxies(["127.0.0.1"]))
    udp = await anyio.create_udp_socket(local_host="127.0.0.1", local_port=0)
    async with pp.ProxiedUDPSocket(udp, config) as server, anyio.create_task_group() as tg:
        tg.start_soon(run_server, server)
        port = server.extra(SocketAttribute.local_port)

        async with await anyio.create_udp_socket(local_host="127.0.0.1") as proxy:
            for client in [("203.0.113.7", 51234), ("203.0.113.8", 40000)]:
                header = pp.Header.proxy(client, SERVICE, transport=pp.Transport.DGRAM)
                await pp.send_datagram(proxy, header, b"query", ("127.0.0.1", port))
            await proxy.sendto(b"\r\n\r\n\x00\r\nQUIT\n\x21", "127.0.0.1", port)  # truncated
            await proxy.sendto(b"no header", "127.0.0.1", port)
            with anyio.fail_after(5):
                for _ in range(2):
                    answer, sender = await proxy.receive()
                    print(f"the proxy got {answer.decode()!r}")
                    assert sender == ("127.0.0.1", port)

        with anyio.fail_after(5):
            while server.statistics().received < 4:
                await anyio.sleep(0.01)
        statistics = server.statistics()
        dropped = dict(sorted(statistics.dropped.items()))
        print(f"delivered {statistics.delivered}, dropped {dropped}")
        assert (statistics.delivered, dropped) == (2, {"invalid": 1, "missing": 1})
        await server.aclose()


if __name__ == "__main__":
    anyio.run(main)
