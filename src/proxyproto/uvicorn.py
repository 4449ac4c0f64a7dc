"""PROXY protocol for Uvicorn: ``scope["client"]`` is the client, not the load balancer.

Uvicorn has no hook between accepting a connection and parsing HTTP, but it lets the HTTP
implementation be any asyncio protocol class (``--http module:Class``, ``Config(http=...)``).
The classes here do the PROXY handshake on the raw transport, then hand the connection to
Uvicorn's own protocol (h11, httptools, zttp) by composition, as Uvicorn's ``AutoZttpProtocol``
does:

* ``connection_made`` starts a :class:`proxyproto._adapters.asyncio.TransportHandshake` (shared with
  Hypercorn's asyncio worker); Uvicorn's HTTP machinery does not see the connection yet.
* ``data_received`` goes to the handshake until it has a header (or knows there is none): the
  decision is the handshake engine's (:mod:`proxyproto._handshake.engine`), as on every surface.
* When the connection is accepted, Uvicorn's protocol is built with the arguments Uvicorn gave
  ours and a per-connection ``Config`` whose ``loaded_app`` adds the scope extension, set as the
  transport's protocol, and given a transport view whose peer is the header's source (where it,
  and its WebSocket protocol after an upgrade, take the client from), then the bytes that came
  after the header. From then on the transport talks to Uvicorn directly.
* Uvicorn's proxy headers middleware (X-Forwarded-For/-Proto) is taken off the app: it would
  trust the end user's headers (see ``docs/uvicorn.rst``), unless the user asks for it
  with ``PROXYPROTO_PROXY_HEADERS=1`` or ``run(..., proxy_headers=True)``.
* A refused connection is closed before Uvicorn sees it, with one line on the ``proxyproto``
  logger.

Two ways to configure it:

* ``run(app, proxy=ProxyProtocolConfig(...), ...)`` from Python;
* ``uvicorn app:app --http proxyproto.uvicorn:ProxyProtocolH11Protocol`` with ``PROXYPROTO_*``
  environment variables (see :func:`config_from_environ`), read once when this module is
  imported; a bad value stops the import, so Uvicorn fails at startup, never at a connection.

What cannot work: Uvicorn's TLS (``--ssl-keyfile``) is asyncio's SSL layer, below the protocol,
so a PROXY header in front of TLS would be read as a TLS record. Terminate TLS on the proxy (or
use :mod:`proxyproto.hypercorn`). See ``docs/uvicorn.rst``.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import weakref
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from ._core.extras import install_command, require

with require("proxyproto.uvicorn"):
    import uvicorn

from ._adapters.asyncio import HandshakeClock, TransportHandshake
from ._core.model import Address, Header
from ._core.text import format_address
from ._handshake.config import ProxyProtocolConfig
from ._handshake.engine import ListenerStatistics, surface_statistics
from ._handshake.policy import Policy, trusted_proxies
from ._servers.asgi_scope import AsgiConnectionApp

# Every use of Uvicorn's internals is there, with the drift test's fingerprints.
from ._servers.uvicorn_compat import (
    Config,
    H11Protocol,
    HttpToolsProtocol,
    ProxyHeadersMiddleware,
    ServerState,
    ZttpProtocol,
)

__all__ = [
    "ENVIRONMENT_CONFIG",
    "LOGGING_CONFIG",
    "ProxyProtocolH11Protocol",
    "ProxyProtocolHttpToolsProtocol",
    "ProxyProtocolZttpProtocol",
    "config_from_environ",
    "run",
    "statistics",
]

_POLICIES = {policy.value: policy for policy in Policy}


def config_from_environ(environ: Mapping[str, str] | None = None) -> ProxyProtocolConfig:
    """A :class:`~proxyproto.ProxyProtocolConfig` from ``PROXYPROTO_*`` variables.

    - ``PROXYPROTO_POLICY``: ``require`` (default), ``use``, ``ignore``, ``reject`` or ``skip``;
    - ``PROXYPROTO_TRUSTED``: comma-separated addresses and CIDRs; those peers get the policy,
      every other peer gets ``reject`` (it may connect directly, but not send a header). Unset:
      every peer gets the policy;
    - ``PROXYPROTO_HEADER_TIMEOUT``: seconds (default 5);
    - ``PROXYPROTO_MAX_HEADER_SIZE``: bytes (default 4096);
    - ``PROXYPROTO_VERSIONS``: ``1,2`` (default), ``1`` or ``2``.

    ``PROXYPROTO_PROXY_HEADERS`` (``1`` keeps Uvicorn's X-Forwarded-For/-Proto handling, off by
    default) and ``PROXYPROTO_TLS_EXTENSION`` (``1`` gives the app the ASGI TLS extension from
    the header's SSL TLV, off by default) are read next to these when the module is imported,
    not into the config.

    >>> from proxyproto.uvicorn import config_from_environ
    >>> config = config_from_environ({"PROXYPROTO_TRUSTED": "10.0.0.0/8, 192.0.2.7"})
    >>> config.policy(("10.1.2.3", 4000)), config.policy(("198.51.100.1", 4000))
    (<Policy.REQUIRE: 'require'>, <Policy.REJECT: 'reject'>)

    :raises ValueError: a variable has a value that cannot be used; the message names it.
    """
    env = os.environ if environ is None else environ
    kwargs: dict[str, Any] = {}
    variables: dict[str, str] = {}  # each field -> the variable it came from

    def get(name: str) -> str | None:
        value = env.get(f"PROXYPROTO_{name}")
        return None if value is None or not value.strip() else value.strip()

    def fail(name: str, value: str, problem: object) -> ValueError:
        return ValueError(f"PROXYPROTO_{name}={value!r}: {problem}")

    policy = Policy.REQUIRE
    if (value := get("POLICY")) is not None:
        if value.lower() not in _POLICIES:
            raise fail("POLICY", value, f"must be one of {', '.join(_POLICIES)}")
        policy = _POLICIES[value.lower()]
    kwargs["policy"] = policy
    variables["policy"] = "POLICY"
    if (value := get("TRUSTED")) is not None:
        cidrs = [cidr.strip() for cidr in value.split(",") if cidr.strip()]
        try:
            kwargs["policy"] = trusted_proxies(cidrs, trusted=policy)
        except ValueError as error:
            raise fail("TRUSTED", value, error) from None
    for name, field, kind in (
        ("HEADER_TIMEOUT", "header_timeout", float),
        ("MAX_HEADER_SIZE", "max_header_size", int),
    ):
        if (value := get(name)) is not None:
            try:
                kwargs[field] = kind(value)
            except ValueError:
                raise fail(name, value, f"not a number ({kind.__name__})") from None
            variables[field] = name
    if (value := get("VERSIONS")) is not None:
        try:
            kwargs["versions"] = [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise fail("VERSIONS", value, "must be 1, 2 or 1,2") from None
        variables["versions"] = "VERSIONS"
    # Each value alone first, so that the message names the variable that is wrong.
    for field, name in variables.items():
        try:
            ProxyProtocolConfig(**{field: kwargs[field]})
        except (TypeError, ValueError) as error:
            raise fail(name, str(get(name)), error) from None
    return ProxyProtocolConfig(**kwargs)


_BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _proxy_headers_from_environ(environ: Mapping[str, str] | None = None) -> bool:
    """``PROXYPROTO_PROXY_HEADERS``: ``1`` keeps Uvicorn's proxy headers middleware on behind
    the PROXY protocol; unset or ``0`` turns it off (see :class:`ProxyProtocolH11Protocol`).

    :raises ValueError: the value is not ``1``/``0`` (``true``/``false``, ``yes``/``no``).
    """
    return _flag_from_environ("PROXY_HEADERS", environ)


def _flag_from_environ(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """``PROXYPROTO_<name>``: ``1`` (``true``, ``yes``) or ``0`` (``false``, ``no``); unset:
    false."""
    env = os.environ if environ is None else environ
    value = env.get(f"PROXYPROTO_{name}", "").strip()
    if not value:
        return False
    if value.lower() not in _BOOLEANS:
        raise ValueError(f"PROXYPROTO_{name}={value!r}: must be 1 or 0")
    return _BOOLEANS[value.lower()]


#: The configuration of the classes used by name from Uvicorn's command line, read from the
#: environment when this module is imported.
try:
    ENVIRONMENT_CONFIG = config_from_environ()
    #: Whether ``PROXYPROTO_PROXY_HEADERS`` asks for X-Forwarded-For/-Proto behind the header.
    ENVIRONMENT_PROXY_HEADERS = _proxy_headers_from_environ()
    #: Whether ``PROXYPROTO_TLS_EXTENSION`` asks for the ASGI TLS extension from the SSL TLV.
    ENVIRONMENT_TLS_EXTENSION = _flag_from_environ("TLS_EXTENSION")
except ValueError as error:
    # Uvicorn's command line imports the --http class, and nothing else runs before serving: a
    # variable that cannot be used stops the process here, in one line, as a bad option would.
    raise SystemExit(f"proxyproto: {error}") from None


class _SocketFacade:
    """The transport's socket, except that ``getpeername()`` is the header's source."""

    __slots__ = ("_socket", "_source")

    def __init__(self, sock: Any, source: Address) -> None:
        self._socket = sock
        self._source = source

    def getpeername(self) -> Address:
        return self._source

    def getsockname(self) -> Any:
        # What Uvicorn reads for scope["server"] on every connection: no __getattr__ detour.
        return self._socket.getsockname()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._socket, name)


class _ProxiedTransport(asyncio.Transport):
    """The real transport, with the client as its peer: what Uvicorn's protocols (HTTP, and
    WebSocket after an upgrade) are given, and where they take the client from
    (``uvicorn.protocols.utils.get_remote_addr``: the socket's ``getpeername()``, else
    ``peername``).

    One per connection, so it is small: slots, and the socket's facade made when it is first
    asked for. The calls Uvicorn makes on every request (``write``, ``is_closing``) and ``close``
    are the real transport's own bound methods, in slots: no layer of ours on the hot path. The
    other methods are one plain call to the real transport.
    """

    __slots__ = ("_socket", "_source", "close", "is_closing", "transport", "write")

    def __init__(self, transport: asyncio.Transport, source: Address) -> None:
        # Not asyncio.Transport.__init__: its extra-info dict is never read here.
        self.transport = transport
        self._source = source
        self._socket: _SocketFacade | None = None
        # The slots win over the methods asyncio.Transport declares (which raise).
        self.write = transport.write  # type: ignore[method-assign]
        self.is_closing = transport.is_closing  # type: ignore[method-assign]
        self.close = transport.close  # type: ignore[method-assign]

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            facade = self._socket
            if facade is None:
                sock = self.transport.get_extra_info("socket")
                if sock is None:
                    return default
                facade = self._socket = _SocketFacade(sock, self._source)
            return facade
        if name == "peername":
            return self._source
        return self.transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.transport.get_protocol()

    def is_reading(self) -> bool:
        return self.transport.is_reading()

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.transport.get_write_buffer_limits()

    def writelines(self, list_of_data: Any) -> None:
        self.transport.writelines(list_of_data)

    def write_eof(self) -> None:
        self.transport.write_eof()

    def can_write_eof(self) -> bool:
        return self.transport.can_write_eof()

    def abort(self) -> None:
        self.transport.abort()


logger = logging.getLogger("proxyproto")

#: Uvicorn's default logging configuration (``uvicorn.config.LOGGING_CONFIG``) with the
#: ``proxyproto`` logger on Uvicorn's handler, at INFO: what :func:`run` uses unless given a
#: ``log_config``. Without it, the refusal lines would reach only Python's last-resort handler,
#: which drops everything below WARNING.
LOGGING_CONFIG: dict[str, Any] = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
LOGGING_CONFIG["loggers"]["proxyproto"] = {
    "handlers": ["default"],
    "level": "INFO",
    "propagate": False,
}

_TLS_REFUSED = (
    "Uvicorn's TLS (--ssl-keyfile/--ssl-certfile) cannot run behind the PROXY protocol: the "
    "header comes before TLS, and Uvicorn starts TLS on the first byte, so every connection "
    "would fail. Terminate TLS on the balancer (its SSL TLVs then say what the client used), or "
    "serve with proxyproto.hypercorn, which reads the header first"
)

#: The Uvicorn configs whose first connection has been seen.
_SEEN: weakref.WeakSet[Config] = weakref.WeakSet()


def _logging_configured() -> bool:
    """Whether the application configured where our lines go (a handler on our logger or on
    the root logger): then Uvicorn's logging is not imposed on them."""
    return bool(logger.handlers or logging.getLogger().handlers)


