"""``proxyproto echo`` and ``send`` driven as a user would: real processes, real sockets.

Every process is ``python -m proxyproto``, on 127.0.0.1 only; each wait is bounded and every
process is killed in a ``finally``. The network tests run on both anyio backends (``--backend``).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
from contextlib import AbstractContextManager
from typing import Any

import pytest

import proxyproto as pp
from cli_process import PROXYPROTO, TIMEOUT, CliProcess, launch, read_to_end, without
from odd_headers import ANSI, BIDI, FORGED_LINE, ODD_HEADERS
from proxyproto._cli import main

BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])
CLIENT = ("203.0.113.7", 51234)
DESTINATION = ("198.51.100.10", 443)


class Echo(CliProcess):
    """A running ``proxyproto echo``: its port and its output, line by line."""

    name = "echo"

    def json_line(self) -> dict[str, Any]:
        line = self.stdout.get(timeout=TIMEOUT)
        assert line is not None, f"echo exited: {self.drain()}"
        report: dict[str, Any] = json.loads(line)
        return report

    def stderr_line(self) -> str:
        line = self.stderr.get(timeout=TIMEOUT)
        assert line is not None
        return line


def echo(backend: str, *options: str) -> AbstractContextManager[Echo]:
    return launch(Echo, "echo", "--listen", "127.0.0.1:0", "--backend", backend, *options)


def proxyproto() -> list[str]:
    return list(PROXYPROTO)


def send(
    port: int, *options: str, stdin: bytes = b"", backend: str = "asyncio"
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*proxyproto(), "send", f"127.0.0.1:{port}", "--backend", backend, *options],
        input=stdin,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )


def exchange(port: int, data: bytes) -> bytes:
    """Connect, send ``data``, half-close, and return everything the server sends back."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return read_to_end(sock)


# --- echo and send together ---------------------------------------------------------------------


@BACKENDS
def test_send_to_echo(backend: str) -> None:
    with echo(backend, "--json", "--policy", "use") as server:
        result = send(
            server.port,
            "--source",
            "203.0.113.7:51234",
            "--destination",
            "198.51.100.10:443",
            "--alpn",
            "h2",
            "--authority",
            "shop.example",
            "--unique-id",
            "cafe",
            "--crc32c",
            stdin=b"GET / HTTP/1.0\r\n\r\n",
            backend=backend,
        )
        assert result.returncode == 0, result.stderr
        assert result.stderr == b""
        report = server.json_line()
        peer = report["peer"]
        assert peer["host"] == "127.0.0.1"
        assert report["policy"] == "use"
        assert report["client"] == {"host": "203.0.113.7", "port": 51234}
        header = report["header"]
        assert header["version"] == 2
        assert header["command"] == "PROXY"
        assert header["source"] == {"host": "203.0.113.7", "port": 51234}
        assert header["destination"] == {"host": "198.51.100.10", "port": 443}
        assert bytes.fromhex(header["tlvs"]["alpn"]) == b"h2"
        assert header["tlvs"]["authority"] == "shop.example"
        assert header["tlvs"]["unique_id"] == "cafe"
        assert isinstance(header["tlvs"]["crc32c"], int)
        expected = (
            f"client 203.0.113.7:51234 via 127.0.0.1:{peer['port']} "
            "header v2 PROXY INET STREAM to 198.51.100.10:443\n"
        )
        assert result.stdout.decode() == expected
        assert report["summary"] == expected.rstrip("\n")
        assert server.stop() == 0


@BACKENDS
def test_send_v1_default_destination_and_local(backend: str) -> None:
    with echo(backend, "--json") as server:
        result = send(server.port, "--source", "192.0.2.1:4000", "--v1", backend=backend)
        assert result.returncode == 0, result.stderr
        header = server.json_line()["header"]
        assert header["version"] == 1
        # No --destination: the address connected to.
        assert header["destination"] == {"host": "127.0.0.1", "port": server.port}
        assert result.stdout.startswith(b"client 192.0.2.1:4000 via 127.0.0.1:")

        result = send(server.port, "--local", backend=backend)
        assert result.returncode == 0, result.stderr
        report = server.json_line()
        assert report["header"]["command"] == "LOCAL"
        assert report["client"] == report["peer"]
        assert b"header v2 LOCAL" in result.stdout
        assert b"(addresses not used)" in result.stdout
        assert server.stop(signal.SIGINT) == 0


