"""The v1 (human-readable) header: ``PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\\r\\n``.

Theory of operation
-------------------
A v1 header is one line of at most 107 bytes, CRLF included (spec section 2.1). The whole line is
decoded by :func:`decode_line_untrusted` once its LF has arrived. The common TCP4 shape is matched
by a single regular expression; anything else goes down the slow path, which checks each field on
its own so that the error says exactly what is wrong.

While the line is incomplete, :func:`check_partial_untrusted` checks what has arrived so far, so
that a client which can no longer produce a valid line is refused at once instead of after the
header timeout. It is only ever called on fewer than 107 bytes, so calling it after every byte
keeps byte-at-a-time input linear.

We are strict where the spec says a receiver must not guess: single spaces, CRLF only, no leading
zeros in IPv4 octets or ports (they read as octal in some parsers), addresses of the declared
family. For ``UNKNOWN`` the spec says everything up to the CRLF is to be ignored, so we do.
"""

from __future__ import annotations

import re
from socket import AF_INET6, inet_ntop, inet_pton
from typing import Final

from .errors import InvalidHeader
from .model import _NO_TLVS as NO_TLVS
from .model import Command, Family, Header, Transport
from .model import _make_header as make_header

__all__ = [
    "MAX_LENGTH",
    "PREFIX",
    "check_partial_untrusted",
    "decode_line_untrusted",
    "decode_tcp4_untrusted",
]

#: Every v1 header starts with these six bytes (spec section 2.1).
PREFIX: Final[bytes] = b"PROXY "
#: The longest v1 line, CRLF included: ``PROXY UNKNOWN`` + two IPv6 addresses + two ports.
MAX_LENGTH: Final[int] = 107

_OCTET = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = _OCTET + rb"(?:\." + _OCTET + rb"){3}"
_PORT = rb"(?:0|[1-9][0-9]{0,4})"
# The fast path: one match for the whole common line.
_TCP4_LINE = re.compile(
    rb"PROXY TCP4 (" + _IPV4 + rb") (" + _IPV4 + rb") (" + _PORT + rb") (" + _PORT + rb")\r\n"
)
_IPV4_RE = re.compile(_IPV4)
_PORT_RE = re.compile(_PORT)
_IPV4_CHARS = frozenset(b"0123456789.")
_IPV6_CHARS = frozenset(b"0123456789abcdefABCDEF:.")
_DIGITS = frozenset(b"0123456789")
# The longest text of each field, for the checks on a partial line.
_MAX_IPV4 = len("255.255.255.255")
_MAX_IPV6 = len("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255")
_MAX_PORT = len("65535")

_PROTOCOLS = {b"TCP4": Family.INET, b"TCP6": Family.INET6}
_UNKNOWN = b"UNKNOWN"

_PROXY = Command.PROXY
_INET = Family.INET
_STREAM = Transport.STREAM
_UNKNOWN_HEADER = Header(1, Command.PROXY, Family.UNSPEC, Transport.UNSPEC, None, None)


def decode_tcp4_untrusted(data: bytes) -> tuple[Header, int] | None:
    """The hot path: a well-formed TCP4 line at the start of ``data``, and its size.

    Returns ``None`` for anything else, which then goes the slow way.
    """
    match = _TCP4_LINE.match(data)
    if match is None:
        return None
    src, dst, sport, dport = match.groups()
    source_port = int(sport)
    destination_port = int(dport)
    if source_port > 0xFFFF or destination_port > 0xFFFF:
        return None
    header = make_header(
        1,
        _PROXY,
        _INET,
        _STREAM,
        (src.decode("ascii"), source_port),
        (dst.decode("ascii"), destination_port),
        NO_TLVS,
    )
    return header, match.end()


def decode_line_untrusted(line: bytes) -> Header:
    """Decode a complete line: ``PROXY ...`` up to and including its LF.

    The caller has checked the prefix and that ``len(line) <= MAX_LENGTH``.
    """
    decoded = decode_tcp4_untrusted(line)
    if decoded is not None and decoded[1] == len(line):
        return decoded[0]
    return _decode_slow_untrusted(line)


def _decode_slow_untrusted(line: bytes) -> Header:
    # The same checks as on a partial line, so that an error reads the same whichever way the
    # bytes arrived; they check every field in full once the line has ended.
    check_partial_untrusted(line[:-1])
    if not line.endswith(b"\r\n"):
        raise InvalidHeader("v1: the line ends with LF alone; it must end with CRLF")
    body = line[len(PREFIX) : -2]
    if body == _UNKNOWN or body.startswith(_UNKNOWN + b" "):
        # Spec 2.1: with UNKNOWN the receiver must ignore anything before the CRLF.
        return _UNKNOWN_HEADER
    protocol, src, dst, sport, dport = body.split(b" ")
    family = _PROTOCOLS[protocol]
    return Header(
        1,
        Command.PROXY,
        family,
        Transport.STREAM,
        (_address_untrusted(src, family), _port_untrusted(sport)),
        (_address_untrusted(dst, family), _port_untrusted(dport)),
    )


