"""Parsing: the one-shot :func:`parse`, the incremental :class:`HeaderParser`, datagrams.

Theory of operation
-------------------
The first byte decides the version: ``P`` can only start v1 (``PROXY ``), ``\\r`` only v2. So we
never wait for 16 bytes to tell them apart (``PROXY UNKNOWN\\r\\n`` is 15 bytes), and a byte that
starts neither signature is refused at once with :class:`InvalidSignature`.

:class:`HeaderParser` is sans-IO, in the manner of h11: ``receive_data()`` appends to a buffer,
``next_event()`` looks at it and returns the :class:`Header` or :data:`NEED_DATA`. It never raises
for "incomplete" and never blocks. Each call does work proportional to what is new, so feeding a
header one byte at a time stays linear:

- while in the signature, at most 12 bytes are compared;
- v2: bytes 12 to 15 are checked as they arrive; then only ``len(buffer) >= total`` is compared
  until the whole header is there, and it is decoded once;
- v1: the search for LF starts where the previous one stopped; the partial line (< 107 bytes) is
  checked for early rejection.

``max_header_size`` is checked while waiting: a v2 length over the cap is refused as soon as the
length field arrives, and a v1 line is refused when ``min(107, max_header_size)`` bytes have come
without an LF. Bytes after the header are never touched: they are ``trailing_data``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Final, Literal

from . import v1, v2
from .errors import IncompleteHeader, InvalidHeader, InvalidSignature, ProxyProtocolError
from .model import Command, Header, Transport

__all__ = ["MAX_HEADER_SIZE", "NEED_DATA", "HeaderParser", "NeedData", "parse", "parse_datagram"]

#: The largest header the spec allows: a v2 fixed part and a 16-bit length.
MAX_HEADER_SIZE: Final = v2.FIXED_SIZE + 0xFFFF

_V1_START = v1.PREFIX[0]
_V2_START = v2.SIGNATURE[0]
_V2_FIRST = v2.SIGNATURE[:1]


class NeedData(enum.Enum):
    """The type of :data:`NEED_DATA`."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by :meth:`HeaderParser.next_event` until the whole header has arrived.
NEED_DATA: Final = NeedData.NEED_DATA


class VersionNotAccepted(InvalidSignature):
    """A whole signature of a version the parser was told not to recognise: no header for the
    policy (as documented for ``versions``), but the log says what came."""


def _signature_untrusted(data: bytes | bytearray, versions: frozenset[int]) -> int | None:
    """The version whose signature ``data`` starts with; ``None`` while it is still a prefix."""
    first = data[0]
    if first == _V2_START and 2 in versions:
        signature = v2.SIGNATURE
    elif first == _V1_START and 1 in versions:
        signature = v1.PREFIX
    else:
        # A whole signature of the version not accepted says what came; anything shorter may
        # be the start of something else ("P" of "PUT"), refused at once all the same.
        for version, other in ((1, v1.PREFIX), (2, v2.SIGNATURE)):
            if version not in versions and data.startswith(other):
                (only,) = versions
                raise VersionNotAccepted(f"a PROXY v{version} header, but only v{only} is accepted")
        accepted = " or ".join(
            s
            for v, s in ((1, "v1 ('PROXY ')"), (2, "v2 (\\r\\n\\r\\n\\0\\r\\nQUIT\\n)"))
            if v in versions
        )
        raise InvalidSignature(f"byte 0x{first:02X} cannot start a {accepted} signature")
    prefix = bytes(data[: len(signature)])
    if not signature.startswith(prefix):
        at = next(i for i, (a, b) in enumerate(zip(prefix, signature, strict=False)) if a != b)
        version = 2 if first == _V2_START else 1
        raise InvalidSignature(
            f"byte {at + 1} (0x{prefix[at]:02X}) does not match the v{version} signature"
        )
    if len(prefix) < len(signature):
        return None
    return 2 if first == _V2_START else 1


def _check_versions(versions: Iterable[int]) -> frozenset[int]:
    accepted = frozenset(versions)
    if not accepted or not accepted <= {1, 2}:
        raise ValueError(f"versions must be a non-empty subset of {{1, 2}}, not {versions!r}")
    return accepted


