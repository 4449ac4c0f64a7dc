"""v2 TLVs: spec section 2.2.1 to 2.2.7, the SSL sub-TLVs, and the vendor TLVs."""

from __future__ import annotations

import struct

import pytest
from crc32c import crc32c

import proxyproto as pp
from wire import SIG, inet, rejected, tlv, tr, v2

ADDRESSES = inet("192.0.2.1", "198.51.100.7", 56324, 443)


def with_tlvs(*tlvs: bytes) -> bytes:
    return v2(0x21, 0x11, ADDRESSES + b"".join(tlvs))


def with_crc32c(*tlvs: bytes) -> bytes:
    """A header whose last TLV is a correct CRC32C (computed here, not by the library)."""
    unchecked = with_tlvs(*tlvs, tlv(0x03, b"\x00\x00\x00\x00"))
    return unchecked[:-4] + struct.pack("!I", crc32c(unchecked))


def ssl(client: int, verify: int, *subs: bytes) -> bytes:
    return tlv(0x20, struct.pack("!BI", client, verify) + b"".join(subs))


def test_registered_tlvs() -> None:
    header = tr(
        with_tlvs(
            tlv(0x01, b"h2"),
            tlv(0x02, "bücher.example".encode()),
            tlv(0x05, b"\x00\x01" * 64),
            tlv(0x30, b"blue"),
        )
    )
    assert header.tlvs.alpn == b"h2"
    assert header.tlvs.authority == "bücher.example"
    assert header.tlvs.unique_id == b"\x00\x01" * 64
    assert header.tlvs.netns == "blue"
    assert header.tlvs.crc32c is None
    assert header.tlvs.ssl is None
    assert [kind for kind, _ in header.tlvs.raw] == [0x01, 0x02, 0x05, 0x30]


def test_raw_keeps_every_tlv_in_wire_order_unknown_ones_too() -> None:
    tlvs = [
        tlv(0xF0, b"experimental"),
        tlv(0x04, b"\x00\x00"),
        tlv(0x01, b"http/1.1"),
        tlv(0x7F, b""),
        tlv(0xFF, b"future"),
        tlv(0x04, b""),
    ]
    header = tr(with_tlvs(*tlvs))
    assert header.tlvs.raw == (
        (0xF0, b"experimental"),
        (0x04, b"\x00\x00"),
        (0x01, b"http/1.1"),
        (0x7F, b""),
        (0xFF, b"future"),
        (0x04, b""),
    )
    assert header.tlvs.alpn == b"http/1.1"


def test_empty_values_are_well_formed() -> None:
    header = tr(with_tlvs(tlv(0x01, b""), tlv(0x02, b""), tlv(0x05, b"")))
    assert (header.tlvs.alpn, header.tlvs.authority, header.tlvs.unique_id) == (b"", "", b"")


def test_crc32c_verified() -> None:
    header = tr(with_crc32c(tlv(0x01, b"h2")))
    assert header.tlvs.crc32c is not None
    assert header.tlvs.alpn == b"h2"


def test_crc32c_first_like_haproxy_sends_it() -> None:
    unchecked = with_tlvs(tlv(0x03, b"\x00" * 4), tlv(0x05, b"id"))
    offset = len(SIG) + 4 + len(ADDRESSES) + 3
    data = unchecked[:offset] + struct.pack("!I", crc32c(unchecked)) + unchecked[offset + 4 :]
    assert tr(data).tlvs.crc32c == crc32c(unchecked)


@pytest.mark.parametrize("position", [16, 27, 31, 34, -8, -1])
def test_crc32c_mismatch_is_refused(position: int) -> None:
    # One bit flipped in the addresses, the ports, another TLV, or the checksum itself.
    bad = bytearray(with_crc32c(tlv(0x05, b"unique")))
    bad[position] ^= 0x01
    rejected(bytes(bad), "CRC32C mismatch")


def test_crc32c_covers_the_address_block() -> None:
    good = with_crc32c()
    forged = good.replace(bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]))
    assert forged != good
    rejected(forged, "CRC32C mismatch")


@pytest.mark.parametrize("size", [0, 3, 5, 8])
def test_crc32c_of_the_wrong_size(size: int) -> None:
    rejected(with_tlvs(tlv(0x03, b"\x00" * size)), f"CRC32C TLV is {size} bytes, not 4")


