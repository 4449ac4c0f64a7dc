"""Interoperability with a real HAProxy.

Two halves:

- **Vectors**: every header that ``tests/vectors/capture_haproxy.py`` captured from HAProxy 2.6
  (``tests/vectors/haproxy/*.hex``) parses whole, byte by byte and with trailing bytes
  (``wire.tr``), says exactly what its ``.json`` records, and (v2) re-encodes to a header with
  the same meaning. These need nothing but the files.
- **Live** (``-m haproxy``): a real ``haproxy`` in TCP mode in front of a plain socket server on
  127.0.0.1 that reads each connection through :class:`proxyproto.HeaderParser`. The header must
  describe the real client socket and the frontend, and the client's bytes must follow intact.
  Without ``haproxy`` these skip, except under ``CI=true``, where they fail: CI must prove that
  interop ran (see :func:`haproxy_binary`).

Everything is bounded in time by socket and queue timeouts; nothing sleeps to synchronise.
"""

from __future__ import annotations

import json
import queue
import socket
import ssl
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import attrs
import crc32c
import pytest
import trustme

import proxyproto as pp
from haproxy_peer import HAProxy, find_haproxy
from interop import (
    ALL_V2_OPTIONS,
    CLIENT_CN,
    LOOPBACK_HOSTS,
    SNI,
    Certs,
    client_tls_context,
    issue_certs,
    listen,
    loopback_host,
    make_payload,
    require_haproxy,
)
from loopback_servers import TCPServer
from peer_process import free_port, hostport
from require_peer import ci_is_set
from wire import tr

VECTORS_DIR = Path(__file__).parent / "vectors" / "haproxy"
VECTORS = sorted(VECTORS_DIR.glob("*.hex"))

#: How long any single wait (a socket read, a connection, a result) may take.
TIMEOUT = 5.0

SSL_FLAGS_WITH_CERT = pp.SSLClient.SSL | pp.SSLClient.CERT_CONN | pp.SSLClient.CERT_SESS
#: Every typed field of TLVs (all but ``raw``).
TYPED_TLV_FIELDS = tuple(field.name for field in attrs.fields(pp.TLVs) if field.name != "raw")
SSL_STRING_FIELDS = ("version", "cn", "cipher", "sig_alg", "key_alg", "group", "sig_scheme")

Json = dict[str, Any]

# =============================================================================== vectors


#: The captures whose client presented a certificate that HAProxy verified.
VERIFIED_CERT_CAPTURES = frozenset({"v2-tls13-client-cert", "v2-tls12-client-cert"})

#: TLV types in wire order, and SSL sub-TLV types in wire order (tests/vectors/haproxy/README.md).
_TLS_ORDER = ((0x03, 0x01, 0x02, 0x05, 0x20), (0x21, 0x22, 0x25, 0x24, 0x23))
WIRE_ORDER: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "v2-tcp4-crc32c": ((0x03,), ()),
    "v2-tcp4-unique-id": ((0x05,), ()),
    "v2-tcp4-all-options-plaintext": ((0x03, 0x05, 0x20), ()),
    "v2-tls-alpn": ((0x01,), ()),
    "v2-tls13-client-cert": _TLS_ORDER,
    "v2-tls13-no-client-cert": (_TLS_ORDER[0], (0x21, 0x25, 0x24, 0x23)),
    "v2-tls12-client-cert": _TLS_ORDER,
    "v2-tls13-untrusted-client-cert": _TLS_ORDER,
    "v2-local-check-crc32c": ((0x03,), ()),
    "v2-local-check-all-options": ((0x03, 0x20), ()),
}


def load_vector(path: Path) -> tuple[bytes, Json]:
    data = bytes.fromhex(path.read_text().strip())
    meta: Json = json.loads(path.with_suffix(".json").read_text())
    return data, meta


def crc32c_field(header_bytes: bytes) -> tuple[int, int, bytes]:
    """Walk a v2 header's TLVs by hand: the CRC32C value, its offset, the header with it zeroed."""
    address_size = {0: 0, 1: 12, 2: 36, 3: 216}[header_bytes[13] >> 4]
    offset = 16 + address_size
    while offset < len(header_bytes):
        kind = header_bytes[offset]
        (length,) = struct.unpack_from("!H", header_bytes, offset + 1)
        if kind == 0x03:
            assert length == 4
            value = header_bytes[offset + 3 : offset + 7]
            zeroed = header_bytes[: offset + 3] + bytes(4) + header_bytes[offset + 7 :]
            return int.from_bytes(value, "big"), offset + 3, zeroed
        offset += 3 + length
    raise AssertionError("no CRC32C TLV in the header")


