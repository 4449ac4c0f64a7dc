"""``scope["extensions"]["proxy_protocol"]`` on real Hypercorn and Uvicorn servers.

The app answers every HTTP request (and every WebSocket, with one text message) with what the
extension holds: the header's source and TLVs (AWS VPC endpoint id, the client certificate's
CN, the unique id) and the real peer. Hypercorn runs on both anyio backends (its trio worker and
its asyncio worker), in cleartext (HTTP/1.1, HTTP/2 prior knowledge) and over TLS after the
header (HTTP/1.1, HTTP/2 by ALPN); Uvicorn with each of its HTTP protocols and wsproto.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme
from anyio.abc import ByteStream

import proxyproto as pp
from asgi_helpers import (
    hypercorn_task,
    read_response,
    receive_ok,
    send_ok,
    serve_lifespan,
    uvicorn_thread,
)
from haproxy_peer import HAProxy, find_haproxy, free_port, hostport
from interop import listen, require_haproxy
from proxyproto._servers.asgi_scope import _CIPHER_SUITES, tls_from_header
from require_peer import ci_is_set

pytest.importorskip("wsproto")

CLIENT = ("203.0.113.7", 51234)
SERVER = ("198.51.100.10", 443)
TLVS = pp.TLVs(
    aws_vpce_id="vpce-0123456789abcdef0",
    unique_id=b"req-42",
    ssl=pp.SSLInfo(client=pp.SSLClient.SSL | pp.SSLClient.CERT_CONN, verify=0, cn="alice"),
)
HEADER = pp.Header.proxy(CLIENT, SERVER, tlvs=TLVS)
REQUEST = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"


def describe(scope: dict[str, Any]) -> dict[str, Any]:
    """What an app can read of the extension, as JSON."""
    info = scope["extensions"]["proxy_protocol"]
    header = info["header"]
    peer = info["peer_address"]
    described: dict[str, Any] = {
        "type": scope["type"],
        "client": list(scope["client"]),
        "peer": list(peer) if isinstance(peer, tuple) else peer,
        "header": None,
    }
    if header is not None:
        tlvs = header.tlvs
        described["header"] = {
            "source": list(header.source) if header.source is not None else None,
            "vpce": tlvs.aws_vpce_id,
            "cn": tlvs.ssl.cn if tlvs.ssl is not None else None,
            "verified": tlvs.ssl.verified_cert if tlvs.ssl is not None else None,
            "unique_id": tlvs.unique_id.decode() if tlvs.unique_id is not None else None,
        }
    if "tls" in scope["extensions"]:  # only with tls_extension=True
        described["tls"] = {**scope["extensions"]["tls"]}
        described["tls"]["client_cert_chain"] = list(described["tls"]["client_cert_chain"])
    return described


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    body = json.dumps(describe(scope)).encode()
    if scope["type"] == "websocket":
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": body.decode()})
        await send({"type": "websocket.close", "code": 1000})
        return
    await send_ok(send, body)


def expected(kind: str, peer: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "client": list(CLIENT),
        "peer": list(peer),
        "header": {
            "source": list(CLIENT),
            "vpce": "vpce-0123456789abcdef0",
            "cn": "alice",
            "verified": True,
            "unique_id": "req-42",
        },
    }


WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + WS_KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def first_text_frame(data: bytes) -> dict[str, Any]:
    """The JSON of the first (unmasked, unfragmented) text frame after the 101 head."""
    head, _, frames = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    assert frames[0] == 0x81, frames[:2]
    length = frames[1] & 0x7F
    offset = 2
    if length == 126:
        length, offset = int.from_bytes(frames[2:4], "big"), 4
    return json.loads(frames[offset : offset + length])  # type: ignore[no-any-return]


def ws_frame_complete(data: bytes) -> bool:
    _, sep, frames = data.partition(b"\r\n\r\n")
    if not sep or len(frames) < 2:
        return False
    length = frames[1] & 0x7F
    if length == 126:
        return len(frames) >= 4 and len(frames) >= 4 + int.from_bytes(frames[2:4], "big")
    return len(frames) >= 2 + length


# --- Hypercorn -------------------------------------------------------------------------------


async def http1_answer(stream: ByteStream) -> dict[str, Any]:
    return await receive_ok(stream, bytearray())


async def h2_answer(stream: ByteStream) -> dict[str, Any]:
    import h2.config
    import h2.connection
    import h2.events

    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    headers = [(":method", "GET"), (":path", "/"), (":scheme", "https"), (":authority", "t")]
    connection.send_headers(1, headers, end_stream=True)
    await stream.send(connection.data_to_send())
    body = b""
    while True:
        for event in connection.receive_data(await stream.receive()):
            if isinstance(event, h2.events.DataReceived):
                body += event.data
                connection.acknowledge_received_data(event.flow_controlled_length, 1)
            elif isinstance(event, h2.events.StreamEnded):
                return json.loads(body)  # type: ignore[no-any-return]
        await stream.send(connection.data_to_send())


@pytest.mark.anyio
@pytest.mark.parametrize("http", ["h11", "h2"])
async def test_hypercorn_cleartext(http: str) -> None:
    async with hypercorn_task(app) as port, await anyio.connect_tcp("127.0.0.1", port) as stream:
        peer = stream.extra(anyio.abc.SocketAttribute.local_address)
        await stream.send(HEADER.to_bytes() + (REQUEST if http == "h11" else b""))
        answer = await (http1_answer(stream) if http == "h11" else h2_answer(stream))
    assert answer == expected("http", peer)


@pytest.mark.anyio
@pytest.mark.parametrize("alpn", ["http/1.1", "h2"])
async def test_hypercorn_tls(alpn: str, ca: trustme.CA, server_certs: tuple[Path, Path]) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.set_alpn_protocols([alpn])
    async with hypercorn_task(app, certs=server_certs) as port:
        stream = await pp.connect_tcp(
            "127.0.0.1",
            port,
            header=HEADER,
            ssl_context=context,
            tls_hostname="localhost",
            tls_standard_compatible=False,
        )
        async with stream:
            peer = stream.extra(anyio.abc.SocketAttribute.local_address)
            if alpn == "h2":
                answer = await h2_answer(stream)
            else:
                await stream.send(REQUEST)
                answer = await http1_answer(stream)
    assert answer == expected("http", peer)


@pytest.mark.anyio
async def test_hypercorn_websocket() -> None:
    async with hypercorn_task(app) as port, await anyio.connect_tcp("127.0.0.1", port) as stream:
        peer = stream.extra(anyio.abc.SocketAttribute.local_address)
        await stream.send(HEADER.to_bytes() + UPGRADE)
        data = b""
        while not ws_frame_complete(data):
            data += await stream.receive()
    assert first_text_frame(data) == expected("websocket", peer)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("policy", "send"),
    [
        pytest.param(pp.Policy.USE, b"", id="direct"),
        pytest.param(pp.Policy.IGNORE, HEADER.to_bytes(), id="ignored"),
    ],
)
async def test_hypercorn_untrusted_or_no_header_is_none(policy: pp.Policy, send: bytes) -> None:
    proxy = pp.ProxyProtocolConfig(policy=policy)
    async with (
        hypercorn_task(app, proxy) as port,
        await anyio.connect_tcp("127.0.0.1", port) as stream,
    ):
        me = list(stream.extra(anyio.abc.SocketAttribute.local_address))
        await stream.send(send + REQUEST)
        answer = await http1_answer(stream)
    assert answer == {"type": "http", "client": me, "peer": me, "header": None}


@pytest.mark.anyio
async def test_hypercorn_local_header_is_there() -> None:
    proxy = pp.ProxyProtocolConfig(policy=pp.Policy.USE)
    local = pp.Header.local(tlvs=pp.TLVs(aws_vpce_id="vpce-1"))
    async with (
        hypercorn_task(app, proxy) as port,
        await anyio.connect_tcp("127.0.0.1", port) as stream,
    ):
        me = list(stream.extra(anyio.abc.SocketAttribute.local_address))
        await stream.send(local.to_bytes() + REQUEST)
        answer = await http1_answer(stream)
    assert answer["client"] == me
    assert answer["header"]["source"] is None
    assert answer["header"]["vpce"] == "vpce-1"


# --- Uvicorn ---------------------------------------------------------------------------------


# Every parser proxyproto.uvicorn wraps; those not installed (zttp needs Uvicorn 0.52+, Python
# 3.11+) are skipped by the tests.
UVICORN_PARSERS = ["h11", "httptools", "zttp"]


def uvicorn_protocols() -> list[Any]:
    pytest.importorskip("uvicorn")
    import proxyproto.uvicorn as ppu

    names = ["h11"]
    if ppu.ProxyProtocolHttpToolsProtocol is not None:
        names.append("httptools")
    if ppu.ProxyProtocolZttpProtocol is not None:
        names.append("zttp")
    return names


def uvicorn_exchange(
    http: str, data: bytes, proxy: pp.ProxyProtocolConfig | None = None, *, websocket: bool = False
) -> tuple[list[Any], dict[str, Any]]:
    import proxyproto.uvicorn as ppu

    protocol = ppu._protocol_class(http, proxy or pp.ProxyProtocolConfig())
    with (
        uvicorn_thread(app, http=protocol, ws="wsproto") as (address, _, _),
        socket.create_connection(address, timeout=10) as sock,
    ):
        me = list(sock.getsockname()[:2])
        sock.sendall(data)
        if not websocket:
            status, body = read_response(sock, bytearray())
            assert status == 200
            return me, body
        received = b""
        while not ws_frame_complete(received):
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
        return me, first_text_frame(received)


@pytest.mark.parametrize("http", UVICORN_PARSERS)
def test_uvicorn_http(http: str) -> None:
    if http not in uvicorn_protocols():
        pytest.skip(f"{http} is not installed")
    me, answer = uvicorn_exchange(http, HEADER.to_bytes() + REQUEST)
    assert answer == expected("http", me)


@pytest.mark.parametrize("http", UVICORN_PARSERS)
def test_uvicorn_websocket(http: str) -> None:
    if http not in uvicorn_protocols():
        pytest.skip(f"{http} is not installed")
    me, answer = uvicorn_exchange(http, HEADER.to_bytes() + UPGRADE, websocket=True)
    assert answer == expected("websocket", me)


@pytest.mark.parametrize(
    ("policy", "send"),
    [
        pytest.param(pp.Policy.USE, b"", id="direct"),
        pytest.param(pp.Policy.IGNORE, HEADER.to_bytes(), id="ignored"),
    ],
)
def test_uvicorn_untrusted_or_no_header_is_none(policy: pp.Policy, send: bytes) -> None:
    uvicorn_protocols()
    me, answer = uvicorn_exchange("h11", send + REQUEST, pp.ProxyProtocolConfig(policy=policy))
    assert answer == {"type": "http", "client": me, "peer": me, "header": None}


# --- behind a real HAProxy: TLS ends there, the SSL and unique-id TLVs come here -------------


@contextmanager
def haproxy_tls_front(
    ca: trustme.CA,
    tmp_path: Path,
    backend: tuple[str, int],
    send: str = "send-proxy-v2 proxy-v2-options ssl,cert-cn,unique-id",
) -> Iterator[tuple[str, int]]:
    """HAProxy terminating TLS (client certificates verified by ``ca``) in HTTP mode, relaying
    to ``backend`` with ``send`` (default: ``send-proxy-v2`` and the SSL, CN and unique-id
    TLVs)."""
    haproxy = require_haproxy(find_haproxy(), ci=ci_is_set())
    combined = tmp_path / "haproxy.pem"
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(combined)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(ca_file)
    front = ("127.0.0.1", free_port())
    config = listen(
        f"{hostport(*front)} ssl crt {combined} ca-file {ca_file} verify optional",
        f"{hostport(*backend)} {send}",
        "mode http",
        "unique-id-format req-%rt",
    )
    with HAProxy(config, binary=haproxy):
        yield front


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    ca.issue_cert("alice@example.org", common_name="alice").configure_cert(context)
    return context


def haproxy_expected(peer_host: str) -> dict[str, Any]:
    return {
        "source_host": "127.0.0.1",
        "peer_host": peer_host,
        "vpce": None,
        "cn": "alice",
        "verified": True,
        "unique_id": "req-0",
    }


def summary(answer: dict[str, Any]) -> dict[str, Any]:
    header = answer["header"]
    return {
        "source_host": header["source"][0],
        "peer_host": answer["peer"][0],
        "vpce": header["vpce"],
        "cn": header["cn"],
        "verified": header["verified"],
        "unique_id": header["unique_id"],
    }


@pytest.mark.anyio
@pytest.mark.haproxy
async def test_hypercorn_behind_haproxy_with_ssl_and_unique_id_tlvs(
    ca: trustme.CA, tmp_path: Path
) -> None:
    async with hypercorn_task(app) as port:
        with haproxy_tls_front(ca, tmp_path, ("127.0.0.1", port)) as front:
            stream = await anyio.connect_tcp(
                *front, ssl_context=client_context(ca), tls_hostname="localhost"
            )
            async with stream:
                await stream.send(REQUEST)
                answer = await http1_answer(stream)
    assert summary(answer) == haproxy_expected("127.0.0.1")


@pytest.mark.haproxy
@pytest.mark.parametrize("http", UVICORN_PARSERS)
def test_uvicorn_behind_haproxy_with_ssl_and_unique_id_tlvs(
    http: str, ca: trustme.CA, tmp_path: Path
) -> None:
    if http not in uvicorn_protocols():
        pytest.skip(f"{http} is not installed")
    import proxyproto.uvicorn as ppu

    protocol = ppu._protocol_class(http, pp.ProxyProtocolConfig())
    with (
        uvicorn_thread(app, http=protocol) as (address, _, _),
        haproxy_tls_front(ca, tmp_path, address) as front,
        socket.create_connection(front, timeout=10) as raw,
        client_context(ca).wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        sock.sendall(REQUEST)
        status, answer = read_response(sock, bytearray())
    assert status == 200
    assert summary(answer) == haproxy_expected("127.0.0.1")


def test_uvicorn_local_header_is_there() -> None:
    uvicorn_protocols()
    local = pp.Header.local(tlvs=pp.TLVs(aws_vpce_id="vpce-1"))
    proxy = pp.ProxyProtocolConfig(policy=pp.Policy.USE)
    me, answer = uvicorn_exchange("h11", local.to_bytes() + REQUEST, proxy)
    assert answer["client"] == me
    assert answer["peer"] == me
    assert answer["header"]["source"] is None
    assert answer["header"]["vpce"] == "vpce-1"


# --- the ASGI TLS extension from the SSL TLV (opt-in) ----------------------------------------


def openssl_cipher_suites() -> dict[str, int]:
    """The local OpenSSL's cipher names and their IANA numbers (the low 16 bits of its ids)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("ALL:@SECLEVEL=0")
    return {cipher["name"]: cipher["id"] & 0xFFFF for cipher in context.get_ciphers()}


