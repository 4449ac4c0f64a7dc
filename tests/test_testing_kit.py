"""proxyproto.testing and its pytest plugin, each piece against a real server: an anyio
ProxyProtocolListener, Hypercorn (proxyproto.hypercorn.serve) and Uvicorn (proxyproto.uvicorn),
on both anyio backends; and the plugin from a throwaway project, loaded by its entry point."""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import ByteStream, SocketAttribute

import proxyproto as pp
from proxyproto import pytest_plugin, testing

pytest_plugins = ("pytester",)

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

# The plugin's fixtures, for this module: in an installed proxyproto the entry point registers
# them everywhere (test_plugin_from_a_throwaway_project proves it); naming them here keeps this
# file independent of how proxyproto was installed.
fake_balancer = pytest_plugin.fake_balancer
proxy_connection = pytest_plugin.proxy_connection

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ("203.0.113.9", 40000)
DESTINATION = ("10.0.0.5", 443)
VPCE = "vpce-0123456789abcdef0"
SSL = pp.SSLInfo(client=pp.SSLClient.SSL, verify=0, version="TLSv1.3", cipher="TLS_AES_128_GCM")
AWS = pp.Header.proxy(
    CLIENT, DESTINATION, tlvs=pp.TLVs(aws_vpce_id=VPCE, authority="api.example", ssl=SSL)
)
# The offsets that matter in a v2 header: inside the signature, right after it, inside the
# addresses, inside the TLVs.
SPLITS = [5, 12, 16, 20, 30]


# --- the wire: cutting a header ----------------------------------------------------------------


def test_segments() -> None:
    data = AWS.to_bytes()
    assert b"".join(testing.segments(data, split_at=SPLITS)) == data
    assert [len(piece) for piece in testing.segments(data, split_at=[0, 12, 12])] == [
        12,
        len(data) - 12,
    ]
    assert testing.segments(data, byte_at_a_time=True) == [bytes([b]) for b in data]
    assert testing.segments(data) == [data]
    with pytest.raises(ValueError, match="outside"):
        testing.segments(data, split_at=[len(data) + 1])
    with pytest.raises(ValueError, match="not both"):
        testing.segments(data, split_at=[3], byte_at_a_time=True)


def test_header_bytes() -> None:
    assert testing.header_bytes(b"PROXY junk\r\n") == b"PROXY junk\r\n"
    with_crc = testing.header_bytes(AWS, crc32c=True)
    header, size = pp.parse(with_crc)
    assert size == len(with_crc)
    assert header.tlvs.crc32c is not None
    v1 = pp.Header.proxy(CLIENT, DESTINATION, version=1)
    assert testing.header_bytes(v1, crc32c=True) == v1.to_bytes()
    assert testing.header_bytes(b"raw", crc32c=True) == b"raw"


# --- an anyio server ---------------------------------------------------------------------------


async def report(stream: pp.ProxiedStream) -> None:
    """The server under test: echoes one line, prefixed with what it knows of the connection."""
    async with stream:
        header = stream.extra(pp.ProxyAttribute.header, None)
        client = stream.extra(SocketAttribute.remote_address)
        data = b""
        try:
            while not data.endswith(b"\n"):
                data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return
        facts = {
            "client": list(client) if isinstance(client, tuple) else client,
            "command": None if header is None else header.command.name,
            "version": None if header is None else header.version,
            "vpce": None if header is None else header.tlvs.aws_vpce_id,
            "authority": None if header is None else header.tlvs.authority,
            "crc32c": None if header is None else header.tlvs.crc32c is not None,
            "tls": None if header is None or header.tlvs.ssl is None else header.tlvs.ssl.version,
            "line": data.decode(),
        }
        await stream.send(json.dumps(facts).encode() + b"\n")


@asynccontextmanager
async def anyio_server(
    config: pp.ProxyProtocolConfig | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[tuple[tuple[str, int], pp.ProxyProtocolListener]]:
    inner = await anyio.create_tcp_listener(local_host=host, local_port=0)
    listener = pp.ProxyProtocolListener(inner, config)
    port = listener.extra(SocketAttribute.local_port)
    with anyio.fail_after(15):
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, report)
            yield (host, port), listener
            tg.cancel_scope.cancel()


async def ask(stream: ByteStream, line: bytes = b"hello\n") -> dict[str, Any] | None:
    """Send ``line`` (unless empty), read the answer: ``None`` when the server closed instead."""
    async with stream:
        if line:
            await stream.send(line)
        answer = b""
        try:
            while not answer.endswith(b"\n"):
                answer += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return None
    result: dict[str, Any] = json.loads(answer)
    return result


