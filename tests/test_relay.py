"""``proxyproto relay`` driven as a user would: real processes, real sockets, HAProxy in the chain.

Every relay is ``python -m proxyproto relay`` on 127.0.0.1; the targets are small threaded servers
in this process (:class:`Backend`) that optionally read a PROXY header, then echo every byte back
and pass the client's half-close on. Each wait is bounded and every process is killed in a
``finally``. The relay's own tests run on both anyio backends (``--backend``).
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest

import proxyproto as pp
from cli_process import TIMEOUT, Address, CliProcess, launch
from haproxy_peer import HAProxy, find_haproxy, free_port
from interop import listen, require_haproxy
from loopback_servers import TCPServer
from odd_headers import ODD_HEADERS
from proxyproto._cli import main
from proxyproto._cli.relay_server import target_order
from require_peer import ci_is_set

BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])


# =============================================================================== the targets


class Backend(TCPServer):
    """A threaded TCP echo server on loopback; with ``header``, it reads a PROXY header first.

    ``headers`` receives, per connection, the header read (or ``None``); ``connections`` counts
    the accepted connections.
    """

    def __init__(self, *, header: bool = False) -> None:
        self.header = header
        self.headers: queue.Queue[pp.Header | None] = queue.Queue()
        super().__init__()

    def handle(self, conn: socket.socket, peer: Address) -> None:
        conn.settimeout(TIMEOUT)
        with conn:
            try:
                rest = b""
                if self.header:
                    parser = pp.HeaderParser()
                    event: object = pp.NEED_DATA
                    while event is pp.NEED_DATA:
                        parser.receive_data(conn.recv(65536))
                        event = parser.next_event()
                    assert isinstance(event, pp.Header)
                    self.headers.put(event)
                    rest = parser.trailing_data
                else:
                    self.headers.put(None)
                conn.sendall(rest)
                while data := conn.recv(262144):
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
            except (OSError, pp.ProxyProtocolError):
                pass

    def next_header(self) -> pp.Header | None:
        return self.headers.get(timeout=TIMEOUT)


@contextmanager
def target_server(*, header: bool = False) -> Iterator[Backend]:
    server = Backend(header=header)
    try:
        yield server
    finally:
        server.close()


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# =============================================================================== the relay


class Relay(CliProcess):
    """A running ``proxyproto relay``: its port, its stderr (the access log) line by line."""

    name = "relay"

    def log_line(self, containing: str = "peer=") -> str:
        """The next stderr line that contains ``containing`` (access-log lines by default)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            line = self.stderr.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f"relay exited: {self.process.poll()}"
            if containing in line:
                return line

    def access_log(self) -> dict[str, str]:
        words = self.log_line().split()
        return dict(word.split("=", 1) for word in words if "=" in word)


def relay(
    backend: str, *targets: Address, options: tuple[str, ...] = ()
) -> AbstractContextManager[Relay]:
    to = [arg for target in targets for arg in ("--to", f"{target[0]}:{target[1]}")]
    return launch(Relay, "relay", "--listen", "127.0.0.1:0", *to, "--backend", backend, *options)


def exchange(address: Address, data: bytes, *, prefix: bytes = b"") -> tuple[bytes, Address]:
    """Send ``prefix + data`` (in a thread), half-close, read everything back until EOF.

    Returns what came back and the client's own address.
    """
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        own: Address = sock.getsockname()[:2]
        return exchange_on(sock, data, prefix=prefix), own


