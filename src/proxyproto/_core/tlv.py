"""The v2 Type-Length-Value extensions: decoding and encoding (spec section 2.2).

Each TLV is ``type (u8), length (u16 big-endian), value (length bytes)``. TLVs follow the address
block and must end exactly where the header ends. The SSL TLV (0x20) holds a client byte, a verify
word and sub-TLVs of the same shape, which must end exactly where the SSL TLV ends.

Registered TLVs that are malformed fail the header: the spec gives them a meaning, and a receiver
must not guess. Vendor TLVs (AWS, Azure, GCP) are defined by their vendors, not by the spec, and
their layout has changed before: a malformed one is kept in ``raw`` with its typed field ``None``.

How we read a type that comes more than once (spec 2.2 has no rule against it; HAProxy, nginx,
Envoy and go-proxyproto accept it): every occurrence is kept in ``raw``, in wire order, and checked
by the rules of its type; the typed field takes the first, as Envoy documents. The same holds for
the SSL sub-TLVs. Every CRC32C TLV is verified, as HAProxy's ``conn_recv_proxy`` does: in wire
order, each over the whole header with its own field and those of the CRC32C TLVs before it set to
zero (HAProxy zeroes each field in place as it checks it), later ones as sent.
"""

from __future__ import annotations

import struct

from crc32c import crc32c as _crc32c

from .errors import HeaderEncodingError, InvalidHeader
from .model import SSLInfo, SSLSubType, TLVs, TLVType
from .model import _make_ssl as make_ssl
from .model import _make_tlvs as make_tlvs

__all__ = [
    "MAX_UNIQUE_ID",
    "crc32c_of",
    "decode_tlvs_untrusted",
    "encode_tlv",
    "encode_tlvs",
]

#: Spec 2.2.5: the unique id is at most 128 bytes.
MAX_UNIQUE_ID = 128

# type (u8), length (u16 big-endian)
_TLV_HEAD = struct.Struct("!BH")
# SSL TLV: client (u8), verify (u32 big-endian), then sub-TLVs
_SSL_HEAD = struct.Struct("!BI")
# Azure 0xEE: sub-type (u8), link id (u32 little-endian)
_AZURE = struct.Struct("<BI")
# GCP 0xE0: PSC connection id (u64 big-endian)
_GCP = struct.Struct("!Q")

_AWS_SUBTYPE_VPCE_ID = 0x01
_AZURE_SUBTYPE_LINK_ID = 0x01

_ALPN = TLVType.ALPN.value
_AUTHORITY = TLVType.AUTHORITY.value
_CRC32C = TLVType.CRC32C.value
_NOOP = TLVType.NOOP.value
_UNIQUE_ID = TLVType.UNIQUE_ID.value
_SSL = TLVType.SSL.value
_NETNS = TLVType.NETNS.value
_AWS = TLVType.AWS.value
_AZURE_TYPE = TLVType.AZURE.value
_GCP_TYPE = TLVType.GCP.value

# SSL sub-TLVs that hold text: their place among SSLInfo's text fields, and their encoding.
_SSL_TEXT = {
    t.value: (index, t.name, encoding)
    for index, (t, encoding) in enumerate(
        (
            (SSLSubType.VERSION, "ascii"),
            (SSLSubType.CN, "utf-8"),
            (SSLSubType.CIPHER, "ascii"),
            (SSLSubType.SIG_ALG, "ascii"),
            (SSLSubType.KEY_ALG, "ascii"),
            (SSLSubType.GROUP, "ascii"),
            (SSLSubType.SIG_SCHEME, "ascii"),
        )
    )
}
_SSL_VERSION = SSLSubType.VERSION.value
_SSL_CN = SSLSubType.CN.value
_SSL_CIPHER = SSLSubType.CIPHER.value
_SSL_SIG_ALG = SSLSubType.SIG_ALG.value
_SSL_KEY_ALG = SSLSubType.KEY_ALG.value
_SSL_GROUP = SSLSubType.GROUP.value
_SSL_SIG_SCHEME = SSLSubType.SIG_SCHEME.value
_SSL_CLIENT_CERT = SSLSubType.CLIENT_CERT.value


def crc32c_of(data: bytes) -> int:
    """CRC32C (Castagnoli) of ``data``, from the ``crc32c`` package."""
    return int(_crc32c(data))


