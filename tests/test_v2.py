"""v2 (binary) headers: spec section 2.2, the fixed part and the address blocks."""

from __future__ import annotations

import pytest

import proxyproto as pp
from wire import SIG, inet, inet6, rejected, tlv, tr, unix, v2


def test_inet_stream() -> None:
    header = tr(v2(0x21, 0x11, inet("192.0.2.1", "198.51.100.7", 56324, 443)))
    assert header == pp.Header(
        2,
        pp.Command.PROXY,
        pp.Family.INET,
        pp.Transport.STREAM,
        ("192.0.2.1", 56324),
        ("198.51.100.7", 443),
    )


def test_inet_dgram() -> None:
    header = tr(v2(0x21, 0x12, inet("10.0.0.1", "10.0.0.2", 53, 5353)))
    assert (header.family, header.transport) == (pp.Family.INET, pp.Transport.DGRAM)
    assert header.source == ("10.0.0.1", 53)


@pytest.mark.parametrize("family_transport", [0x21, 0x22])
def test_inet6(family_transport: int) -> None:
    header = tr(v2(0x21, family_transport, inet6("2001:db8::1", "::ffff:192.0.2.9", 1, 65535)))
    assert header.family is pp.Family.INET6
    assert header.transport is pp.Transport(family_transport & 0xF)
    assert header.source == ("2001:db8::1", 1)
    assert header.destination == ("::ffff:192.0.2.9", 65535)


@pytest.mark.parametrize("family_transport", [0x31, 0x32])
def test_unix(family_transport: int) -> None:
    header = tr(v2(0x21, family_transport, unix(b"/run/client.sock", b"/run/haproxy.sock")))
    assert header.family is pp.Family.UNIX
    assert header.transport is pp.Transport(family_transport & 0xF)
    assert header.source == "/run/client.sock"
    assert header.destination == "/run/haproxy.sock"


def test_unix_pathname_ends_at_its_first_nul() -> None:
    # sun_path: a pathname (first byte not NUL) is the bytes before the first NUL.
    header = tr(v2(0x21, 0x31, unix(b"/run/a.sock\x00junk\x00", b"/run/b\x00\xff\xfe")))
    assert header.source == "/run/a.sock"
    assert header.destination == "/run/b"


def test_unix_abstract_name_keeps_its_nuls_but_not_the_padding() -> None:
    header = tr(v2(0x21, 0x32, unix(b"\x00ab\x00cd", b"\x00" + b"x" * 107)))
    assert header.source == "\x00ab\x00cd"
    assert header.destination == "\x00" + "x" * 107


def test_unix_all_nul_is_an_empty_path() -> None:
    assert tr(v2(0x21, 0x31, unix(b"", b""))).source == ""


def test_unix_full_length_and_abstract_paths() -> None:
    full = b"/" + b"p" * 107
    header = tr(v2(0x21, 0x31, unix(full, b"\x00abstract")))
    assert header.source == full.decode()
    # A Linux abstract name keeps its leading NUL; only the padding goes.
    assert header.destination == "\x00abstract"


def test_unix_path_bytes_that_are_not_utf8_survive() -> None:
    header = tr(v2(0x21, 0x31, unix(b"/tmp/\xff\xfe", b"/x")))
    assert isinstance(header.source, str)
    assert header.source.encode("utf-8", "surrogateescape") == b"/tmp/\xff\xfe"


def test_local_health_check() -> None:
    header = tr(v2(0x20, 0x00, b""))
    assert header == pp.Header.local()
    assert header.source is None


@pytest.mark.parametrize(
    ("family_transport", "body", "family", "transport"),
    [
        # A defined family with no address block, or a block of the wrong size: the family
        # is ignored (spec 2.2), only the length bounds the header.
        (0x11, b"", pp.Family.INET, pp.Transport.STREAM),
        (0x21, b"", pp.Family.INET6, pp.Transport.STREAM),
        (0x32, b"", pp.Family.UNIX, pp.Transport.DGRAM),
        (0x11, b"\x04\x00\x02\x00\x00", pp.Family.INET, pp.Transport.STREAM),
        # A byte the spec does not define comes out as UNSPEC, as Header.local() has it.
        (0x10, b"", pp.Family.UNSPEC, pp.Transport.UNSPEC),
        (0x13, b"", pp.Family.UNSPEC, pp.Transport.UNSPEC),
        (0x01, b"", pp.Family.UNSPEC, pp.Transport.UNSPEC),
        (0x41, b"", pp.Family.UNSPEC, pp.Transport.UNSPEC),
        (0xFF, tlv(0x04, b"\x00" * 9), pp.Family.UNSPEC, pp.Transport.UNSPEC),
    ],
)
def test_local_whatever_its_family_and_length(
    family_transport: int, body: bytes, family: pp.Family, transport: pp.Transport
) -> None:
    header = tr(v2(0x20, family_transport, body))
    assert (header.command, header.family, header.transport) == (
        pp.Command.LOCAL,
        family,
        transport,
    )
    assert (header.source, header.destination) == (None, None)
    if family_transport in (0x10, 0x13, 0x01, 0x41):
        assert header == pp.Header.local()


def test_local_reads_tlvs_from_the_end_of_the_fixed_part() -> None:
    # Spec 2.2 does not say where LOCAL's TLVs start; HAProxy reads them from byte 16, whatever
    # the family: a zero-filled INET block is four empty TLVs of type 0, then come the others.
    header = tr(v2(0x20, 0x11, bytes(12) + tlv(0x05, b"id")))
    assert header.family is pp.Family.INET
    assert header.source is None
    assert header.tlvs.raw == ((0x00, b""),) * 4 + ((0x05, b"id"),)
    assert header.tlvs.unique_id == b"id"


