"""Feed a HeaderParser bytes as they arrive, the way a server reads a socket.

The parser does no I/O: ``receive_data()`` takes bytes (``b""`` for EOF), ``next_event()``
returns ``NEED_DATA`` until the header is complete, then the ``Header``. Bytes that came after
the header are in ``trailing_data``, untouched, for the application.
"""

import proxyproto as pp

# A v2 header for 192.0.2.1:56324 -> 198.51.100.7:443 and the client's first bytes, arriving
# in three reads that split the header in awkward places.
reads = [
    bytes.fromhex("0d0a0d0a000d0a51"),
    bytes.fromhex("5549540a2111000cc0000201c633"),
    bytes.fromhex("6407dc0401bb") + b"GET / HTTP/1.1\r\n",
]

parser = pp.HeaderParser()
for number, chunk in enumerate(reads, 1):
    parser.receive_data(chunk)
    event = parser.next_event()
    print(f"read {number}: {len(chunk):2} bytes -> {event!r}")
    if event is not pp.NEED_DATA:
        break
else:
    raise AssertionError("the header should be complete after the last read")

assert isinstance(event, pp.Header)
header = event
print(f"client {header.source}, trailing data {parser.trailing_data!r}")
assert header.source == ("192.0.2.1", 56324)
assert parser.trailing_data == b"GET / HTTP/1.1\r\n"

# Reject early: one byte that cannot start a header is enough, no timeout needed.
parser = pp.HeaderParser()
parser.receive_data(b"G")
try:
    parser.next_event()
except pp.InvalidSignature as error:
    print(f"after 1 byte: {error}")
    # No header was sent; the bytes so far are still there for a policy that allows that.
    assert parser.trailing_data == b"G"
else:
    raise AssertionError("'G' cannot start a PROXY header")

# The peer closes mid-header: EOF turns "waiting" into "invalid".
parser = pp.HeaderParser()
parser.receive_data(b"PROXY TCP4 192.0.2.1")
assert parser.next_event() is pp.NEED_DATA
parser.receive_data(b"")
try:
    parser.next_event()
except pp.InvalidHeader as error:
    print(f"at EOF: {error}")
else:
    raise AssertionError("a header cut short by EOF is invalid")

# Accept only v2, and cap the size: both are checked while waiting, not at the end.
parser = pp.HeaderParser(versions=(2,), max_header_size=256)
parser.receive_data(b"PROXY ")
try:
    parser.next_event()
except pp.InvalidSignature as error:
    print(f"v2 only: {error}")
else:
    raise AssertionError("v1 was not accepted")
