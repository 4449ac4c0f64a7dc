"""HTTP/1.x (a request line of a known method) and the HTTP/2 connection preface (cleartext).

RFC 9112 section 3: ``method SP request-target SP HTTP-version CRLF``; RFC 9113 section 3.4:
the prior-knowledge preface ``PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n``. Only the first line
is read: a client sends it before waiting for anything.
"""

from __future__ import annotations

import re

from ._base import NO_MATCH, Match, Result

__all__ = ["probe_http"]

#: RFC 9110 section 9 and RFC 5789 (PATCH).
METHODS = (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: A request line longer than this is not routed (servers refuse far shorter ones).
MAX_LINE = 8192

_REQUEST_LINE = re.compile(rb"([A-Z]+) [\x21-\x7e]+ HTTP/1\.[01]\r?\n")
_TARGET = re.compile(rb"[\x21-\x7e]*")
_VERSION = b"HTTP/1."
_MATCH = Match("http")


def probe_http(data: bytes) -> Result:
    """HTTP/1.0, 1.1 or the HTTP/2 preface at the start of ``data``.

    >>> probe_http(b"GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n")
    Match(protocol='http', server_name=None, alpns=())
    """
    if PREFACE.startswith(data[: len(PREFACE)]) and data:
        return _MATCH if len(data) >= len(PREFACE) else len(data) + 1
    end = data.find(b"\n", 0, MAX_LINE)
    if end < 0:
        if len(data) >= MAX_LINE or not _could_be_request_line(data):
            return NO_MATCH
        return len(data) + 1
    line = _REQUEST_LINE.fullmatch(data, 0, end + 1)
    return _MATCH if line is not None and line[1] in METHODS else NO_MATCH


def _could_be_request_line(data: bytes) -> bool:
    """Whether ``data`` (no line feed in it) may still become a request line."""
    method, space, rest = data.partition(b" ")
    if not space:
        return any(known.startswith(method) for known in METHODS)
    if method not in METHODS:
        return False
    target, space, version = rest.partition(b" ")
    if _TARGET.fullmatch(target) is None:
        return False
    if not space:
        return True
    if not target:
        return False
    if len(version) <= len(_VERSION):
        return _VERSION.startswith(version)
    return (
        version.startswith(_VERSION)
        and version[7:8] in (b"0", b"1")
        and version[8:] in (b"", b"\r")
    )
