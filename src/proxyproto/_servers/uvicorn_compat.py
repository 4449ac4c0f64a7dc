"""Uvicorn's internals that :mod:`proxyproto.uvicorn` depends on, and their fingerprints.

:mod:`proxyproto.uvicorn` plugs in through Uvicorn's public hook, the ``http=`` protocol class
(``--http module:Class``), and hands each accepted connection to Uvicorn's own protocol by
composition, as Uvicorn's ``AutoZttpProtocol`` does: it subclasses and overrides nothing of
Uvicorn's. It still relies on how Uvicorn's protocols behave: they are built with
``(config, server_state, app_state, _loop)`` and call ``config.loaded_app`` (which is how each
connection's app carries the scope extension, WebSocket included), they take the client from the
transport (``get_remote_addr``), and ``Server.shutdown`` calls ``shutdown()`` on every protocol
in ``server_state.connections`` (which is how a shutdown reaches a pending handshake). Every
Uvicorn import of ours is here. :data:`USES` lists each Uvicorn object we rely on, with what of
ours depends on it; :data:`KNOWN` is each one's fingerprint
(:mod:`proxyproto._servers.fingerprint`) in the releases checked. ``tests/test_server_compat.py``
fails, naming the object, when the installed Uvicorn has one that matches none of them.

The zttp protocol exists from Uvicorn 0.52 (``uvicorn.protocols.http.zttp_impl``, which needs
the ``zttp`` package): :data:`ZttpProtocol` is ``None`` where it does not.

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

try:
    # Uvicorn 0.55 and later, with zttp installed.
    from uvicorn.protocols.http.zttp_impl import ZttpProtocol
except ImportError:
    ZttpProtocol = None  # type: ignore[assignment, misc]

__all__ = (
    "KNOWN",
    "USES",
    "Config",
    "H11Protocol",
    "HttpToolsProtocol",
    "ProxyHeadersMiddleware",
    "ServerState",
    "ZttpProtocol",
    "check",
)

_HTTP = {
    "h11": "uvicorn.protocols.http.h11_impl.H11Protocol",
    "httptools": "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol",
    "zttp": "uvicorn.protocols.http.zttp_impl.ZttpProtocol",
}
_WEBSOCKET = (
    "uvicorn.protocols.websockets.wsproto_impl.WSProtocol",
    "uvicorn.protocols.websockets.websockets_impl.WebSocketProtocol",
    "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol",
)
_CLIENT_AND_APP = (
    "proxyproto.uvicorn._ProxyProtocol._accept (the app from config.loaded_app, the client "
    "from the transport's peer)"
)

#: Each Uvicorn object we rely on, and what of ours depends on it.
USES: dict[str, str] = {
    **{
        f"{path}.{method}": _CLIENT_AND_APP
        for path in (*_HTTP.values(), *_WEBSOCKET)
        for method in ("__init__", "connection_made")
    },
    "uvicorn.protocols.utils.get_remote_addr": (
        "proxyproto.uvicorn._ProxiedTransport (the client from the socket's getpeername(), "
        "else peername)"
    ),
    "uvicorn.server.Server.shutdown": (
        "proxyproto.uvicorn._ProxyProtocol.shutdown (called for each of server_state.connections)"
    ),
    "uvicorn.middleware.proxy_headers.ProxyHeadersMiddleware.__init__": (
        "proxyproto.uvicorn._ProxyProtocol.__init__ (takes it off the app)"
    ),
}

#: Each object's fingerprints, and the Uvicorn releases checked that have each.
KNOWN: dict[str, dict[str, str]] = {
    "uvicorn.protocols.http.h11_impl.H11Protocol.__init__": {
        "99607c77811dca9f": "0.36.0",
        "07a582424b43d53c": "0.45.0",
        "1abb7a78eca551d2": "0.50.0 0.52.0 0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.protocols.http.h11_impl.H11Protocol.connection_made": {
        "d73c844ad25bfcfa": "0.36.0 0.45.0 0.50.0 0.52.0 0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.__init__": {
        "f0d08996e2c606e7": "0.36.0",
        "a231b4fd1f4b7d88": "0.45.0",
        "fcb8cf9a66b39003": "0.50.0 0.52.0 0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.connection_made": {
        "d73c844ad25bfcfa": "0.36.0 0.45.0 0.50.0 0.52.0 0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.protocols.http.zttp_impl.ZttpProtocol.__init__": {
        "missing": "0.36.0 0.45.0 0.50.0",
        "79ebba820db86aa6": "0.52.0 0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.protocols.http.zttp_impl.ZttpProtocol.connection_made": {
        "missing": "0.36.0 0.45.0 0.50.0",
        "d73c844ad25bfcfa": "0.52.0 0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.protocols.websockets.wsproto_impl.WSProtocol.__init__": {
        "8e9e9023342a610c": "0.36.0",
        "9be1f572d3f69af9": "0.45.0",
        "8e6061b56086881d": "0.50.0 0.52.0",
        "689999c4b1594d60": "0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.protocols.websockets.wsproto_impl.WSProtocol.connection_made": {
        "da7bcbb17c063c2a": "0.36.0 0.45.0",
        "cf147f381824a442": "0.50.0 0.52.0 0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.protocols.websockets.websockets_impl.WebSocketProtocol.__init__": {
        "bfa6b1a05cdf82c4": "0.36.0",
        "69a761094cceda7a": "0.45.0",
        "9af6b9d8035355df": "0.50.0 0.52.0 0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.protocols.websockets.websockets_impl.WebSocketProtocol.connection_made": {
        "e31c803e9fe563cb": "0.36.0 0.45.0 0.50.0 0.52.0 0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol.__init__": {
        "0e85423c552624b1": "0.36.0",
        "a936ea7446d0cd38": "0.45.0",
        "5848792150cba8b0": "0.50.0 0.52.0",
        "634801d9575ea2f7": "0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol.connection_made": {  # noqa: E501
        "fda7d91fa45ce4b6": "0.36.0 0.45.0 0.50.0 0.52.0 0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.protocols.utils.get_remote_addr": {
        "0411244340c2e6fa": "0.36.0",
        "bd8dac45a98c0bc0": "0.45.0 0.50.0 0.52.0 0.53.0 0.54.0 0.55.0",
    },
    "uvicorn.server.Server.shutdown": {
        "2bdb1c908150fded": "0.36.0 0.45.0 0.50.0 0.52.0 0.53.0 0.54.0",
        "c6fc98346b09fc0e": "0.55.0",
    },
    "uvicorn.middleware.proxy_headers.ProxyHeadersMiddleware.__init__": {
        "8cfe897e3c901fcc": "0.36.0 0.45.0 0.50.0 0.52.0 0.53.0 0.54.0 0.55.0",
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
