"""Send every conformance case to a real HAProxy and nginx and say whether each accepts it.

Run by hand; it needs ``haproxy`` and ``nginx`` (Debian's packages, nginx with its stream
module) and uses loopback only::

    PYTHONPATH=src python tests/vectors/probe_peers.py            # print where they differ from us
    PYTHONPATH=src python tests/vectors/probe_peers.py --write    # record it in the corpus

HAProxy (``tests/haproxy_peer.py``) runs an HTTP frontend with ``accept-proxy`` that answers
every request with 200: each case's bytes are sent, then ``GET / HTTP/1.0``, and a 200 means it
accepted the header. nginx (``tests/nginx_peer.py``) runs a ``stream`` server with
``proxy_protocol`` that writes the header's address and closes: any answer means it accepted the
header, a close without one that it refused it. Truncated prefixes (``need_data``) are not sent:
the peers' answer to a header cut short says nothing about the case.

With ``--write`` the outcomes go into each case as ``"peers": {"haproxy <version>": outcome,
"nginx <version>": outcome}``.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent.parent))

from haproxy_peer import HAProxy, haproxy_version
from nginx_peer import Nginx, nginx_version
from peer_process import free_port

CORPUS = Path(__file__).parent / "conformance.json"
REQUEST = b"GET / HTTP/1.0\r\n\r\n"


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, close our side, return everything the peer sent back."""
    response = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        try:
            client.sendall(data)
            client.shutdown(socket.SHUT_WR)
            while chunk := client.recv(4096):
                response += chunk
        except OSError:  # the peer closed first: it refused the header
            pass
    return response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="record the outcomes in the corpus")
    args = parser.parse_args()

    corpus: dict[str, Any] = json.loads(CORPUS.read_text(encoding="ascii"))
    cases = [case for case in corpus["cases"] if case["expect"] != "need_data"]
    haproxy_port, nginx_port = free_port(), free_port()
    haproxy_config = f"""
frontend conformance
    mode http
    timeout client 2s
    bind 127.0.0.1:{haproxy_port} accept-proxy
    http-request return status 200 content-type text/plain lf-string "%[src]"
"""
    nginx_config = f"""
    server {{
        listen 127.0.0.1:{nginx_port} proxy_protocol;
        proxy_protocol_timeout 2s;
        return "accepted $proxy_protocol_addr\\n";
    }}
"""
    peers: dict[str, dict[str, str]] = {
        f"haproxy {haproxy_version()}": {},
        f"nginx {nginx_version()}": {},
    }
    haproxy, nginx = peers.values()
    with HAProxy(haproxy_config):
        for case in cases:
            response = exchange(haproxy_port, bytes.fromhex(case["hex"]) + REQUEST)
            haproxy[case["name"]] = "accept" if response.startswith(b"HTTP/1.1 200 ") else "reject"
    with Nginx(stream=nginx_config):
        for case in cases:
            response = exchange(nginx_port, bytes.fromhex(case["hex"]))
            nginx[case["name"]] = "accept" if response.startswith(b"accepted ") else "reject"

    for case in cases:
        seen = {peer: outcomes[case["name"]] for peer, outcomes in peers.items()}
        differ = [f"{peer} {seen[peer]}" for peer in seen if seen[peer] != case["expect"]]
        if differ:
            print(f"{case['name']:45} we {case['expect']:7} " + ", ".join(differ))
        if args.write:
            case["peers"] = seen
    if args.write:
        CORPUS.write_text(json.dumps(corpus, indent=1, ensure_ascii=True) + "\n", encoding="ascii")


if __name__ == "__main__":
    main()
