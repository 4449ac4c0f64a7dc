"""Every script in examples/ runs cleanly and prints what the docs say it prints.

The docs include these files verbatim (``literalinclude``), so this is what keeps the docs true.
Each script also asserts its own expectations; here we check it exits 0 and key lines appear.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: Lines each example must print (each one whole, in this order, other lines may come between).
EXPECTED: dict[str, list[str]] = {
    "parse_header.py": [
        "v1 PROXY: ('192.0.2.1', 56324) -> ('198.51.100.7', 443)",
        "application data: b'GET / HTTP/1.1\\r\\n'",
        "v2 INET/STREAM: ('192.0.2.1', 56324)",
        "ALPN b'h2', authority 'example.com'",
        "refused: v1: port '080' has a leading zero",
        "incomplete: read more and try again",
    ],
    "incremental.py": [
        "read 1:  8 bytes -> NEED_DATA",
        "read 2: 14 bytes -> NEED_DATA",
        "client ('192.0.2.1', 56324), trailing data b'GET / HTTP/1.1\\r\\n'",
        "at EOF: v1: the peer closed after 20 bytes of the header",
    ],
    "build_header.py": [
        "parsed back: ('2001:db8::1', 56324) -> ('2001:db8::2', 443), TLS group X25519",
        "v1: b'PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\\r\\n'",
        "LOCAL: 0d0a0d0a000d0a515549540a20000000, UNKNOWN: b'PROXY UNKNOWN\\r\\n'",
    ],
    "datagram.py": [
        "DGRAM from ('192.0.2.1', 5353), payload b'\\x124 a DNS query'",
    ],
    "anyio_server.py": [
        "connection from ('203.0.113.7', 51234) failed: IncompleteRead",
        "serve(): hello from ('203.0.113.7', 51234) via ('198.51.100.10', 443)",
        "connection from ('203.0.113.7', 51234) failed: IncompleteRead",
        "ready_streams(): hello from ('203.0.113.7', 51234) via ('198.51.100.10', 443)",
        "connection from ('203.0.113.7', 51234) failed: IncompleteRead",
        "wrap(): hello from ('203.0.113.7', 51234) via ('198.51.100.10', 443)",
    ],
    "anyio_trusted.py": [
        "proxy, verified certificate: PROXY ('203.0.113.7', 51234) cn=alice.example",
        "proxy, health check (LOCAL): served as the proxy's own connection",
        "proxy, no client certificate: refused by the validator",
        "stranger, forged header: refused by the policy",
        "accepted 2, refused {'policy': 1, 'validator': 1}",
    ],
    "anyio_tls.py": [
        "over TLS: hello ('203.0.113.7', 51234) over http/1.1, header v2",
    ],
    "udp_server.py": [
        "query from ('203.0.113.7', 51234) via 127.0.0.1",
        "the proxy got \"hello ('203.0.113.7', 51234)\"",
        "the proxy got \"hello ('203.0.113.8', 40000)\"",
        "delivered 2, dropped {'invalid': 1, 'missing': 1}",
    ],
    "trio_server.py": [
        "serve_listeners(): hello from ('203.0.113.7', 51234)",
        "no header: refused",
    ],
    "uvicorn_app.py": [
        "first request: hello 203.0.113.7 port 51234",
        "same connection: hello 203.0.113.7 port 51234",
        "no header: refused",
        "Uvicorn stopped",
    ],
    "asgi_extension.py": [
        "client ('203.0.113.7', 51234) via 127.0.0.1, endpoint vpce-0123456789abcdef0, cn alice",
    ],
    "hypercorn_app.py": [
        "asyncio: hello 203.0.113.7:51234",
        "asyncio: hello 203.0.113.7:51234",
        "no header: refused",
        "trio: hello 203.0.113.7:51234",
        "trio: hello 203.0.113.7:51234",
        "no header: refused",
    ],
    "testing_kit.py": [
        "asyncio, through the transport: hello 203.0.113.9:40000",
        "asyncio, through the balancer: hello 203.0.113.9:40000",
        "asyncio, a broken header: refused",
        "trio, through the transport: hello 203.0.113.9:40000",
        "trio, through the balancer: hello 203.0.113.9:40000",
        "trio, a broken header: refused",
    ],
    "test_app_behind_balancer.py": [
        "pytest exit status: 0",
    ],
    "anyio_relay.py": [
        "through one relay: hello from ('203.0.113.7', 51234) to ('198.51.100.10', 443)",
        "through two relays: hello from ('203.0.113.7', 51234) to ('198.51.100.10', 443)",
    ],
}


def test_every_example_is_checked() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example(name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    position = 0
    for expected in EXPECTED[name]:
        assert expected in lines[position:], f"{expected!r} not printed (in order) by {name}"
        position = lines.index(expected, position) + 1
