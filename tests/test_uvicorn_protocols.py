"""proxyproto.uvicorn by composition: every Uvicorn HTTP protocol behind the handshake.

Each of Uvicorn's protocol classes (h11, httptools, and zttp where Uvicorn has it) serves the
connection once the handshake is over, with the header's client in ``scope["client"]`` and
``scope["extensions"]["proxy_protocol"]``, on HTTP and after a WebSocket upgrade; and a real
Uvicorn process stops on SIGTERM and Ctrl-C (SIGINT) as plain Uvicorn does, with the request
in flight answered.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn")

import proxyproto as pp
import proxyproto.uvicorn as ppu
from asgi_helpers import read_response, uvicorn_thread

PROTOCOLS = [pytest.param("h11", id="h11")]
if ppu.ProxyProtocolHttpToolsProtocol is not None:
    PROTOCOLS.append(pytest.param("httptools", id="httptools"))
if ppu.ProxyProtocolZttpProtocol is not None:
    PROTOCOLS.append(pytest.param("zttp", id="zttp"))

CLIENT = ("203.0.113.7", 51234)
SERVER = ("192.0.2.1", 443)
HEADER = pp.Header.proxy(CLIENT, SERVER, tlvs=pp.TLVs(unique_id=b"req-1")).to_bytes()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    extension = scope["extensions"]["proxy_protocol"]
    header = extension["header"]
    seen = {
        "client": list(scope["client"]),
        "header_source": None if header is None else list(header.source),
        "unique_id": None if header is None else header.tlvs.unique_id.decode(),
        "peer": list(extension["peer_address"])[:2],
    }
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(seen)})
        await send({"type": "websocket.close"})
        return
    body = json.dumps(seen).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _check(seen: dict[str, Any]) -> None:
    assert seen["client"] == list(CLIENT)
    assert seen["header_source"] == list(CLIENT)
    assert seen["unique_id"] == "req-1"
    assert seen["peer"][0] == "127.0.0.1"


@pytest.mark.parametrize("http", PROTOCOLS)
def test_every_protocol_serves_keep_alive_requests_with_the_client(http: str) -> None:
    protocol = ppu._protocol_class(http, pp.ProxyProtocolConfig())
    with (
        uvicorn_thread(app, http=protocol) as (address, _, _),
        socket.create_connection(address, timeout=10) as sock,
    ):
        request = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"
        # The header and the first request in one segment, as a balancer sends them.
        sock.sendall(HEADER + request)
        buffer = bytearray()
        for _ in range(2):
            status, seen = read_response(sock, buffer)
            assert status == 200
            _check(seen)
            sock.sendall(request)


def _frame_length(data: bytes) -> int:
    length = data[1] & 0x7F
    return int.from_bytes(data[2:4], "big") if length == 126 else length


def _frame_end(data: bytes) -> int:
    return (4 if data[1] & 0x7F == 126 else 2) + _frame_length(data)


@pytest.mark.parametrize("http", PROTOCOLS)
def test_every_protocol_hands_a_websocket_upgrade_the_client(http: str) -> None:
    pytest.importorskip("wsproto")
    protocol = ppu._protocol_class(http, pp.ProxyProtocolConfig())
    key = base64.b64encode(os.urandom(16))
    upgrade = (
        b"GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with (
        uvicorn_thread(app, http=protocol, ws="wsproto") as (address, _, _),
        socket.create_connection(address, timeout=10) as sock,
    ):
        sock.sendall(HEADER + upgrade)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        head, _, data = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        # One unmasked text frame from the server (RFC 6455 section 5.2), under 64 KiB.
        while len(data) < 4 or len(data) < _frame_end(data):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        assert data[0] == 0x81
        _check(json.loads(data[_frame_end(data) - _frame_length(data) : _frame_end(data)]))


def test_zttp_only_where_uvicorn_has_it() -> None:
    from proxyproto._servers import uvicorn_compat

    if uvicorn_compat.ZttpProtocol is None:
        assert ppu.ProxyProtocolZttpProtocol is None
        with pytest.raises(ImportError, match="zttp"):
            ppu._protocol_class("zttp", pp.ProxyProtocolConfig())
    else:
        assert ppu.ProxyProtocolZttpProtocol.http_protocol is uvicorn_compat.ZttpProtocol  # type: ignore[union-attr]


# --- SIGTERM and Ctrl-C, as plain Uvicorn ---------------------------------------------------

SLOW_APP = """
import asyncio
import pathlib
import sys

