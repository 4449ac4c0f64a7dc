"""The exceptions that proxyproto raises on purpose.

Every one derives from :class:`ProxyProtocolError`, so ``except pp.ProxyProtocolError`` catches
everything the library says about bad input, and nothing else.
"""

from __future__ import annotations

__all__ = [
    "HeaderEncodingError",
    "HeaderRejected",
    "IncompleteHeader",
    "InvalidHeader",
    "InvalidSignature",
    "ProxyProtocolError",
]


class ProxyProtocolError(Exception):
    """Base class of every error that proxyproto raises on purpose."""


class InvalidHeader(ProxyProtocolError):
    """Bytes from the wire that are not a valid PROXY protocol header.

    The message says what was wrong and where, e.g. ``v1: port '080' has a leading zero``.
    """


class InvalidSignature(InvalidHeader):
    """The first bytes are not a PROXY protocol signature at all.

    Raised as soon as one byte rules out both the v1 (``PROXY``) and the v2 signature, e.g. for a
    client that starts with ``GET / HTTP/1.1``. Adapters use it to tell "no header was sent"
    (a direct connection, acceptable under the ``USE``, ``IGNORE`` and ``REJECT`` policies) from
    "a header was sent and it is broken" (always refused).
    """


class IncompleteHeader(ProxyProtocolError):
    """The bytes are a valid start of a header, but more are needed (one-shot :func:`parse`)."""


class HeaderRejected(ProxyProtocolError):
    """A valid header that a policy or a validator refused."""


class HeaderEncodingError(ProxyProtocolError, ValueError):
    """A header or TLV that cannot be encoded on the wire.

    For example mixed address families, a TLV value over 65535 bytes, TLVs in a v1 header, or a
    UNIX path over 108 bytes.
    """
