"""A protocol route's own idle limit: ``[protocols.NAME]`` ``idle_timeout`` (TCP routes) and
``udp_idle_lifetime`` (QUIC, WireGuard), and rpxy-l4's ``idle_lifetime`` mapped onto them.

Real relay processes on loopback: a UDP route whose pseudo connections end before the default
route's, a TCP route whose idle connections are closed while the default route's stay open; and
the files read without a process. No timing upper bound: each test waits (bounded) for the
access-log line that says a connection ended idle, and checks the other one did not.
"""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import pytest

from cli_process import TIMEOUT
from proxyproto._cli.probe import Match
from proxyproto._cli.relay_config import ConfigError, RelayConfig
from proxyproto._cli.relay_server import RelaySettings, route_for
from test_probes import wireguard_initiation
from test_relay import BACKENDS, target_server
from test_relay_config import configured, to, write
from test_relay_udp import ask, configured_udp, log_line, server, udp_targets

HTTP_REQUEST = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"


def load(tmp_path: Path, text: str) -> tuple[RelaySettings, ...]:
    config = tmp_path / "relay.toml"
    write(config, text)
    return RelayConfig(str(config)).load()


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text)
    return str(raised.value)


# =============================================================================== the files


def test_our_format_takes_a_routes_idle_limits(tmp_path: Path) -> None:
    [tcp, udp] = load(
        tmp_path,
        """
        [[route]]
        listen = "127.0.0.1:1"
        to = "127.0.0.1:9"
        idle_timeout = 60
        [route.protocols.web]
        protocol = "http"
        to = "127.0.0.1:8"
        idle_timeout = 0.5
        [route.protocols.ssh]
        protocol = "ssh"
        to = "127.0.0.1:7"
        idle_timeout = 0

        [[route]]
        listen = "127.0.0.1:1"
        name = "udp"
        udp = true
        to = "127.0.0.1:9"
        udp_idle_lifetime = 60
        [route.protocols.vpn]
        protocol = "wireguard"
        to = "127.0.0.1:8"
        udp_idle_lifetime = 0.5
        [route.protocols.h3]
        protocol = "quic"
        to = "127.0.0.1:7"
        """,
    )
    web, ssh = tcp.protocols
    assert (web.idle_timeout, ssh.idle_timeout) == (0.5, 0.0)
    vpn, h3 = udp.protocols
    assert (vpn.udp_idle_lifetime, h3.udp_idle_lifetime) == (0.5, None)
    # The decision carries the limit: the route's, else the listener's.
    assert route_for(tcp, Match("http")).idle == 0.5
    assert route_for(tcp, Match("ssh")).idle == 0.0
    assert route_for(tcp, None).idle == 60
    assert route_for(udp, Match("wireguard")).idle == 0.5
    assert route_for(udp, Match("quic")).idle == 60
    assert route_for(udp, None).idle == 60


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('protocol = "http"\nudp_idle_lifetime = 5', "udp_idle_lifetime: for quic and wireguard"),
        ('protocol = "quic"\nidle_timeout = 5', "idle_timeout: for TCP protocol routes only"),
        ('protocol = "http"\nidle_timeout = -1', "idle_timeout: '-1' is not a positive number"),
        ('protocol = "http"\nidle_timeout = "5"', "idle_timeout: expected a number of seconds"),
        ('protocol = "quic"\nudp_idle_lifetime = 0', "udp_idle_lifetime: '0' is not a positive"),
        ('protocol = "http"\nidle_lifetime = 5', "idle_lifetime: unknown key"),
    ],
)
def test_bad_route_idle_limits(tmp_path: Path, table: str, message: str) -> None:
    udp = "quic" in table
    text = (
        f'listen = "127.0.0.1:1"\nudp = {str(udp).lower()}\n'
        f'[protocols.r]\nto = "127.0.0.1:9"\n{table}\n'
    )
    assert f"protocols: r: {message}" in error(tmp_path, text)


def test_rpxy_idle_lifetime_per_route(tmp_path: Path) -> None:
    """A UDP route's ``idle_lifetime`` is its own (30 s without one, as rpxy-l4: not the
    top-level ``udp_idle_lifetime``, the default route's); on a TCP route, its idle timeout."""
    tcp, udp = load(
        tmp_path,
        """
        listen_port = 1
        tcp_target = ["127.0.0.1:9"]
        udp_target = ["127.0.0.1:9"]
        udp_idle_lifetime = 5

        [protocols."vpn"]
        protocol = "wireguard"
        target = ["127.0.0.1:8"]
        idle_lifetime = 120

        [protocols."h3"]
        protocol = "quic"
        target = ["127.0.0.1:7"]

        [protocols."ssh"]
        protocol = "ssh"
        target = ["127.0.0.1:6"]
        idle_lifetime = 600
        """,
    )
    assert route_for(udp, Match("wireguard")).idle == 120
    assert route_for(udp, Match("quic")).idle == 30
    assert route_for(udp, None).idle == 5
    assert route_for(tcp, Match("ssh")).idle == 600
    assert route_for(tcp, None).idle == 0
    assert "protocols: vpn: udp_idle_lifetime: '0' is not a positive" in error(
        tmp_path,
        'listen_port = 1\n[protocols."vpn"]\nprotocol = "wireguard"\n'
        'target = ["127.0.0.1:8"]\nidle_lifetime = 0\n',
    )