def check_crc32c(header_bytes: bytes, header: pp.Header) -> None:
    """The checksum is right (computed here, not by the parser), and the parser checks it."""
    value, position, zeroed = crc32c_field(header_bytes)
    assert header.tlvs.crc32c == value
    assert crc32c.crc32c(zeroed) == value
    # A wrong checksum, or a right checksum over changed bytes, is refused: flip a bit of the
    # checksum, of the command (LOCAL <-> PROXY, valid either way) and of the source address.
    for corrupt_at in (position + 3, 12, *((16,) if header_bytes[13] else ())):
        corrupted = bytearray(header_bytes)
        corrupted[corrupt_at] ^= 0x01
        with pytest.raises(pp.InvalidHeader):
            pp.parse(bytes(corrupted))


def without_raw(tlvs: pp.TLVs) -> pp.TLVs:
    """The typed TLV fields only: no ``raw`` (its order may differ), CRC32C as presence only."""
    ssl_info = None if tlvs.ssl is None else attrs.evolve(tlvs.ssl, raw=())
    crc = None if tlvs.crc32c is None else 0
    return attrs.evolve(tlvs, raw=(), ssl=ssl_info, crc32c=crc)


def test_every_capture_has_its_metadata() -> None:
    hex_names = {p.stem for p in VECTORS}
    json_names = {p.stem for p in VECTORS_DIR.glob("*.json")}
    assert hex_names == json_names
    # The README's table: 18 captures, the ones with TLVs listed in WIRE_ORDER.
    assert len(hex_names) >= 18
    assert set(WIRE_ORDER) <= hex_names


@pytest.mark.parametrize("path", VECTORS, ids=[p.stem for p in VECTORS])
def test_vector(path: Path) -> None:
    data, meta = load_vector(path)
    name = path.stem
    assert meta["name"] == name
    assert meta["length"] == len(data)

    header = tr(data)

    assert header.version == meta["version"]
    if meta["command"] is None:
        # v1 "PROXY UNKNOWN": no command on the wire; the model says PROXY without addresses.
        assert header == pp.Header.unknown()
    else:
        assert header.command is pp.Command[meta["command"]]
    assert header.family is pp.Family[meta["family"]]
    assert header.transport is pp.Transport[meta["transport"]]
    assert header.source == json_address(meta["source"])
    assert header.destination == json_address(meta["destination"])

    check_tlvs(name, data, header, meta["tlvs"])

    if header.version == 1 or not header.tlvs:
        # No TLV (whose order the builder may choose): our encoding is HAProxy's, byte for byte.
        assert header.to_bytes() == data
    else:
        again = tr(header.to_bytes(crc32c=header.tlvs.crc32c is not None))
        assert (again.version, again.command, again.family, again.transport) == (
            header.version,
            header.command,
            header.family,
            header.transport,
        )
        assert (again.source, again.destination) == (header.source, header.destination)
        assert without_raw(again.tlvs) == without_raw(header.tlvs)


def json_address(value: list[Any] | None) -> tuple[str, int] | None:
    return None if value is None else (value[0], value[1])


def check_tlvs(name: str, data: bytes, header: pp.Header, expected: Json) -> None:
    tlvs = header.tlvs
    assert set(expected) <= set(TYPED_TLV_FIELDS), f"unknown TLV names in the JSON: {expected}"
    for field in TYPED_TLV_FIELDS:
        if field not in expected:
            assert getattr(tlvs, field) is None, f"{field} should be absent"
    if header.version == 1:
        assert not tlvs
        return
    if "alpn" in expected:
        assert tlvs.alpn == expected["alpn"].encode("ascii")
    if "authority" in expected:
        assert tlvs.authority == expected["authority"]
    if "unique_id" in expected:
        assert tlvs.unique_id == expected["unique_id"].encode("ascii")
    if expected.get("crc32c"):
        check_crc32c(data, header)
    if "ssl" in expected:
        check_ssl(name, tlvs.ssl, expected["ssl"])

    order, ssl_order = WIRE_ORDER.get(name, ((), ()))
    assert tuple(kind for kind, _ in tlvs.raw) == order
    if tlvs.ssl is not None:
        assert tuple(kind for kind, _ in tlvs.ssl.raw) == ssl_order


