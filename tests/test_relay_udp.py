"""``proxyproto relay --udp`` as a user runs it: a real relay process, real UDP sockets on loopback.

Behind the relay, a :class:`~proxyproto.ProxiedUDPSocket` server in this process (on the test's
anyio backend) that records what it received and answers; in front, anyio UDP clients. Each
exchange is "send one datagram, await its answer", so nothing depends on timing or on loss;
every wait is bounded.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import ConnectedUDPSocket

import proxyproto as pp
from cli_process import TIMEOUT, Address, launch
from proxyproto._adapters.udp import ProxiedDatagram, build_datagram
from proxyproto._cli.relay_config import ConfigError, RelayConfig
from proxyproto._cli.relay_udp import default_max_connections
from test_relay import Relay

pytestmark = pytest.mark.anyio


def udp_relay(
    backend: str, target: Address, *options: str, start: bool = True
) -> AbstractContextManager[Relay]:
    to = f"{target[0]}:{target[1]}"
    listen = ("--listen", "127.0.0.1:0")
    return launch(
        Relay, "relay", "--udp", *listen, "--to", to, "--backend", backend, *options, start=start
    )


class Server:
    """A UDP server behind the relay: answers ``answer:`` + payload; ``seen`` keeps each one."""

    def __init__(self, sock: pp.ProxiedUDPSocket, address: Address) -> None:
        self.sock = sock
        self.address = address
        self.seen: list[ProxiedDatagram] = []

    async def run(self) -> None:
        async for datagram in self.sock:
            self.seen.append(datagram)
            await self.sock.reply(datagram, b"answer:" + datagram.payload)


@asynccontextmanager
async def server(*, header: bool = True) -> AsyncIterator[Server]:
    udp = await anyio.create_udp_socket(local_host="127.0.0.1", local_port=0)
    policy = pp.Policy.REQUIRE if header else pp.Policy.SKIP
    sock = pp.ProxiedUDPSocket(udp, pp.ProxyProtocolConfig(policy=policy))
    bound = udp.extra(anyio.abc.SocketAttribute.local_address)
    running = Server(sock, (str(bound[0]), int(bound[1])))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(running.run)
        try:
            yield running
        finally:
            await sock.aclose()


async def client(relay: Relay) -> ConnectedUDPSocket:
    return await anyio.create_connected_udp_socket(*relay.address, local_host="127.0.0.1")


async def ask(sock: ConnectedUDPSocket, payload: bytes) -> bytes:
    await sock.send(payload)
    return await sock.receive()


def local(sock: ConnectedUDPSocket) -> Address:
    address = sock.extra(anyio.abc.SocketAttribute.local_address)
    return (str(address[0]), int(address[1]))


async def log_line(relay: Relay, containing: str = "peer=") -> dict[str, str]:
    line = await anyio.to_thread.run_sync(relay.log_line, containing)
    return dict(word.split("=", 1) for word in line.split() if "=" in word)


async def test_send_proxy_v2_carries_the_client(anyio_backend: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with server() as backend:
            with udp_relay(anyio_backend, backend.address, "--send-proxy", "v2") as relay:
                async with await client(relay) as sock:
                    me = local(sock)
                    # A DNS-style exchange: one query, one answer, the client's address intact.
                    assert await ask(sock, b"\x12\x34query") == b"answer:\x12\x34query"
                    [datagram] = backend.seen
                    assert datagram.source == me
                    assert datagram.destination == relay.address
                    assert datagram.header is not None
                    assert datagram.header.transport is pp.Transport.DGRAM
                relay.stop()
                line = await log_line(relay)
                assert line["client"] == f"{me[0]}:{me[1]}"
                assert (line["datagrams_up"], line["datagrams_down"]) == ("1", "1")
                assert line["up"] == str(len(b"\x12\x34query"))
                assert line["end"] == "stopped"


async def test_a_flow_arrives_in_order(anyio_backend: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with server(header=False) as backend:
            with udp_relay(anyio_backend, backend.address) as relay:
                async with await client(relay) as sock:
                    for number in range(50):
                        payload = number.to_bytes(2, "big") * 300
                        assert await ask(sock, payload) == b"answer:" + payload
                # One pseudo connection: one upstream socket for the whole flow.
                assert len({datagram.peer for datagram in backend.seen}) == 1
                assert [d.payload[:2] for d in backend.seen] == [
                    n.to_bytes(2, "big") for n in range(50)
                ]


#: What a trusted proxy in front of the relay puts on its datagram.
UPSTREAM_HEADER = pp.Header.proxy(
    ("192.0.2.7", 4000), ("198.51.100.1", 53), transport=pp.Transport.DGRAM
)


@pytest.mark.parametrize("trusted", [True, False])
async def test_accept_proxy(anyio_backend: str, trusted: bool) -> None:
    """From a trusted source, the header's client is relayed; any other source is dropped."""
    network = "127.0.0.1" if trusted else "10.0.0.0/8"
    with anyio.fail_after(TIMEOUT):
        async with server() as backend:
            options = ("--accept-proxy", "--trusted", network, "--send-proxy", "v2")
            with udp_relay(anyio_backend, backend.address, *options) as relay:
                async with await client(relay) as sock:
                    datagram = build_datagram(UPSTREAM_HEADER, b"hi")
                    if not trusted:
                        await sock.send(datagram)
                        await anyio.to_thread.run_sync(relay.log_line, "dropped datagram")
                        relay.stop()
                        assert "end=" not in relay.drain()  # no pseudo connection opened
                        assert backend.seen == []
                        return
                    assert await ask(sock, datagram) == b"answer:hi"
                [seen] = backend.seen
                assert seen.source == ("192.0.2.7", 4000)
                assert seen.destination == ("198.51.100.1", 53)