def decode_tlvs_untrusted(header: bytes, start: int, end: int) -> TLVs:
    """Decode the TLVs of ``header[start:end]``; ``header[:end]`` is the whole v2 header.

    The whole header is needed to verify a CRC32C TLV, which covers every byte of it.
    """
    raw: list[tuple[int, bytes]] = []
    alpn: bytes | None = None
    authority: str | None = None
    crc32c: int | None = None
    unique_id: bytes | None = None
    netns: str | None = None
    ssl: SSLInfo | None = None
    aws_vpce_id: str | None = None
    azure_link_id: int | None = None
    gcp_psc_id: int | None = None
    # The header as the CRC32C check sees it, once there is one (see the module's docstring).
    checked: bytearray | None = None
    for kind, value_start, value in _frames_untrusted(header, start, end, "TLV", "the header"):
        length = len(value)
        raw.append((kind, value))
        # A repeated type: each occurrence is checked, the typed field keeps the first.
        if kind == _ALPN:
            if alpn is None:
                alpn = value
        elif kind == _AUTHORITY:
            text = _text_untrusted(value, "utf-8", "AUTHORITY")
            if authority is None:
                authority = text
        elif kind == _UNIQUE_ID:
            if length > MAX_UNIQUE_ID:
                raise InvalidHeader(
                    f"v2: UNIQUE_ID TLV is {length} bytes, more than {MAX_UNIQUE_ID}"
                )
            if unique_id is None:
                unique_id = value
        elif kind == _SSL:
            info = _decode_ssl_untrusted(value)
            if ssl is None:
                ssl = info
        elif kind == _CRC32C:
            if checked is None:
                checked = bytearray(header[:end])
            checksum = _check_crc32c_untrusted(checked, value_start, length)
            if crc32c is None:
                crc32c = checksum
        elif kind == _NETNS:
            text = _text_untrusted(value, "ascii", "NETNS")
            if netns is None:
                netns = text
        elif kind == _AWS:
            if aws_vpce_id is None and length >= 1 and value[0] == _AWS_SUBTYPE_VPCE_ID:
                aws_vpce_id = _vendor_text(value[1:])
        elif kind == _AZURE_TYPE:
            if azure_link_id is None and length == 5 and value[0] == _AZURE_SUBTYPE_LINK_ID:
                azure_link_id = _AZURE.unpack(value)[1]
        elif kind == _GCP_TYPE and gcp_psc_id is None and length == 8:
            gcp_psc_id = _GCP.unpack(value)[0]
        # NOOP and unknown types: kept in raw, otherwise skipped (spec 2.2.4, 2.2).
    return make_tlvs(
        alpn,
        authority,
        crc32c,
        unique_id,
        netns,
        ssl,
        aws_vpce_id,
        azure_link_id,
        gcp_psc_id,
        tuple(raw),
    )


def _frames_untrusted(
    data: bytes, start: int, end: int, what: str, within: str
) -> list[tuple[int, int, bytes]]:
    """Split ``data[start:end]`` into ``(type, value offset, value)`` frames of the TLV shape
    (type u8, length u16, value), which must end exactly at ``end``: the TLVs of a header and
    the sub-TLVs of an SSL TLV are framed alike."""
    frames: list[tuple[int, int, bytes]] = []
    offset = start
    while offset < end:
        if offset + 3 > end:
            raise InvalidHeader(
                f"v2: {end - offset} stray byte(s) at the end of {within} (offset {offset}), "
                f"too short for a {what}"
            )
        kind = data[offset]
        length = (data[offset + 1] << 8) | data[offset + 2]
        value_start = offset + 3
        offset = value_start + length
        if offset > end:
            raise InvalidHeader(
                f"v2: {what} 0x{kind:02X} at offset {value_start - 3} declares {length} bytes, "
                f"past the end of {within} ({end - value_start} left)"
            )
        frames.append((kind, value_start, data[value_start:offset]))
    return frames


def _text_untrusted(value: bytes, encoding: str, what: str) -> str:
    try:
        return value.decode(encoding)
    except UnicodeDecodeError:
        raise InvalidHeader(f"v2: {what} TLV is not valid {encoding.upper()} text") from None


def _vendor_text(value: bytes) -> str | None:
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        return None