def ssl_header(**ssl_fields: Any) -> pp.Header:
    return pp.Header.proxy(CLIENT, SERVER, tlvs=pp.TLVs(ssl=pp.SSLInfo(**ssl_fields)))


CERT_CONN = pp.SSLClient.SSL | pp.SSLClient.CERT_CONN
TLS13: dict[str, Any] = {"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384"}


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(None, id="direct"),
        pytest.param(pp.Header.proxy(CLIENT, SERVER), id="no-tlvs"),
        pytest.param(
            pp.Header.proxy(CLIENT, SERVER, tlvs=pp.TLVs(aws_vpce_id="vpce-1")), id="no-ssl-tlv"
        ),
        pytest.param(ssl_header(client=0, **TLS13), id="ssl-tlv-says-not-tls"),
        pytest.param(ssl_header(client=pp.SSLClient.CERT_CONN, cn="alice"), id="cert-bit-only"),
        pytest.param(
            pp.Header.local(tlvs=pp.TLVs(ssl=pp.SSLInfo(client=CERT_CONN, **TLS13))), id="local"
        ),
        pytest.param(pp.Header.unknown(), id="v1-unknown"),
        pytest.param(pp.Header.proxy(CLIENT, SERVER, version=1), id="v1"),
    ],
)
def test_tls_extension_only_for_tls_connections(header: pp.Header | None) -> None:
    # asgiref specs/tls.rst: "For non-TLS connections, the ASGI server is forbidden from
    # providing this extension."
    assert tls_from_header(header) is None


