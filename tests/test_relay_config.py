"""``proxyproto relay --config FILE.toml``: routes, precedence, reload on change.

As in ``test_relay``: real ``python -m proxyproto relay`` processes on 127.0.0.1, threaded echo
targets in this process, every wait bounded, every process killed in a ``finally``. The file is
rewritten as editors do (a new file renamed over the old one).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cli_process import TIMEOUT, Address, launch, listening_addresses, run_cli
from interop import has_ipv6_loopback
from proxyproto._cli import main
from test_relay import Relay, exchange, refused_soon, target_server


def write(path: Path, text: str) -> None:
    """Replace ``path`` at once, as an editor saves: no reader sees half a file."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def to(*targets: Address) -> str:
    return "[" + ", ".join(f'"127.0.0.1:{port}"' for _, port in targets) + "]"


class ConfiguredRelay(Relay):
    """A relay started with ``--config``: one ``listening on`` line per route, in order."""

    def start_routes(self, count: int) -> list[Address]:
        return [self.next_listening() for _ in range(count)]


@contextmanager
def configured(
    config: Path, routes: int, options: tuple[str, ...] = ()
) -> Iterator[tuple[ConfiguredRelay, list[Address]]]:
    with launch(
        ConfiguredRelay, "relay", "--config", str(config), *options, start=False
    ) as running:
        yield running, running.start_routes(routes)