def crc32c_twice(first_good: bool = True, second_good: bool = True) -> bytes:
    """Two CRC32C TLVs, each right as HAProxy checks them: in wire order, each over the header
    with its own field and the earlier ones zero, the later ones as sent."""
    unchecked = with_tlvs(tlv(0x03, b"\0" * 4), tlv(0x05, b"id"), tlv(0x03, b"\0" * 4))
    first = len(SIG) + 4 + len(ADDRESSES) + 3
    second = len(unchecked) - 4
    data = bytearray(unchecked)
    # The second one is checked with both fields zero; the first with the second as sent.
    data[second:] = struct.pack("!I", crc32c(unchecked) ^ (0 if second_good else 1))
    data[first : first + 4] = struct.pack("!I", crc32c(bytes(data)) ^ (0 if first_good else 1))
    return bytes(data)


def test_crc32c_twice_each_is_verified_as_haproxy_does() -> None:
    # Spec 2.2 has no rule against a second CRC32C TLV; HAProxy's receiver verifies each one.
    data = crc32c_twice()
    header = tr(data)
    first = len(SIG) + 4 + len(ADDRESSES) + 3
    assert header.tlvs.crc32c == int.from_bytes(data[first : first + 4], "big")
    assert [kind for kind, _ in header.tlvs.raw] == [0x03, 0x05, 0x03]
    assert header.tlvs.unique_id == b"id"


@pytest.mark.parametrize(("first_good", "second_good"), [(False, True), (True, False)])
def test_crc32c_twice_either_wrong_is_refused(first_good: bool, second_good: bool) -> None:
    rejected(crc32c_twice(first_good, second_good), "CRC32C mismatch")


def test_crc32c_twice_each_over_its_own_field_only_is_refused() -> None:
    # Both computed with every CRC32C field zero: the first one does not check out, as in HAProxy.
    unchecked = with_tlvs(tlv(0x03, b"\0" * 4), tlv(0x03, b"\0" * 4))
    checksum = struct.pack("!I", crc32c(unchecked))
    first = len(SIG) + 4 + len(ADDRESSES) + 3
    data = unchecked[:first] + checksum + unchecked[first + 4 : -4] + checksum
    rejected(data, "CRC32C mismatch")


def test_unique_id_at_most_128_bytes() -> None:
    assert tr(with_tlvs(tlv(0x05, b"u" * 128))).tlvs.unique_id == b"u" * 128
    rejected(with_tlvs(tlv(0x05, b"u" * 129)), "UNIQUE_ID TLV is 129 bytes, more than 128")


@pytest.mark.parametrize(
    ("tlvs", "message"),
    [
        ((tlv(0x02, b"\xff\xfe"),), "AUTHORITY TLV is not valid UTF-8"),
        ((tlv(0x30, "é".encode()),), "NETNS TLV is not valid ASCII"),
        # A repeat is checked by the same rules as the first occurrence.
        ((tlv(0x02, b"a"), tlv(0x02, b"\xff")), "AUTHORITY TLV is not valid UTF-8"),
        ((tlv(0x30, b"a"), tlv(0x30, b"\xff")), "NETNS TLV is not valid ASCII"),
        ((tlv(0x05, b"a"), tlv(0x05, b"u" * 129)), "UNIQUE_ID TLV is 129 bytes"),
        ((ssl(0, 0), tlv(0x20, b"\x00")), "SSL TLV is 1 bytes"),
    ],
)
def test_malformed_registered_tlvs_fail_the_header(tlvs: tuple[bytes, ...], message: str) -> None:
    rejected(with_tlvs(*tlvs), message)


@pytest.mark.parametrize(
    ("first", "second", "field", "value"),
    [
        (tlv(0x01, b"h2"), tlv(0x01, b"http/1.1"), "alpn", b"h2"),
        (tlv(0x02, b"a.example"), tlv(0x02, b"b.example"), "authority", "a.example"),
        (tlv(0x05, b"first"), tlv(0x05, b"second"), "unique_id", b"first"),
        (tlv(0x30, b"blue"), tlv(0x30, b"red"), "netns", "blue"),
        (ssl(1, 0), ssl(3, 7), "ssl", pp.SSLInfo(client=1, verify=0)),
        (tlv(0xEA, b"\x01vpce-a"), tlv(0xEA, b"\x01vpce-b"), "aws_vpce_id", "vpce-a"),
        (tlv(0xEE, b"\x01\x01\0\0\0"), tlv(0xEE, b"\x01\x02\0\0\0"), "azure_link_id", 1),
        (tlv(0xE0, bytes(7) + b"\x01"), tlv(0xE0, bytes(7) + b"\x02"), "gcp_psc_id", 1),
    ],
)
def test_a_repeated_tlv_is_kept_and_the_first_wins(
    first: bytes, second: bytes, field: str, value: object
) -> None:
    # Spec 2.2 has no rule against a repeated type; HAProxy, nginx, Envoy accept it, and Envoy
    # documents the first one as the one used.
    header = tr(with_tlvs(first, tlv(0x04, b""), second))
    assert getattr(header.tlvs, field) == value
    assert header.tlvs.raw == ((first[0], first[3:]), (0x04, b""), (second[0], second[3:]))
    # Sent on (a relay), both occurrences go, and the first still wins.
    again = pp.parse(header.to_bytes())[0]
    assert getattr(again.tlvs, field) == value
    assert sorted(again.tlvs.raw) == sorted(kv for kv in header.tlvs.raw if kv[0] != 0x04)


