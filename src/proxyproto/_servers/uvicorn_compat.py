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
        "99607c77811dca9f": "0.36.0 0.40.0",
        "07a582424b43d53c": "0.45.0",
        "1abb7a78eca551d2": "0.50.0 0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.protocols.http.h11_impl.H11Protocol.connection_made": {
        "d73c844ad25bfcfa": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.h11_impl.H11Protocol.data_received": {
        "fdbe8f1922cd7673": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.h11_impl.H11Protocol.eof_received": {
        "463e2d67aaf510f8": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.h11_impl.H11Protocol.connection_lost": {
        "d1c833d52d724543": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.h11_impl.H11Protocol.shutdown": {
        "1515cc41c7b9a0e6": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.h11_impl.H11Protocol.pause_writing": {
        "a3b3f38f0844f42a": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.h11_impl.H11Protocol.resume_writing": {
        "4f7f57923e12709e": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.h11_impl.H11Protocol.handle_websocket_upgrade": {
        "fb4fad34a6d69da7": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0",
        "43598a3d0af99519": "0.55.0",
    },
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.__init__": {
        "f0d08996e2c606e7": "0.36.0 0.40.0",
        "a231b4fd1f4b7d88": "0.45.0",
        "fcb8cf9a66b39003": "0.50.0 0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.connection_made": {
        "d73c844ad25bfcfa": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.data_received": {
        "bcda1a3a703b0a70": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.eof_received": {
        "463e2d67aaf510f8": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.connection_lost": {
        "f3757183d8484706": "0.36.0 0.40.0 0.45.0",
        "8da12f8c453a23cd": "0.50.0 0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.shutdown": {
        "4372fe9ca7a194c2": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.pause_writing": {
        "a3b3f38f0844f42a": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.resume_writing": {
        "4f7f57923e12709e": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.handle_websocket_upgrade": {
        "ddfead7ed2206eac": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0",
        "c6b1adec3da787aa": "0.55.0",
    },
    "uvicorn.protocols.websockets.wsproto_impl.WSProtocol.__init__": {
        "8e9e9023342a610c": "0.36.0 0.40.0",
        "9be1f572d3f69af9": "0.45.0",
        "8e6061b56086881d": "0.50.0",
        "689999c4b1594d60": "0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.protocols.websockets.wsproto_impl.WSProtocol.connection_made": {
        "da7bcbb17c063c2a": "0.36.0 0.40.0 0.45.0",
        "cf147f381824a442": "0.50.0 0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.protocols.websockets.websockets_impl.WebSocketProtocol.__init__": {
        "bfa6b1a05cdf82c4": "0.36.0 0.40.0",
        "69a761094cceda7a": "0.45.0",
        "9af6b9d8035355df": "0.50.0 0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.protocols.websockets.websockets_impl.WebSocketProtocol.connection_made": {
        "e31c803e9fe563cb": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol.__init__": {
        "0e85423c552624b1": "0.36.0 0.40.0",
        "a936ea7446d0cd38": "0.45.0",
        "5848792150cba8b0": "0.50.0",
        "634801d9575ea2f7": "0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol.connection_made": {  # noqa: E501
        "fda7d91fa45ce4b6": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
    },
    "uvicorn.middleware.proxy_headers.ProxyHeadersMiddleware.__init__": {
        "8cfe897e3c901fcc": "0.36.0 0.40.0 0.45.0 0.50.0 0.53.0 0.54.0 0.55.0"
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
