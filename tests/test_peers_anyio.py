"""The anyio adapter between real peers: HAProxy and nginx, in front of us and behind us.

Every async test runs on asyncio and on trio. "Our server" is always
``pp.ProxyProtocolListener(await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0),
config)`` served in a task group, trusting only 127.0.0.1 (:func:`pp.trusted_proxies`), which is
where HAProxy and nginx connect from.

- **HAProxy in front** (``mode tcp``): ``send-proxy``, ``send-proxy-v2``, ``send-proxy-v2`` with
  ``proxy-v2-options crc32c,unique-id``, a TLS frontend (client certificate: the SSL TLVs and its
  CN), and ``check`` health checks (a ``tcp-check`` expecting our answer, so that HAProxy keeps
  each check connection open until we replied), which reach our handler with a LOCAL header and
  the real peer.
- **HAProxy behind us**: ``bind ... accept-proxy`` in ``mode http``, answering the client and
  destination it believes (``http-request return ... lf-string "%[src]..."``); we connect with
  :func:`pp.connect_tcp` and v1 / v2 / v2+CRC32C headers. HAProxy checks the CRC32C we write.
- **nginx in front** (stream ``proxy_protocol on``, v1) and **behind us** (``listen ...
  proxy_protocol`` answering ``$proxy_protocol_addr`` etc.) for our v1 and v2 headers.
- **A chain**: client → HAProxy (``send-proxy-v2``) → our listener, whose handler opens
  ``pp.connect_tcp(..., header=pp.header_for(stream))`` to nginx: nginx must see the original
  client.

Without haproxy, nginx or nginx's stream module these skip, except under ``CI=true``, where they
fail (:func:`require_peer.require_binary`). Everything runs on loopback, every test is bounded by
``anyio.fail_after`` and every peer is stopped on the way out, even on failure or timeout.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import pytest
from anyio.abc import ByteStream, SocketAttribute
from anyio.streams.tls import TLSAttribute

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
from nginx_peer import Nginx, check_loopback_only, find_nginx, stream_problem
from peer_process import PeerProcess, free_port, hostport
from require_peer import ci_is_set, require_binary

#: The whole of one test, peers' start and stop included.
TEST_TIMEOUT = 15.0
#: One wait inside a test (for our handler to see a connection).
WAIT = 5.0

Address = tuple[str, int]


def trusting_loopback() -> pp.ProxyProtocolConfig:
    return pp.ProxyProtocolConfig(policy=pp.trusted_proxies(["127.0.0.1"]), header_timeout=WAIT)


# =============================================================================== the peers


@pytest.fixture(scope="session")
def haproxy_binary() -> str:
    return require_haproxy(find_haproxy(), ci=ci_is_set())


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    binary = find_nginx()
    return require_binary(
        "nginx",
        binary,
        ci=ci_is_set(),
        install="apt-get install nginx libnginx-mod-stream",
        problem=None if binary is None else stream_problem(binary),
    )


def test_missing_peer_skips_locally_and_fails_in_ci() -> None:
    install = "apt-get install nginx libnginx-mod-stream"
    assert require_binary("nginx", "/usr/sbin/nginx", ci=True, install=install) == (
        "/usr/sbin/nginx"
    )
    with pytest.raises(pytest.skip.Exception, match="nginx is not installed"):
        require_binary("nginx", None, ci=False, install=install)
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        require_binary("nginx", None, ci=True, install=install)
    no_module = "nginx has no stream module"
    with pytest.raises(pytest.skip.Exception, match=no_module):
        require_binary("nginx", "/usr/sbin/nginx", ci=False, install=install, problem=no_module)
    with pytest.raises(pytest.fail.Exception, match=f"{no_module}, and CI is set"):
        require_binary("nginx", "/usr/sbin/nginx", ci=True, install=install, problem=no_module)


@pytest.mark.parametrize(
    "stream",
    [
        "server { listen 8080; return x; }",
        "server { listen *:8080; return x; }",
        "server { listen 0.0.0.0:8080; return x; }",
        "server { listen [::]:8080; return x; }",
        "server { listen 127.0.0.1:8080; proxy_pass 192.0.2.1:80; }",
        "server { listen 127.0.0.1:8080; proxy_pass localhost:80; }",
        "server { listen 127.0.0.1:8080; proxy_pass $upstream; }",
        "upstream u { server 10.0.0.1:80; }\nserver { listen 127.0.0.1:8080; proxy_pass u; }",
        "error_log /var/log/nginx/error.log;",
        "include /etc/nginx/modules-enabled/*.conf;",
    ],
)
def test_nginx_peer_refuses_anything_but_loopback(stream: str) -> None:
    with pytest.raises(ValueError, match="line"):
        Nginx(stream=stream, binary="/nonexistent/nginx")


def test_nginx_peer_accepts_loopback() -> None:
    check_loopback_only(
        "stream {\n"
        "  upstream u { server 127.0.0.1:81; server [::1]:82; server unix:/tmp/s; }\n"
        "  server { listen 127.0.0.1:80 proxy_protocol; listen [::1]:80; proxy_pass u; }\n"
        '  server { listen unix:/tmp/x; return "${proxy_protocol_addr};{}\\n"; }\n'
        "}\n"
    )


@pytest.fixture(params=LOOPBACK_HOSTS)
def loopback(request: pytest.FixtureRequest) -> str:
    """Where the client connects to the peer in front of us (the peer reaches us on 127.0.0.1)."""
    return loopback_host(request)


P = TypeVar("P", bound=PeerProcess)


@asynccontextmanager
async def running(peer: P) -> AsyncIterator[P]:
    """Start ``peer`` in a worker thread; always stop it, even when cancelled."""
    try:
        # Not abandoned on cancellation: a peer that started is always stopped below.
        await anyio.to_thread.run_sync(peer.start)
        yield peer
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(peer.stop)


# =============================================================================== our server


@asynccontextmanager
async def serving(
    handler: Callable[[pp.ProxiedStream], Awaitable[None]],
    config: pp.ProxyProtocolConfig | None = None,
) -> AsyncIterator[Address]:
    """Our listener on 127.0.0.1, serving ``handler`` in a task group; yields its address."""
    inner = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    listener = pp.ProxyProtocolListener(inner, config or trusting_loopback())
    async with listener, anyio.create_task_group() as task_group:
        task_group.start_soon(listener.serve, handler, task_group)
        yield ("127.0.0.1", listener.extra(SocketAttribute.local_port))
        task_group.cancel_scope.cancel()


@dataclass
class Seen:
    """One connection as our handler saw it."""

    remote_address: Any  # SocketAttribute.remote_address
    peer_address: Any  # ProxyAttribute.peer_address: the proxy's real socket
    source: Any  # ProxyAttribute.source, None when absent
    destination: Any  # ProxyAttribute.destination, None when absent
    header: pp.Header | None
    policy: pp.Policy
    data: bytes


def describe(stream: ByteStream, data: bytes = b"") -> Seen:
    return Seen(
        remote_address=stream.extra(SocketAttribute.remote_address),
        peer_address=stream.extra(pp.ProxyAttribute.peer_address),
        source=stream.extra(pp.ProxyAttribute.source, None),
        destination=stream.extra(pp.ProxyAttribute.destination, None),
        header=stream.extra(pp.ProxyAttribute.header, None),
        policy=stream.extra(pp.ProxyAttribute.policy),
        data=data,
    )


def answer_for(address: Address) -> bytes:
    return f"{address[0]} {address[1]}\n".encode()


class Recorder:
    """Our handler: reads ``expected`` bytes, records what it saw, answers the client's address.

    Results (or the handler's exception) go to a queue that the test reads with :meth:`next`, so
    assertions stay in the test and a failing handler never tears down the listener. Use it as a
    ``with`` block: that closes the queue.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self._send, self._receive = anyio.create_memory_object_stream[Seen | Exception](math.inf)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._send.close()
        self._receive.close()

    async def handle(self, stream: pp.ProxiedStream) -> None:
        try:
            data = bytearray()
            try:
                while len(data) < self.expected:
                    data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass  # a health check goes away at once; the test compares what arrived
            seen = describe(stream, bytes(data))
            self._send.send_nowait(seen)
            with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await stream.send(answer_for(seen.remote_address))
        except Exception as exc:
            self._send.send_nowait(exc)
        finally:
            await anyio.aclose_forcefully(stream)

    async def next(self, peer: PeerProcess) -> Seen:
        with anyio.move_on_after(WAIT):
            result = await self._receive.receive()
            if isinstance(result, Exception):
                raise AssertionError(f"our handler failed: {result!r}") from result
            return result
        raise AssertionError(
            f"no connection reached our handler in {WAIT}s; the peer said:\n{peer.output()}"
        )


# =============================================================================== clients


async def read_line(stream: ByteStream) -> bytes:
    data = b""
    while b"\n" not in data:
        try:
            data += await stream.receive()
        except anyio.EndOfStream:
            break
    return data


async def read_all(stream: ByteStream) -> bytes:
    data = b""
    while True:
        try:
            data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return data


@dataclass
class Talk:
    client: Address  # the client socket's own address (getsockname)
    answer: bytes  # what came back: our handler's line
    tls_version: str | None = None
    cipher: str | None = None


async def talk(frontend: Address, payload: bytes, *, tls: ssl.SSLContext | None = None) -> Talk:
    """Connect to the peer in front of us, send ``payload``, read our handler's answer."""
    stream: ByteStream
    if tls is None:
        stream = await anyio.connect_tcp(*frontend)
    else:
        stream = await anyio.connect_tcp(*frontend, ssl_context=tls, tls_hostname=SNI)
    try:
        local = stream.extra(SocketAttribute.local_address)
        assert isinstance(local, tuple)
        result = Talk(client=(local[0], local[1]), answer=b"")
        if tls is not None:
            result.tls_version = stream.extra(TLSAttribute.tls_version)
            result.cipher = stream.extra(TLSAttribute.cipher)[0]
        if payload:
            await stream.send(payload)
        result.answer = await read_line(stream)
    finally:
        await anyio.aclose_forcefully(stream)
    return result


# =============================================================================== HAProxy in front


@pytest.mark.haproxy
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("version", "option"),
    [
        (1, "send-proxy"),
        (2, "send-proxy-v2"),
        (2, "send-proxy-v2 proxy-v2-options crc32c,unique-id"),
    ],
    ids=["v1", "v2", "v2-crc32c-unique-id"],
)
async def test_haproxy_in_front(
    haproxy_binary: str, loopback: str, version: int, option: str
) -> None:
    payload = make_payload()
    frontend = (loopback, free_port(loopback))
    with Recorder(len(payload)) as recorder, anyio.fail_after(TEST_TIMEOUT):
        async with serving(recorder.handle) as ours:
            config = listen(
                hostport(*frontend),
                f"{hostport(*ours)} {option}",
                "unique-id-format proxyproto-%ci:%cp",
            )
            async with running(HAProxy(config, binary=haproxy_binary)) as proxy:
                result = await talk(frontend, payload)
                seen = await recorder.next(proxy)

    client = result.client
    assert seen.remote_address == client
    assert seen.source == client
    assert seen.destination == frontend
    assert seen.policy is pp.Policy.REQUIRE
    # The real peer is HAProxy's own connection to us, not the client.
    assert seen.peer_address[0] == "127.0.0.1"
    header = seen.header
    assert header is not None
    assert (header.version, header.command) == (version, pp.Command.PROXY)
    assert header.family is (pp.Family.INET6 if ":" in loopback else pp.Family.INET)
    if "crc32c" in option:
        assert header.tlvs.crc32c is not None  # and the parser checked it
        assert header.tlvs.unique_id == f"proxyproto-{client[0]}:{client[1]}".encode()
    else:
        assert not header.tlvs
    assert seen.data == payload
    assert result.answer == answer_for(client)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return issue_certs(tmp_path_factory.mktemp("certs"))


