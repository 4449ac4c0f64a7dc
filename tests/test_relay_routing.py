"""``proxyproto relay`` routing by protocol: real TLS clients choosing backends by SNI and ALPN.

The relay passes TLS through: each TLS backend terminates it (a trustme certificate), after
reading the PROXY v2 header the relay sent, whose AUTHORITY and ALPN TLVs carry what the relay
read in the ClientHello. Plain backends (``test_relay.Backend``) echo every byte, so what
comes back shows that the bytes the probe read were forwarded.
"""

from __future__ import annotations

import socket
import ssl
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomli as tomllib
import trustme

import proxyproto as pp
from cli_process import TIMEOUT, Address
from proxyproto._cli.relay_config import ConfigError, routes_from
from test_relay import BACKENDS, Backend, exchange, target_server
from test_relay_config import configured, to, write

NAMES = ("a.example", "b.example", "c.example", "x.wild.example")


def read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


class TLSBackend(Backend):
    """A threaded server: a PROXY v2 header, then TLS; answers each line with its name."""

    def __init__(self, name: str, context: ssl.SSLContext) -> None:
        self.name = name
        self.context = context
        super().__init__(header=True)

    def handle(self, conn: socket.socket, peer: Address) -> None:
        conn.settimeout(TIMEOUT)
        try:
            # Exactly the header (its length is in bytes 14-15): the TLS bytes stay unread.
            start = read_exactly(conn, 16)
            header, _ = pp.parse(start + read_exactly(conn, int.from_bytes(start[14:], "big")))
            self.headers.put(header)
            with self.context.wrap_socket(conn, server_side=True) as tls:
                line = tls.recv(1024)
                tls.sendall(f"{self.name} {tls.selected_alpn_protocol()} ".encode() + line)
        except (OSError, EOFError, pp.ProxyProtocolError):
            conn.close()

    def next_tlvs(self) -> pp.TLVs:
        header = self.next_header()
        assert header is not None
        return header.tlvs


@contextmanager
def tls_backends(ca: trustme.CA, *names: str) -> Iterator[list[TLSBackend]]:
    certificate = ca.issue_cert(*NAMES, "*.wild.example")
    backends = []
    try:
        for name in names:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            certificate.configure_cert(context)
            context.set_alpn_protocols(["h2", "http/1.1", "acme-tls/1"])
            backends.append(TLSBackend(name, context))
        yield backends
    finally:
        for backend in backends:
            backend.close()


