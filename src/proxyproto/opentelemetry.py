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

:func:`instrument` (the ``opentelemetry`` extra: ``opentelemetry-api``) bridges the counters
that :mod:`proxyproto.prometheus` exports to OpenTelemetry metrics: observable instruments read
when your SDK's reader collects, so they cost nothing per connection. The handshake duration
histogram is not bridged: OpenTelemetry has no asynchronous histogram.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from ._core.extras import require
from ._core.model import Family, Header, Transport
from ._handshake.engine import BY_VERSION_LABELS
from ._handshake.policy import PeerAddress, carries_address

__all__ = ("connection_attributes", "instrument")

#: How :func:`instrument` reads one entry of the shared samples: (value, attributes) pairs.
_Values = Callable[[dict[str, Any]], Iterable[tuple[int, dict[str, str]]]]

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


def instrument(
    meter_provider: Any = None, *, directory: str | os.PathLike[str] | None = None
) -> None:
    """Create proxyproto's observable instruments on the ``proxyproto`` meter of
    ``meter_provider`` (default: the global one); ``directory``: the sums of what worker
    processes wrote there (:func:`proxyproto.prometheus.share`) instead of this process's.

    The instruments, each with the attributes ``proxyproto.surface`` and
    ``proxyproto.listener``: ``proxyproto.connections.accepted`` (and ``proxyproto.mode``,
    ``proxyproto.version``), ``proxyproto.connections.refused`` (and ``proxyproto.reason``),
    ``proxyproto.handshakes.timed_out``, ``proxyproto.handshakes.evicted`` (counters),
    ``proxyproto.handshakes.in_flight`` (an up-down counter); ``proxyproto.datagrams.received``,
    ``.delivered`` (and ``proxyproto.mode``), ``.dropped`` (and ``proxyproto.reason``).
    """
    with require("proxyproto.opentelemetry.instrument"):
        from opentelemetry.metrics import CallbackOptions, Observation, get_meter

    from ._adapters.metrics import Samples, read_shared, samples
    from ._handshake.engine import RefusalKind

    meter = get_meter("proxyproto", meter_provider=meter_provider)
    apart = (RefusalKind.TIMEOUT.value, RefusalKind.EVICTED.value)

    def read() -> Samples:
        return samples() if directory is None else read_shared(directory)

    def where(entry: dict[str, Any], **more: str) -> dict[str, str]:
        labels = {"proxyproto.surface": entry["surface"], "proxyproto.listener": entry["listener"]}
        labels.update({f"proxyproto.{key}": value for key, value in more.items()})
        return labels

    def observe(kind: str, values: _Values) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(value, attributes)
                for entry in read()[kind]  # type: ignore[literal-required]
                for value, attributes in values(entry)
            ]

        return callback

    def accepted(entry: dict[str, Any]) -> Iterable[tuple[int, dict[str, str]]]:
        for index, (mode, version) in BY_VERSION_LABELS.items():
            yield entry["by_version"][index], where(entry, mode=mode, version=version)

    def refused(entry: dict[str, Any]) -> Iterable[tuple[int, dict[str, str]]]:
        for reason, count in entry["rejected"].items():
            if reason not in apart:
                yield count, where(entry, reason=reason)

    def rejected_as(kind: str) -> _Values:
        return lambda entry: [(entry["rejected"].get(kind, 0), where(entry))]

    def delivered(entry: dict[str, Any]) -> Iterable[tuple[int, dict[str, str]]]:
        yield entry["delivered"] - entry["direct"], where(entry, mode="proxied")
        yield entry["direct"], where(entry, mode="direct")

    def dropped(entry: dict[str, Any]) -> Iterable[tuple[int, dict[str, str]]]:
        for reason, count in entry["dropped"].items():
            yield count, where(entry, reason=reason)

    # Per instrument, how to read one entry of the samples, and its description.
    connections: dict[str, tuple[_Values, str]] = {
        "proxyproto.connections.accepted": (
            accepted,
            "Connections handed over after their PROXY handshake.",
        ),
        "proxyproto.connections.refused": (
            refused,
            "Connections closed by the PROXY handshake, by reason.",
        ),
        "proxyproto.handshakes.timed_out": (
            rejected_as(RefusalKind.TIMEOUT.value),
            "Connections whose PROXY header did not come within header_timeout.",
        ),
        "proxyproto.handshakes.evicted": (
            rejected_as(RefusalKind.EVICTED.value),
            "Partial PROXY handshakes closed to make room for newer ones.",
        ),
    }
    handshakes: dict[str, tuple[_Values, str]] = {
        "proxyproto.handshakes.in_flight": (
            lambda entry: [(entry["in_flight"], where(entry))],
            "PROXY handshakes under way.",
        ),
    }
    datagrams: dict[str, tuple[_Values, str]] = {
        "proxyproto.datagrams.received": (
            lambda entry: [(entry["received"], where(entry))],
            "UDP datagrams read.",
        ),
        "proxyproto.datagrams.delivered": (
            delivered,
            "UDP datagrams handed over, proxied or direct.",
        ),
        "proxyproto.datagrams.dropped": (dropped, "UDP datagrams dropped, by reason."),
    }
    counter = meter.create_observable_counter
    for create, kind, unit, table in (
        (counter, "tcp", "{connection}", connections),
        (meter.create_observable_up_down_counter, "tcp", "{handshake}", handshakes),
        (counter, "udp", "{datagram}", datagrams),
    ):
        for name, (values, description) in table.items():
            create(name, [observe(kind, values)], unit=unit, description=description)
