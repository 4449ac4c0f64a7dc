"""HeaderParser's contract: NEED_DATA, EOF, trailing data, caps, errors; parse(); datagrams."""

from __future__ import annotations

import pytest

import proxyproto as pp
from wire import SIG, TRAILING, inet, tlv, v2

V1 = b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n"
V2 = v2(0x21, 0x11, inet("192.0.2.1", "198.51.100.7", 56324, 443))


def test_need_data_until_complete_then_the_same_header_every_time() -> None:
    parser = pp.HeaderParser()
    assert parser.next_event() is pp.NEED_DATA
    assert (parser.header, parser.header_size) == (None, 0)
    parser.receive_data(V2[:10])
    assert parser.next_event() is pp.NEED_DATA
    parser.receive_data(V2[10:])
    header = parser.next_event()
    assert isinstance(header, pp.Header)
    assert parser.next_event() is header
    assert parser.header is header
    assert parser.header_size == len(V2)
    assert repr(pp.NEED_DATA) == "NEED_DATA"


@pytest.mark.parametrize("data", [V1, V2])
def test_bytes_after_the_header_are_kept_whatever_the_chunking(data: bytes) -> None:
    stream = data + TRAILING + bytes(range(256)) * 4
    for size in (1, 2, 3, 7, 16, 29, 64, len(stream)):
        parser = pp.HeaderParser()
        for start in range(0, len(stream), size):
            parser.receive_data(memoryview(stream)[start : start + size])
            if parser.next_event() is pp.NEED_DATA:
                assert start + size < len(data)
        assert parser.trailing_data == stream[len(data) :]


def test_trailing_data_before_the_header_is_everything_received() -> None:
    parser = pp.HeaderParser()
    parser.receive_data(b"GET / HTTP/1.1\r\n")
    with pytest.raises(pp.InvalidSignature):
        parser.next_event()
    # Under a policy that lets direct clients through, nothing is lost.
    assert parser.trailing_data == b"GET / HTTP/1.1\r\n"


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", pp.InvalidSignature, "closed before sending any byte"),
        (b"PROX", pp.InvalidSignature, "closed after 4 byte(s), inside the signature"),
        (SIG[:7], pp.InvalidSignature, "inside the signature"),
        (V1[:-1], pp.InvalidHeader, "v1: the peer closed after 44 bytes of the header"),
        (V2[:14], pp.InvalidHeader, "v2: the peer closed after 14 of 16 bytes"),
        (V2[:-1], pp.InvalidHeader, "v2: the peer closed after 27 of 28 bytes"),
    ],
)
def test_eof_before_the_header_is_complete(
    data: bytes, error: type[pp.InvalidHeader], message: str
) -> None:
    parser = pp.HeaderParser()
    parser.receive_data(data)
    parser.receive_data(b"")
    assert parser.closed
    with pytest.raises(error) as info:
        parser.next_event()
    assert message in str(info.value)
    if error is pp.InvalidHeader:
        assert not isinstance(info.value, pp.InvalidSignature)


def test_eof_after_the_header_is_fine() -> None:
    parser = pp.HeaderParser()
    parser.receive_data(V1)
    parser.receive_data(b"")
    assert isinstance(parser.next_event(), pp.Header)
    assert parser.trailing_data == b""


def test_data_after_eof_is_a_caller_bug() -> None:
    parser = pp.HeaderParser()
    parser.receive_data(b"")
    parser.receive_data(b"")  # repeating EOF is harmless
    with pytest.raises(RuntimeError):
        parser.receive_data(b"x")


def test_errors_are_sticky() -> None:
    parser = pp.HeaderParser()
    parser.receive_data(b"X")
    with pytest.raises(pp.InvalidSignature) as first:
        parser.next_event()
    parser.receive_data(V2)
    with pytest.raises(pp.InvalidSignature) as second:
        parser.next_event()
    assert second.value is first.value


def test_v1_max_header_size_below_107() -> None:
    parser = pp.HeaderParser(max_header_size=32)
    parser.receive_data(V1[:31])
    assert parser.next_event() is pp.NEED_DATA
    parser.receive_data(V1[31:32])
    with pytest.raises(pp.InvalidHeader, match="no CRLF within the first 32 bytes"):
        parser.next_event()


@pytest.mark.parametrize("data", [V1, V2], ids=["v1", "v2"])
def test_a_whole_header_larger_than_max_header_size_is_refused(data: bytes) -> None:
    # All of it in one call, as a proxy sends it: the limit holds all the same.
    parser = pp.HeaderParser(max_header_size=len(data) - 1)
    parser.receive_data(data + b"GET / HTTP/1.1\r\n")
    with pytest.raises(pp.InvalidHeader):
        parser.next_event()
    exact = pp.HeaderParser(max_header_size=len(data))
    exact.receive_data(data + b"GET")
    assert isinstance(exact.next_event(), pp.Header)
    assert (exact.header_size, exact.trailing_data) == (len(data), b"GET")