def test_a_repeated_ssl_sub_tlv_is_kept_and_the_first_wins() -> None:
    subs = (
        tlv(0x22, b"alice"),
        tlv(0x21, b"TLSv1.3"),
        tlv(0x22, b"mallory"),
        tlv(0x28, b"cert-1"),
        tlv(0x28, b"cert-2"),
    )
    header = tr(with_tlvs(ssl(7, 0, *subs)))
    info = header.tlvs.ssl
    assert info is not None
    assert (info.cn, info.version, info.client_cert) == ("alice", "TLSv1.3", b"cert-1")
    assert info.raw == tuple((sub[0], sub[3:]) for sub in subs)
    again = pp.parse(header.to_bytes())[0].tlvs.ssl
    assert again is not None
    assert (again.cn, again.version, again.client_cert) == ("alice", "TLSv1.3", b"cert-1")
    assert sorted(again.raw) == sorted(info.raw)


def test_tlvs_must_end_exactly_at_the_header_end() -> None:
    # One TLV that runs past the declared length.
    overrun = v2(0x21, 0x11, ADDRESSES + tlv(0x01, b"h2")[:4], length=12 + 4)
    rejected(overrun, "declares 2 bytes, past the end of the header")
    # One to two stray bytes: too short for a TLV head.
    for stray in (b"\x01", b"\x01\x00"):
        data = v2(0x21, 0x11, ADDRESSES + tlv(0x01, b"h2") + stray)
        rejected(data, f"{len(stray)} stray byte(s)")


def test_ssl_tlv_and_every_sub_tlv() -> None:
    cert = bytes(range(256)) * 3
    header = tr(
        with_tlvs(
            ssl(
                0x07,
                0,
                tlv(0x21, b"TLSv1.3"),
                tlv(0x22, "Zoë".encode()),
                tlv(0x23, b"TLS_AES_256_GCM_SHA384"),
                tlv(0x24, b"SHA256"),
                tlv(0x25, b"RSA2048"),
                tlv(0x26, b"X25519"),
                tlv(0x27, b"rsa_pss_rsae_sha256"),
                tlv(0x28, cert),
                tlv(0x2F, b"future sub-type"),
            )
        )
    )
    info = header.tlvs.ssl
    assert info is not None
    assert (info.client, info.verify) == (0x07, 0)
    assert info.version == "TLSv1.3"
    assert info.cn == "Zoë"
    assert info.cipher == "TLS_AES_256_GCM_SHA384"
    assert info.sig_alg == "SHA256"
    assert info.key_alg == "RSA2048"
    assert info.group == "X25519"
    assert info.sig_scheme == "rsa_pss_rsae_sha256"
    assert info.client_cert == cert
    assert [kind for kind, _ in info.raw] == [0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x2F]
    assert info.raw[-1] == (0x2F, b"future sub-type")
    assert info.ssl
    assert info.verified_cert
    assert "bytes>" in repr(info)  # a certificate is not dumped into logs


def test_ssl_flags_not_verify_alone() -> None:
    # HAProxy sends verify=0 when no certificate was presented: that is not a verified client.
    no_cert = tr(with_tlvs(ssl(0x01, 0, tlv(0x21, b"TLSv1.3")))).tlvs.ssl
    assert no_cert is not None
    assert no_cert.ssl
    assert not no_cert.verified_cert
    failed = tr(with_tlvs(ssl(0x03, 21))).tlvs.ssl
    assert failed is not None
    assert not failed.verified_cert
    plaintext = tr(with_tlvs(ssl(0x00, 0))).tlvs.ssl
    assert plaintext is not None
    assert not plaintext.ssl
    assert plaintext.raw == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"\x07\x00\x00\x00", "SSL TLV is 4 bytes, shorter than its 5-byte head"),
        (b"", "SSL TLV is 0 bytes"),
        (b"\x07\x00\x00\x00\x00" + tlv(0x21, b"TLSv1.3")[:-1], "past the end of the SSL TLV"),
        (b"\x07\x00\x00\x00\x00\x21\x00", "2 stray byte(s) at the end of the SSL TLV"),
        (b"\x07\x00\x00\x00\x00" + tlv(0x22, b"a") + tlv(0x22, b"\xc3"), "CN is not valid UTF-8"),
        (b"\x07\x00\x00\x00\x00" + tlv(0x22, b"\xc3"), "SSL sub-TLV CN is not valid UTF-8"),
        (b"\x07\x00\x00\x00\x00" + tlv(0x21, b"TLS\xff"), "SSL sub-TLV VERSION is not valid ASCII"),
    ],
)
def test_malformed_ssl_tlv(value: bytes, message: str) -> None:
    rejected(with_tlvs(tlv(0x20, value)), message)