def check_ssl(name: str, info: pp.SSLInfo | None, expected: Json) -> None:
    assert info is not None
    assert info.client == expected["client"]
    assert info.verify == expected["verify"]
    for field in SSL_STRING_FIELDS:
        assert getattr(info, field) == expected.get(field), field
    assert info.client_cert is None  # HAProxy 2.6 cannot send it

    flags = pp.SSLClient(info.client)
    # client=0 on plaintext connections and health checks; 0x01 without a client certificate;
    # 0x07 with one, verified or not.
    assert flags in (pp.SSLClient(0), pp.SSLClient.SSL, SSL_FLAGS_WITH_CERT)
    assert info.ssl is bool(flags & pp.SSLClient.SSL)
    assert info.ssl is ("version" in expected)
    # HAProxy sends the CN exactly when a certificate was presented.
    assert (info.cn is not None) is bool(flags & pp.SSLClient.CERT_CONN)
    # verify is 0 both without a certificate and with a verified one: only the flags tell.
    assert info.verified_cert is (name in VERIFIED_CERT_CAPTURES)
    if flags == SSL_FLAGS_WITH_CERT and info.verify == 0:
        assert name in VERIFIED_CERT_CAPTURES


# =============================================================================== live


@pytest.fixture(scope="session")
def haproxy_binary() -> str:
    return require_haproxy(find_haproxy(), ci=ci_is_set())


def test_missing_haproxy_skips_locally_and_fails_in_ci() -> None:
    assert require_haproxy("/usr/sbin/haproxy", ci=True) == "/usr/sbin/haproxy"
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        require_haproxy(None, ci=False)
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        require_haproxy(None, ci=True)


@pytest.fixture(params=LOOPBACK_HOSTS)
def loopback(request: pytest.FixtureRequest) -> str:
    return loopback_host(request)


@dataclass
class Received:
    """One connection as the backend saw it."""

    peer: tuple[str, int]  # HAProxy's side of the backend connection
    header: pp.Header
    header_bytes: bytes
    trailing: bytes  # HeaderParser.trailing_data once the header was complete
    rest: bytes  # everything read after that, until EOF
    reset: bool  # the connection ended with a reset rather than EOF