def test_send_pipes_both_ways() -> None:
    # A server that answers with what it got after the header: send's stdin reaches it whole,
    # and its answer reaches send's stdout; stdin's end arrives as the connection's end.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        port = listener.getsockname()[1]
        payload = bytes(range(256)) * 1000
        got: list[bytes] = []

        def serve() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.settimeout(TIMEOUT)
                data = b""
                while chunk := connection.recv(65536):
                    data += chunk
                got.append(data)
                connection.sendall(data[::-1])

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        result = send(port, "--source", "192.0.2.1:4000", stdin=payload)
        thread.join(TIMEOUT)
        assert result.returncode == 0, result.stderr
        header, size = pp.parse(got[0])
        assert header.source == ("192.0.2.1", 4000)
        assert header.destination == ("127.0.0.1", port)
        assert got[0][size:] == payload
        assert result.stdout == got[0][::-1]


# --- echo with raw sockets ------------------------------------------------------------------------


@BACKENDS
@pytest.mark.parametrize("version", [1, 2])
def test_echo_raw_header(backend: str, version: int) -> None:
    tlvs = pp.TLVs() if version == 1 else pp.TLVs(alpn=b"h2", aws_vpce_id="vpce-0123456789")
    header = pp.Header.proxy(CLIENT, DESTINATION, version=version, tlvs=tlvs)
    with echo(backend, "--json") as server:
        reply = exchange(server.port, header.to_bytes() + b"hello")
        report = server.json_line()
        assert report["policy"] == "require"
        assert report["header"]["version"] == version
        assert report["header"]["source"] == {"host": CLIENT[0], "port": CLIENT[1]}
        assert report["header"]["destination"] == {"host": DESTINATION[0], "port": DESTINATION[1]}
        if version == 2:
            assert report["header"]["tlvs"]["aws_vpce_id"] == "vpce-0123456789"
            assert [tlv["type"] for tlv in report["header"]["tlvs"]["raw"]] == [0x01, 0xEA]
        assert reply.decode() == report["summary"] + "\n"
        assert reply.startswith(b"client 203.0.113.7:51234 via 127.0.0.1:")
        assert server.stop() == 0


@BACKENDS
def test_echo_text_output(backend: str) -> None:
    ssl = pp.SSLInfo(client=pp.SSLClient.SSL, verify=0, version="TLSv1.3", cn="alice")
    header = pp.Header.proxy(CLIENT, DESTINATION, tlvs=pp.TLVs(ssl=ssl))
    with echo(backend) as server:
        reply = exchange(server.port, header.to_bytes(crc32c=True))
        block = []
        while line := server.stdout.get(timeout=TIMEOUT):
            block.append(line)
        assert block[0].startswith("connection from 127.0.0.1:")
        assert block[0].endswith("(policy require)")
        table = {}
        for line in block[1:]:
            label, _, value = line.strip().partition("  ")
            table[label] = value.strip()
        assert table["source"] == "203.0.113.7:51234"
        assert table["destination"] == "198.51.100.10:443"
        assert table["SSL"] == "TLS"
        assert block[1].split() == ["version", "2", "(binary)"]
        assert table["version"] == "TLSv1.3"  # the SSL sub-TLV's, further down
        assert table["cn"] == "alice"
        assert table["CRC32C"].endswith("(verified)")
        assert table["reply"] + "\n" == reply.decode()
        assert server.stop() == 0


@BACKENDS
def test_echo_no_header(backend: str) -> None:
    with echo(backend, "--json", "--policy", "use") as server:
        reply = exchange(server.port, b"GET / HTTP/1.0\r\n\r\n")
        report = server.json_line()
        assert report["header"] is None
        assert report["client"] == report["peer"]
        port = report["peer"]["port"]
        assert reply == f"client 127.0.0.1:{port} no header (direct)\n".encode()
        assert server.stop() == 0


@BACKENDS
def test_echo_require_refuses_no_header(backend: str) -> None:
    with echo(backend, "--json", "--policy", "require") as server:
        assert exchange(server.port, b"GET / HTTP/1.0\r\n\r\n") == b""
        line = server.stderr_line()
        assert "refused connection from 127.0.0.1:" in line
        # The next connection, with a header, is served: the refusal did not stop the server.
        reply = exchange(server.port, pp.Header.proxy(CLIENT, DESTINATION).to_bytes())
        assert reply.startswith(b"client 203.0.113.7:51234 ")
        assert server.json_line()["header"]["version"] == 2
        assert server.stop() == 0


@BACKENDS
def test_echo_trusted(backend: str) -> None:
    header = pp.Header.proxy(CLIENT, DESTINATION).to_bytes()
    # Loopback is not trusted: its header is refused (REJECT for everyone else).
    with echo(backend, "--json", "--trusted", "10.0.0.0/8", "--trusted", "fd00::/8") as server:
        assert exchange(server.port, header) == b""
        assert "REJECT" in server.stderr_line()
        assert server.stop() == 0
    # Loopback trusted, with --policy use: a header is used, no header is direct.
    with echo(backend, "--json", "--trusted", "127.0.0.0/8", "--policy", "use") as server:
        assert exchange(server.port, header).startswith(b"client 203.0.113.7:51234 via ")
        assert server.json_line()["policy"] == "use"
        assert b"no header (direct)" in exchange(server.port, b"hello")
        assert server.json_line()["header"] is None
        assert server.stop() == 0


