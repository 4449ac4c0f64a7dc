"""Uvicorn's internals that :mod:`proxyproto.uvicorn` depends on, and their fingerprints.

:mod:`proxyproto.uvicorn` subclasses Uvicorn's HTTP protocols (``--http module:Class`` is
Uvicorn's public hook; the classes it subclasses are not public) and overrides some of their
methods; on a WebSocket upgrade it relies on how Uvicorn's WebSocket protocols take the client
and the app. Every Uvicorn import of ours is here. :data:`USES` lists each Uvicorn object we
override or rely on, with what of ours depends on it; :data:`KNOWN` is each one's fingerprint
(:mod:`proxyproto._servers.fingerprint`) in the releases checked. ``tests/test_server_compat.py``
fails, naming the object, when the installed Uvicorn has one that matches none of them.

To admit a new release: read what changed in the named objects, follow it in
``proxyproto/uvicorn.py``, run ``nox -s servers``, then add the release's fingerprints here
(``python -m proxyproto._servers.uvicorn_compat`` prints them).
"""

from __future__ import annotations

from uvicorn.config import Config
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from .fingerprint import drift, record

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed
    HttpToolsProtocol = None  # type: ignore[assignment, misc]

__all__ = (
    "KNOWN",
    "USES",
    "Config",
    "H11Protocol",
    "HttpToolsProtocol",
    "ProxyHeadersMiddleware",
    "ServerState",
    "check",
)

_OVERRIDDEN = (
    "__init__",
    "connection_made",
    "data_received",
    "eof_received",
    "connection_lost",
    "shutdown",
    "pause_writing",
    "resume_writing",
    "handle_websocket_upgrade",
)
_HTTP = {
    "h11": "uvicorn.protocols.http.h11_impl.H11Protocol",
    "httptools": "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol",
}
_WEBSOCKET = (
    "uvicorn.protocols.websockets.wsproto_impl.WSProtocol",
    "uvicorn.protocols.websockets.websockets_impl.WebSocketProtocol",
    "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol",
)

#: Each Uvicorn object we override or rely on, and what of ours depends on it.
USES: dict[str, str] = {
    **{
        f"{path}.{method}": f"proxyproto.uvicorn._ProxyProtocolMixin.{method} (overrides it)"
        for path in _HTTP.values()
        for method in _OVERRIDDEN
    },
    **{
        f"{path}.{method}": (
            "proxyproto.uvicorn._ProxyProtocolMixin.handle_websocket_upgrade (the client from the "
            "transport's peer, the app from .app)"
        )
        for path in _WEBSOCKET
        for method in ("__init__", "connection_made")
    },
    "uvicorn.middleware.proxy_headers.ProxyHeadersMiddleware.__init__": (
        "proxyproto.uvicorn._ProxyProtocolMixin.__init__ (takes it off the app)"
    ),
}

#: Each object's fingerprints, and the Uvicorn releases checked that have each.
KNOWN: dict[str, dict[str, str]] = {
    "uvicorn.protocols.http.h11_impl.H11Protocol.__init__": {
        "7aaa741097e46944": "0.36.0 0.40.0",
        "e653567bc8024f38": "0.45.0",
        "5ea1fd1e10d71b4f": "0.50.0 0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.protocols.http.h11_impl.H11Protocol.connection_made": {
        "86b5f415d0f6f71d": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.h11_impl.H11Protocol.data_received": {
        "54d47d5a8f55a657": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.h11_impl.H11Protocol.eof_received": {
        "52c13f019c5c40f3": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.h11_impl.H11Protocol.connection_lost": {
        "f30f4d50d3893906": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.h11_impl.H11Protocol.shutdown": {
        "03c7eee5b8586995": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.h11_impl.H11Protocol.pause_writing": {
        "555d3061cdd8bfed": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.h11_impl.H11Protocol.resume_writing": {
        "423c4cce9cd09863": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.h11_impl.H11Protocol.handle_websocket_upgrade": {
        "864eaea6ea700e05": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0",
        "cf3d075d180259c0": "0.55.0",
    },
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.__init__": {
        "dde99ed525863de4": "0.36.0 0.40.0",
        "4900317813a0a844": "0.45.0",
        "80bc5e98d525c9f5": "0.50.0 0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.connection_made": {
        "86b5f415d0f6f71d": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.data_received": {
        "cfb48d758978bf71": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.eof_received": {
        "52c13f019c5c40f3": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.connection_lost": {
        "b376accd2bad0c64": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.shutdown": {
        "8d4d4fff92a24447": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.pause_writing": {
        "555d3061cdd8bfed": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.resume_writing": {
        "423c4cce9cd09863": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.handle_websocket_upgrade": {
        "335f26f7331bfa18": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0",
        "16288acfe5146502": "0.55.0",
    },
    "uvicorn.protocols.websockets.wsproto_impl.WSProtocol.__init__": {
        "f5b2af185dec4381": "0.36.0 0.40.0",
        "9cdcfadda1b564d8": "0.45.0",
        "c55a3aa60c1225dc": "0.50.0",
        "4ebceeec34b6a562": "0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.protocols.websockets.wsproto_impl.WSProtocol.connection_made": {
        "048a89ddf7eee1ad": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.websockets.websockets_impl.WebSocketProtocol.__init__": {
        "65d6d6d8b6118521": "0.36.0 0.40.0",
        "ba9a327823337909": "0.45.0",
        "ae8bb4cfa66179d8": "0.50.0 0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.protocols.websockets.websockets_impl.WebSocketProtocol.connection_made": {
        "343ce8ed86bb5ff7": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol.__init__": {
        "eb2e7517aadaebcb": "0.36.0 0.40.0",
        "ae4c9ae3494394c9": "0.45.0",
        "4a4ffb53b1ac87a4": "0.50.0",
        "4c8d8e503e1ec924": "0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol.connection_made": {  # noqa: E501
        "781fdd3e771927bc": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.middleware.proxy_headers.ProxyHeadersMiddleware.__init__": {
        "e34dc067daacaae7": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
}


def check() -> list[str]:
    """What the installed Uvicorn changed in :data:`USES`, one line each (empty: nothing)."""
    return drift("uvicorn", KNOWN, USES, "proxyproto/_servers/uvicorn_compat.py")


if __name__ == "__main__":  # pragma: no cover - a maintainer's tool
    import pprint
    from importlib import metadata

    # KNOWN with the installed release recorded: paste it over KNOWN above.
    pprint.pprint(record(list(USES), KNOWN, metadata.version("uvicorn")), width=96)
