"""Parse a whole PROXY protocol header from the start of a buffer, v1 and v2 alike.

``pp.parse(data)`` returns the header and how many bytes it took; what follows belongs to the
application. It raises ``IncompleteHeader`` while ``data`` is a valid start of a header and
``InvalidHeader`` as soon as it cannot be one.
"""

import proxyproto as pp

# What HAProxy's `send-proxy` puts in front of the client's first bytes.
data = b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\nGET / HTTP/1.1\r\n"
header, consumed = pp.parse(data)
print(f"v{header.version} {header.command.name}: {header.source} -> {header.destination}")
print(f"application data: {data[consumed:]!r}")
assert header.source == ("192.0.2.1", 56324)
assert header.destination == ("198.51.100.7", 443)
assert data[consumed:] == b"GET / HTTP/1.1\r\n"

# `send-proxy-v2` with ALPN and AUTHORITY TLVs: the same call, the same model.
data = bytes.fromhex(
    "0d0a0d0a000d0a515549540a"  # v2 signature
    "2111001f"  # PROXY, TCP over IPv4, 31 bytes follow
    "c0000201c6336407dc0401bb"  # 192.0.2.1:56324 -> 198.51.100.7:443
    "0100026832"  # ALPN "h2"
    "02000b6578616d706c652e636f6d"  # AUTHORITY "example.com"
)
header, consumed = pp.parse(data)
print(f"v{header.version} {header.family.name}/{header.transport.name}: {header.source}")
print(f"ALPN {header.tlvs.alpn!r}, authority {header.tlvs.authority!r}")
assert (header.tlvs.alpn, header.tlvs.authority) == (b"h2", "example.com")
assert consumed == len(data)

# Not a header at all: refused at the first byte, with a reason.
try:
    pp.parse(b"GET / HTTP/1.1\r\n")
except pp.InvalidSignature as error:
    print(f"refused: {error}")
else:
    raise AssertionError("an HTTP request is not a PROXY header")

# Strict by default: a receiver must not guess (spec 2.1).
try:
    pp.parse(b"PROXY TCP4 192.0.2.1 198.51.100.7 080 443\r\n")
except pp.InvalidHeader as error:
    print(f"refused: {error}")
else:
    raise AssertionError("a leading zero in a port is invalid")

# A valid start, cut short: more bytes are needed.
try:
    pp.parse(b"PROXY TCP4 192.0.2.1 ")
except pp.IncompleteHeader:
    print("incomplete: read more and try again")
else:
    raise AssertionError("the header has no CRLF yet")
