"""``proxyproto parse --pcap FILE``: the PROXY header at the start of each TCP stream of a capture.

For an operator with a capture from a balancer's side (tcpdump, Wireshark; pcap or pcapng):
which connections carried a header, and what it said. scapy (the ``pcap`` extra) reads the file
and decodes the link, IP and TCP layers; this module only puts each stream's first bytes back in
order and hands them to :func:`proxyproto.parse`.

Theory of operation. A TCP *connection* is keyed by its two endpoints. The header is written by
the side that connected (the balancer), so its direction is the one whose SYN (without ACK) was
captured; when the capture starts after the handshake, the direction whose bytes parse as a
header is used, else the first one that carried data. Each direction's segments are placed by
sequence number relative to the first data byte (the SYN's sequence number + 1, or the lowest
sequence number seen when the SYN is not in the capture), so that retransmissions, overlaps and
segments captured out of order do not matter. Only the first :data:`proxyproto.MAX_HEADER_SIZE`
bytes of each direction are kept: enough for any header, and memory stays bounded per stream
whatever the capture holds.
"""

from __future__ import annotations

import json
from typing import Any, cast

import attrs

import proxyproto as pp

from .output import address_json, format_address, header_json, header_rows

__all__ = ["Stream", "print_streams", "read_streams"]

_SEQ_MOD = 1 << 32
_V1_PREFIX = b"PROXY "
_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


@attrs.define
class _Direction:
    """One direction of a connection: the segments that fall in its first bytes."""

    #: The sequence number of the first data byte, when the SYN was captured.
    start: int | None = None
    #: (sequence number, payload) of each data segment seen, within the bound.
    segments: list[tuple[int, bytes]] = attrs.field(factory=list)
    kept: int = 0

    def add(self, seq: int, payload: bytes) -> None:
        if self.start is not None:
            offset = (seq - self.start) % _SEQ_MOD
            if offset >= pp.MAX_HEADER_SIZE:
                return  # past the header, or a stray segment from before the SYN
        # Without a SYN the start is only known at the end: keep a bounded amount.
        if self.kept >= 2 * pp.MAX_HEADER_SIZE:
            return
        self.segments.append((seq, payload))
        self.kept += len(payload)

    def first_bytes(self) -> bytes:
        """The direction's first bytes in order, up to a gap or the size bound."""
        if not self.segments:
            return b""
        if self.start is not None:
            start = self.start
        else:
            # The lowest sequence number, modulo 2**32: the one the others follow closely.
            first = self.segments[0][0]
            start = min(self.segments, key=lambda s: _signed((s[0] - first) % _SEQ_MOD))[0]
        data = bytearray()
        for offset, payload in sorted(((s - start) % _SEQ_MOD, p) for s, p in self.segments):
            if offset > len(data):
                break  # a gap: a segment the capture missed
            data += payload[len(data) - offset :]
            if len(data) >= pp.MAX_HEADER_SIZE:
                break
        return bytes(data[: pp.MAX_HEADER_SIZE])


def _signed(value: int) -> int:
    return value - _SEQ_MOD if value >= _SEQ_MOD // 2 else value


@attrs.define
class Stream:
    """A TCP connection seen in the capture, and what its first bytes are."""

    client: tuple[str, int]
    server: tuple[str, int]
    #: ``header``, ``no header``, ``invalid``, ``incomplete`` or ``no data``.
    status: str
    header: pp.Header | None = None
    size: int = 0
    #: Bytes captured after the header (counted up to the header size bound).
    trailing: int = 0
    error: str | None = None


@attrs.define
class _Connection:
    first: tuple[tuple[str, int], tuple[str, int]]  # (sender, receiver) of the first packet
    initiator: tuple[str, int] | None = None
    directions: dict[tuple[str, int], _Direction] = attrs.field(factory=dict)

    def direction(self, sender: tuple[str, int]) -> _Direction:
        return self.directions.setdefault(sender, _Direction())


def _could_be_header(data: bytes) -> bool:
    """Whether ``data`` starts as a v1 or v2 header would (or is a prefix of one)."""
    return any(data[: len(prefix)] == prefix[: len(data)] for prefix in (_V1_PREFIX, _V2_SIGNATURE))


def _examine(client: tuple[str, int], server: tuple[str, int], data: bytes) -> Stream:
    if not data:
        return Stream(client, server, "no data")
    if not _could_be_header(data):
        return Stream(client, server, "no header")
    try:
        header, size = pp.parse(data)
    except pp.IncompleteHeader as error:
        return Stream(client, server, "incomplete", error=f"{error} ({len(data)} bytes captured)")
    except pp.InvalidHeader as error:
        return Stream(client, server, "invalid", error=str(error))
    return Stream(client, server, "header", header=header, size=size, trailing=len(data) - size)


