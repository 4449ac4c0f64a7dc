"""Headers the parser accepts whose fields are not plain text: for whatever prints or logs them.

Each is in :data:`ODD_HEADERS` as the bytes a peer sends, with an id for pytest. Every one parses
under the default settings (a 4096-byte limit, every version, strict checks): the fields that
carry the oddity are text the peer chose — a UNIX path with bytes that are not UTF-8, an abstract
UNIX address, ANSI escapes, CR LF and a bidi override in AUTHORITY and the SSL CN, a TLV that
fills the header, link-local IPv6 addresses. A test feeds them to a surface and checks that what
it prints or logs is printable, one line where it should be, and that the surface survives.
"""

from __future__ import annotations

import struct

import proxyproto as pp

#: What a terminal would obey and a log would split on.
ANSI = "\x1b[2J\x1b[31m"
FORGED_LINE = "\r\n2026-01-01 00:00:00 INFO forged line"
BIDI = "\u202egnp.exe"

_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def _v2_unix(source: bytes, destination: bytes, tlvs: bytes = b"") -> bytes:
    """A v2 PROXY UNIX STREAM header with these raw 108-byte-padded paths (no builder needed)."""
    block = source.ljust(108, b"\x00") + destination.ljust(108, b"\x00") + tlvs
    return _V2_SIGNATURE + b"\x21\x31" + struct.pack("!H", len(block)) + block


def _tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


def _inet(tlvs: pp.TLVs) -> bytes:
    return pp.Header.proxy(("203.0.113.7", 51234), ("198.51.100.10", 443), tlvs=tlvs).to_bytes()


ODD_HEADERS: dict[str, bytes] = {
    # Bytes that are not UTF-8 (the parser keeps them, as os.fsdecode does), and a terminal escape.
    "unix-path-not-utf8": _v2_unix(b"/tmp/\xff\xfe" + ANSI.encode(), b"/run/app\x80.sock"),
    # An abstract address: a leading NUL, then anything.
    "unix-abstract": _v2_unix(b"\x00abstract\n" + ANSI.encode(), b"\x00dst\x7f"),
    "authority-escapes": _inet(pp.TLVs(authority=ANSI + FORGED_LINE + BIDI)),
    "netns-and-vpce-escapes": _inet(pp.TLVs(netns="ns" + ANSI, aws_vpce_id="vpce-" + FORGED_LINE)),
    "ssl-cn-escapes": _inet(
        pp.TLVs(
            ssl=pp.SSLInfo(
                client=pp.SSLClient.SSL | pp.SSLClient.CERT_CONN,
                verify=1,
                version="TLSv1.3" + ANSI,
                cn="alice" + FORGED_LINE,
            )
        )
    ),
    # A TLV that fills the header (4096 bytes, the default limit): AUTHORITY, escapes throughout.
    "huge-authority": _inet(pp.TLVs(authority=(ANSI + "\n") * (4000 // len(ANSI + "\n")))),
    "huge-unknown-tlv": _v2_unix(b"/s", b"/d", _tlv(0xE5, bytes(range(256)) * 15)),
    # Link-local IPv6 (a scope id cannot travel in a header; the address alone does).
    "ipv6-link-local-v1": b"PROXY TCP6 fe80::1 fe80::2:1 1 65535\r\n",
    "ipv6-link-local-v2": pp.Header.proxy(("fe80::1", 1), ("fe80::ffff:1", 2)).to_bytes(),
    # Anything after UNKNOWN is ignored (spec 2.1), control bytes included.
    "v1-unknown-with-junk": b"PROXY UNKNOWN \x1b[31m\x7f\xff junk\r\n",
}


def _check() -> None:
    for name, data in ODD_HEADERS.items():
        header, size = pp.parse(data)
        assert size == len(data) <= 4096, (name, size)
        assert header is not None


_check()
