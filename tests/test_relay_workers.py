"""``proxyproto relay --workers N``: real worker processes on loopback, SO_REUSEPORT.

Each relay runs in a new session, so that the ``finally`` kills it and its workers together
(by the process group of the process started here). Which worker served a connection is read
from the access log: each worker's lines end in ``worker=N``. Connections are opened until both
workers have been seen, up to a bound (the kernel's hash spreads them; it does not alternate).
Every wait is bounded by :data:`~cli_process.TIMEOUT`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_process import TIMEOUT, Address, CliProcess, launch
from loopback_servers import LoopbackServer
from proxyproto._cli import main
from surfaces import wait_for
from test_relay import still_flows, target_server

# Linux: SO_REUSEPORT spreads connections there (elsewhere the last socket bound takes them),
# and the worker processes are found in /proc.
pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"),
    reason="SO_REUSEPORT load spreading is Linux's",
)

BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])

#: At most this many connections (or UDP clients) to see both workers serve one.
SPREAD_TRIES = 200


class Workers(CliProcess):
    """A running ``proxyproto relay --workers N`` in a session of its own."""

    name = "relay"

    def lines(self, containing: str, count: int) -> list[str]:
        """The next ``count`` stderr lines that contain ``containing``."""
        found: list[str] = []
        deadline = time.monotonic() + TIMEOUT
        while len(found) < count:
            line = self.stderr.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f"relay exited: {self.process.poll()}; {found}"
            if containing in line:
                found.append(line)
        return found

    def worker_pids(self) -> list[int]:
        """The worker processes' ids (children running multiprocessing's spawn_main)."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().rpartition(")")[2].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    command = cmdline.read()
            except (OSError, ValueError, IndexError):
                continue
            if ppid == self.process.pid and b"spawn_main" in command:
                pids.append(int(entry))
        return sorted(pids)


def workers(*args: str, start: bool = True) -> contextlib.AbstractContextManager[Workers]:
    return launch(Workers, "relay", *args, start=start, session=True)


def relay_workers(
    backend: str, target: Address, *options: str
) -> contextlib.AbstractContextManager[Workers]:
    return workers(
        "--listen",
        "127.0.0.1:0",
        "--to",
        f"{target[0]}:{target[1]}",
        "--workers",
        "2",
        "--backend",
        backend,
        *options,
    )


def worker_of(line: str) -> str:
    return line.rsplit(" worker=", 1)[1]


def round_trip(address: Address, data: bytes = b"ping") -> None:
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := sock.recv(4096):
            got += chunk
        assert got == data


def gone(pids: list[int]) -> bool:
    """Whether every process of ``pids`` has exited, within :data:`TIMEOUT`."""
    return bool(wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in pids), TIMEOUT))


# =============================================================================== TCP


@BACKENDS
def test_connections_land_on_both_workers(backend: str) -> None:
    with target_server() as target, relay_workers(backend, target.address) as proxy:
        pids = proxy.worker_pids()
        assert len(pids) == 2
        seen: set[str] = set()
        for _ in range(SPREAD_TRIES):
            round_trip(proxy.address)
            seen.add(worker_of(proxy.lines("peer=", 1)[0]))
            if len(seen) == 2:
                break
        assert seen == {"1", "2"}
        assert proxy.stop() == 0
        assert gone(pids)


@contextlib.contextmanager
def relayed(backend: str, *options: str) -> Iterator[tuple[Workers, socket.socket]]:
    """Two workers, and a connection through them that has carried a byte both ways."""
    with (
        target_server() as target,
        relay_workers(backend, target.address, *options) as proxy,
        socket.create_connection(proxy.address, timeout=TIMEOUT) as sock,
    ):
        sock.sendall(b"x")
        assert sock.recv(100) == b"x"
        yield proxy, sock


