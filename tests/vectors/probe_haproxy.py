"""Send every conformance case to a real HAProxy and say whether its receiver accepts it.

Run by hand; it needs an ``haproxy`` binary (Debian's package) and uses loopback only::

    PYTHONPATH=src python tests/vectors/probe_haproxy.py            # print what differs
    PYTHONPATH=src python tests/vectors/probe_haproxy.py --write    # record it in the corpus

HAProxy (``tests/haproxy_peer.py``) runs an HTTP frontend with ``accept-proxy`` that answers every
request with 200 and the client address it took from the header. Each case's bytes are sent,
followed by ``GET / HTTP/1.0``: a 200 means HAProxy accepted the header, anything else (a close,
a 400) that it refused it. Truncated prefixes (``need_data``) are not sent: HAProxy fails a
header that is not complete in what has arrived, which says nothing about the case.

With ``--write`` the outcome goes into each case as ``"haproxy": {"version", "outcome"}``.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent.parent))

from haproxy_peer import HAProxy, free_port, haproxy_version

CORPUS = Path(__file__).parent / "conformance.json"
REQUEST = b"GET / HTTP/1.0\r\n\r\n"


def outcome(port: int, data: bytes) -> str:
    response = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        try:
            client.sendall(data + REQUEST)
            client.shutdown(socket.SHUT_WR)
            while chunk := client.recv(4096):
                response += chunk
        except OSError:  # HAProxy closed first: it refused the header
            pass
    return "accept" if response.startswith(b"HTTP/1.1 200 ") else "reject"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="record the outcomes in the corpus")
    args = parser.parse_args()

    corpus: dict[str, Any] = json.loads(CORPUS.read_text(encoding="ascii"))
    version = haproxy_version()
    port = free_port()
    config = f"""
frontend conformance
    mode http
    timeout client 2s
    bind 127.0.0.1:{port} accept-proxy
    http-request return status 200 content-type text/plain lf-string "%[src]:%[src_port]"
"""
    with HAProxy(config):
        for case in corpus["cases"]:
            if case["expect"] == "need_data":
                continue
            seen = outcome(port, bytes.fromhex(case["hex"]))
            if seen != case["expect"]:
                print(f"{case['name']:45} we {case['expect']:7} HAProxy {version} {seen}")
            if args.write:
                case["haproxy"] = {"version": version, "outcome": seen}
    if args.write:
        CORPUS.write_text(json.dumps(corpus, indent=1, ensure_ascii=True) + "\n", encoding="ascii")


if __name__ == "__main__":
    main()