def read_streams(path: str) -> list[Stream]:
    """The TCP connections of the capture at ``path``, in the order they first appear.

    :raises ModuleNotFoundError: scapy is not installed (the ``pcap`` extra).
    :raises OSError: the file cannot be read; :class:`ValueError`: it is not a capture.
    """
    from scapy.error import Scapy_Exception

    # The link layers a balancer's capture may have: Ethernet, Linux "any" (cooked v1 and v2),
    # loopback (BSD NULL); raw IP is registered with IP.
    from scapy.layers import l2 as _link_layers  # noqa: F401
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.packet import Padding
    from scapy.utils import PcapReader

    connections: dict[frozenset[tuple[str, int]], _Connection] = {}
    # The file is opened here, not by scapy, which leaves it open when it is not a capture.
    with open(path, "rb") as file:
        try:
            reader = PcapReader(cast(Any, file))  # typed as taking a path only
        except (Scapy_Exception, EOFError) as error:
            raise ValueError(f"{path}: not a pcap or pcapng capture ({error})") from None
        for packet in reader:
            if not packet.haslayer(TCP):
                continue
            ip: Any = packet.getlayer(IP) or packet.getlayer(IPv6)
            if ip is None:
                continue
            tcp = packet[TCP]
            sender = (str(ip.src), int(tcp.sport))
            receiver = (str(ip.dst), int(tcp.dport))
            key = frozenset((sender, receiver))
            connection = connections.get(key)
            if connection is None:
                connection = connections[key] = _Connection((sender, receiver))
            direction = connection.direction(sender)
            flags = int(tcp.flags)
            if flags & 0x02:  # SYN: the next sequence number is the first data byte
                direction.start = (int(tcp.seq) + 1) % _SEQ_MOD
                if not flags & 0x10:  # no ACK: this side connected
                    connection.initiator = sender
            payload = bytes(tcp.payload)
            padding = packet.getlayer(Padding)
            if padding is not None:  # an Ethernet frame's padding is not TCP payload
                payload = payload[: len(payload) - len(padding.load)]
            if payload:
                direction.add(int(tcp.seq), payload)
    return [_stream_of(connection) for connection in connections.values()]


def _stream_of(connection: _Connection) -> Stream:
    sender, receiver = connection.first
    if connection.initiator is not None:
        client = connection.initiator
        server = receiver if client == sender else sender
        return _examine(client, server, connection.direction(client).first_bytes())
    # No SYN captured: the direction with a header, else the first that carried data.
    candidates = []
    for client, server in ((sender, receiver), (receiver, sender)):
        stream = _examine(client, server, connection.direction(client).first_bytes())
        if stream.status == "header":
            return stream
        candidates.append(stream)
    with_data = [stream for stream in candidates if stream.status != "no data"]
    return (with_data or candidates)[0]


def header_line(header: pp.Header, size: int) -> str:
    """The header on one line: what ``proxyproto parse`` shows as rows, the TLVs comma-separated."""
    line = f"v{header.version} {header.command.name} {header.family.name} {header.transport.name}"
    if header.source is not None or header.destination is not None:
        line += f" {format_address(header.source)} -> {format_address(header.destination)}"
    line += f" ({size} bytes)"
    tlvs = [f"{label} {value}" for indent, label, value in header_rows(header, size, 0) if indent]
    if tlvs:
        line += "; TLVs: " + ", ".join(tlvs)
    return line


def stream_line(stream: Stream) -> str:
    where = f"{format_address(stream.client)} -> {format_address(stream.server)}"
    if stream.header is not None:
        return f"{where}  {header_line(stream.header, stream.size)}"
    if stream.error is not None:
        return f"{where}  {stream.status} header: {stream.error}"
    return f"{where}  {stream.status}"


def stream_json(stream: Stream) -> dict[str, object]:
    return {
        "client": address_json(stream.client),
        "server": address_json(stream.server),
        "status": stream.status,
        "header": None
        if stream.header is None
        else header_json(stream.header, stream.size, stream.trailing),
        "error": stream.error,
    }


def print_streams(streams: list[Stream], *, as_json: bool) -> None:
    for stream in streams:
        print(json.dumps(stream_json(stream)) if as_json else stream_line(stream))
