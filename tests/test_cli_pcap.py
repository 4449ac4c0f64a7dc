"""``proxyproto parse --pcap``: captures written at test time with scapy's own writers (pcap and
pcapng), each TCP connection's header found in its first segments, whatever their order."""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import proxyproto as pp
from proxyproto._cli import main

pytest.importorskip("scapy")

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.utils import PcapNgWriter, PcapWriter

from proxyproto._cli.pcap import _Direction

BALANCER = ("10.0.0.1", 40000)
SERVER = ("10.0.0.2", 8443)
CLIENT = ("203.0.113.7", 51234)
DESTINATION = ("198.51.100.10", 443)
V2 = pp.Header.proxy(
    CLIENT, DESTINATION, tlvs=pp.TLVs(alpn=b"h2", aws_vpce_id="vpce-0123456789abcdef0")
)
V2_BYTES = V2.to_bytes(crc32c=True)
V1_BYTES = pp.Header.proxy(CLIENT, DESTINATION, version=1).to_bytes()
REQUEST = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"
ISN = 999  # the balancer's initial sequence number: its first data byte is ISN + 1

Segment = Any  # a scapy packet


def segment(
    sender: tuple[str, int], receiver: tuple[str, int], flags: str, seq: int, data: bytes = b""
) -> Segment:
    ip: Any = IPv6 if ":" in sender[0] else IP
    layer = ip(src=sender[0], dst=receiver[0]) / TCP(
        sport=sender[1], dport=receiver[1], flags=flags, seq=seq % (1 << 32)
    )
    return Ether() / layer / data if data else Ether() / layer


def connection(
    data: bytes,
    *,
    balancer: tuple[str, int] = BALANCER,
    server: tuple[str, int] = SERVER,
    isn: int = ISN,
    cuts: list[int] | None = None,
    order: Callable[[list[Segment]], list[Segment]] = lambda segments: segments,
    syn: bool = True,
) -> list[Segment]:
    """A connection from ``balancer`` to ``server`` whose client sends ``data``, cut at
    ``cuts``, its data segments in ``order``; the server answers with one segment."""
    bounds = [0, *(cuts or []), len(data)]
    pieces = [
        segment(balancer, server, "PA", isn + 1 + a, data[a:b])
        for a, b in itertools.pairwise(bounds)
        if b > a
    ]
    handshake = [segment(balancer, server, "S", isn), segment(server, balancer, "SA", 5000)]
    answer = [segment(server, balancer, "PA", 5001, b"HTTP/1.1 200 OK\r\n\r\n")]
    return [*(handshake if syn else []), *order(pieces), *answer]


def write(path: Path, packets: list[Segment], *, pcapng: bool = False) -> str:
    writer: Any = PcapNgWriter(str(path)) if pcapng else PcapWriter(str(path))
    for packet in packets:
        writer.write(packet)
    writer.close()
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def lines(capsys: pytest.CaptureFixture[str], path: str, *more: str) -> list[str]:
    status, out, err = run(capsys, "parse", "--pcap", path, *more)
    assert (status, err) == (0, "")
    return out.splitlines()


def parsed(capsys: pytest.CaptureFixture[str], path: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(capsys, path, "--json")]


@pytest.mark.parametrize("pcapng", [False, True], ids=["pcap", "pcapng"])
def test_one_line_per_connection(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, pcapng: bool
) -> None:
    packets = [
        *connection(V2_BYTES + REQUEST),
        *connection(V1_BYTES + REQUEST, balancer=("10.0.0.1", 40001)),
        *connection(REQUEST, balancer=("10.0.0.3", 40002)),
    ]
    path = write(tmp_path / "capture", packets, pcapng=pcapng)
    assert lines(capsys, path) == [
        "10.0.0.1:40000 -> 10.0.0.2:8443  v2 PROXY INET STREAM 203.0.113.7:51234 -> "
        f"198.51.100.10:443 ({len(V2_BYTES)} bytes); TLVs: ALPN h2, AWS VPC endpoint id "
        f"vpce-0123456789abcdef0, CRC32C 0x{pp.parse(V2_BYTES)[0].tlvs.crc32c:08x} (verified)",
        "10.0.0.1:40001 -> 10.0.0.2:8443  v1 PROXY INET STREAM 203.0.113.7:51234 -> "
        f"198.51.100.10:443 ({len(V1_BYTES)} bytes)",
        "10.0.0.3:40002 -> 10.0.0.2:8443  no header",
    ]
    first, second, third = parsed(capsys, path)
    assert first["client"] == {"host": "10.0.0.1", "port": 40000}
    assert first["server"] == {"host": "10.0.0.2", "port": 8443}
    assert first["status"] == "header"
    assert first["header"]["tlvs"]["aws_vpce_id"] == "vpce-0123456789abcdef0"
    assert first["header"]["header_size"] == len(V2_BYTES)
    assert first["header"]["trailing_bytes"] == len(REQUEST)
    assert second["header"]["version"] == 1
    assert (third["status"], third["header"], third["error"]) == ("no header", None, None)


@pytest.mark.parametrize("link", ["raw IP", "Linux cooked", "Linux cooked v2", "loopback"])
def test_link_layers(capsys: pytest.CaptureFixture[str], tmp_path: Path, link: str) -> None:
    """What tcpdump writes on a Linux balancer (-i any: cooked), on loopback, or raw IP."""
    from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Loopback

    frame: Callable[[Segment], Any] = {
        "raw IP": lambda ip: ip,
        "Linux cooked": lambda ip: CookedLinux() / ip,
        "Linux cooked v2": lambda ip: CookedLinuxV2() / ip,
        "loopback": lambda ip: Loopback() / ip,
    }[link]
    packets = [frame(packet.payload) for packet in connection(V2_BYTES, cuts=[7])]
    (line,) = parsed(capsys, write(tmp_path / "link.pcap", packets))
    assert line["status"] == "header"


