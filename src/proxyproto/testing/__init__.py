"""Testing an application behind the PROXY protocol: a fake balancer, an httpx transport that
sends a header on each connection, and a raw client.

>>> import proxyproto as pp
>>> from proxyproto.testing import fake_balancer, open_connection
>>> aws = pp.Header.proxy(("203.0.113.9", 40000), ("10.0.0.5", 443),
...                       tlvs=pp.TLVs(aws_vpce_id="vpce-0123456789abcdef0"))

- :func:`fake_balancer` (async context manager; the ``fake_balancer`` pytest fixture): listens on
  loopback and relays each connection to the server under test after a header.
- :class:`ProxyProtocolTransport` / :class:`AsyncProxyProtocolTransport`: httpx transports that
  write a header first on each connection they open (the ``testing`` extra installs httpx).
- :func:`open_connection`: connect, send a header and a payload, get the stream back;
  :func:`open_socket` is the same without an event loop, for a server running in a thread.
- :func:`segments`, :func:`header_bytes`, :func:`send_segments`: the header cut as a test asks.

The pytest plugin (:mod:`proxyproto.testing.pytest_plugin`) is registered under the ``pytest11``
entry point: installing proxyproto gives every project the ``fake_balancer`` and
``proxy_connection`` fixtures. The httpx transports are imported on first use, so this module
works without httpx.
"""

import typing as _typing

from ._balancer import FakeBalancer as FakeBalancer
from ._balancer import HeaderChoice as HeaderChoice
from ._balancer import fake_balancer as fake_balancer
from ._balancer import open_connection as open_connection
from ._balancer import open_socket as open_socket
from ._balancer import send_segments as send_segments
from ._wire import HeaderSpec as HeaderSpec
from ._wire import header_bytes as header_bytes
from ._wire import segments as segments

if _typing.TYPE_CHECKING:
    from ._httpx import AsyncProxyProtocolTransport as AsyncProxyProtocolTransport
    from ._httpx import ProxyProtocolTransport as ProxyProtocolTransport

_LAZY = frozenset(("AsyncProxyProtocolTransport", "ProxyProtocolTransport"))

if not _typing.TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        """The httpx transports, imported on first use: a missing httpx names the extra."""
        if name not in _LAZY:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from proxyproto._core.extras import require

        with require(f"proxyproto.testing.{name}"):
            from . import _httpx

        value = getattr(_httpx, name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = (
    "AsyncProxyProtocolTransport",
    "FakeBalancer",
    "HeaderChoice",
    "HeaderSpec",
    "ProxyProtocolTransport",
    "fake_balancer",
    "header_bytes",
    "open_connection",
    "open_socket",
    "segments",
    "send_segments",
)
