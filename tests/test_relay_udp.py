"""``proxyproto relay --udp`` as a user runs it: a real relay process, real UDP sockets on loopback.

Behind the relay, a :class:`~proxyproto.ProxiedUDPSocket` server in this process (on the test's
anyio backend) that records what it received and answers; in front, anyio UDP clients. Each
exchange is "send one datagram, await its answer", so nothing depends on timing or on loss;
every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import ConnectedUDPSocket

import proxyproto as pp
from cli_process import TIMEOUT, Address, launch, listening_addresses
from proxyproto._adapters.udp import ProxiedDatagram, build_datagram
from proxyproto._cli.probe.quic import VERSION_1, VERSION_2
from proxyproto._cli.relay_config import ConfigError, RelayConfig
from proxyproto._cli.relay_udp import default_max_connections
from test_probes import quic_datagrams, wireguard_initiation
from test_relay import Relay
from test_relay_config import ConfiguredRelay, write

pytestmark = pytest.mark.anyio


def udp_relay(
    backend: str, target: Address, *options: str, start: bool = True
) -> AbstractContextManager[Relay]:
    to = f"{target[0]}:{target[1]}"
    listen = ("--listen", "127.0.0.1:0")
    if "--grace" not in options:
        # Stopping waits for the open pseudo connections up to the grace period: short here.
        options = ("--grace", "0.2", *options)
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


# =============================================================================== bulk, both ways


async def test_a_bulk_flow_keeps_the_client(anyio_backend: str) -> None:
    """Many datagrams of one client, each with its v2 header: every one with the client."""
    with anyio.fail_after(TIMEOUT * 2):
        async with server() as backend:
            with udp_relay(anyio_backend, backend.address, "--send-proxy", "v2") as relay:
                async with await client(relay) as sock:
                    me = local(sock)
                    for number in range(200):
                        payload = number.to_bytes(2, "big") * 600  # 1200 bytes
                        assert await ask(sock, payload) == b"answer:" + payload
                relay.stop()
                line = await log_line(relay)
        assert {datagram.source for datagram in backend.seen} == {me}
        assert len(backend.seen) == 200
        assert (line["datagrams_up"], line["datagrams_down"]) == ("200", "200")
        assert line["up"] == str(200 * 1200)
        assert line["down"] == str(200 * (1200 + len(b"answer:")))


# =============================================================================== protocol routing

#: A ClientHello over two Initial datagrams: many ALPN names make it longer than one.
MANY_ALPNS = [f"proto-{number:03}-{'x' * 40}" for number in range(40)]


def udp_targets(*servers: Server) -> str:
    return "[" + ", ".join(f'"127.0.0.1:{server.address[1]}"' for server in servers) + "]"


def write_udp(config: Path, text: str) -> None:
    """A configuration file of one UDP listener on loopback, sending v2, and ``text``."""
    write(config, 'listen = "127.0.0.1:0"\nudp = true\nsend_proxy = "v2"\n' + text)


def configured_udp(
    config: Path, backend: str, *options: str
) -> AbstractContextManager[ConfiguredRelay]:
    return launch(
        ConfiguredRelay,
        "relay",
        "--config",
        str(config),
        "--backend",
        backend,
        *options,
        start=False,
    )


async def metrics_port(relay: Relay) -> int:
    line = await anyio.to_thread.run_sync(relay.stdout.get, True, TIMEOUT)
    assert line is not None
    assert line.startswith("metrics on http://127.0.0.1:"), line
    return int(line.rsplit(":", 1)[1].split("/")[0])


def relay_metrics(port: int, listener: str) -> dict[tuple[str, ...], float]:
    """The ``proxyproto_relay_*`` samples of one UDP listener: by name and label values."""
    from test_metrics import scrape

    found = {}
    for (name, labels), value in scrape(port).items():
        label = dict(labels)
        if not name.startswith("proxyproto_relay_") or label.get("listener") != listener:
            continue
        assert label.pop("transport") == "udp"
        del label["listener"]
        keys = [label.pop(key) for key in ("route", "reason", "direction") if key in label]
        key = (name, *keys)
        found[key] = value
    return found


def settled_relay_metrics(
    port: int, listener: str, want: dict[tuple[str, ...], float]
) -> dict[tuple[str, ...], float]:
    """:func:`relay_metrics` for ``want``'s keys once they equal it, or at the deadline."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        got = relay_metrics(port, listener)
        seen = {key: got.get(key, -1.0) for key in want}
        if seen == want or time.monotonic() > deadline:
            return seen
        time.sleep(0.1)


async def routed_client(address: Address, *datagrams: bytes) -> list[bytes]:
    """A new client (its own port) sends ``datagrams``; the answers, one per datagram."""
    async with await anyio.create_connected_udp_socket(*address, local_host="127.0.0.1") as sock:
        for datagram in datagrams:
            await sock.send(datagram)
        return [await sock.receive() for _ in datagrams]