def test_aws_vpc_endpoint_id() -> None:
    header = tr(with_tlvs(tlv(0xEA, b"\x01vpce-0123456789abcdef0")))
    assert header.tlvs.aws_vpce_id == "vpce-0123456789abcdef0"


def test_aws_empty_vpc_endpoint_id() -> None:
    # Only the sub-type byte: well-formed, and what the builder writes for "".
    assert tr(with_tlvs(tlv(0xEA, b"\x01"))).tlvs.aws_vpce_id == ""


def test_azure_private_link_id_is_little_endian() -> None:
    header = tr(with_tlvs(tlv(0xEE, b"\x01" + struct.pack("<I", 0x12345678))))
    assert header.tlvs.azure_link_id == 0x12345678


def test_gcp_psc_connection_id_is_big_endian() -> None:
    header = tr(with_tlvs(tlv(0xE0, struct.pack("!Q", 0x0123456789ABCDEF))))
    assert header.tlvs.gcp_psc_id == 0x0123456789ABCDEF


@pytest.mark.parametrize(
    ("malformed", "field"),
    [
        (tlv(0xEA, b""), "aws_vpce_id"),
        (tlv(0xEA, b"\x02vpce-other-subtype"), "aws_vpce_id"),
        (tlv(0xEA, b"\x01vpce-\xff"), "aws_vpce_id"),
        (tlv(0xEE, b"\x01\x00\x00\x00"), "azure_link_id"),
        (tlv(0xEE, b"\x02\x00\x00\x00\x00"), "azure_link_id"),
        (tlv(0xEE, b"\x01\x00\x00\x00\x00\x00"), "azure_link_id"),
        (tlv(0xE0, b"\x00" * 7), "gcp_psc_id"),
        (tlv(0xE0, b"\x00" * 9), "gcp_psc_id"),
    ],
)
def test_malformed_vendor_tlvs_stay_raw(malformed: bytes, field: str) -> None:
    # Vendors define these, not the spec: a layout we don't know is kept, not fatal.
    header = tr(with_tlvs(malformed, tlv(0x01, b"h2")))
    assert getattr(header.tlvs, field) is None
    assert header.tlvs.raw[0] == (malformed[0], malformed[3:])
    assert header.tlvs.alpn == b"h2"


def test_first_well_formed_vendor_tlv_wins() -> None:
    header = tr(
        with_tlvs(
            tlv(0xEA, b"\x02other"),
            tlv(0xEA, b"\x01vpce-first"),
            tlv(0xEA, b"\x01vpce-second"),
        )
    )
    assert header.tlvs.aws_vpce_id == "vpce-first"
    assert len(header.tlvs.raw) == 3


def test_local_header_tlvs_are_parsed_too() -> None:
    # HAProxy's health checks: LOCAL, no address, yet CRC32C and an empty SSL TLV.
    unchecked = v2(0x20, 0x00, tlv(0x03, b"\x00" * 4) + ssl(0, 0))
    data = unchecked[:19] + struct.pack("!I", crc32c(unchecked)) + unchecked[23:]
    header = tr(data)
    assert header.command is pp.Command.LOCAL
    assert header.tlvs.crc32c is not None
    assert header.tlvs.ssl == pp.SSLInfo(client=0, verify=0)


def test_local_tlvs_start_after_the_fixed_part_whatever_the_family() -> None:
    # Spec 2.2: LOCAL's family is ignored; HAProxy reads its TLVs from byte 16, and so do we. A
    # zero-filled INET block reads as four empty TLVs of type 0; the CRC32C covers everything.
    unchecked = v2(0x20, 0x11, bytes(12) + tlv(0x03, b"\x00" * 4) + tlv(0x02, b"check"))
    data = unchecked[:31] + struct.pack("!I", crc32c(unchecked)) + unchecked[35:]
    header = tr(data)
    assert (header.command, header.family) == (pp.Command.LOCAL, pp.Family.INET)
    assert header.source is None
    assert header.tlvs.raw[:4] == ((0x00, b""),) * 4
    assert header.tlvs.authority == "check"
    assert header.tlvs.crc32c == crc32c(unchecked)