@pytest.mark.haproxy
@pytest.mark.anyio
@pytest.mark.parametrize("client_cert", [True, False], ids=["client-cert", "no-client-cert"])
async def test_haproxy_tls_frontend(haproxy_binary: str, certs: Certs, client_cert: bool) -> None:
    payload = make_payload()
    frontend = ("127.0.0.1", free_port())
    context = client_tls_context(certs, client_cert=client_cert)
    with Recorder(len(payload)) as recorder, anyio.fail_after(TEST_TIMEOUT):
        async with serving(recorder.handle) as ours:
            bind = (
                f"{hostport(*frontend)} ssl crt {certs.server_file} ca-file {certs.ca_file} "
                "verify optional"
            )
            config = listen(
                bind,
                f"{hostport(*ours)} send-proxy-v2 proxy-v2-options {ALL_V2_OPTIONS}",
                "unique-id-format %ci:%cp",
            )
            async with running(HAProxy(config, binary=haproxy_binary)) as proxy:
                result = await talk(frontend, payload, tls=context)
                seen = await recorder.next(proxy)

    client = result.client
    assert seen.remote_address == client
    assert seen.destination == frontend
    assert seen.data == payload  # HAProxy decrypted it; it reaches us in cleartext
    assert result.answer == answer_for(client)
    header = seen.header
    assert header is not None
    tlvs = header.tlvs
    assert tlvs.authority == SNI
    assert tlvs.unique_id == f"{client[0]}:{client[1]}".encode()
    assert tlvs.crc32c is not None
    info = tlvs.ssl
    assert info is not None
    assert info.ssl
    assert info.version == result.tls_version
    assert info.cipher == result.cipher
    assert info.verify == 0
    if client_cert:
        assert pp.SSLClient(info.client) == (
            pp.SSLClient.SSL | pp.SSLClient.CERT_CONN | pp.SSLClient.CERT_SESS
        )
        assert info.cn == CLIENT_CN
        assert info.verified_cert
    else:
        assert pp.SSLClient(info.client) == pp.SSLClient.SSL
        assert info.cn is None
        assert not info.verified_cert


