"""Test helpers: headers written byte by byte from the spec, and the h11-style ``tr()`` checks.

The bytes here are assembled with ``struct`` straight from the spec's layout, never with our
builder, so a mistake shared by the parser and the builder cannot hide.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable

import pytest

import proxyproto as pp

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
TRAILING = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n\x00\r\n\r\nPROXY "


def v2(
    version_command: int, family_transport: int, body: bytes, length: int | None = None
) -> bytes:
    """A v2 header: signature, the two bytes, the length (``len(body)`` unless given), body."""
    size = len(body) if length is None else length
    return SIG + struct.pack("!BBH", version_command, family_transport, size) + body


def inet(source: str, destination: str, source_port: int, destination_port: int) -> bytes:
    return (
        socket.inet_aton(source)
        + socket.inet_aton(destination)
        + struct.pack("!HH", source_port, destination_port)
    )


def inet6(source: str, destination: str, source_port: int, destination_port: int) -> bytes:
    return (
        socket.inet_pton(socket.AF_INET6, source)
        + socket.inet_pton(socket.AF_INET6, destination)
        + struct.pack("!HH", source_port, destination_port)
    )


def unix(source: bytes, destination: bytes) -> bytes:
    return source.ljust(108, b"\x00") + destination.ljust(108, b"\x00")


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


def tr(
    data: bytes, *, trailing: bytes = TRAILING, prefix_ends: Iterable[int] | None = None
) -> pp.Header:
    """Parse ``data`` (exactly one header) every way we can; check they agree; return it.

    Whole, with ``trailing`` data, byte by byte through ``HeaderParser`` (``NEED_DATA`` before
    the last byte, the header at it, trailing data kept intact), and every strict prefix (or
    those ending at ``prefix_ends``) is ``IncompleteHeader`` for ``parse``.
    """
    header, consumed = pp.parse(data)
    assert consumed == len(data)
    assert pp.parse(data + trailing) == (header, len(data))
    assert pp.parse(bytearray(data)) == (header, len(data))
    assert pp.parse(bytearray(data + trailing)) == (header, len(data))
    assert pp.parse(memoryview(data + trailing)) == (header, len(data))

    parser = pp.HeaderParser()
    for i in range(len(data)):
        assert parser.next_event() is pp.NEED_DATA, f"complete after {i} of {len(data)} bytes"
        parser.receive_data(data[i : i + 1])
    assert parser.next_event() == header
    assert parser.header_size == len(data)
    for i in range(len(trailing)):
        parser.receive_data(trailing[i : i + 1])
    assert parser.next_event() == header
    assert parser.trailing_data == trailing

    # Header and application bytes in one segment, as a proxy sends them.
    parser = pp.HeaderParser()
    parser.receive_data(data + trailing)
    assert parser.next_event() == header
    assert parser.trailing_data == trailing

    for end in range(len(data)) if prefix_ends is None else prefix_ends:
        with pytest.raises(pp.IncompleteHeader):
            pp.parse(data[:end])
    return header


def rejected(data: bytes, message: str, *, at: int | None = None) -> pp.InvalidHeader:
    """Check that ``data`` is refused, with ``message`` in the error, everywhere.

    ``at`` is the number of bytes after which the incremental parser must already refuse (the
    "reject early" rule); by default, only once every byte has arrived.
    """
    with pytest.raises(pp.InvalidHeader) as info:
        pp.parse(data + TRAILING)
    assert message in str(info.value)
    with pytest.raises(pp.InvalidHeader, match=None) as whole:
        pp.parse(data)
    assert message in str(whole.value)

    limit = len(data) if at is None else at
    parser = pp.HeaderParser()
    for i in range(limit - 1):
        parser.receive_data(data[i : i + 1])
        assert parser.next_event() is pp.NEED_DATA, f"refused after {i + 1} bytes, not {limit}"
    parser.receive_data(data[limit - 1 : limit])
    with pytest.raises(pp.InvalidHeader) as early:
        parser.next_event()
    assert message in str(early.value)
    # The error is sticky: the parser never changes its mind.
    with pytest.raises(pp.InvalidHeader):
        parser.next_event()
    return info.value
