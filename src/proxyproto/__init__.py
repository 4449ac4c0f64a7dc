"""proxyproto: the PROXY protocol (v1 and v2) for Python's structured-concurrency world.

The sans-IO core parses and builds headers; the anyio adapter (asyncio and trio backends) feeds it
from real connections.

The core's names are imported with the package, the adapters' names (:class:`ProxyProtocolListener`,
:class:`ProxiedStream`, the UDP ones...) on first use (PEP 562): ``import proxyproto`` to parse
or build headers does not import anyio.

>>> import proxyproto as pp
>>> header, consumed = pp.parse(b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\\r\\n")
>>> header.source
('192.0.2.1', 56324)
"""

import typing as _typing

from ._core.errors import HeaderEncodingError as HeaderEncodingError
from ._core.errors import HeaderRejected as HeaderRejected
from ._core.errors import IncompleteHeader as IncompleteHeader
from ._core.errors import InvalidHeader as InvalidHeader
from ._core.errors import InvalidSignature as InvalidSignature
from ._core.errors import ProxyProtocolError as ProxyProtocolError
from ._core.model import Address as Address
from ._core.model import Command as Command
from ._core.model import Family as Family
from ._core.model import Header as Header
from ._core.model import SSLClient as SSLClient
from ._core.model import SSLInfo as SSLInfo
from ._core.model import SSLSubType as SSLSubType
from ._core.model import TLVs as TLVs
from ._core.model import TLVType as TLVType
from ._core.model import Transport as Transport
from ._core.parser import MAX_HEADER_SIZE as MAX_HEADER_SIZE
from ._core.parser import NEED_DATA as NEED_DATA
from ._core.parser import HeaderParser as HeaderParser
from ._core.parser import NeedData as NeedData
from ._core.parser import parse as parse
from ._core.parser import parse_datagram as parse_datagram
from ._handshake.config import ProxyProtocolConfig as ProxyProtocolConfig
from ._handshake.config import Validator as Validator
from ._handshake.engine import ListenerStatistics as ListenerStatistics
from ._handshake.policy import PeerAddress as PeerAddress
from ._handshake.policy import Policy as Policy
from ._handshake.policy import PolicyCallable as PolicyCallable
from ._handshake.policy import trusted_proxies as trusted_proxies
from ._version import __version__ as __version__

if _typing.TYPE_CHECKING:
    # What mypy and readers see; at run time, __getattr__ below imports them on first use.
    from ._adapters.anyio import ProxiedStream as ProxiedStream
    from ._adapters.anyio import ProxyAttribute as ProxyAttribute
    from ._adapters.anyio import ProxyProtocolListener as ProxyProtocolListener
    from ._adapters.anyio import connect_tcp as connect_tcp
    from ._adapters.anyio import header_for as header_for
    from ._adapters.anyio import send_header as send_header
    from ._adapters.udp import DatagramStatistics as DatagramStatistics
    from ._adapters.udp import ProxiedDatagram as ProxiedDatagram
    from ._adapters.udp import ProxiedUDPSocket as ProxiedUDPSocket
    from ._adapters.udp import build_datagram as build_datagram
    from ._adapters.udp import send_datagram as send_datagram

#: The adapters' names -> the module (anyio, UDP) that defines them, imported on first use.
_LAZY = {
    "ProxiedStream": "_adapters.anyio",
    "ProxyAttribute": "_adapters.anyio",
    "ProxyProtocolListener": "_adapters.anyio",
    "connect_tcp": "_adapters.anyio",
    "header_for": "_adapters.anyio",
    "send_header": "_adapters.anyio",
    "DatagramStatistics": "_adapters.udp",
    "ProxiedDatagram": "_adapters.udp",
    "ProxiedUDPSocket": "_adapters.udp",
    "build_datagram": "_adapters.udp",
    "send_datagram": "_adapters.udp",
}

if not _typing.TYPE_CHECKING:  # mypy: the names are the imports above, not __getattr__'s

    def __getattr__(name: str) -> object:
        """An adapter's name, its module imported the first time one is asked for (PEP 562)."""
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from importlib import import_module

        value = getattr(import_module(f"{__name__}.{module}"), name)
        globals()[name] = value  # later lookups do not come back here
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = (
    "MAX_HEADER_SIZE",
    "NEED_DATA",
    "Address",
    "Command",
    "DatagramStatistics",
    "Family",
    "Header",
    "HeaderEncodingError",
    "HeaderParser",
    "HeaderRejected",
    "IncompleteHeader",
    "InvalidHeader",
    "InvalidSignature",
    "ListenerStatistics",
    "NeedData",
    "PeerAddress",
    "Policy",
    "PolicyCallable",
    "ProxiedDatagram",
    "ProxiedStream",
    "ProxiedUDPSocket",
    "ProxyAttribute",
    "ProxyProtocolConfig",
    "ProxyProtocolError",
    "ProxyProtocolListener",
    "SSLClient",
    "SSLInfo",
    "SSLSubType",
    "TLVType",
    "TLVs",
    "Transport",
    "Validator",
    "__version__",
    "build_datagram",
    "connect_tcp",
    "header_for",
    "parse",
    "parse_datagram",
    "send_datagram",
    "send_header",
    "trusted_proxies",
)