async def test_quic_and_wireguard_clients_choose_targets(
    anyio_backend: str, tmp_path: Path
) -> None:
    """Initials built by aioquic (v1 and v2) go by SNI and ALPN; a WireGuard handshake to its
    own target; the rest (no default route) is dropped, counted in the metrics."""
    config = tmp_path / "relay.toml"
    with anyio.fail_after(TIMEOUT * 2):
        async with server() as by_name, server() as by_alpn, server() as wireguard:
            write_udp(
                config,
                f"""
                [protocols.names]
                protocol = "quic"
                server_names = ["a.example", "*.wild.example"]
                to = {udp_targets(by_name)}

                [protocols.h3]
                protocol = "quic"
                alpns = ["h3"]
                to = {udp_targets(by_alpn)}

                [protocols.wg]
                protocol = "wireguard"
                to = {udp_targets(wireguard)}
                """,
            )
            options = ("--metrics", "127.0.0.1:0", "--grace", "0.2")
            with configured_udp(config, anyio_backend, *options) as relay:
                port = await metrics_port(relay)
                address = relay.next_listening()

                # By name; the TLV has the client's first ALPN (no alpns filter on the route).
                initial = quic_datagrams(VERSION_1, "A.example", ["hq-interop", "h3"])
                assert await routed_client(address, *initial) == [b"answer:" + initial[0]]
                [seen] = by_name.seen
                assert seen.header is not None
                assert (seen.header.tlvs.authority, seen.header.tlvs.alpn) == (
                    "a.example",
                    b"hq-interop",
                )
                assert seen.payload == initial[0]

                # By ALPN, v2 too: the route takes h3 though the client prefers hq-interop.
                for version in (VERSION_1, VERSION_2):
                    initial = quic_datagrams(version, "c.example", ["hq-interop", "h3"])
                    assert await routed_client(address, *initial) == [b"answer:" + initial[0]]
                assert [d.header.tlvs.alpn for d in by_alpn.seen if d.header] == [b"h3", b"h3"]
                assert {d.header.tlvs.authority for d in by_alpn.seen if d.header} == {"c.example"}

                # A ClientHello over two datagrams: held until whole, both sent in order.
                initial = quic_datagrams(VERSION_1, "x.wild.example", MANY_ALPNS)
                assert len(initial) > 1
                answers = await routed_client(address, *initial)
                assert answers == [b"answer:" + datagram for datagram in initial]
                assert [d.payload for d in by_name.seen[1:]] == initial
                assert by_name.seen[-1].header is not None
                assert by_name.seen[-1].header.tlvs.authority == "x.wild.example"

                # WireGuard: the initiation decides, later datagrams of the client follow it.
                initiation = wireguard_initiation()
                transport = b"\x04\x00\x00\x00" + os.urandom(60)
                assert await routed_client(address, initiation, transport) == [
                    b"answer:" + initiation,
                    b"answer:" + transport,
                ]
                assert [d.payload for d in wireguard.seen] == [initiation, transport]
                assert len({d.peer for d in wireguard.seen}) == 1  # one pseudo connection

                # No route: a QUIC name no route takes, and bytes of no protocol.
                async with await anyio.create_connected_udp_socket(
                    *address, local_host="127.0.0.1"
                ) as sock:
                    (other,) = quic_datagrams(VERSION_1, "z.example", ["hq-interop"])
                    await sock.send(other)
                    logged = await anyio.to_thread.run_sync(relay.log_line, "no route")
                    assert f"client 127.0.0.1:{local(sock)[1]}: no route (quic)" in logged
                    await sock.send(os.urandom(300))
                    await sock.send(os.urandom(300))
                want = {
                    ("proxyproto_relay_connections_total", "names"): 2.0,
                    ("proxyproto_relay_connections_total", "h3"): 2.0,
                    ("proxyproto_relay_connections_total", "wg"): 1.0,
                    ("proxyproto_relay_datagrams_total", "names", "up"): float(len(by_name.seen)),
                    ("proxyproto_relay_datagrams_total", "wg", "down"): 2.0,
                    ("proxyproto_relay_unrouted_total", "quic"): 1.0,
                    ("proxyproto_relay_unrouted_total", "unknown"): 2.0,
                    ("proxyproto_relay_unrouted_total", "datagrams"): 3.0,
                }
                got = await anyio.to_thread.run_sync(
                    settled_relay_metrics, port, f"127.0.0.1:{address[1]}", want
                )
                assert got == want
                relay.stop()
                ends = [await log_line(relay, "end=") for _ in range(5)]
                assert sorted(line["route"].rsplit("/", 1)[1] for line in ends) == sorted(
                    ["names", "names", "h3", "h3", "wg"]
                )
        # The clients' own addresses, from the headers, not the relay's upstream sockets.
        sources = [d.source for d in by_name.seen + by_alpn.seen + wireguard.seen]
        assert all(isinstance(s, tuple) and s[0] == "127.0.0.1" for s in sources)
        assert not set(sources) & {d.peer for d in by_name.seen + by_alpn.seen}


