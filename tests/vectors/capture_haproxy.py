"""Capture PROXY protocol headers sent by a real HAProxy, to be used as test vectors.

Run by hand; it needs Debian's ``haproxy`` package and ``trustme`` (which pulls in
``cryptography``), and uses loopback only::

    apt-get install -y haproxy
    python -m venv /work/venvs/capture && /work/venvs/capture/bin/pip install trustme
    /work/venvs/capture/bin/python tests/vectors/capture_haproxy.py            # every scenario
    /work/venvs/capture/bin/python tests/vectors/capture_haproxy.py --list     # scenario names
    /work/venvs/capture/bin/python tests/vectors/capture_haproxy.py v2-tcp4    # some of them

For every scenario it starts HAProxy (``tests/haproxy_peer.py``) with a TCP-mode ``listen``
section whose ``server`` is a plain Python socket "backend" on 127.0.0.1, connects a client to the
frontend, sends ``MARKER`` and records the exact bytes that reach the backend. The header is what
precedes ``MARKER``. Health-check scenarios have no client: the backend records everything the
checker sends until it closes.

Each capture becomes ``<out>/<name>.hex`` (hex of the header bytes only, one line) and
``<out>/<name>.json`` (what is known to be in it, from the client's side of the connection: the
client's real ephemeral port, the frontend address, the negotiated TLS version, cipher and ALPN,
the certificates' names and algorithms). ``<out>`` defaults to ``tests/vectors/haproxy``.

The CA, server and client certificates are created with trustme in a temporary directory and
deleted afterwards; no private key is ever written to the output directory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import socket
import ssl
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from haproxy_peer import HAProxy, free_port, haproxy_version, hostport

MARKER = b"PROXYPROTO-CAPTURE-PAYLOAD\n"
TIMEOUT = 10.0
SNI = "proxyproto.test"
CLIENT_CN = "proxyproto-client"
UNTRUSTED_CN = "proxyproto-untrusted-client"
ALPN_SERVER = "h2,http/1.1"  # HAProxy's "alpn" bind list, in its order of preference
ALPN_CLIENT = ["http/1.1", "h2"]
UNIQUE_ID_FORMAT = "proxyproto-%ci:%cp"
ALL_V2_OPTIONS = "ssl,cert-cn,ssl-cipher,cert-sig,cert-key,authority,crc32c,unique-id"
PP2_CLIENT_SSL, PP2_CLIENT_CERT_CONN, PP2_CLIENT_CERT_SESS = 0x01, 0x02, 0x04
# What HAProxy reports for a lone client certificate whose issuer is unknown ("openssl verify"
# says 20, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, for the same certificate).
X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE = 21

Json = dict[str, Any]


# --------------------------------------------------------------------------- backend


class Backend:
    """A loopback TCP server that records the bytes of every connection it accepts.

    A connection is recorded once ``MARKER`` has arrived, or when the peer closes it (or resets
    it, or goes quiet for ``TIMEOUT`` seconds).
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.received: queue.Queue[tuple[bytes, tuple[str, int]]] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Backend:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes up accept(); close() alone does not
        self.sock.close()
        self._thread.join(TIMEOUT)

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._record, args=(conn, peer), daemon=True).start()

    def _record(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        data = b""
        conn.settimeout(TIMEOUT)
        with conn:
            while MARKER not in data:
                try:
                    chunk = conn.recv(65536)
                except OSError:  # reset by the health checker, or timeout
                    break
                if not chunk:
                    break
                data += chunk
        self.received.put((data, (peer[0], peer[1])))

    def next(self) -> bytes:
        """The bytes of the next recorded connection."""
        return self.next_with_peer()[0]

    def next_with_peer(self) -> tuple[bytes, tuple[str, int]]:
        """The bytes of the next recorded connection, and the address it came from."""
        return self.received.get(timeout=TIMEOUT)


# --------------------------------------------------------------------------- certificates


@dataclass
class Certs:
    directory: Path
    ca: Path
    server: Path  # certificate chain and key, as HAProxy's "crt" wants it
    client: Path  # PEM key + chain, for ssl.SSLContext.load_cert_chain
    untrusted_client: Path
    server_sig_alg: str
    server_key_alg: str


def _openssl_sig_name(cert: x509.Certificate) -> str:
    """OpenSSL's short name (OBJ_nid2sn) of a certificate's signature algorithm."""
    names = {
        "1.2.840.10045.4.3.2": "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3": "ecdsa-with-SHA384",
        "1.2.840.113549.1.1.11": "RSA-SHA256",
        "1.2.840.113549.1.1.12": "RSA-SHA384",
    }
    return names[cert.signature_algorithm_oid.dotted_string]


def _haproxy_key_name(cert: x509.Certificate) -> str:
    """HAProxy's name for a certificate's key algorithm: "RSA<bits>" or "EC<bits>"."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC{key.key_size}"
    raise TypeError(f"unexpected key type {type(key).__name__}")


def make_certs(directory: Path) -> Certs:
    # The server key is RSA and the client keys are ECDSA, so the cert-key TLV shows which
    # certificate HAProxy describes (its own, as it turns out).
    ca = trustme.CA(organization_name="proxyproto test CA")
    server = ca.issue_cert(SNI, common_name=SNI, key_type=trustme.KeyType.RSA)
    client = ca.issue_cert("client.proxyproto.test", common_name=CLIENT_CN)
    other_ca = trustme.CA(organization_name="proxyproto untrusted CA")
    untrusted = other_ca.issue_cert("untrusted.proxyproto.test", common_name=UNTRUSTED_CN)
    certs = Certs(
        directory=directory,
        ca=directory / "ca.pem",
        server=directory / "server.pem",
        client=directory / "client.pem",
        untrusted_client=directory / "untrusted-client.pem",
        server_sig_alg="",
        server_key_alg="",
    )
    ca.cert_pem.write_to_path(str(certs.ca))
    server.private_key_and_cert_chain_pem.write_to_path(str(certs.server))
    client.private_key_and_cert_chain_pem.write_to_path(str(certs.client))
    untrusted.private_key_and_cert_chain_pem.write_to_path(str(certs.untrusted_client))
    server_cert = x509.load_pem_x509_certificate(server.cert_chain_pems[0].bytes())
    certs.server_sig_alg = _openssl_sig_name(server_cert)
    certs.server_key_alg = _haproxy_key_name(server_cert)
    return certs


# --------------------------------------------------------------------------- clients


@dataclass
class ClientInfo:
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None
    tls: Json = field(default_factory=dict)


def tcp_client(host: str, port: int, backend: Backend) -> tuple[ClientInfo, bytes]:
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        src = sock.getsockname()
        sock.sendall(MARKER)
        data = backend.next()
    return ClientInfo(source=(src[0], src[1]), destination=(host, port)), data


def unix_client(path: Path, backend: Backend) -> tuple[ClientInfo, bytes]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(path))
        sock.sendall(MARKER)
        data = backend.next()
    return ClientInfo(), data


def tls_client(
    host: str,
    port: int,
    backend: Backend,
    certs: Certs,
    *,
    client_cert: Path | None,
    max_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
) -> tuple[ClientInfo, bytes]:
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.maximum_version = max_version
    ctx.set_alpn_protocols(ALPN_CLIENT)
    if client_cert is not None:
        ctx.load_cert_chain(str(client_cert))
    with (
        socket.create_connection((host, port), timeout=TIMEOUT) as raw,
        ctx.wrap_socket(raw, server_hostname=SNI) as sock,
    ):
        src = sock.getsockname()
        sock.sendall(MARKER)
        data = backend.next()
        cipher = sock.cipher()
        tls = {
            "version": sock.version(),
            "cipher": cipher[0] if cipher else None,
            "alpn": sock.selected_alpn_protocol(),
        }
    return ClientInfo(source=(src[0], src[1]), destination=(host, port), tls=tls), data


# --------------------------------------------------------------------------- scenarios


@dataclass
class Capture:
    header: bytes
    meta: Json


@dataclass
class Context:
    certs: Certs
    tmp: Path
    version: str


def _split(data: bytes) -> bytes:
    if not data.endswith(MARKER) or data.count(MARKER) != 1:
        raise RuntimeError(f"the backend did not receive header + marker: {data!r}")
    return data[: -len(MARKER)]


def _listen(name: str, bind: str, server: str, extra: str = "") -> str:
    lines = [f"listen {name}", f"    bind {bind}"]
    lines += [f"    {line}" for line in extra.splitlines() if line]
    lines.append(f"    server be {server}")
    return "\n".join(lines) + "\n"


def _meta(
    description: str,
    config: str,
    header: bytes,
    *,
    version: int,
    command: str | None,
    family: str,
    transport: str,
    info: ClientInfo,
    tlvs: Json | None = None,
) -> Json:
    return {
        "description": description,
        "haproxy_config": config,
        "length": len(header),
        "version": version,
        "command": command,
        "family": family,
        "transport": transport,
        "source": list(info.source) if info.source else None,
        "destination": list(info.destination) if info.destination else None,
        "tlvs": tlvs or {},
    }


def _proxied(
    ctx: Context,
    name: str,
    description: str,
    *,
    host: str,
    server_opts: str,
    extra: str = "",
    version: int,
    tlvs: Callable[[ClientInfo], Json] | None = None,
) -> Capture:
    """A plain TCP client on ``host`` through a plain TCP frontend on ``host``."""
    with Backend() as backend:
        port = free_port(host)
        be = hostport("127.0.0.1", backend.port)
        config = _listen(name, hostport(host, port), f"{be} {server_opts}", extra)
        with HAProxy(config):
            info, data = tcp_client(host, port, backend)
    header = _split(data)
    family = "INET6" if ":" in host else "INET"
    meta = _meta(
        description,
        config,
        header,
        version=version,
        command="PROXY",
        family=family,
        transport="STREAM",
        info=info,
        tlvs=tlvs(info) if tlvs else None,
    )
    return Capture(header, meta)


def v1_tcp4(ctx: Context) -> Capture:
    return _proxied(
        ctx,
        "v1-tcp4",
        "send-proxy, IPv4 client",
        host="127.0.0.1",
        server_opts="send-proxy",
        version=1,
    )


def v1_tcp6(ctx: Context) -> Capture:
    return _proxied(
        ctx,
        "v1-tcp6",
        "send-proxy, IPv6 client on ::1",
        host="::1",
        server_opts="send-proxy",
        version=1,
    )


def v2_tcp4(ctx: Context) -> Capture:
    return _proxied(
        ctx,
        "v2-tcp4",
        "send-proxy-v2, IPv4 client",
        host="127.0.0.1",
        server_opts="send-proxy-v2",
        version=2,
    )


def v2_tcp6(ctx: Context) -> Capture:
    return _proxied(
        ctx,
        "v2-tcp6",
        "send-proxy-v2, IPv6 client on ::1",
        host="::1",
        server_opts="send-proxy-v2",
        version=2,
    )


def v2_tcp4_crc32c(ctx: Context) -> Capture:
    return _proxied(
        ctx,
        "v2-tcp4-crc32c",
        "send-proxy-v2 proxy-v2-options crc32c",
        host="127.0.0.1",
        server_opts="send-proxy-v2 proxy-v2-options crc32c",
        version=2,
        tlvs=lambda info: {"crc32c": True},
    )


def _unique_id(info: ClientInfo) -> str:
    assert info.source is not None
    return UNIQUE_ID_FORMAT.replace("%ci", info.source[0]).replace("%cp", str(info.source[1]))


def v2_tcp4_unique_id(ctx: Context) -> Capture:
    return _proxied(
        ctx,
        "v2-tcp4-unique-id",
        f"proxy-v2-options unique-id, {UNIQUE_ID_FORMAT!r}",
        host="127.0.0.1",
        server_opts="send-proxy-v2 proxy-v2-options unique-id",
        extra=f"unique-id-format {UNIQUE_ID_FORMAT}",
        version=2,
        tlvs=lambda info: {"unique_id": _unique_id(info)},
    )


def v2_tcp4_all_options_plaintext(ctx: Context) -> Capture:
    return _proxied(
        ctx,
        "v2-tcp4-all-options-plaintext",
        "every proxy-v2-options value on a plain TCP frontend: the SSL TLV is sent anyway, "
        "with client=0 and no sub-TLV",
        host="127.0.0.1",
        server_opts=f"send-proxy-v2 proxy-v2-options {ALL_V2_OPTIONS}",
        extra=f"unique-id-format {UNIQUE_ID_FORMAT}",
        version=2,
        tlvs=lambda info: {
            "crc32c": True,
            "unique_id": _unique_id(info),
            "ssl": {"client": 0, "verify": 0},
        },
    )


def _tls(
    ctx: Context,
    name: str,
    description: str,
    *,
    server_opts: str,
    client_cert: Path | None,
    bind_extra: str = "",
    max_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
    ssl_expected: Json | None = None,
    all_options: bool = True,
) -> Capture:
    """A TLS client (SNI, ALPN, optional client certificate) through a TLS frontend."""
    certs = ctx.certs
    with Backend() as backend:
        port = free_port()
        bind = (
            f"{hostport('127.0.0.1', port)} ssl crt {certs.server} ca-file {certs.ca} "
            f"verify optional alpn {ALPN_SERVER}{bind_extra}"
        )
        be = hostport("127.0.0.1", backend.port)
        extra = f"unique-id-format {UNIQUE_ID_FORMAT}" if all_options else ""
        config = _listen(name, bind, f"{be} {server_opts}", extra)
        with HAProxy(config):
            info, data = tls_client(
                "127.0.0.1", port, backend, certs, client_cert=client_cert, max_version=max_version
            )
    header = _split(data)
    tlvs: Json = {"alpn": info.tls["alpn"]}
    if all_options:
        tlvs["authority"] = SNI
        tlvs["crc32c"] = True
        tlvs["unique_id"] = _unique_id(info)
        tlvs["ssl"] = {
            "version": info.tls["version"],
            "cipher": info.tls["cipher"],
            "sig_alg": certs.server_sig_alg,
            "key_alg": certs.server_key_alg,
            **(ssl_expected or {}),
        }
    meta = _meta(
        description,
        config.replace(str(certs.directory), "$CERTS"),
        header,
        version=2,
        command="PROXY",
        family="INET",
        transport="STREAM",
        info=info,
        tlvs=tlvs,
    )
    return Capture(header, meta)


def v2_tls_alpn(ctx: Context) -> Capture:
    return _tls(
        ctx,
        "v2-tls-alpn",
        "TLS frontend, plain send-proxy-v2: only the ALPN TLV",
        server_opts="send-proxy-v2",
        client_cert=None,
        all_options=False,
    )


def v2_tls13_client_cert(ctx: Context) -> Capture:
    return _tls(
        ctx,
        "v2-tls13-client-cert",
        "TLS 1.3 with a client certificate, every proxy-v2-options value",
        server_opts=f"send-proxy-v2 proxy-v2-options {ALL_V2_OPTIONS}",
        client_cert=ctx.certs.client,
        ssl_expected={
            "client": PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS,
            "verify": 0,
            "cn": CLIENT_CN,
        },
    )


def v2_tls13_no_client_cert(ctx: Context) -> Capture:
    return _tls(
        ctx,
        "v2-tls13-no-client-cert",
        "TLS 1.3 without a client certificate (verify optional), every proxy-v2-options value",
        server_opts=f"send-proxy-v2 proxy-v2-options {ALL_V2_OPTIONS}",
        client_cert=None,
        ssl_expected={"client": PP2_CLIENT_SSL, "verify": 0},
    )


def v2_tls12_client_cert(ctx: Context) -> Capture:
    return _tls(
        ctx,
        "v2-tls12-client-cert",
        "TLS 1.2 with a client certificate, every proxy-v2-options value",
        server_opts=f"send-proxy-v2 proxy-v2-options {ALL_V2_OPTIONS}",
        client_cert=ctx.certs.client,
        max_version=ssl.TLSVersion.TLSv1_2,
        ssl_expected={
            "client": PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS,
            "verify": 0,
            "cn": CLIENT_CN,
        },
    )


def v2_tls13_untrusted_client_cert(ctx: Context) -> Capture:
    return _tls(
        ctx,
        "v2-tls13-untrusted-client-cert",
        "TLS 1.3, client certificate from an unknown CA accepted with crt-ignore-err all: "
        "verify carries the X509 error",
        server_opts=f"send-proxy-v2 proxy-v2-options {ALL_V2_OPTIONS}",
        client_cert=ctx.certs.untrusted_client,
        bind_extra=" crt-ignore-err all ca-ignore-err all",
        ssl_expected={
            "client": PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS,
            "verify": X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE,
            "cn": UNTRUSTED_CN,
        },
    )


def _check(
    ctx: Context,
    name: str,
    description: str,
    *,
    server_opts: str,
    version: int,
    tlvs: Json,
    extra: str = "",
) -> Capture:
    """No client: the header of HAProxy's own health-check connection to the backend."""
    with Backend() as backend:
        be = hostport("127.0.0.1", backend.port)
        config = _listen(
            name,
            hostport("127.0.0.1", free_port()),
            f"{be} {server_opts} check inter 300ms",
            extra,
        )
        with HAProxy(config):
            header, peer = backend.next_with_peer()
    if not header:
        raise RuntimeError(f"{name}: the health check sent nothing")
    if version == 2:
        # v2: a LOCAL header with no address.
        command, family, transport, info = "LOCAL", "UNSPEC", "UNSPEC", ClientInfo()
    else:
        # v1 has no LOCAL: HAProxy describes the check connection itself, from its own ephemeral
        # port to the server.
        command, family, transport = "PROXY", "INET", "STREAM"
        info = ClientInfo(source=peer, destination=("127.0.0.1", backend.port))
    meta = _meta(
        description,
        config,
        header,
        version=version,
        command=command,
        family=family,
        transport=transport,
        info=info,
        tlvs=tlvs,
    )
    return Capture(header, meta)


def v2_local_check(ctx: Context) -> Capture:
    return _check(
        ctx,
        "v2-local-check",
        "health check (default connect check) of a send-proxy-v2 server",
        server_opts="send-proxy-v2",
        version=2,
        tlvs={},
    )


def v2_local_check_crc32c(ctx: Context) -> Capture:
    return _check(
        ctx,
        "v2-local-check-crc32c",
        "health check of a send-proxy-v2 server with crc32c",
        server_opts="send-proxy-v2 proxy-v2-options crc32c",
        version=2,
        tlvs={"crc32c": True},
    )


def v2_local_check_all_options(ctx: Context) -> Capture:
    return _check(
        ctx,
        "v2-local-check-all-options",
        "health check of a send-proxy-v2 server with every proxy-v2-options value: crc32c and an "
        "empty SSL TLV (client=0) on a LOCAL header, no unique-id",
        server_opts=f"send-proxy-v2 proxy-v2-options {ALL_V2_OPTIONS}",
        version=2,
        tlvs={"crc32c": True, "ssl": {"client": 0, "verify": 0}},
        extra=f"unique-id-format {UNIQUE_ID_FORMAT}",
    )


def v1_check(ctx: Context) -> Capture:
    return _check(
        ctx,
        "v1-check",
        "health check of a send-proxy (v1) server: the check connection's own addresses",
        server_opts="send-proxy",
        version=1,
        tlvs={},
    )


def _unix(ctx: Context, name: str, description: str, server_opts: str, version: int) -> Capture:
    """A client on a UNIX socket frontend: HAProxy 2.6 has no UNIX family in its headers."""
    path = ctx.tmp / f"{name}.sock"
    with Backend() as backend:
        be = hostport("127.0.0.1", backend.port)
        config = _listen(name, f"unix@{path}", f"{be} {server_opts}")
        with HAProxy(config):
            info, data = unix_client(path, backend)
    header = _split(data)
    meta = _meta(
        description,
        config.replace(str(ctx.tmp), "$TMP"),
        header,
        version=version,
        command="LOCAL" if version == 2 else None,
        family="UNSPEC",
        transport="UNSPEC",
        info=info,
    )
    return Capture(header, meta)


def v2_unix_frontend(ctx: Context) -> Capture:
    return _unix(
        ctx,
        "v2-unix-frontend",
        "send-proxy-v2, client on a UNIX socket frontend",
        "send-proxy-v2",
        2,
    )


def v1_unix_frontend(ctx: Context) -> Capture:
    return _unix(
        ctx,
        "v1-unix-frontend",
        "send-proxy, client on a UNIX socket frontend",
        "send-proxy",
        1,
    )


SCENARIOS: dict[str, Callable[[Context], Capture]] = {
    "v1-tcp4": v1_tcp4,
    "v1-tcp6": v1_tcp6,
    "v2-tcp4": v2_tcp4,
    "v2-tcp6": v2_tcp6,
    "v2-tcp4-crc32c": v2_tcp4_crc32c,
    "v2-tcp4-unique-id": v2_tcp4_unique_id,
    "v2-tcp4-all-options-plaintext": v2_tcp4_all_options_plaintext,
    "v2-tls-alpn": v2_tls_alpn,
    "v2-tls13-client-cert": v2_tls13_client_cert,
    "v2-tls13-no-client-cert": v2_tls13_no_client_cert,
    "v2-tls12-client-cert": v2_tls12_client_cert,
    "v2-tls13-untrusted-client-cert": v2_tls13_untrusted_client_cert,
    "v2-local-check": v2_local_check,
    "v2-local-check-crc32c": v2_local_check_crc32c,
    "v2-local-check-all-options": v2_local_check_all_options,
    "v1-check": v1_check,
    "v2-unix-frontend": v2_unix_frontend,
    "v1-unix-frontend": v1_unix_frontend,
}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("names", nargs="*", help="scenarios to capture (default: all)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "haproxy", help="output dir"
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(SCENARIOS))
        return 0
    unknown = [name for name in args.names if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    version = haproxy_version()
    print(f"HAProxy {version}")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="proxyproto-capture-") as tmp:
        ctx = Context(certs=make_certs(Path(tmp)), tmp=Path(tmp), version=version)
        for name in args.names or SCENARIOS:
            capture = SCENARIOS[name](ctx)
            meta = {"name": name, "haproxy_version": version, **capture.meta}
            (out / f"{name}.hex").write_text(capture.header.hex() + "\n")
            (out / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
            print(f"{name:34} {len(capture.header):4} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