def _first_connection(config: Config) -> None:
    """What is checked once per Uvicorn config, at its first connection (the first moment our
    code sees the config under Uvicorn's command line)."""
    _SEEN.add(config)
    if not _logging_configured():
        # Nobody configured our logger (Uvicorn's command line configures its own only): our
        # lines go where Uvicorn's go, at Uvicorn's level.
        source = logging.getLogger("uvicorn")
        if source.handlers:
            for handler in source.handlers:
                logger.addHandler(handler)
            logger.setLevel(
                min(logging.INFO, logging.getLogger("uvicorn.error").getEffectiveLevel())
            )
            logger.propagate = False
    if config.is_ssl:
        logger.error("proxyproto: %s.", _TLS_REFUSED)


def statistics() -> ListenerStatistics:
    """The PROXY handshake counters of every Uvicorn server in this process, summed (over its
    protocol classes, and servers that have stopped): the same fields as
    :meth:`proxyproto.ProxyProtocolListener.statistics`.

    >>> import proxyproto.uvicorn
    >>> proxyproto.uvicorn.statistics().rejected.get("missing", 0)
    0
    """
    return surface_statistics("uvicorn")


def _listener_name(config: Config, transport: asyncio.Transport) -> str:
    """The ``listener`` label of a Uvicorn server's metrics: its bind address as configured
    (``--host``/``--port``, ``--uds``, ``--fd``), or, for sockets handed to ``Server.run``, the
    address of the socket the first connection arrived on."""
    if config.uds:
        return f"unix:{config.uds}"
    if config.fd is not None:
        return f"fd://{config.fd}"
    local = transport.get_extra_info("sockname")
    if isinstance(local, tuple) and len(local) >= 2 and local[1] != config.port:
        return format_address((local[0], local[1]))
    return format_address((config.host, config.port))