HEADERS = [
    pytest.param(AWS, {}, id="v2-tlvs"),
    pytest.param(AWS, {"crc32c": True}, id="v2-crc32c"),
    pytest.param(AWS, {"split_at": SPLITS}, id="v2-split"),
    pytest.param(AWS, {"byte_at_a_time": True}, id="v2-byte-at-a-time"),
    pytest.param(pp.Header.proxy(CLIENT, DESTINATION, version=1), {}, id="v1"),
    pytest.param(
        pp.Header.proxy(CLIENT, DESTINATION, version=1), {"byte_at_a_time": True}, id="v1-bytes"
    ),
    pytest.param(pp.Header.proxy(("2001:db8::9", 40000), ("2001:db8::1", 443)), {}, id="v2-ipv6"),
]


def expected_client(header: pp.Header) -> list[Any]:
    assert isinstance(header.source, tuple)
    return list(header.source)


@pytest.mark.anyio
@pytest.mark.parametrize(("header", "options"), HEADERS)
async def test_fake_balancer(header: pp.Header, options: dict[str, Any]) -> None:
    async with (
        anyio_server() as (address, listener),
        testing.fake_balancer(address, header, **options) as balancer,
    ):
        answer = await ask(await anyio.connect_tcp(*balancer.address))
        assert answer is not None
        assert answer["client"] == expected_client(header)
        assert answer["version"] == header.version
        assert answer["line"] == "hello\n"  # relayed both ways
        if header.tlvs.aws_vpce_id:
            assert (answer["vpce"], answer["authority"], answer["tls"]) == (
                VPCE,
                "api.example",
                "TLSv1.3",
            )
        assert answer["crc32c"] is bool(options.get("crc32c"))
        assert balancer.connections == 1
        assert balancer.sent == [testing.header_bytes(header, crc32c=options.get("crc32c", False))]
        assert listener.statistics().accepted == 1


@pytest.mark.anyio
async def test_fake_balancer_describes_the_client_by_default() -> None:
    """Without a header, the balancer sends the one a real balancer would: the client's own
    address as the source, the balancer's as the destination."""
    async with anyio_server() as (address, _), testing.fake_balancer(address) as balancer:
        stream = await anyio.connect_tcp(*balancer.address)
        me = list(stream.extra(SocketAttribute.local_address))
        answer = await ask(stream)
        assert answer is not None
        assert answer["client"] == me
        header, _size = pp.parse(balancer.sent[0])
        assert header.destination == balancer.address


@pytest.mark.anyio
async def test_fake_balancer_local_raw_callable_and_ipv6() -> None:
    async with anyio_server(host="::1") as (address, listener):
        async with testing.fake_balancer(address, pp.Header.local(), host="::1") as balancer:
            assert balancer.url.startswith("http://[::1]:")
            stream = await anyio.connect_tcp(*balancer.address)
            me = stream.extra(SocketAttribute.local_address)
            answer = await ask(stream)
            # LOCAL changes nothing: the server sees the balancer's own connection.
            assert answer is not None
            assert answer["command"] == "LOCAL"
            assert answer["client"][0] == me[0] == "::1"
            # A header that depends on the connection; then raw bytes, refused by the server.
            balancer.header = lambda client: pp.Header.proxy(
                ("2001:db8::77", client.extra(SocketAttribute.remote_port)), ("2001:db8::1", 80)
            )
            answer = await ask(await anyio.connect_tcp(*balancer.address))
            assert answer is not None
            assert answer["client"][0] == "2001:db8::77"
            balancer.header = b"PROXY TCP4 1.2.3.4\r\n"
            assert await ask(await anyio.connect_tcp(*balancer.address)) is None
            assert balancer.connections == 3
        assert listener.statistics().rejected.get("invalid") == 1


@pytest.mark.anyio
async def test_fake_balancer_refuses_a_bad_split_at_once() -> None:
    with pytest.raises(ValueError, match="outside"):
        async with testing.fake_balancer(("127.0.0.1", 9), AWS, split_at=[1000]):
            pass  # pragma: no cover


@pytest.mark.anyio
@pytest.mark.parametrize(
    "options", [{}, {"split_at": SPLITS}, {"byte_at_a_time": True}, {"crc32c": True}]
)
async def test_open_connection(options: dict[str, Any]) -> None:
    async with anyio_server() as (address, _):
        stream = await testing.open_connection(*address, AWS, b"ping\n", **options)
        answer = await ask(stream, b"")
        assert answer is not None
        assert (answer["client"], answer["vpce"], answer["line"]) == (list(CLIENT), VPCE, "ping\n")
        assert answer["crc32c"] is bool(options.get("crc32c"))