def test_tls_extension_maps_what_the_tlv_carries() -> None:
    header = ssl_header(client=CERT_CONN | pp.SSLClient.CERT_SESS, verify=0, cn="alice", **TLS13)
    assert tls_from_header(header) == {
        "server_cert": None,
        "client_cert_chain": (),
        "client_cert_name": "CN=alice",
        "client_cert_error": None,
        "tls_version": 0x0304,
        "cipher_suite": 0x1302,
    }


def test_tls_extension_without_a_client_certificate() -> None:
    # HAProxy sends the SSL bit alone, and verify 0 or not: no certificate, so no name, no error,
    # even when a CN came (it cannot be the client's).
    for verify in (0, 1):
        tls = tls_from_header(ssl_header(client=pp.SSLClient.SSL, verify=verify, cn="x"))
        assert tls is not None
        assert (tls["client_cert_chain"], tls["client_cert_name"]) == ((), None)
        assert tls["client_cert_error"] is None
        assert (tls["tls_version"], tls["cipher_suite"]) == (None, None)


def test_tls_extension_certificate_not_verified() -> None:
    tls = tls_from_header(ssl_header(client=CERT_CONN, verify=20, cn="mallory"))
    assert tls is not None
    assert tls["client_cert_name"] == "CN=mallory"
    assert tls["client_cert_error"] == (
        "the proxy could not verify the client certificate (verify=20)"
    )


