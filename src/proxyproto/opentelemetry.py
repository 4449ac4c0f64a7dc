"""OpenTelemetry semantic-convention attributes for a connection behind a PROXY header.

Behind a balancer, the socket's peer is the balancer; the client and the address it connected
to are in the header. :func:`connection_attributes` gives them under the names of OpenTelemetry's
semantic conventions, for a span or a metric of your own -- it needs no OpenTelemetry package:

* ``client.address``, ``client.port``: the header's source when its addresses are used, else
  the peer (a LOCAL header's connection is the balancer's own, a health check: its client is
  the balancer);
* ``network.peer.address``, ``network.peer.port``: the real peer (the balancer);
* ``server.address``, ``server.port``: the header's destination, when it has one;
* ``network.transport`` (``tcp``, ``udp``, ``unix``) and ``network.type`` (``ipv4``,
  ``ipv6``) of the client's connection, when the header says.

>>> import proxyproto as pp
>>> header = pp.Header.proxy(("203.0.113.7", 51234), ("198.51.100.10", 443))
>>> connection_attributes(header, ("10.0.0.2", 40000))["client.address"]
'203.0.113.7'

With anyio: ``connection_attributes(stream.extra(pp.ProxyAttribute.header, None),
stream.extra(pp.ProxyAttribute.peer_address))``.
"""

from __future__ import annotations

from ._core.model import Family, Header, Transport
from ._handshake.policy import PeerAddress, carries_address

__all__ = ("connection_attributes",)

_TRANSPORTS = {Transport.STREAM: "tcp", Transport.DGRAM: "udp"}
_TYPES = {Family.INET: "ipv4", Family.INET6: "ipv6"}


def connection_attributes(
    header: Header | None, peer: PeerAddress, *, use_header: bool = True
) -> dict[str, str | int]:
    """The semantic-convention attributes of a connection from ``peer`` that sent ``header``
    (``None``: none came). ``use_header=False`` for a header whose addresses the policy did not
    use (``IGNORE``): the client is then the peer."""
    attributes: dict[str, str | int] = {}
    _put(attributes, "network.peer", peer)
    used = use_header and header is not None and carries_address(header)
    if used:
        assert header is not None
        _put(attributes, "client", header.source)
        _put(attributes, "server", header.destination)
        if header.family is Family.UNIX:
            attributes["network.transport"] = "unix"
        elif header.transport in _TRANSPORTS:
            attributes["network.transport"] = _TRANSPORTS[header.transport]
        if header.family in _TYPES:
            attributes["network.type"] = _TYPES[header.family]
    else:
        _put(attributes, "client", peer)
    return attributes


def _put(attributes: dict[str, str | int], prefix: str, address: object) -> None:
    if isinstance(address, tuple) and len(address) >= 2:
        attributes[f"{prefix}.address"] = str(address[0])
        attributes[f"{prefix}.port"] = int(address[1])
    elif isinstance(address, str) and address:
        attributes[f"{prefix}.address"] = address