def tls_request(
    ca: trustme.CA, address: Address, server_name: str, alpns: list[str] | None = None
) -> bytes:
    """One line over TLS through the relay; the backend's answer."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if alpns:
        context.set_alpn_protocols(alpns)
    with (
        socket.create_connection(address, timeout=TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        tls.sendall(b"hello\n")
        return tls.recv(1024)


@BACKENDS
def test_tls_clients_choose_backends_by_sni_and_alpn(
    backend: str, ca: trustme.CA, tmp_path: Path
) -> None:
    config = tmp_path / "relay.toml"
    with tls_backends(ca, "by-name", "by-alpn", "wildcard") as (by_name, by_alpn, wildcard):
        write(
            config,
            f"""
            listen = "127.0.0.1:0"
            send_proxy = "v2"

            [protocols.names]
            protocol = "tls"
            server_names = ["a.example", "B.example."]
            to = {to(by_name.address)}

            [protocols.h2]
            protocol = "tls"
            alpns = ["h2"]
            to = {to(by_alpn.address)}

            [protocols.wild]
            protocol = "tls"
            server_names = ["*.wild.example"]
            to = {to(wildcard.address)}
            """,
        )
        with configured(config, 1, ("--backend", backend)) as (relay, [address]):
            assert tls_request(ca, address, "a.example", ["acme-tls/1", "h2"]) == (
                b"by-name h2 hello\n"  # OpenSSL's server picks by its own preference
            )
            tlvs = by_name.next_tlvs()
            assert tlvs.authority == "a.example"
            # The relay does not see the server's choice: the TLV has the client's first offer.
            assert tlvs.alpn == b"acme-tls/1"
            assert relay.access_log()["route"].endswith("/names")

            assert tls_request(ca, address, "b.example") == b"by-name None hello\n"
            tlvs = by_name.next_tlvs()
            assert (tlvs.authority, tlvs.alpn) == ("b.example", None)

            # The route takes h2, so h2 is the ALPN sent though the client prefers http/1.1.
            assert tls_request(ca, address, "c.example", ["http/1.1", "h2"]) == (
                b"by-alpn h2 hello\n"
            )
            tlvs = by_alpn.next_tlvs()
            assert (tlvs.authority, tlvs.alpn) == ("c.example", b"h2")

            assert tls_request(ca, address, "x.wild.example", ["http/1.1"]) == (
                b"wildcard http/1.1 hello\n"
            )
            assert wildcard.next_tlvs().authority == "x.wild.example"

            # No route takes c.example without h2, and there is no default: dropped.
            with pytest.raises((ssl.SSLError, OSError)):
                tls_request(ca, address, "c.example", ["http/1.1"])
            log = relay.log_line("no-route")
            assert "end=no-route_(tls)" in log


@BACKENDS
def test_http_ssh_and_a_default_route(backend: str, tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    request = b"GET /index.html HTTP/1.1\r\nHost: www.example\r\n\r\n"
    banner = b"SSH-2.0-OpenSSH_9.6\r\n" + b"\x00\x00\x01\x0c\x0a\x14" + bytes(100)
    with (
        target_server(header=True) as web,
        target_server(header=True) as ssh,
        target_server(header=True) as default,
    ):
        write(
            config,
            f"""
            listen = "127.0.0.1:0"
            send_proxy = "v2"
            to = {to(default.address)}

            [protocols.web]
            protocol = "http"
            to = {to(web.address)}

            [protocols.ssh]
            protocol = "ssh"
            to = {to(ssh.address)}
            """,
        )
        with configured(config, 1, ("--backend", backend)) as (relay, [address]):
            # Each backend echoes: every byte the probe read reached it, in order.
            assert exchange(address, request)[0] == request
            assert web.next_header() is not None
            assert relay.access_log()["route"].endswith("/web")
            assert exchange(address, banner)[0] == banner
            assert ssh.next_header() is not None
            assert relay.access_log()["route"].endswith("/ssh")
            unknown = b"\x00\x01binary protocol"
            assert exchange(address, unknown)[0] == unknown
            header = default.next_header()
            assert header is not None
            assert header.tlvs.authority is None
            log = relay.access_log()
            assert log["route"] == "127.0.0.1:0"
            assert log["up"] == str(len(unknown))


def web_only(config: Path, web: Backend, probe_timeout: float, more: str = "") -> None:
    """A listener with no default route, an http route to ``web``, and ``more`` tables."""
    write(
        config,
        f"""
        listen = "127.0.0.1:0"
        probe_timeout = {probe_timeout}

        [protocols.web]
        protocol = "http"
        to = {to(web.address)}
        """
        + more,
    )


@BACKENDS
def test_no_match_without_default_is_dropped(backend: str, tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    with target_server() as web:
        web_only(config, web, 0.5)
        with configured(config, 1, ("--backend", backend)) as (relay, [address]):
            assert exchange(address, b"SSH-2.0-x\r\n")[0] == b""
            # Only http is probed for: SSH is no known protocol here.
            line = relay.log_line("no-route")
            assert "end=no-route_(unknown)" in line
            assert " up=0 " in line  # nothing forwarded
            # A client that sends nothing is dropped once the probe timeout is over.
            with socket.create_connection(address, timeout=TIMEOUT) as silent:
                assert silent.recv(10) == b""
            assert "end=no-route_(unknown)" in relay.log_line("no-route")
            assert web.connections == 0


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('protocol = "gopher"\nto = "127.0.0.1:1"', "not one of"),
        ('protocol = "http"', "to: missing"),
        ('to = "127.0.0.1:1"', "protocol: missing"),
        ('protocol = "http"\nto = "127.0.0.1:1"\nserver_names = ["a"]', "tls and quic"),
        ('protocol = "tls"\nto = "127.0.0.1:1"\nsni = ["a"]', "unknown key"),
    ],
)
def test_bad_protocol_tables(table: str, message: str) -> None:
    document = tomllib.loads(f'listen = "127.0.0.1:0"\n[protocols.one]\n{table}\n')
    with pytest.raises(ConfigError, match=r"^relay\.toml: protocols: one: ") as error:
        routes_from(document, {}, source="relay.toml")
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("udp", "protocol", "message"),
    [
        (False, "quic", "probed on UDP only, and this is a TCP listener"),
        (False, "wireguard", "probed on UDP only, and this is a TCP listener"),
        (True, "tls", "probed on TCP only, and this is a UDP listener"),
        (True, "http", "probed on TCP only, and this is a UDP listener"),
    ],
)
def test_a_protocol_of_the_other_transport_is_refused(
    udp: bool, protocol: str, message: str
) -> None:
    """Routes declare their protocol: TCP routes never apply to UDP, nor UDP ones to TCP."""
    document = tomllib.loads(
        f'listen = "127.0.0.1:0"\nudp = {str(udp).lower()}\nsend_proxy = "v2"\n'
        f'[protocols.one]\nprotocol = "{protocol}"\nto = "127.0.0.1:1"\n'
    )
    with pytest.raises(ConfigError, match=r"^relay\.toml: \[top level\] protocols: one: ") as error:
        routes_from(document, {}, source="relay.toml")
    assert message in str(error.value)


@BACKENDS
def test_a_client_hello_in_pieces_is_forwarded_whole(backend: str, tmp_path: Path) -> None:
    from test_probes import client_hello

    hello = client_hello("pieces.example", ["h2"])
    config = tmp_path / "relay.toml"
    with target_server(header=True) as echo:
        write(
            config,
            f"""
            listen = "127.0.0.1:0"
            send_proxy = "v2"

            [protocols.pieces]
            protocol = "tls"
            server_names = ["pieces.example"]
            to = {to(echo.address)}
            """,
        )
        with (
            configured(config, 1, ("--backend", backend)) as (relay, [address]),
            socket.create_connection(address, timeout=TIMEOUT) as client,
        ):
            # Three TCP segments (a pause between them): the probe waits for the whole message.
            for piece in (hello[:3], hello[3:100], hello[100:]):
                client.sendall(piece)
                time.sleep(0.05)
            client.shutdown(socket.SHUT_WR)
            back = b""
            while chunk := client.recv(65536):
                back += chunk
            assert back == hello
            header = echo.next_header()
            assert header is not None
            assert (header.tlvs.authority, header.tlvs.alpn) == ("pieces.example", b"h2")
            log = relay.access_log()
            assert (log["route"], log["up"], log["end"]) == (
                "127.0.0.1:0/pieces",
                str(len(hello)),
                "done",
            )


@BACKENDS
def test_metrics_count_routes_and_unrouted_by_reason(backend: str, tmp_path: Path) -> None:
    """``--metrics``: connections and bytes per route; unrouted connections by reason."""
    from cli_process import launch
    from test_metrics import scrape, settled
    from test_probes import client_hello
    from test_relay_config import ConfiguredRelay

    config = tmp_path / "relay.toml"
    request = b"GET / HTTP/1.1\r\nHost: www.example\r\n\r\n"
    with target_server() as web:
        more = '[protocols.a]\nprotocol = "tls"\nserver_names = ["a.example"]\n'
        more += f"to = {to(web.address)}\n"
        web_only(config, web, 2, more)
        options = ("--backend", backend, "--metrics", "127.0.0.1:0")
        with launch(
            ConfiguredRelay, "relay", "--config", str(config), *options, start=False
        ) as relay:
            line = relay.stdout.get(timeout=TIMEOUT)
            assert line is not None
            metrics = int(line.rsplit(":", 1)[1].split("/")[0])
            address = relay.next_listening()
            assert exchange(address, request)[0] == request
            assert exchange(address, client_hello("b.example"))[0] == b""
            assert exchange(address, b"\x00\x01binary")[0] == b""
            labels = {"transport": "tcp", "listener": f"127.0.0.1:{address[1]}"}

            def key(name: str, **more: str) -> tuple[str, frozenset[tuple[str, str]]]:
                return (f"proxyproto_relay_{name}_total", frozenset({**labels, **more}.items()))

            wanted = {
                key("connections", route="web"): 1.0,
                key("bytes", route="web", direction="up"): float(len(request)),
                key("bytes", route="web", direction="down"): float(len(request)),
                key("unrouted", reason="tls"): 1.0,
                key("unrouted", reason="unknown"): 1.0,
            }
            assert settled(lambda: scrape(metrics), wanted) == wanted
