"""proxyproto: the PROXY protocol (v1 and v2) for Python's structured-concurrency world.

The sans-IO core parses and builds headers; the anyio adapter (asyncio and trio backends) feeds it
from real connections.

>>> import proxyproto as pp
>>> header, consumed = pp.parse(b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\\r\\n")
>>> header.source
('192.0.2.1', 56324)
"""

from ._anyio import ProxiedStream as ProxiedStream
from ._anyio import ProxyAttribute as ProxyAttribute
from ._anyio import ProxyProtocolListener as ProxyProtocolListener
from ._anyio import connect_tcp as connect_tcp
from ._anyio import header_for as header_for
from ._anyio import send_header as send_header
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
from ._udp import DatagramStatistics as DatagramStatistics
from ._udp import ProxiedDatagram as ProxiedDatagram
from ._udp import ProxiedUDPSocket as ProxiedUDPSocket
from ._udp import build_datagram as build_datagram
from ._udp import send_datagram as send_datagram
from ._version import __version__ as __version__

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
