"""The v2 (binary) header (spec section 2.2).

Theory of operation
-------------------
A v2 header is a 16-byte fixed part followed by ``length`` bytes: the address block of the
declared family, then TLVs up to the end::

    offset  size  field
    0       12    signature  \\r\\n\\r\\n\\0\\r\\nQUIT\\n
    12      1     version (high nibble, must be 2) and command (low nibble: 0 LOCAL, 1 PROXY)
    13      1     family (high nibble) and transport (low nibble)
    14      2     length of what follows, big-endian
    16      ...   address block: 12 bytes INET, 36 INET6, 216 UNIX, none UNSPEC; then TLVs

:func:`check_fixed_untrusted` checks bytes 12 to 15 as soon as each one arrives, so that a bad
version, command or family is refused at once, and returns the total length once it is known; the
incremental parser checks that length against its cap before waiting for the rest.
:func:`decode_untrusted` decodes a complete header. The length is honoured even for LOCAL:
whatever follows it belongs to the application.

How we read LOCAL (spec 2.2: the receiver "must accept this connection as valid [...] and discard
the protocol block including the family which is ignored", and "must not assume zero is presented
for LOCAL connections"): a LOCAL header is accepted whatever its family/transport byte, even one
the spec does not define, and whatever its length; only the length bounds it. Where its TLVs start
the spec does not say, so HAProxy's receiver decides (``conn_recv_proxy`` in src/connection.c,
since commit 8b72270e9, "parse PROXY TLV for LOCAL mode", 2024): with the family ignored, there
is no address block to skip, so every byte after the 16-byte fixed part is read as TLVs, by the
same rules as PROXY's. A zero-filled address block reads as type-0 TLVs of length 0 (kept in
``raw``); bytes that do not read as TLVs fail the header, as they do in HAProxy. A LOCAL header
carries no address: source and destination are ``None``, and a family/transport byte the spec
does not define comes out as UNSPEC.
"""

from __future__ import annotations

import struct
from socket import AF_INET6, inet_ntoa, inet_ntop
from typing import Final

from .errors import InvalidHeader
from .model import _NO_TLVS as NO_TLVS
from .model import Address, Command, Family, Header, Transport
from .model import _make_header as make_header
from .tlv import decode_tlvs_untrusted

__all__ = [
    "FIXED_SIZE",
    "SIGNATURE",
    "check_fixed_untrusted",
    "decode_untrusted",
]

#: The 12-byte v2 signature (spec section 2.2).
SIGNATURE: Final[bytes] = b"\r\n\r\n\x00\r\nQUIT\n"
#: Signature, version/command, family/transport and length.
FIXED_SIZE: Final[int] = 16
#: The 13th byte: version 2 in the high nibble, the command in the low one.
_COMMANDS = {0x20: Command.LOCAL, 0x21: Command.PROXY}
#: The 14th byte: family and transport, and the size of the address block that follows.
_FAMILIES = {
    0x00: (Family.UNSPEC, Transport.UNSPEC, 0),
    0x11: (Family.INET, Transport.STREAM, 12),
    0x12: (Family.INET, Transport.DGRAM, 12),
    0x21: (Family.INET6, Transport.STREAM, 36),
    0x22: (Family.INET6, Transport.DGRAM, 36),
    0x31: (Family.UNIX, Transport.STREAM, 216),
    0x32: (Family.UNIX, Transport.DGRAM, 216),
}
#: What a LOCAL header with a family/transport byte the spec does not define says.
_UNDEFINED = (Family.UNSPEC, Transport.UNSPEC, 0)
# version/command (u8), family/transport (u8), length (u16 big-endian), at offset 12
_FIXED_TAIL = struct.Struct("!BBH")
# source address (4), destination address (4), source port, destination port (u16 big-endian)
_INET_BLOCK = struct.Struct("!4s4sHH")
# source address (16), destination address (16), source port, destination port
_INET6_BLOCK = struct.Struct("!16s16sHH")
# source path (108), destination path (108), NUL-padded
_UNIX_BLOCK = struct.Struct("!108s108s")
# The whole fixed part and an INET block: signature, version/command, family/transport, length,
# source, destination, source port, destination port.
_INET_HEADER = struct.Struct("!12sBBH4s4sHH")
# Module constants: an enum member looked up on its class costs more than a global.
_LOCAL = Command.LOCAL
_PROXY = Command.PROXY
_STREAM = Transport.STREAM
_UNSPEC = Family.UNSPEC
_INET = Family.INET
_INET6 = Family.INET6