@BACKENDS
def test_sigterm_lets_open_connections_finish_in_every_worker(backend: str) -> None:
    with relayed(backend) as (proxy, sock):
        pids = proxy.worker_pids()
        proxy.process.send_signal(signal.SIGTERM)
        stopping = proxy.lines("stopping on SIGTERM", 2)
        assert {worker_of(line) for line in stopping} == {"1", "2"}
        # The open connection still flows (--grace, 10 s by default), until the client ends it.
        still_flows(proxy.process, sock)
        assert gone(pids)


@BACKENDS
def test_grace_ends_open_connections(backend: str) -> None:
    with relayed(backend, "--grace", "0.5") as (proxy, sock):
        assert proxy.stop(signal.SIGINT) == 0
        assert sock.recv(100) == b""  # closed by its worker once the grace period ended
        assert "grace period over" in proxy.lines("grace", 1)[0]
        assert "end=cancelled" in proxy.lines("peer=", 1)[0]


@BACKENDS
def test_a_second_signal_closes_connections_at_once(backend: str) -> None:
    with relayed(backend, "--grace", "60") as (proxy, sock):
        proxy.process.send_signal(signal.SIGTERM)
        proxy.lines("stopping on SIGTERM", 2)
        proxy.process.send_signal(signal.SIGTERM)
        assert proxy.process.wait(timeout=TIMEOUT) == 0
        assert sock.recv(100) == b""
        # Closed by its worker, which wrote its access-log line.
        assert "end=cancelled" in proxy.lines("peer=", 1)[0]


def test_a_killed_worker_stops_the_others() -> None:
    """As for ``proxyproto hypercorn --workers``: a worker that dies (here: SIGKILL) is
    reported and the others stop as on SIGTERM; the exit status is 1."""
    with target_server() as target, relay_workers("asyncio", target.address) as proxy:
        pids = proxy.worker_pids()
        os.kill(pids[0], signal.SIGKILL)
        assert proxy.process.wait(timeout=TIMEOUT) == 1
        assert gone(pids)
        assert f"worker {pids[0]} exited with status -9: stopping" in proxy.drain()


def test_a_worker_stopped_alone_is_replaced() -> None:
    with target_server() as target, relay_workers("asyncio", target.address) as proxy:
        pids = proxy.worker_pids()
        os.kill(pids[0], signal.SIGTERM)
        proxy.lines("starting another", 1)
        replaced = wait_for(lambda: len(proxy.worker_pids()) == 2 and proxy.worker_pids(), TIMEOUT)
        assert len(replaced) == 2
        assert pids[0] not in replaced
        round_trip(proxy.address)
        assert proxy.stop() == 0


