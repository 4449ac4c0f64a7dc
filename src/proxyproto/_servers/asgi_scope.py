"""The ``proxy_protocol`` ASGI scope extension, the same from Hypercorn and Uvicorn.

Every HTTP and WebSocket scope of a connection that went through the handshake gets
``scope["extensions"]["proxy_protocol"]``: a dict with

* ``"header"``: the :class:`proxyproto.Header` the connection's addresses came from, or ``None``
  for a direct connection. A header read under ``IGNORE`` is ``None`` here: its sender is not
  trusted, and it was not validated, so neither its addresses nor its TLVs are for the app.
  A LOCAL header (a health check from the proxy itself) is there: trusted, without addresses.
* ``"peer_address"``: the real peer, the proxy (or the client of a direct connection), as
  anyio has it: ``(host, port)``, a path for a UNIX socket, ``None`` when unknown.

Each connection's app is wrapped once, when its handshake is over: one call more per request
(about a microsecond).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from proxyproto._core.model import Header
from proxyproto._handshake.policy import PeerAddress, Policy

__all__ = ("EXTENSION", "AsgiConnectionApp", "HypercornConnectionApp", "trusted_header")

#: The key under ``scope["extensions"]``.
EXTENSION = "proxy_protocol"

_TYPES = frozenset({"http", "websocket"})


def trusted_header(header: Header | None, policy: Policy) -> Header | None:
    """The header an app may rely on: ``None`` when it was read under ``IGNORE`` (stripped, not
    validated). Under ``REJECT`` a header closes the connection, under ``SKIP`` none is read."""
    return None if policy is Policy.IGNORE else header


def _add(scope: dict[str, Any], header: Header | None, peer: PeerAddress) -> None:
    if scope["type"] in _TYPES:
        # Every server here builds each scope's extensions dict anew (a literal per scope), so
        # it is added to in place; a new dict per scope, so an app cannot change the next one's.
        extensions = scope.get("extensions")
        if extensions is None:
            scope["extensions"] = {EXTENSION: {"header": header, "peer_address": peer}}
        else:
            extensions[EXTENSION] = {"header": header, "peer_address": peer}


class AsgiConnectionApp:
    """An ASGI 3 app (Uvicorn's) for one connection: the app, with the extension in the scope."""

    __slots__ = ("_app", "_header", "_peer")

    def __init__(self, app: Any, header: Header | None, peer: PeerAddress) -> None:
        self._app = app
        self._header = header
        self._peer = peer

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        _add(scope, self._header, self._peer)
        return self._app(scope, receive, send)  # type: ignore[no-any-return]


class HypercornConnectionApp:
    """Hypercorn's app wrapper (``AppWrapper``) for one connection, with the extension."""

    __slots__ = ("_app", "_header", "_peer")

    def __init__(self, app: Any, header: Header | None, peer: PeerAddress) -> None:
        self._app = app
        self._header = header
        self._peer = peer

    def __call__(
        self,
        scope: dict[str, Any],
        receive: Any,
        send: Any,
        sync_spawn: Callable[..., Any],
        call_soon: Callable[..., Any],
    ) -> Awaitable[None]:
        _add(scope, self._header, self._peer)
        return self._app(scope, receive, send, sync_spawn, call_soon)  # type: ignore[no-any-return]
