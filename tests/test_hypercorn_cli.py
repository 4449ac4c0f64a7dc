"""``proxyproto hypercorn``: the command line, with real worker processes and real requests.

Each test runs ``python -m proxyproto hypercorn asgi_client_app:app --bind 127.0.0.1:0 ...`` in
a new session (so that ``finally`` kills the server and its workers together), reads the port
from its ``listening on`` line, and talks HTTP/1.1 over loopback sockets opened with our testing
kit's :func:`proxyproto.testing.open_socket`: a PROXY v2 header and a request in one segment
(``coalesce``), ``Connection: close``. The real peers come last: ``curl
--haproxy-protocol``, and HAProxy with ``send-proxy-v2`` in front.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import ssl
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

import proxyproto as pp
from asgi_helpers import keep_alive_clients
from cli_process import SessionProcess, in_session
from interop import curl_haproxy_protocol, haproxy_send_proxy_v2, has_ipv6_loopback
from proxyproto import testing

pytest.importorskip("hypercorn")

import proxyproto._cli.hypercorn

SERVER = ("198.51.100.10", 443)
WORKER_CLASSES = [
    "asyncio",
    pytest.param(
        "trio",
        marks=pytest.mark.skipif(find_spec("trio") is None, reason="trio is not installed"),
    ),
]


class Server(SessionProcess):
    """A running ``proxyproto hypercorn asgi_client_app:app``."""

    def start(self) -> None:
        super().start()
        host, _port = self.addresses[0]  # the first --bind
        assert host == "127.0.0.1", self.addresses


def running(tmp_path: Path, *args: str) -> contextlib.AbstractContextManager[Server]:
    return in_session(Server, tmp_path, "hypercorn", "asgi_client_app:app", *args)


def v2(client_host: str, client_port: int = 51234, server: tuple[str, int] = SERVER) -> bytes:
    return pp.Header.proxy((client_host, client_port), server).to_bytes()


def request(port: int, header: bytes, path: str = "/", host: str = "127.0.0.1") -> dict[str, Any]:
    """One request on its own connection: the JSON answer."""
    data = f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
    with testing.open_socket(host, port, header, data, coalesce=True, timeout=20) as sock:
        return read_answer(sock)


def read_answer(sock: socket.socket) -> dict[str, Any]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data
    return json.loads(body)  # type: ignore[no-any-return]


def refused(port: int, header: bytes, payload: bytes = b"") -> bool:
    """Whether the server closes the connection after ``header`` and ``payload`` (in one
    segment) without answering."""
    with testing.open_socket("127.0.0.1", port, header, payload, coalesce=True, timeout=20) as sock:
        try:
            answer = sock.recv(65536)
        except ConnectionResetError:
            return True
    assert answer == b"", answer
    return True


REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_two_workers_serve_the_header_client(tmp_path: Path, worker_class: str) -> None:
    args = ["--bind", "127.0.0.1:0", "--workers", "2", "--worker-class", worker_class]
    with running(tmp_path, *args) as server:
        pids = set()
        for i in range(1, 11):
            answer = request(server.port, v2(f"203.0.113.{i}", 40000 + i))
            assert answer["client"] == [f"203.0.113.{i}", 40000 + i]
            pids.add(answer["pid"])
        assert server.process.pid not in pids  # served by workers, not by the parent
        assert len(pids) <= 2
        assert refused(server.port, b"", REQUEST)  # REQUIRE: no header, no answer
        assert server.stop() == 0
    assert "no PROXY header" in server.stderr()


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_sigterm_lets_an_in_flight_request_finish(tmp_path: Path, worker_class: str) -> None:
    args = ["--bind", "127.0.0.1:0", "--workers", "2", "--worker-class", worker_class]
    args += ["--graceful-timeout", "10"]
    with running(tmp_path, *args) as server:
        slow = REQUEST.replace(b"GET /", b"GET /slow")
        header = v2("203.0.113.9")
        with testing.open_socket("127.0.0.1", server.port, header, slow, coalesce=True) as sock:
            assert server.next_line() == "slow request started"
            server.process.send_signal(signal.SIGTERM)
            assert read_answer(sock)["client"] == ["203.0.113.9", 51234]
        assert server.process.wait(20) == 0


def test_a_crashing_worker_stops_the_server(tmp_path: Path) -> None:
    with running(tmp_path, "--bind", "127.0.0.1:0", "--workers", "2") as server:
        assert refused(server.port, v2("203.0.113.1"), REQUEST.replace(b"GET /", b"GET /crash"))
        assert server.process.wait(20) == 1
    assert "exited with status 3: stopping" in server.stderr()


def test_one_worker_runs_in_process_with_trusted_proxies(tmp_path: Path) -> None:
    # Loopback is not in --trusted: REJECT, so a header is refused and a direct request served.
    args = ["--bind", "127.0.0.1:0", "--workers", "1", "--trusted", "10.0.0.0/8"]
    with running(tmp_path, *args) as server:
        assert refused(server.port, v2("203.0.113.1"), REQUEST)
        answer = request(server.port, b"")
        assert answer["client"][0] == "127.0.0.1"
        assert answer["pid"] == server.process.pid
        assert server.stop(signal.SIGINT) == 0


def test_options_from_a_hypercorn_config_file(tmp_path: Path) -> None:
    config = tmp_path / "hypercorn.toml"
    config.write_text('bind = ["127.0.0.1:0"]\nworkers = 2\nworker_class = "trio"\n')
    pytest.importorskip("trio")
    with running(tmp_path, "--config", str(config), "--policy", "use") as server:
        assert request(server.port, v2("203.0.113.5"))["client"] == ["203.0.113.5", 51234]
        assert request(server.port, b"")["client"][0] == "127.0.0.1"  # USE: direct is fine
        assert server.stop() == 0


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert proxyproto._cli.hypercorn.main(["asgi_client_app:app", "--workers", "0"]) == 2
    assert proxyproto._cli.hypercorn.main(["asgi_client_app:app", "--trusted", "10.0.0.1/8"]) == 2
    assert proxyproto._cli.hypercorn.main(["no_such_module_here:app", "-b", "127.0.0.1:0"]) == 1
    assert "cannot load 'no_such_module_here:app'" in capsys.readouterr().err


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_tls_after_the_header_in_workers(tmp_path: Path, worker_class: str) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(certfile)
    cert.private_key_pem.write_to_path(keyfile)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    args = ["--bind", "127.0.0.1:0", "--workers", "2", "--worker-class", worker_class]
    args += ["--certfile", str(certfile), "--keyfile", str(keyfile)]
    with running(tmp_path, *args) as server:
        # TLS after the header: the socket is wrapped once the kit has sent it.
        header = v2("203.0.113.8")
        with (
            testing.open_socket("127.0.0.1", server.port, header, timeout=20) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as sock,
        ):
            sock.sendall(REQUEST)
            assert read_answer(sock)["client"] == ["203.0.113.8", 51234]
        assert server.stop() == 0


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_max_requests_replaces_the_workers(tmp_path: Path, worker_class: str) -> None:
    # A worker stops accepting at its third request (Hypercorn counts past --max-requests),
    # finishes it, and exits 0; the parent starts another one each time.
    args = ["--bind", "127.0.0.1:0", "--workers", "2", "--worker-class", worker_class]
    with running(tmp_path, *args, "--max-requests", "2") as server:
        pids = set()
        for i in range(1, 13):
            answer = request(server.port, v2(f"203.0.113.{i}"))
            assert answer["client"] == [f"203.0.113.{i}", 51234]
            pids.add(answer["pid"])
        assert len(pids) > 2
        assert server.stop() == 0
    assert "exited: starting another" in server.stderr()


def test_max_requests_with_one_worker_replaces_it(tmp_path: Path) -> None:
    # As Hypercorn's own `--workers 1`: one worker process, not this one, so that it can be
    # replaced (in-process, the server would end after the third request).
    args = ["--bind", "127.0.0.1:0", "--workers", "1", "--max-requests", "2"]
    with running(tmp_path, *args) as server:
        pids = [request(server.port, v2("203.0.113.1"))["pid"] for _ in range(6)]
        assert server.process.pid not in pids
        assert len(set(pids)) > 1
        assert server.stop() == 0
    assert "exited: starting another" in server.stderr()


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_an_ipv4_and_an_ipv6_bind(tmp_path: Path, worker_class: str) -> None:
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback (::1) on this machine")
    args = ["--bind", "127.0.0.1:0", "--bind", "[::1]:0", "--workers", "2"]
    with running(tmp_path, *args, "--worker-class", worker_class) as server:
        [(ipv4, port4), (ipv6, port6)] = server.addresses
        assert (ipv4, port4) == ("127.0.0.1", server.port)
        assert ipv6 == "::1"
        answer = request(port4, v2("203.0.113.4"))
        assert answer["client"] == ["203.0.113.4", 51234]
        answer = request(port6, v2("2001:db8::6", 40006, ("2001:db8::1", 443)), host="::1")
        assert answer["client"] == ["2001:db8::6", 40006]
        assert server.stop() == 0


# --- real peers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_two_workers_curl_haproxy_protocol(tmp_path: Path, worker_class: str) -> None:
    args = ["--bind", "127.0.0.1:0", "--workers", "2", "--worker-class", worker_class]
    with running(tmp_path, *args) as server:
        answer = curl_haproxy_protocol(f"http://127.0.0.1:{server.port}/")
        # curl's v1 header names curl's own address: under REQUIRE, an answer proves it was read.
        assert answer["client"][0] == "127.0.0.1"
        assert answer["pid"] != server.process.pid
        assert server.stop() == 0


@pytest.mark.haproxy
@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_two_workers_behind_haproxy_send_proxy_v2(tmp_path: Path, worker_class: str) -> None:
    args = ["--bind", "127.0.0.1:0", "--workers", "2", "--worker-class", worker_class]
    with running(tmp_path, *args) as server:
        with haproxy_send_proxy_v2(("127.0.0.1", server.port)) as front:
            me, clients = keep_alive_clients(front, 2)
        # HAProxy's one header names this socket, not HAProxy, for both requests.
        assert clients == [me, me]
        assert server.stop() == 0