#: What HAProxy logs (``option log-health-checks``) once a check saw our answer.
CHECK_PASSED = "Health check for server fe/be succeeded"


@pytest.mark.haproxy
@pytest.mark.anyio
@pytest.mark.parametrize(
    "option",
    ["send-proxy-v2", "send-proxy-v2 proxy-v2-options crc32c"],
    ids=["v2", "v2-crc32c"],
)
async def test_haproxy_health_check_is_local(haproxy_binary: str, option: str) -> None:
    # No client at all: HAProxy's own check connections, every 100 ms, each a LOCAL header.
    # A tcp-check that expects our answer keeps each check connection open until we have
    # answered (a bare connect check resets at once, often before our handshake even starts),
    # and proves that HAProxy read what we sent after its LOCAL header.
    with Recorder(0) as recorder, anyio.fail_after(TEST_TIMEOUT):
        async with serving(recorder.handle) as ours:
            config = listen(
                hostport("127.0.0.1", free_port()),
                f"{hostport(*ours)} {option} check inter 100ms rise 1",
                "log stderr format raw local0",
                "option log-health-checks",
                "option tcp-check",
                r"tcp-check expect rstring ^127\.0\.0\.1\ [0-9]+\n",
            )
            async with running(HAProxy(config, binary=haproxy_binary)) as proxy:
                seen = await recorder.next(proxy)
                with anyio.move_on_after(WAIT):
                    while CHECK_PASSED not in proxy.output():
                        await anyio.sleep(0.02)
                output = proxy.output()

    assert CHECK_PASSED in output, output
    header = seen.header
    assert header is not None
    assert (header.version, header.command) == (2, pp.Command.LOCAL)
    assert header.source is None
    # LOCAL changes nothing: the stream still shows its real peer, HAProxy.
    assert seen.remote_address == seen.peer_address
    assert seen.peer_address[0] == "127.0.0.1"
    assert seen.source is None
    assert seen.destination is None
    assert seen.policy is pp.Policy.REQUIRE
    assert (header.tlvs.crc32c is not None) is ("crc32c" in option)


