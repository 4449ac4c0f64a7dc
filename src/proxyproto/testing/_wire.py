"""What a fake balancer, the httpx transport and the raw helper put on the wire first: a header's
bytes, cut into the segments the test asks for.

No I/O here, so the sync httpx transport and the async ones share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import TypeAlias

from proxyproto._core.model import Header

__all__ = ["HeaderSpec", "header_bytes", "segments"]

#: A header to send: a :class:`~proxyproto.Header` (encoded with ``to_bytes``), or raw bytes sent
#: as they are -- for testing how a server refuses a malformed header.
HeaderSpec: TypeAlias = Header | bytes


def header_bytes(header: HeaderSpec, *, crc32c: bool = False) -> bytes:
    """The bytes of ``header``: raw bytes unchanged, a :class:`~proxyproto.Header` encoded -- a v2
    one with a CRC32C TLV when ``crc32c`` (v1 has no TLVs: ``crc32c`` does not apply to it nor to
    raw bytes, so one setting can serve every header a test sends).

    >>> import proxyproto as pp
    >>> from proxyproto.testing import header_bytes
    >>> header_bytes(pp.Header.unknown(), crc32c=True)
    b'PROXY UNKNOWN\\r\\n'
    """
    if isinstance(header, bytes):
        return header
    return header.to_bytes(crc32c=crc32c and header.version == 2)


def segments(
    data: bytes, *, split_at: Sequence[int] = (), byte_at_a_time: bool = False
) -> list[bytes]:
    """``data`` cut at the offsets ``split_at`` (each one sent in a write of its own), or into
    single bytes. Empty pieces are dropped; an offset outside ``data`` is an error.

    >>> from proxyproto.testing import segments
    >>> segments(b"PROXY UNKNOWN\\r\\n", split_at=[5, 13])
    [b'PROXY', b' UNKNOWN', b'\\r\\n']
    >>> segments(b"abc", byte_at_a_time=True)
    [b'a', b'b', b'c']
    """
    if byte_at_a_time:
        if split_at:
            raise ValueError("give split_at or byte_at_a_time, not both")
        return [data[i : i + 1] for i in range(len(data))]
    offsets = sorted(set(split_at))
    if offsets and not (offsets[0] >= 0 and offsets[-1] <= len(data)):
        raise ValueError(f"split_at {list(split_at)} goes outside the {len(data)} header bytes")
    bounds = [0, *offsets, len(data)]
    return [data[a:b] for a, b in pairwise(bounds) if b > a]