class HeaderParser:
    """An incremental, sans-IO parser for one PROXY protocol header.

    Feed it bytes with :meth:`receive_data` (``b""`` means the peer closed), then call
    :meth:`next_event`: it returns :data:`NEED_DATA` until the header is complete, then the
    :class:`Header`. Bytes received after the header are in :attr:`trailing_data`.

    >>> parser = HeaderParser()
    >>> parser.receive_data(b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\\r")
    >>> parser.next_event()
    NEED_DATA
    >>> parser.receive_data(b"\\nGET / HTTP/1.1\\r\\n")
    >>> parser.next_event().source
    ('192.0.2.1', 56324)
    >>> parser.trailing_data
    b'GET / HTTP/1.1\\r\\n'

    :param max_header_size: refuse a header longer than this many bytes (at least 16). The default
        is the largest the spec allows.
    :param versions: which versions to recognise. A header of another version is refused with
        :class:`InvalidSignature`, as if no header had been sent; its message names the version
        that came when its whole signature did.
    :raises InvalidHeader: from :meth:`next_event`, as soon as the bytes cannot be a valid header
        (:class:`InvalidSignature` when they do not even start like one); the same exception is
        raised again on every later call.
    """

    __slots__ = (
        "_buffer",
        "_closed",
        "_error",
        "_header",
        "_max_header_size",
        "_searched",
        "_size",
        "_total",
        "_version",
        "_versions",
    )

    def __init__(
        self, *, max_header_size: int = MAX_HEADER_SIZE, versions: Iterable[int] = (1, 2)
    ) -> None:
        if max_header_size < v2.FIXED_SIZE:
            raise ValueError(f"max_header_size must be at least 16, not {max_header_size}")
        self._max_header_size = max_header_size
        self._versions = _check_versions(versions)
        # The first bytes as they came (a whole header is parsed from them without a copy), then
        # a bytearray once more come.
        self._buffer: bytes | bytearray = b""
        self._closed = False
        self._version: int | None = None
        self._total: int | None = None
        self._searched = 0
        self._header: Header | None = None
        self._size = 0
        self._error: ProxyProtocolError | None = None

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes received from the peer; ``b""`` says the peer closed (EOF)."""
        if self._closed:
            if data:
                raise RuntimeError("received data after EOF")
            return
        if not data:
            self._closed = True
        elif not self._buffer:
            self._buffer = data if type(data) is bytes else bytes(data)
        elif type(self._buffer) is bytes:
            self._buffer = bytearray(self._buffer) + data
        else:
            self._buffer += data

    @property
    def header(self) -> Header | None:
        """The header once :meth:`next_event` has returned it, else ``None``."""
        return self._header

    @property
    def version(self) -> int | None:
        """The version whose whole signature has arrived (1 or 2); ``None`` before.

        Once it is set, the peer is sending a header: an error after that is a broken header,
        not a peer that sent none.
        """
        return self._version

    @property
    def header_size(self) -> int:
        """How many bytes the header took on the wire (0 until it is complete)."""
        return self._size

    @property
    def trailing_data(self) -> bytes:
        """Bytes received after the header: they belong to the application.

        Before the header is complete, every byte received so far (useful when no header was
        sent, e.g. after :class:`InvalidSignature` under a policy that allows direct clients).
        """
        return bytes(self._buffer[self._size :])

    @property
    def closed(self) -> bool:
        """Whether ``receive_data(b"")`` (EOF) has been called."""
        return self._closed

    def next_event(self) -> Header | Literal[NeedData.NEED_DATA]:
        """The header if it is complete, else :data:`NEED_DATA`.

        :raises InvalidHeader: the bytes cannot be (the start of) a valid header, or the peer
            closed before the header was complete.
        """
        if self._header is not None:
            return self._header
        if self._error is not None:
            raise self._error
        try:
            return self._next_event()
        except ProxyProtocolError as error:
            self._error = error
            raise

    def _next_event(self) -> Header | Literal[NeedData.NEED_DATA]:
        buffer = self._buffer
        if self._version is None:
            if not buffer:
                if self._closed:
                    raise InvalidSignature("the peer closed before sending any byte")
                return NEED_DATA
            if len(buffer) >= v2.FIXED_SIZE:
                # What a proxy sends: the whole header at once, read in one go. Anything else
                # goes the careful way below, which says what is wrong.
                whole = parse_whole(buffer, self._max_header_size, self._versions)
                if whole is not None:
                    self._version = whole[0].version
                    return self._complete(*whole)
            self._version = _signature_untrusted(buffer, self._versions)
            if self._version is None:
                if self._closed:
                    raise InvalidSignature(
                        f"the peer closed after {len(buffer)} byte(s), inside the signature"
                    )
                return NEED_DATA
        if self._version == 2:
            return self._next_v2(buffer)
        return self._next_v1(buffer)

    def _next_v2(self, buffer: bytes | bytearray) -> Header | Literal[NeedData.NEED_DATA]:
        total = self._total
        if total is None:
            total = v2.check_fixed_untrusted(buffer)
            if total is None:
                self._check_open(buffer, v2.FIXED_SIZE)
                return NEED_DATA
            if total > self._max_header_size:
                raise InvalidHeader(
                    f"v2: the header is {total} bytes, more than max_header_size "
                    f"({self._max_header_size})"
                )
            self._total = total
        if len(buffer) < total:
            self._check_open(buffer, total)
            return NEED_DATA
        decoded = v2.decode_untrusted(bytes(buffer[:total]))
        assert decoded is not None, "check_fixed_untrusted accepted these bytes"
        return self._complete(*decoded)

    def _next_v1(self, buffer: bytes | bytearray) -> Header | Literal[NeedData.NEED_DATA]:
        limit = min(v1.MAX_LENGTH, self._max_header_size)
        end = buffer.find(b"\n", self._searched, limit)
        if end < 0:
            self._searched = min(len(buffer), limit)
            if len(buffer) >= limit:
                raise InvalidHeader(f"v1: no CRLF within the first {limit} bytes")
            v1.check_partial_untrusted(bytes(buffer))
            self._check_open(buffer, None)
            return NEED_DATA
        return self._complete(v1.decode_line_untrusted(bytes(buffer[: end + 1])), end + 1)

    def _check_open(self, buffer: bytes | bytearray, needed: int | None) -> None:
        if self._closed:
            of = f" of {needed}" if needed is not None else ""
            raise InvalidHeader(
                f"v{self._version}: the peer closed after {len(buffer)}{of} bytes of the header"
            )

    def _complete(self, header: Header, size: int) -> Header:
        self._header = header
        self._size = size
        return header


def parse(data: bytes | bytearray | memoryview) -> tuple[Header, int]:
    """Parse the header at the start of ``data``; return it and how many bytes it took.

    >>> header, consumed = parse(b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\\r\\nGET /")
    >>> header.source, header.destination, consumed
    (('192.0.2.1', 56324), ('198.51.100.7', 443), 45)

    :raises IncompleteHeader: ``data`` is a valid start of a header, more bytes are needed.
    :raises InvalidHeader: ``data`` cannot be (the start of) a valid header;
        :class:`InvalidSignature` when it does not start like one at all.
    """
    if type(data) is not bytes:
        data = bytes(data[:MAX_HEADER_SIZE])
    if data.startswith(_V2_FIRST):
        decoded = v2.decode_untrusted(data)
        if decoded is not None:
            return decoded
        if data.startswith(v2.SIGNATURE):
            # Incomplete or invalid: this says which.
            total = v2.check_fixed_untrusted(data)
            raise IncompleteHeader(f"v2: {len(data)} of {total or v2.FIXED_SIZE} bytes")
    else:
        decoded = v1.decode_tcp4_untrusted(data)
        if decoded is not None:
            return decoded
    if data.startswith(v1.PREFIX):
        end = data.find(b"\n", 0, v1.MAX_LENGTH)
        if end >= 0:
            return v1.decode_line_untrusted(data[: end + 1]), end + 1
        if len(data) >= v1.MAX_LENGTH:
            raise InvalidHeader(f"v1: no CRLF within the first {v1.MAX_LENGTH} bytes")
        v1.check_partial_untrusted(data)
        raise IncompleteHeader(f"v1: {len(data)} bytes and no CRLF yet")
    if not data:
        raise IncompleteHeader("no data")
    _signature_untrusted(data, frozenset((1, 2)))
    raise IncompleteHeader(f"{len(data)} bytes of a signature")


def parse_whole(
    data: bytes | bytearray, max_header_size: int, versions: frozenset[int]
) -> tuple[Header, int] | None:
    """The header that ``data`` starts with and how many bytes it took, if it is whole, valid,
    at most ``max_header_size`` bytes and of one of ``versions``; else ``None`` (a
    :class:`HeaderParser` then says what is wrong, or waits for more)."""
    try:
        header, size = parse(data)
    except ProxyProtocolError:
        return None
    if size > max_header_size or header.version not in versions:
        return None
    return header, size


def parse_datagram(datagram: bytes | bytearray | memoryview) -> tuple[Header, bytes]:
    """Parse one datagram that starts with a v2 header; return the header and the payload.

    Over UDP the header and its payload travel in one datagram, and every datagram carries its
    own header (spec 2.2): an incomplete header is invalid, not a reason to wait.

    :raises InvalidHeader: no valid v2 header, a v1 header (it can only describe TCP), or a
        PROXY header for a stream transport.
    """
    data = bytes(datagram)
    try:
        header, consumed = parse(data)
    except IncompleteHeader as error:
        raise InvalidHeader(f"datagram: truncated header ({error})") from None
    if header.version != 2:
        raise InvalidHeader("datagram: v1 headers describe TCP only; UDP needs v2")
    if header.command is Command.PROXY and header.transport is Transport.STREAM:
        raise InvalidHeader("datagram: the header declares a stream transport, not DGRAM")
    return header, data[consumed:]