def _check_protocol(field: bytes, *, complete: bool) -> Family:
    family = _PROTOCOLS.get(field)
    if family is not None:
        return family
    if not complete and any(p.startswith(field) for p in (*_PROTOCOLS, _UNKNOWN)):
        return Family.UNSPEC
    raise InvalidHeader(f"v1: unknown protocol {_show(field)} (expected TCP4, TCP6 or UNKNOWN)")


def _address_untrusted(field: bytes, family: Family) -> str:
    if family is Family.INET:
        if _IPV4_RE.fullmatch(field) is None:
            if _is_ipv4_with_leading_zero(field):
                raise InvalidHeader(f"v1: address {_show(field)} has a leading zero")
            raise InvalidHeader(f"v1: {_show(field)} is not an IPv4 address (protocol TCP4)")
        return field.decode("ascii")
    try:
        # inet_pton checks the syntax; inet_ntop gives the canonical text, the same as v2's.
        return inet_ntop(AF_INET6, inet_pton(AF_INET6, field.decode("ascii")))
    except (OSError, UnicodeDecodeError, ValueError):
        raise InvalidHeader(f"v1: {_show(field)} is not an IPv6 address (protocol TCP6)") from None


def _is_ipv4_with_leading_zero(field: bytes) -> bool:
    octets = field.split(b".")
    return (
        len(octets) == 4
        and all(o.isdigit() and len(o) <= 3 and int(o) <= 255 for o in octets)
        and any(len(o) > 1 and o.startswith(b"0") for o in octets)
    )


def _port_untrusted(field: bytes) -> int:
    if _PORT_RE.fullmatch(field) is None:
        if field.isdigit() and field.startswith(b"0"):
            raise InvalidHeader(f"v1: port {_show(field)} has a leading zero")
        raise InvalidHeader(f"v1: port {_show(field)} is not a number from 0 to 65535")
    port = int(field)
    if port > 0xFFFF:
        raise InvalidHeader(f"v1: port {_show(field)} is not a number from 0 to 65535")
    return port


def check_partial_untrusted(partial: bytes) -> None:
    """Refuse an incomplete line (no LF yet) that can no longer become a valid header.

    ``partial`` starts with :data:`PREFIX` and is shorter than :data:`MAX_LENGTH`. Once it ends
    with CR, every field is checked in full.
    """
    body = partial[len(PREFIX) :]
    cr = body.find(b"\r")
    if cr >= 0 and cr != len(body) - 1:
        raise InvalidHeader("v1: CR must be followed by LF")
    if body.startswith(_UNKNOWN):
        if len(body) > len(_UNKNOWN) and body[len(_UNKNOWN)] not in b" \r":
            raise InvalidHeader(f"v1: unknown protocol {_show(body.split(b' ')[0])}")
        return
    ended = cr >= 0
    if ended:
        body = body[:cr]
    fields = body.split(b" ")
    if b"" in fields[:-1]:
        raise InvalidHeader("v1: fields must be separated by single spaces")
    if len(fields) > 5:
        raise InvalidHeader("v1: too many fields")
    family = _check_protocol(fields[0], complete=len(fields) > 1 or ended)
    last = len(fields) - 1
    for index in range(1, len(fields)):
        field = fields[index]
        if index < last or ended:
            if index <= 2:
                _address_untrusted(field, family)
            else:
                _port_untrusted(field)
        else:
            _check_partial_field(field, index, family)
    if ended and len(fields) < 5:
        raise InvalidHeader("v1: the line ends before its last field")


def _check_partial_field(field: bytes, index: int, family: Family) -> None:
    """Check the field being received: its characters and its length so far."""
    if index <= 2:
        if family is Family.INET:
            _check_partial_ipv4(field)
        elif len(field) > _MAX_IPV6 or not _IPV6_CHARS.issuperset(field):
            raise InvalidHeader(f"v1: {_show(field)} is not an IPv6 address (protocol TCP6)")
        return
    if len(field) > 1 and field.startswith(b"0"):
        raise InvalidHeader(f"v1: port {_show(field)} has a leading zero")
    if len(field) > _MAX_PORT or not _DIGITS.issuperset(field) or int(field or b"0") > 0xFFFF:
        raise InvalidHeader(f"v1: port {_show(field)} is not a number from 0 to 65535")


def _check_partial_ipv4(field: bytes) -> None:
    """Each octet so far: at most 255, no leading zero; at most four of them."""
    octets = field.split(b".")
    if len(field) > _MAX_IPV4 or not _IPV4_CHARS.issuperset(field) or len(octets) > 4:
        raise InvalidHeader(f"v1: {_show(field)} is not an IPv4 address (protocol TCP4)")
    for index, octet in enumerate(octets):
        if len(octet) > 1 and octet.startswith(b"0"):
            raise InvalidHeader(f"v1: address {_show(field)} has a leading zero")
        complete = index < len(octets) - 1
        if (complete and not octet) or len(octet) > 3 or int(octet or b"0") > 255:
            raise InvalidHeader(f"v1: {_show(field)} is not an IPv4 address (protocol TCP4)")


def _show(field: bytes) -> str:
    """Quote a field from the wire for an error message, short and printable."""
    text = field[:48].decode("ascii", "backslashreplace")
    return repr(text + ("..." if len(field) > 48 else ""))