def test_tls_extension_client_certificate_as_pem(ca: trustme.CA) -> None:
    leaf = ca.issue_cert("alice@example.org", common_name="alice").cert_chain_pems[0]
    der = ssl.PEM_cert_to_DER_cert(leaf.bytes().decode())
    header = ssl_header(client=CERT_CONN, cn="alice", client_cert=der)
    # Through the wire: the CLIENT_CERT sub-TLV (0x28) parsed back.
    parsed, _ = pp.parse(header.to_bytes())
    tls = tls_from_header(parsed)
    assert tls is not None
    assert tls["client_cert_chain"] == (ssl.DER_cert_to_PEM_cert(der),)
    assert ssl.PEM_cert_to_DER_cert(tls["client_cert_chain"][0]) == der
    assert tls["client_cert_name"] == "CN=alice"


@pytest.mark.parametrize(
    ("version", "number"),
    [
        ("SSLv3", 0x0300),
        ("TLSv1", 0x0301),
        ("TLSv1.1", 0x0302),
        ("TLSv1.2", 0x0303),
        ("TLSv1.3", 0x0304),
        ("DTLSv1.2", 0xFEFD),
        ("TLSv9", None),
        ("", None),
    ],
)
def test_tls_extension_version(version: str, number: int | None) -> None:
    tls = tls_from_header(ssl_header(client=pp.SSLClient.SSL, version=version))
    assert tls is not None
    assert tls["tls_version"] == number


