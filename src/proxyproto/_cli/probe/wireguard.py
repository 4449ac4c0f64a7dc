"""WireGuard: the handshake initiation, the first datagram of a session.

The WireGuard paper (section 5.4.2): ``type (1) | reserved (3 zero bytes) | sender (4) |
ephemeral (32) | static (32+16) | timestamp (12+16) | mac1 (16) | mac2 (16)``: 148 bytes.
"""

from __future__ import annotations

from ._base import NO_MATCH, Match, Result

__all__ = ["INITIATION_SIZE", "probe_wireguard"]

INITIATION_SIZE = 148
_MATCH = Match("wireguard")


def probe_wireguard(datagram: bytes) -> Result:
    """A handshake initiation: ``datagram`` is one whole datagram.

    >>> probe_wireguard(b"\\x01\\x00\\x00\\x00" + bytes(144))
    Match(protocol='wireguard', server_name=None, alpns=())
    """
    if len(datagram) == INITIATION_SIZE and datagram.startswith(b"\x01\x00\x00\x00"):
        return _MATCH
    return NO_MATCH
