"""v1 (text) headers: spec section 2.1."""

from __future__ import annotations

import pytest

import proxyproto as pp
from wire import rejected, tr

INET = (pp.Command.PROXY, pp.Family.INET, pp.Transport.STREAM)
INET6 = (pp.Command.PROXY, pp.Family.INET6, pp.Transport.STREAM)


@pytest.mark.parametrize(
    ("line", "shape", "source", "destination"),
    [
        # The spec's own example (2.1).
        (b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n", INET,
         ("192.168.0.1", 56324), ("192.168.0.11", 443)),
        (b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n", INET,
         ("255.255.255.255", 65535), ("255.255.255.255", 65535)),
        (b"PROXY TCP4 0.0.0.0 10.0.0.1 0 0\r\n", INET, ("0.0.0.0", 0), ("10.0.0.1", 0)),
        (b"PROXY TCP6 ::1 ::1 1 2\r\n", INET6, ("::1", 1), ("::1", 2)),
        (b"PROXY TCP6 2001:db8::1 2001:db8::ff 40000 8443\r\n", INET6,
         ("2001:db8::1", 40000), ("2001:db8::ff", 8443)),
        # IPv6 comes back in canonical form, the same text a v2 header gives.
        (b"PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::FFFF:192.0.2.1 1 2\r\n", INET6,
         ("2001:db8::1", 1), ("::ffff:192.0.2.1", 2)),
        # The longest TCP6 line.
        (b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
         b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n", INET6,
         ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
         ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535)),
    ],
)  # fmt: skip
def test_valid(
    line: bytes,
    shape: tuple[pp.Command, pp.Family, pp.Transport],
    source: tuple[str, int],
    destination: tuple[str, int],
) -> None:
    header = tr(line)
    assert header.version == 1
    assert (header.command, header.family, header.transport) == shape
    assert header.source == source
    assert header.destination == destination
    assert not header.tlvs


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY UNKNOWN\r\n",
        # Spec 2.1: with UNKNOWN, the receiver must ignore anything before the CRLF.
        b"PROXY UNKNOWN ffff:f::1 ::1 1 2\r\n",
        b"PROXY UNKNOWN whatever the sender liked\r\n",
    ],
)
def test_unknown(line: bytes) -> None:
    header = tr(line)
    assert header == pp.Header.unknown()
    assert header.source is None
    assert header.destination is None


def test_shortest_header_is_recognised_before_16_bytes() -> None:
    # 15 bytes: a parser that waits for 16 to tell v1 from v2 would hang here.
    parser = pp.HeaderParser()
    parser.receive_data(b"PROXY UNKNOWN\r\n")
    assert parser.next_event() == pp.Header.unknown()


def test_longest_line_limit() -> None:
    # The spec's worst case: UNKNOWN with two full IPv6 addresses and ports.
    worst = (
        b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
        b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
    )
    assert len(worst) == 107
    assert tr(worst) == pp.Header.unknown()
    long_unknown = b"PROXY UNKNOWN " + b"x" * 91 + b"\r\n"
    assert len(long_unknown) == 107
    assert pp.parse(long_unknown)[0] == pp.Header.unknown()
    rejected(b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n", "no CRLF within the first 107 bytes", at=107)


@pytest.mark.parametrize(
    ("data", "message", "at"),
    [
        # Not a header at all: refused on the first byte.
        (b"GET / HTTP/1.1\r\n", "cannot start", 1),
        (b"SSH-2.0-OpenSSH\r\n", "cannot start", 1),
        (b"\x16\x03\x01\x02\x00", "cannot start", 1),
        (b"PROXZ TCP4", "does not match", 5),
        (b"proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n", "cannot start", 1),
        # Spacing and line ends.
        (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "single spaces", 7),
        (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "single spaces", 12),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n", "single spaces", 30),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "too many fields", 31),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "CRLF", 31),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\n", "CR must be followed by LF", 32),
        (b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", "is not an IPv4 address", 19),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "ends before its last field", 29),
        (b"PROXY TCP4\r\n", "ends before its last field", 11),
        (b"PROXY\r\n", "does not match", 6),
        (b"PROXY \r\n", "unknown protocol", 7),
        # Protocols.
        (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol 'TCP5'", 10),
        (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol 'U", 8),
        (b"PROXY UNKNOWNX\r\n", "unknown protocol", 14),
        (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol 't", 7),
        # Addresses of the declared family, no leading zeros (read as octal elsewhere), refused
        # at the first byte that rules the field out.
        (b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", "address '1.2.3.04' has a leading zero", 19),
        (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "leading zero", 13),
        (b"PROXY TCP4 1.2.3.4 5.6.7.256 1 2\r\n", "'5.6.7.256' is not an IPv4 address", 28),
        (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "not an IPv4 address", 17),
        (b"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", "not an IPv4 address", 19),
        (b"PROXY TCP4 ::1 ::1 1 2\r\n", "is not an IPv4 address", 12),
        (b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", "not an IPv6 address", 19),
        (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "is not an IPv6 address", 19),
        (b"PROXY TCP6 ::1::2 ::1 1 2\r\n", "not an IPv6 address", 18),
        (b"PROXY TCP4 1111111111111111 5.6.7.8 1 2\r\n", "not an IPv4 address", 15),
        # Ports: 0 to 65535, decimal, no leading zeros, no sign.
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 443\r\n", "has a leading zero", 29),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 00 443\r\n", "leading zero", 29),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 443\r\n", "not a number from 0 to 65535", 32),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 80 100000\r\n", "not a number from 0 to 65535", 36),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 443\r\n", "not a number", 28),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 443\r\n", "not a number", 28),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 8a 443\r\n", "not a number", 29),
    ],
)
def test_invalid(data: bytes, message: str, at: int) -> None:
    rejected(data, message, at=at)


def test_no_lf_after_cr_at_the_end() -> None:
    # The whole line except its LF is a valid prefix: parse wants more bytes, nothing else.
    with pytest.raises(pp.IncompleteHeader):
        pp.parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r")


def test_errors_say_what_and_where() -> None:
    error = rejected(b"PROXY TCP4 1.2.3.4 5.6.7.8 080 443\r\n", "v1: port '08", at=29)
    assert str(error) == "v1: port '080' has a leading zero"


def test_v1_not_accepted_when_only_v2_is() -> None:
    parser = pp.HeaderParser(versions=[2])
    parser.receive_data(b"P")
    with pytest.raises(pp.InvalidSignature):
        parser.next_event()
