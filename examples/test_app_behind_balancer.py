"""What an application's own tests look like with proxyproto's pytest plugin.

The application runs on Uvicorn with ``proxyproto.uvicorn``, as in production behind a balancer.
The tests say where each request came from: a sync httpx client whose transport sends a PROXY
header ("from 203.0.113.9 through an AWS VPC endpoint"), the ``fake_balancer`` fixture sending
its header a byte at a time on asyncio and on trio, and the ``proxy_connection`` fixture for raw
bytes. Installing proxyproto registers the fixtures: no import, no ``conftest.py``.

Run it with ``pytest examples/test_app_behind_balancer.py``, or as a script (as the test suite
does), which runs pytest on itself.
"""

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
import uvicorn

import proxyproto as pp
import proxyproto.uvicorn
from proxyproto.testing import FakeBalancer, ProxyProtocolTransport

AWS = pp.Header.proxy(
    ("203.0.113.9", 40000),
    ("10.0.0.5", 443),
    tlvs=pp.TLVs(aws_vpce_id="vpce-0123456789abcdef0"),
)


async def app(scope: Any, receive: Any, send: Any) -> None:
    """The application under test: answers with the client's address as JSON."""
    assert scope["type"] == "http"
    body = b'{"client": ["%s", %d]}' % (scope["client"][0].encode(), scope["client"][1])
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    """The application on Uvicorn with the PROXY protocol (policy REQUIRE), in a thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, http=proxyproto.uvicorn.ProxyProtocolH11Protocol, lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield sock.getsockname()
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Every ``@pytest.mark.anyio`` test runs on asyncio and on trio."""
    return request.param


def test_request_through_an_aws_endpoint(server: tuple[str, int]) -> None:
    transport = ProxyProtocolTransport(AWS)
    with httpx.Client(transport=transport, base_url=f"http://{server[0]}:{server[1]}") as client:
        assert client.get("/").json() == {"client": ["203.0.113.9", 40000]}


@pytest.mark.anyio
async def test_header_a_byte_at_a_time(server: tuple[str, int], fake_balancer: Any) -> None:
    balancer: FakeBalancer = await fake_balancer(server, AWS, byte_at_a_time=True)
    async with httpx.AsyncClient(base_url=balancer.url) as client:
        response = await client.get("/")
    assert response.json() == {"client": ["203.0.113.9", 40000]}


@pytest.mark.anyio
async def test_broken_header_is_refused(server: tuple[str, int], proxy_connection: Any) -> None:
    request = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"
    stream = await proxy_connection(*server, b"PROXY TCP4 203.0.113.9\r\n", request)
    with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
        await stream.receive()


if __name__ == "__main__":
    # pytest in a process of its own: this one has imported the modules under test already.
    # From a checkout that is not installed the plugin is named; once proxyproto is installed
    # its entry point loads it anyway, and naming it again is harmless.
    plugin = ["-p", "proxyproto.pytest_plugin", "-p", "no:cacheprovider"]
    command = [sys.executable, "-m", "pytest", "-q", "--no-header", *plugin, __file__]
    status = subprocess.run(command, check=False, timeout=120).returncode
    print(f"pytest exit status: {status}")
    sys.exit(status)
