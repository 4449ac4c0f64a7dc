"""What every probe answers, and the bounded reader the probes parse untrusted bytes with.

A probe is a function of the bytes received so far (a prefix of the stream, or one datagram)
that answers :class:`Match`, :data:`NO_MATCH`, or an ``int``: how many bytes it needs in total
before its answer can change (a hint, so that a stream fed byte by byte is not parsed again on
every byte). It never raises for malformed input: bytes that do not parse are ``NO_MATCH``.
"""

from __future__ import annotations

import enum
import struct
from typing import Final, Literal

import attrs

__all__ = ["NEED_MORE", "NO_MATCH", "Match", "Result", "Verdict"]


class Verdict(enum.Enum):
    """The answers of a probe that are not a :class:`Match`."""

    #: The bytes so far are a valid prefix: more are needed to decide.
    NEED_MORE = "need more"
    #: The bytes are not this protocol (or no probed protocol, from a :class:`Prober`).
    NO_MATCH = "no match"


NEED_MORE: Final = Verdict.NEED_MORE
NO_MATCH: Final = Verdict.NO_MATCH


@attrs.frozen
class Match:
    """The protocol recognised, with what the first bytes say about the connection.

    ``server_name`` is the TLS / QUIC ClientHello's SNI (lower case, no trailing dot);
    ``alpns`` the protocols the client offers, in its order of preference.
    """

    protocol: str
    server_name: str | None = None
    alpns: tuple[bytes, ...] = ()


#: A probe function's answer: a match, no match, or the total size it needs first.
Result = Match | Literal[Verdict.NO_MATCH] | int


class Malformed(Exception):
    """Raised by :class:`Reader` on bytes that do not parse; probes turn it into NO_MATCH."""


class Short(Exception):
    """Raised by :class:`Reader` when the bytes end early: ``needed`` is the size that suffices."""

    def __init__(self, needed: int) -> None:
        self.needed = needed


_U16 = struct.Struct("!H")


class Reader:
    """Reads fields from ``data`` at ``offset``; raises :class:`Short` past the end."""

    __slots__ = ("data", "end", "offset")

    def __init__(self, data: bytes, offset: int = 0, end: int | None = None) -> None:
        self.data = data
        self.offset = offset
        self.end = len(data) if end is None else end

    def take(self, size: int) -> bytes:
        stop = self.offset + size
        if stop > self.end:
            raise Short(stop)
        chunk = self.data[self.offset : stop]
        self.offset = stop
        return chunk

    def u8(self) -> int:
        if self.offset >= self.end:
            raise Short(self.offset + 1)
        value = self.data[self.offset]
        self.offset += 1
        return value

    def u16(self) -> int:
        value: int = _U16.unpack(self.take(2))[0]
        return value

    def u24(self) -> int:
        return int.from_bytes(self.take(3), "big")

    def varint(self) -> int:
        """A QUIC variable-length integer (RFC 9000 section 16)."""
        first = self.u8()
        size = 1 << (first >> 6)
        rest = self.take(size - 1)
        return int.from_bytes(bytes([first & 0x3F]) + rest, "big")

    def sub(self, size: int) -> Reader:
        """A reader of the next ``size`` bytes, which are skipped here; short raises Malformed.

        For a length-prefixed block inside a block already complete.
        """
        stop = self.offset + size
        if stop > self.end:
            raise Malformed
        inner = Reader(self.data, self.offset, stop)
        self.offset = stop
        return inner

    @property
    def left(self) -> int:
        return self.end - self.offset
