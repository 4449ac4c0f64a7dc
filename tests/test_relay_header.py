"""``proxyproto relay`` carries the header end to end: TLVs kept and added, CRC32C, LOCAL, IPv4.

Real ``python -m proxyproto relay`` processes (see ``test_relay``), on both anyio backends; the
target records the header it got, parsed by ``proxyproto``'s own parser (which verifies a CRC32C).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import proxyproto as pp
from cli_process import launch
from haproxy_peer import find_haproxy
from interop import require_haproxy
from proxyproto._cli import main
from proxyproto._cli.relay_config import routes_from
from require_peer import ci_is_set
from test_relay import (
    BACKENDS,
    Relay,
    connected,
    exchange,
    header_through_haproxy,
    relay,
    target_server,
)

ACCEPT = ("--accept-proxy", "--trusted", "127.0.0.1", "--send-proxy", "v2")

#: What the client's own proxy claims, with TLVs of every sort (an unknown type included).
INBOUND_TLVS = pp.TLVs(
    alpn=b"h2",
    authority="client.example",
    raw=((0xE1, b"\x00\x01vendor"),),
    ssl=pp.SSLInfo(client=1, verify=0, version="TLSv1.3", cn="client"),
)
INBOUND = pp.Header.proxy(("203.0.113.7", 51234), ("198.51.100.10", 443), tlvs=INBOUND_TLVS)


def through_relay(backend: str, inbound: pp.Header, *options: str) -> pp.Header:
    """The header the target got for one connection that came to the relay with ``inbound``."""
    with target_server(header=True) as target, relay(backend, target.address, options=options) as r:
        reply, _ = exchange(r.address, b"payload", prefix=inbound.to_bytes(crc32c=True))
        assert reply == b"payload"
        header = target.next_header()
        assert header is not None
        assert r.access_log()["end"] == "done"
        return header


@BACKENDS
def test_every_tlv_is_kept(backend: str) -> None:
    header = through_relay(backend, INBOUND, *ACCEPT, "--keep-tlvs", "all")
    assert (header.source, header.destination) == (INBOUND.source, INBOUND.destination)
    # Every TLV in wire order, each value unchanged; the inbound CRC32C is not copied.
    inbound_raw = pp.parse(INBOUND.to_bytes(crc32c=True))[0].tlvs.raw
    assert header.tlvs.raw == tuple(t for t in inbound_raw if t[0] != pp.TLVType.CRC32C)
    assert header.tlvs.ssl == pp.parse(INBOUND.to_bytes())[0].tlvs.ssl
    assert header.tlvs.crc32c is None


@BACKENDS
def test_no_tlv_is_kept_by_default(backend: str) -> None:
    header = through_relay(backend, INBOUND, *ACCEPT)
    assert header.source == INBOUND.source
    assert not header.tlvs


@BACKENDS
def test_chosen_tlvs_kept_fixed_ones_added_unique_id_and_crc32c(backend: str) -> None:
    options = (
        *ACCEPT,
        "--keep-tlvs",
        "alpn,0xe1,authority",
        "--add-tlv",
        "authority=relay.example",
        "--add-tlv",
        "0xE2=c0ffee",
        "--unique-id",
        "--send-proxy-crc32c",
    )
    with target_server(header=True) as target, relay(backend, target.address, options=options) as r:
        for _ in range(2):
            reply, _ = exchange(r.address, b"x", prefix=INBOUND.to_bytes())
            assert reply == b"x"
        first, second = target.next_header(), target.next_header()
    assert first is not None
    assert second is not None
    tlvs = first.tlvs
    assert tlvs.alpn == b"h2"
    assert tlvs.authority == "relay.example"  # the added one replaces the kept one
    assert tlvs.ssl is None  # not chosen
    assert (0xE1, b"\x00\x01vendor") in tlvs.raw
    assert (0xE2, b"\xc0\xff\xee") in tlvs.raw
    assert [kind for kind, _ in tlvs.raw].count(pp.TLVType.AUTHORITY) == 1
    assert tlvs.crc32c is not None  # and the parser verified it
    assert tlvs.unique_id is not None
    assert second.tlvs.unique_id is not None
    assert len(tlvs.unique_id) == 36
    assert tlvs.unique_id != second.tlvs.unique_id  # one per connection


@BACKENDS
def test_local_stays_local(backend: str) -> None:
    inbound = pp.Header.local(tlvs=pp.TLVs(authority="health.example"))
    header = through_relay(backend, inbound, *ACCEPT, "--keep-tlvs", "all")
    assert header.command is pp.Command.LOCAL
    assert header.tlvs.authority == "health.example"


@BACKENDS
def test_local_is_sent_as_v1_unknown(backend: str) -> None:
    options = ("--accept-proxy", "--trusted", "127.0.0.1", "--send-proxy", "v1")
    header = through_relay(backend, pp.Header.local(), *options)
    assert header == pp.Header.unknown()


@BACKENDS
def test_ipv4_mapped_client_is_sent_as_tcp4(backend: str) -> None:
    inbound = pp.Header.proxy(("::ffff:203.0.113.7", 51234), ("::ffff:198.51.100.10", 443))
    assert inbound.family is pp.Family.INET6
    for version in ("v1", "v2"):
        options = ("--accept-proxy", "--trusted", "127.0.0.1", "--send-proxy", version)
        header = through_relay(backend, inbound, *options)
        assert header.family is pp.Family.INET
        assert header.source == ("203.0.113.7", 51234)
        assert header.destination == ("198.51.100.10", 443)


def test_a_real_ipv6_client_stays_tcp6() -> None:
    inbound = pp.Header.proxy(("2001:db8::7", 51234), ("::ffff:198.51.100.10", 443))
    header = through_relay("asyncio", inbound, *ACCEPT)
    assert header.family is pp.Family.INET6
    assert header.source == ("2001:db8::7", 51234)


def test_config_file_keys() -> None:
    document = {
        "listen": "127.0.0.1:0",
        "to": "127.0.0.1:1",
        "send_proxy": "v2",
        "keep_tlvs": ["alpn", 0xE1],
        "add_tlv": ["authority=example.com", "0xe2=00ff"],
        "unique_id": True,
        "send_proxy_crc32c": True,
        "idle_timeout": 30,
        "route": [{"listen": "127.0.0.1:1", "keep_tlvs": "all", "idle_timeout": 0}],
    }
    top, route = routes_from(document, {}, source="relay.toml")
    assert top.keep_tlvs == (1, 0xE1)
    assert top.add_tlvs == ((2, b"example.com"), (0xE2, b"\x00\xff"))
    assert top.unique_id
    assert top.crc32c
    assert top.idle_timeout == 30
    assert route.keep_tlvs == "all"
    assert route.idle_timeout == 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"send_proxy": "v1"}, "keep_tlvs: needs send_proxy v2"),
        ({"keep_tlvs": "some"}, "not a TLV type"),
        ({"keep_tlvs": ["crc32c"]}, "never kept"),
        ({"add_tlv": ["0xE1=zz"]}, "hexadecimal"),
        ({"add_tlv": "unique_id=00"}, "exclude each other"),
        ({"unique_id": "yes"}, "true or false"),
        ({"idle_timeout": -1}, "seconds"),
    ],
)
def test_config_file_errors(changes: dict[str, object], message: str) -> None:
    document: dict[str, object] = {"listen": "127.0.0.1:0", "to": "127.0.0.1:1", "send_proxy": "v2"}
    document.update({"keep_tlvs": "all", "unique_id": True}, **changes)
    with pytest.raises(ValueError, match=message):
        routes_from(document, {}, source="relay.toml")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--unique-id"], "--unique-id: needs --send-proxy v2"),
        (["--send-proxy", "v1", "--send-proxy-crc32c"], "--send-proxy-crc32c: needs"),
        (["--send-proxy", "v2", "--add-tlv", "0x04=00"], "cannot be added"),
        (["--send-proxy", "v2", "--add-tlv", "authority"], "TYPE=VALUE"),
        (["--send-proxy", "v2", "--keep-tlvs", "256"], "not a TLV type"),
        (["--idle-timeout", "-1"], "seconds"),
        (
            [
                "--send-proxy",
                "v2",
                "--add-tlv",
                "0xE1=" + "00" * 40000,
                "--add-tlv",
                "0xE2=" + "00" * 40000,
            ],
            "--add-tlv: the header would be",
        ),
    ],
)
def test_usage_errors(options: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["relay", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:1", *options]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.splitlines()[-1].startswith("proxyproto relay: error: ")


@pytest.mark.haproxy
def test_haproxy_tlvs_pass_through_the_relay() -> None:
    # client -> HAProxy (send-proxy-v2 with UNIQUE_ID and CRC32C) -> relay (keep all) -> target
    haproxy = require_haproxy(find_haproxy(), ci=ci_is_set())
    with (
        target_server(header=True) as target,
        relay("asyncio", target.address, options=(*ACCEPT, "--keep-tlvs", "all")) as proxy,
    ):
        header, own, _ = header_through_haproxy(
            haproxy,
            target,
            f"127.0.0.1:{proxy.port} send-proxy-v2 proxy-v2-options unique-id,crc32c",
            "unique-id-format haproxy-%ci-%cp",
        )
        assert header.tlvs.unique_id == f"haproxy-127.0.0.1-{own[1]}".encode()
        assert header.tlvs.crc32c is None  # HAProxy's checksum is not copied


# =============================================================================== access log, idle


@BACKENDS
def test_access_log_names_the_route(backend: str, tmp_path: Path) -> None:
    with target_server() as target:
        config = tmp_path / "relay.toml"
        config.write_text(
            f'to = "127.0.0.1:{target.port}"\n'
            '[[route]]\nname = "web"\nlisten = "127.0.0.1:0"\n'
            '[[route]]\nlisten = "127.0.0.1:0"\n'
        )
        with launch(Relay, "relay", "--config", str(config), "--backend", backend) as proxy:
            second = proxy.next_listening()
            assert exchange(proxy.address, b"a")[0] == b"a"
            assert proxy.access_log()["route"] == "web"
            assert exchange(second, b"b")[0] == b"b"
            assert proxy.access_log()["route"] == "127.0.0.1:0"  # no name: its listen


@BACKENDS
def test_idle_connection_is_closed(backend: str) -> None:
    with connected(backend, b"hi", "--idle-timeout", "0.3") as (proxy, sock):
        # Then nothing either way: the relay closes both sides (before the recv timeout).
        assert sock.recv(100) == b""
        log = proxy.access_log()
        assert log["end"] == "idle"
        assert (log["up"], log["down"]) == ("2", "2")
        assert proxy.process.poll() is None  # only that connection ended


@BACKENDS
def test_idle_timeout_leaves_a_flowing_connection_alone(backend: str) -> None:
    with (
        target_server() as target,
        relay(backend, target.address, options=("--idle-timeout", "2")) as proxy,
    ):
        payload = os.urandom(4 * 1024 * 1024)
        reply, _ = exchange(proxy.address, payload)
        assert reply == payload
        assert proxy.access_log()["end"] == "done"


@BACKENDS
def test_a_header_too_long_to_send_ends_that_connection_only(backend: str) -> None:
    # Added TLVs that fit (checked at the start), plus kept ones: more than a header can hold.
    inbound = pp.Header.proxy(
        ("203.0.113.7", 51234), ("198.51.100.10", 443), tlvs=pp.TLVs(raw=((0xE1, b"x" * 2000),))
    )
    big = "00" * 32000
    options = (
        *ACCEPT,
        "--keep-tlvs",
        "all",
        "--add-tlv",
        f"0xE2={big}",
        "--add-tlv",
        f"0xE3={big}",
    )
    with target_server(header=True) as target, relay(backend, target.address, options=options) as r:
        reply, _ = exchange(r.address, b"payload", prefix=inbound.to_bytes())
        assert reply == b""
        assert "cannot send a header" in r.log_line("cannot send")
        assert r.access_log()["end"] == "error_(header)"
        reply, _ = exchange(r.address, b"again", prefix=INBOUND.to_bytes())
        assert reply == b"again"  # the relay goes on