class _ServerView:
    """What every connection of one Uvicorn server shares, made at its first connection: the
    ``Config`` (its proxy headers middleware taken off), the set of connections, the event loop,
    the handshake clock and the class of the connections' configs. A connection only looks it
    up (by its ``ServerState``) and adds what is its own."""

    __slots__ = (
        "clock",
        "config",
        "config_class",
        "connections",
        "loop",
        "namespace",
        "owner",
        "state",
    )

    def __init__(
        self,
        owner: type[_ProxyProtocol],
        config: Config,
        server_state: ServerState,
        loop: asyncio.AbstractEventLoop,
        clock: HandshakeClock | None,
    ) -> None:
        #: The protocol class it was made for.
        self.owner = owner
        #: The server's state, weakly: the key of _SERVERS, which drops the entry with it.
        self.state = weakref.ref(server_state, _forget(id(server_state)))
        self.config = config
        self.connections = server_state.connections
        self.loop = loop
        #: One per Uvicorn server, made at the first connection (it names the listener).
        self.clock = clock
        self.config_class = _connection_config_class(type(config))
        #: The config's attributes, shared by every connection's config.
        self.namespace = config.__dict__

    def connection_config(self, app: Any) -> Config:
        """The server's ``Config`` for one connection, with ``app`` as its ``loaded_app``.

        Uvicorn's protocols take the app they call from the config they are built with
        (``config=``, the protocol-class contract), and hand that config on to the WebSocket
        protocol on an upgrade: the connection's app, with the scope extension, reaches both
        without our setting anything on Uvicorn's objects. Nothing is copied: the object's
        attributes are the server config's own (its ``__dict__``, so a change to the server's
        config shows), except ``loaded_app``, a slot of its class.
        """
        view = object.__new__(self.config_class)
        view.__dict__ = self.namespace
        view.loaded_app = app
        return view