def test_tls_extension_cipher_names_agree_with_openssl() -> None:
    # Every name the table has that the local OpenSSL knows has OpenSSL's own number.
    known = openssl_cipher_suites()
    checked = 0
    for name, number in _CIPHER_SUITES.items():
        if name in known:
            assert known[name] == number, name
            checked += 1
        tls = tls_from_header(ssl_header(client=pp.SSLClient.SSL, cipher=name))
        assert tls is not None
        assert tls["cipher_suite"] == number
    assert checked >= len(_CIPHER_SUITES) - 2  # TLS 1.3 CCM suites are off in most builds
    unknown = tls_from_header(ssl_header(client=pp.SSLClient.SSL, cipher="GOST2012-KUZNYECHIK"))
    assert unknown is not None
    assert unknown["cipher_suite"] is None


@pytest.mark.parametrize(
    ("cn", "name"),
    [
        ("alice", "CN=alice"),
        ("Smith, John", "CN=Smith\\, John"),
        ('a+b;c<d>e"f\\g', 'CN=a\\+b\\;c\\<d\\>e\\"f\\\\g'),
        ("#hash", "CN=\\#hash"),
        (" padded ", "CN=\\ padded\\ "),
        ("nul\0", "CN=nul\\00"),
        ("inner # and space", "CN=inner # and space"),
        ("ünïcode", "CN=ünïcode"),
    ],
)
def test_tls_extension_name_is_rfc4514(cn: str, name: str) -> None:
    tls = tls_from_header(ssl_header(client=CERT_CONN, cn=cn))
    assert tls is not None
    assert tls["client_cert_name"] == name


