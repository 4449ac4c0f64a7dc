"""``proxyproto relay --listen unix:/path``: TCP relaying from a UNIX-socket listener.

Real ``python -m proxyproto relay`` processes, listening on a socket file in a fresh short
directory (a UNIX path is at most 107 bytes: pytest's ``tmp_path`` can be longer), in front of the
threaded TCP echo targets of ``test_relay``; HAProxy in front over the UNIX socket
(``server be unix@PATH send-proxy-v2``). Each wait is bounded; every process is killed in a
``finally``.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import proxyproto as pp
from cli_process import TIMEOUT, launch
from haproxy_peer import HAProxy, find_haproxy, free_port
from interop import listen, require_haproxy
from proxyproto._cli import main
from require_peer import ci_is_set
from test_relay import BACKENDS, Relay, exchange, exchange_on, target_server
from test_relay_config import write


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    directory = tempfile.mkdtemp(prefix="pp-unix-", dir="/tmp")
    try:
        yield Path(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class UnixRelay(Relay):
    """A relay whose first route listens on a UNIX socket: ``path`` is the socket file's."""

    def start(self) -> None:
        line = self.stdout.get(timeout=TIMEOUT)
        assert line is not None, f"relay exited: {self.drain()}"
        assert line.startswith("listening on unix:"), line
        self.path = line.removeprefix("listening on unix:")


@contextmanager
def unix_relay(backend: str, path: Path, *options: str) -> Iterator[UnixRelay]:
    with launch(
        UnixRelay, "relay", "--listen", f"unix:{path}", "--backend", backend, *options
    ) as running:
        assert running.path == str(path)
        yield running


def unix_exchange(path: str | Path, data: bytes, *, prefix: bytes = b"") -> bytes:
    """Send ``prefix + data`` over the UNIX socket, half-close, read everything until EOF."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(path))
        return exchange_on(sock, data, prefix=prefix)


# =============================================================================== relaying


@BACKENDS
@pytest.mark.parametrize("version", [1, 2])
def test_a_unix_client_is_sent_as_local(backend: str, version: int, socket_dir: Path) -> None:
    """No TCP client to name: LOCAL (v2) / UNKNOWN (v1); the log names the listener's path."""
    path = socket_dir / "relay.sock"
    payload = os.urandom(300_000)
    with (
        target_server(header=True) as target,
        unix_relay(
            backend, path, "--to", f"127.0.0.1:{target.port}", "--send-proxy", f"v{version}"
        ) as relay,
    ):
        assert path.is_socket()
        assert unix_exchange(path, payload) == payload
        header = target.next_header()
        assert header is not None
        assert header.version == version
        if version == 2:
            assert header.command is pp.Command.LOCAL
        else:
            assert header.family is pp.Family.UNSPEC  # PROXY UNKNOWN
        assert header.source is None
        log = relay.access_log()
        assert log["peer"] == log["client"] == log["route"] == f"unix:{path}"
        assert log["target"] == f"127.0.0.1:{target.port}"
        assert (log["up"], log["down"], log["end"]) == (str(len(payload)),) * 2 + ("done",)
        assert relay.stop() == 0
    assert not path.exists()  # removed on exit


@BACKENDS
@pytest.mark.parametrize("trusted", [("--trusted", "unix"), ()])
def test_a_trusted_unix_peers_header_is_carried(
    backend: str, trusted: tuple[str, ...], socket_dir: Path
) -> None:
    """With ``--accept-proxy`` (``--trusted unix``, or no list), the header's client goes on."""
    path = socket_dir / "relay.sock"
    inbound = pp.Header.proxy(("203.0.113.7", 51234), ("198.51.100.10", 443)).to_bytes()
    with (
        target_server(header=True) as target,
        unix_relay(
            backend,
            path,
            "--to",
            f"127.0.0.1:{target.port}",
            "--accept-proxy",
            *trusted,
            "--send-proxy",
            "v1",
        ) as relay,
    ):
        assert unix_exchange(path, b"hello", prefix=inbound) == b"hello"
        header = target.next_header()
        assert header is not None
        assert (header.version, header.source) == (1, ("203.0.113.7", 51234))
        assert header.destination == ("198.51.100.10", 443)
        log = relay.access_log()
        assert (log["peer"], log["client"]) == (f"unix:{path}", "203.0.113.7:51234")
        # A header is required: a UNIX peer without one is refused, never relayed.
        assert unix_exchange(path, b"GET / HTTP/1.0\r\n\r\n") == b""
        assert "no PROXY header" in relay.log_line("refused connection")
        assert target.connections == 1


# =============================================================================== the file


@BACKENDS
def test_a_stale_socket_file_is_replaced(backend: str, socket_dir: Path) -> None:
    """A socket file nobody listens on (a relay killed with SIGKILL) is taken over."""
    path = socket_dir / "relay.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.listen()
    dead.close()  # the file stays; connecting to it is refused
    assert path.is_socket()
    with target_server() as target:
        with unix_relay(backend, path, "--to", f"127.0.0.1:{target.port}") as first:
            assert unix_exchange(path, b"one") == b"one"
            first.process.kill()
            first.process.wait(TIMEOUT)
        assert path.is_socket()  # left behind by the killed relay
        with unix_relay(backend, path, "--to", f"127.0.0.1:{target.port}") as second:
            assert unix_exchange(path, b"two") == b"two"
            assert second.stop() == 0
    assert not path.exists()