def _check_crc32c_untrusted(checked: bytearray, value_start: int, length: int) -> int:
    """Verify the CRC32C TLV whose value starts at ``value_start`` in the whole header
    ``checked``, and leave its field zero there for the CRC32C TLVs after it."""
    if length != 4:
        raise InvalidHeader(f"v2: CRC32C TLV is {length} bytes, not 4")
    expected = int.from_bytes(checked[value_start : value_start + 4], "big")
    # Spec 2.2.3: the checksum covers the whole header with the checksum field set to zero.
    checked[value_start : value_start + 4] = b"\x00\x00\x00\x00"
    actual = crc32c_of(bytes(checked))
    if actual != expected:
        raise InvalidHeader(
            f"v2: CRC32C mismatch: the header says 0x{expected:08x}, its bytes give 0x{actual:08x}"
        )
    return expected


def _decode_ssl_untrusted(value: bytes) -> SSLInfo:
    end = len(value)
    if end < _SSL_HEAD.size:
        raise InvalidHeader(f"v2: SSL TLV is {end} bytes, shorter than its 5-byte head")
    client, verify = _SSL_HEAD.unpack_from(value)
    texts: list[str | None] = [None] * len(_SSL_TEXT)
    client_cert: bytes | None = None
    raw: list[tuple[int, bytes]] = []
    name = encoding = ""
    try:
        frames = _frames_untrusted(value, _SSL_HEAD.size, end, "SSL sub-TLV", "the SSL TLV")
        for kind, _, sub_value in frames:
            raw.append((kind, sub_value))
            # A repeated sub-type: each occurrence is checked, the field keeps the first.
            text = _SSL_TEXT.get(kind)
            if text is not None:
                index, name, encoding = text
                decoded = sub_value.decode(encoding)
                if texts[index] is None:
                    texts[index] = decoded
            elif kind == _SSL_CLIENT_CERT and client_cert is None:
                client_cert = sub_value
            # Unknown sub-types: kept in raw, otherwise skipped.
    except UnicodeDecodeError:
        raise InvalidHeader(
            f"v2: SSL sub-TLV {name} is not valid {encoding.upper()} text"
        ) from None
    version, cn, cipher, sig_alg, key_alg, group, sig_scheme = texts
    return make_ssl(
        client,
        verify,
        version,
        cn,
        cipher,
        sig_alg,
        key_alg,
        group,
        sig_scheme,
        client_cert,
        tuple(raw),
    )


# --- encoding ----------------------------------------------------------------------------------


def encode_tlvs(tlvs: TLVs) -> list[bytes]:
    """Encode every TLV except CRC32C and padding, which need the whole header."""
    try:
        parts = _encode_tlvs(tlvs)
    except UnicodeEncodeError as error:
        raise HeaderEncodingError(
            f"{error.object!r} cannot be encoded as {error.encoding.upper()} in a TLV"
        ) from None
    if tlvs.raw or (tlvs.ssl is not None and tlvs.ssl.raw):
        # Raw entries are copied as they are: make sure they still make a header we would
        # accept (an over-long UNIQUE_ID, text that is not text...).
        block = b"".join(parts)
        try:
            decode_tlvs_untrusted(block, 0, len(block))
        except InvalidHeader as error:
            message = str(error).removeprefix("v2: ")
            raise HeaderEncodingError(
                f"the raw TLVs would make an invalid header: {message}"
            ) from None
    return parts


def _encode_tlvs(tlvs: TLVs) -> list[bytes]:
    parts: list[bytes] = []
    if tlvs.alpn is not None:
        parts.append(encode_tlv(_ALPN, tlvs.alpn))
    if tlvs.authority is not None:
        parts.append(encode_tlv(_AUTHORITY, tlvs.authority.encode("utf-8")))
    if tlvs.unique_id is not None:
        if len(tlvs.unique_id) > MAX_UNIQUE_ID:
            raise HeaderEncodingError(
                f"unique_id is {len(tlvs.unique_id)} bytes; the spec allows {MAX_UNIQUE_ID}"
            )
        parts.append(encode_tlv(_UNIQUE_ID, tlvs.unique_id))
    if tlvs.ssl is not None:
        parts.append(encode_tlv(_SSL, _encode_ssl(tlvs.ssl)))
    if tlvs.netns is not None:
        parts.append(encode_tlv(_NETNS, tlvs.netns.encode("ascii")))
    if tlvs.aws_vpce_id is not None:
        vpce_id = tlvs.aws_vpce_id.encode("ascii")
        parts.append(encode_tlv(_AWS, _AWS_VPCE_ID_PREFIX + vpce_id))
    if tlvs.azure_link_id is not None:
        link_id = _pack(_AZURE, "azure_link_id", 32, _AZURE_SUBTYPE_LINK_ID, tlvs.azure_link_id)
        parts.append(encode_tlv(_AZURE_TYPE, link_id))
    if tlvs.gcp_psc_id is not None:
        parts.append(encode_tlv(_GCP_TYPE, _pack(_GCP, "gcp_psc_id", 64, tlvs.gcp_psc_id)))
    # A typed field stands for the first raw entry it could have been decoded from; every
    # other raw entry is copied, except CRC32C and NOOP, which to_bytes() makes itself.
    represented: set[int] = set()
    for kind, value in tlvs.raw:
        if kind in (_CRC32C, _NOOP):
            continue
        if kind not in represented and _represented(tlvs, kind, value):
            represented.add(kind)
            continue
        parts.append(encode_tlv(kind, value))
    return parts


