"""QUIC: the client's Initial packets (v1, RFC 9000 / 9001; v2, RFC 9369), decrypted for the
ClientHello's SNI and ALPN. Needs ``cryptography`` (``pip install proxyproto[quic]``).

Theory of operation. A client's first datagram holds one Initial packet or more (coalesced,
RFC 9000 section 12.2), padded to at least 1200 bytes (section 14.1). Initial packets are
protected with keys anyone can derive from the Destination Connection ID (RFC 9001 section
5.2): HKDF-Extract with the version's salt, then HKDF-Expand-Label ``client in``, then the
key, IV and header-protection key (labels ``quic key`` / ``quic iv`` / ``quic hp``; v2:
``quicv2 key`` ...). The probe removes the header protection (AES-ECB of a ciphertext sample,
section 5.4.3), opens the AES-128-GCM payload (section 5.3), reads its frames (PADDING, PING,
ACK, CRYPTO, CONNECTION_CLOSE: the only ones an Initial may carry, RFC 9000 section 12.4) and
puts the CRYPTO frames' data in order. When the bytes from offset 0 make a whole ClientHello,
:func:`~proxyproto._cli.probe.tls.parse_client_hello_untrusted` reads it.

A ClientHello larger than one datagram (post-quantum key shares, many ALPN names) continues in
the client's next Initial datagrams: :class:`QUICProbe` keeps the CRYPTO data across the
datagrams it is given and answers ``NEED_MORE`` meanwhile; :func:`probe_quic` on one datagram
alone answers ``NEED_MORE`` (an int) for such a first datagram. The primitives are
``cryptography``'s (HMAC-SHA256 as HKDF-Extract, HKDFExpand, AES-ECB, AESGCM); none is
written here.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from ._base import NO_MATCH, Malformed, Reader, Result, Short
from .tls import MAX_HELLO, parse_client_hello_untrusted

__all__ = ["VERSION_1", "VERSION_2", "QUICProbe", "probe_quic"]

VERSION_1 = 0x00000001
VERSION_2 = 0x6B3343CF

#: Per version: the Initial salt, the label prefix, the long-header type of Initial packets.
#: RFC 9001 section 5.2; RFC 9369 sections 3.2 (type 0b01), 3.3.1 (salt), 3.3.2 (labels).
_VERSIONS = {
    VERSION_1: (bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"), b"quic ", 0b00),
    VERSION_2: (bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"), b"quicv2 ", 0b01),
}
#: RFC 9000 section 14.1: a client's Initial datagram is at least this large.
MIN_DATAGRAM = 1200

_LONG_HEADER = 0x80
_FIXED_BIT = 0x40
_PADDING, _PING, _ACK, _ACK_ECN, _CRYPTO, _CLOSE = 0x00, 0x01, 0x02, 0x03, 0x06, 0x1C
_VERSION = struct.Struct("!I")


def _expand_label(secret: bytes, label: bytes, size: int) -> bytes:
    """HKDF-Expand-Label (RFC 8446 section 7.1) with an empty context."""
    full = b"tls13 " + label
    info = size.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"
    return HKDFExpand(hashes.SHA256(), size, info).derive(secret)


class _Keys:
    __slots__ = ("aead", "hp", "iv")

    def __init__(self, version: int, dcid: bytes) -> None:
        salt, prefix, _ = _VERSIONS[version]
        extract = hmac.HMAC(salt, hashes.SHA256())  # HKDF-Extract(salt, IKM) is this HMAC
        extract.update(dcid)
        client = _expand_label(extract.finalize(), b"client in", 32)
        self.aead = AESGCM(_expand_label(client, prefix + b"key", 16))
        self.iv = _expand_label(client, prefix + b"iv", 12)
        self.hp = Cipher(algorithms.AES(_expand_label(client, prefix + b"hp", 16)), modes.ECB())

    def mask(self, sample: bytes) -> bytes:
        encryptor = self.hp.encryptor()
        return encryptor.update(sample) + encryptor.finalize()


class QUICProbe:
    """The Initial datagrams of one client, in the order received: :meth:`receive_datagram`.

    The first datagram fixes the version and Destination Connection ID (and so the keys);
    later ones must carry Initial packets of the same.
    """

    def __init__(self, *, protocol: str = "quic") -> None:
        self.protocol = protocol
        self._keys: _Keys | None = None
        self._version = 0
        self._dcid = b""
        self._crypto: dict[int, bytes] = {}
        self._done = False

    def receive_datagram(self, datagram: bytes) -> Result:
        """The answer after one more datagram: a match, ``NO_MATCH``, or an int (more needed)."""
        if self._done:
            return NO_MATCH
        try:
            if len(datagram) < MIN_DATAGRAM:
                raise Malformed
            offset = 0
            packets = 0
            while offset < len(datagram) and datagram[offset] & _LONG_HEADER:
                offset = self._packet(datagram, offset, first=packets == 0)
                packets += 1
            if packets == 0:
                raise Malformed
            return self._hello()
        except (Malformed, Short, InvalidTag):
            self._done = True
            return NO_MATCH

    def _packet(self, datagram: bytes, start: int, *, first: bool) -> int:
        """Read one long-header packet at ``start``; the offset after it."""
        reader = Reader(datagram, start)
        head = reader.u8()
        if not head & _FIXED_BIT:
            raise Malformed
        version = _VERSION.unpack(reader.take(4))[0]
        if version not in _VERSIONS:
            raise Malformed
        dcid = reader.take(reader.u8())
        scid_size = reader.u8()
        if len(dcid) > 20 or scid_size > 20:
            raise Malformed
        reader.take(scid_size)
        initial = (head >> 4) & 0b11 == _VERSIONS[version][2]
        if initial:
            reader.take(reader.varint())  # token
        length = reader.varint()
        pn_offset = reader.offset
        end = pn_offset + length
        if end > len(datagram):
            raise Malformed
        if not initial:
            if first:
                raise Malformed
            return end  # a coalesced 0-RTT packet: not for us
        if self._keys is None:
            if not first or len(dcid) < 8:  # RFC 9000 section 7.2: at least 8 bytes
                raise Malformed
            self._keys = _Keys(version, dcid)
            self._version, self._dcid = version, dcid
        elif (version, dcid) != (self._version, self._dcid):
            raise Malformed
        self._open(datagram, start, pn_offset, end)
        return end

    def _open(self, datagram: bytes, start: int, pn_offset: int, end: int) -> None:
        keys = self._keys
        assert keys is not None
        sample = datagram[pn_offset + 4 : pn_offset + 20]
        if len(sample) < 16 or pn_offset + 20 > end:
            raise Malformed
        mask = keys.mask(sample)
        head = datagram[start] ^ (mask[0] & 0x0F)  # RFC 9001 section 5.4.1: long header
        pn_size = (head & 0b11) + 1
        pn = bytes(
            a ^ b
            for a, b in zip(
                datagram[pn_offset : pn_offset + pn_size], mask[1 : 1 + pn_size], strict=True
            )
        )
        header = bytes([head]) + datagram[start + 1 : pn_offset] + pn
        nonce = int.from_bytes(keys.iv, "big") ^ int.from_bytes(pn, "big")
        payload = keys.aead.decrypt(
            nonce.to_bytes(12, "big"), datagram[pn_offset + pn_size : end], header
        )
        self._frames(payload)

    def _frames(self, payload: bytes) -> None:
        frames = Reader(payload)
        while frames.left:
            kind = frames.varint()
            if kind in (_PADDING, _PING):
                continue
            if kind in (_ACK, _ACK_ECN):
                frames.varint()  # largest acknowledged
                frames.varint()  # delay
                ranges = frames.varint()
                frames.varint()  # first range
                for _ in range(2 * ranges + (3 if kind == _ACK_ECN else 0)):
                    frames.varint()
            elif kind == _CRYPTO:
                offset = frames.varint()
                data = frames.take(frames.varint())
                if offset + len(data) > MAX_HELLO:
                    raise Malformed
                if data:
                    self._crypto[offset] = data
            elif kind == _CLOSE:
                frames.varint()
                frames.varint()
                frames.take(frames.varint())
            else:
                raise Malformed

    def _hello(self) -> Result:
        # The CRYPTO data from offset 0, as far as it is contiguous (frames may overlap).
        stream = bytearray()
        for offset in sorted(self._crypto):
            data = self._crypto[offset]
            if offset > len(stream):
                break
            stream += data[len(stream) - offset :]
        result = parse_client_hello_untrusted(bytes(stream), protocol=self.protocol)
        if not isinstance(result, int):
            self._done = True
        return result


def probe_quic(datagram: bytes) -> Result:
    """A client's first Initial datagram; an int when its ClientHello continues in the next.

    ``NO_MATCH`` for anything else (a short header, another version, a datagram under 1200
    bytes, a payload that does not decrypt).
    """
    return QUICProbe().receive_datagram(datagram)