def test_header_split_reordered_and_retransmitted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Segments out of order, one sent twice, one overlapping another: put back in order."""

    def shuffle(pieces: list[Segment]) -> list[Segment]:
        return [pieces[2], pieces[0], pieces[2], pieces[3], pieces[1]]

    data = V2_BYTES + REQUEST
    packets = connection(data, cuts=[1, 13, 20], order=shuffle)
    overlap = segment(BALANCER, SERVER, "PA", ISN + 1 + 10, data[10:30])
    path = write(tmp_path / "split.pcap", [*packets[:3], overlap, *packets[3:]])
    (line,) = parsed(capsys, path)
    assert line["status"] == "header"
    assert line["header"]["tlvs"]["alpn"] == b"h2".hex()


def test_header_a_byte_at_a_time_across_sequence_wraparound(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = V1_BYTES
    packets = connection(data, isn=(1 << 32) - 10, cuts=list(range(1, len(data))))
    (line,) = parsed(capsys, write(tmp_path / "wrap.pcap", packets))
    assert line["header"]["source"] == {"host": CLIENT[0], "port": CLIENT[1]}


def test_capture_started_after_the_handshake(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """No SYN: the server's answer came first in the capture, the balancer's bytes still hold
    the header, in two segments captured in reverse order."""
    packets = connection(
        V2_BYTES, syn=False, cuts=[16], order=lambda pieces: list(reversed(pieces))
    )
    path = write(tmp_path / "late.pcap", [packets[-1], *packets[:-1]])
    (line,) = lines(capsys, path)
    assert line.startswith("10.0.0.1:40000 -> 10.0.0.2:8443  v2 PROXY")


def test_ipv6_and_ethernet_padding(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A 15-byte v1 UNKNOWN over IPv4 fills less than Ethernet's 60-byte minimum: the frame's
    padding is not the stream's data."""
    unknown = pp.Header.unknown().to_bytes()
    packets = [
        *connection(unknown),
        *connection(V2_BYTES, balancer=("2001:db8::1", 40000), server=("2001:db8::2", 443)),
    ]
    raw = [Ether(bytes(packet) + b"\x00" * 8) for packet in packets]
    first, second = parsed(capsys, write(tmp_path / "v6.pcap", raw))
    assert first["header"]["command"] == "PROXY"
    assert first["header"]["family"] == "UNSPEC"
    assert first["header"]["trailing_bytes"] == 0
    assert second["client"] == {"host": "2001:db8::1", "port": 40000}
    assert second["status"] == "header"


def test_broken_incomplete_and_empty(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing_middle = [
        packet
        for index, packet in enumerate(connection(V2_BYTES, cuts=[10, 20]))
        if index != 3  # the second data segment was not captured
    ]
    packets = [
        *connection(b"PROXY TCP4 1.2.3.4\r\n" + REQUEST),
        *[segment(("10.0.0.1", 40001), SERVER, "S", 1)],
        *connection(V2_BYTES[:20], balancer=("10.0.0.1", 40002)),
    ]
    out = lines(capsys, write(tmp_path / "bad.pcap", packets))
    assert out[0].startswith("10.0.0.1:40000 -> 10.0.0.2:8443  invalid header: v1:")
    assert out[1] == "10.0.0.1:40001 -> 10.0.0.2:8443  no data"
    assert out[2].startswith("10.0.0.1:40002 -> 10.0.0.2:8443  incomplete header: ")
    assert out[2].endswith("(20 bytes captured)")
    assert len(out) == 3
    # A segment missing from the capture: what came before the gap is all there is.
    (line,) = parsed(capsys, write(tmp_path / "gap.pcap", missing_middle))
    assert line["status"] == "incomplete"
    assert "(10 bytes captured)" in line["error"]


def test_reassembly_is_bounded() -> None:
    direction = _Direction(start=1)
    chunk = b"x" * 60000
    for index in range(10):
        direction.add(1 + index * len(chunk), chunk)
    assert len(direction.first_bytes()) == pp.MAX_HEADER_SIZE
    assert direction.kept <= pp.MAX_HEADER_SIZE + len(chunk)
    unanchored = _Direction()
    for index in range(10):
        unanchored.add(1 + index * len(chunk), chunk)
    assert unanchored.kept <= 2 * pp.MAX_HEADER_SIZE + len(chunk)
    assert len(unanchored.first_bytes()) == pp.MAX_HEADER_SIZE


def test_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, out, err = run(capsys, "parse", "--pcap", str(tmp_path / "absent.pcap"))
    assert (status, out) == (1, "")
    assert err == f"proxyproto: cannot read {tmp_path / 'absent.pcap'}: No such file or directory\n"
    text = tmp_path / "text.pcap"
    text.write_text("not a capture\n")
    status, out, err = run(capsys, "parse", "--pcap", str(text))
    assert (status, out) == (1, "")
    assert err.startswith(f"proxyproto: {text}: not a pcap or pcapng capture")
    assert main(["parse", "0d0a", "--pcap", str(text)]) == 2
    assert "not both" in capsys.readouterr().err


def test_without_scapy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [name for name in sys.modules if name.partition(".")[0] == "scapy"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "scapy", None)
    status, out, err = run(capsys, "parse", "--pcap", str(tmp_path / "any.pcap"))
    assert (status, out) == (1, "")
    assert err == (
        "proxyproto: proxyproto parse --pcap needs scapy, which is not installed: "
        "pip install '.[pcap]'\n"
    )