def _represented(tlvs: TLVs, kind: int, value: bytes) -> bool:
    """Whether a typed field is set that stands for this kind of raw entry."""
    if kind == _AWS:
        return tlvs.aws_vpce_id is not None and value[:1] == _AWS_VPCE_ID_PREFIX
    if kind == _AZURE_TYPE:
        return tlvs.azure_link_id is not None and value[:1] == bytes((_AZURE_SUBTYPE_LINK_ID,))
    typed = _TYPED_FIELD.get(kind)
    return typed is not None and getattr(tlvs, typed) is not None


_AWS_VPCE_ID_PREFIX = bytes((_AWS_SUBTYPE_VPCE_ID,))
_TYPED_FIELD = {
    _ALPN: "alpn",
    _AUTHORITY: "authority",
    _UNIQUE_ID: "unique_id",
    _SSL: "ssl",
    _NETNS: "netns",
    _GCP_TYPE: "gcp_psc_id",
}


def _encode_ssl(ssl: SSLInfo) -> bytes:
    try:
        parts = [_SSL_HEAD.pack(ssl.client, ssl.verify)]
    except struct.error:
        raise HeaderEncodingError(
            "SSLInfo: client must fit in a byte and verify in 32 bits"
        ) from None
    if ssl.version is not None:
        parts.append(encode_tlv(_SSL_VERSION, ssl.version.encode("ascii")))
    if ssl.cn is not None:
        parts.append(encode_tlv(_SSL_CN, ssl.cn.encode("utf-8")))
    if ssl.cipher is not None:
        parts.append(encode_tlv(_SSL_CIPHER, ssl.cipher.encode("ascii")))
    if ssl.sig_alg is not None:
        parts.append(encode_tlv(_SSL_SIG_ALG, ssl.sig_alg.encode("ascii")))
    if ssl.key_alg is not None:
        parts.append(encode_tlv(_SSL_KEY_ALG, ssl.key_alg.encode("ascii")))
    if ssl.group is not None:
        parts.append(encode_tlv(_SSL_GROUP, ssl.group.encode("ascii")))
    if ssl.sig_scheme is not None:
        sig_scheme = ssl.sig_scheme.encode("ascii")
        parts.append(encode_tlv(_SSL_SIG_SCHEME, sig_scheme))
    if ssl.client_cert is not None:
        parts.append(encode_tlv(_SSL_CLIENT_CERT, ssl.client_cert))
    # As for the TLVs: a field set stands for the first raw entry of its sub-type; the others,
    # repeats included, are copied.
    represented: set[int] = set()
    for kind, value in ssl.raw:
        field = _SSL_TEXT.get(kind)
        name = field[1].lower() if field else "client_cert" if kind == _SSL_CLIENT_CERT else None
        if name is not None and kind not in represented and getattr(ssl, name) is not None:
            represented.add(kind)
            continue
        parts.append(encode_tlv(kind, value))
    return b"".join(parts)


def _pack(layout: struct.Struct, what: str, bits: int, *values: int) -> bytes:
    try:
        return layout.pack(*values)
    except struct.error:
        raise HeaderEncodingError(f"{what} must be an unsigned {bits}-bit integer") from None


def encode_tlv(kind: int, value: bytes) -> bytes:
    """One TLV: type, length, value."""
    try:
        return _TLV_HEAD.pack(kind, len(value)) + value
    except struct.error:
        if not 0 <= kind <= 0xFF:
            raise HeaderEncodingError(f"TLV type {kind} is not a byte") from None
        raise HeaderEncodingError(
            f"TLV 0x{kind:02X} is {len(value)} bytes; a TLV holds at most 65535"
        ) from None