def test_tls_extension_each_scope_gets_its_own() -> None:
    from proxyproto._servers.asgi_scope import AsgiConnectionApp

    seen: list[set[str]] = []
    versions: list[Any] = []

    def inner(scope: dict[str, Any], receive: Any, send: Any) -> Any:
        extensions = scope.get("extensions", {})
        seen.append(set(extensions))
        if "tls" in extensions:
            versions.append(extensions["tls"]["tls_version"])
            extensions["tls"]["tls_version"] = "changed by the app"

    header = ssl_header(client=CERT_CONN, cn="alice", **TLS13)
    peer = ("192.0.2.9", 1)
    wrapped = AsgiConnectionApp(inner, header, peer, tls_extension=True)
    for _ in range(2):
        wrapped({"type": "http", "extensions": {}}, None, None)
    wrapped({"type": "lifespan"}, None, None)
    AsgiConnectionApp(inner, header, peer)({"type": "http"}, None, None)
    assert versions == [0x0304, 0x0304]
    assert seen == [{"proxy_protocol", "tls"}] * 2 + [set(), {"proxy_protocol"}]


TLS_HEADER = ssl_header(client=CERT_CONN, verify=0, cn="alice", **TLS13)
TLS_EXPECTED: dict[str, Any] = {
    "server_cert": None,
    "client_cert_chain": [],
    "client_cert_name": "CN=alice",
    "client_cert_error": None,
    "tls_version": 0x0304,
    "cipher_suite": 0x1302,
}


@pytest.mark.anyio
@pytest.mark.parametrize("request_bytes", [REQUEST, UPGRADE], ids=["http", "websocket"])
async def test_hypercorn_tls_extension(request_bytes: bytes) -> None:
    async with (
        hypercorn_task(app, tls_extension=True) as port,
        await anyio.connect_tcp("127.0.0.1", port) as stream,
    ):
        await stream.send(TLS_HEADER.to_bytes() + request_bytes)
        if request_bytes is REQUEST:
            answer = await http1_answer(stream)
        else:
            data = b""
            while not ws_frame_complete(data):
                data += await stream.receive()
            answer = first_text_frame(data)
    assert answer["tls"] == TLS_EXPECTED


@pytest.mark.anyio
async def test_hypercorn_tls_extension_off_or_not_tls() -> None:
    # Off by default; on, but the header says the client was not on TLS.
    not_tls = ssl_header(client=0, cn="alice")
    for tls_extension, header in ((False, TLS_HEADER), (True, not_tls), (True, HEADER_NO_SSL)):
        async with (
            hypercorn_task(app, tls_extension=tls_extension) as port,
            await anyio.connect_tcp("127.0.0.1", port) as stream,
        ):
            await stream.send(header.to_bytes() + REQUEST)
            answer = await http1_answer(stream)
        assert "tls" not in answer


HEADER_NO_SSL = pp.Header.proxy(CLIENT, SERVER, tlvs=pp.TLVs(aws_vpce_id="vpce-1"))


@pytest.mark.parametrize("http", UVICORN_PARSERS)
@pytest.mark.parametrize("request_bytes", [REQUEST, UPGRADE], ids=["http", "websocket"])
def test_uvicorn_tls_extension(http: str, request_bytes: bytes) -> None:
    if http not in uvicorn_protocols():
        pytest.skip(f"{http} is not installed")
    import proxyproto.uvicorn as ppu

    protocol = ppu._protocol_class(http, pp.ProxyProtocolConfig(), tls_extension=True)
    with (
        uvicorn_thread(app, http=protocol, ws="wsproto") as (address, _, _),
        socket.create_connection(address, timeout=10) as sock,
    ):
        sock.sendall(TLS_HEADER.to_bytes() + request_bytes)
        if request_bytes is REQUEST:
            status, answer = read_response(sock, bytearray())
            assert status == 200
        else:
            received = b""
            while not ws_frame_complete(received):
                chunk = sock.recv(65536)
                assert chunk, received
                received += chunk
            answer = first_text_frame(received)
    assert answer["tls"] == TLS_EXPECTED