@pytest.mark.anyio
async def test_open_connection_raw_bytes_are_refused() -> None:
    async with anyio_server() as (address, listener):
        stream = await testing.open_connection(*address, b"PROXY TCP4 bad\r\n", b"ping\n")
        assert await ask(stream, b"") is None
    assert listener.statistics().rejected.get("invalid") == 1


class Recorder(ByteStream):
    """A stream that keeps each write (what open_connection sends, write by write)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def send(self, item: bytes) -> None:
        self.writes.append(item)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        raise anyio.EndOfStream

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("options", "writes"),
    [
        pytest.param({}, [AWS.to_bytes(), b"ping\n"], id="whole"),
        pytest.param({"coalesce": True}, [AWS.to_bytes() + b"ping\n"], id="coalesce"),
        pytest.param(
            {"coalesce": True, "split_at": [16], "pause": 0.01},
            [AWS.to_bytes()[:16], AWS.to_bytes()[16:] + b"ping\n"],
            id="split-coalesce",
        ),
    ],
)
async def test_open_connection_writes(
    options: dict[str, Any], writes: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which bytes go in which write: the header, then the payload, or both in one write."""
    recorder = Recorder()

    async def connect(*args: Any, **kwargs: Any) -> Recorder:
        return recorder

    # Also what proxyproto.connect_tcp (the whole header) connects with.
    monkeypatch.setattr(anyio, "connect_tcp", connect)
    await testing.open_connection("127.0.0.1", 1, AWS, b"ping\n", **options)
    assert recorder.writes == writes


@pytest.mark.anyio
@pytest.mark.parametrize("options", [{}, {"coalesce": True}, {"split_at": SPLITS}])
async def test_open_connection_with_tls_after_the_header(
    options: dict[str, Any], ca: Any, server_certs: tuple[Path, Path]
) -> None:
    """TLS after the header: whole, in the segment of the header's end (``coalesce``: the
    ClientHello glued to it), or after a header cut in pieces."""
    import ssl

    from anyio.streams.tls import TLSListener

    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(*server_certs)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    inner = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = inner.extra(SocketAttribute.local_port)
    listener = TLSListener(pp.ProxyProtocolListener(inner), server_context)

    async def handle(stream: Any) -> None:
        async with stream:
            header = stream.extra(pp.ProxyAttribute.header)
            line = await stream.receive()
            await stream.send(json.dumps([list(header.source), line.decode()]).encode())

    with anyio.fail_after(15):
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)
            stream = await testing.open_connection(
                "127.0.0.1",
                port,
                AWS,
                b"ping\n",
                ssl_context=client_context,
                tls_hostname="localhost",
                **options,
            )
            async with stream:
                assert json.loads(await stream.receive()) == [list(CLIENT), "ping\n"]
            tg.cancel_scope.cancel()


def test_open_socket() -> None:
    """The sync helper, against a plain socket server in this thread: what it received."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        data = AWS.to_bytes(crc32c=True)
        for options in ({}, {"coalesce": True}, {"split_at": SPLITS, "pause": 0.001}):
            with testing.open_socket("127.0.0.1", port, AWS, b"ping\n", crc32c=True, **options):
                accepted, _ = server.accept()
                with accepted:
                    got = b""
                    while len(got) < len(data) + 5:
                        got += accepted.recv(65536)
            assert got == data + b"ping\n"
            assert pp.parse(got)[0].source == CLIENT
        with pytest.raises(ValueError, match="outside"):
            testing.open_socket("127.0.0.1", port, AWS, split_at=[1000])


@pytest.mark.anyio
async def test_fake_balancer_with_a_pause() -> None:
    async with (
        anyio_server() as (address, _),
        testing.fake_balancer(address, AWS, split_at=SPLITS, pause=0.001) as balancer,
    ):
        answer = await ask(await anyio.connect_tcp(*balancer.address))
        assert answer is not None
        assert answer["client"] == list(CLIENT)
        assert balancer.pause == 0.001


@pytest.mark.anyio
async def test_fixtures(fake_balancer: Any, proxy_connection: Any) -> None:
    """The plugin's fixtures: balancers and connections they make are closed after the test."""
    async with anyio_server() as (address, _):
        balancer = await fake_balancer(address, AWS, split_at=[16])
        assert isinstance(balancer, testing.FakeBalancer)
        answer = await ask(await anyio.connect_tcp(*balancer.address))
        assert answer is not None
        assert answer["client"] == list(CLIENT)
        stream = await proxy_connection(*address, AWS, b"ping\n", byte_at_a_time=True)
        answer = await ask(stream, b"")
        assert answer is not None
        assert answer["line"] == "ping\n"