STARTED = pathlib.Path(sys.argv[0]).with_name("started")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        STARTED.touch()
        await asyncio.sleep(1)
    body = b"done"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"4")]})
    await send({"type": "http.response.body", "body": body})
"""

RUN_SCRIPT = """
import sys
sys.argv[0] = __file__
import proxyproto as pp
{imports}
{call}("slowapp:app", host="127.0.0.1", port={port}, lifespan="off", http="{http}"{proxy})
"""


def _command(tmp_path: Path, entry: str, proxied: bool, http: str, port: int) -> list[str]:
    if entry == "cli":
        http_option = ppu._protocol_class(http, None) if proxied else http
        assert isinstance(http_option, str)
        return [
            sys.executable,
            "-c",
            f"import sys; sys.argv[0] = {str(tmp_path / 'cli')!r}; "
            "from uvicorn.main import main; main()",
            "slowapp:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--lifespan",
            "off",
            "--http",
            http_option,
        ]
    script = tmp_path / "serve.py"
    script.write_text(
        RUN_SCRIPT.format(
            imports="import proxyproto.uvicorn" if proxied else "import uvicorn",
            call="proxyproto.uvicorn.run" if proxied else "uvicorn.run",
            port=port,
            http=http,
            proxy=", proxy=pp.ProxyProtocolConfig()" if proxied else "",
        )
    )
    return [sys.executable, str(script)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop_in_flight(tmp_path: Path, entry: str, proxied: bool, http: str, sig: int) -> Any:
    """Start Uvicorn (``proxied``: through proxyproto), send ``sig`` while a request is in
    flight; returns the exit code, stderr and the response."""
    (tmp_path / "slowapp.py").write_text(SLOW_APP)
    started = tmp_path / "started"
    started.unlink(missing_ok=True)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    process = subprocess.Popen(
        _command(tmp_path, entry, proxied, http, port),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    header = HEADER if proxied else b""
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except OSError:
                assert time.monotonic() < deadline, "uvicorn did not start within 20 s"
                time.sleep(0.1)
        with sock:
            sock.sendall(header + b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
            while not started.exists():
                assert time.monotonic() < deadline, "the request did not reach the app"
                time.sleep(0.02)
            process.send_signal(sig)
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
                if response.endswith(b"done"):
                    break
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, stderr.decode(), response


ENTRIES = [
    pytest.param("cli", id="uvicorn-http-option"),
    pytest.param("run", id="proxyproto.uvicorn.run"),
]
SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGINT, id="ctrl-c")]


@pytest.mark.parametrize("sig", SIGNALS)
@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("http", PROTOCOLS)
def test_signal_stops_like_plain_uvicorn(tmp_path: Path, entry: str, http: str, sig: int) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "pp").mkdir()
    plain = _stop_in_flight(tmp_path / "plain", entry, False, http, sig)
    ours = _stop_in_flight(tmp_path / "pp", entry, True, http, sig)
    # The request in flight is answered, within Uvicorn's graceful shutdown.
    for answer in (plain[2], ours[2]):
        assert answer.startswith(b"HTTP/1.1 200"), (plain, ours)
        assert answer.endswith(b"done"), (plain, ours)
    # The same exit status, and no traceback.
    assert ours[0] == plain[0], (ours, plain)
    assert "Traceback" not in ours[1], ours[1]
    assert "Shutting down" in ours[1]