@pytest.mark.parametrize(
    ("versions", "data", "message"),
    [
        ([2], V1, "a PROXY v1 header, but only v2 is accepted"),
        ([1], V2, "a PROXY v2 header, but only v1 is accepted"),
    ],
    ids=["v1", "v2"],
)
def test_a_whole_header_of_another_version_is_no_header(
    versions: list[int], data: bytes, message: str
) -> None:
    # Refused as no header (InvalidSignature), with a message that says what came.
    for sent in (data + b"GET / HTTP/1.1\r\n", data, data[:16]):
        parser = pp.HeaderParser(versions=versions)
        parser.receive_data(sent)
        with pytest.raises(pp.InvalidSignature) as refusal:
            parser.next_event()
        assert str(refusal.value) == message
        assert parser.version is None


@pytest.mark.parametrize(("versions", "data"), [([2], b"PROX"), ([2], b"PUT /"), ([1], b"\r\n")])
def test_bytes_that_are_not_a_whole_signature_of_another_version_say_so(
    versions: list[int], data: bytes
) -> None:
    # Refused at once all the same (reject early), without claiming a header came.
    parser = pp.HeaderParser(versions=versions)
    parser.receive_data(data)
    with pytest.raises(pp.InvalidSignature, match=r"cannot start a v. .* signature"):
        parser.next_event()


@pytest.mark.parametrize("size", [0, 15, -1])
def test_max_header_size_is_at_least_16(size: int) -> None:
    with pytest.raises(ValueError, match="at least 16"):
        pp.HeaderParser(max_header_size=size)


@pytest.mark.parametrize("versions", [[], [3], [1, 3], [0]])
def test_versions_must_be_1_or_2(versions: list[int]) -> None:
    with pytest.raises(ValueError, match="subset"):
        pp.HeaderParser(versions=versions)


@pytest.mark.parametrize(("versions", "data"), [([1], V1), ([2], V2), ((1, 2), V1)])
def test_versions_accepted(versions: list[int], data: bytes) -> None:
    parser = pp.HeaderParser(versions=versions)
    parser.receive_data(data)
    assert isinstance(parser.next_event(), pp.Header)


def test_parse_incomplete_and_empty() -> None:
    for prefix in (b"", b"P", b"PROXY TCP4 1.2", SIG, SIG + b"\x21\x11\x00"):
        with pytest.raises(pp.IncompleteHeader):
            pp.parse(prefix)


def test_parse_errors_are_protocol_errors_only() -> None:
    # The exception hierarchy users catch.
    assert issubclass(pp.InvalidSignature, pp.InvalidHeader)
    for error in (pp.InvalidHeader, pp.IncompleteHeader, pp.HeaderRejected):
        assert issubclass(error, pp.ProxyProtocolError)
    assert issubclass(pp.HeaderEncodingError, ValueError)
    assert not issubclass(pp.InvalidHeader, ValueError)


def test_datagram_header_and_payload() -> None:
    header = pp.Header.proxy(
        ("192.0.2.1", 5353), ("198.51.100.7", 53), transport=pp.Transport.DGRAM
    )
    datagram = header.to_bytes() + b"\x12\x34payload"
    parsed, payload = pp.parse_datagram(datagram)
    assert parsed == header
    assert payload == b"\x12\x34payload"
    assert pp.parse_datagram(bytearray(header.to_bytes())) == (header, b"")
    local, payload = pp.parse_datagram(pp.Header.local().to_bytes() + b"x")
    assert (local.command, payload) == (pp.Command.LOCAL, b"x")


@pytest.mark.parametrize("family_transport", [0x11, 0x12, 0x41, 0xFF])
def test_datagram_local_whatever_its_family(family_transport: int) -> None:
    # Issue 9: LOCAL's family is ignored (spec 2.2), over UDP too; the TLVs start at byte 16.
    data = v2(0x20, family_transport, tlv(0x05, b"check"))
    local, payload = pp.parse_datagram(data + b"query")
    assert (local.command, local.source, payload) == (pp.Command.LOCAL, None, b"query")
    assert local.tlvs.unique_id == b"check"
    with pytest.raises(pp.InvalidHeader, match="truncated header"):
        pp.parse_datagram(data[:-1])


@pytest.mark.parametrize(
    ("datagram", "message"),
    [
        (v2(0x21, 0x12, inet("1.2.3.4", "5.6.7.8", 1, 2))[:-1], "datagram: truncated header"),
        (SIG[:5], "datagram: truncated header"),
        (b"", "datagram: truncated header"),
        (V1 + b"payload", "v1 headers describe TCP only"),
        (V2 + b"payload", "declares a stream transport"),
        (v2(0x21, 0x12, inet("1.2.3.4", "5.6.7.8", 1, 2) + tlv(0x01, b"h2")[:4], length=16),
         "past the end"),
        (b"\x00\x01DNS query", "cannot start"),
    ],
)  # fmt: skip
def test_invalid_datagrams(datagram: bytes, message: str) -> None:
    with pytest.raises(pp.InvalidHeader) as info:
        pp.parse_datagram(datagram)
    assert message in str(info.value)