def test_two_routes_both_relay(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    with target_server() as plain, target_server(header=True) as with_header:
        write(
            config,
            f"""
            connect_timeout = 2

            [[route]]
            name = "plain"
            listen = "127.0.0.1:0"
            to = {to(plain.address)}

            [[route]]
            name = "proxied"
            listen = "127.0.0.1:0"
            to = "127.0.0.1:{with_header.port}"
            send_proxy = "v2"
            """,
        )
        with configured(config, 2) as (relay, (first, second)):
            assert exchange(first, b"one")[0] == b"one"
            assert relay.access_log()["target"] == f"127.0.0.1:{plain.port}"
            reply, own = exchange(second, b"two")
            assert reply == b"two"
            header = with_header.next_header()
            assert header is not None
            assert (header.version, header.source, header.destination) == (2, own, second)
            assert plain.next_header() is None
            assert relay.stop() == 0


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_target_change_applies_to_new_connections_only(tmp_path: Path, backend: str) -> None:
    config = tmp_path / "relay.toml"
    with target_server() as old, target_server() as new:
        write(config, f'listen = "127.0.0.1:0"\nto = {to(old.address)}\n')
        with configured(config, 1, ("--backend", backend)) as (relay, (address,)):
            with socket.create_connection(address, timeout=TIMEOUT) as before:
                before.sendall(b"before")
                assert before.recv(100) == b"before"
                write(config, f'listen = "127.0.0.1:0"\nto = {to(new.address)}\n')
                assert "updated: 127.0.0.1:0" in relay.log_line("reload applied")
                # A new connection goes to the new target ...
                assert exchange(address, b"after")[0] == b"after"
                assert relay.access_log()["target"] == f"127.0.0.1:{new.port}"
                assert new.connections == 1
                # ... while the open one still flows to the old one, until it ends.
                before.sendall(b"still")
                assert before.recv(100) == b"still"
                before.shutdown(socket.SHUT_WR)
                assert before.recv(100) == b""
            log = relay.access_log()
            assert (log["target"], log["end"]) == (f"127.0.0.1:{old.port}", "done")
            assert old.connections == 1


def test_invalid_edit_is_logged_and_ignored(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    with target_server() as first, target_server() as second:
        write(config, f'listen = "127.0.0.1:0"\nto = {to(first.address)}\n')
        with configured(config, 1) as (relay, (address,)):
            write(config, f'listen = "127.0.0.1:0"\nto = {to(second.address)}\nbalance = "fast"\n')
            line = relay.log_line("reload:")
            assert f"{config}: balance: 'fast' is not one of" in line
            assert "the settings in force stay" in line
            assert exchange(address, b"x")[0] == b"x"
            assert relay.access_log()["target"] == f"127.0.0.1:{first.port}"
            write(config, "listen = [broken\n")
            assert "not valid TOML" in relay.log_line("reload:")
            # The watcher goes on: a valid file is applied again.
            write(config, f'listen = "127.0.0.1:0"\nto = {to(second.address)}\n')
            relay.log_line("reload applied")
            assert exchange(address, b"y")[0] == b"y"
            assert relay.access_log()["target"] == f"127.0.0.1:{second.port}"


def test_routes_added_and_removed_on_reload(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    with target_server() as target:
        route_a = f'[[route]]\nname = "a"\nlisten = "127.0.0.1:0"\nto = {to(target.address)}\n'
        route_b = route_a.replace('"a"', '"b"')
        write(config, route_a)
        with configured(config, 1) as (relay, (a,)):
            with socket.create_connection(a, timeout=TIMEOUT) as on_a:
                on_a.sendall(b"a")
                assert on_a.recv(100) == b"a"
                write(config, route_b)  # a removed, b added
                b = relay.next_listening()
                line = relay.log_line("reload applied")
                assert "opened: b (" in line
                assert "closed: a" in line
                assert exchange(b, b"b")[0] == b"b"
                assert refused_soon(a)  # a's listener is closed ...
                on_a.sendall(b"still")  # ... its open connection keeps flowing
                assert on_a.recv(100) == b"still"
                on_a.shutdown(socket.SHUT_WR)
                assert on_a.recv(100) == b""
            assert relay.stop() == 0


def test_flags_override_the_files_top_level(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    with target_server(header=True) as target, target_server() as unused:
        write(
            config,
            f"""
            listen = "127.0.0.1:0"
            to = {to(unused.address)}
            send_proxy = "v1"

            [[route]]
            listen = "127.0.0.1:0"
            name = "inherits"

            [[route]]
            listen = "127.0.0.1:0"
            name = "own"
            send_proxy = "v1"
            """,
        )
        options = ("--to", f"127.0.0.1:{target.port}", "--send-proxy", "v2")
        with configured(config, 3, options) as (_relay, (top, inherits, own)):
            for address, version in ((top, 2), (inherits, 2), (own, 1)):
                assert exchange(address, b"x")[0] == b"x"
                header = target.next_header()
                assert header is not None
                assert header.version == version
            assert unused.connections == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("listen = [", "not valid TOML"),
        ('listen = "127.0.0.1:0"', "to: missing"),
        (
            'listen = "127.0.0.1:0"\nto = "127.0.0.1:1"\nsend-proxy = "v2"',
            "did you mean send_proxy",
        ),
        ('to = "127.0.0.1:1"', "no route"),
        ('to = "127.0.0.1:1"\n[[route]]\nlisten = "nowhere"', "[route 1] listen: 'nowhere'"),
        ('to = "127.0.0.1:1"\n[[route]]\nlisten = "127.0.0.1:0"\ngrace = -1', "grace: '-1'"),
        (
            'to = "127.0.0.1:1"\n[[route]]\nlisten = "127.0.0.1:0"\n'
            '[[route]]\nlisten = "127.0.0.1:0"',
            "distinct name",
        ),
        ('listen = "127.0.0.1:0"\nto = "127.0.0.1:1"\ntrusted = "10.0.0.0/8"', "accept_proxy"),
        ('listen = "127.0.0.1:0"\nto = "127.0.0.1:1"\naccept_proxy = "yes"', "true or false"),
    ],
)
def test_bad_file_at_startup(
    tmp_path: Path, text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(text)
    assert main(["relay", "--config", str(config)]) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith(f"proxyproto relay: error: {config}: ")
    assert message in last


def test_missing_file_in_a_process(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    result = run_cli("relay", "--config", str(missing))
    assert result.returncode == 2
    last = result.stderr.splitlines()[-1]
    assert last == f"proxyproto relay: error: {missing}: cannot read: No such file or directory"


def test_a_route_that_cannot_listen_on_reload_is_logged(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    with target_server() as target, socket.create_server(("127.0.0.1", 0)) as taken:
        busy = taken.getsockname()[1]
        top = f'listen = "127.0.0.1:0"\nto = {to(target.address)}\n'
        write(config, top)
        with configured(config, 1) as (relay, (address,)):
            write(config, f'{top}[[route]]\nlisten = "127.0.0.1:{busy}"\n')
            assert f"cannot listen on 127.0.0.1:{busy}" in relay.log_line("reload:")
            assert f"not opened: 127.0.0.1:{busy}" in relay.log_line("reload applied")
            assert exchange(address, b"x")[0] == b"x"
            assert relay.stop() == 0


GOOD = 'listen = "127.0.0.1:0"\nto = "127.0.0.1:1"\n'

#: Files tomllib cannot take, each with what the one line says.
BROKEN_FILES = {
    "invalid-utf8": (GOOD.encode() + b'name = "\xff"\n', "not UTF-8 text"),
    "latin-1": (GOOD.encode() + 'name = "café"\n'.encode("latin-1"), "not UTF-8 text"),
    "utf-16": (GOOD.encode("utf-16"), "not UTF-8 text"),
    "huge-integer": ((GOOD + "grace = " + "9" * 5000 + "\n").encode(), "not usable TOML"),
    "deep-nesting": ((GOOD + "name = " + "[" * 5000 + "]" * 5000 + "\n").encode(), "nested"),
    "directory": (None, "cannot read"),
    # names getaddrinfo cannot encode (UnicodeError, not OSError)
    "empty-label-listen": (b'listen = "a..b:1"\nto = "127.0.0.1:1"\n', "not a valid host name"),
    "long-label-to": (
        f'listen = "127.0.0.1:0"\nto = "{"a" * 64}.example:1"\n'.encode(),
        "not a valid host name",
    ),
}


def broken_file(tmp_path: Path, case: str) -> Path:
    path = tmp_path / "broken.toml"
    content = BROKEN_FILES[case][0]
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("case", BROKEN_FILES)
def test_broken_file_at_startup_is_one_line(tmp_path: Path, case: str) -> None:
    path = broken_file(tmp_path, case)
    result = run_cli("relay", "--config", str(path))
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"proxyproto relay: error: {path}: ")
    assert BROKEN_FILES[case][1] in line


@pytest.mark.parametrize("case", [case for case in BROKEN_FILES if case != "directory"])
def test_broken_file_on_reload_keeps_routes_and_connections(tmp_path: Path, case: str) -> None:
    config = tmp_path / "relay.toml"
    with target_server() as target:
        write(config, f'listen = "127.0.0.1:0"\nto = {to(target.address)}\n')
        with configured(config, 1) as (relay, (address,)):
            with socket.create_connection(address, timeout=TIMEOUT) as open_one:
                open_one.sendall(b"before")
                assert open_one.recv(100) == b"before"
                temporary = tmp_path / "next.tmp"
                temporary.write_bytes(BROKEN_FILES[case][0] or b"")
                os.replace(temporary, config)
                line = relay.log_line("reload:")
                assert BROKEN_FILES[case][1] in line
                assert "the settings in force stay" in line
                # The old route still serves, and the open connection still flows.
                assert exchange(address, b"new")[0] == b"new"
                open_one.sendall(b"after")
                assert open_one.recv(100) == b"after"
            assert relay.process.poll() is None
            assert relay.stop() == 0


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this host has no IPv6 loopback")
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_several_listening_addresses(tmp_path: Path, backend: str) -> None:
    """``listen = [...]``: one listener per address, the same settings, ``NAME@ADDRESS``."""
    config = tmp_path / "relay.toml"
    with target_server(header=True) as target:
        write(
            config,
            f'name = "web"\nlisten = ["127.0.0.1:0", "[::1]:0"]\nto = {to(target.address)}\n'
            'send_proxy = "v2"\n',
        )
        with launch(
            Relay, "relay", "--config", str(config), "--backend", backend, start=False
        ) as relay:
            lines = [relay.stdout.get(timeout=TIMEOUT) for _ in range(2)]
            [v4], [v6] = (listening_addresses(line or "") for line in lines)
            assert (v4[0], v6[0]) == ("127.0.0.1", "::1")
            for address in (v4, v6):
                reply, own = exchange(address, b"hello")
                assert reply == b"hello"
                header = target.next_header()
                assert header is not None
                assert (header.source, header.destination) == (own, address)
                assert relay.access_log()["route"] == "web@" + (
                    "127.0.0.1:0" if address is v4 else "[::1]:0"
                )
            assert relay.stop() == 0


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("[]", "expected one address or more"),
        ('["127.0.0.1:0", "127.0.0.1:0"]', "127.0.0.1:0 given twice"),
        ('["127.0.0.1:0", 1]', "expected a string or a list of strings"),
    ],
)
def test_bad_listening_lists(
    tmp_path: Path, listen: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(f'listen = {listen}\nto = "127.0.0.1:1"\n')
    assert main(["relay", "--config", str(config)]) == 2
    assert f"listen: {message}" in capsys.readouterr().err.splitlines()[-1]


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this host has no IPv6 loopback")
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("workers", [(), ("--workers", "2")])
def test_several_listen_options(backend: str, workers: tuple[str, ...]) -> None:
    """``--listen`` repeated: one listener each, the same settings (with workers: each port 0
    chosen once, shared by both workers)."""
    with (
        target_server(header=True) as target,
        launch(
            Relay,
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "[::1]:0",
            "--to",
            f"127.0.0.1:{target.port}",
            "--send-proxy",
            "v1",
            "--backend",
            backend,
            *workers,
            start=False,
            session=True,
        ) as relay,
    ):
        lines = [relay.stdout.get(timeout=TIMEOUT) for _ in range(2)]
        [v4], [v6] = (listening_addresses(line or "") for line in lines)
        assert (v4[0], v6[0]) == ("127.0.0.1", "::1")
        for address in (v4, v6) * 2:
            reply, own = exchange(address, b"hello")
            assert reply == b"hello"
            header = target.next_header()
            assert header is not None
            assert (header.version, header.source, header.destination) == (1, own, address)
        assert relay.stop() == 0


def test_udp_dual_stack_beside_another_listen(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["relay", "--udp", "--listen", "[::]:5300", "--listen", "127.0.0.1:5300"]
    assert main([*argv, "--to", "127.0.0.1:1"]) == 2
    assert "--listen: [::] with --udp takes IPv4 clients too" in capsys.readouterr().err
