"""Header fields that are not plain text, shown to people: ``proxyproto._core.text``, ``parse``,
logs.

The headers are :data:`odd_headers.ODD_HEADERS`; ``echo`` and the relay get them in
test_cli_net.py and test_relay.py, as real processes.
"""

from __future__ import annotations

import asyncio
import doctest
import json
import logging

import anyio
import pytest
from anyio.abc import SocketAttribute

import proxyproto as pp
import proxyproto._core.text
from odd_headers import ANSI, FORGED_LINE, ODD_HEADERS
from proxyproto._cli import main
from proxyproto._core.text import format_address, json_text, printable

ODD = pytest.mark.parametrize("data", list(ODD_HEADERS.values()), ids=list(ODD_HEADERS))

#: A bound on every async test, far above what each needs.
TEST_DEADLINE = 30.0


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("example.com", "example.com"),
        ("café ☕", "café ☕"),  # printable non-ASCII is left alone
        ("a\x1b[2Jb", "a\\x1b[2Jb"),
        ("line\r\nforged", "line\\r\\nforged"),
        ("\u202egnp.exe", "\\u202egnp.exe"),
        ("/tmp/\udcff\udc80", "/tmp/\\xff\\x80"),  # bytes that are not UTF-8 (surrogateescape)
        ("\ud800", "\\ud800"),  # any other lone surrogate
        ("\x00abstract", "\\x00abstract"),
        ("back\\slash", "back\\\\slash"),  # so that an escape always means one
        ("tab\there", "tab\\there"),
    ],
)
def test_printable(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert shown.isprintable()


def test_json_text_keeps_text_and_escapes_bytes() -> None:
    assert json_text("a\x1b\n\u202e\\") == "a\x1b\n\u202e\\"  # JSON escapes these itself
    assert json_text("/tmp/\udcff") == "/tmp/\\xff"
    json.dumps(json_text("\ud800x"), ensure_ascii=False).encode("utf-8")


def test_docstring_examples() -> None:
    assert doctest.testmod(proxyproto._core.text).failed == 0


def test_format_address() -> None:
    assert format_address(("192.0.2.1", 80)) == "192.0.2.1:80"
    assert format_address(("fe80::1%eth0", 80, 0, 2)) == "[fe80::1%eth0]:80"
    assert format_address("/run/\udcff\n") == "/run/\\xff\\n"
    assert format_address("\x00abs", unix_prefix="unix:") == "unix:\\x00abs"
    assert format_address("") == "(unnamed)"
    assert format_address(None) == "-"


@ODD
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_parse_prints_odd_headers(
    capsys: pytest.CaptureFixture[str], data: bytes, as_json: bool
) -> None:
    assert main(["parse", *(["--json"] if as_json else []), data.hex()]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    if as_json:
        report = json.loads(out)
        json.dumps(report, ensure_ascii=False).encode("utf-8")
        assert out.isascii()
    else:
        header, _ = pp.parse(data)
        rows = out.splitlines()
        assert all(row.isprintable() for row in rows), rows
        tlv_rows = [row for row in rows if row.startswith("  ")]
        assert len(tlv_rows) >= len(header.tlvs.raw)  # one row per TLV: no field broke a line


# --- the anyio listener's log lines ------------------------------------------------------------


def assert_refusals_escaped(caplog: pytest.LogCaptureFixture) -> None:
    """Every odd header was refused by :func:`quoting_validator` with one printable line, its
    fields escaped: no terminal escape, no forged line, non-UTF-8 bytes written as ``\\xNN``."""
    messages = [r.getMessage() for r in caplog.records if r.name == "proxyproto"]
    refused = [m for m in messages if "the validator refused the header" in m]
    assert len(refused) == len(ODD_HEADERS), messages
    for message in messages:
        assert message.isprintable(), message
    assert any("\\x1b[2J" in message and "\\r\\n2026" in message for message in refused)
    assert any("\\xff\\xfe" in message for message in refused)
    assert ANSI not in "".join(messages)
    assert FORGED_LINE not in "".join(messages)


def quoting_validator(header: pp.Header, peer: pp.PeerAddress) -> bool:
    """Refuses every header, quoting its fields as a user's validator might."""
    cn = header.tlvs.ssl and header.tlvs.ssl.cn
    raise pp.HeaderRejected(f"from {header.source} for {header.tlvs.authority} cn {cn}")


@pytest.mark.anyio
async def test_listener_log_lines_are_printable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxyproto")
    config = pp.ProxyProtocolConfig(validator=quoting_validator, header_timeout=10.0)
    inner = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    listener = pp.ProxyProtocolListener(inner, config)
    port = listener.extra(SocketAttribute.local_port)

    async def handler(stream: pp.ProxiedStream) -> None:
        async with stream:
            await stream.send(b"served")

    with anyio.fail_after(TEST_DEADLINE):
        async with listener, anyio.create_task_group() as task_group:
            task_group.start_soon(listener.serve, handler)
            for data in ODD_HEADERS.values():
                async with await anyio.connect_tcp("127.0.0.1", port) as client:
                    await client.send(data + b"hello")
                    got = b""
                    try:
                        while True:
                            got += await client.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        pass
                assert got == b"", data
            while listener.statistics().in_flight:
                await anyio.sleep(0.01)
            task_group.cancel_scope.cancel()
    assert_refusals_escaped(caplog)


# --- the asyncio handshake (Uvicorn, Hypercorn's asyncio worker) and UDP ----------------------


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_asyncio_handshake_log_lines_are_printable(
    caplog: pytest.LogCaptureFixture, asynchronous: bool
) -> None:
    from test_asyncio_handshake import serve

    async def async_validator(header: pp.Header, peer: pp.PeerAddress) -> bool:
        return quoting_validator(header, peer)

    validator = async_validator if asynchronous else quoting_validator
    config = pp.ProxyProtocolConfig(validator=validator, header_timeout=10.0)

    async def main() -> None:
        server, _, port = await serve(config, [])
        async with server:
            for data in ODD_HEADERS.values():
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(data + b"hello")
                assert await reader.read() == b""  # refused: closed without a word
                writer.close()
                await writer.wait_closed()

    caplog.set_level(logging.INFO, logger="proxyproto")
    asyncio.run(asyncio.wait_for(main(), TEST_DEADLINE))
    assert_refusals_escaped(caplog)


@pytest.mark.anyio
async def test_udp_log_lines_are_printable(caplog: pytest.LogCaptureFixture) -> None:
    from test_udp import pair

    header = pp.Header.proxy(
        ("192.0.2.1", 1),
        ("198.51.100.7", 53),
        transport=pp.Transport.DGRAM,
        tlvs=pp.TLVs(authority=ANSI + FORGED_LINE),
    )
    caplog.set_level(logging.INFO, logger="proxyproto")
    config = pp.ProxyProtocolConfig(validator=quoting_validator)
    with anyio.fail_after(TEST_DEADLINE):
        async with pair(config) as (server, client, to):
            await pp.send_datagram(client, header, b"refused", to)
            while not server.statistics().dropped:
                with anyio.move_on_after(0.05):
                    await server.receive()
    assert server.statistics().dropped == {"validator": 1}
    [message] = [r.getMessage() for r in caplog.records if r.name == "proxyproto"]
    assert message.isprintable(), message
    assert "\\x1b[2J\\x1b[31m\\r\\n2026" in message


def test_native_trio_listener_log_lines_are_printable(caplog: pytest.LogCaptureFixture) -> None:
    import trio

    from test_trio import _ask, _serve

    async def handler(stream: object) -> None:
        raise AssertionError("every header is refused")

    async def main() -> None:
        with trio.fail_after(TEST_DEADLINE):
            async with trio.open_nursery() as nursery:
                config = pp.ProxyProtocolConfig(validator=quoting_validator)
                listener, port = await _serve(nursery, handler, config)
                for data in ODD_HEADERS.values():
                    assert await _ask(port, data + b"hello") == b""
                while listener.statistics().in_flight:
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()

    caplog.set_level(logging.INFO, logger="proxyproto")
    trio.run(main)
    assert_refusals_escaped(caplog)
