"""Building headers: Header.proxy/local/unknown and to_bytes, checked against hand-made bytes."""

from __future__ import annotations

import struct
from typing import Any

import attrs
import pytest
from crc32c import crc32c

import proxyproto as pp
from wire import inet, inet6, tlv, tr, unix, v2


def test_v2_inet_bytes() -> None:
    header = pp.Header.proxy(("192.0.2.1", 56324), ("198.51.100.7", 443))
    assert header.to_bytes() == v2(0x21, 0x11, inet("192.0.2.1", "198.51.100.7", 56324, 443))
    assert tr(header.to_bytes()) == header


def test_v2_inet6_dgram_bytes() -> None:
    header = pp.Header.proxy(
        ("2001:db8::1", 53), ("2001:db8::2", 5353), transport=pp.Transport.DGRAM
    )
    assert header.to_bytes() == v2(0x21, 0x22, inet6("2001:db8::1", "2001:db8::2", 53, 5353))
    assert tr(header.to_bytes()) == header


def test_v2_unix_bytes() -> None:
    header = pp.Header.proxy("/run/a.sock", "/run/b.sock")
    assert header.family is pp.Family.UNIX
    assert header.to_bytes() == v2(0x21, 0x31, unix(b"/run/a.sock", b"/run/b.sock"))
    assert tr(header.to_bytes()) == header


def test_v1_bytes() -> None:
    v4 = pp.Header.proxy(("192.0.2.1", 56324), ("198.51.100.7", 443), version=1)
    assert v4.to_bytes() == b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n"
    v6 = pp.Header.proxy(("2001:DB8::1", 1), ("::1", 2), version=1)
    # IPv6 is written in canonical form, the form the parser gives back.
    assert v6.source == ("2001:db8::1", 1)
    assert v6.to_bytes() == b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n"
    assert tr(v6.to_bytes()) == v6


def test_local_and_unknown() -> None:
    assert pp.Header.local().to_bytes() == v2(0x20, 0x00, b"")
    assert pp.Header.unknown().to_bytes() == b"PROXY UNKNOWN\r\n"
    local = pp.Header.local(tlvs=pp.TLVs(unique_id=b"check"))
    assert local.to_bytes() == v2(0x20, 0x00, tlv(0x05, b"check"))


def test_tlvs_in_type_order_then_raw() -> None:
    tlvs = pp.TLVs(
        alpn=b"h2",
        authority="example.com",
        unique_id=b"id",
        ssl=pp.SSLInfo(client=7, verify=0, version="TLSv1.3", cn="alice", group="X25519"),
        netns="blue",
        aws_vpce_id="vpce-1",
        azure_link_id=7,
        gcp_psc_id=9,
        raw=((0xF0, b"x"), (0x01, b"ignored: alpn is set"), (0x04, b"noop is dropped")),
    )
    data = pp.Header.proxy(("10.0.0.1", 1), ("10.0.0.2", 2), tlvs=tlvs).to_bytes()
    ssl_value = struct.pack("!BI", 7, 0) + tlv(0x21, b"TLSv1.3") + tlv(0x22, b"alice")
    ssl_value += tlv(0x26, b"X25519")
    expected_tlvs = (
        tlv(0x01, b"h2")
        + tlv(0x02, b"example.com")
        + tlv(0x05, b"id")
        + tlv(0x20, ssl_value)
        + tlv(0x30, b"blue")
        + tlv(0xEA, b"\x01vpce-1")
        + tlv(0xEE, b"\x01" + struct.pack("<I", 7))
        + tlv(0xE0, struct.pack("!Q", 9))
        + tlv(0xF0, b"x")
    )
    assert data == v2(0x21, 0x11, inet("10.0.0.1", "10.0.0.2", 1, 2) + expected_tlvs)
    parsed = tr(data).tlvs
    assert parsed.ssl is not None
    assert parsed.ssl.group == "X25519"
    assert parsed.gcp_psc_id == 9


def test_crc32c_is_correct_and_last() -> None:
    header = pp.Header.proxy(("10.0.0.1", 1), ("10.0.0.2", 2), tlvs=pp.TLVs(alpn=b"h2"))
    data = header.to_bytes(crc32c=True)
    assert data[-7:-4] == b"\x03\x00\x04"
    zeroed = data[:-4] + b"\x00\x00\x00\x00"
    assert struct.unpack("!I", data[-4:])[0] == crc32c(zeroed)
    assert tr(data).tlvs.crc32c == crc32c(zeroed)