# =============================================================================== HAProxy behind us

#: What HAProxy believes about the connection, as ``http-request return`` reports it.
_HAPROXY_REPORT = "%[src]|%[src_port]|%[dst]|%[dst_port]|%[fc_pp_authority]|%[fc_pp_unique_id]"


@pytest.fixture(scope="module")
def haproxy_accepting(haproxy_binary: str) -> Iterator[Address]:
    """An HAProxy that reads our headers (``accept-proxy``) and answers what it found in them."""
    address = ("127.0.0.1", free_port())
    config = f"""
frontend parse
    mode http
    bind {hostport(*address)} accept-proxy
    http-request return status 200 content-type text/plain lf-string "{_HAPROXY_REPORT}\\n"
"""
    with HAProxy(config, binary=haproxy_binary):
        yield address


async def ask_haproxy(address: Address, header_bytes: bytes) -> bytes:
    """Send ``header_bytes`` and an HTTP request; return the answer's body (b"" when closed)."""
    stream = await anyio.connect_tcp(*address)
    try:
        await stream.send(header_bytes + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = await read_all(stream)
    finally:
        await anyio.aclose_forcefully(stream)
    if not response:
        return b""
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), response
    return body


SOURCE4, DESTINATION4 = ("192.0.2.10", 40001), ("198.51.100.20", 443)
SOURCE6, DESTINATION6 = ("2001:db8::10", 40002), ("2001:db8::20", 8443)
TLVS = pp.TLVs(authority="www.example.test", unique_id=b"proxyproto-unique-id")

