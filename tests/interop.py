"""The client side shared by the interop tests against real peers (``test_haproxy``,
``test_peers_anyio``, the Hypercorn and Uvicorn tests): what the client sends and how, the
certificates, the loopback addresses it connects to, when a missing HAProxy skips or fails, HAProxy
with ``send-proxy-v2`` in front of a server, and a request by ``curl --haproxy-protocol``.

The fixtures stay in the test modules (pytest finds them there); they call these helpers.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import proxyproto as pp
from haproxy_peer import HAProxy, find_haproxy, free_port, hostport
from require_peer import ci_is_set, require_binary, require_curl

__all__ = [
    "ALL_V2_OPTIONS",
    "CLIENT_CN",
    "LOOPBACK_HOSTS",
    "PAYLOAD_SIZE",
    "SNI",
    "Certs",
    "client_tls_context",
    "curl_haproxy_protocol",
    "haproxy_send_proxy_v2",
    "issue_certs",
    "listen",
    "loopback_host",
    "make_payload",
    "require_haproxy",
]

PAYLOAD_SIZE = 64 * 1024

SNI = "proxyproto.test"
CLIENT_CN = "proxyproto-client"
ALL_V2_OPTIONS = "ssl,cert-cn,ssl-cipher,cert-sig,cert-key,authority,crc32c,unique-id"

# =============================================================================== the peer


def require_haproxy(binary: str | None, *, ci: bool) -> str:
    """The haproxy binary; without one, skip, or fail under CI (which must prove interop ran)."""
    return require_binary("haproxy", binary, ci=ci, install="apt-get install haproxy")


def listen(bind: str, server: str, *extra: str) -> str:
    """An HAProxy ``listen fe`` section: ``bind``, the ``extra`` lines, then ``server be``."""
    lines = ["listen fe", f"    bind {bind}", *(f"    {line}" for line in extra)]
    lines.append(f"    server be {server}")
    return "\n".join(lines) + "\n"


@contextmanager
def haproxy_send_proxy_v2(server: tuple[str, int]) -> Iterator[tuple[str, int]]:
    """HAProxy on a free 127.0.0.1 port relaying to ``server`` with ``send-proxy-v2``: yields its
    address. Without haproxy, skips, or fails under CI."""
    haproxy = require_haproxy(find_haproxy(), ci=ci_is_set())
    front = ("127.0.0.1", free_port())
    with HAProxy(listen(hostport(*front), f"{hostport(*server)} send-proxy-v2"), binary=haproxy):
        yield front


def curl_haproxy_protocol(url: str) -> Any:
    """``GET url`` by ``curl --haproxy-protocol`` (a v1 header with curl's own address): the JSON
    answer. Without a curl that has the option, skips, or fails under CI."""
    result = subprocess.run(
        [require_curl(), "--silent", "--show-error", "--max-time", "10", "--haproxy-protocol", url],
        capture_output=True,
        check=True,
        timeout=20,
    )
    return json.loads(result.stdout)


# =============================================================================== loopback

#: The addresses a client connects to the peer on: ``@pytest.fixture(params=LOOPBACK_HOSTS)``.
LOOPBACK_HOSTS = [pytest.param("127.0.0.1", id="ipv4"), pytest.param("::1", id="ipv6")]


def has_ipv6_loopback() -> bool:
    """Whether this host can bind ::1 (some containers have no IPv6)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def loopback_host(request: pytest.FixtureRequest) -> str:
    """The host of a fixture over :data:`LOOPBACK_HOSTS`; skips ``::1`` where there is none."""
    host: str = request.param
    if host == "::1" and not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback (::1) on this machine")
    return host


# =============================================================================== what is sent


def make_payload() -> bytes:
    """64 KiB that must arrive verbatim; it starts with a spoofed header of its own."""
    spoof = pp.Header.proxy(("192.0.2.1", 1), ("192.0.2.2", 2)).to_bytes()
    return spoof + os.urandom(PAYLOAD_SIZE - len(spoof))


# =============================================================================== TLS


@dataclass
class Certs:
    ca: trustme.CA
    ca_file: Path
    server_file: Path
    client: trustme.LeafCert
    server_key_alg: str
    server_sig_alg: str


def _key_alg(cert: x509.Certificate) -> str:
    """HAProxy's name for a certificate's key: ``RSA<bits>`` or ``EC<bits>``."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA{key.key_size}"
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return f"EC{key.key_size}"


def _sig_alg(cert: x509.Certificate) -> str:
    """OpenSSL's short name of a certificate's signature algorithm (what cert-sig sends)."""
    return {
        "1.2.840.10045.4.3.2": "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3": "ecdsa-with-SHA384",
        "1.2.840.113549.1.1.11": "RSA-SHA256",
    }[cert.signature_algorithm_oid.dotted_string]


def issue_certs(directory: Path) -> Certs:
    """A test CA, a server certificate for :data:`SNI` and a client one for :data:`CLIENT_CN`.

    The CA and the server's key and chain are written to ``directory`` for the peer to read.
    """
    ca = trustme.CA(organization_name="proxyproto test CA")
    server = ca.issue_cert(SNI, common_name=SNI)
    client = ca.issue_cert("client.proxyproto.test", common_name=CLIENT_CN)
    ca_file, server_file = directory / "ca.pem", directory / "server.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server.private_key_and_cert_chain_pem.write_to_path(str(server_file))
    server_cert = x509.load_pem_x509_certificate(server.cert_chain_pems[0].bytes())
    return Certs(
        ca=ca,
        ca_file=ca_file,
        server_file=server_file,
        client=client,
        server_key_alg=_key_alg(server_cert),
        server_sig_alg=_sig_alg(server_cert),
    )


def client_tls_context(certs: Certs, *, client_cert: bool) -> ssl.SSLContext:
    """A client context trusting the test CA, presenting the client certificate when asked."""
    context = ssl.create_default_context()
    certs.ca.configure_trust(context)
    if client_cert:
        certs.client.configure_cert(context)
    return context
