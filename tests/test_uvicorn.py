"""proxyproto.uvicorn against real Uvicorn servers on loopback, driven from plain sockets.

Uvicorn is asyncio-only and owns its loop: each server runs in a thread of its own (or, for its
command line, in a subprocess), and the tests talk to it as a load balancer would, with the
header and the first request in one segment. The headers are sent with our own testing kit's
blocking client, :func:`proxyproto.testing.open_socket` (``coalesce``: the header's end and the
request in one write); raw bytes for the broken ones.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn")


import proxyproto as pp
import proxyproto.uvicorn as ppu
from asgi_helpers import keep_alive_clients, read_response, uvicorn_thread
from haproxy_peer import free_port
from interop import curl_haproxy_protocol, haproxy_send_proxy_v2
from proxyproto import testing

V1 = b"PROXY TCP4 203.0.113.7 198.51.100.10 51234 443\r\n"
V2 = pp.Header.proxy(("2001:db8::7", 40000), ("2001:db8::1", 443)).to_bytes()
REQUEST = b"GET /who HTTP/1.1\r\nHost: test\r\n\r\n"

PROTOCOLS = [pytest.param("h11", id="h11")]
if ppu.ProxyProtocolHttpToolsProtocol is not None:
    PROTOCOLS.append(pytest.param("httptools", id="httptools"))

APP_SOURCE = '''
import json


async def app(scope, receive, send):
    """An ASGI app that answers with scope["client"] as JSON."""
    assert scope["type"] == "http"
    body = json.dumps(
        {"client": scope["client"], "path": scope["path"], "scheme": scope["scheme"]}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
'''

namespace: dict[str, Any] = {}
exec(APP_SOURCE, namespace)
app = namespace["app"]


@contextmanager
def uvicorn_server(
    proxy: pp.ProxyProtocolConfig, http: str = "h11", **kwargs: Any
) -> Iterator[tuple[str, int]]:
    """A Uvicorn server with ``proxy`` in a thread; yields its address, stops it on exit."""
    protocol = ppu._protocol_class(http, proxy)
    with uvicorn_thread(app, http=protocol, **kwargs) as (address, _server, _thread):
        yield address


def exchange(address: tuple[str, int], header: testing.HeaderSpec, requests: int = 1) -> list[Any]:
    """Send ``header`` and a request in one segment, then more requests on the connection: the
    client of each answer (``b""``: no header)."""
    with testing.open_socket(*address, header, REQUEST, coalesce=True) as sock:
        buffer = bytearray()
        clients = []
        for n in range(requests):
            if n:
                sock.sendall(REQUEST)
            status, body = read_response(sock, buffer)
            assert status == 200
            clients.append(body["client"])
        return clients


def refused(address: tuple[str, int], header: testing.HeaderSpec, payload: bytes = b"") -> bool:
    """Whether the server closes the connection without a byte of answer to ``header`` and
    ``payload`` (in one segment)."""
    with testing.open_socket(*address, header, payload, coalesce=True) as sock:
        try:
            return sock.recv(65536) == b""
        except ConnectionResetError:
            return True


@pytest.mark.parametrize("http", PROTOCOLS)
@pytest.mark.parametrize(
    ("header", "client"),
    [
        pytest.param(V1, ["203.0.113.7", 51234], id="v1"),
        pytest.param(V2, ["2001:db8::7", 40000], id="v2"),
    ],
)
def test_header_and_request_in_one_segment(http: str, header: bytes, client: list[Any]) -> None:
    with uvicorn_server(pp.ProxyProtocolConfig(), http) as address:
        assert exchange(address, header) == [client]


@pytest.mark.parametrize("http", PROTOCOLS)
def test_keep_alive_requests_all_carry_the_client(http: str) -> None:
    with uvicorn_server(pp.ProxyProtocolConfig(), http) as address:
        assert exchange(address, V1, requests=3) == [["203.0.113.7", 51234]] * 3


@pytest.mark.parametrize("http", PROTOCOLS)
def test_header_byte_by_byte(http: str) -> None:
    with (
        uvicorn_server(pp.ProxyProtocolConfig(), http) as address,
        testing.open_socket(*address, V2, byte_at_a_time=True, pause=0.001) as sock,
    ):
        sock.sendall(REQUEST)
        assert read_response(sock, bytearray())[1]["client"] == ["2001:db8::7", 40000]


@pytest.mark.parametrize("http", PROTOCOLS)
def test_headerless_request_refused_under_require(
    http: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="proxyproto"),
        uvicorn_server(pp.ProxyProtocolConfig(), http) as address,
    ):
        assert refused(address, b"", REQUEST)
    [record] = [r for r in caplog.records if r.name == "proxyproto"]
    assert "no PROXY header, and its policy (REQUIRE) needs one" in record.getMessage()


@pytest.mark.parametrize("http", PROTOCOLS)
def test_direct_request_under_use_has_the_real_address(http: str) -> None:
    with (
        uvicorn_server(pp.ProxyProtocolConfig(policy=pp.Policy.USE), http) as address,
        testing.open_socket(*address, b"", REQUEST) as sock,
    ):
        client = read_response(sock, bytearray())[1]["client"]
        assert tuple(client) == sock.getsockname()[:2]


def test_ignore_keeps_the_real_address_and_reject_closes() -> None:
    with uvicorn_server(pp.ProxyProtocolConfig(policy=pp.Policy.IGNORE)) as address:
        [client] = exchange(address, V1)
        assert client[0] == "127.0.0.1"
    with uvicorn_server(pp.ProxyProtocolConfig(policy=pp.Policy.REJECT)) as address:
        assert refused(address, V1, REQUEST)


def test_skip_passes_every_byte_to_uvicorn() -> None:
    with uvicorn_server(pp.ProxyProtocolConfig(policy=pp.Policy.SKIP)) as address:
        [client] = exchange(address, b"")
        assert client[0] == "127.0.0.1"


def test_local_command_keeps_the_real_address() -> None:
    with uvicorn_server(pp.ProxyProtocolConfig()) as address:
        [client] = exchange(address, pp.Header.local())
        assert client[0] == "127.0.0.1"


def test_broken_header_and_timeout_are_refused(caplog: pytest.LogCaptureFixture) -> None:
    config = pp.ProxyProtocolConfig(header_timeout=0.2)
    with caplog.at_level(logging.INFO, logger="proxyproto"), uvicorn_server(config) as address:
        # Raw bytes: the kit sends them as they are.
        assert refused(address, b"PROXY TCP4 1.2.3.4 5.6.7.8 080 443\r\n", REQUEST)
        assert refused(address, b"PROXY TCP4 ")  # then silence
        assert refused(address, b"")  # silence from the start
    messages = [r.getMessage() for r in caplog.records if r.name == "proxyproto"]
    assert len(messages) == 3
    assert "leading zero" in messages[0]
    assert "no complete PROXY header within 0.2s" in messages[1]
    assert "no complete PROXY header within 0.2s" in messages[2]


def test_trusted_proxies_policy() -> None:
    config = pp.ProxyProtocolConfig(policy=pp.trusted_proxies(["192.0.2.0/24"]))
    with uvicorn_server(config) as address:
        # 127.0.0.1 is not trusted: its header is refused, its direct request served.
        assert refused(address, V1, REQUEST)
        assert exchange(address, b"")[0][0] == "127.0.0.1"


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_validator(asynchronous: bool) -> None:
    def check(header: pp.Header, peer: pp.PeerAddress) -> bool:
        return header.source == ("203.0.113.7", 51234)

    async def check_async(header: pp.Header, peer: pp.PeerAddress) -> bool:
        return check(header, peer)

    config = pp.ProxyProtocolConfig(validator=check_async if asynchronous else check)
    with uvicorn_server(config) as address:
        assert exchange(address, V1, requests=2) == [["203.0.113.7", 51234]] * 2
        assert refused(address, V2, REQUEST)


def test_config_from_environ() -> None:
    config = ppu.config_from_environ(
        {
            "PROXYPROTO_POLICY": "use",
            "PROXYPROTO_TRUSTED": "10.0.0.0/8,::1",
            "PROXYPROTO_HEADER_TIMEOUT": "2.5",
            "PROXYPROTO_MAX_HEADER_SIZE": "1024",
            "PROXYPROTO_VERSIONS": "2",
        }
    )
    assert callable(config.policy)
    assert config.policy(("10.0.0.1", 1)) is pp.Policy.USE
    assert config.policy(("::1", 1)) is pp.Policy.USE
    assert config.policy(("192.0.2.1", 1)) is pp.Policy.REJECT
    assert (config.header_timeout, config.max_header_size, config.versions) == (
        2.5,
        1024,
        frozenset({2}),
    )
    assert ppu.config_from_environ({}) == pp.ProxyProtocolConfig()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("POLICY", "maybe", "PROXYPROTO_POLICY='maybe': must be one of require, use"),
        ("TRUSTED", "10.0.0.1/8", "PROXYPROTO_TRUSTED='10.0.0.1/8': 10.0.0.1/8 has host bits set"),
        ("HEADER_TIMEOUT", "soon", "PROXYPROTO_HEADER_TIMEOUT='soon': not a number"),
        ("HEADER_TIMEOUT", "-1", "header_timeout must be a positive number of seconds"),
        ("MAX_HEADER_SIZE", "8", "max_header_size must be from 16 to 65551"),
        ("VERSIONS", "3", "versions must be a non-empty subset of {1, 2}"),
    ],
)
def test_config_from_environ_errors(name: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match="PROXYPROTO_") as error:
        ppu.config_from_environ({f"PROXYPROTO_{name}": value})
    # The message starts with the variable that is wrong, even when the config's check found it.
    assert str(error.value).startswith(f"PROXYPROTO_{name}={value!r}: ")
    assert message in str(error.value)


def test_run_refuses_a_config_for_worker_processes() -> None:
    with pytest.raises(ValueError, match="PROXYPROTO_"):
        ppu.run(app, proxy=pp.ProxyProtocolConfig(), workers=2)
    with pytest.raises(ValueError, match="http must be"):
        ppu.run(app, proxy=pp.ProxyProtocolConfig(), http="no-such-parser")


# --- real clients and proxies ----------------------------------------------------------------


def test_curl_haproxy_protocol() -> None:
    with uvicorn_server(pp.ProxyProtocolConfig()) as (host, port):
        answer = curl_haproxy_protocol(f"http://{host}:{port}/who")
    # curl says who it is (v1): under REQUIRE, an answer at all proves the header was read.
    assert answer["client"][0] == "127.0.0.1"


@pytest.mark.haproxy
@pytest.mark.parametrize("http", PROTOCOLS)
def test_behind_haproxy_send_proxy_v2(http: str) -> None:
    with (
        uvicorn_server(pp.ProxyProtocolConfig(), http) as address,
        haproxy_send_proxy_v2(address) as front,
    ):
        me, clients = keep_alive_clients(front, 2)
    # The client HAProxy saw: this socket, not HAProxy's own connection to Uvicorn; the one
    # header covers every request of the connection.
    assert clients == [me, me]


# --- Uvicorn's own command line --------------------------------------------------------------


def uvicorn_command_line(tmp_path: Path, port: int, *args: str) -> list[str]:
    """``python -m uvicorn app:app --http proxyproto.uvicorn:... ARGS`` on ``port``, with the test
    app written into ``tmp_path``."""
    (tmp_path / "uvicorn_test_app.py").write_text(textwrap.dedent(APP_SOURCE))
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "uvicorn_test_app:app",
        "--app-dir",
        str(tmp_path),
        "--port",
        str(port),
        "--http",
        "proxyproto.uvicorn:ProxyProtocolH11Protocol",
        "--lifespan",
        "off",
        *args,
    ]


@contextmanager
def uvicorn_command(tmp_path: Path, env: dict[str, str], *args: str) -> Iterator[int]:
    """``python -m uvicorn app:app --http proxyproto.uvicorn:... ARGS`` in a subprocess."""
    port = free_port()
    command = uvicorn_command_line(tmp_path, port, *args)
    with serving(command, env, port):
        yield port


@contextmanager
def serving(
    command: list[str], env: dict[str, str], port: int, output: list[str] | None = None
) -> Iterator[None]:
    """``command`` in a subprocess with ``env`` added, until it answers a PROXY request on
    ``port``; stopped with SIGTERM on exit, then what it wrote (stdout and stderr) is appended
    to ``output``."""
    process = subprocess.Popen(
        command,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, process.communicate()[0].decode()
            try:
                exchange(("127.0.0.1", port), V1)
                break
            except OSError:
                assert time.monotonic() < deadline, "uvicorn did not answer within 20s"
                time.sleep(0.1)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            written = process.communicate(timeout=15)[0].decode()
            if output is not None:
                output.append(written)
        except subprocess.TimeoutExpired:  # pragma: no cover
            process.kill()
            process.communicate()
            raise


@pytest.mark.parametrize("workers", [1, 2])
def test_uvicorn_command_line(tmp_path: Path, workers: int) -> None:
    env = {"PROXYPROTO_TRUSTED": "127.0.0.1", "PROXYPROTO_HEADER_TIMEOUT": "2"}
    with uvicorn_command(tmp_path, env, "--workers", str(workers)) as port:
        for _ in range(8):  # spread over the workers
            assert exchange(("127.0.0.1", port), V2, 2) == [["2001:db8::7", 40000]] * 2
        # Trusted peer under REQUIRE: a headerless request is refused.
        assert refused(("127.0.0.1", port), b"", REQUEST)


@pytest.mark.parametrize(
    ("name", "value", "line"),
    [
        ("POLICY", "sometimes", "must be one of require, use, ignore, reject, skip"),
        ("PROXY_HEADERS", "sure", "must be 1 or 0"),
    ],
)
def test_uvicorn_command_line_bad_environment(
    tmp_path: Path, name: str, value: str, line: str
) -> None:
    (tmp_path / "uvicorn_test_app.py").write_text(textwrap.dedent(APP_SOURCE))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "uvicorn_test_app:app",
            "--app-dir",
            str(tmp_path),
            "--port",
            str(free_port()),
            "--http",
            "proxyproto.uvicorn:ProxyProtocolH11Protocol",
        ],
        env={**os.environ, f"PROXYPROTO_{name}": value},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    # One line, no traceback.
    assert result.stderr.splitlines() == [f"proxyproto: PROXYPROTO_{name}={value!r}: {line}"]


def test_uvicorn_command_line_two_workers_curl_haproxy_protocol(tmp_path: Path) -> None:
    with uvicorn_command(tmp_path, {}, "--workers", "2") as port:
        # Under REQUIRE (no PROXYPROTO_ settings), an answer at all proves the header was read.
        assert curl_haproxy_protocol(f"http://127.0.0.1:{port}/")["client"][0] == "127.0.0.1"


@pytest.mark.haproxy
def test_uvicorn_command_line_two_workers_behind_haproxy_send_proxy_v2(tmp_path: Path) -> None:
    with (
        uvicorn_command(tmp_path, {}, "--workers", "2") as port,
        haproxy_send_proxy_v2(("127.0.0.1", port)) as front,
    ):
        me, clients = keep_alive_clients(front, 2)
    assert clients == [me, me]


# --- X-Forwarded-For behind the PROXY protocol -----------------------------------------------

SPOOF = (
    b"GET /who HTTP/1.1\r\nHost: test\r\n"
    b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\r\n"
)
# A header whose client passes Uvicorn's default forwarded_allow_ips (127.0.0.1).
LOCALHOST_V1 = b"PROXY TCP4 127.0.0.1 127.0.0.1 51234 80\r\n"
# (FORWARDED_ALLOW_IPS or None for Uvicorn's default, the header, the client the app must see)
SPOOF_CASES = [
    pytest.param("*", V1, ["203.0.113.7", 51234], id="allow-all"),
    pytest.param(None, LOCALHOST_V1, ["127.0.0.1", 51234], id="default-allow"),
]


def answer(address: tuple[str, int], header: bytes, request: bytes) -> dict[str, Any]:
    """The app's JSON answer to ``header`` and one ``request``, in one segment."""
    with testing.open_socket(*address, header, request, coalesce=True) as sock:
        status, body = read_response(sock, bytearray())
        assert status == 200
        return body