def test_a_live_socket_is_not_taken(socket_dir: Path) -> None:
    path = socket_dir / "relay.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(str(path))
        live.listen()
        with launch(
            Relay, "relay", "--listen", f"unix:{path}", "--to", "127.0.0.1:1", start=False
        ) as relay:
            assert relay.process.wait(TIMEOUT) == 1
            assert f"cannot listen on unix:{path}: another process listens on" in relay.drain()
        # Still the live socket's: connecting reaches it.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))
            live.accept()[0].close()


def test_a_file_that_is_not_a_socket_is_left_alone(socket_dir: Path) -> None:
    path = socket_dir / "relay.sock"
    path.write_text("keep me")
    with launch(
        Relay, "relay", "--listen", f"unix:{path}", "--to", "127.0.0.1:1", start=False
    ) as relay:
        assert relay.process.wait(TIMEOUT) == 1
        assert "exists and is not a socket" in relay.drain()
    assert path.read_text() == "keep me"


@BACKENDS
def test_a_unix_route_in_the_config_file(backend: str, socket_dir: Path) -> None:
    """``listen = "unix:/path"`` in a ``[[route]]`` beside a TCP one; ``trusted = ["unix"]``."""
    path = socket_dir / "relay.sock"
    config = socket_dir / "relay.toml"
    inbound = pp.Header.proxy(("203.0.113.7", 51234), ("198.51.100.10", 443)).to_bytes()
    with target_server(header=True) as target:
        write(
            config,
            f"""
            to = "127.0.0.1:{target.port}"
            send_proxy = "v2"

            [[route]]
            listen = "127.0.0.1:0"

            [[route]]
            listen = "unix:{path}"
            accept_proxy = true
            trusted = ["unix", "10.0.0.0/8"]
            """,
        )
        with launch(
            Relay, "relay", "--config", str(config), "--backend", backend, start=False
        ) as relay:
            tcp = relay.next_listening()
            assert relay.stdout.get(timeout=TIMEOUT) == f"listening on unix:{path}"
            assert unix_exchange(path, b"over unix", prefix=inbound) == b"over unix"
            header = target.next_header()
            assert header is not None
            assert header.source == ("203.0.113.7", 51234)
            assert relay.access_log()["route"] == f"unix:{path}"
            reply, own = exchange(tcp, b"over tcp")
            assert reply == b"over tcp"
            header = target.next_header()
            assert header is not None
            assert header.source == own
            assert relay.stop() == 0
    assert not path.exists()


def test_a_reload_that_removes_the_unix_route_removes_its_file(socket_dir: Path) -> None:
    path = socket_dir / "relay.sock"
    config = socket_dir / "relay.toml"
    with target_server() as target:
        tcp_route = (
            f'[[route]]\nname = "tcp"\nlisten = "127.0.0.1:0"\nto = "127.0.0.1:{target.port}"\n'
        )
        unix_route = tcp_route.replace('"tcp"', '"unix"').replace("127.0.0.1:0", f"unix:{path}")
        write(config, tcp_route + unix_route)
        with launch(Relay, "relay", "--config", str(config), start=False) as relay:
            relay.next_listening()
            assert relay.stdout.get(timeout=TIMEOUT) == f"listening on unix:{path}"
            assert unix_exchange(path, b"before") == b"before"
            write(config, tcp_route)
            assert "closed: unix" in relay.log_line("reload applied")
            assert not path.exists()
            assert relay.stop() == 0


# =============================================================================== refused


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--workers", "2"), "--listen: a UNIX socket cannot be shared by workers"),
        (("--udp",), "--listen: UNIX-socket listeners are for TCP relaying only"),
        (
            ("--accept-proxy", "--trusted", "127.0.0.1"),
            "--trusted: no entry covers the peers of a UNIX-socket listener: add unix",
        ),
        (("--accept-proxy", "--trusted", "unixx"), "'unixx' is not an IP address"),
    ],
)
def test_usage_errors(
    options: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["relay", "--listen", "unix:/tmp/pp-never.sock", "--to", "127.0.0.1:1", *options]
    assert main(argv) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("proxyproto relay: error: ")
    assert message in last
    assert not os.path.exists("/tmp/pp-never.sock")


def test_config_errors(socket_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = socket_dir / "relay.toml"
    config.write_text(
        'workers = 2\nto = "127.0.0.1:1"\n[[route]]\nlisten = "unix:/tmp/pp-never.sock"\n'
    )
    assert main(["relay", "--config", str(config)]) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert "[route 1] listen: a UNIX socket cannot be shared by workers" in last


# =============================================================================== HAProxy


@pytest.mark.haproxy
def test_haproxy_in_front_over_a_unix_socket(socket_dir: Path) -> None:
    # client -> HAProxy (server unix@PATH send-proxy-v2) -> relay (unix:PATH, --accept-proxy
    # --trusted unix, --send-proxy v2) -> TCP target: the target learns the real client.
    binary = require_haproxy(find_haproxy(), ci=ci_is_set())
    path = socket_dir / "relay.sock"
    with (
        target_server(header=True) as target,
        unix_relay(
            "asyncio",
            path,
            "--to",
            f"127.0.0.1:{target.port}",
            "--accept-proxy",
            "--trusted",
            "unix",
            "--send-proxy",
            "v2",
        ) as relay,
    ):
        port = free_port()
        with HAProxy(listen(f"127.0.0.1:{port}", f"unix@{path} send-proxy-v2"), binary=binary):
            payload = os.urandom(256 * 1024)
            reply, own = exchange(("127.0.0.1", port), payload)
            assert reply == payload
            header = target.next_header()
            assert header is not None
            assert header.source == own
            assert header.destination == ("127.0.0.1", port)
            log = relay.access_log()
            assert (log["peer"], log["client"]) == (f"unix:{path}", f"127.0.0.1:{own[1]}")
