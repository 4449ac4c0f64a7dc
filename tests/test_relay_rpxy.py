"""``proxyproto relay --config`` on a file in rpxy-l4's format: it runs, as ours does.

Real ``python -m proxyproto relay`` processes on 127.0.0.1 (as in ``test_relay_config``): a TCP
target that reads the PROXY header, a UDP server behind the relay (``ProxiedUDPSocket``), TLS
routing by SNI with real TLS clients and backends (trustme), the start-up errors, and a reload.
"""

from __future__ import annotations

import socket
import tempfile
import threading
from pathlib import Path

import anyio
import pytest
import trustme

import proxyproto as pp
from cli_process import TIMEOUT, launch, run_cli
from proxyproto._cli.relay_config import ConfigError, RelayConfig
from test_relay import BACKENDS, Relay, exchange, target_server
from test_relay_config import configured, to, write
from test_relay_routing import read_exactly, tls_backends, tls_request
from test_relay_udp import ask, configured_udp, server, udp_targets


@BACKENDS
def test_tcp_target_and_a_tls_route_each_with_its_header(
    backend: str, ca: trustme.CA, tmp_path: Path
) -> None:
    config = tmp_path / "rpxy.toml"
    with target_server(header=True) as default, tls_backends(ca, "by-name") as (by_name,):
        write(
            config,
            f"""
            listen_port = 0
            listen_address = "127.0.0.1"
            tcp_target = {to(default.address)}
            tcp_load_balance = "source_ip"
            tcp_send_proxy_protocol = "v1"

            [protocols."tls_1"]
            protocol = "tls"
            target = {to(by_name.address)}
            load_balance = "source_socket"
            server_names = ["a.example"]
            send_proxy_protocol = "v2"
            """,
        )
        with configured(config, 1, ("--backend", backend)) as (relay, [address]):
            echoed, own = exchange(address, b"not tls")
            assert echoed == b"not tls"
            header = default.next_header()
            assert header is not None
            assert (header.version, header.source) == (1, own)
            assert relay.access_log()["route"] == "tcp"

            assert tls_request(ca, address, "a.example") == b"by-name None hello\n"
            header = by_name.next_header()
            assert header is not None
            assert header.version == 2  # the route's send_proxy_protocol, not the global v1
            assert relay.access_log()["route"] == "tcp/tls_1"


async def test_udp_target(anyio_backend: str, tmp_path: Path) -> None:
    config = tmp_path / "rpxy.toml"
    with anyio.fail_after(TIMEOUT):
        async with server() as backend:
            write(
                config,
                f"""
                listen_port = 0
                listen_address_v4 = ["127.0.0.1"]
                udp_target = {udp_targets(backend)}
                udp_idle_lifetime = 5
                udp_send_proxy_protocol = "v2"
                """,
            )
            with configured_udp(config, anyio_backend) as relay:
                address = await anyio.to_thread.run_sync(relay.next_listening)
                async with await anyio.create_connected_udp_socket(
                    *address, local_host="127.0.0.1"
                ) as sock:
                    assert await ask(sock, b"query") == b"answer:query"
                    own = sock.extra(anyio.abc.SocketAttribute.local_address)
                assert backend.seen[0].source == (str(own[0]), int(own[1]))


def test_reload_of_an_rpxy_file(tmp_path: Path) -> None:
    config = tmp_path / "rpxy.toml"
    head = 'listen_port = 0\nlisten_address = "127.0.0.1"\n'
    with target_server() as old, target_server() as new:
        write(config, f"{head}tcp_target = {to(old.address)}\n")
        with configured(config, 1) as (relay, [address]):
            assert exchange(address, b"before")[0] == b"before"
            assert relay.access_log()["target"] == f"127.0.0.1:{old.port}"
            write(config, f"{head}tcp_target = {to(new.address)}\n")
            assert "updated: tcp" in relay.log_line("reload applied")
            assert exchange(address, b"after")[0] == b"after"
            assert relay.access_log()["target"] == f"127.0.0.1:{new.port}"


