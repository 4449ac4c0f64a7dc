"""TLS: the ClientHello's server_name (SNI) and ALPN extensions, across records and segments.

Theory of operation. :func:`probe_tls` is given the stream's first bytes. It walks the TLS
records (RFC 8446 section 5.1: ``type (22, handshake) | legacy_version (3, x) | length (2) |
fragment``), collects their fragments -- a ClientHello may be split over several records as
well as over several TCP segments -- and, once the handshake message is whole, parses it with
:func:`parse_client_hello_untrusted`, which the QUIC probe reuses on the CRYPTO frames' bytes.
Until then it answers how many bytes it needs (the end of the next record header or fragment),
so bytes trickling in are not parsed again each time. At most :data:`MAX_RECORDS` records and
:data:`MAX_HELLO` bytes of handshake message are read.

ClientHello (RFC 8446 section 4.1.2)::

    type (1) | length (3) | legacy_version (2) | random (32) | session_id <0..32> (1-byte length)
    | cipher_suites <2..2^16-2> | legacy_compression_methods <1..2^8-1> | extensions <8..2^16-1>

server_name (RFC 6066 section 3): ``server_name_list <1..2^16-1>`` of ``name_type (0: host_name)
| HostName <1..2^16-1>``; application_layer_protocol_negotiation (RFC 7301 section 3.1):
``protocol_name_list <2..2^16-1>`` of ``ProtocolName <1..2^8-1>``.
"""

from __future__ import annotations

import struct

from ._base import NO_MATCH, Malformed, Match, Reader, Result, Short

__all__ = ["MAX_HELLO", "parse_client_hello_untrusted", "probe_tls"]

#: A larger ClientHello is not routed (post-quantum key shares make them about 1.5 KiB).
MAX_HELLO = 16384
#: A ClientHello over more records than this is not routed.
MAX_RECORDS = 16

_HANDSHAKE = 22
_CLIENT_HELLO = 1
_SERVER_NAME = 0
_ALPN = 16
_HOST_NAME = 0
#: An extension's header: ``extension_type (2) | extension_data length (2)``.
_EXTENSION = struct.Struct("!HH")


def probe_tls(data: bytes, *, protocol: str = "tls") -> Result:
    """A ClientHello at the start of ``data``: its SNI and ALPN list.

    >>> probe_tls(b"\\x16\\x03\\x01")  # a record header's start: 5 bytes needed
    5
    """
    handshake = bytearray()
    offset = 0
    for _ in range(MAX_RECORDS):
        header = data[offset : offset + 5]
        if len(header) < 5:
            return NO_MATCH if not _header_prefix_ok(header) else offset + 5
        if not _header_prefix_ok(header):
            return NO_MATCH
        size = int.from_bytes(header[3:5], "big")
        if not 0 < size <= 16384:  # RFC 8446 section 5.1: no empty handshake fragment
            return NO_MATCH
        start = offset + 5
        offset = start + size
        if len(data) < offset:
            # What is there may already be wrong (not a ClientHello, too large).
            handshake += data[start:]
            if _bad_start(handshake):
                return NO_MATCH
            return offset
        handshake += data[start:offset]
        if len(handshake) >= 4:
            if _bad_start(handshake):
                return NO_MATCH
            if len(handshake) >= 4 + int.from_bytes(handshake[1:4], "big"):
                hello = parse_client_hello_untrusted(bytes(handshake), protocol=protocol)
                return NO_MATCH if isinstance(hello, int) else hello
    return NO_MATCH


def _header_prefix_ok(header: bytes) -> bool:
    expected = (_HANDSHAKE, 3)
    if any(byte != want for byte, want in zip(header[:2], expected, strict=False)):
        return False
    return len(header) < 3 or header[2] <= 4


def _bad_start(handshake: bytearray) -> bool:
    if handshake and handshake[0] != _CLIENT_HELLO:
        return True
    return len(handshake) >= 4 and int.from_bytes(handshake[1:4], "big") > MAX_HELLO - 4


def parse_client_hello_untrusted(handshake: bytes, *, protocol: str = "tls") -> Result:
    """The SNI and ALPN list of the ClientHello handshake message at the start of ``handshake``.

    ``NO_MATCH`` if it is not a well-formed ClientHello; an ``int`` (the size needed) if it is
    a prefix of one.
    """
    reader = Reader(handshake)
    try:
        if reader.u8() != _CLIENT_HELLO:
            return NO_MATCH
        size = reader.u24()
        if size > MAX_HELLO - 4:
            return NO_MATCH
        reader.take(size)  # whole, or Short
        return _client_hello(Reader(handshake, 4, 4 + size), protocol)
    except Short as short:
        return short.needed
    except Malformed:
        return NO_MATCH


def _client_hello(body: Reader, protocol: str) -> Result:
    try:
        if body.u8() != 3:  # legacy_version 3.x
            return NO_MATCH
        body.take(1 + 32)
        session_id = body.u8()
        if session_id > 32:
            return NO_MATCH
        body.take(session_id)
        suites = body.u16()
        if suites < 2 or suites % 2:
            return NO_MATCH
        body.take(suites)
        compression = body.u8()
        if compression < 1:
            return NO_MATCH
        body.take(compression)
        if body.left == 0:
            return Match(protocol)  # no extensions (SSL 3.0 style): no SNI, no ALPN
        extensions = body.sub(body.u16())
        if body.left:
            return NO_MATCH
        server_name: str | None = None
        alpns: tuple[bytes, ...] = ()
        seen: set[int] = set()
        # The extensions walked with plain offsets: a ClientHello has a dozen or more.
        data, at, end = extensions.data, extensions.offset, extensions.end
        while at < end:
            if at + 4 > end:
                return NO_MATCH
            kind, size = _EXTENSION.unpack_from(data, at)
            at += 4
            if at + size > end or kind in seen:  # RFC 8446 section 4.2: one of each
                return NO_MATCH
            seen.add(kind)
            if kind == _SERVER_NAME:
                server_name = _server_name(Reader(data, at, at + size))
            elif kind == _ALPN:
                alpns = _alpns(Reader(data, at, at + size))
            at += size
    except (Short, Malformed):
        # Inside a message of known length, running short is malformed too.
        return NO_MATCH
    return Match(protocol, server_name, alpns)


def _server_name(value: Reader) -> str | None:
    names = value.sub(value.u16())
    if value.left or not names.left:
        raise Malformed
    host: str | None = None
    while names.left:
        kind = names.u8()
        name = names.sub(names.u16())
        raw = name.take(name.left)
        if kind == _HOST_NAME:
            if host is not None or not raw:
                raise Malformed  # RFC 6066: one name per type
            host = _host_text(raw)
    return host


def _host_text(raw: bytes) -> str:
    """The host name in lower case without a final dot; ASCII (A-labels) only, no controls."""
    if any(byte <= 0x20 or byte >= 0x7F for byte in raw):
        raise Malformed
    text = raw.decode("ascii").lower().removesuffix(".")
    if not text:
        raise Malformed
    return text


def _alpns(value: Reader) -> tuple[bytes, ...]:
    names = value.sub(value.u16())
    if value.left or not names.left:
        raise Malformed
    alpns = []
    while names.left:
        size = names.u8()
        if size == 0:
            raise Malformed
        alpns.append(names.take(size))
    return tuple(alpns)