@pytest.mark.parametrize("http", PROTOCOLS)
@pytest.mark.parametrize(("allow", "header", "client"), SPOOF_CASES)
def test_x_forwarded_for_is_not_trusted_behind_the_header(
    http: str, allow: str | None, header: bytes, client: list[Any]
) -> None:
    # Uvicorn's own default is proxy_headers=True: what run() and a hand-built Config get.
    protocol = ppu._protocol_class(http, pp.ProxyProtocolConfig())
    options: dict[str, Any] = {} if allow is None else {"forwarded_allow_ips": allow}
    with uvicorn_thread(app, http=protocol, proxy_headers=True, **options) as (address, _s, _t):
        for _ in range(2):  # the second connection meets the same Config
            body = answer(address, header, SPOOF)
            assert (body["client"], body["scheme"]) == (client, "http")


@pytest.mark.parametrize("http", PROTOCOLS)
@pytest.mark.parametrize(
    ("allow", "client"),
    [
        pytest.param("203.0.113.7", ["6.6.6.6", 0], id="header-client-trusted"),
        pytest.param("192.0.2.1", ["203.0.113.7", 51234], id="header-client-not-trusted"),
    ],
)
def test_proxy_headers_opt_in(http: str, allow: str, client: list[Any]) -> None:
    protocol = ppu._protocol_class(http, pp.ProxyProtocolConfig(), proxy_headers=True)
    with uvicorn_thread(app, http=protocol, proxy_headers=True, forwarded_allow_ips=allow) as (
        address,
        _s,
        _t,
    ):
        body = answer(address, V1, SPOOF)
    assert body["client"] == client
    assert body["scheme"] == ("https" if client[0] == "6.6.6.6" else "http")