@pytest.mark.parametrize("crc", [False, True])
@pytest.mark.parametrize("pad_to", [28 + 7 + 3, 28 + 7 + 4, 100, 512])
def test_pad_to_exact_size(pad_to: int, crc: bool) -> None:
    header = pp.Header.proxy(("10.0.0.1", 1), ("10.0.0.2", 2))
    data = header.to_bytes(pad_to=pad_to, crc32c=crc)
    assert len(data) == pad_to
    parsed = tr(data)
    assert parsed.source == header.source
    assert (parsed.tlvs.crc32c is not None) == crc
    assert 0x04 in [kind for kind, _ in parsed.tlvs.raw]


def test_pad_to_the_size_it_already_has_adds_nothing() -> None:
    header = pp.Header.proxy(("10.0.0.1", 1), ("10.0.0.2", 2))
    assert header.to_bytes(pad_to=28) == header.to_bytes()


def test_header_proxy_takes_a_mapping_of_tlvs() -> None:
    header = pp.Header.proxy(("10.0.0.1", 1), ("10.0.0.2", 2), tlvs={"alpn": b"h2"})
    assert header.tlvs == pp.TLVs(alpn=b"h2")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: pp.Header.proxy(("10.0.0.1", 1), ("::1", 2)), "one address family"),
        (lambda: pp.Header.proxy(("10.0.0.1", 1), "/run/x"), "both be"),
        (lambda: pp.Header.proxy(("example.com", 1), ("10.0.0.1", 2)), "not an IPv4 or IPv6"),
        (lambda: pp.Header.proxy(("10.0.0.01", 1), ("10.0.0.1", 2)), "not an IPv4 or IPv6"),
        (lambda: pp.Header.proxy(("fe80::1%eth0", 1), ("::1", 2)), "not an IPv4 or IPv6"),
        (lambda: pp.Header.proxy(("10.0.0.1", 65536), ("10.0.0.1", 2)), "port must be an int"),
        (lambda: pp.Header.proxy(("10.0.0.1", -1), ("10.0.0.1", 2)), "port must be an int"),
        (lambda: pp.Header.proxy(("10.0.0.1", True), ("10.0.0.1", 2)), "port must be an int"),
        (lambda: pp.Header.proxy(("10.0.0.1", "80"), ("10.0.0.1", 2)), "port must be an int"),  # type: ignore[arg-type]
        (lambda: pp.Header.proxy(("10.0.0.1",), ("10.0.0.1", 2)), "must be (host, port)"),  # type: ignore[arg-type]
        (lambda: pp.Header.proxy("/" + "x" * 108, "/y"), "over 108 bytes"),
        (lambda: pp.Header.proxy("/é" * 60, "/y"), "over 108 bytes"),
        (lambda: pp.Header.proxy(("10.0.0.1", 1), ("10.0.0.2", 2), version=3), "version"),
        (
            lambda: pp.Header.proxy(
                ("10.0.0.1", 1), ("10.0.0.2", 2), transport=pp.Transport.UNSPEC
            ),
            "STREAM or DGRAM",
        ),
        (
            lambda: pp.Header.proxy(
                ("10.0.0.1", 1), ("10.0.0.2", 2), version=1, tlvs={"alpn": b"h2"}
            ),
            "v1 headers cannot carry TLVs",
        ),
        (
            lambda: pp.Header.proxy(
                ("10.0.0.1", 1), ("10.0.0.2", 2), version=1, transport=pp.Transport.DGRAM
            ),
            "v1 describes TCP",
        ),
        (lambda: pp.Header.proxy("/a", "/b", version=1), "v1 describes TCP"),
    ],
)
def test_what_cannot_be_encoded_is_refused_when_built(call: Any, message: str) -> None:
    with pytest.raises(pp.HeaderEncodingError, match=None) as info:
        call()
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def _proxy(**tlvs: Any) -> pp.Header:
    return pp.Header.proxy(("10.0.0.1", 1), ("10.0.0.2", 2), tlvs=pp.TLVs(**tlvs))


