"""The ``proxy_protocol`` ASGI scope extension, the same from Hypercorn and Uvicorn.

Every HTTP and WebSocket scope of a connection that went through the handshake gets
``scope["extensions"]["proxy_protocol"]``: a dict with

* ``"header"``: the :class:`proxyproto.Header` the connection's addresses came from, or ``None``
  for a direct connection. A header read under ``IGNORE`` is ``None`` here: its sender is not
  trusted, and it was not validated, so neither its addresses nor its TLVs are for the app.
  A LOCAL header (a health check from the proxy itself) is there: trusted, without addresses.
* ``"peer_address"``: the real peer, the proxy (or the client of a direct connection), as
  anyio has it: ``(host, port)``, a path for a UNIX socket, ``None`` when unknown.

With ``tls_extension=True`` (off by default), a connection whose header says the client's
connection was TLS (a PROXY header whose SSL TLV has the ``PP2_CLIENT_SSL`` bit) also gets
``scope["extensions"]["tls"]``, the ASGI TLS extension (asgiref ``specs/tls.rst``, version 0.2),
filled from that TLV: for apps whose TLS ends at the balancer. The spec forbids the extension on
non-TLS connections, so it is never there for a direct connection, a LOCAL header, a header
without an SSL TLV, or one whose SSL TLV says the client was not on TLS. The mapping is
:func:`tls_from_header`'s.

Each connection's app is wrapped once, when its handshake is over: one call more per request
(about a microsecond).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from proxyproto._core.model import Command, Header, SSLClient
from proxyproto._handshake.policy import PeerAddress, Policy

__all__ = (
    "EXTENSION",
    "TLS_EXTENSION",
    "AsgiConnectionApp",
    "HypercornConnectionApp",
    "tls_from_header",
    "trusted_header",
)

#: The key under ``scope["extensions"]``.
EXTENSION = "proxy_protocol"
#: The ASGI TLS extension's key under ``scope["extensions"]``.
TLS_EXTENSION = "tls"

_TYPES = frozenset({"http", "websocket"})


def trusted_header(header: Header | None, policy: Policy) -> Header | None:
    """The header an app may rely on: ``None`` when it was read under ``IGNORE`` (stripped, not
    validated). Under ``REJECT`` a header closes the connection, under ``SKIP`` none is read."""
    return None if policy is Policy.IGNORE else header


# The SSL TLV's version string (OpenSSL's SSL_get_version(), which HAProxy sends) -> the
# version number of the TLS specifications, as the ASGI TLS extension wants it.
_TLS_VERSIONS = {
    "SSLv3": 0x0300,
    "TLSv1": 0x0301,
    "TLSv1.0": 0x0301,
    "TLSv1.1": 0x0302,
    "TLSv1.2": 0x0303,
    "TLSv1.3": 0x0304,
    "DTLSv1": 0xFEFF,
    "DTLSv1.2": 0xFEFD,
    "DTLSv1.3": 0xFEFC,
}

# The SSL TLV's cipher name (OpenSSL's name, as the PROXY spec's example
# "ECDHE-RSA-AES128-GCM-SHA256"; TLS 1.3 suites have their IANA names) -> the IANA cipher suite
# number. Only suites current OpenSSL, BoringSSL and AWS-LC builds offer by default or commonly
# enable; a name not here gives None (the spec's "unable to provide"), never a guess. Each
# entry is checked against the local OpenSSL's own numbers by a test.
_CIPHER_SUITES = {
    # TLS 1.3 (RFC 8446 B.4)
    "TLS_AES_128_GCM_SHA256": 0x1301,
    "TLS_AES_256_GCM_SHA384": 0x1302,
    "TLS_CHACHA20_POLY1305_SHA256": 0x1303,
    "TLS_AES_128_CCM_SHA256": 0x1304,
    "TLS_AES_128_CCM_8_SHA256": 0x1305,
    # TLS 1.2 AEAD (RFC 5289, RFC 5288, RFC 7905)
    "ECDHE-ECDSA-AES128-GCM-SHA256": 0xC02B,
    "ECDHE-ECDSA-AES256-GCM-SHA384": 0xC02C,
    "ECDHE-RSA-AES128-GCM-SHA256": 0xC02F,
    "ECDHE-RSA-AES256-GCM-SHA384": 0xC030,
    "ECDHE-ECDSA-CHACHA20-POLY1305": 0xCCA9,
    "ECDHE-RSA-CHACHA20-POLY1305": 0xCCA8,
    "DHE-RSA-CHACHA20-POLY1305": 0xCCAA,
    "DHE-RSA-AES128-GCM-SHA256": 0x009E,
    "DHE-RSA-AES256-GCM-SHA384": 0x009F,
    "AES128-GCM-SHA256": 0x009C,
    "AES256-GCM-SHA384": 0x009D,
    # CBC (RFC 5289, RFC 4492, RFC 5246, RFC 3268)
    "ECDHE-ECDSA-AES128-SHA256": 0xC023,
    "ECDHE-ECDSA-AES256-SHA384": 0xC024,
    "ECDHE-RSA-AES128-SHA256": 0xC027,
    "ECDHE-RSA-AES256-SHA384": 0xC028,
    "ECDHE-ECDSA-AES128-SHA": 0xC009,
    "ECDHE-ECDSA-AES256-SHA": 0xC00A,
    "ECDHE-RSA-AES128-SHA": 0xC013,
    "ECDHE-RSA-AES256-SHA": 0xC014,
    "DHE-RSA-AES128-SHA256": 0x0067,
    "DHE-RSA-AES256-SHA256": 0x006B,
    "DHE-RSA-AES128-SHA": 0x0033,
    "DHE-RSA-AES256-SHA": 0x0039,
    "AES128-SHA256": 0x003C,
    "AES256-SHA256": 0x003D,
    "AES128-SHA": 0x002F,
    "AES256-SHA": 0x0035,
}

_PRESENTED = SSLClient.CERT_CONN | SSLClient.CERT_SESS


def tls_from_header(header: Header | None) -> dict[str, Any] | None:
    """The ASGI TLS extension (``scope["extensions"]["tls"]``) for a connection whose TLS ended
    at the proxy, from the header's SSL TLV; ``None`` unless the header is a PROXY header whose
    SSL TLV says the client connected over TLS (the spec forbids the extension otherwise).

    Only what the TLV carries: ``server_cert`` is ``None`` (the balancer's certificate is not
    sent); ``client_cert_chain`` holds the client certificate alone (PEM), when the header has
    ``PP2_SUBTYPE_SSL_CLIENT_CERT``; ``client_cert_name`` is ``"CN=<the CN TLV>"`` in RFC 4514
    escaping -- the TLV carries the subject's common name only, not the whole subject DN;
    ``client_cert_error`` is set when a certificate was presented and the proxy's ``verify`` is
    not 0; ``tls_version`` and ``cipher_suite`` are the numbers of the version and cipher names,
    ``None`` for a name not known here.

    >>> from proxyproto import Header, SSLClient, SSLInfo, TLVs
    >>> info = SSLInfo(client=SSLClient.SSL | SSLClient.CERT_CONN, verify=0, cn="alice",
    ...                version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384")
    >>> tls = tls_from_header(Header.proxy(("192.0.2.1", 5000), ("192.0.2.2", 443),
    ...                                  tlvs=TLVs(ssl=info)))
    >>> tls["client_cert_name"], hex(tls["tls_version"]), hex(tls["cipher_suite"])
    ('CN=alice', '0x304', '0x1302')
    """
    if header is None or header.command is not Command.PROXY:
        return None
    info = header.tlvs.ssl
    if info is None or not info.ssl:
        return None
    # HAProxy sends verify=0 when no certificate was presented: the flags say whether one was.
    presented = bool(info.client & _PRESENTED)
    chain: tuple[str, ...] = ()
    name = error = None
    if presented:
        if info.client_cert is not None:
            chain = (ssl.DER_cert_to_PEM_cert(info.client_cert),)
        if info.cn is not None:
            name = f"CN={_rfc4514_value(info.cn)}"
        if info.verify != 0:
            error = f"the proxy could not verify the client certificate (verify={info.verify})"
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": error,
        "tls_version": None if info.version is None else _TLS_VERSIONS.get(info.version),
        "cipher_suite": None if info.cipher is None else _CIPHER_SUITES.get(info.cipher),
    }


_RFC4514_SPECIAL = frozenset('"+,;<>\\')


def _rfc4514_value(value: str) -> str:
    """An attribute value escaped as RFC 4514 section 2.4 says."""
    escaped = []
    last = len(value) - 1
    for index, char in enumerate(value):
        if char == "\0":
            escaped.append("\\00")
        elif (
            char in _RFC4514_SPECIAL
            or (index == 0 and char in " #")
            or (index == last and char == " ")
        ):
            escaped.append("\\" + char)
        else:
            escaped.append(char)
    return "".join(escaped)


class _ConnectionApp:
    """What both servers' wrappers share: the app, and what one connection adds to each scope."""

    __slots__ = ("_app", "_header", "_peer", "_tls")

    def __init__(
        self, app: Any, header: Header | None, peer: PeerAddress, *, tls_extension: bool = False
    ) -> None:
        self._app = app
        self._header = header
        self._peer = peer
        #: The TLS extension of this connection (with ``tls_extension``), or None.
        self._tls = tls_from_header(header) if tls_extension else None

    def _add(self, scope: dict[str, Any]) -> None:
        if scope["type"] not in _TYPES:
            return
        # Every server here builds each scope's extensions dict anew (a literal per scope), so
        # it is added to in place; new dicts per scope, so an app cannot change the next one's.
        extensions = scope.get("extensions")
        if extensions is None:
            extensions = scope["extensions"] = {}
        extensions[EXTENSION] = {"header": self._header, "peer_address": self._peer}
        if self._tls is not None:
            extensions[TLS_EXTENSION] = self._tls.copy()


class AsgiConnectionApp(_ConnectionApp):
    """An ASGI 3 app (Uvicorn's) for one connection: the app, with the extensions in the scope."""

    __slots__ = ()

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        self._add(scope)
        return self._app(scope, receive, send)  # type: ignore[no-any-return]


class HypercornConnectionApp(_ConnectionApp):
    """Hypercorn's app wrapper (``AppWrapper``) for one connection, with the extensions."""

    __slots__ = ()

    def __call__(
        self,
        scope: dict[str, Any],
        receive: Any,
        send: Any,
        sync_spawn: Callable[..., Any],
        call_soon: Callable[..., Any],
    ) -> Awaitable[None]:
        self._add(scope)
        return self._app(scope, receive, send, sync_spawn, call_soon)  # type: ignore[no-any-return]