def load(tmp_path: Path, text: str) -> str:
    config = tmp_path / "rpxy.toml"
    write(config, text)
    with pytest.raises(ConfigError) as raised:
        RelayConfig(str(config)).load()
    return str(raised.value)


def test_unsupported_keys_are_one_error(tmp_path: Path) -> None:
    message = load(
        tmp_path,
        """
        listen_port = 8448
        tcp_target = ["127.0.0.1:1"]
        tcp_backlog = 1024
        dns_cache_min_ttl = "30s"
        [protocols."tls_1"]
        protocol = "tls"
        target = ["127.0.0.1:2"]
        ech_config = {}
        """,
    )
    assert message.endswith(
        "rpxy-l4 keys not supported here: tcp_backlog, dns_cache_min_ttl,"
        " protocols.tls_1.ech_config"
    )


def test_receiving_needs_trusted_proxies(tmp_path: Path) -> None:
    text = 'listen_port = 8448\ntcp_target = ["127.0.0.1:1"]\ntcp_recv_proxy_protocol = true\n'
    message = load(tmp_path, text)
    assert "tcp_trusted_proxies: required and non-empty" in message
    assert "tcp_trusted_proxies: required" in load(tmp_path, text + "tcp_trusted_proxies = []\n")
    config = tmp_path / "ok.toml"
    write(config, text + 'tcp_trusted_proxies = ["10.0.0.0/8"]\n')
    [route] = RelayConfig(str(config)).load()
    assert (route.accept_proxy, route.trusted, route.listen) == (
        True,
        ("10.0.0.0/8",),
        ("0.0.0.0", 8448),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('listen_port = 1\ntcp_target = ["127.0.0.1:1"]\nto = ["127.0.0.1:2"]\n', "mixes"),
        ('listen_port = 1\ntcp_target = ["127.0.0.1:1"]\ntcp_load_balance = "hash"\n', "balance"),
        ('tcp_target = ["127.0.0.1:1"]\n', "listen_port: required"),
        ("listen_port = 1\n", "no target"),
    ],
)
def test_bad_rpxy_files(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in load(tmp_path, text)


def test_startup_error_in_a_process(tmp_path: Path) -> None:

    config = tmp_path / "rpxy.toml"
    write(config, 'listen_port = 0\ntcp_target = ["127.0.0.1:1"]\ntcp_max_connections = 9\n')
    done = run_cli("relay", "--config", str(config))
    assert done.returncode != 0
    assert "rpxy-l4 keys not supported here: tcp_max_connections" in done.stderr


def test_our_format_takes_send_proxy_per_route(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    base = 'listen = "127.0.0.1:0"\nsend_proxy = "v2"\n[protocols.ssh]\nprotocol = "ssh"\n'
    write(config, base + 'to = "127.0.0.1:1"\nsend_proxy = "v1"\n')
    [route] = RelayConfig(str(config)).load()
    assert (route.send_proxy, route.protocols[0].send_proxy) == (2, 1)
    write(config, base + 'to = "127.0.0.1:1"\nsend_proxy = "v3"\n')
    with pytest.raises(ConfigError, match="send_proxy: 'v3' is not one of"):
        RelayConfig(str(config)).load()


def test_the_command_line_replaces_rpxy_settings(tmp_path: Path) -> None:
    config = tmp_path / "rpxy.toml"
    write(config, 'listen_port = 1\ntcp_target = ["127.0.0.1:1"]\ntcp_send_proxy_protocol = "v1"\n')
    overrides = {"send_proxy": 2, "probe_timeout": 0.5}
    [route] = RelayConfig(str(config), overrides).load()
    assert (route.send_proxy, route.probe_timeout) == (2, 0.5)


@pytest.mark.parametrize(
    ("keys", "listen"),
    [
        ("", ("0.0.0.0", 1)),
        ("listen_ipv6 = true\n", ("::", 1)),
        ('listen_address_v6 = "[::1]"\nlisten_ipv6 = true\n', ("::1", 1)),
        ('listen_address_v4 = "127.0.0.1"\n', ("127.0.0.1", 1)),
    ],
)
def test_listening_address(tmp_path: Path, keys: str, listen: tuple[str, int]) -> None:
    config = tmp_path / "rpxy.toml"
    write(config, f'listen_port = 1\ntcp_target = ["127.0.0.1:1"]\n{keys}')
    [route] = RelayConfig(str(config)).load()
    assert route.listen == listen


def test_several_listening_addresses(tmp_path: Path) -> None:
    """One listener per address, for each transport, named TRANSPORT@ADDRESS."""
    config = tmp_path / "rpxy.toml"
    write(
        config,
        'listen_port = 1\ntcp_target = ["127.0.0.1:1"]\nudp_target = ["127.0.0.1:1"]\n'
        'listen_address_v4 = ["127.0.0.1", "127.0.0.2"]\nlisten_address_v6 = "::1"\n',
    )
    routes = RelayConfig(str(config)).load()
    assert [(route.key, route.listen, route.udp) for route in routes] == [
        (f"{transport}@{text}", address, transport == "udp")
        for transport in ("tcp", "udp")
        for text, address in (
            ("127.0.0.1:1", ("127.0.0.1", 1)),
            ("127.0.0.2:1", ("127.0.0.2", 1)),
            ("[::1]:1", ("::1", 1)),
        )
    ]


def test_listening_addresses_that_cannot_be(tmp_path: Path) -> None:
    text = 'listen_port = 1\ntcp_target = ["127.0.0.1:1"]\nlisten_address_v4 = "127.0.0.1"\n'
    assert "listen_ipv6 beside IPv4 addresses: list the IPv6 ones in listen_address_v6" in load(
        tmp_path, text + "listen_ipv6 = true\n"
    )
    assert "127.0.0.1:1 given twice" in load(tmp_path, text + 'listen_address = "127.0.0.1"\n')
    udp = 'listen_port = 1\nudp_target = ["127.0.0.1:1"]\nlisten_address_v4 = "127.0.0.1"\n'
    assert "[udp (rpxy-l4 format)] listen: [::]:1 is dual stack with udp = true" in load(
        tmp_path, udp + 'listen_address_v6 = "[::]"\n'
    )
    assert "listen_address_v4: expected an address or a list" in load(
        tmp_path, text.replace('"127.0.0.1"', "[]")
    )


@BACKENDS
def test_a_unix_socket_target(backend: str) -> None:
    """``--to unix:/path``: the v2 header still names the TCP client (in an rpxy file too)."""
    with tempfile.TemporaryDirectory() as directory:
        path = f"{directory}/backend.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen()
        listener.settimeout(TIMEOUT)
        got: list[pp.Header] = []

        def serve() -> None:
            with listener, listener.accept()[0] as conn:
                conn.settimeout(TIMEOUT)
                start = read_exactly(conn, 16)
                size = int.from_bytes(start[14:], "big")
                got.append(pp.parse(start + read_exactly(conn, size))[0])
                while data := conn.recv(1024):
                    conn.sendall(data)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        options = ("--to", f"unix:{path}", "--send-proxy", "v2", "--backend", backend)
        try:
            with launch(Relay, "relay", "--listen", "127.0.0.1:0", *options) as relay:
                echoed, own = exchange(relay.address, b"over unix")
                assert echoed == b"over unix"
                assert relay.access_log()["target"] == f"unix:{path}"
        finally:
            thread.join(TIMEOUT)
        assert got[0].source == own


def test_unix_targets_are_refused_for_udp(tmp_path: Path) -> None:
    text = 'listen_port = 1\nudp_target = ["unix:/tmp/x.sock"]\n'
    assert "UNIX socket targets are for TCP relaying only" in load(tmp_path, text)