def test_a_reload_reaches_every_worker(tmp_path: Path) -> None:
    with target_server() as first, target_server() as second:
        port = free_tcp_port()
        config = tmp_path / "relay.toml"
        config.write_text(
            f'listen = "127.0.0.1:{port}"\nto = ["127.0.0.1:{first.port}"]\nworkers = 2\n'
        )
        with workers("--config", str(config)) as proxy:
            for _ in range(SPREAD_TRIES // 10):
                round_trip(proxy.address)
            assert second.connections == 0
            time.sleep(0.05)  # a modification time that differs, on coarse clocks too
            config.write_text(
                f'listen = "127.0.0.1:{port}"\nto = ["127.0.0.1:{second.port}"]\nworkers = 2\n'
            )
            applied = proxy.lines("reload applied", 2)
            assert {worker_of(line) for line in applied} == {"1", "2"}
            before = first.connections
            for _ in range(SPREAD_TRIES // 10):
                round_trip(proxy.address)
            assert first.connections == before
            assert second.connections == SPREAD_TRIES // 10
            assert proxy.stop() == 0


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_metrics_sum_the_workers() -> None:
    pytest.importorskip("prometheus_client")
    metrics_port = free_tcp_port()
    with target_server() as target:
        options = ("--metrics", f"127.0.0.1:{metrics_port}")
        with workers(
            *("--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{target.port}", "--workers", "2"),
            *options,
            start=False,
        ) as proxy:
            assert proxy.stdout.get(timeout=TIMEOUT) == (
                f"metrics on http://127.0.0.1:{metrics_port}/metrics"
            )
            proxy.start()
            assert_metrics_sum(proxy, metrics_port)


def assert_metrics_sum(proxy: Workers, metrics_port: int) -> None:
    seen: set[str] = set()
    connections = 0
    while len(seen) < 2 and connections < SPREAD_TRIES:
        round_trip(proxy.address)
        connections += 1
        seen.add(worker_of(proxy.lines("peer=", 1)[0]))
    assert seen == {"1", "2"}
    deadline = time.monotonic() + TIMEOUT
    total = 0.0
    while time.monotonic() < deadline:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            text = response.read().decode()
        total = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("proxyproto_connections_accepted_total{")
        )
        if total >= connections:
            break
        time.sleep(0.1)
    assert total == connections
    assert proxy.stop() == 0


# =============================================================================== UDP


class UDPEcho(LoopbackServer):
    """A threaded UDP echo server on loopback."""

    def __init__(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        super().__init__(sock)

    def step(self) -> None:
        data, source = self.sock.recvfrom(65536)
        self.sock.sendto(data, source)


@BACKENDS
def test_udp_clients_land_on_both_workers_and_stay_on_one(backend: str) -> None:
    echo = UDPEcho()
    try:
        with relay_workers(backend, echo.address, "--udp") as proxy:
            clients: list[socket.socket] = []
            try:
                for number in range(SPREAD_TRIES // 4):
                    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    client.settimeout(TIMEOUT)
                    client.connect(proxy.address)
                    clients.append(client)
                    for turn in range(3):  # one client's datagrams: one pseudo connection
                        payload = f"{number}:{turn}".encode()
                        client.send(payload)
                        assert client.recv(100) == payload
                assert proxy.stop() == 0
                # One access-log line per pseudo connection, written when it ends (here: the stop).
                ended = proxy.lines("peer=", len(clients))
            finally:
                for client in clients:
                    client.close()
        by_client: dict[str, set[str]] = {}
        for line in ended:
            peer = line.split("peer=", 1)[1].split()[0]
            by_client.setdefault(peer, set()).add(worker_of(line))
        assert len(by_client) == len(clients)  # each client: one pseudo connection, one worker
        assert all(len(served) == 1 for served in by_client.values())
        assert set().union(*by_client.values()) == {"1", "2"}
    finally:
        echo.close()


# =============================================================================== usage


def test_port_0_in_a_file_with_workers_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('listen = "127.0.0.1:0"\nto = ["127.0.0.1:9"]\nworkers = 2\n')
    assert main(["relay", "--config", str(config)]) == 2
    assert "listen: port 0 with workers" in capsys.readouterr().err


def test_workers_is_a_top_level_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('[[route]]\nlisten = "127.0.0.1:9"\nto = ["127.0.0.1:9"]\nworkers = 2\n')
    assert main(["relay", "--config", str(config)]) == 2
    assert "[route 1] workers: a top-level setting only" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "x"])
def test_workers_must_be_positive(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["relay", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:9", "--workers", value]
    assert main(argv) == 2
    assert "--workers" in capsys.readouterr().err


def test_without_so_reuseport(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delattr(socket, "SO_REUSEPORT")
    assert main(["relay", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:9", "--workers", "2"]) == 2
    assert "--workers needs SO_REUSEPORT" in capsys.readouterr().err


def test_a_port_taken_stops_every_worker() -> None:
    """A worker that cannot listen (the port is another socket's, without SO_REUSEPORT) exits
    with status 1, and so does the relay, having stopped the others."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with workers(
            "--listen", f"127.0.0.1:{port}", "--to", "127.0.0.1:9", "--workers", "2", start=False
        ) as proxy:
            assert proxy.process.wait(timeout=TIMEOUT) == 1
            errors = proxy.drain()
            assert f"cannot listen on 127.0.0.1:{port}" in errors
            assert "exited with status 1: stopping" in errors
            assert proxy.stdout.get(timeout=TIMEOUT) is None  # never "listening on"
