"""SOCKS5: the client's greeting (RFC 1928 section 3).

``VER (5) | NMETHODS (1..255) | METHODS (NMETHODS bytes)``; the client then waits for the
server's choice, so the greeting is all there is to read.
"""

from __future__ import annotations

from ._base import NO_MATCH, Match, Result

__all__ = ["probe_socks5"]

_MATCH = Match("socks5")


def probe_socks5(data: bytes) -> Result:
    """A SOCKS5 greeting at the start of ``data``; any byte after it means it is not one.

    >>> probe_socks5(b"\\x05\\x01\\x00")
    Match(protocol='socks5', server_name=None, alpns=())
    """
    if not data:
        return 1
    if data[0] != 5:
        return NO_MATCH
    if len(data) < 2:
        return 2
    if data[1] == 0:
        return NO_MATCH
    size = 2 + data[1]
    if len(data) < size:
        return size
    # More than a greeting before the server answered: not a SOCKS5 client.
    return _MATCH if len(data) == size else NO_MATCH