def check_fixed_untrusted(data: bytes | bytearray) -> int | None:
    """Check the bytes after the signature as far as they have arrived.

    ``data`` starts with the full signature. Returns the total header size once the length field
    has arrived, ``None`` before.
    """
    received = len(data)
    if received <= 12:
        return None
    version_command = data[12]
    if version_command not in _COMMANDS:
        if version_command >> 4 != 2:
            raise InvalidHeader(
                f"v2: version {version_command >> 4} (byte 13 is 0x{version_command:02X}), "
                "expected 2"
            )
        raise InvalidHeader(
            f"v2: command {version_command & 0xF} (byte 13 is 0x{version_command:02X}) is "
            "neither LOCAL (0) nor PROXY (1)"
        )
    if received <= 13:
        return None
    if version_command == 0x20:
        # LOCAL: the family byte is ignored and only the length bounds the header (see above).
        if received < FIXED_SIZE:
            return None
        return FIXED_SIZE + ((data[14] << 8) | data[15])
    family_transport = data[13]
    shape = _FAMILIES.get(family_transport)
    if shape is None:
        raise InvalidHeader(
            f"v2: family/transport byte 0x{family_transport:02X} is not one of 00 11 12 21 22 31 32"
        )
    if received < FIXED_SIZE:
        return None
    length = (data[14] << 8) | data[15]
    if length < shape[2]:
        raise InvalidHeader(
            f"v2: length {length} is too short for the {shape[0].name} address block "
            f"({shape[2]} bytes)"
        )
    return FIXED_SIZE + length


def decode_untrusted(data: bytes) -> tuple[Header, int] | None:
    """Decode the complete v2 header at the start of ``data``; return it and its size.

    Returns ``None`` when the header is incomplete or its fixed part is invalid, for the caller
    to find out which with :func:`check_fixed_untrusted`.
    """
    if len(data) >= _INET_HEADER.size:
        # The hot path: TCP over IPv4, by far the most common header, in a single unpack.
        signature, version_command, family_transport, length, src, dst, source_port, dest_port = (
            _INET_HEADER.unpack_from(data)
        )
        if (
            version_command == 0x21
            and family_transport == 0x11
            and signature == SIGNATURE
            and length >= _INET_BLOCK.size
        ):
            total = FIXED_SIZE + length
            if total == _INET_HEADER.size:
                tlvs = NO_TLVS
            elif len(data) >= total:
                tlvs = decode_tlvs_untrusted(data, _INET_HEADER.size, total)
            else:
                return None
            source_address = (inet_ntoa(src), source_port)
            destination_address = (inet_ntoa(dst), dest_port)
            header = make_header(
                2, _PROXY, _INET, _STREAM, source_address, destination_address, tlvs
            )
            return header, total
    if len(data) < FIXED_SIZE or not data.startswith(SIGNATURE):
        return None
    version_command, family_transport, length = _FIXED_TAIL.unpack_from(data, 12)
    command = _COMMANDS.get(version_command)
    total = FIXED_SIZE + length
    if command is None or len(data) < total:
        return None
    if command is _LOCAL:
        # Spec 2.2: the family is ignored and the TLVs start right after the fixed part, as
        # HAProxy reads them (see the module's docstring).
        family, transport, _ = _FAMILIES.get(family_transport, _UNDEFINED)
        tlvs = decode_tlvs_untrusted(data, FIXED_SIZE, total) if length else NO_TLVS
        return make_header(2, command, family, transport, None, None, tlvs), total
    shape = _FAMILIES.get(family_transport)
    if shape is None or length < shape[2]:
        return None
    family, transport, address_size = shape
    tlv_start = FIXED_SIZE + address_size
    tlvs = decode_tlvs_untrusted(data, tlv_start, total) if total > tlv_start else NO_TLVS
    if family is _UNSPEC:
        # Spec 2.2: UNSPEC carries no address the receiver may use.
        return make_header(2, command, family, transport, None, None, tlvs), total
    if family is _INET:
        src, dst, source_port, dest_port = _INET_BLOCK.unpack_from(data, FIXED_SIZE)
        source: Address = (inet_ntoa(src), source_port)
        destination: Address = (inet_ntoa(dst), dest_port)
    elif family is _INET6:
        src, dst, source_port, dest_port = _INET6_BLOCK.unpack_from(data, FIXED_SIZE)
        source = (inet_ntop(AF_INET6, src), source_port)
        destination = (inet_ntop(AF_INET6, dst), dest_port)
    else:
        src, dst = _UNIX_BLOCK.unpack_from(data, FIXED_SIZE)
        source = _unix_path(src)
        destination = _unix_path(dst)
    return make_header(2, command, family, transport, source, destination, tlvs), total


def _unix_path(padded: bytes) -> str:
    # Spec 2.2 gives a UNIX address as 108 NUL-padded bytes, read as sun_path is: a pathname
    # (first byte not NUL) ends at its first NUL, whatever follows; a Linux abstract name (leading
    # NUL) may hold NULs, so only its trailing NUL padding goes. Paths are bytes to the kernel;
    # surrogateescape keeps any of them, as os.fsdecode does.
    path = padded.rstrip(b"\x00") if padded[:1] == b"\x00" else padded.split(b"\x00", 1)[0]
    return path.decode("utf-8", "surrogateescape")