def test_echo_header_timeout() -> None:
    with echo("asyncio", "--json", "--header-timeout", "0.2") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
            sock.sendall(b"PROXY TCP4 ")
            assert sock.recv(100) == b""
        assert "within 0.2s" in server.stderr_line()
        assert server.stop() == 0


def test_echo_cannot_listen() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*proxyproto(), "echo", "--listen", f"127.0.0.1:{port}"],
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
    assert result.returncode == 1
    assert result.stderr.decode().startswith(f"proxyproto: cannot listen on 127.0.0.1:{port}: ")


# --- echo survives every header the parser accepts ---------------------------------------------


def assert_printable_reply(reply: bytes) -> None:
    """The summary line echo sends back: one printable line."""
    assert reply.endswith(b"\n"), reply
    assert reply[:-1].decode().isprintable(), reply


@BACKENDS
def test_echo_json_survives_odd_headers(backend: str) -> None:
    with echo(backend, "--json") as server:
        for name, data in ODD_HEADERS.items():
            reply = exchange(server.port, data + b"hello")
            report = server.json_line()
            assert report["summary"] + "\n" == reply.decode(), name
            assert_printable_reply(reply)
            # Every string is text: no lone surrogate, which other JSON parsers refuse.
            json.dumps(report, ensure_ascii=False).encode("utf-8")
            if name == "unix-path-not-utf8":
                header = report["header"]
                assert header["source"] == "/tmp/\\xff\\xfe" + ANSI
                assert header["destination"] == "/run/app\\x80.sock"
                assert report["client"] == header["source"]
            if name == "authority-escapes":
                authority = report["header"]["tlvs"]["authority"]
                assert authority == ANSI + FORGED_LINE + BIDI  # JSON says it as it came
        assert server.stop() == 0


@BACKENDS
def test_echo_text_survives_odd_headers(backend: str) -> None:
    with echo(backend) as server:
        for name, data in ODD_HEADERS.items():
            reply = exchange(server.port, data + b"hello")
            assert_printable_reply(reply)
            block = []
            while line := server.stdout.get(timeout=TIMEOUT):
                block.append(line)
            # One block per connection, each line a row: nothing in a field broke a line.
            assert block[0].startswith("connection from 127.0.0.1:"), (name, block)
            assert block[-1].split() == ["reply", *reply.decode().split()], (name, block)
            for line in block:
                assert line.isprintable(), (name, line)
                assert "\x1b" not in line
                assert "\u202e" not in line
            table = {}
            for line in block[1:]:
                label, _, value = line.strip().partition("  ")
                table[label] = value.strip()
            if name == "unix-path-not-utf8":
                assert table["source"] == "unix:/tmp/\\xff\\xfe\\x1b[2J\\x1b[31m"
            if name == "unix-abstract":
                assert table["source"] == "unix:\\x00abstract\\n\\x1b[2J\\x1b[31m"
            if name == "authority-escapes":
                assert table["AUTHORITY"] == (
                    "\\x1b[2J\\x1b[31m\\r\\n2026-01-01 00:00:00 INFO forged line\\u202egnp.exe"
                )
        assert server.stderr.empty(), server.drain()
        assert server.stop() == 0


# --- send's failures ------------------------------------------------------------------------------


@BACKENDS
def test_send_connection_refused(backend: str) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        # Bound but not listening: a connection to it is refused.
        result = send(port, "--source", "192.0.2.1:4000", backend=backend)
    assert result.returncode == 1
    assert result.stdout == b""
    expected = f"proxyproto: cannot connect to 127.0.0.1:{port}: Connection refused\n"
    assert result.stderr.decode() == expected


