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

from ._config import ProxyProtocolConfig as ProxyProtocolConfig
from ._config import Validator as Validator
from ._engine import ListenerStatistics as ListenerStatistics
from ._errors import HeaderEncodingError as HeaderEncodingError
from ._errors import HeaderRejected as HeaderRejected
from ._errors import IncompleteHeader as IncompleteHeader
from ._errors import InvalidHeader as InvalidHeader
from ._errors import InvalidSignature as InvalidSignature
from ._errors import ProxyProtocolError as ProxyProtocolError
from ._model import Address as Address
from ._model import Command as Command
from ._model import Family as Family
from ._model import Header as Header
from ._model import SSLClient as SSLClient
from ._model import SSLInfo as SSLInfo
from ._model import SSLSubType as SSLSubType
from ._model import TLVs as TLVs
from ._model import TLVType as TLVType
from ._model import Transport as Transport
from ._parser import MAX_HEADER_SIZE as MAX_HEADER_SIZE
from ._parser import NEED_DATA as NEED_DATA
from ._parser import HeaderParser as HeaderParser
from ._parser import NeedData as NeedData
from ._parser import parse as parse
from ._parser import parse_datagram as parse_datagram
from ._policy import PeerAddress as PeerAddress
from ._policy import Policy as Policy
from ._policy import PolicyCallable as PolicyCallable
from ._policy import trusted_proxies as trusted_proxies
from ._version import __version__ as __version__

if _typing.TYPE_CHECKING:
    # What mypy and readers see; at run time, __getattr__ below imports them on first use.
    from ._anyio import ProxiedStream as ProxiedStream
    from ._anyio import ProxyAttribute as ProxyAttribute
    from ._anyio import ProxyProtocolListener as ProxyProtocolListener
    from ._anyio import connect_tcp as connect_tcp
    from ._anyio import header_for as header_for
    from ._anyio import send_header as send_header
    from ._udp import DatagramStatistics as DatagramStatistics
    from ._udp import ProxiedDatagram as ProxiedDatagram
    from ._udp import ProxiedUDPSocket as ProxiedUDPSocket
    from ._udp import build_datagram as build_datagram
    from ._udp import send_datagram as send_datagram

#: The adapters' names -> the module (anyio, UDP) that defines them, imported on first use.
_LAZY = {
    "ProxiedStream": "_anyio",
    "ProxyAttribute": "_anyio",
    "ProxyProtocolListener": "_anyio",
    "connect_tcp": "_anyio",
    "header_for": "_anyio",
    "send_header": "_anyio",
    "DatagramStatistics": "_udp",
    "ProxiedDatagram": "_udp",
    "ProxiedUDPSocket": "_udp",
    "build_datagram": "_udp",
    "send_datagram": "_udp",
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