# =============================================================================== UDP


@pytest.mark.anyio
@pytest.mark.parametrize("rpxy", [False, True])
async def test_a_udp_routes_own_lifetime(anyio_backend: str, tmp_path: Path, rpxy: bool) -> None:
    """The WireGuard route's pseudo connection ends idle; the default route's (60 s) stays."""
    config = tmp_path / "relay.toml"
    with anyio.fail_after(TIMEOUT * 2):
        async with server(header=False) as default, server(header=False) as vpn:
            if rpxy:
                text = f"""
                listen_port = 0
                listen_address = "127.0.0.1"
                udp_target = {udp_targets(default)}
                udp_idle_lifetime = 60
                [protocols."vpn"]
                protocol = "wireguard"
                target = {udp_targets(vpn)}
                idle_lifetime = 1
                """
            else:
                text = f"""
                listen = "127.0.0.1:0"
                udp = true
                to = {udp_targets(default)}
                udp_idle_lifetime = 60
                [protocols.vpn]
                protocol = "wireguard"
                to = {udp_targets(vpn)}
                udp_idle_lifetime = 0.5
                """
            write(config, text)
            with configured_udp(config, anyio_backend, "--grace", "0.2") as relay:
                address = await anyio.to_thread.run_sync(relay.next_listening)
                async with (
                    await anyio.create_connected_udp_socket(*address, local_host="127.0.0.1") as a,
                    await anyio.create_connected_udp_socket(*address, local_host="127.0.0.1") as b,
                ):
                    assert await ask(a, b"\x00query") == b"answer:\x00query"
                    initiation = wireguard_initiation()
                    assert await ask(b, initiation) == b"answer:" + initiation
                    line = await log_line(relay)
                    route = "udp/vpn" if rpxy else "127.0.0.1:0/vpn"
                    assert (line["route"], line["end"]) == (route, "idle")
                    # The default route's pseudo connection is still the same one.
                    assert await ask(a, b"\x00again") == b"answer:\x00again"
                assert len({d.peer for d in default.seen}) == 1
                relay.stop()
                line = await log_line(relay)
                assert (line["end"], line["datagrams_up"]) == ("stopped", "2")


# =============================================================================== TCP


@BACKENDS
@pytest.mark.parametrize("rpxy", [False, True])
def test_a_tcp_routes_own_idle_timeout(backend: str, tmp_path: Path, rpxy: bool) -> None:
    """The HTTP route's idle connection is closed (``end=idle``); the default route's stays."""
    config = tmp_path / "relay.toml"
    with target_server() as default, target_server() as web:
        if rpxy:
            text = f"""
            listen_port = 0
            listen_address = "127.0.0.1"
            tcp_target = {to(default.address)}
            [protocols."web"]
            protocol = "http"
            target = {to(web.address)}
            idle_lifetime = 1
            """
        else:
            text = f"""
            listen = "127.0.0.1:0"
            to = {to(default.address)}
            [protocols.web]
            protocol = "http"
            to = {to(web.address)}
            idle_timeout = 0.5
            """
        write(config, text)
        with (
            configured(config, 1, ("--backend", backend)) as (relay, [address]),
            socket.create_connection(address, timeout=TIMEOUT) as plain,
            socket.create_connection(address, timeout=TIMEOUT) as http,
        ):
            plain.sendall(b"\x00hello")
            assert plain.recv(100) == b"\x00hello"
            http.sendall(HTTP_REQUEST)
            assert http.recv(100) == HTTP_REQUEST
            assert http.recv(100) == b""  # closed by the relay, idle
            log = relay.access_log()
            assert (log["route"], log["end"]) == ("tcp/web" if rpxy else "127.0.0.1:0/web", "idle")
            plain.sendall(b"still open")
            assert plain.recv(100) == b"still open"
            plain.shutdown(socket.SHUT_WR)
            assert plain.recv(100) == b""
            log = relay.access_log()
            assert (log["end"], log["up"]) == ("done", str(len(b"\x00hellostill open")))