# --- real ASGI servers, through the httpx transports -------------------------------------------

httpx = pytest.importorskip("httpx")


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the client the server saw (``scope["client"]``)."""
    if scope["type"] == "lifespan":
        from asgi_helpers import serve_lifespan

        await serve_lifespan(receive, send)
        return
    body = json.dumps({"client": list(scope["client"])}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.mark.anyio
@pytest.mark.parametrize("options", [{}, {"split_at": SPLITS}, {"crc32c": True}])
async def test_async_transport_with_hypercorn(options: dict[str, Any]) -> None:
    pytest.importorskip("hypercorn")
    from asgi_helpers import hypercorn_task

    transport = testing.AsyncProxyProtocolTransport(AWS, **options)
    async with (
        hypercorn_task(asgi_app) as port,
        httpx.AsyncClient(transport=transport, base_url=f"http://127.0.0.1:{port}") as client,
    ):
        # Two requests, one keep-alive connection: one header.
        for _ in range(2):
            response = await client.get("/")
            assert response.json() == {"client": list(CLIENT)}
        assert transport.sent == [testing.header_bytes(AWS, crc32c=options.get("crc32c", False))]
        # A new header applies to the next connection.
        transport.header = pp.Header.proxy(("198.51.100.3", 1234), DESTINATION, version=1)
        response = await client.get("/", headers={"Connection": "close"})
        response = await client.get("/")
        assert response.json() == {"client": ["198.51.100.3", 1234]}
        # A broken header: the server closes the connection, httpx says so.
        transport.header = b"PROXY TCP4 not an address at all\r\n"
        await client.get("/", headers={"Connection": "close"})
        with pytest.raises(httpx.TransportError):
            await client.get("/")


@pytest.mark.anyio
async def test_async_transport_through_the_fake_balancer_with_hypercorn() -> None:
    """The two combined: the transport's header goes to the balancer, which has its own."""
    pytest.importorskip("hypercorn")
    from asgi_helpers import hypercorn_task

    async with (
        hypercorn_task(asgi_app) as port,
        testing.fake_balancer(("127.0.0.1", port), AWS, byte_at_a_time=True) as balancer,
        httpx.AsyncClient(base_url=balancer.url) as client,
    ):
        response = await client.get("/")
        assert response.json() == {"client": list(CLIENT)}


@pytest.mark.parametrize("options", [{}, {"byte_at_a_time": True}])
def test_sync_transport_with_uvicorn(options: dict[str, Any]) -> None:
    pytest.importorskip("uvicorn")
    import proxyproto.uvicorn as ppu
    from asgi_helpers import uvicorn_thread

    transport = testing.ProxyProtocolTransport(AWS, **options)
    with (
        uvicorn_thread(asgi_app, http=ppu.ProxyProtocolH11Protocol) as (address, _, _),
        httpx.Client(transport=transport, base_url=f"http://{address[0]}:{address[1]}") as client,
    ):
        for close in ("keep-alive", "close"):
            response = client.get("/", headers={"Connection": close})
            assert response.json() == {"client": list(CLIENT)}
        assert len(transport.sent) == 1
        sources = iter([("192.0.2.10", 1000), ("192.0.2.11", 1001)])
        transport.header = lambda: pp.Header.proxy(next(sources), DESTINATION)
        clients = [client.get("/", headers={"Connection": "close"}).json()["client"]]
        clients.append(client.get("/", headers={"Connection": "close"}).json()["client"])
        assert clients == [["192.0.2.10", 1000], ["192.0.2.11", 1001]]


def test_transport_refuses_bad_arguments_at_once() -> None:
    with pytest.raises(ValueError, match="outside"):
        testing.ProxyProtocolTransport(AWS, split_at=[1000])
    transport = testing.AsyncProxyProtocolTransport(AWS)
    with pytest.raises(ValueError, match="not both"):
        testing.ProxyProtocolTransport(AWS, split_at=[1], byte_at_a_time=True)
    assert transport.header is AWS


# --- the plugin, from a project that only installed proxyproto ---------------------------------