def test_proxy_headers_from_environ() -> None:
    assert ppu._proxy_headers_from_environ({}) is False
    assert ppu._proxy_headers_from_environ({"PROXYPROTO_PROXY_HEADERS": " 1 "}) is True
    assert ppu._proxy_headers_from_environ({"PROXYPROTO_PROXY_HEADERS": "0"}) is False
    with pytest.raises(ValueError, match=r"^PROXYPROTO_PROXY_HEADERS='sure': must be 1 or 0$"):
        ppu._proxy_headers_from_environ({"PROXYPROTO_PROXY_HEADERS": "sure"})


def test_run_refuses_proxy_headers_for_worker_processes() -> None:
    with pytest.raises(ValueError, match="PROXYPROTO_PROXY_HEADERS=1"):
        ppu.run(app, proxy_headers=True, workers=2)
    with pytest.raises(ValueError, match="PROXYPROTO_PROXY_HEADERS=1"):
        ppu.run(app, proxy_headers=True, reload=True)


@pytest.mark.parametrize(("allow", "header", "client"), SPOOF_CASES)
def test_uvicorn_command_line_x_forwarded_for_is_not_trusted(
    tmp_path: Path, allow: str | None, header: bytes, client: list[Any]
) -> None:
    env = {} if allow is None else {"FORWARDED_ALLOW_IPS": allow}
    with uvicorn_command(tmp_path, env) as port:
        body = answer(("127.0.0.1", port), header, SPOOF)
    assert (body["client"], body["scheme"]) == (client, "http")


