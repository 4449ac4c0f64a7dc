"""Build headers, v2 with TLVs and a CRC32C, and v1, then parse them back.

``Header.proxy()`` takes the addresses in the same ``(host, port)`` shape the parser returns;
``to_bytes()`` encodes the header per its version. What cannot be encoded is refused with
``HeaderEncodingError`` (a ``ValueError``), never sent corrupt.
"""

import proxyproto as pp

# A v2 header, as a TLS-terminating proxy would send it to the backend.
tlvs = pp.TLVs(
    alpn=b"h2",
    authority="example.com",
    unique_id=b"req-0001",
    ssl=pp.SSLInfo(
        client=pp.SSLClient.SSL,
        version="TLSv1.3",
        cipher="TLS_AES_128_GCM_SHA256",
        group="X25519",
    ),
)
header = pp.Header.proxy(("2001:db8::1", 56324), ("2001:db8::2", 443), tlvs=tlvs)
wire = header.to_bytes(crc32c=True)
print(f"v2, {len(wire)} bytes: {wire[:16].hex()}...")

parsed, consumed = pp.parse(wire)  # the CRC32C is verified on the way in
assert consumed == len(wire)
assert (parsed.source, parsed.destination) == (header.source, header.destination)
assert parsed.tlvs.alpn == b"h2"
assert parsed.tlvs.authority == "example.com"
assert parsed.tlvs.ssl is not None
assert parsed.tlvs.ssl.group == "X25519"
assert parsed.tlvs.crc32c is not None
print(f"parsed back: {parsed.source} -> {parsed.destination}, TLS group {parsed.tlvs.ssl.group}")

# Padding to a fixed size with a NOOP TLV (some receivers read a fixed-size first chunk).
assert len(header.to_bytes(pad_to=256)) == 256

# v1, for receivers that only speak the text format.
v1 = pp.Header.proxy(("192.0.2.1", 56324), ("198.51.100.7", 443), version=1).to_bytes()
print(f"v1: {v1!r}")
assert v1 == b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n"

# The proxy's own connections: LOCAL (v2) and UNKNOWN (v1).
print(f"LOCAL: {pp.Header.local().to_bytes().hex()}, UNKNOWN: {pp.Header.unknown().to_bytes()!r}")

# One header, one address family.
try:
    pp.Header.proxy(("192.0.2.1", 56324), ("2001:db8::2", 443))
except pp.HeaderEncodingError as error:
    print(f"refused: {error}")
else:
    raise AssertionError("mixed address families cannot be encoded")