def exchange_on(sock: socket.socket, data: bytes, *, prefix: bytes = b"") -> bytes:
    """On the connected ``sock``: send ``prefix + data`` (in a thread), half-close, read
    everything back until EOF."""

    def send() -> None:
        try:
            sock.sendall(prefix + data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # refused by the relay: what comes back (nothing) tells

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    chunks = []
    try:
        while chunk := sock.recv(262144):
            chunks.append(chunk)
    except ConnectionResetError:
        pass  # a refused client's unread bytes make the kernel reset: closed all the same
    sender.join(TIMEOUT)
    return b"".join(chunks)


@contextmanager
def connected(backend: str, data: bytes, *options: str) -> Iterator[tuple[Relay, socket.socket]]:
    """A relay (with ``options``) in front of an echo target, and a client connection through it
    that has sent ``data`` and had it echoed: the connection works; the test goes on from there."""
    with (
        target_server() as target,
        relay(backend, target.address, options=options) as proxy,
        socket.create_connection(proxy.address, timeout=TIMEOUT) as sock,
    ):
        sock.sendall(data)
        assert sock.recv(100) == data
        yield proxy, sock


def still_flows(process: subprocess.Popen[bytes], sock: socket.socket) -> None:
    """After a SIGTERM: the open connection ``sock`` still carries bytes both ways and
    ``process`` waits for it; once the client ends it, ``process`` exits with 0."""
    sock.sendall(b"after")
    assert sock.recv(100) == b"after"
    assert process.poll() is None
    sock.shutdown(socket.SHUT_WR)
    assert sock.recv(100) == b""
    assert process.wait(timeout=TIMEOUT) == 0


def header_through_haproxy(
    binary: str, target: Backend, server: str, *lines: str, size: int = 64 * 1024
) -> tuple[pp.Header, Address, int]:
    """``size`` random bytes from a client through HAProxy (``server`` is its server line's
    address and options, ``lines`` more of its proxy section) and what it sends to, which must
    come back unchanged; the header ``target`` (``header=True``) read, whose source must be the
    client. Returns the header, the client's address and HAProxy's port."""
    port = free_port()
    with HAProxy(listen(f"127.0.0.1:{port}", server, *lines), binary=binary):
        payload = os.urandom(size)
        reply, own = exchange(("127.0.0.1", port), payload)
        assert reply == payload
        header = target.next_header()
        assert header is not None
        assert header.source == own  # the real client, through HAProxy (and what is behind it)
    return header, own, port


# =============================================================================== bytes


@BACKENDS
def test_bytes_intact_both_ways_with_half_close(backend: str) -> None:
    payload = os.urandom(1024 * 1024)
    with target_server() as target, relay(backend, target.address) as proxy:
        reply, own = exchange(proxy.address, payload)
        # The echo server answers everything only after our half-close reached it, then closes
        # its side: both halves were passed on.
        assert reply == payload
        log = proxy.access_log()
        assert log["peer"] == log["client"] == f"127.0.0.1:{own[1]}"
        assert log["target"] == f"127.0.0.1:{target.port}"
        assert (log["up"], log["down"]) == (str(len(payload)), str(len(payload)))
        assert log["end"] == "done"
        assert float(log["duration"]) >= 0
        assert target.next_header() is None  # no --send-proxy: the target saw no header
        assert proxy.stop() == 0


@BACKENDS
def test_half_close_keeps_the_other_direction_open(backend: str) -> None:
    with connected(backend, b"first") as (proxy, sock):  # it works before the half-close
        sock.shutdown(socket.SHUT_WR)
        # Our EOF reached the target, which then closed its side: that EOF comes back.
        assert sock.recv(100) == b""
        assert proxy.access_log()["end"] == "done"


# =============================================================================== headers


@BACKENDS
@pytest.mark.parametrize("version", [1, 2])
def test_send_proxy_gives_the_client_address(backend: str, version: int) -> None:
    with (
        target_server(header=True) as target,
        relay(backend, target.address, options=("--send-proxy", f"v{version}")) as proxy,
    ):
        reply, own = exchange(proxy.address, b"hello")
        assert reply == b"hello"
        header = target.next_header()
        assert header is not None
        assert header.version == version
        assert header.source == own
        assert header.destination == proxy.address


@BACKENDS
def test_chain_keeps_the_original_client(backend: str) -> None:
    # client (own v2 header) -> relay A (accept, send v2) -> relay B (accept, send v1) -> target
    original = pp.Header.proxy(("203.0.113.7", 51234), ("198.51.100.10", 443))
    chain = ("--accept-proxy", "--trusted", "127.0.0.1")
    with (
        target_server(header=True) as target,
        relay(backend, target.address, options=(*chain, "--send-proxy", "v1")) as second,
        relay(backend, second.address, options=(*chain, "--send-proxy", "v2")) as first,
    ):
        payload = os.urandom(100_000)
        reply, own = exchange(first.address, payload, prefix=original.to_bytes())
        assert reply == payload
        header = target.next_header()
        assert header is not None
        assert header.version == 1
        assert header.source == ("203.0.113.7", 51234)
        assert header.destination == ("198.51.100.10", 443)
        log = first.access_log()
        assert log["peer"] == f"127.0.0.1:{own[1]}"
        assert log["client"] == "203.0.113.7:51234"
        assert second.access_log()["client"] == "203.0.113.7:51234"


@BACKENDS
def test_access_log_lines_survive_odd_headers(backend: str) -> None:
    with (
        target_server() as target,
        relay(backend, target.address, options=("--accept-proxy",)) as proxy,
    ):
        for name, data in ODD_HEADERS.items():
            reply, own = exchange(proxy.address, b"hi", prefix=data)
            assert reply == b"hi", name
            line = proxy.log_line(f"peer=127.0.0.1:{own[1]} ")
            assert line.isprintable(), (name, line)
            log = dict(word.split("=", 1) for word in line.split() if "=" in word)
            assert log["end"] == "done", (name, line)  # one line, every field in it
            if name == "unix-path-not-utf8":
                assert log["client"] == "unix:/tmp/\\xff\\xfe\\x1b[2J\\x1b[31m"


@BACKENDS
def test_accept_proxy_refuses_a_connection_without_header(backend: str) -> None:
    with (
        target_server() as target,
        relay(
            backend, target.address, options=("--accept-proxy", "--trusted", "127.0.0.1")
        ) as proxy,
    ):
        reply, _ = exchange(proxy.address, b"GET / HTTP/1.0\r\n\r\n")
        assert reply == b""
        assert target.connections == 0
        # The refusal is logged by the listener, not as a relayed connection.
        assert "127.0.0.1" in proxy.log_line("127.0.0.1")


@BACKENDS
@pytest.mark.parametrize("trusted", [True, False])
@pytest.mark.parametrize("sends_header", [True, False])
def test_trusted_decides_who_may_connect(backend: str, trusted: bool, sends_header: bool) -> None:
    # Only a trusted peer that sends a header is relayed; a stranger (127.0.0.1 is not in
    # 10.0.0.0/8) is refused whether or not it sends one, and the target never sees its bytes.
    header = pp.Header.proxy(("203.0.113.7", 51234), ("198.51.100.10", 443)).to_bytes()
    cidr = "127.0.0.0/8" if trusted else "10.0.0.0/8"
    with (
        target_server() as target,
        relay(backend, target.address, options=("--accept-proxy", "--trusted", cidr)) as proxy,
    ):
        reply, own = exchange(proxy.address, b"hi", prefix=header if sends_header else b"")
        if trusted and sends_header:
            assert reply == b"hi"
            assert proxy.access_log()["client"] == "203.0.113.7:51234"
            return
        assert reply == b""
        line = proxy.log_line("refused connection")
        assert f"refused connection from 127.0.0.1:{own[1]}: " in line
        assert ("no PROXY header" if trusted else "not a trusted peer") in line
        assert "WARNING" in line
        # The next line is the next connection's: this one was logged once, never relayed.
        assert exchange(proxy.address, b"", prefix=header)[0] == b""
        if trusted:
            assert proxy.access_log()["end"] == "done"
        else:
            assert "not a trusted peer" in proxy.log_line("refused connection")
        assert target.connections == (1 if trusted else 0)


# =============================================================================== targets


@BACKENDS
def test_refusing_target_is_skipped(backend: str) -> None:
    refused = ("127.0.0.1", closed_port())
    with target_server() as target, relay(backend, refused, target.address) as proxy:
        reply, _ = exchange(proxy.address, b"still served")
        assert reply == b"still served"
        assert proxy.access_log()["target"] == f"127.0.0.1:{target.port}"


@BACKENDS
def test_no_target_reachable_closes_the_client(backend: str) -> None:
    targets = [("127.0.0.1", closed_port()), ("127.0.0.1", closed_port())]
    with relay(backend, *targets) as proxy:
        reply, _ = exchange(proxy.address, b"nobody home")
        assert reply == b""
        warning = proxy.log_line("no target reachable")
        assert all(f"127.0.0.1:{port}" in warning for _, port in targets)
        log = proxy.access_log()
        assert (log["target"], log["end"]) == ("-", "no-target")
        assert proxy.stop() == 0


def test_source_ip_keeps_a_client_on_one_target() -> None:
    # The proxied client's IP decides: distinct clients, sent as headers, spread over targets.
    clients = [f"192.0.2.{n}" for n in range(1, 21)]
    with target_server(header=True) as a, target_server(header=True) as b:
        options = ("--balance", "source-ip", "--accept-proxy", "--send-proxy", "v2")
        with relay("asyncio", a.address, b.address, options=options) as proxy:
            for client in clients * 2:
                header = pp.Header.proxy((client, 1000), ("198.51.100.10", 443)).to_bytes()
                assert exchange(proxy.address, b"x", prefix=header)[0] == b"x"
                expected = target_order([a.address, b.address], "source-ip", (client, 1))[0]
                assert proxy.access_log()["target"] == f"127.0.0.1:{expected[1]}"
            assert a.connections + b.connections == 2 * len(clients)
            # Both used, each always by the same clients.
            assert a.connections
            assert b.connections


def test_target_order() -> None:
    targets = [("a", 1), ("b", 2), ("c", 3)]
    assert target_order(targets, "none", ("192.0.2.1", 1)) == targets
    for balance in ("source-ip", "source-socket", "random"):
        assert sorted(target_order(targets, balance, ("192.0.2.1", 1))) == targets
    # source-ip ignores the port; source-socket does not (some port moves this client).
    ip = target_order(targets, "source-ip", ("192.0.2.1", 1))
    assert all(target_order(targets, "source-ip", ("192.0.2.1", p)) == ip for p in range(50))
    assert (
        len({tuple(target_order(targets, "source-socket", ("192.0.2.1", p))) for p in range(50)})
        > 1
    )
    assert target_order(targets, "source-ip", "/run/client.sock") == targets


# =============================================================================== shutdown


def refused_soon(address: Address) -> bool:
    """Whether connecting to ``address`` is refused within a few seconds."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(address, timeout=TIMEOUT).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.05)
    return False


@BACKENDS
def test_sigterm_lets_an_open_connection_finish(backend: str) -> None:
    with connected(backend, b"before") as (proxy, sock):
        proxy.process.send_signal(signal.SIGTERM)
        proxy.log_line("stopping on SIGTERM")
        # No new connections ...
        assert refused_soon(proxy.address)
        # ... but the open one still flows, until it ends.
        still_flows(proxy.process, sock)
        assert proxy.access_log()["end"] == "done"


@BACKENDS
def test_grace_period_ends_idle_connections(backend: str) -> None:
    with connected(backend, b"12345", "--grace", "0.5") as (proxy, sock):
        started = time.monotonic()
        assert proxy.stop(signal.SIGINT) == 0
        # Not before the grace period (the connection stays open otherwise, and stop()
        # would time out): the log line below says the grace period ended it.
        assert time.monotonic() - started >= 0.5
        assert sock.recv(100) == b""  # closed by the relay
        assert "grace period over" in proxy.log_line("grace")
        log = proxy.access_log()
        assert log["end"] == "cancelled"
        assert (log["up"], log["down"]) == ("5", "5")  # what flowed before the grace period ended


# =============================================================================== HAProxy


@pytest.fixture(scope="module")
def haproxy_binary() -> str:
    return require_haproxy(find_haproxy(), ci=ci_is_set())


@pytest.mark.haproxy
@pytest.mark.parametrize("option", ["send-proxy", "send-proxy-v2"])
def test_haproxy_in_front_of_the_relay(haproxy_binary: str, option: str) -> None:
    # client -> HAProxy (send-proxy[-v2]) -> relay (--accept-proxy, --send-proxy v2) -> target
    with (
        target_server(header=True) as target,
        relay(
            "asyncio",
            target.address,
            options=("--accept-proxy", "--trusted", "127.0.0.1", "--send-proxy", "v2"),
        ) as proxy,
    ):
        server = f"127.0.0.1:{proxy.port} {option}"
        header, own, port = header_through_haproxy(haproxy_binary, target, server, size=256 * 1024)
        assert header.destination == ("127.0.0.1", port)
        log = proxy.access_log()
        assert log["client"] == f"127.0.0.1:{own[1]}"
        assert log["peer"] != log["client"]  # the peer is HAProxy


@pytest.mark.haproxy
def test_haproxy_behind_the_relay(haproxy_binary: str) -> None:
    # client -> relay (--send-proxy v2) -> HAProxy (accept-proxy, send-proxy v1) -> target
    with target_server(header=True) as target:
        port = free_port()
        config = (
            "listen fe\n"
            f"    bind 127.0.0.1:{port} accept-proxy\n"
            f"    server be 127.0.0.1:{target.port} send-proxy\n"
        )
        with (
            HAProxy(config, binary=haproxy_binary),
            relay("asyncio", ("127.0.0.1", port), options=("--send-proxy", "v2")) as proxy,
        ):
            reply, own = exchange(proxy.address, b"through haproxy")
            assert reply == b"through haproxy"
            header = target.next_header()
            assert header is not None
            assert header.source == own
            assert header.destination == proxy.address


# =============================================================================== usage


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["relay", "--listen", "127.0.0.1:0"], "--to"),
        (["relay", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:0"], "port 0"),
        (["relay", "--listen", "nowhere", "--to", "127.0.0.1:1"], "HOST:PORT"),
        (["relay", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:99999"], "65535"),
        (["relay", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:1", "--send-proxy", "v3"], "v3"),
        (
            ["relay", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:1", "--trusted", "10.0.0.0/8"],
            "--accept-proxy",
        ),
        (
            [
                "relay",
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:1",
                "--accept-proxy",
                "--trusted",
                "10.0.0.1/8",
            ],
            "not an IP address or network",
        ),
        (["relay", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:1", "--grace", "-1"], "seconds"),
        (
            ["relay", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:1", "--udp-idle-lifetime", "5"],
            "--udp-idle-lifetime needs --udp",
        ),
        (
            [
                "relay",
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:1",
                "--udp-max-connections",
                "9",
            ],
            "--udp-max-connections needs --udp",
        ),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.splitlines()[-1].startswith("proxyproto relay: error: ")  # one line says why


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["relay", "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "--send-proxy" in out
    assert "--balance" in out


def test_cannot_listen(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        status = main(["relay", "--listen", f"127.0.0.1:{port}", "--to", "127.0.0.1:1"])
    assert status == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