#: (header, crc32c) sent behind us, to HAProxy and to nginx alike.
OUR_HEADERS = [
    pytest.param(pp.Header.proxy(SOURCE4, DESTINATION4, version=1), False, id="v1-tcp4"),
    pytest.param(pp.Header.proxy(SOURCE6, DESTINATION6, version=1), False, id="v1-tcp6"),
    pytest.param(pp.Header.proxy(SOURCE4, DESTINATION4), False, id="v2-inet"),
    pytest.param(pp.Header.proxy(SOURCE6, DESTINATION6), False, id="v2-inet6"),
    pytest.param(pp.Header.proxy(SOURCE4, DESTINATION4), True, id="v2-crc32c"),
    pytest.param(pp.Header.proxy(SOURCE6, DESTINATION6, tlvs=TLVS), True, id="v2-tlvs-crc32c"),
]


@pytest.mark.haproxy
@pytest.mark.anyio
@pytest.mark.parametrize(("header", "crc32c"), OUR_HEADERS)
async def test_haproxy_behind_us(
    haproxy_accepting: Address, header: pp.Header, crc32c: bool
) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        stream = await pp.connect_tcp(*haproxy_accepting, header=header, crc32c=crc32c)
        try:
            await stream.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            response = await read_all(stream)
        finally:
            await anyio.aclose_forcefully(stream)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), response
    assert header.source is not None
    assert header.destination is not None
    expected = [*map(str, header.source), *map(str, header.destination)]
    expected += [header.tlvs.authority or "", (header.tlvs.unique_id or b"").decode()]
    assert body.decode().rstrip("\n").split("|") == expected


@pytest.mark.haproxy
@pytest.mark.anyio
async def test_haproxy_checks_our_crc32c(haproxy_accepting: Address) -> None:
    """HAProxy verifies CRC32C: a header we checksummed passes, the same one altered does not."""
    good = pp.Header.proxy(SOURCE4, DESTINATION4).to_bytes(crc32c=True)
    altered = bytearray(good)
    altered[16] ^= 0x01  # the first byte of the source address: 192 -> 193
    plain = bytearray(pp.Header.proxy(SOURCE4, DESTINATION4).to_bytes())
    plain[16] ^= 0x01
    with anyio.fail_after(TEST_TIMEOUT):
        assert (await ask_haproxy(haproxy_accepting, good)).startswith(b"192.0.2.10|")
        assert (await ask_haproxy(haproxy_accepting, bytes(plain))).startswith(b"193.0.2.10|")
        assert await ask_haproxy(haproxy_accepting, bytes(altered)) == b""