async def test_a_client_hello_never_finished_goes_to_the_default_route(
    anyio_backend: str, tmp_path: Path
) -> None:
    """After ``probe_timeout`` without a decision, the held datagrams take the default route."""
    config = tmp_path / "relay.toml"
    with anyio.fail_after(TIMEOUT):
        async with server() as quic, server() as default:
            write_udp(
                config,
                f"""
                probe_timeout = 0.3
                to = {udp_targets(default)}

                [protocols.quic]
                protocol = "quic"
                to = {udp_targets(quic)}
                """,
            )
            with configured_udp(config, anyio_backend, "--grace", "0.2") as relay:
                address = relay.next_listening()
                first = quic_datagrams(VERSION_1, "big.example", MANY_ALPNS)[0]
                # Only the first datagram of the ClientHello: the probe waits, then gives up.
                assert await routed_client(address, first) == [b"answer:" + first]
                relay.stop()
                assert (await log_line(relay, "end="))["route"] == "127.0.0.1:0"
        assert [d.payload for d in default.seen] == [first]
        assert quic.seen == []


# =============================================================================== dual stack


async def test_a_dual_stack_listener_takes_ipv4_clients_as_ipv4(anyio_backend: str) -> None:
    """On ``[::]``, an IPv4 client arrives IPv4-mapped: the header says UDP4 with its address."""
    with anyio.fail_after(TIMEOUT):
        async with server() as backend:
            to = f"127.0.0.1:{backend.address[1]}"
            args = ("relay", "--udp", "--listen", "[::]:0", "--to", to, "--send-proxy", "v2")
            options = ("--backend", anyio_backend, "--grace", "0.2")
            with launch(Relay, *args, *options, start=False) as relay:
                line = await anyio.to_thread.run_sync(relay.stdout.get, True, TIMEOUT)
                assert line is not None
                [(host, port)] = listening_addresses(line)
                assert host == "::"
                for client_host in ("127.0.0.1", "::1"):
                    async with await anyio.create_connected_udp_socket(
                        client_host, port, local_host=client_host
                    ) as sock:
                        assert await ask(sock, b"hello") == b"answer:hello"
                        me = local(sock)
                        seen = backend.seen[-1]
                        assert seen.source == me
                        assert seen.header is not None
                        if client_host == "127.0.0.1":
                            assert seen.header.family is pp.Family.INET  # UDP4
                            assert seen.destination == ("0.0.0.0", port)
                        else:
                            assert seen.header.family is pp.Family.INET6
                            assert seen.destination == ("::", port)
                relay.stop()
                clients = {(await log_line(relay, "end="))["client"] for _ in range(2)}
        assert any(client.startswith("127.0.0.1:") for client in clients)


# =============================================================================== --grace


@pytest.mark.parametrize("ends", ["idle", "grace"])
async def test_sigterm_lets_open_pseudo_connections_finish(anyio_backend: str, ends: str) -> None:
    """After SIGTERM, open pseudo connections go on (until idle, within ``--grace``); a new
    client is not taken."""
    lifetime, grace = ("0.5", "30") if ends == "idle" else ("30", "0.5")
    options = ("--udp-idle-lifetime", lifetime, "--grace", grace)
    with anyio.fail_after(TIMEOUT):
        async with server(header=False) as backend:
            with udp_relay(anyio_backend, backend.address, *options) as relay:
                async with await client(relay) as old, await client(relay) as new:
                    assert await ask(old, b"before") == b"answer:before"
                    relay.process.send_signal(signal.SIGTERM)
                    await anyio.to_thread.run_sync(relay.log_line, "stopping on SIGTERM")
                    await new.send(b"new client")  # dropped: no new pseudo connection
                    assert await ask(old, b"after") == b"answer:after"
                    code = await anyio.to_thread.run_sync(relay.process.wait, TIMEOUT)
                assert code == 0
                rest = relay.drain().splitlines()
                [line] = [
                    dict(w.split("=", 1) for w in r.split() if "=" in w)
                    for r in rest
                    if "end=" in r
                ]
                assert line["end"] == ("idle" if ends == "idle" else "stopped")
                assert line["datagrams_up"] == "2"
                assert any("grace period over" in r for r in rest) == (ends == "grace")
        assert [d.payload for d in backend.seen] == [b"before", b"after"]
