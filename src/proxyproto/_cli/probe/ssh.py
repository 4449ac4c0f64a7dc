"""SSH: the client's protocol version exchange (RFC 4253 section 4.2).

The client sends ``SSH-protoversion-softwareversion`` at once; ``SSH-2.0-`` (and ``SSH-1.99-``,
a server-compatible 2.0) is enough to decide.
"""

from __future__ import annotations

from ._base import NO_MATCH, Match, Result

__all__ = ["probe_ssh"]

_PREFIXES = (b"SSH-2.0-", b"SSH-1.99-")
_MATCH = Match("ssh")


def probe_ssh(data: bytes) -> Result:
    """``SSH-2.0-`` at the start of ``data``.

    >>> probe_ssh(b"SSH-2.0-OpenSSH_9.6\\r\\n")
    Match(protocol='ssh', server_name=None, alpns=())
    """
    possible = False
    for prefix in _PREFIXES:
        if data.startswith(prefix):
            return _MATCH
        possible = possible or prefix.startswith(data)
    return len(data) + 1 if possible else NO_MATCH
