"""Properties: build → parse round trips, and what the parsers do with any bytes at all.

Hypothesis draws every header shape the builder makes (v1 TCP4/TCP6/UNKNOWN; v2 PROXY over
INET, INET6 or UNIX, STREAM or DGRAM; LOCAL; UNSPEC; every TLV, CRC32C, padding) and checks that the
parser gives it back, whole and in any chunking. Then it throws junk, signatures followed by junk
and mutated headers at every entry point and checks that they agree prefix by prefix: the one-shot
``parse``, a byte-at-a-time and a chunked ``HeaderParser``, and ``parse_datagram``; and that a
refusal is neither premature (a prefix that can still become a header is "need more") nor late
where the design promises "at once" (signatures, the v1 protocol, the v2 fixed part).

What a header should look like on the wire (the TLV walk, the CRC32C, the v1 text) is recomputed
here from the spec, never taken from the builder.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from itertools import pairwise
from typing import Literal

import attrs
import pytest
from crc32c import crc32c as crc32c_of
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import proxyproto as pp
from wire import SIG

V1_PREFIX = b"PROXY "
#: Spec 2.2: the size of the address block after each family/transport byte.
ADDRESS_BLOCK = {0x00: 0, 0x11: 12, 0x12: 12, 0x21: 36, 0x22: 36, 0x31: 216, 0x32: 216}
#: The TLV types that the parser decodes (or checks, or skips on purpose).
KNOWN_TYPES = frozenset((0x01, 0x02, 0x03, 0x04, 0x05, 0x20, 0x30, 0xE0, 0xEA, 0xEE))
CRC32C, NOOP, SSL = 0x03, 0x04, 0x20
#: The SSL sub-TLV types with a typed field in SSLInfo (spec 2.2.6).
SSL_SUBTYPES = frozenset(range(0x21, 0x29))
TRANSPORTS = (pp.Transport.STREAM, pp.Transport.DGRAM)

# Headers of up to a few hundred bytes, checked prefix by prefix: about a second per test.
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- outcomes ----------------------------------------------------------------------------------


@attrs.frozen
class Outcome:
    """What a parser says about some bytes: need more, refuse, or a header of ``size`` bytes."""

    kind: Literal["need", "invalid", "header"]
    header: pp.Header | None = None
    size: int = 0


NEED = Outcome("need")
INVALID = Outcome("invalid")


def parse_outcome(data: bytes) -> Outcome:
    # Anything but these two (another exception, another ProxyProtocolError) fails the test.
    try:
        header, consumed = pp.parse(data)
    except pp.IncompleteHeader:
        return NEED
    except pp.InvalidHeader:
        return INVALID
    return Outcome("header", header, consumed)


def event_outcome(parser: pp.HeaderParser) -> Outcome:
    try:
        event = parser.next_event()
    except pp.InvalidHeader:
        return INVALID
    if event is pp.NEED_DATA:
        return NEED
    assert isinstance(event, pp.Header)
    return Outcome("header", event, parser.header_size)


# --- what the wire should hold, from the spec ---------------------------------------------------


def walk_tlvs(data: bytes, start: int, end: int) -> list[tuple[int, int, bytes]]:
    """``(value offset, type, value)`` of each TLV in ``data[start:end]`` (spec 2.2)."""
    entries = []
    offset = start
    while offset < end:
        kind, length = struct.unpack_from("!BH", data, offset)
        offset += 3
        entries.append((offset, kind, data[offset : offset + length]))
        offset += length
    assert offset == end
    return entries


def typed_entries(tlvs: pp.TLVs) -> list[tuple[int, bytes]]:
    """The TLVs that the typed fields must produce; the SSL value is checked on its own."""
    entries = []
    if tlvs.alpn is not None:
        entries.append((0x01, tlvs.alpn))
    if tlvs.authority is not None:
        entries.append((0x02, tlvs.authority.encode("utf-8")))
    if tlvs.unique_id is not None:
        entries.append((0x05, tlvs.unique_id))
    if tlvs.ssl is not None:
        entries.append((SSL, b""))
    if tlvs.netns is not None:
        entries.append((0x30, tlvs.netns.encode("ascii")))
    if tlvs.aws_vpce_id is not None:
        entries.append((0xEA, b"\x01" + tlvs.aws_vpce_id.encode("ascii")))
    if tlvs.azure_link_id is not None:
        entries.append((0xEE, struct.pack("<BI", 0x01, tlvs.azure_link_id)))
    if tlvs.gcp_psc_id is not None:
        entries.append((0xE0, struct.pack("!Q", tlvs.gcp_psc_id)))
    return entries


def ssl_typed_entries(ssl: pp.SSLInfo) -> list[tuple[int, bytes]]:
    texts = (
        (0x21, ssl.version, "ascii"),
        (0x22, ssl.cn, "utf-8"),
        (0x23, ssl.cipher, "ascii"),
        (0x24, ssl.sig_alg, "ascii"),
        (0x25, ssl.key_alg, "ascii"),
        (0x26, ssl.group, "ascii"),
        (0x27, ssl.sig_scheme, "ascii"),
    )
    entries = [(kind, text.encode(encoding)) for kind, text, encoding in texts if text is not None]
    if ssl.client_cert is not None:
        entries.append((0x28, ssl.client_cert))
    return entries


def without_ssl_value(entries: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    return sorted((kind, b"" if kind == SSL else value) for kind, value in entries)


def v1_line(header: pp.Header) -> bytes:
    if header.family is pp.Family.UNSPEC:
        return b"PROXY UNKNOWN\r\n"
    assert isinstance(header.source, tuple)
    assert isinstance(header.destination, tuple)
    protocol = "TCP4" if header.family is pp.Family.INET else "TCP6"
    (source, source_port), (destination, destination_port) = header.source, header.destination
    line = f"PROXY {protocol} {source} {destination} {source_port} {destination_port}\r\n"
    return line.encode("ascii")


def path_bytes(path: pp.Address) -> bytes:
    assert isinstance(path, str)
    return path.encode("utf-8", "surrogateescape")


# --- strategies: headers the builder makes ------------------------------------------------------

ports = st.integers(0, 0xFFFF)
ascii_text = st.text(st.characters(codec="ascii"), max_size=24)
utf8_text = st.text(st.characters(codec="utf-8"), max_size=24)
#: Types with no typed meaning at the top level, and in the SSL TLV.
unknown_types = st.integers(0, 0xFF).filter(lambda kind: kind not in KNOWN_TYPES)
unknown_ssl_subtypes = st.integers(0, 0xFF).filter(lambda kind: kind not in SSL_SUBTYPES)
#: Paths are bytes to the kernel: any bytes (os.fsdecode's view), or any text that encodes, incl.
#: lone surrogates from U+DC80 (surrogateescape). Without a trailing NUL, which reads as padding,
#: and a NUL only in an abstract name (leading NUL): a pathname ends at its first one.
unix_paths = st.one_of(
    st.binary(max_size=108).map(lambda raw: raw.decode("utf-8", "surrogateescape")),
    st.text(
        st.characters(codec="utf-8") | st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF),
        max_size=40,
    ),
).filter(
    lambda path: (
        not path.endswith("\x00")
        and ("\x00" not in path or path.startswith("\x00"))
        and len(path_bytes(path)) <= 108
    )
)

ssl_infos = st.builds(
    pp.SSLInfo,
    client=st.integers(0, 0xFF),
    verify=st.integers(0, 2**32 - 1),
    version=st.none() | ascii_text,
    cn=st.none() | utf8_text,
    cipher=st.none() | ascii_text,
    sig_alg=st.none() | ascii_text,
    key_alg=st.none() | ascii_text,
    group=st.none() | ascii_text,
    sig_scheme=st.none() | ascii_text,
    client_cert=st.none() | st.binary(max_size=300),
    raw=st.lists(st.tuples(unknown_ssl_subtypes, st.binary(max_size=16)), max_size=3).map(tuple),
)
tlv_sets = st.builds(
    pp.TLVs,
    alpn=st.none() | st.binary(max_size=32),
    authority=st.none() | utf8_text,
    unique_id=st.none() | st.binary(max_size=128),
    netns=st.none() | ascii_text,
    ssl=st.none() | ssl_infos,
    aws_vpce_id=st.none() | st.text(st.characters(codec="ascii"), max_size=24),
    azure_link_id=st.none() | st.integers(0, 2**32 - 1),
    gcp_psc_id=st.none() | st.integers(0, 2**64 - 1),
    raw=st.lists(st.tuples(unknown_types, st.binary(max_size=32)), max_size=4).map(tuple),
)


@attrs.frozen
class Built:
    """A header from the builder, how it was encoded, and the hosts it was given."""

    header: pp.Header
    data: bytes
    crc32c: bool = False
    padded: bool = False
    hosts: tuple[str, str] | None = None


SHAPES = (
    "v1-tcp4",
    "v1-tcp6",
    "v1-unknown",
    "v2-inet",
    "v2-inet6",
    "v2-unix",
    "v2-local",
    "v2-local-with-family",
    "v2-unspec",
)


@st.composite
def built_headers(draw: st.DrawFn) -> Built:
    shape = draw(st.sampled_from(SHAPES))
    if shape == "v1-unknown":
        header = pp.Header.unknown()
        return Built(header, header.to_bytes())
    if shape in ("v1-tcp4", "v1-tcp6", "v2-inet", "v2-inet6"):
        hosts_of = st.ip_addresses(v=4 if shape.endswith("4") or shape == "v2-inet" else 6)
        hosts = (str(draw(hosts_of)), str(draw(hosts_of)))
        source, destination = (hosts[0], draw(ports)), (hosts[1], draw(ports))
        if shape.startswith("v1"):
            header = pp.Header.proxy(source, destination, version=1)
            return Built(header, header.to_bytes(), hosts=hosts)
    else:
        hosts = None
    tlvs = draw(st.none() | tlv_sets)
    transport = draw(st.sampled_from(TRANSPORTS))
    if shape in ("v2-inet", "v2-inet6"):
        header = pp.Header.proxy(source, destination, transport=transport, tlvs=tlvs)
    elif shape == "v2-unix":
        paths = draw(unix_paths), draw(unix_paths)
        header = pp.Header.proxy(*paths, transport=transport, tlvs=tlvs)
    elif shape == "v2-local":
        header = pp.Header.local(tlvs=tlvs)
    elif shape == "v2-local-with-family":
        # LOCAL may keep a family, and sends no address block (spec 2.2).
        family = draw(st.sampled_from([pp.Family.INET, pp.Family.INET6, pp.Family.UNIX]))
        header = pp.Header(2, pp.Command.LOCAL, family, transport, None, None, tlvs or pp.TLVs())
    else:
        header = pp.Header(
            2,
            pp.Command.PROXY,
            pp.Family.UNSPEC,
            pp.Transport.UNSPEC,
            None,
            None,
            tlvs or pp.TLVs(),
        )
    crc32c = draw(st.booleans())
    natural = len(header.to_bytes(crc32c=crc32c))
    # A NOOP TLV takes at least 3 bytes: pad by 0 or by 3 and more.
    pad_to = draw(st.none() | st.just(natural) | st.integers(natural + 3, natural + 300))
    data = header.to_bytes(crc32c=crc32c, pad_to=pad_to)
    return Built(header, data, crc32c, pad_to is not None and pad_to > natural, hosts)


# --- round trip ----------------------------------------------------------------------------------


def check_same_header(built: Built, parsed: pp.Header) -> None:
    header = built.header
    assert (parsed.version, parsed.command, parsed.family, parsed.transport) == (
        header.version,
        header.command,
        header.family,
        header.transport,
    )
    if header.family is pp.Family.UNIX and header.command is pp.Command.PROXY:
        # The same bytes: a str that is not os.fsdecode's spelling comes back in that spelling.
        assert path_bytes(parsed.source) == path_bytes(header.source)
        assert path_bytes(parsed.destination) == path_bytes(header.destination)
    else:
        assert parsed.source == header.source
        assert parsed.destination == header.destination
    if built.hosts is not None:
        assert isinstance(parsed.source, tuple)
        assert isinstance(parsed.destination, tuple)
        assert ipaddress.ip_address(parsed.source[0]) == ipaddress.ip_address(built.hosts[0])
        assert ipaddress.ip_address(parsed.destination[0]) == ipaddress.ip_address(built.hosts[1])
    if header.version == 1:
        assert built.data == v1_line(header)
        assert parsed.tlvs == pp.TLVs()
    else:
        check_tlvs(built, parsed.tlvs)


def check_tlvs(built: Built, parsed: pp.TLVs) -> None:
    data, expected = built.data, built.header.tlvs
    assert data[:12] == SIG
    assert 16 + int.from_bytes(data[14:16], "big") == len(data)
    # LOCAL's TLVs start at byte 16 whatever the family (spec 2.2, as HAProxy reads it).
    walked = walk_tlvs(data, 16 if data[12] == 0x20 else 16 + ADDRESS_BLOCK[data[13]], len(data))
    # raw holds every TLV in wire order.
    assert parsed.raw == tuple((kind, value) for _, kind, value in walked)
    # The typed fields come back (the SSL TLV, crc32c and raw are checked below).
    assert attrs.evolve(parsed, crc32c=None, ssl=None, raw=()) == attrs.evolve(
        expected, ssl=None, raw=()
    )
    # CRC32C iff asked for, over the whole header with its own value zeroed (spec 2.2.3).
    checksums = [(offset, value) for offset, kind, value in walked if kind == CRC32C]
    if built.crc32c:
        [(offset, value)] = checksums
        zeroed = data[:offset] + bytes(4) + data[offset + 4 :]
        assert parsed.crc32c == int.from_bytes(value, "big") == crc32c_of(zeroed)
    else:
        assert checksums == []
        assert parsed.crc32c is None
    assert len([kind for _, kind, _ in walked if kind == NOOP]) == int(built.padded)
    # Typed TLVs first (in any order), then the raw entries of unknown types, in order.
    rest = [(kind, value) for kind, value in parsed.raw if kind not in (CRC32C, NOOP)]
    typed = typed_entries(expected)
    assert without_ssl_value(rest[: len(typed)]) == without_ssl_value(typed)
    assert tuple(rest[len(typed) :]) == expected.raw
    if expected.ssl is None:
        assert parsed.ssl is None
    else:
        [ssl_value] = [value for kind, value in rest if kind == SSL]
        check_ssl(expected.ssl, parsed.ssl, ssl_value)


def check_ssl(expected: pp.SSLInfo, parsed: pp.SSLInfo | None, value: bytes) -> None:
    assert parsed is not None
    assert attrs.evolve(parsed, raw=()) == attrs.evolve(expected, raw=())
    assert value[:5] == struct.pack("!BI", expected.client, expected.verify)
    assert parsed.raw == tuple((kind, sub) for _, kind, sub in walk_tlvs(value, 5, len(value)))
    typed = ssl_typed_entries(expected)
    assert sorted(parsed.raw[: len(typed)]) == sorted(typed)
    assert parsed.raw[len(typed) :] == expected.raw


def split_points(size: int) -> st.SearchStrategy[list[int]]:
    """Where to cut ``size`` bytes into non-empty chunks (``b""`` would mean EOF)."""
    return st.lists(st.integers(1, max(1, size - 1)), unique=True, max_size=12).map(
        lambda cuts: sorted(cut for cut in cuts if 0 < cut < size)
    )


def with_cuts(inputs: st.SearchStrategy[bytes]) -> st.SearchStrategy[tuple[bytes, list[int]]]:
    """Bytes, and where to cut them into chunks."""
    return inputs.flatmap(lambda data: st.tuples(st.just(data), split_points(len(data))))


@SETTINGS
@given(built=built_headers(), trailing=st.binary(max_size=64), data=st.data())
def test_round_trip(built: Built, trailing: bytes, data: st.DataObject) -> None:
    wire = built.data
    header, consumed = pp.parse(wire)
    assert consumed == len(wire)
    check_same_header(built, header)
    assert pp.parse(wire + trailing) == (header, len(wire))

    stream = wire + trailing
    parser = pp.HeaderParser()
    for start, end in pairwise([0, *data.draw(split_points(len(stream))), len(stream)]):
        parser.receive_data(stream[start:end])
        event = parser.next_event()
        if end < len(wire):
            assert event is pp.NEED_DATA
        else:
            assert event == header
    assert parser.header_size == len(wire)
    assert parser.trailing_data == trailing

    # max_header_size is exact: the header's own size passes, one byte less does not.
    parser = pp.HeaderParser(max_header_size=max(16, len(wire)))
    parser.receive_data(stream)
    assert parser.next_event() == header
    if len(wire) > 16:
        parser = pp.HeaderParser(max_header_size=len(wire) - 1)
        parser.receive_data(stream)
        with pytest.raises(pp.InvalidHeader):
            parser.next_event()

    # UDP: v2 only, and no stream transport under PROXY.
    if header.version == 2 and not (
        header.command is pp.Command.PROXY and header.transport is pp.Transport.STREAM
    ):
        assert pp.parse_datagram(stream) == (header, trailing)
    else:
        with pytest.raises(pp.InvalidHeader):
            pp.parse_datagram(stream)


def test_largest_header_round_trips() -> None:
    # Spec 2.2: 16 bytes and a 16-bit length.
    header = pp.Header.local(tlvs=pp.TLVs(alpn=b"h2"))
    data = header.to_bytes(crc32c=True, pad_to=pp.MAX_HEADER_SIZE)
    assert pp.parse(data + b"x") == (pp.parse(data)[0], pp.MAX_HEADER_SIZE)
    assert pp.parse(data)[0].tlvs.alpn == b"h2"
    with pytest.raises(pp.HeaderEncodingError):
        header.to_bytes(pad_to=pp.MAX_HEADER_SIZE + 1)


# --- robustness: any bytes -----------------------------------------------------------------------

OCTETS = frozenset(str(octet).encode() for octet in range(256))
PORT = re.compile(rb"0|[1-9][0-9]{0,4}")


def ipv4_ok(field: bytes, *, partial: bool) -> bool:
    """A dotted quad without leading zeros, or (partial) the start of one."""
    parts = field.split(b".")
    if partial:
        last = parts[-1] in OCTETS or parts[-1] == b""
        return len(parts) <= 4 and all(p in OCTETS for p in parts[:-1]) and last
    return len(parts) == 4 and all(p in OCTETS for p in parts)


def port_ok(field: bytes, *, partial: bool) -> bool:
    # Every prefix of a valid port is a valid port itself, or empty.
    if partial and field == b"":
        return True
    return PORT.fullmatch(field) is not None and int(field) <= 0xFFFF


def tcp4_extendable(rest: bytes) -> bool:
    """Whether ``PROXY TCP4 `` + ``rest`` (no LF yet) can still become a valid line."""
    ended = rest.endswith(b"\r")
    if ended:
        rest = rest[:-1]
    fields = rest.split(b" ")
    if b"\r" in rest or len(fields) > 4 or (ended and len(fields) != 4):
        return False
    checks = (ipv4_ok, ipv4_ok, port_ok, port_ok)
    return all(
        check(field, partial=not ended and index == len(fields) - 1)
        for index, (check, field) in enumerate(zip(checks, fields, strict=False))
    )


def verdict(prefix: bytes) -> Literal["need", "refuse"] | None:
    """What a parser must say about ``prefix``, where the design decides it; else ``None``.

    ``"need"``: the prefix can still become a header, and is not one yet (never refuse early).
    ``"refuse"``: it cannot, and the design promises to say so at once: a byte that leaves both
    signatures, the v1 protocol field, the v2 version/command, family/transport and length.
    """
    if not prefix:
        return "need"
    signature = V1_PREFIX if prefix[:1] == b"P" else SIG if prefix[:1] == b"\r" else None
    if signature is None:
        return "refuse"
    if not (signature.startswith(prefix) or prefix.startswith(signature)):
        return "refuse"
    if len(prefix) <= len(signature):
        return "need"
    if signature == SIG:
        if prefix[12] not in (0x20, 0x21):
            return "refuse"
        if len(prefix) == 13:
            return "need"
        # LOCAL ignores the family byte: only its length bounds it (spec 2.2).
        local = prefix[12] == 0x20
        if not local and prefix[13] not in ADDRESS_BLOCK:
            return "refuse"
        if len(prefix) < 16:
            return "need"
        block = 0 if local else ADDRESS_BLOCK[prefix[13]]
        total = 16 + int.from_bytes(prefix[14:16], "big")
        if total < 16 + block:
            return "refuse"
        # Any bytes make an address block; TLVs are checked once the header is complete.
        return "need" if len(prefix) < total and len(prefix) <= 16 + block else None
    body = prefix[len(V1_PREFIX) :]
    if b"\n" in body:
        return None
    if body.startswith(b"UNKNOWN"):
        rest = body[len(b"UNKNOWN") :]
        if rest and rest[:1] not in b" \r":
            return "refuse"
        if b"\r" in rest[:-1]:
            return "refuse"
        # Spec 2.1: anything up to the CRLF, 107 bytes at most.
        room = 1 if rest.endswith(b"\r") else 2
        return "need" if len(prefix) + room <= 107 else "refuse" if len(prefix) >= 107 else None
    if body.startswith(b"TCP4 "):
        # Addresses and ports are refused at their end, not as soon as they go wrong: no claim.
        return "need" if tcp4_extendable(body[len(b"TCP4 ") :]) else None
    if body.startswith(b"TCP6 "):
        return None
    return "need" if any(p.startswith(body) for p in (b"TCP4", b"TCP6", b"UNKNOWN")) else "refuse"


def typed_view(tlvs: pp.TLVs) -> pp.TLVs:
    ssl = None if tlvs.ssl is None else attrs.evolve(tlvs.ssl, raw=())
    return attrs.evolve(tlvs, crc32c=None, ssl=ssl, raw=())


def unknown_view(tlvs: pp.TLVs) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    ssl_raw = () if tlvs.ssl is None else tlvs.ssl.raw
    return (
        [(kind, value) for kind, value in tlvs.raw if kind not in KNOWN_TYPES],
        [(kind, value) for kind, value in ssl_raw if kind not in SSL_SUBTYPES],
    )


def check_reencodes(header: pp.Header) -> None:
    """A header read from the wire can be sent on (a relay): same header, typed TLVs, unknowns."""
    again, _ = pp.parse(header.to_bytes())
    assert (again.version, again.command, again.family, again.transport) == (
        header.version,
        header.command,
        header.family,
        header.transport,
    )
    assert (again.source, again.destination) == (header.source, header.destination)
    assert typed_view(again.tlvs) == typed_view(header.tlvs)
    assert unknown_view(again.tlvs) == unknown_view(header.tlvs)


def check_agreement(data: bytes, cuts: list[int]) -> list[Outcome]:
    """Check every parser against every other on ``data``; return the outcome of each prefix."""
    # Byte at a time: the outcome after each prefix.
    parser = pp.HeaderParser()
    outcomes = [event_outcome(parser)]
    for index in range(len(data)):
        parser.receive_data(data[index : index + 1])
        outcomes.append(event_outcome(parser))
    final = outcomes[-1]

    for end, outcome in enumerate(outcomes):
        # The one-shot parser says the same of every prefix: it refuses exactly as early, and
        # "incomplete" means "the incremental parser wants more".
        assert parse_outcome(data[:end]) == outcome, f"after {end} bytes"
        expected = verdict(data[:end])
        if expected == "need":
            assert outcome == NEED, f"refused early after {end} bytes"
        elif expected == "refuse":
            assert outcome == INVALID, f"not refused after {end} bytes"

    assert parse_outcome(bytes(bytearray(data))) == final
    if type(final.header) is pp.Header:
        assert pp.parse(bytearray(data)) == (final.header, final.size)
        assert pp.parse(memoryview(data)) == (final.header, final.size)
        assert parser.trailing_data == data[final.size :]
        check_reencodes(final.header)
    elif final == NEED:
        # EOF inside a header refuses it.
        parser.receive_data(b"")
        with pytest.raises(pp.InvalidHeader):
            parser.next_event()

    # In chunks: after each chunk, what the byte-at-a-time parser said at that point.
    parser = pp.HeaderParser()
    for start, end in pairwise([0, *cuts, len(data)]):
        if end > start:  # b"" would mean EOF
            parser.receive_data(data[start:end])
        assert event_outcome(parser) == outcomes[end], f"after a chunk ending at {end}"
    if final.kind == "header":
        assert parser.trailing_data == data[final.size :]

    check_datagram(data, final)
    return outcomes


def check_datagram(data: bytes, final: Outcome) -> None:
    header = final.header
    if header is None or header.version != 2:
        accepted = False
    else:
        accepted = not (
            header.command is pp.Command.PROXY and header.transport is pp.Transport.STREAM
        )
    try:
        datagram_header, payload = pp.parse_datagram(data)
    except pp.InvalidHeader:
        assert not accepted
    else:
        assert accepted
        assert datagram_header == header
        assert data[: final.size] + payload == data


@SETTINGS
@given(case=with_cuts(st.binary(max_size=128)))
@example(case=(b"GET / HTTP/1.1\r\n", []))
def test_any_bytes(case: tuple[bytes, list[int]]) -> None:
    check_agreement(*case)


V1_TOKENS = [
    b"TCP4",
    b"TCP6",
    b"UNKNOWN",
    b" ",
    b"\r",
    b"\n",
    b"\r\n",
    b".",
    b":",
    b"0",
    b"1",
    b"2",
    b"5",
    b"9",
    b"25",
    b"255",
    b"256",
    b"65535",
    b"65536",
    b"::",
    b"ffff",
    b"a",
    b"1.2.3.4",
    b"::1",
    b"\x00",
    b"\xff",
]
v1_soup = st.lists(st.sampled_from(V1_TOKENS) | st.binary(min_size=1, max_size=3), max_size=24)


def rarely(draw: st.DrawFn) -> bool:
    """True one time in five; shrinks to False, towards the plausible input."""
    return draw(st.integers(0, 4)) == 4


@st.composite
def v1_junk(draw: st.DrawFn) -> bytes:
    start = draw(st.sampled_from([b"", b"TCP4 ", b"TCP6 ", b"UNKNOWN", b"UNKNOWN "]))
    return V1_PREFIX + start + b"".join(draw(v1_soup))


@st.composite
def v1_lines(draw: st.DrawFn) -> bytes:
    """A v1 line whose every part is usually right: valid headers and near misses."""
    protocol = draw(st.sampled_from([b"TCP4", b"TCP6", b"UNKNOWN"]))
    if rarely(draw):
        protocol = draw(st.sampled_from(V1_TOKENS))
    hosts = st.ip_addresses(v=6 if protocol == b"TCP6" else 4).map(lambda a: str(a).encode())
    odd_hosts = st.one_of(
        st.ip_addresses(),
        st.ip_addresses(v=6).map(lambda a: a.exploded.upper()),
        st.ip_addresses(v=4).map(lambda a: str(a).replace(".", ".0", 1)),
    ).map(lambda a: str(a).encode())
    ports = st.integers(0, 0xFFFF).map(lambda port: str(port).encode())
    odd_ports = st.sampled_from([b"", b"00", b"080", b"65536", b"99999", b"-1", b"+1", b"1a"])
    fields = [protocol]
    for strategy, odd in [(hosts, odd_hosts)] * 2 + [(ports, odd_ports)] * 2:
        fields.append(draw(odd if rarely(draw) else strategy))
    if rarely(draw):
        del fields[draw(st.integers(1, 4)) :]
    if rarely(draw):
        fields.append(draw(st.sampled_from(V1_TOKENS)))
    separator = draw(st.sampled_from([b"  ", b"\t", b""])) if rarely(draw) else b" "
    end = (
        draw(st.sampled_from([b"\n", b"\r", b"", b" \r\n", b"\r\r\n"])) if rarely(draw) else b"\r\n"
    )
    return V1_PREFIX + separator.join(fields) + end + draw(st.binary(max_size=8))


@SETTINGS
@given(case=with_cuts(v1_junk() | v1_lines()))
@example(case=(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", [11, 30]))
@example(case=(b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n", []))
def test_v1_prefix_and_junk(case: tuple[bytes, list[int]]) -> None:
    check_agreement(*case)


@st.composite
def tlv_junk(draw: st.DrawFn) -> bytes:
    """One TLV of a registered type (or any), usually well formed, sometimes not."""
    kind = draw(st.integers(0, 0xFF) if rarely(draw) else st.sampled_from(sorted(KNOWN_TYPES)))
    ascii_bytes = ascii_text.map(lambda text: text.encode("ascii"))
    any_text = st.text(max_size=12).map(lambda text: text.encode("utf-8", "surrogatepass"))
    if kind == SSL:
        subs = []
        for _ in range(draw(st.integers(0, 4))):
            sub = draw(st.integers(0, 0xFF) if rarely(draw) else st.integers(0x21, 0x28))
            value = draw(any_text | st.binary(max_size=8) if rarely(draw) else ascii_bytes)
            subs.append(struct.pack("!BH", sub, len(value)) + value)
        value = struct.pack("!BI", draw(st.integers(0, 0xFF)), draw(st.integers(0, 2**32 - 1)))
        value += b"".join(subs)
        if rarely(draw):
            value = value[: draw(st.integers(0, len(value)))]
    elif kind in (0xEA, 0xEE):
        value = draw(st.sampled_from([b"\x01", b"", b"\x02"]))
        value += draw(st.binary(min_size=4, max_size=4) if kind == 0xEE else ascii_bytes)
        if rarely(draw):
            value += draw(st.binary(min_size=1, max_size=4))
    elif kind == 0xE0:
        value = draw(st.binary(min_size=7, max_size=9))
    elif kind == CRC32C:
        value = draw(st.binary(min_size=3, max_size=5))
    elif kind == 0x05:
        value = draw(st.binary(max_size=24) | st.binary(min_size=127, max_size=130))
    else:
        value = draw(any_text | st.binary(max_size=24) if rarely(draw) else ascii_bytes)
    length = draw(st.integers(0, len(value) + 4)) if rarely(draw) else len(value)
    return struct.pack("!BH", kind, length) + value


@st.composite
def v2_junk(draw: st.DrawFn) -> bytes:
    """A v2 header whose every part is usually right: valid headers and near misses."""
    version_command = draw(st.integers(0, 0xFF) if rarely(draw) else st.sampled_from([0x20, 0x21]))
    family_transport = draw(
        st.integers(0, 0xFF) if rarely(draw) else st.sampled_from(sorted(ADDRESS_BLOCK))
    )
    block = ADDRESS_BLOCK.get(family_transport, 0)
    body = draw(st.binary(min_size=block, max_size=block))
    body += b"".join(draw(st.lists(tlv_junk(), max_size=4)))
    length = len(body)
    if rarely(draw):
        # Off by a little, most interestingly around the address block's size.
        near = st.sampled_from([max(0, block - 1), block, max(0, length - 1), length + 1])
        length = draw(near | st.integers(0, length + 8))
    data = SIG + bytes((version_command, family_transport)) + length.to_bytes(2, "big") + body
    data += draw(st.binary(max_size=8))
    return data[: draw(st.integers(0, len(data)))] if rarely(draw) else data


@SETTINGS
@given(case=with_cuts(v2_junk() | st.binary(max_size=64).map(SIG.__add__)))
def test_v2_prefix_and_junk(case: tuple[bytes, list[int]]) -> None:
    check_agreement(*case)


@st.composite
def mutations(draw: st.DrawFn) -> tuple[Built, bytes]:
    """A valid header, then one to three bytes flipped, inserted or deleted, or a truncation."""
    built = draw(built_headers())
    data = bytearray(built.data + draw(st.binary(max_size=8)))
    for _ in range(draw(st.integers(1, 3)) if rarely(draw) else 1):
        # The fixed part and the v1 fields are where many decisions are: favour them a little.
        index = draw(st.integers(0, min(24, len(data)) if rarely(draw) else len(data)))
        operation = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if operation == "insert":
            data.insert(index, draw(st.integers(0, 0xFF)))
        elif index == len(data):
            continue
        elif operation == "flip":
            data[index] ^= draw(st.integers(1, 0xFF))
        elif operation == "delete":
            del data[index]
        else:
            del data[index:]
    return built, bytes(data)


@SETTINGS
@given(data=st.data(), mutated=mutations())
def test_mutated_headers(data: st.DataObject, mutated: tuple[Built, bytes]) -> None:
    built, junk = mutated
    outcomes = check_agreement(junk, data.draw(split_points(len(junk))))
    # Never refused early: as long as the bytes are those of the valid header, it wants more,
    # and once the whole header is there, it is that header.
    original = built.data
    same = next(
        (i for i, (a, b) in enumerate(zip(junk, original, strict=False)) if a != b),
        min(len(junk), len(original)),
    )
    # Every prefix of up to `same` bytes is a strict prefix of the valid header.
    wanting = min(same, len(original) - 1)
    assert outcomes[: wanting + 1] == [NEED] * (wanting + 1)
    if same == len(original):
        header, _ = pp.parse(original)
        assert outcomes[same] == Outcome("header", header, len(original))


@SETTINGS
@given(built=built_headers().filter(lambda built: built.crc32c), data=st.data())
def test_crc32c_catches_any_changed_byte(built: Built, data: st.DataObject) -> None:
    # Spec 2.2.3: a CRC32C detects any burst of up to 32 bits, so a byte changed after the
    # length field is caught, unless the change unmakes the CRC32C TLV itself: its type byte, or
    # a length before it that makes the walk step over it.
    index = data.draw(st.integers(16, len(built.data) - 1))
    junk = bytearray(built.data)
    junk[index] ^= data.draw(st.integers(1, 0xFF))
    outcome = parse_outcome(bytes(junk))
    assert outcome == INVALID or (outcome.header is not None and outcome.header.tlvs.crc32c is None)


# --- repeated TLV types (issue 9) ---------------------------------------------------------------

#: Registered TLVs with a typed field: the field, and whether its value is text.
REPEATABLE = {
    0x01: ("alpn", False),
    0x02: ("authority", True),
    0x05: ("unique_id", False),
    0x30: ("netns", True),
}


@st.composite
def repeated_tlvs(draw: st.DrawFn) -> list[tuple[int, bytes]]:
    """Up to 8 well-formed registered TLVs, types drawn with repeats."""
    entries = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(sorted(REPEATABLE)))
        text = REPEATABLE[kind][1]
        value = draw(ascii_text).encode() if text else draw(st.binary(max_size=128))
        entries.append((kind, value))
    return entries


@SETTINGS
@given(entries=repeated_tlvs(), proxy=st.booleans())
def test_a_repeated_type_is_kept_and_the_first_wins(
    entries: list[tuple[int, bytes]], proxy: bool
) -> None:
    # Spec 2.2 has no rule against a repeated type: every occurrence stays in raw, in wire order,
    # and the typed field is the first one. LOCAL reads its TLVs from byte 16 (as HAProxy does).
    body = b"".join(struct.pack("!BH", kind, len(value)) + value for kind, value in entries)
    if proxy:
        data = SIG + struct.pack("!BBH", 0x21, 0x11, 12 + len(body)) + bytes(12) + body
    else:
        data = SIG + struct.pack("!BBH", 0x20, 0x00, len(body)) + body
    header, size = pp.parse(data + b"app")
    assert size == len(data)
    assert header.tlvs.raw == tuple(entries)
    for kind, (name, text) in REPEATABLE.items():
        values = [value for entry_kind, value in entries if entry_kind == kind]
        first = None if not values else values[0].decode() if text else values[0]
        assert getattr(header.tlvs, name) == first, name
    # Sent on, the typed fields still come back the same.
    check_reencodes(header)
    parser = pp.HeaderParser()
    for index in range(len(data)):
        assert parser.next_event() is pp.NEED_DATA
        parser.receive_data(data[index : index + 1])
    assert parser.next_event() == header


# --- the builder never makes what its parser refuses --------------------------------------------
#
# Regressions: the builder once accepted values that it encoded into headers the parser refused,
# or read back differently.

INET_PAIR = (("192.0.2.1", 1), ("192.0.2.2", 2))


def test_empty_aws_vpce_id_round_trips() -> None:
    # The builder sends EA 00 01 01 (sub-type, no id): it must read back as "" (or be refused).
    try:
        data = pp.Header.proxy(*INET_PAIR, tlvs=pp.TLVs(aws_vpce_id="")).to_bytes()
    except pp.HeaderEncodingError:
        return
    assert pp.parse(data)[0].tlvs.aws_vpce_id == ""


@pytest.mark.parametrize(
    "tlvs",
    [
        pp.TLVs(raw=((0x02, b"\xff"),)),  # AUTHORITY that is not UTF-8
        pp.TLVs(raw=((0x30, b"\xff"),)),  # NETNS that is not ASCII
        pp.TLVs(raw=((0x05, bytes(129)),)),  # UNIQUE_ID over 128 bytes
        pp.TLVs(raw=((0x20, b""),)),  # SSL shorter than its 5-byte head
        pp.TLVs(ssl=pp.SSLInfo(raw=((0x22, b"\xff"),))),  # SSL CN that is not UTF-8
        pp.TLVs(raw=((0x02, b"a"), (0x02, b"\xff"))),  # a second AUTHORITY that is not UTF-8
        pp.TLVs(ssl=pp.SSLInfo(raw=((0x21, b"a"), (0x21, b"\xff")))),  # a second bad VERSION
    ],
    ids=lambda tlvs: repr(tlvs)[:60],
)
def test_builder_refuses_raw_tlvs_its_parser_refuses(tlvs: pp.TLVs) -> None:
    try:
        data = pp.Header.proxy(*INET_PAIR, tlvs=tlvs).to_bytes()
    except pp.HeaderEncodingError:
        return
    pp.parse(data)


any_raw = st.lists(st.tuples(st.integers(0, 0xFF), st.binary(max_size=140)), max_size=3)
loose_ssl_infos = st.builds(
    pp.SSLInfo,
    client=st.integers(-1, 0x100),
    verify=st.integers(-1, 2**32),
    version=st.none() | st.text(max_size=8),
    cn=st.none() | st.text(max_size=8),
    client_cert=st.none() | st.binary(max_size=8),
    raw=st.lists(st.tuples(st.integers(0, 0xFF), st.binary(max_size=8)), max_size=3).map(tuple),
)
loose_tlv_sets = st.builds(
    pp.TLVs,
    alpn=st.none() | st.binary(max_size=8),
    authority=st.none() | st.text(max_size=8),
    unique_id=st.none() | st.binary(max_size=130),
    netns=st.none() | st.text(max_size=8),
    ssl=st.none() | loose_ssl_infos,
    aws_vpce_id=st.none() | st.text(max_size=8),
    azure_link_id=st.none() | st.integers(-1, 2**32),
    gcp_psc_id=st.none() | st.integers(-1, 2**64),
    raw=any_raw.map(tuple),
)


@SETTINGS
@given(tlvs=loose_tlv_sets, crc32c=st.booleans())
def test_what_the_builder_accepts_parses_back(tlvs: pp.TLVs, crc32c: bool) -> None:
    try:
        data = pp.Header.proxy(*INET_PAIR, tlvs=tlvs).to_bytes(crc32c=crc32c)
    except pp.HeaderEncodingError:
        return
    parsed = pp.parse(data)[0].tlvs
    # Every typed field that was set comes back; raw entries of known types may fill the others.
    for field in attrs.fields(pp.TLVs):
        if field.name not in ("crc32c", "ssl", "raw") and getattr(tlvs, field.name) is not None:
            assert getattr(parsed, field.name) == getattr(tlvs, field.name), field.name
    if tlvs.ssl is not None:
        assert parsed.ssl is not None
        for field in attrs.fields(pp.SSLInfo):
            value = getattr(tlvs.ssl, field.name)
            if field.name != "raw" and value is not None:
                assert getattr(parsed.ssl, field.name) == value, field.name
    assert unknown_view(parsed) == unknown_view(tlvs)