def test_local_with_an_address_that_does_not_read_as_tlvs_is_refused() -> None:
    # As in HAProxy: 01 02 03 reads as an ALPN TLV of 0x0203 bytes, past the end.
    data = v2(0x20, 0x11, inet("1.2.3.4", "5.6.7.8", 1, 2) + tlv(0x05, b"id"))
    rejected(data, "TLV 0x01 at offset 16 declares 515 bytes, past the end of the header")


def test_local_waits_for_its_length_whatever_its_family() -> None:
    # Never refused before its declared length has arrived; then the rest is the application's.
    data = v2(0x20, 0x41, b"", length=300)
    parser = pp.HeaderParser()
    for byte in range(len(data)):
        parser.receive_data(data[byte : byte + 1])
        assert parser.next_event() is pp.NEED_DATA
    with pytest.raises(pp.IncompleteHeader):
        pp.parse(data + bytes(299))
    body = tlv(0x04, bytes(297))
    parser.receive_data(body + b"app")
    assert parser.next_event() == pp.Header.local(tlvs=pp.parse(data + body)[0].tlvs)
    assert parser.trailing_data == b"app"


def test_unspec_proxy_carries_no_address() -> None:
    header = tr(v2(0x21, 0x00, b""))
    assert (header.command, header.family, header.source) == (
        pp.Command.PROXY,
        pp.Family.UNSPEC,
        None,
    )


def test_address_block_longer_than_needed_is_tlv_space() -> None:
    # Extra bytes after the address block are parsed as TLVs: a NOOP here.
    header = tr(v2(0x21, 0x11, inet("1.2.3.4", "5.6.7.8", 1, 2) + tlv(0x04, b"\x00" * 5)))
    assert header.tlvs.raw == ((0x04, b"\x00" * 5),)


@pytest.mark.parametrize(
    ("data", "message", "at"),
    [
        # The signature is checked byte by byte.
        (b"\r\n\r\n\x01", "does not match", 5),
        (b"\r\n\r\n\x00\r\nQUIT\r", "does not match", 12),
        (b"\r\r", "does not match", 2),
        # Byte 13: version 2 only, commands LOCAL and PROXY only.
        (SIG + b"\x11\x11\x00\x0c", "version 1", 13),
        (SIG + b"\x31\x11\x00\x0c", "version 3", 13),
        (SIG + b"\x22\x11\x00\x0c", "command 2", 13),
        (SIG + b"\x2f\x11\x00\x0c", "command 15", 13),
        # Byte 14 (PROXY only; LOCAL ignores it): only the seven combinations the spec defines.
        (SIG + b"\x21\x10\x00\x0c", "family/transport byte 0x10", 14),
        (SIG + b"\x21\x13\x00\x0c", "0x13", 14),
        (SIG + b"\x21\x01\x00\x00", "0x01", 14),
        (SIG + b"\x21\x40\x00\x00", "0x40", 14),
        (SIG + b"\x21\x33\x00\x00", "0x33", 14),
        # Length: at least the declared family's address block.
        (v2(0x21, 0x11, b"\x00" * 11), "too short for the INET address block (12 bytes)", 16),
        (v2(0x21, 0x21, b"\x00" * 35), "INET6 address block (36 bytes)", 16),
        (v2(0x21, 0x31, b"\x00" * 215), "UNIX address block (216 bytes)", 16),
    ],
)
def test_invalid(data: bytes, message: str, at: int) -> None:
    rejected(data, message, at=at)


def test_max_header_size_is_checked_as_soon_as_the_length_arrives() -> None:
    parser = pp.HeaderParser(max_header_size=64)
    parser.receive_data(SIG + b"\x21\x11")
    assert parser.next_event() is pp.NEED_DATA
    parser.receive_data(b"\x00\x31")  # 16 + 49 = 65 bytes
    with pytest.raises(pp.InvalidHeader, match="65 bytes, more than max_header_size"):
        parser.next_event()


def test_max_header_size_allows_exactly_the_cap() -> None:
    data = v2(0x21, 0x11, inet("1.2.3.4", "5.6.7.8", 1, 2) + tlv(0x04, b"\x00" * 33))
    assert len(data) == 64
    parser = pp.HeaderParser(max_header_size=64)
    parser.receive_data(data)
    assert isinstance(parser.next_event(), pp.Header)


def test_largest_header_the_spec_allows() -> None:
    body = inet("1.2.3.4", "5.6.7.8", 1, 2)
    body += tlv(0x04, b"\x00" * (0xFFFF - len(body) - 3))
    data = v2(0x21, 0x11, body)
    assert len(data) == 16 + 0xFFFF == pp.MAX_HEADER_SIZE
    header, consumed = pp.parse(data + b"app")
    assert consumed == len(data)
    parser = pp.HeaderParser()
    parser.receive_data(data[:-1])
    assert parser.next_event() is pp.NEED_DATA
    parser.receive_data(data[-1:] + b"app")
    assert parser.next_event() == header
    assert parser.trailing_data == b"app"


def test_v2_looks_like_nothing_else() -> None:
    # A v2 signature is refused under versions={1} as if no header had been sent.
    parser = pp.HeaderParser(versions={1})
    parser.receive_data(b"\r")
    with pytest.raises(pp.InvalidSignature):
        parser.next_event()