#: Each Config class's class of connection configs.
_CONFIG_CLASSES: weakref.WeakKeyDictionary[type[Config], type[Config]] = weakref.WeakKeyDictionary()


def _connection_config_class(base: type[Config]) -> type[Config]:
    """A subclass of ``base`` (Uvicorn's ``Config``, or the user's subclass of it) whose
    ``loaded_app`` is a slot: its instances share the server config's attributes (the
    ``__dict__``) but have an app of their own."""
    cls = _CONFIG_CLASSES.get(base)
    if cls is None:
        cls = _CONFIG_CLASSES[base] = type(
            "ConnectionConfig",
            (base,),
            {
                "__slots__": ("loaded_app",),
                "__module__": __name__,
                "__doc__": "A Uvicorn ``Config`` for one connection (see _ServerView).",
            },
        )
    return cls


#: Each Uvicorn server's shared part, by the state its protocols share.
#: By the id of the state (a plain dict lookup per connection, cheaper than a
#: WeakKeyDictionary's); each entry checks that its state is the one asked about, and goes
#: when the state does.
_SERVERS: dict[int, _ServerView] = {}


def _forget(key: int) -> Callable[[weakref.ref[ServerState]], None]:
    def forget(ref: weakref.ref[ServerState]) -> None:
        server = _SERVERS.get(key)
        if server is not None and server.state is ref:
            del _SERVERS[key]

    return forget