@BACKENDS
@pytest.mark.parametrize("destination", [False, True], ids=["resolved-for-header", "connect"])
def test_send_to_a_name_that_does_not_resolve(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    backend: str,
    destination: bool,
) -> None:
    # No real lookup (this machine's resolver may not answer): the name fails as an unknown
    # one does, with getaddrinfo's own code, which is not an errno value.
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("nosuch.invalid", b"nosuch.invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    options = ["--destination", "198.51.100.10:443"] if destination else []
    argv = ["send", "nosuch.invalid:80", "--source", "192.0.2.1:4000", *options]
    assert main([*argv, "--backend", backend]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "proxyproto: cannot connect to nosuch.invalid:80: the name did not resolve"
        " (Name or service not known)\n"
    )


def test_send_invalid_header(capsys: pytest.CaptureFixture[str]) -> None:
    # Known before connecting: nothing listens on port 9, and nothing needs to.
    status = main(["send", "127.0.0.1:9", "--source", "192.0.2.1:1", "--destination", "[::1]:2"])
    _, err = capsys.readouterr()
    assert status == 1
    assert err.startswith("proxyproto: invalid header: ")
    assert "one address family" in err
    status = main(["send", "127.0.0.1:9", "--local", "--v1"])
    assert status == 1
    assert "LOCAL" in capsys.readouterr().err


# --- usage ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["echo"], "--listen"),
        (["echo", "--listen", "8000"], "HOST:PORT"),
        (["echo", "--listen", "127.0.0.1:65536"], "0 to 65535"),
        (["echo", "--listen", "unix:/tmp/x"], "only TCP"),
        (["echo", "--listen", "127.0.0.1:0", "--policy", "maybe"], "--policy"),
        (["echo", "--listen", "127.0.0.1:0", "--trusted", "10.0.0.1/8"], "host bits set"),
        (["echo", "--listen", "127.0.0.1:0", "--trusted", "nope"], "not an IP address or network"),
        (
            ["echo", "--listen", "127.0.0.1:0", "--header-timeout", "0"],
            "positive number of seconds",
        ),
        (
            ["echo", "--listen", "127.0.0.1:0", "--header-timeout", "inf"],
            "positive number of seconds",
        ),
        (["echo", "--listen", "127.0.0.1:0", "--backend", "curio"], "--backend"),
        (["echo", "--listen", "127.0.0.1:0", "--bogus"], "unrecognized arguments: --bogus"),
        (["send", "--source", "192.0.2.1:1"], "HOST:PORT"),
        (["send", "127.0.0.1:0", "--source", "192.0.2.1:1"], "port 0"),
        (["send", "127.0.0.1:80"], "--source is required"),
        (["send", "127.0.0.1:80", "--source", "example.com:1"], "not an IP address"),
        (["send", "127.0.0.1:80", "--local", "--source", "192.0.2.1:1"], "--local"),
        (["send", "127.0.0.1:80", "--source", "192.0.2.1:1", "--v1", "--v2"], "not allowed"),
        (["send", "127.0.0.1:80", "--source", "192.0.2.1:1", "--timeout", "-1"], "seconds"),
        (["send", "127.0.0.1:80", "--local", "--unique-id", "xyz"], "--unique-id"),
    ],
)
def test_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    last = err.splitlines()[-1]
    # Unknown options are reported by the top-level parser, as "proxyproto: error: ...".
    assert last.startswith((f"proxyproto {argv[0]}: error: ", "proxyproto: error: "))
    assert message in last


# --- optional packages that are not installed ---------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["echo", "--listen", "127.0.0.1:0"],
        ["send", "127.0.0.1:9", "--source", "192.0.2.1:4000"],
        ["relay", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:9"],
        ["demo"],
    ],
    ids=lambda argv: argv[0],
)
def test_backend_trio_without_trio(argv: list[str]) -> None:
    result = subprocess.run(
        without("trio", "proxyproto", *argv, "--backend", "trio"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "proxyproto: --backend trio needs trio, which is not installed: pip install '.[trio]'\n"
    )


def test_hypercorn_without_hypercorn() -> None:
    # Without the extra, neither Hypercorn nor sniffio (which only the extra brings) is there.
    result = subprocess.run(
        without("hypercorn,sniffio", "proxyproto", "hypercorn", "app:app"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == (
        "proxyproto: hypercorn needs hypercorn, which is not installed:"
        " pip install '.[hypercorn]'\n"
    )


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [
        ("proxyproto.trio", "trio", "trio"),
        ("proxyproto.hypercorn", "hypercorn,sniffio", "hypercorn"),
        ("proxyproto.uvicorn", "uvicorn", "uvicorn"),
    ],
)
def test_importing_an_integration_without_its_extra(module: str, blocked: str, extra: str) -> None:
    # From Python, the import error itself names the extra.
    result = subprocess.run(
        without(blocked, module), capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert result.returncode == 1
    last = result.stderr.splitlines()[-1]
    name = blocked.split(",")[0]
    assert last == (
        f"ModuleNotFoundError: {module} needs {name}, which is not installed:"
        f" pip install '.[{extra}]'"
    )


@pytest.mark.parametrize("command", ["echo", "send"])
def test_help(command: str) -> None:
    result = subprocess.run(
        [*proxyproto(), command, "--help"], capture_output=True, timeout=TIMEOUT, check=True
    )
    out = result.stdout.decode()
    assert out.startswith(f"usage: proxyproto {command}")
    assert f"proxyproto {command} " in out.split("examples:")[1]