class Backend(TCPServer):
    """A plain TCP server on 127.0.0.1 that reads every connection through ``pp.HeaderParser``.

    Each accepted connection is read in its own thread until the parser yields a header, then
    until EOF; the outcome (a :class:`Received`, or the exception) goes to a queue that the test
    reads with :meth:`next`. Assertions stay in the test's thread.
    """

    def __init__(self) -> None:
        self._results: queue.Queue[Received | Exception] = queue.Queue()
        super().__init__()

    def handle(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        try:
            with conn:
                conn.settimeout(TIMEOUT)
                self._results.put(self._read_connection(conn, peer))
        except Exception as exc:
            self._results.put(exc)

    @staticmethod
    def _read_connection(conn: socket.socket, peer: tuple[str, int]) -> Received:
        parser = pp.HeaderParser()
        received = bytearray()
        event = parser.next_event()
        while event is pp.NEED_DATA:
            chunk = conn.recv(65536)
            received += chunk
            parser.receive_data(chunk)  # b"" is EOF: next_event() raises if the header is cut
            event = parser.next_event()
        assert isinstance(event, pp.Header)
        trailing = parser.trailing_data
        assert bytes(received[parser.header_size :]) == trailing
        rest = bytearray()
        reset = False
        while True:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                reset = True
                break
            if not chunk:
                break
            rest += chunk
        return Received(
            peer=peer,
            header=event,
            header_bytes=bytes(received[: parser.header_size]),
            trailing=trailing,
            rest=bytes(rest),
            reset=reset,
        )

    def next(self, proxy: HAProxy, *, skip_resets: bool = False) -> Received:
        """The next connection's outcome; its exception is raised here, in the test."""
        while True:
            try:
                result = self._results.get(timeout=TIMEOUT)
            except queue.Empty:
                raise AssertionError(
                    f"no connection reached the backend in {TIMEOUT}s; haproxy said:\n"
                    f"{proxy.output()}"
                ) from None
            if skip_resets and isinstance(result, ConnectionResetError):
                continue  # a health check that reset before we read its header: take the next
            if isinstance(result, Exception):
                raise AssertionError(f"the backend failed: {result!r}") from result
            return result


@pytest.fixture
def backend() -> Iterator[Backend]:
    with Backend() as server:
        yield server


def send_plain(frontend: tuple[str, int], payload: bytes) -> tuple[str, int]:
    """Connect, send ``payload``, half-close; return the client socket's own address."""
    with socket.create_connection(frontend, timeout=TIMEOUT) as client:
        host, port = client.getsockname()[:2]
        client.sendall(payload)
        client.shutdown(socket.SHUT_WR)
        # HAProxy closes our side once the backend has seen EOF and closed: wait for that, so
        # the client never goes away first.
        assert client.recv(1) == b""
    return host, port


def check_payload(got: Received, payload: bytes) -> None:
    assert not got.reset
    assert len(got.trailing) + len(got.rest) == len(payload)
    assert got.trailing + got.rest == payload


@pytest.mark.haproxy
@pytest.mark.parametrize(("version", "option"), [(1, "send-proxy"), (2, "send-proxy-v2")])
def test_live_proxy_header(
    haproxy_binary: str, backend: Backend, loopback: str, version: int, option: str
) -> None:
    frontend = (loopback, free_port(loopback))
    config = listen(hostport(*frontend), f"{hostport(*backend.address)} {option}")
    payload = make_payload()
    with HAProxy(config, binary=haproxy_binary) as proxy:
        client = send_plain(frontend, payload)
        got = backend.next(proxy)

    header = got.header
    assert header.version == version
    assert header.command is pp.Command.PROXY
    assert header.family is (pp.Family.INET6 if ":" in loopback else pp.Family.INET)
    assert header.transport is pp.Transport.STREAM
    assert header.source == client
    assert header.destination == frontend
    assert not header.tlvs
    # Byte for byte what our builder writes for the same connection.
    assert got.header_bytes == pp.Header.proxy(client, frontend, version=version).to_bytes()
    check_payload(got, payload)


@pytest.mark.haproxy
def test_live_crc32c_and_unique_id(haproxy_binary: str, backend: Backend) -> None:
    frontend = ("127.0.0.1", free_port())
    config = listen(
        hostport(*frontend),
        f"{hostport(*backend.address)} send-proxy-v2 proxy-v2-options crc32c,unique-id",
        "unique-id-format proxyproto-%ci:%cp-%fi:%fp",
    )
    payload = make_payload()
    with HAProxy(config, binary=haproxy_binary) as proxy:
        client = send_plain(frontend, payload)
        got = backend.next(proxy)

    header = got.header
    assert (header.version, header.command) == (2, pp.Command.PROXY)
    assert (header.source, header.destination) == (client, frontend)
    expected_id = f"proxyproto-{client[0]}:{client[1]}-{frontend[0]}:{frontend[1]}"
    assert header.tlvs.unique_id == expected_id.encode("ascii")
    assert header.tlvs.crc32c is not None
    check_crc32c(got.header_bytes, header)
    assert without_raw(header.tlvs) == without_raw(
        pp.TLVs(unique_id=expected_id.encode(), crc32c=0)
    )
    check_payload(got, payload)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return issue_certs(tmp_path_factory.mktemp("certs"))


@dataclass
class TLSClient:
    source: tuple[str, int]
    version: str | None
    cipher: str | None
    alpn: str | None


def send_tls(
    frontend: tuple[str, int],
    payload: bytes,
    certs: Certs,
    *,
    alpn: list[str] | None,
    client_cert: bool,
    context: ssl.SSLContext | None = None,
) -> TLSClient:
    """Send ``payload`` over TLS; ``context`` replaces the one made from ``certs``."""
    if context is None:
        context = client_tls_context(certs, client_cert=client_cert)
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    with (
        socket.create_connection(frontend, timeout=TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=SNI) as client,
    ):
        host, port = client.getsockname()[:2]
        client.sendall(payload)
        cipher = client.cipher()
        info = TLSClient(
            source=(host, port),
            version=client.version(),
            cipher=cipher[0] if cipher else None,
            alpn=client.selected_alpn_protocol(),
        )
        # close_notify: HAProxy passes it on to the backend as EOF. unwrap() then waits for
        # HAProxy's own close_notify, which comes once the backend has closed.
        client.unwrap()
    return info


@pytest.mark.haproxy
def test_live_tls_with_a_client_certificate_that_fails_verification(
    haproxy_binary: str, backend: Backend, certs: Certs
) -> None:
    """A client certificate from a CA HAProxy does not trust, let through (``crt-ignore-err``,
    ``ca-ignore-err``): the SSL TLV says a certificate came and its verification failed."""
    stranger = trustme.CA(organization_name="not the test CA")
    context = ssl.create_default_context()
    certs.ca.configure_trust(context)
    stranger.issue_cert("stranger.proxyproto.test", common_name="stranger").configure_cert(context)
    frontend = ("127.0.0.1", free_port())
    bind = (
        f"{hostport(*frontend)} ssl crt {certs.server_file} ca-file {certs.ca_file} "
        "verify optional crt-ignore-err all ca-ignore-err all"
    )
    config = listen(
        bind, f"{hostport(*backend.address)} send-proxy-v2 proxy-v2-options ssl,cert-cn"
    )
    payload = make_payload()
    with HAProxy(config, binary=haproxy_binary) as proxy:
        client = send_tls(frontend, payload, certs, alpn=None, client_cert=True, context=context)
        got = backend.next(proxy)

    assert got.header.source == client.source
    info = got.header.tlvs.ssl
    assert info is not None
    assert pp.SSLClient(info.client) == SSL_FLAGS_WITH_CERT
    assert info.verify != 0  # HAProxy's verification result: not X509_V_OK
    assert info.cn == "stranger"
    assert not info.verified_cert
    check_payload(got, payload)


@pytest.mark.haproxy
@pytest.mark.parametrize(
    ("alpn", "negotiated", "client_cert"),
    [
        (["http/1.1", "h2"], "h2", True),
        (None, None, True),
        (["http/1.1"], "http/1.1", False),
    ],
    ids=["alpn-h2-cert", "no-alpn-cert", "alpn-http1-no-cert"],
)
def test_live_tls(
    haproxy_binary: str,
    backend: Backend,
    certs: Certs,
    alpn: list[str] | None,
    negotiated: str | None,
    client_cert: bool,
) -> None:
    frontend = ("127.0.0.1", free_port())
    bind = (
        f"{hostport(*frontend)} ssl crt {certs.server_file} ca-file {certs.ca_file} "
        "verify optional alpn h2,http/1.1"
    )
    config = listen(
        bind,
        f"{hostport(*backend.address)} send-proxy-v2 proxy-v2-options {ALL_V2_OPTIONS}",
        "unique-id-format %ci:%cp",
    )
    payload = make_payload()
    with HAProxy(config, binary=haproxy_binary) as proxy:
        client = send_tls(frontend, payload, certs, alpn=alpn, client_cert=client_cert)
        got = backend.next(proxy)

    header = got.header
    assert (header.version, header.command) == (2, pp.Command.PROXY)
    assert (header.source, header.destination) == (client.source, frontend)
    tlvs = header.tlvs
    assert client.alpn == negotiated
    assert tlvs.alpn == (None if negotiated is None else negotiated.encode("ascii"))
    assert tlvs.authority == SNI
    assert tlvs.unique_id == f"{client.source[0]}:{client.source[1]}".encode()
    check_crc32c(got.header_bytes, header)

    info = tlvs.ssl
    assert info is not None
    assert info.ssl
    assert info.version is not None
    assert info.version.startswith("TLSv1")
    assert info.version == client.version
    assert info.cipher == client.cipher
    # cert-sig / cert-key describe HAProxy's own certificate (see the vectors' README).
    assert (info.key_alg, info.sig_alg) == (certs.server_key_alg, certs.server_sig_alg)
    assert info.verify == 0
    if client_cert:
        assert pp.SSLClient(info.client) == SSL_FLAGS_WITH_CERT
        assert info.cn == CLIENT_CN
        assert info.verified_cert
    else:
        assert pp.SSLClient(info.client) == pp.SSLClient.SSL
        assert info.cn is None
        assert not info.verified_cert
    check_payload(got, payload)


@pytest.mark.haproxy
@pytest.mark.parametrize(
    ("version", "option"),
    [
        (2, "send-proxy-v2"),
        (2, "send-proxy-v2 proxy-v2-options crc32c"),
        (1, "send-proxy"),
    ],
    ids=["v2", "v2-crc32c", "v1"],
)
def test_live_health_check(
    haproxy_binary: str, backend: Backend, version: int, option: str
) -> None:
    # No client at all: HAProxy's own check connections, every 100 ms.
    config = listen(
        hostport("127.0.0.1", free_port()),
        f"{hostport(*backend.address)} {option} check inter 100ms",
    )
    with HAProxy(config, binary=haproxy_binary) as proxy:
        got = backend.next(proxy, skip_resets=True)

    header = got.header
    assert header.version == version
    if version == 2:
        assert header.command is pp.Command.LOCAL
        assert (header.family, header.transport) == (pp.Family.UNSPEC, pp.Transport.UNSPEC)
        assert header.source is None
        assert header.destination is None
        if "crc32c" in option:
            check_crc32c(got.header_bytes, header)
            assert without_raw(header.tlvs) == pp.TLVs(crc32c=0)
        else:
            assert not header.tlvs
            assert got.header_bytes == pp.Header.local().to_bytes()
    else:
        # v1 has no LOCAL: HAProxy 2.6 describes the check connection itself.
        assert header.command is pp.Command.PROXY
        assert header.family is pp.Family.INET
        assert header.source == got.peer
        assert header.destination == backend.address
    # A plain connect check sends nothing after the header.
    assert got.trailing + got.rest == b""