async def test_idle_lifetime_ends_a_pseudo_connection(anyio_backend: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with server(header=False) as backend:
            options = ("--udp-idle-lifetime", "0.5")
            with udp_relay(anyio_backend, backend.address, *options) as relay:
                async with await client(relay) as sock:
                    assert await ask(sock, b"one") == b"answer:one"
                    first = await log_line(relay)
                    assert first["end"] == "idle"
                    assert first["datagrams_up"] == "1"
                    # A later datagram opens a new pseudo connection.
                    assert await ask(sock, b"two") == b"answer:two"
                relay.stop()
                second = await log_line(relay)
                assert second["end"] in ("idle", "stopped")
                assert second["up"] == "3"
                assert [d.payload for d in backend.seen] == [b"one", b"two"]


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
async def test_the_cap_bounds_descriptors(anyio_backend: str) -> None:
    with anyio.fail_after(TIMEOUT * 2):
        async with server() as backend:
            options = ("--udp-max-connections", "4", "--send-proxy", "v2")
            with udp_relay(anyio_backend, backend.address, *options) as relay:
                pid = relay.process.pid
                baseline = open_fds(pid)
                most = baseline
                sockets = [await client(relay) for _ in range(10)]
                clients = [local(sock) for sock in sockets]
                try:
                    for number, sock in enumerate(sockets):
                        assert await ask(sock, b"%d" % number) == b"answer:%d" % number
                        most = max(most, open_fds(pid))
                finally:
                    for sock in sockets:
                        await sock.aclose()
                evicted = [await log_line(relay, "end=evicted") for _ in range(6)]
                # The six least recently used, oldest first.
                assert [line["client"] for line in evicted] == [
                    f"{host}:{port}" for host, port in clients[:6]
                ]
                assert most <= baseline + 4
                assert {d.source for d in backend.seen} == set(clients)


def test_default_cap_follows_the_descriptor_limit() -> None:
    assert 16 <= default_max_connections() <= 1024


def test_v1_over_udp_is_a_startup_error() -> None:
    with udp_relay("asyncio", ("127.0.0.1", 9), "--send-proxy", "v1", start=False) as relay:
        assert relay.process.wait(timeout=TIMEOUT) == 2
        assert "v1 cannot describe UDP" in relay.drain()


def test_the_config_file_takes_the_udp_keys(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(
        'listen = "127.0.0.1:0"\nto = "127.0.0.1:9"\nudp = true\nudp_idle_lifetime = 0.5\n'
        'udp_max_connections = 4\nsend_proxy = "v2"\n'
    )
    [settings] = RelayConfig(str(path), {}).load()
    assert (settings.udp, settings.udp_idle_lifetime, settings.udp_max_connections) == (
        True,
        0.5,
        4,
    )
    path.write_text('listen = "127.0.0.1:0"\nto = "127.0.0.1:9"\nudp = true\nsend_proxy = "v1"\n')
    with pytest.raises(ConfigError, match="v1 cannot describe UDP"):
        RelayConfig(str(path), {}).load()
    path.write_text('listen = "127.0.0.1:0"\nto = "127.0.0.1:9"\nudp_max_connections = 0\n')
    with pytest.raises(ConfigError, match="udp_max_connections"):
        RelayConfig(str(path), {}).load()