# =============================================================================== nginx

#: What nginx believes about the connection, from the PROXY header it read.
_NGINX_REPORT = (
    "$proxy_protocol_addr|$proxy_protocol_port|"
    "$proxy_protocol_server_addr|$proxy_protocol_server_port\\n"
)


@pytest.fixture(scope="module")
def nginx_accepting(nginx_binary: str) -> Iterator[Address]:
    """An nginx stream server that reads our headers and answers what it found in them."""
    address = ("127.0.0.1", free_port())
    stream = f"""
server {{
    listen {hostport(*address)} proxy_protocol;
    return "{_NGINX_REPORT}";
}}
"""
    with Nginx(stream=stream, binary=nginx_binary):
        yield address


@pytest.mark.anyio
@pytest.mark.parametrize(("header", "crc32c"), OUR_HEADERS)
async def test_nginx_behind_us(nginx_accepting: Address, header: pp.Header, crc32c: bool) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        stream = await pp.connect_tcp(*nginx_accepting, header=header, crc32c=crc32c)
        try:
            answer = await read_all(stream)
        finally:
            await anyio.aclose_forcefully(stream)
    assert header.source is not None
    assert header.destination is not None
    expected = [*map(str, header.source), *map(str, header.destination)]
    assert answer.decode().rstrip("\n").split("|") == expected


@pytest.mark.anyio
async def test_nginx_in_front(nginx_binary: str, loopback: str) -> None:
    payload = make_payload()
    frontend = (loopback, free_port(loopback))
    with Recorder(len(payload)) as recorder, anyio.fail_after(TEST_TIMEOUT):
        async with serving(recorder.handle) as ours:
            stream = f"""
server {{
    listen {hostport(*frontend)};
    proxy_pass {hostport(*ours)};
    proxy_protocol on;
}}
"""
            async with running(Nginx(stream=stream, binary=nginx_binary)) as nginx:
                result = await talk(frontend, payload)
                seen = await recorder.next(nginx)

    client = result.client
    assert seen.remote_address == client
    assert seen.source == client
    assert seen.destination == frontend
    assert seen.peer_address[0] == "127.0.0.1"
    header = seen.header
    assert header is not None
    assert (header.version, header.command) == (1, pp.Command.PROXY)  # nginx sends v1
    assert header.family is (pp.Family.INET6 if ":" in loopback else pp.Family.INET)
    assert seen.data == payload
    assert result.answer == answer_for(client)


# =============================================================================== a chain


@pytest.mark.haproxy
@pytest.mark.anyio
@pytest.mark.parametrize("hop_version", [2, 1], ids=["relay-v2", "relay-v1"])
async def test_chain_haproxy_us_nginx(
    haproxy_binary: str, nginx_accepting: Address, loopback: str, hop_version: int
) -> None:
    """client → HAProxy (send-proxy-v2) → our relay → nginx: nginx sees the original client."""
    sent: list[pp.Header | Exception] = []

    async def relay(stream: pp.ProxiedStream) -> None:
        try:
            header = pp.header_for(stream, version=hop_version)
            sent.append(header)
            upstream = await pp.connect_tcp(*nginx_accepting, header=header)
            try:
                answer = await read_all(upstream)
            finally:
                await anyio.aclose_forcefully(upstream)
            await stream.send(answer)
        except Exception as exc:
            sent.append(exc)
        finally:
            await anyio.aclose_forcefully(stream)

    frontend = (loopback, free_port(loopback))
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(relay) as ours:
            config = listen(hostport(*frontend), f"{hostport(*ours)} send-proxy-v2")
            async with running(HAProxy(config, binary=haproxy_binary)):
                result = await talk(frontend, b"")

    assert len(sent) == 1, sent
    header = sent[0]
    assert isinstance(header, pp.Header), header
    assert header.version == hop_version
    client = result.client
    assert (header.source, header.destination) == (client, frontend)
    # nginx answered with the addresses from our header: the client's and HAProxy's frontend.
    expected = [*map(str, client), *map(str, frontend)]
    assert result.answer.decode().rstrip("\n").split("|") == expected