class _ProxyProtocol(asyncio.Protocol):
    """The PROXY handshake (:class:`proxyproto._adapters.asyncio.TransportHandshake`) on the raw
    transport, then the connection handed to Uvicorn's own protocol, :attr:`http_protocol`, as
    Uvicorn's ``AutoZttpProtocol`` hands a connection to the protocol it picks: built with the
    arguments Uvicorn gave us, set as the transport's protocol, told of the connection, and
    given the bytes that followed the header. From then on the transport talks to it directly.

    One is made per connection, so it holds little: what the server's connections share is a
    :class:`_ServerView`, made once.
    """

    __slots__ = ("_app_state", "_handshake", "_server", "_server_state", "transport")

    #: The Uvicorn protocol class that serves an accepted connection.
    http_protocol: ClassVar[type[asyncio.Protocol]]
    #: The configuration; a subclass (what :func:`run` makes) may carry its own.
    proxy_config: ClassVar[ProxyProtocolConfig] = ENVIRONMENT_CONFIG
    #: Whether Uvicorn's proxy headers middleware stays on (the user asked for it); a subclass
    #: (what :func:`run` makes for ``proxy_headers=True``) may say so itself.
    forwarded_headers: ClassVar[bool] = ENVIRONMENT_PROXY_HEADERS
    #: Whether scopes get the ASGI TLS extension from the header's SSL TLV (off by default).
    tls_extension: ClassVar[bool] = ENVIRONMENT_TLS_EXTENSION

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        server = _SERVERS.get(id(server_state))
        if (
            server is None
            or server.state() is not server_state
            or server.config is not config
            or server.owner is not type(self)
        ):
            server = self._first(config, server_state, _loop, server)
        self._server = server
        # What Uvicorn gave, for the protocol it would have built.
        self._server_state = server_state
        self._app_state = app_state
        self._handshake: TransportHandshake | None = None

    def _first(
        self,
        config: Config,
        server_state: ServerState,
        loop: asyncio.AbstractEventLoop | None,
        previous: _ServerView | None,
    ) -> _ServerView:
        """A server's first connection: what its connections share."""
        if not config.loaded:
            config.load()
        # Uvicorn's proxy headers middleware trusts X-Forwarded-For when scope["client"] is in
        # forwarded_allow_ips, and behind the PROXY protocol scope["client"] is the end user:
        # any user could name its own address. Off unless asked for, on the Config itself.
        if (
            config.proxy_headers
            and not self.forwarded_headers
            and isinstance(config.loaded_app, ProxyHeadersMiddleware)
        ):
            config.loaded_app = config.loaded_app.app
            config.proxy_headers = False
        if config not in _SEEN:
            _first_connection(config)
        if previous is not None and previous.state() is not server_state:
            previous = None  # another server's, whose state had the same id
        server = _SERVERS[id(server_state)] = _ServerView(
            type(self),
            config,
            server_state,
            loop or asyncio.get_event_loop(),
            # One clock per Uvicorn server, whichever class its connections come through.
            None if previous is None else previous.clock,
        )
        return server

    @property
    def config(self) -> Config:
        """The server's Uvicorn ``Config``."""
        return self._server.config

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        server = self._server
        # In Uvicorn's set of connections until handed over, so that a shutdown reaches the
        # handshake (Server.shutdown() calls shutdown() on each), as AutoZttpProtocol does.
        server.connections.add(self)  # type: ignore[arg-type]
        clock = server.clock
        if clock is None:
            clock = server.clock = HandshakeClock(
                server.loop,
                self.proxy_config.header_timeout,
                "uvicorn",
                _listener_name(server.config, transport),
            )
        handshake = self._handshake = TransportHandshake(
            transport, self.proxy_config, self._accept, server.loop, clock
        )
        handshake.start()

    def data_received(self, data: bytes) -> None:
        # Only during the handshake: once accepted, the transport calls Uvicorn's protocol.
        assert self._handshake is not None
        self._handshake.data_received(data)

    def eof_received(self) -> bool | None:
        assert self._handshake is not None
        if self._handshake.eof_received():
            # This EOF ended the handshake, accepted: Uvicorn's protocol hears of it too.
            return self.transport.get_protocol().eof_received()  # type: ignore[attr-defined, no-any-return]
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        if self._handshake is not None:
            self._handshake.connection_lost()

    def shutdown(self) -> None:
        assert self._handshake is not None
        self._handshake.close()

    def _accept(self, header: Header | None, leftover: bytes) -> None:
        transport = self.transport
        handshake = self._handshake
        assert handshake is not None
        server = self._server
        server.connections.discard(self)
        # scope["extensions"]["proxy_protocol"] on every request of the connection, WebSocket too.
        app = AsgiConnectionApp(
            server.config.loaded_app,
            handshake.header,
            handshake.peer,
            tls_extension=self.tls_extension,
        )
        protocol = self.http_protocol(  # type: ignore[call-arg]
            config=server.connection_config(app),
            server_state=self._server_state,
            app_state=self._app_state,
            _loop=server.loop,
        )
        # The client Uvicorn's protocols take from the transport: the header's source when its
        # addresses are used, else the real peer (its IPv6 scope id kept, which Uvicorn's own
        # reading of a transport drops).
        client = header.source if header is not None else handshake.peer
        transport.set_protocol(protocol)
        protocol.connection_made(_ProxiedTransport(transport, client))
        if leftover:
            protocol.data_received(leftover)


