"""The ``proxyproto`` command: ``main()`` in-process, and once through ``python -m proxyproto``."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys

import pytest

import proxyproto as pp
from proxyproto._cli import main
from proxyproto._cli.args import proxy_config, split_address
from proxyproto._cli.output import format_address

SOURCE = ("192.0.2.1", 56324)
DESTINATION = ("198.51.100.7", 443)
ADDRESSES = ["--source", "192.0.2.1:56324", "--destination", "198.51.100.7:443"]
CERT = bytes(range(256)) * 3

EVERY_TLV = pp.TLVs(
    alpn=b"h2",
    authority="example.com",
    unique_id=b"\x00\x01\xfe\xff",
    netns="blue",
    ssl=pp.SSLInfo(
        client=pp.SSLClient.SSL | pp.SSLClient.CERT_CONN,
        verify=0,
        version="TLSv1.3",
        cn="alice",
        cipher="TLS_AES_256_GCM_SHA384",
        sig_alg="SHA256",
        key_alg="RSA2048",
        group="X25519",
        sig_scheme="rsa_pss_rsae_sha256",
        client_cert=CERT,
        raw=((0x7F, b"\xab"),),
    ),
    aws_vpce_id="vpce-0123456789abcdef0",
    azure_link_id=0x12345678,
    gcp_psc_id=2**40 + 7,
    raw=((0xF0, b"\xca\xfe"),),
)


class FakeStdin:
    """Just what the CLI uses of ``sys.stdin``: ``.buffer``."""

    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def rows(out: str) -> dict[str, str]:
    """The human-readable output as {label: value}; labels and values are two spaces apart."""
    table = {}
    for line in out.splitlines():
        label, _, value = line.strip().partition("  ")
        table[label] = value.strip()
    return table


def built(out: str) -> tuple[pp.Header, int, bytes]:
    data = bytes.fromhex(out)
    header, size = pp.parse(data)
    return header, size, data


# --- parse ---------------------------------------------------------------------------------------


def test_parse_v1(capsys: pytest.CaptureFixture[str]) -> None:
    data = pp.Header.proxy(SOURCE, DESTINATION, version=1).to_bytes()
    status, out, err = run(capsys, "parse", data.hex())
    assert (status, err) == (0, "")
    table = rows(out)
    assert table["version"].startswith("1")
    assert table["command"] == "PROXY"
    assert table["family"].startswith("INET")
    assert table["transport"] == "STREAM"
    assert table["source"] == "192.0.2.1:56324"
    assert table["destination"] == "198.51.100.7:443"
    assert table["header size"] == f"{len(data)} bytes"
    assert "trailing data" not in table


def test_parse_v2_hex_with_whitespace_and_0x(capsys: pytest.CaptureFixture[str]) -> None:
    source, destination = ("2001:db8::1", 1234), ("2001:db8::2", 443)
    data = pp.Header.proxy(source, destination).to_bytes()
    spaced = "0x" + " ".join(data[i : i + 4].hex() for i in range(0, len(data), 4)) + "\n"
    status, out, _ = run(capsys, "parse", spaced)
    assert status == 0
    table = rows(out)
    assert table["version"].startswith("2")
    assert table["family"].startswith("INET6")
    assert table["source"] == "[2001:db8::1]:1234"
    assert table["destination"] == "[2001:db8::2]:443"


def test_parse_shows_every_tlv(capsys: pytest.CaptureFixture[str]) -> None:
    data = pp.Header.proxy(SOURCE, DESTINATION, tlvs=EVERY_TLV).to_bytes(crc32c=True)
    header, _ = pp.parse(data)
    status, out, _ = run(capsys, "parse", data.hex())
    assert status == 0
    table = rows(out)
    assert table["ALPN"] == "h2"
    assert table["AUTHORITY"] == "example.com"
    assert table["UNIQUE_ID"] == "0001feff"
    assert table["NETNS"] == "blue"
    assert header.tlvs.crc32c is not None
    assert f"{header.tlvs.crc32c:08x}" in table["CRC32C"]
    assert "verified" in table["CRC32C"]
    assert "SSL" in table["client"]
    assert "CERT_CONN" in table["client"]
    assert "CERT_SESS" not in table["client"]
    assert table["verify"].startswith("0")
    for name in ("version", "cn", "cipher", "sig_alg", "key_alg", "group", "sig_scheme"):
        assert EVERY_TLV.ssl is not None
        assert table[name] == getattr(EVERY_TLV.ssl, name), name
    fingerprint = hashlib.sha256(CERT).hexdigest()
    assert str(len(CERT)) in table["client cert"]
    assert fingerprint in table["client cert"].replace(":", "").lower()
    assert table["sub-TLV 0x7F"] == "ab"
    assert table["AWS VPC endpoint id"] == "vpce-0123456789abcdef0"
    assert table["Azure link id"] == str(0x12345678)
    assert table["GCP PSC id"] == str(2**40 + 7)
    assert rows(out)["0xF0 (unknown)"] == "cafe"


def test_parse_shows_a_repeated_tlv_raw_after_the_one_used(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Issue 9: a repeated type is accepted, the first occurrence is the one used.
    tlvs = pp.TLVs(authority="first.example", raw=((0x02, b"first.example"), (0x02, b"second")))
    data = pp.Header.proxy(SOURCE, DESTINATION, tlvs=tlvs).to_bytes()
    status, out, _ = run(capsys, "parse", data.hex())
    assert status == 0
    table = rows(out)
    assert table["AUTHORITY"] == "first.example"
    assert table["0x02 AUTHORITY (repeated, unused)"] == b"second".hex()


def test_parse_shows_padding_and_trailing_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    data = pp.Header.local().to_bytes(pad_to=40) + b"hello"
    status, out, _ = run(capsys, "parse", data.hex())
    assert status == 0
    table = rows(out)
    assert table["command"] == "LOCAL"
    assert table["source"] == table["destination"] == "-"
    assert table["header size"] == "40 bytes"
    assert table["trailing data"].startswith("5 bytes")
    assert table["NOOP"].startswith(f"{40 - 16 - 3} bytes")


def test_parse_json(capsys: pytest.CaptureFixture[str]) -> None:
    data = pp.Header.proxy(SOURCE, DESTINATION, tlvs=EVERY_TLV).to_bytes(crc32c=True)
    header, size = pp.parse(data)
    status, out, _ = run(capsys, "parse", "--json", (data + b"xyz").hex())
    assert status == 0
    got = json.loads(out)
    assert got["version"] == 2
    assert got["command"] == "PROXY"
    assert got["family"] == "INET"
    assert got["transport"] == "STREAM"
    assert got["source"] == {"host": SOURCE[0], "port": SOURCE[1]}
    assert got["destination"] == {"host": DESTINATION[0], "port": DESTINATION[1]}
    assert got["header_size"] == size
    assert got["trailing_bytes"] == 3
    tlvs = got["tlvs"]
    assert bytes.fromhex(tlvs["alpn"]) == EVERY_TLV.alpn
    assert tlvs["authority"] == EVERY_TLV.authority
    assert tlvs["crc32c"] == header.tlvs.crc32c
    assert bytes.fromhex(tlvs["unique_id"]) == EVERY_TLV.unique_id
    assert tlvs["netns"] == EVERY_TLV.netns
    assert tlvs["aws_vpce_id"] == EVERY_TLV.aws_vpce_id
    assert tlvs["azure_link_id"] == EVERY_TLV.azure_link_id
    assert tlvs["gcp_psc_id"] == EVERY_TLV.gcp_psc_id
    assert [(t["type"], bytes.fromhex(t["value_hex"])) for t in tlvs["raw"]] == list(
        header.tlvs.raw
    )
    ssl, sent_ssl = tlvs["ssl"], EVERY_TLV.ssl
    assert sent_ssl is not None
    assert ssl["client"] == sent_ssl.client
    assert set(ssl["client_flags"]) == {"SSL", "CERT_CONN"}
    assert ssl["verify"] == 0
    assert ssl["verified_cert"] is True
    for name in ("version", "cn", "cipher", "sig_alg", "key_alg", "group", "sig_scheme"):
        assert ssl[name] == getattr(sent_ssl, name), name
    assert bytes.fromhex(ssl["client_cert"]) == CERT
    assert ssl["client_cert_sha256"] == hashlib.sha256(CERT).hexdigest()
    assert {"type": 0x7F, "value_hex": "ab"} in ssl["raw"]


def test_parse_json_unix_and_no_address(capsys: pytest.CaptureFixture[str]) -> None:
    data = pp.Header.proxy("/run/a.sock", "/run/b.sock").to_bytes()
    status, out, _ = run(capsys, "parse", "--json", data.hex())
    got = json.loads(out)
    assert status == 0
    assert (got["family"], got["source"], got["destination"]) == (
        "UNIX",
        "/run/a.sock",
        "/run/b.sock",
    )
    status, out, _ = run(capsys, "parse", "--json", b"PROXY UNKNOWN\r\n".hex())
    got = json.loads(out)
    assert (got["version"], got["family"], got["source"], got["destination"]) == (
        1,
        "UNSPEC",
        None,
        None,
    )
    assert got["tlvs"]["ssl"] is None
    assert got["tlvs"]["raw"] == []


def test_parse_stdin_raw_bytes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = pp.Header.proxy(SOURCE, DESTINATION, version=1).to_bytes()
    monkeypatch.setattr(sys, "stdin", FakeStdin(data + b"GET / HTTP/1.0\r\n\r\n"))
    status, out, _ = run(capsys, "parse", "--json")
    assert status == 0
    got = json.loads(out)
    assert got["source"] == {"host": SOURCE[0], "port": SOURCE[1]}
    assert got["header_size"] == len(data)
    assert got["trailing_bytes"] == len(b"GET / HTTP/1.0\r\n\r\n")


def test_parse_stdin_hex(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = pp.Header.proxy(SOURCE, DESTINATION, tlvs=pp.TLVs(alpn=b"h2")).to_bytes()
    text = "\n".join(data[i : i + 16].hex() for i in range(0, len(data), 16)) + "\n"
    monkeypatch.setattr(sys, "stdin", FakeStdin(text.encode()))
    status, out, _ = run(capsys, "parse", "--json")
    assert status == 0
    got = json.loads(out)
    assert got["version"] == 2
    assert got["header_size"] == len(data)
    assert got["trailing_bytes"] == 0
    assert bytes.fromhex(got["tlvs"]["alpn"]) == b"h2"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"PROXY TCP4 192.0.2.1 198.51.100.7 080 443\r\n", "leading zero"),
        (b"GET / HTTP/1.1\r\n", "signature"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\n", ""),
    ],
)
def test_parse_invalid(capsys: pytest.CaptureFixture[str], data: bytes, reason: str) -> None:
    with pytest.raises(pp.InvalidHeader) as raised:
        pp.parse(data)
    status, out, err = run(capsys, "parse", data.hex())
    assert status == 1
    assert out == ""
    assert err == f"proxyproto: invalid header: {raised.value}\n"
    assert reason in err


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"PROXY TCP4 192.0.2.1",
        pp.Header.proxy(SOURCE, DESTINATION).to_bytes()[:-1],
        b"\r\n\r\n\x00",
    ],
)
def test_parse_incomplete(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, data: bytes
) -> None:
    monkeypatch.setattr(sys, "stdin", FakeStdin(data))
    status, out, err = run(capsys, "parse")
    assert status == 1
    assert out == ""
    assert err.startswith("proxyproto: incomplete header: ")
    assert err.count("\n") == 1


@pytest.mark.parametrize("text", ["zz", "0d0a0", "0x0y"])
def test_parse_bad_hex_argument(capsys: pytest.CaptureFixture[str], text: str) -> None:
    status, out, err = run(capsys, "parse", text)
    assert status == 2
    assert out == ""
    assert "argument HEX" in err.splitlines()[-1]


def test_parse_stdin_odd_hex(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", FakeStdin(b"0d0a0d0a0\n"))
    status, out, err = run(capsys, "parse")
    assert status == 1
    assert out == ""
    assert err.startswith("proxyproto: invalid header: ")
    assert "hex" in err


def test_parse_empty_hex_argument(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "parse", "0x")
    assert status == 1
    assert err.startswith("proxyproto: incomplete header: ")


# --- build ---------------------------------------------------------------------------------------


def test_build_default_is_v2_tcp4(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "build", *ADDRESSES)
    assert (status, err) == (0, "")
    header, size, data = built(out)
    assert header == pp.Header.proxy(SOURCE, DESTINATION)
    assert size == len(data)


def test_build_v1(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "build", *ADDRESSES, "--v1", "--hex")
    assert status == 0
    header, _, _ = built(out)
    assert header == pp.Header.proxy(SOURCE, DESTINATION, version=1)


def test_build_v6(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--source", "[2001:db8::1]:1234", "--destination", "[2001:db8::2]:443"]
    for version in (1, 2):
        status, out, _ = run(capsys, "build", *argv, f"--v{version}")
        assert status == 0
        header, _, _ = built(out)
        expected = pp.Header.proxy(("2001:db8::1", 1234), ("2001:db8::2", 443), version=version)
        assert header == expected


def test_build_unix_dgram(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(
        capsys, "build", "--source", "unix:/tmp/c", "--destination", "unix:/run/s", "--dgram"
    )
    assert status == 0
    header, _, _ = built(out)
    assert header == pp.Header.proxy("/tmp/c", "/run/s", transport=pp.Transport.DGRAM)


def test_build_local_and_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, expected in [
        (["--local"], pp.Header.local()),
        (["--unknown"], pp.Header.unknown()),
    ]:
        status, out, _ = run(capsys, "build", *argv)
        assert status == 0
        assert built(out)[0] == expected
    status, out, _ = run(capsys, "build", "--unknown", "--v2")
    assert status == 0
    header, _, _ = built(out)
    assert (header.version, header.command, header.family, header.source) == (
        2,
        pp.Command.PROXY,
        pp.Family.UNSPEC,
        None,
    )


def test_build_tlvs(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--alpn", "h2", "--authority", "example.com", "--unique-id", "0x00 01 fe ff"]
    status, out, _ = run(capsys, "build", *ADDRESSES, *argv)
    assert status == 0
    header, _, _ = built(out)
    assert (header.source, header.destination) == (SOURCE, DESTINATION)
    assert header.tlvs.alpn == b"h2"
    assert header.tlvs.authority == "example.com"
    assert header.tlvs.unique_id == b"\x00\x01\xfe\xff"
    assert header.tlvs.crc32c is None


def test_build_local_with_tlv(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "build", "--local", "--authority", "health.example")
    assert status == 0
    header, _, _ = built(out)
    assert header.command is pp.Command.LOCAL
    assert header.tlvs.authority == "health.example"


def test_build_crc32c_and_pad_to(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "build", *ADDRESSES, "--crc32c", "--pad-to", "100")
    assert status == 0
    header, size, data = built(out)
    assert header.tlvs.crc32c is not None  # the parser verified it
    assert size == len(data) == 100
    assert pp.TLVType.NOOP in {kind for kind, _ in header.tlvs.raw}


def test_build_raw(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    status = main(["build", *ADDRESSES, "--alpn", "h2", "--raw"])
    data = capsysbinary.readouterr().out
    assert status == 0
    header, size = pp.parse(data)
    assert size == len(data)
    assert (header.source, header.tlvs.alpn) == (SOURCE, b"h2")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--source", "192.0.2.1", "--destination", "192.0.2.2:1"], "--source"),
        (["--source", "192.0.2.1:70000", "--destination", "192.0.2.2:1"], "70000"),
        (["--source", "192.0.2.1:-1", "--destination", "192.0.2.2:1"], "--source"),
        (["--source", "192.0.2.1:http", "--destination", "192.0.2.2:1"], "--source"),
        (["--source", "::1:80", "--destination", "[::2]:1"], "brackets"),
        (["--source", "[192.0.2.1]:80", "--destination", "192.0.2.2:1"], "brackets"),
        (["--source", "[::1:80", "--destination", "[::2]:1"], "--source"),
        (["--source", "example.com:80", "--destination", "192.0.2.2:1"], "not an IP address"),
        (["--source", "unix:", "--destination", "unix:/b"], "--source"),
        (["--source", "192.0.2.1:1", "--destination", "[::2]:1"], "one address family"),
        (["--source", "192.0.2.1:1"], "--destination"),
        ([*ADDRESSES, "--v1", "--alpn", "h2"], "TLVs"),
        ([*ADDRESSES, "--v1", "--crc32c"], "v2"),
        ([*ADDRESSES, "--v1", "--dgram"], "DGRAM"),
        (["--source", "unix:/a", "--destination", "unix:/b", "--v1"], "UNIX"),
        (["--local", "--v1"], "LOCAL"),
        (["--local", *ADDRESSES], "--local"),
        (["--unknown", "--dgram"], "--dgram"),
        (["--unknown", "--alpn", "h2"], "TLVs"),
        (["--local", "--unknown"], "not allowed"),
        (["--local", "--unique-id", "00" * 129], "128"),
        (["--local", "--unique-id", "xyz"], "--unique-id"),
        (["--local", "--pad-to", "17"], "pad_to"),
        (["--local", "--pad-to", "0"], "--pad-to"),
        ([*ADDRESSES, "--hex", "--raw"], "not allowed"),
    ],
)
def test_build_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    status, out, err = run(capsys, "build", *argv)
    assert status == 2
    assert out == ""
    last = err.splitlines()[-1]
    assert last.startswith("proxyproto build: error: ")
    assert message in last


# --- demo, --version, --help ------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_demo(capsys: pytest.CaptureFixture[str], backend: str) -> None:
    # A real listener on loopback and a real client: the server must recover the claimed client.
    status, out, err = run(capsys, "demo", "--backend", backend)
    assert (status, err) == (0, "")
    assert "DIFFERS" not in out
    assert "The server answered: 'Hello, 203.0.113.7:51234'" in out
    assert "1 accepted, 0 refused" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--version")
    assert status == 0
    assert pp.__version__ in out


@pytest.mark.parametrize("command", ["parse", "build", "demo"])
def test_help(capsys: pytest.CaptureFixture[str], command: str) -> None:
    status, out, _ = run(capsys, command, "--help")
    assert status == 0
    assert f"usage: proxyproto {command}" in out
    assert f"proxyproto {command}" in out.split("example")[-1]


def test_no_command(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys)
    assert status == 2
    assert "COMMAND" in err


# --- addresses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("192.0.2.1:80", ("192.0.2.1", 80)),
        ("[2001:db8::1]:443", ("2001:db8::1", 443)),
        ("[::]:0", ("::", 0)),
        ("localhost:65535", ("localhost", 65535)),
        ("unix:/run/app.sock", "/run/app.sock"),
    ],
)
def test_split_and_format_address(text: str, address: tuple[str, int] | str) -> None:
    assert split_address(text) == address
    assert format_address(address) == text


def test_format_no_address() -> None:
    assert format_address(None) == "-"


# --- the real entry point ----------------------------------------------------------------------


def test_python_m_proxyproto_build_piped_into_parse() -> None:
    build = subprocess.run(
        [sys.executable, "-m", "proxyproto", "build", *ADDRESSES, "--alpn", "h2", "--raw"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    parse = subprocess.run(
        [sys.executable, "-m", "proxyproto", "parse", "--json"],
        input=build.stdout,
        capture_output=True,
        check=True,
        timeout=60,
    )
    got = json.loads(parse.stdout)
    assert got["source"] == {"host": SOURCE[0], "port": SOURCE[1]}
    assert got["destination"] == {"host": DESTINATION[0], "port": DESTINATION[1]}
    assert bytes.fromhex(got["tlvs"]["alpn"]) == b"h2"
    assert got["header_size"] == len(build.stdout)


def test_proxy_config_is_what_the_proxy_options_say() -> None:
    # The one builder behind echo's, the relay's and hypercorn's --trusted/--policy.
    assert proxy_config().policy is pp.Policy.REQUIRE
    assert proxy_config(policy=pp.Policy.USE, header_timeout=2).header_timeout == 2
    assert proxy_config().header_timeout == pp.ProxyProtocolConfig().header_timeout
    trusted = proxy_config(trusted=["10.0.0.0/8"], policy=pp.Policy.USE)
    assert callable(trusted.policy)
    assert trusted.policy(("10.1.2.3", 1)) is pp.Policy.USE
    assert trusted.policy(("192.0.2.1", 1)) is pp.Policy.REJECT
    # The relay's --trusted: strangers are refused outright, whatever they send.
    only = proxy_config(trusted=["10.0.0.0/8"], policy=pp.Policy.SKIP, refuse_strangers=True)
    assert callable(only.policy)
    assert only.policy(("10.1.2.3", 1)) is pp.Policy.SKIP
    with pytest.raises(Exception, match="not a trusted peer"):
        only.policy(("192.0.2.1", 1))
