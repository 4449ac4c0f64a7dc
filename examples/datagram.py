"""PROXY protocol over UDP: every datagram carries its own v2 header and its payload.

``parse_datagram()`` splits one datagram; an incomplete header is invalid, never a reason to wait.
"""

import proxyproto as pp

header = pp.Header.proxy(("192.0.2.1", 5353), ("198.51.100.7", 53), transport=pp.Transport.DGRAM)
datagram = header.to_bytes() + b"\x12\x34 a DNS query"

parsed, payload = pp.parse_datagram(datagram)
print(f"{parsed.transport.name} from {parsed.source}, payload {payload!r}")
assert parsed == header
assert payload == b"\x12\x34 a DNS query"

try:
    pp.parse_datagram(datagram[:20])
except pp.InvalidHeader as error:
    print(f"refused: {error}")
else:
    raise AssertionError("a truncated header in a datagram is invalid")
