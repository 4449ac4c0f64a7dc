"""The protocol probes (``proxyproto._cli.probe``) on bytes made by real clients.

TLS ClientHellos come from the ``ssl`` module, QUIC Initial datagrams from aioquic (v1 and
v2), HTTP requests from ``http.client``; each stream is fed whole, byte by byte and split at
every point, as h11's tests do.
"""

from __future__ import annotations

import http.client
import io
import os
import ssl
import struct

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyproto._cli.probe import (
    MAX_PROBE,
    NEED_MORE,
    NO_MATCH,
    DatagramProber,
    Match,
    Prober,
    ProbeUnavailable,
    probe_datagram,
    require,
)
from proxyproto._cli.probe.quic import VERSION_1, VERSION_2, probe_quic
from proxyproto._cli.probe.tls import parse_client_hello_untrusted, probe_tls

STREAM = ["http", "tls", "ssh", "socks5"]


def client_hello(server_name: str | None, alpns: list[str] | None = None) -> bytes:
    """The first flight of a real ``ssl`` client."""
    context = ssl.create_default_context()
    if alpns:
        context.set_alpn_protocols(alpns)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def http_request(method: str = "GET", body: bytes | None = None) -> bytes:
    """The bytes ``http.client`` sends for one request."""
    sent = io.BytesIO()

    class Socket:
        def sendall(self, data: bytes) -> None:
            sent.write(data)

    class Capture(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = Socket()

    connection = Capture("service.example")
    connection.request(method, "/path?q=1", body=body, headers={"X-Test": "1"})
    return sent.getvalue()


def quic_datagrams(
    version: int, server_name: str = "quic.example", alpns: list[str] | None = None
) -> list[bytes]:
    """The first datagrams of an aioquic client."""
    configuration = QuicConfiguration(
        is_client=True,
        server_name=server_name,
        alpn_protocols=alpns or ["h3"],
        supported_versions=[version],
    )
    connection = QuicConnection(configuration=configuration)
    connection.connect(("192.0.2.1", 443), now=0.0)
    datagrams = [data for data, _ in connection.datagrams_to_send(now=0.0)]
    assert all(struct.unpack("!I", data[1:5])[0] == version for data in datagrams)
    return datagrams


def wireguard_initiation() -> bytes:
    """A handshake initiation laid out per the WireGuard paper (section 5.4.2)."""
    sender = os.urandom(4)
    return b"\x01\x00\x00\x00" + sender + os.urandom(32 + 48 + 28) + bytes(16) + bytes(16)


def feed_whole_bytewise_split(data: bytes, protocols: list[str]) -> list[Match | object]:
    """The final answers of a Prober fed ``data`` whole, byte by byte, and split anywhere."""
    answers: list[Match | object] = []
    prober = Prober(protocols)
    answers.append(prober.receive_data(data))
    prober = Prober(protocols)
    answer: object = NEED_MORE
    for index in range(len(data)):
        answer = prober.receive_data(data[index : index + 1])
    answers.append(answer)
    assert prober.data == data
    for cut in range(1, len(data), max(1, len(data) // 40)):
        prober = Prober(protocols)
        first = prober.receive_data(data[:cut])
        answers.append(first if first is not NEED_MORE else prober.receive_data(data[cut:]))
    return answers


# =============================================================================== TLS

HELLO = client_hello("fuzz.example", ["h2", "http/1.1"])


@pytest.mark.parametrize(
    ("server_name", "alpns"),
    [("example.com", ["h2", "http/1.1"]), ("API.Example.Org", None), (None, ["acme-tls/1"])],
)
def test_tls_client_hello(server_name: str | None, alpns: list[str] | None) -> None:
    hello = client_hello(server_name, alpns)
    expected = Match(
        "tls",
        server_name.lower() if server_name else None,
        tuple(name.encode() for name in alpns or ()),
    )
    assert set(map(repr, feed_whole_bytewise_split(hello, STREAM))) == {repr(expected)}
    assert probe_tls(hello) == expected
    # Trailing bytes (a client's early data) do not change the answer.
    assert Prober(["tls"]).receive_data(hello + b"\x17\x03\x03\x00\x01x") == expected


def test_tls_client_hello_split_across_records() -> None:
    hello = client_hello("split.example", ["h2"])
    message = hello[5:]
    records = b"".join(
        b"\x16\x03\x01" + struct.pack("!H", len(piece)) + piece
        for piece in (message[:10], message[10:200], message[200:])
    )
    expected = Match("tls", "split.example", (b"h2",))
    assert set(map(repr, feed_whole_bytewise_split(records, ["tls"]))) == {repr(expected)}


def test_tls_prefix_needs_more_and_truncated_is_no_match() -> None:
    hello = client_hello("example.com")
    for cut in (1, 3, 5, 6, 9, len(hello) - 1):
        assert isinstance(probe_tls(hello[:cut]), int)
        prober = Prober(["tls"])
        assert prober.receive_data(hello[:cut]) is NEED_MORE
        assert prober.receive_data(b"") is NO_MATCH  # the stream ended early


@pytest.mark.parametrize(
    "data",
    [
        b"\x17\x03\x03\x00\x10",  # application data
        b"\x16\x02\x01",  # not TLS 3.x
        b"\x16\x03\x01\x00\x00",  # an empty record
        b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00",  # a ServerHello
        b"\x16\x03\x01\x00\x04\x01\xff\xff\xff",  # a ClientHello over 16 KiB
    ],
)
def test_tls_no_match(data: bytes) -> None:
    assert probe_tls(data) is NO_MATCH


def test_tls_corrupted_extensions_are_no_match() -> None:
    hello = client_hello("example.com", ["h2"])
    message = bytearray(hello[5:])
    # The extensions block's length, one too large: the message no longer adds up.
    body = 4 + 2 + 32
    session = message[body]
    at = body + 1 + session
    suites = int.from_bytes(message[at : at + 2], "big")
    at += 2 + suites
    at += 1 + message[at]
    message[at : at + 2] = (int.from_bytes(message[at : at + 2], "big") + 1).to_bytes(2, "big")
    assert parse_client_hello_untrusted(bytes(message)) is NO_MATCH


def test_random_bytes_are_no_match() -> None:
    for seed in range(50):
        data = bytes((seed * 37 + index * 101) % 256 for index in range(64)) + os.urandom(64)
        if data[:1] in (b"\x16", b"\x05", b"S", b"G", b"H", b"P", b"D", b"C", b"O", b"T"):
            continue
        assert Prober(STREAM).receive_data(data) is NO_MATCH


def test_oversize_stream_is_no_match() -> None:
    # A request line that never ends: no match once MAX_PROBE bytes are in.
    prober = Prober(["http"])
    assert prober.receive_data(b"GET /" + b"a" * 8000) is NEED_MORE
    assert prober.receive_data(b"a" * MAX_PROBE) is NO_MATCH
    assert len(prober.data) > MAX_PROBE  # every byte is still there to forward


# =============================================================================== others


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD", "OPTIONS", "PATCH"])
def test_http_request_from_http_client(method: str) -> None:
    request = http_request(method, b"body" if method in ("POST", "PATCH") else None)
    assert set(map(repr, feed_whole_bytewise_split(request, STREAM))) == {repr(Match("http"))}


def test_http2_preface() -> None:
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    assert set(map(repr, feed_whole_bytewise_split(preface, STREAM))) == {repr(Match("http"))}


@pytest.mark.parametrize(
    "data",
    [
        b"BREW /pot HTTP/1.1\r\n",  # not a known method
        b"GET /a b HTTP/1.1\r\n",
        b"GET / HTTP/2.0\r\n",
        b"GET / HTTP/1.1 \r\n",
        b"GET  / HTTP/1.1\r\n",
        b"get / HTTP/1.1\r\n",
        b"PRI * HTTP/2.0\r\n\r\nXX",
    ],
)
def test_http_no_match(data: bytes) -> None:
    assert Prober(["http"]).receive_data(data) is NO_MATCH
    prober = Prober(["http"])
    answer: object = NEED_MORE
    for index in range(len(data)):
        answer = prober.receive_data(data[index : index + 1])
    assert answer is NO_MATCH


def test_ssh_banner() -> None:
    banner = b"SSH-2.0-OpenSSH_9.6p1 Debian-3\r\n"
    assert set(map(repr, feed_whole_bytewise_split(banner, STREAM))) == {repr(Match("ssh"))}
    assert Prober(STREAM).receive_data(b"SSH-1.5-old\r\n") is NO_MATCH


def test_socks5_greeting() -> None:
    greeting = b"\x05\x02\x00\x02"  # no authentication, username/password
    assert set(map(repr, feed_whole_bytewise_split(greeting, STREAM))) == {repr(Match("socks5"))}
    assert Prober(["socks5"]).receive_data(b"\x05\x00") is NO_MATCH
    assert Prober(["socks5"]).receive_data(b"\x05\x01\x00extra") is NO_MATCH
    assert Prober(["socks5"]).receive_data(b"\x04\x01\x00\x50") is NO_MATCH  # SOCKS4


def test_only_the_protocols_asked_for() -> None:
    assert Prober(["http"]).receive_data(b"SSH-2.0-x\r\n") is NO_MATCH
    assert Prober([]).receive_data(b"GET / HTTP/1.1\r\n") is NO_MATCH


# =============================================================================== datagrams


@pytest.mark.parametrize("version", [VERSION_1, VERSION_2])
def test_quic_initial_from_aioquic(version: int) -> None:
    (datagram,) = quic_datagrams(version, "Quic.Example", ["h3", "hq-interop"])
    expected = Match("quic", "quic.example", (b"h3", b"hq-interop"))
    assert probe_quic(datagram) == expected
    assert probe_datagram(datagram, ["quic", "wireguard"]) == expected


@pytest.mark.parametrize("version", [VERSION_1, VERSION_2])
def test_quic_client_hello_over_two_datagrams(version: int) -> None:
    alpns = [f"protocol-{index:03}" for index in range(120)]  # a ClientHello over 1200 bytes
    datagrams = quic_datagrams(version, "big.example", alpns)
    assert len(datagrams) >= 2
    assert probe_datagram(datagrams[0], ["quic"]) is NEED_MORE
    prober = DatagramProber(["quic"])
    answers = [prober.receive_datagram(datagram) for datagram in datagrams]
    assert answers[0] is NEED_MORE
    assert answers[-1] == Match("quic", "big.example", tuple(name.encode() for name in alpns))


def test_quic_no_match() -> None:
    (datagram,) = quic_datagrams(VERSION_1)
    damaged = bytearray(datagram)
    damaged[100] ^= 0x01  # the AEAD tag no longer verifies
    assert probe_quic(bytes(damaged)) is NO_MATCH
    assert probe_quic(datagram[:1199]) is NO_MATCH  # under the 1200 bytes of RFC 9000 14.1
    other = datagram[:1] + b"\xff\x00\x00\x1d" + datagram[5:]  # a draft version
    assert probe_quic(other) is NO_MATCH
    assert probe_quic(b"\x40" + os.urandom(1299)) is NO_MATCH  # a short header
    assert probe_quic(os.urandom(1300)) is NO_MATCH


def test_wireguard_initiation() -> None:
    initiation = wireguard_initiation()
    assert len(initiation) == 148
    assert probe_datagram(initiation, ["wireguard", "quic"]) == Match("wireguard")
    assert probe_datagram(initiation[:147], ["wireguard"]) is NO_MATCH
    assert probe_datagram(initiation + b"\x00", ["wireguard"]) is NO_MATCH
    assert probe_datagram(b"\x01\x00\x01\x00" + initiation[4:], ["wireguard"]) is NO_MATCH
    assert probe_datagram(b"\x02" + initiation[1:], ["wireguard"]) is NO_MATCH  # a response


def test_require_names_the_problem() -> None:
    assert require(["tls", "http", "tls"]) == ("tls", "http")
    with pytest.raises(ProbeUnavailable, match="on UDP only"):
        require(["quic"])
    with pytest.raises(ProbeUnavailable, match="on TCP only"):
        require(["tls"], datagram=True)
    with pytest.raises(ProbeUnavailable, match="not one of"):
        require(["gopher"])


def test_quic_without_cryptography_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "cryptography" else real(name, *args),
    )
    with pytest.raises(ProbeUnavailable, match=r"proxyproto\[quic\]"):
        require(["quic"], datagram=True)


# =============================================================================== robustness

#: A QUIC v1 Initial datagram whose decrypted ClientHello is damaged differently each time is
#: out of reach (the AEAD tag); damaging the header and payload still walks the parser.
(INITIAL,) = quic_datagrams(VERSION_1, "fuzz.example")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=1, max_value=64))
def test_no_input_makes_a_probe_raise(data: bytes, step: int) -> None:
    prober = Prober(STREAM)
    for start in range(0, len(data), step):
        prober.receive_data(data[start : start + step])
    prober.receive_data(b"")
    assert prober.data == data
    probe_datagram(data, ["quic", "wireguard"])


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_damaged_client_hellos_and_initials_never_raise(data: st.DataObject) -> None:
    for original in (HELLO, INITIAL):
        damaged = bytearray(original)
        for _ in range(data.draw(st.integers(1, 4))):
            damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(1, len(damaged)))
        Prober(STREAM).receive_data(bytes(damaged[:cut]))
        probe_tls(bytes(damaged[5:cut]))
        parse_client_hello_untrusted(bytes(damaged[5:cut]))
        probe_datagram(bytes(damaged[:cut]), ["quic", "wireguard"])