def _wrapping(name: str, http_protocol: type[asyncio.Protocol], doc: str) -> type[_ProxyProtocol]:
    attributes = {
        "http_protocol": http_protocol,
        "__doc__": doc,
        "__module__": __name__,
        "__slots__": (),
    }
    return type(name, (_ProxyProtocol,), attributes)


ProxyProtocolH11Protocol = _wrapping(
    "ProxyProtocolH11Protocol",
    H11Protocol,
    """Uvicorn's h11 protocol behind a PROXY handshake: ``--http proxyproto.uvicorn:<this>``.

    Configured from ``PROXYPROTO_*`` environment variables (:func:`config_from_environ`).
    Takes Uvicorn's proxy headers middleware off the app (unless ``PROXYPROTO_PROXY_HEADERS=1``).
    """,
)

if HttpToolsProtocol is not None:
    ProxyProtocolHttpToolsProtocol: type[_ProxyProtocol] | None = _wrapping(
        "ProxyProtocolHttpToolsProtocol",
        HttpToolsProtocol,
        """Uvicorn's httptools protocol behind a PROXY handshake (needs ``httptools``).""",
    )
else:  # pragma: no cover - httptools is installed with the uvicorn extra
    ProxyProtocolHttpToolsProtocol = None

if ZttpProtocol is not None:
    ProxyProtocolZttpProtocol: type[_ProxyProtocol] | None = _wrapping(
        "ProxyProtocolZttpProtocol",
        ZttpProtocol,
        """Uvicorn's zttp protocol (HTTP/1.1) behind a PROXY handshake: Uvicorn 0.55 or later
        with ``zttp`` installed, else ``None``.""",
    )
else:
    ProxyProtocolZttpProtocol = None

_CLASSES = {
    "h11": "ProxyProtocolH11Protocol",
    "httptools": "ProxyProtocolHttpToolsProtocol",
    "zttp": "ProxyProtocolZttpProtocol",
}
_NEEDS = {"httptools": "httptools", "zttp": "Uvicorn 0.55 or later and zttp"}


def _protocol_class(
    http: str,
    proxy: ProxyProtocolConfig | None,
    proxy_headers: bool = False,
    tls_extension: bool = False,
) -> str | type[asyncio.Protocol]:
    if http == "auto":
        # Uvicorn's own choice (uvicorn.protocols.http.auto): httptools when installed.
        http = "h11" if ProxyProtocolHttpToolsProtocol is None else "httptools"
    if http not in _CLASSES:
        raise ValueError(
            f"http must be 'auto', {', '.join(map(repr, _CLASSES))} with proxyproto, not {http!r}"
        )
    base: type[_ProxyProtocol] | None = globals()[_CLASSES[http]]
    if base is None:
        raise ImportError(f"http={http!r} needs {_NEEDS[http]}: {install_command('uvicorn')}")
    if (
        proxy is None
        and (not proxy_headers or base.forwarded_headers)
        and (not tls_extension or base.tls_extension)
    ):
        # By name: worker processes import it themselves, and read the same environment.
        return f"{__name__}:{_CLASSES[http]}"
    attributes = {
        "proxy_config": base.proxy_config if proxy is None else proxy,
        "forwarded_headers": base.forwarded_headers or proxy_headers,
        "tls_extension": base.tls_extension or tls_extension,
        "__module__": __name__,
        "__slots__": (),
    }
    return type(base.__name__, (base,), attributes)