THROWAWAY_TEST = """
import json

import anyio
import httpx
import pytest

import proxyproto as pp
from proxyproto.testing import AsyncProxyProtocolTransport

AWS = pp.Header.proxy(("203.0.113.9", 40000), ("10.0.0.5", 443),
                      tlvs=pp.TLVs(aws_vpce_id="vpce-0123456789abcdef0"))


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


async def handle(stream):
    async with stream:
        request = await stream.receive()
        header = stream.extra(pp.ProxyAttribute.header)
        body = json.dumps([list(header.source), header.tlvs.aws_vpce_id]).encode()
        head = b"HTTP/1.1 200 OK\\r\\ncontent-length: %d\\r\\n\\r\\n" % len(body)
        await stream.send(head + body)


@pytest.fixture
async def server():
    listener = pp.ProxyProtocolListener(await anyio.create_tcp_listener(local_host="127.0.0.1"))
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield ("127.0.0.1", listener.extra(anyio.abc.SocketAttribute.local_port))
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_through_the_fake_balancer(server, fake_balancer):
    balancer = await fake_balancer(server, AWS, byte_at_a_time=True)
    async with httpx.AsyncClient() as client:
        response = await client.get(balancer.url)
    assert response.json() == [["203.0.113.9", 40000], "vpce-0123456789abcdef0"]


@pytest.mark.anyio
async def test_with_the_transport(server, proxy_connection):
    transport = AsyncProxyProtocolTransport(AWS, split_at=[16])
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(f"http://{server[0]}:{server[1]}/")
    assert response.json()[1] == "vpce-0123456789abcdef0"
    stream = await proxy_connection(*server, AWS, b"GET / HTTP/1.1\\r\\n\\r\\n")
    assert b"203.0.113.9" in await stream.receive()
"""


def declared_plugin() -> str:
    """The module pyproject.toml registers under the ``pytest11`` entry point of its name."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        entry_points = tomllib.load(file)["project"]["entry-points"]["pytest11"]
    assert entry_points == {"proxyproto.pytest_plugin": "proxyproto.pytest_plugin"}
    return str(entry_points["proxyproto.pytest_plugin"])


def installed_plugin() -> str | None:
    """The module the installed distribution registers under ``pytest11``, if any."""
    try:
        points = importlib.metadata.distribution("proxyproto").entry_points
    except importlib.metadata.PackageNotFoundError:
        return None
    return next((ep.value for ep in points if ep.group == "pytest11"), None)


def test_plugin_from_a_throwaway_project(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project whose tests use the fixtures and the transport, and import no plugin.

    An installed proxyproto (CI installs it in nox's venv) must register the plugin itself.
    Where the installed metadata predates the plugin (an editable install made before it, with
    this checkout on PYTHONPATH), the same declaration is installed beside the project as a
    distribution of its own, so that pytest still finds the plugin by its entry point only.
    """
    module = declared_plugin()
    installed = installed_plugin()
    if os.environ.get("CI"):
        assert installed == module, "the installed proxyproto does not register its pytest plugin"
    if installed is None:
        site = pytester.mkdir("site")
        dist_info = site / "proxyproto_plugin_probe-0.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: proxyproto-plugin-probe\nVersion: 0\n"
        )
        (dist_info / "entry_points.txt").write_text(f"[pytest11]\n{module} = {module}\n")
        paths = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    pytester.makepyprojecttoml(
        textwrap.dedent(
            """
            [tool.pytest.ini_options]
            addopts = ["--strict-markers", "-p", "no:cacheprovider"]
            filterwarnings = ["error"]
            """
        )
    )
    pytester.makepyfile(test_app=THROWAWAY_TEST)
    result = pytester.runpytest_subprocess("-v", timeout=120)
    result.assert_outcomes(passed=4)
    # Naming the plugin as well (-p, or pytest_plugins) loads it once, not twice.
    result = pytester.runpytest_subprocess("-p", "proxyproto.pytest_plugin", timeout=120)
    result.assert_outcomes(passed=4)
    # The plugin module was loaded by pytest's entry point machinery, not imported by the test.
    assert "import proxyproto.pytest_plugin" not in THROWAWAY_TEST
    assert "pytest_plugins" not in THROWAWAY_TEST


def test_plugin_imports_nothing_heavy() -> None:
    """Loading the plugin (what every pytest run of a project with proxyproto does) imports
    neither anyio nor httpx nor proxyproto's adapters."""
    code = (
        "import sys, proxyproto.pytest_plugin; "
        "print(sorted(m for m in ('anyio', 'httpx', 'httpcore', 'proxyproto._adapters.anyio', "
        "'proxyproto.testing') if m in sys.modules))"
    )
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_transports_without_httpx_name_the_extra() -> None:
    """Without httpx the balancer still imports; the transports say which extra brings it."""
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "import proxyproto.testing as t\n"
        "assert t.fake_balancer\n"
        "try:\n"
        "    t.ProxyProtocolTransport\n"
        "except ModuleNotFoundError as error:\n"
        "    print(error)\n"
    )
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout == (
        "proxyproto.testing.ProxyProtocolTransport needs httpx, which is not installed: "
        "pip install '.[testing]'\n"
    )