@pytest.mark.parametrize(
    ("allow", "client"),
    [
        pytest.param("203.0.113.7", ["6.6.6.6", 0], id="header-client-trusted"),
        pytest.param("192.0.2.1", ["203.0.113.7", 51234], id="header-client-not-trusted"),
    ],
)
def test_uvicorn_command_line_proxy_headers_opt_in(
    tmp_path: Path, allow: str, client: list[Any]
) -> None:
    env = {"PROXYPROTO_PROXY_HEADERS": "1", "FORWARDED_ALLOW_IPS": allow}
    with uvicorn_command(tmp_path, env, "--workers", "2") as port:
        for _ in range(4):  # spread over the workers
            assert answer(("127.0.0.1", port), V1, SPOOF)["client"] == client


RUN_SOURCE = """
import sys

import proxyproto.uvicorn

options = {"forwarded_allow_ips": sys.argv[2]} if len(sys.argv) > 2 else {}
proxyproto.uvicorn.run(
    "uvicorn_test_app:app", port=int(sys.argv[1]), lifespan="off", log_level="warning", **options
)
"""


@pytest.mark.parametrize(("allow", "header", "client"), SPOOF_CASES)
def test_run_x_forwarded_for_is_not_trusted(
    tmp_path: Path, allow: str | None, header: bytes, client: list[Any]
) -> None:
    # run() itself, with Uvicorn's default proxy_headers (True), in a process of its own so that
    # SIGTERM stops it.
    (tmp_path / "uvicorn_test_app.py").write_text(textwrap.dedent(APP_SOURCE))
    (tmp_path / "serve.py").write_text(RUN_SOURCE)
    port = free_port()
    command = [sys.executable, str(tmp_path / "serve.py"), str(port)]
    if allow is not None:
        command.append(allow)
    with serving(command, {"PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}, port):
        body = answer(("127.0.0.1", port), header, SPOOF)
    assert (body["client"], body["scheme"]) == (client, "http")


def test_protocol_class_carries_an_explicit_proxy_headers() -> None:
    # What run(proxy_headers=True) uses in one process: a class that says so itself.
    assert ppu._protocol_class("h11", None) == "proxyproto.uvicorn:ProxyProtocolH11Protocol"
    protocol = ppu._protocol_class("h11", None, proxy_headers=True)
    assert isinstance(protocol, type)
    assert issubclass(protocol, ppu.ProxyProtocolH11Protocol)
    assert protocol.forwarded_headers is True
    assert protocol.proxy_config is ppu.ENVIRONMENT_CONFIG


@pytest.mark.parametrize("http", PROTOCOLS)
def test_a_peer_that_leaves_without_a_byte_is_counted_and_logged_at_debug(
    http: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A health check that connects and leaves: rejected["empty"], one DEBUG line naming it.
    before = ppu.statistics().rejected.get("empty", 0)
    with (
        caplog.at_level(logging.DEBUG, logger="proxyproto"),
        uvicorn_server(pp.ProxyProtocolConfig(), http) as address,
    ):
        with socket.create_connection(address, timeout=10) as sock:
            port = sock.getsockname()[1]
        deadline = time.monotonic() + 10
        while ppu.statistics().rejected.get("empty", 0) == before:
            assert time.monotonic() < deadline, "the empty connection was not counted"
            time.sleep(0.01)
    assert ppu.statistics().rejected["empty"] == before + 1
    [record] = [r for r in caplog.records if f"127.0.0.1:{port}" in r.getMessage()]
    assert record.levelno == logging.DEBUG
    assert "before sending a byte" in record.getMessage()


# --- Uvicorn's TLS, and our log lines under Uvicorn's logging ---------------------------------


@pytest.fixture
def uvicorn_certs(tmp_path: Path) -> tuple[Any, Path, Path]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(certfile)
    cert.private_key_pem.write_to_path(keyfile)
    return ca, certfile, keyfile


def test_run_refuses_uvicorn_tls_at_startup(
    uvicorn_certs: tuple[Any, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def started(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("uvicorn.run() was called")

    monkeypatch.setattr("uvicorn.run", started)
    _, certfile, keyfile = uvicorn_certs
    with pytest.raises(ValueError, match=r"^ssl_keyfile: Uvicorn's TLS .* cannot run behind"):
        ppu.run(app, ssl_keyfile=str(keyfile), ssl_certfile=str(certfile))


def handshake_over_tls(context: Any, sock: socket.socket) -> None:
    with context.wrap_socket(sock, server_hostname="localhost") as tls:
        tls.sendall(REQUEST)
        tls.recv(65536)


def test_uvicorn_tls_logs_one_clear_error_line(
    uvicorn_certs: tuple[Any, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A hand-made Config (or the command line) with --ssl-*: the first connection fails, as it
    must, and one ERROR line says why and what to do instead."""
    import ssl

    ca, certfile, keyfile = uvicorn_certs
    protocol = ppu._protocol_class("h11", pp.ProxyProtocolConfig())
    context = ssl.create_default_context()
    ca.configure_trust(context)
    options: dict[str, Any] = {"ssl_keyfile": str(keyfile), "ssl_certfile": str(certfile)}
    with (
        caplog.at_level(logging.INFO, logger="proxyproto"),
        uvicorn_thread(app, http=protocol, **options) as (address, _, _),
        testing.open_socket(*address, V1) as sock,  # TLS after the header
        pytest.raises((ssl.SSLError, OSError)),
    ):
        handshake_over_tls(context, sock)
    errors = [r for r in caplog.records if r.name == "proxyproto" and r.levelno == logging.ERROR]
    assert len(errors) == 1, caplog.text
    assert "cannot run behind the PROXY protocol" in errors[0].getMessage()
    assert "proxyproto.hypercorn" in errors[0].getMessage()


def test_uvicorn_command_line_shows_our_info_lines(tmp_path: Path) -> None:
    """Uvicorn's command line configures its own loggers only: ours get its handler and level,
    so an INFO refusal (a peer that closed in the middle of its header) is on its stderr."""
    env = {"PROXYPROTO_TRUSTED": "127.0.0.1"}
    port = free_port()
    written: list[str] = []
    with serving(uvicorn_command_line(tmp_path, port), env, port, written):
        with testing.open_socket("127.0.0.1", port, V2[:20]):
            pass  # half a header, then close: refused, "closed", INFO
        # One more request answered: the close before it has been seen.
        exchange(("127.0.0.1", port), V1)
    output = written[0]
    lines = [line for line in output.splitlines() if "refused connection from 127.0.0.1" in line]
    assert len(lines) == 1, output
    assert lines[0].startswith("INFO:"), lines[0]  # Uvicorn's handler and format
    assert "the peer closed after 20 of" in lines[0]