@pytest.mark.parametrize(
    ("header", "kwargs", "message"),
    [
        (_proxy(alpn=b"x" * 65536), {}, "a TLV holds at most 65535"),
        (_proxy(unique_id=b"x" * 129), {}, "the spec allows 128"),
        (_proxy(authority="\udcff"), {}, "cannot be encoded as UTF-8"),
        (_proxy(netns="é"), {}, "cannot be encoded as ASCII"),
        (_proxy(ssl=pp.SSLInfo(client=256)), {}, "client must fit in a byte"),
        (_proxy(ssl=pp.SSLInfo(verify=-1)), {}, "verify in 32 bits"),
        (_proxy(azure_link_id=2**32), {}, "unsigned 32-bit"),
        (_proxy(gcp_psc_id=-1), {}, "unsigned 64-bit"),
        (_proxy(raw=((256, b""),)), {}, "TLV type 256 is not a byte"),
        (_proxy(alpn=b"x" * 30000, authority="y" * 30000, netns="z" * 6000), {}, "16 + 65535"),
        (_proxy(), {"pad_to": 20}, "less than the header's 28 bytes"),
        (_proxy(), {"pad_to": 30}, "a NOOP TLV takes at least 3"),
        (pp.Header.unknown(), {"crc32c": True}, "v2 features"),
        (pp.Header(1, pp.Command.LOCAL, pp.Family.UNSPEC, pp.Transport.UNSPEC, None, None), {},
         "v1 has no LOCAL"),
        (pp.Header(4, pp.Command.PROXY, pp.Family.UNSPEC, pp.Transport.UNSPEC, None, None), {},
         "version must be 1 or 2"),
        (pp.Header(2, pp.Command.PROXY, pp.Family.INET, pp.Transport.STREAM, ("::1", 1),
                   ("::1", 2)), {}, "source host '::1' is not an INET address"),
        (pp.Header(2, pp.Command.PROXY, pp.Family.INET6, pp.Transport.STREAM, ("::1", 1),
                   ("::1", 70000)), {}, "port from 0 to 65535"),
        (pp.Header(2, pp.Command.PROXY, pp.Family.INET, pp.Transport.STREAM, None, None), {},
         "source must be (host, port)"),
        (pp.Header(2, pp.Command.PROXY, pp.Family.UNIX, pp.Transport.STREAM, ("a", 1), "/b"), {},
         "needs str paths"),
        (pp.Header(1, pp.Command.PROXY, pp.Family.INET, pp.Transport.STREAM, ("1.2.3.4", 1),
                   ("::1", 2)), {}, "destination host '::1' is not an INET address"),
    ],
)  # fmt: skip
def test_what_cannot_be_encoded_is_refused_by_to_bytes(
    header: pp.Header, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(pp.HeaderEncodingError) as info:
        header.to_bytes(**kwargs)
    assert message in str(info.value)


def test_local_keeps_a_family_and_sends_no_address() -> None:
    # Spec 2.2: a LOCAL sender "should not present any address so it sets this field to zero";
    # the receiver reads LOCAL's TLVs from byte 16, as HAProxy does.
    header = pp.Header(2, pp.Command.LOCAL, pp.Family.INET6, pp.Transport.STREAM, None, None)
    data = header.to_bytes()
    assert data == v2(0x20, 0x21, b"")
    assert tr(data) == header
    with_tlvs = attrs.evolve(header, tlvs=pp.TLVs(unique_id=b"check"))
    assert with_tlvs.to_bytes() == v2(0x20, 0x21, tlv(0x05, b"check"))
    assert tr(with_tlvs.to_bytes()).tlvs.unique_id == b"check"


def test_local_drops_addresses_the_receiver_must_ignore() -> None:
    header = pp.Header(
        2, pp.Command.LOCAL, pp.Family.INET, pp.Transport.STREAM, ("1.2.3.4", 1), ("5.6.7.8", 2)
    )
    assert header.to_bytes() == v2(0x20, 0x11, b"")


@pytest.mark.parametrize("path", ["/run/a\x00b", "a\x00\x00b", "/\x00x"])
def test_a_pathname_with_a_nul_is_refused(path: str) -> None:
    # A pathname ends at its first NUL (spec 2.2, sun_path): the receiver would read less.
    with pytest.raises(pp.HeaderEncodingError, match="source path holds a NUL"):
        pp.Header.proxy(path, "/run/b")
    with pytest.raises(pp.HeaderEncodingError, match="destination path holds a NUL"):
        pp.Header.proxy("/run/b", path)
    built = pp.Header(2, pp.Command.PROXY, pp.Family.UNIX, pp.Transport.STREAM, path, "/b")
    with pytest.raises(pp.HeaderEncodingError, match="source path holds a NUL"):
        built.to_bytes()


def test_an_abstract_name_may_hold_nuls() -> None:
    header = pp.Header.proxy("\x00ab\x00cd", "\x00x", transport=pp.Transport.DGRAM)
    assert header.to_bytes() == v2(0x21, 0x32, unix(b"\x00ab\x00cd", b"\x00x"))
    assert tr(header.to_bytes()) == header