def run(
    app: Any,
    *,
    proxy: ProxyProtocolConfig | None = None,
    tls_extension: bool = False,
    **uvicorn_kwargs: Any,
) -> None:
    """``uvicorn.run(app, **uvicorn_kwargs)`` with every connection through a PROXY handshake.

    ``proxy`` is the configuration; ``None`` takes it from the ``PROXYPROTO_*`` environment
    variables (:func:`config_from_environ`). ``http`` may be ``"auto"`` (the default: httptools
    when installed), ``"h11"`` or ``"httptools"``. A ``proxy`` object cannot travel to worker
    processes: with ``workers > 1`` or ``reload``, leave ``proxy`` out and use the environment.

    Uvicorn's proxy headers (X-Forwarded-For, X-Forwarded-Proto) are off: behind the PROXY
    protocol the peer Uvicorn checks against ``forwarded_allow_ips`` is the end user, who could
    name any address. ``proxy_headers=True`` (or ``PROXYPROTO_PROXY_HEADERS=1``) turns them back
    on, for an HTTP proxy in front that overwrites X-Forwarded-For: they are then used only when
    the header's client is in ``forwarded_allow_ips``. With ``workers > 1`` or ``reload``, set
    the variable instead.

    ``tls_extension=True`` (or ``PROXYPROTO_TLS_EXTENSION=1``) gives the app the ASGI TLS
    extension, ``scope["extensions"]["tls"]``, from the header's SSL TLV when it says the
    client's connection was TLS; never otherwise (the ASGI spec forbids it on connections that
    are not TLS). See ``docs/behind-balancers.rst``.

    .. code-block:: python

        proxyproto.uvicorn.run(
            "app:app",
            host="0.0.0.0",
            port=8000,
            proxy=pp.ProxyProtocolConfig(policy=pp.trusted_proxies(["10.0.0.0/8"])),
        )
    """
    for option in ("ssl_keyfile", "ssl_certfile", "ssl_context_factory"):
        if uvicorn_kwargs.get(option):
            raise ValueError(f"{option}: {_TLS_REFUSED}")
    if "log_config" not in uvicorn_kwargs and not _logging_configured():
        # Our lines on Uvicorn's handler. A copy: Uvicorn writes its use_colors into it.
        uvicorn_kwargs["log_config"] = copy.deepcopy(LOGGING_CONFIG)
    http = uvicorn_kwargs.pop("http", "auto")
    if not isinstance(http, str):
        raise TypeError("http must be 'auto', 'h11' or 'httptools' with proxyproto")
    if proxy is not None and not isinstance(proxy, ProxyProtocolConfig):
        raise TypeError(f"proxy must be a ProxyProtocolConfig, not {proxy!r}")
    # Only an explicit proxy_headers=True keeps X-Forwarded-For on (Uvicorn's default is True).
    proxy_headers = uvicorn_kwargs.get("proxy_headers") is True
    if (uvicorn_kwargs.get("workers") or 1) > 1 or uvicorn_kwargs.get("reload"):
        if proxy is not None:
            raise ValueError(
                "proxy= cannot reach worker processes (workers > 1 or reload): leave proxy out "
                "and set the PROXYPROTO_* environment variables instead"
            )
        if proxy_headers and not ENVIRONMENT_PROXY_HEADERS:
            raise ValueError(
                "proxy_headers=True cannot reach worker processes (workers > 1 or reload): "
                "set PROXYPROTO_PROXY_HEADERS=1 instead"
            )
        if tls_extension and not ENVIRONMENT_TLS_EXTENSION:
            raise ValueError(
                "tls_extension=True cannot reach worker processes (workers > 1 or reload): "
                "set PROXYPROTO_TLS_EXTENSION=1 instead"
            )
    http_class = _protocol_class(http, proxy, proxy_headers, tls_extension)
    uvicorn.run(app, http=http_class, **uvicorn_kwargs)