def test_uvicorn_tls_extension_off_by_default() -> None:
    uvicorn_protocols()
    _, answer = uvicorn_exchange("h11", TLS_HEADER.to_bytes() + REQUEST)
    assert "tls" not in answer


# HAProxy's send-proxy-v2-ssl-cn (the SSL TLV with the version and the CN), and the cipher.
SSL_CN = "send-proxy-v2-ssl-cn proxy-v2-options ssl-cipher"


def haproxy_tls_expected(version: str, cipher: str) -> dict[str, Any]:
    """The TLS extension for what the client negotiated with HAProxy (its certificate: alice's
    from the CA HAProxy trusts); the numbers from the local OpenSSL, not from our table."""
    numbers = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
    return {
        "server_cert": None,
        "client_cert_chain": [],
        "client_cert_name": "CN=alice",
        "client_cert_error": None,
        "tls_version": numbers[version],
        "cipher_suite": openssl_cipher_suites()[cipher],
    }


@pytest.mark.anyio
@pytest.mark.haproxy
async def test_hypercorn_tls_extension_behind_haproxy(ca: trustme.CA, tmp_path: Path) -> None:
    from anyio.streams.tls import TLSAttribute

    async with hypercorn_task(app, tls_extension=True) as port:
        with haproxy_tls_front(ca, tmp_path, ("127.0.0.1", port), SSL_CN) as front:
            stream = await anyio.connect_tcp(
                *front, ssl_context=client_context(ca), tls_hostname="localhost"
            )
            async with stream:
                cipher, version, _ = stream.extra(TLSAttribute.cipher)
                await stream.send(REQUEST)
                answer = await http1_answer(stream)
    assert answer["tls"] == haproxy_tls_expected(version, cipher)


@pytest.mark.haproxy
@pytest.mark.parametrize("http", UVICORN_PARSERS)
def test_uvicorn_tls_extension_behind_haproxy(http: str, ca: trustme.CA, tmp_path: Path) -> None:
    if http not in uvicorn_protocols():
        pytest.skip(f"{http} is not installed")
    import proxyproto.uvicorn as ppu

    protocol = ppu._protocol_class(http, pp.ProxyProtocolConfig(), tls_extension=True)
    with (
        uvicorn_thread(app, http=protocol) as (address, _, _),
        haproxy_tls_front(ca, tmp_path, address, SSL_CN) as front,
        socket.create_connection(front, timeout=10) as raw,
        client_context(ca).wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        cipher, version, _ = sock.cipher() or ("", "", 0)
        sock.sendall(REQUEST)
        status, answer = read_response(sock, bytearray())
    assert status == 200
    assert answer["tls"] == haproxy_tls_expected(version, cipher)


@pytest.mark.parametrize("worker_class", ["asyncio", "trio"])
def test_command_line_tls_extension_reaches_the_workers(
    worker_class: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # proxyproto hypercorn --tls-extension --workers 2: the option crosses to the worker
    # processes (spawned, handed the options as plain data).
    from cli_process import CliProcess, launch

    pytest.importorskip(worker_class)
    tests = str(Path(__file__).parent)
    paths = [tests, os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, paths)))
    args = ["hypercorn", "test_asgi_extension:app", "--bind", "127.0.0.1:0"]
    args += ["--workers", "2", "--worker-class", worker_class, "--tls-extension"]
    with launch(CliProcess, *args) as server:
        with socket.create_connection(server.address, timeout=20) as sock:
            sock.sendall(TLS_HEADER.to_bytes() + REQUEST)
            status, answer = read_response(sock, bytearray())
        assert status == 200
        assert answer["tls"] == TLS_EXPECTED
        assert server.stop() == 0
