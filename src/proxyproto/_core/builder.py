"""Building headers: :meth:`Header.proxy` and :meth:`Header.to_bytes`.

The parser's model carries no validators (it is built on the hot path), so everything that could
make a corrupt or unencodable header is checked here, and refused with
:class:`HeaderEncodingError`, a :class:`ValueError`. Encoding tries the straight path first and,
when the standard library refuses a value, finds out which one to say so precisely.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from socket import AF_INET, AF_INET6, inet_ntop, inet_pton

from . import tlv, v2
from .errors import HeaderEncodingError
from .model import _NO_TLVS, Command, Family, Header, TLVs, TLVType, Transport, _make_header

__all__ = ["encode", "proxy_header"]

#: Spec 2.2: a UNIX address is 108 bytes, NUL-padded.
UNIX_PATH_SIZE = 108
# version/command (u8), family/transport (u8), length (u16 big-endian)
_FIXED_TAIL = struct.Struct("!BBH")
# source address, destination address, source port, destination port (spec 2.2)
_INET_BLOCK = struct.Struct("!4s4sHH")
_INET6_BLOCK = struct.Struct("!16s16sHH")
# CRC32C TLV: type, length 4, then the checksum (u32 big-endian)
_CRC32C_TLV = struct.Struct("!BHI")
_TLV_HEAD_SIZE = 3
_V1_PROTOCOLS = {Family.INET: "TCP4", Family.INET6: "TCP6"}


def proxy_header(
    cls: type[Header],
    source: tuple[str, int] | str,
    destination: tuple[str, int] | str,
    version: int,
    transport: Transport,
    tlvs: TLVs | Mapping[str, object] | None,
) -> Header:
    if type(version) is not int or version not in (1, 2):
        raise HeaderEncodingError(f"version must be 1 or 2, not {version!r}")
    if tlvs is None:
        tlvs = _NO_TLVS
    elif not isinstance(tlvs, TLVs):
        tlvs = TLVs(**tlvs)  # type: ignore[arg-type]
    if type(transport) is not Transport:
        transport = Transport(transport)
    if transport is Transport.UNSPEC:
        raise HeaderEncodingError("a PROXY header with addresses needs a STREAM or DGRAM transport")
    if isinstance(source, tuple) and isinstance(destination, tuple):
        source_family, source = _inet_address(source, "source")
        destination_family, destination = _inet_address(destination, "destination")
        if source_family is not destination_family:
            raise HeaderEncodingError(
                f"source is {source_family.name} but destination is {destination_family.name}: "
                "a header has one address family"
            )
        family = source_family
    elif isinstance(source, str) and isinstance(destination, str):
        family = Family.UNIX
        for name, path in (("source", source), ("destination", destination)):
            if len(_unix_path_bytes(path, name)) > UNIX_PATH_SIZE:
                raise HeaderEncodingError(
                    f"{name} path is over {UNIX_PATH_SIZE} bytes: {path[:40]!r}..."
                )
    else:
        raise HeaderEncodingError(
            "source and destination must both be (host, port) tuples or both be UNIX paths"
        )
    if cls is Header:
        # Every value is checked above: fill the slots without attrs' __init__ (see model).
        header = _make_header(version, Command.PROXY, family, transport, source, destination, tlvs)
    else:
        header = cls(version, Command.PROXY, family, transport, source, destination, tlvs)
    if version == 1:
        _check_v1(header)
    return header


def _inet_address(address: tuple[str, int], name: str) -> tuple[Family, tuple[str, int]]:
    """The family of ``(host, port)``, and the address as the parser gives it back."""
    try:
        host, port = address
    except (TypeError, ValueError):
        raise HeaderEncodingError(f"{name} must be (host, port), not {address!r}") from None
    if type(port) is not int or not 0 <= port <= 0xFFFF:
        raise HeaderEncodingError(f"{name} port must be an int from 0 to 65535, not {port!r}")
    if type(host) is not str:
        raise HeaderEncodingError(f"{name} host must be a str, not {host!r}")
    try:
        # inet_pton takes only the canonical dotted quad (no leading zeros, four parts), so
        # an IPv4 host that passes is already the text the parser will give back.
        inet_pton(AF_INET, host)
    except OSError:
        pass
    else:
        return Family.INET, (host, port)
    try:
        # IPv6 has many spellings; keep the canonical one, as the parser gives it back.
        return Family.INET6, (inet_ntop(AF_INET6, inet_pton(AF_INET6, host)), port)
    except (OSError, ValueError):
        raise HeaderEncodingError(f"{name} host {host!r} is not an IPv4 or IPv6 address") from None


def _unix_path_bytes(path: str, name: str) -> bytes:
    if path.endswith("\x00"):
        # It would be lost in the NUL padding (spec 2.2): the receiver could not tell.
        raise HeaderEncodingError(f"{name} path ends with NUL, which the padding would swallow")
    if "\x00" in path and not path.startswith("\x00"):
        # A pathname ends at its first NUL (sun_path): the receiver would read a shorter one.
        # Only an abstract name (leading NUL) may hold NULs.
        raise HeaderEncodingError(f"{name} path holds a NUL, where a pathname ends: {path!r}")
    try:
        return path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise HeaderEncodingError(f"{name} path cannot be encoded: {path!r}") from None


def _check_v1(header: Header) -> None:
    if header.command is not Command.PROXY:
        raise HeaderEncodingError("v1 has no LOCAL command: use Header.unknown() or version 2")
    if header.tlvs:
        raise HeaderEncodingError("v1 headers cannot carry TLVs: use version 2")
    if header.family is Family.UNSPEC:
        return
    if header.family not in _V1_PROTOCOLS or header.transport is not Transport.STREAM:
        raise HeaderEncodingError(
            f"v1 describes TCP over IPv4 or IPv6 only, not {header.family.name} "
            f"{header.transport.name}"
        )


def encode(header: Header, crc32c: bool, pad_to: int | None) -> bytes:
    if header.version == 2:
        return _encode_v2(header, crc32c, pad_to)
    if header.version != 1:
        raise HeaderEncodingError(f"version must be 1 or 2, not {header.version!r}")
    if crc32c or pad_to is not None:
        raise HeaderEncodingError("crc32c and pad_to are v2 features")
    _check_v1(header)
    if header.family is Family.UNSPEC:
        return b"PROXY UNKNOWN\r\n"
    (source_host, source_port), (destination_host, destination_port) = _addresses(header)
    _inet_bytes(header.family, source_host, "source")
    _inet_bytes(header.family, destination_host, "destination")
    return (
        f"PROXY {_V1_PROTOCOLS[header.family]} {source_host} {destination_host} "
        f"{source_port} {destination_port}\r\n"
    ).encode("ascii")


def _encode_v2(header: Header, crc32c: bool, pad_to: int | None) -> bytes:
    parts = [_address_block(header)]
    if header.tlvs is not _NO_TLVS:
        parts += tlv.encode_tlvs(header.tlvs)
    body = b"".join(parts)
    size = v2.FIXED_SIZE + len(body) + (_CRC32C_TLV.size if crc32c else 0)
    if pad_to is not None:
        padding = pad_to - size
        if padding < 0:
            raise HeaderEncodingError(f"pad_to={pad_to} is less than the header's {size} bytes")
        if 0 < padding < _TLV_HEAD_SIZE:
            raise HeaderEncodingError(
                f"pad_to={pad_to} leaves {padding} byte(s): a NOOP TLV takes at least 3"
            )
        if padding:
            body += tlv.encode_tlv(TLVType.NOOP, bytes(padding - _TLV_HEAD_SIZE))
            size = pad_to
    length = size - v2.FIXED_SIZE
    if length > 0xFFFF:
        raise HeaderEncodingError(f"the header would be {size} bytes; v2 allows 16 + 65535")
    fixed = _FIXED_TAIL.pack(0x20 | header.command, (header.family << 4) | header.transport, length)
    if not crc32c:
        return v2.SIGNATURE + fixed + body
    # Spec 2.2.3: the checksum covers the whole header with the checksum field zero.
    unchecked = v2.SIGNATURE + fixed + body + _CRC32C_TLV.pack(TLVType.CRC32C, 4, 0)
    return unchecked[:-4] + tlv.crc32c_of(unchecked).to_bytes(4, "big")


def _address_block(header: Header) -> bytes:
    family = header.family
    if family is Family.UNSPEC or header.command is Command.LOCAL:
        # Spec 2.2: a sender of LOCAL "should not present any address so it sets this field to
        # zero"; the receiver ignores the family (which LOCAL may keep) and reads TLVs from the
        # end of the fixed part, as HAProxy does.
        return b""
    if family is Family.UNIX:
        return _unix_block(header)
    af, layout = (AF_INET, _INET_BLOCK) if family is Family.INET else (AF_INET6, _INET6_BLOCK)
    source, destination = header.source, header.destination
    try:
        return layout.pack(
            inet_pton(af, source[0]),  # type: ignore[index]
            inet_pton(af, destination[0]),  # type: ignore[index]
            source[1],  # type: ignore[index]
            destination[1],  # type: ignore[index]
        )
    except (IndexError, OSError, TypeError, ValueError, struct.error):
        # Say exactly what is wrong.
        (source_host, _), (destination_host, _) = _addresses(header)
        _inet_bytes(family, source_host, "source")
        _inet_bytes(family, destination_host, "destination")
        raise HeaderEncodingError(f"cannot encode the addresses of {header!r}") from None


def _unix_block(header: Header) -> bytes:
    source, destination = header.source, header.destination
    if not isinstance(source, str) or not isinstance(destination, str):
        raise HeaderEncodingError("a UNIX header needs str paths as source and destination")
    block = b""
    for name, path in (("source", source), ("destination", destination)):
        encoded = _unix_path_bytes(path, name)
        if len(encoded) > UNIX_PATH_SIZE:
            raise HeaderEncodingError(f"{name} path is over {UNIX_PATH_SIZE} bytes")
        block += encoded.ljust(UNIX_PATH_SIZE, b"\x00")
    return block


def _addresses(header: Header) -> tuple[tuple[str, int], tuple[str, int]]:
    source, destination = header.source, header.destination
    for name, address in (("source", source), ("destination", destination)):
        if (
            not isinstance(address, tuple)
            or len(address) != 2
            or type(address[1]) is not int
            or not 0 <= address[1] <= 0xFFFF
        ):
            raise HeaderEncodingError(
                f"{name} must be (host, port) with a port from 0 to 65535 for "
                f"{header.family.name}, not {address!r}"
            )
    return source, destination  # type: ignore[return-value]


def _inet_bytes(family: Family, host: object, name: str) -> bytes:
    af = AF_INET if family is Family.INET else AF_INET6
    try:
        return inet_pton(af, host)  # type: ignore[arg-type]
    except (OSError, TypeError, ValueError):
        raise HeaderEncodingError(f"{name} host {host!r} is not an {family.name} address") from None
