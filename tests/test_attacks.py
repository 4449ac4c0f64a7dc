"""Under attack: a peer that never reads, and a server that runs out of file descriptors.

A peer that sends and never reads what it is sent back (or a relay's target that never reads)
must not make the server buffer without bound: the sender's ``send()`` has to block once the
kernel's buffers and a few hundred KiB of ours are full. The tests count the bytes a blocking
client pushes before its ``send()`` makes no progress for :data:`STALL` seconds, and assert a
bound far below what an unbounded server takes (anyio on asyncio took everything offered, up to
:data:`CAP`). A slow machine can only make the count smaller, never the test fail.

Running out of descriptors must not end any server: each one runs in a child process
(``tests/attack_server.py``, or the ``proxyproto`` command) whose ``RLIMIT_NOFILE`` is
:data:`NOFILE`; the test opens idle connections until the server logs that ``accept()`` failed,
opens one more client that sends its request and waits in the backlog, closes the idle ones, and
checks that the waiting client and then a fresh one are served by the same, living, process.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import ByteStream, SocketAttribute, SocketListener, SocketStream

import proxyproto as pp
from attack_clients import (
    HEADER,
    HOST,
    STALL,
    MiB,
    ask_echo,
    ask_hello,
    ask_http,
    ask_https,
    ask_when_freed,
    echo_target,
    push_until_blocked,
    sink_target,
)
from attack_clients import certificates as make_certificates
from cli_process import PROXYPROTO, TIMEOUT, Address, CliProcess
from proxyproto._adapters import accept
from proxyproto._adapters.backpressure import (
    HIGH_WATER,
    LOW_WATER,
    _BoundedQueue,
    bound_reading,
    first_read_nowait,
)

#: What a bounded server may take: the kernel's socket buffers on both sides (a few MiB each on
#: loopback) and what sits in the server's own queues.
BOUND = 64 * MiB
#: The relay's resident memory after the push, at most (an idle relay is about 30 MB).
RSS_BOUND = 150 * MiB
#: The descriptor limit of the servers under test.
NOFILE = 64
ATTACK_SERVER = str(Path(__file__).with_name("attack_server.py"))


# =============================================================================== senders


@contextmanager
def firehose_server(pushed: list[int]) -> Iterator[Address]:
    """A target that sends to its first connection until that blocks; ``pushed[0]``: how much."""
    with socket.create_server((HOST, 0)) as server:
        server.settimeout(TIMEOUT)

        def serve() -> None:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                pushed[0] = push_until_blocked(conn)
                done.wait(TIMEOUT)

        done = threading.Event()
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield server.getsockname()[:2]
        finally:
            done.set()
            thread.join(TIMEOUT + STALL)


def vm_rss(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# =============================================================================== backpressure


async def echo(stream: ByteStream) -> None:
    async with stream:
        try:
            while True:
                await stream.send(await stream.receive())
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass


@pytest.mark.anyio
@pytest.mark.parametrize("surface", ["listener", "wrap"])
async def test_a_client_that_never_reads_is_not_buffered_without_bound(surface: str) -> None:
    """An echo server whose client sends header and bytes in one segment and never reads."""
    inner = await anyio.create_tcp_listener(local_host=HOST, local_port=0)
    port = inner.extra(SocketAttribute.local_port)

    async def wrap_then_echo(transport: ByteStream) -> None:
        try:
            stream = await pp.ProxiedStream.wrap(transport)
        except BaseException:
            await anyio.aclose_forcefully(transport)
            raise
        await echo(stream)

    def client() -> int:
        with socket.create_connection((HOST, port), timeout=TIMEOUT) as sock:
            return push_until_blocked(sock, HEADER)

    with anyio.fail_after(TIMEOUT * 2):
        async with inner, anyio.create_task_group() as task_group:
            if surface == "listener":
                task_group.start_soon(pp.ProxyProtocolListener(inner).serve, echo)
            else:
                task_group.start_soon(inner.serve, wrap_then_echo)
            pushed = await anyio.to_thread.run_sync(client)
            task_group.cancel_scope.cancel()
    assert pushed < BOUND


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("direction", ["up", "down"])
def test_the_relay_does_not_buffer_without_bound(backend: str, direction: str) -> None:
    """up: a fast client, a target that never reads; down: a fast target, a client that never
    reads. The relay's memory stays bounded and the sender ends up blocked."""
    with ExitStack() as stack:
        pushed = [0]
        if direction == "up":
            target, _ = stack.enter_context(sink_target())
        else:
            target = stack.enter_context(firehose_server(pushed))
        command = [*PROXYPROTO, "relay", "--listen", f"{HOST}:0", "--to", f"{HOST}:{target[1]}"]
        relay = stack.enter_context(launch([*command, "--accept-proxy", "--backend", backend]))
        with socket.create_connection(relay.address, timeout=TIMEOUT) as sock:
            if direction == "up":
                pushed[0] = push_until_blocked(sock, HEADER)
            else:
                sock.sendall(HEADER)
                wait_until(lambda: pushed[0] > 0, TIMEOUT + STALL)
            rss = vm_rss(relay.process.pid)
    assert pushed[0] < BOUND
    assert rss < RSS_BOUND


def wait_until(condition: Callable[[], bool], seconds: float) -> None:
    """Poll ``condition`` for up to ``seconds`` (what the test asserts comes after)."""
    pause = threading.Event()
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        pause.wait(0.05)


# =============================================================================== descriptors


def limited(nofile: int) -> Callable[[], None]:
    def set_limit() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

    return set_limit


@contextmanager
def launch(command: list[str], *, nofile: int = 0, group: bool = False) -> Iterator[CliProcess]:
    """Run ``command`` (under ``RLIMIT_NOFILE`` ``nofile``), wait for its listening line.

    With ``group``, in a session of its own, killed whole at the end (a server with workers).
    """
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    tests = str(Path(__file__).parent)  # asgi_client_app, for proxyproto hypercorn
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=limited(nofile) if nofile else None,
        env=environment,
        start_new_session=group,
    )
    running = CliProcess(process)
    try:
        running.start()
        yield running
    finally:
        if group:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        running.kill()


#: The line each server logs when accept() runs out of descriptors.
OUR_WARNING = "EMFILE"
ASYNCIO_WARNING = "out of system resource"


def exhaust(server: CliProcess, warning: str) -> list[socket.socket]:
    """Open idle connections to ``server`` until it logs ``warning``; return them."""
    held: list[socket.socket] = []
    try:
        for _ in range(NOFILE * 4):
            held.append(socket.create_connection(server.address, timeout=TIMEOUT))
            if saw(server, warning, wait=0.005 if len(held) < NOFILE else 0.5):
                return held
        raise AssertionError(f"never ran out of descriptors: {server.drain()}")
    except BaseException:
        for sock in held:
            sock.close()
        raise


def saw(server: CliProcess, text: str, *, wait: float) -> bool:
    """Whether a line of the server's stderr holds ``text`` (reading what came within ``wait``)."""
    import queue

    while True:
        try:
            line = server.stderr.get(timeout=wait)
        except queue.Empty:
            return False
        assert line is not None, f"the server exited: {server.process.poll()}"
        if text in line:
            return True
        wait = 0.0


def survives_exhaustion(
    server: CliProcess, ask: Callable[[socket.socket], bytes], expect: bytes, warning: str
) -> None:
    answer = ask_when_freed(server.address, ask, exhaust(server, warning))
    assert answer is not None, f"the waiting client was not served: {server.drain()}"
    assert expect in answer
    assert server.process.poll() is None
    with socket.create_connection(server.address, timeout=TIMEOUT) as fresh:
        assert expect in ask(fresh)
    assert server.process.poll() is None


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, str, str]:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.mark.parametrize("kind", ["anyio-asyncio", "anyio-trio", "trio"])
def test_the_listeners_survive_running_out_of_descriptors(kind: str) -> None:
    command = [sys.executable, ATTACK_SERVER, kind, str(NOFILE)]
    with launch(command) as server:
        survives_exhaustion(server, ask_hello, b"hello ('192.0.2.1', 56324)", OUR_WARNING)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_echo_survives_running_out_of_descriptors(backend: str) -> None:
    command = [*PROXYPROTO, "echo", "--listen", f"{HOST}:0", "--header-timeout", "60"]
    with launch([*command, "--backend", backend], nofile=NOFILE) as server:
        survives_exhaustion(server, ask_hello, b"client 192.0.2.1:56324", OUR_WARNING)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_relay_survives_running_out_of_descriptors(backend: str) -> None:
    with echo_target() as (target, _):
        command = [*PROXYPROTO, "relay", "--listen", f"{HOST}:0", "--to", f"{HOST}:{target[1]}"]
        with launch([*command, "--backend", backend], nofile=NOFILE) as server:
            survives_exhaustion(server, ask_echo, b"ping", OUR_WARNING)


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "cleartext"])
def test_hypercorn_asyncio_survives_running_out_of_descriptors(
    tls: bool, certificates: tuple[ssl.SSLContext, str, str]
) -> None:
    """TLS binds are our anyio listeners; cleartext ones asyncio's create_server (its own
    accept loop, which waits a second and retries: checked here, not assumed)."""
    pytest.importorskip("hypercorn")
    context, certfile, keyfile = certificates
    kind, extra = ("hypercorn-tls", [certfile, keyfile]) if tls else ("hypercorn", [])
    command = [sys.executable, ATTACK_SERVER, kind, str(NOFILE), *extra]

    ask = ask_https(context) if tls else ask_http
    with launch(command) as server:
        survives_exhaustion(server, ask, b"200", OUR_WARNING if tls else ASYNCIO_WARNING)


def test_uvicorn_survives_running_out_of_descriptors() -> None:
    """Uvicorn's accept loop is asyncio's create_server: checked, not assumed."""
    pytest.importorskip("uvicorn")
    command = [sys.executable, ATTACK_SERVER, "uvicorn", str(NOFILE)]
    with launch(command) as server:
        survives_exhaustion(server, ask_http, b"200", ASYNCIO_WARNING)


# =============================================================================== the pieces


class FailingListener(SocketListener):
    """``inner``, whose accept() first fails ``failures`` times with ``error``."""

    def __init__(self, inner: SocketListener, failures: int, error: BaseException) -> None:
        self.inner = inner
        self.failures = failures
        self.error = error

    async def accept(self) -> SocketStream:
        await anyio.lowlevel.checkpoint()
        if self.failures:
            self.failures -= 1
            raise self.error
        return await self.inner.accept()

    @property
    def _raw_socket(self) -> socket.socket:
        return self.inner.extra(SocketAttribute.raw_socket)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def socket_listener() -> SocketListener:
    """A TCP listener on 127.0.0.1, one socket."""
    (inner,) = (await anyio.create_tcp_listener(local_host=HOST, local_port=0)).listeners
    assert isinstance(inner, SocketListener)
    return inner


def emfile() -> OSError:
    return OSError(errno.EMFILE, "Too many open files")


def wrapped_emfile() -> anyio.BrokenResourceError:
    """What anyio's trio backend raises for EMFILE."""
    error = anyio.BrokenResourceError()
    error.__cause__ = emfile()
    return error


@pytest.mark.anyio
@pytest.mark.parametrize("error", [emfile, wrapped_emfile])
async def test_serve_waits_out_exhaustion_and_logs_it_once(
    error: Callable[[], BaseException],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(accept, "exhaustion", accept.Exhaustion())
    monkeypatch.setattr(accept, "RETRY_DELAY", 0.001)
    caplog.set_level(logging.INFO, logger="proxyproto")
    inner = await socket_listener()
    listener = pp.ProxyProtocolListener(FailingListener(inner, 50, error()))
    served = anyio.Event()

    async def handler(stream: pp.ProxiedStream) -> None:
        async with stream:
            await stream.send(b"served")
        served.set()

    with anyio.fail_after(TIMEOUT):
        async with listener, anyio.create_task_group() as task_group:
            task_group.start_soon(listener.serve, handler)
            port = inner.extra(SocketAttribute.local_port)
            async with await anyio.connect_tcp(HOST, port) as client:
                await client.send(HEADER)
                assert await client.receive() == b"served"
            await served.wait()
            task_group.cancel_scope.cancel()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1  # fifty failures, one line
    assert "EMFILE" in warnings[0].getMessage()
    assert [r.getMessage() for r in caplog.records if "works again" in r.getMessage()]


@pytest.mark.anyio
async def test_other_accept_errors_still_propagate() -> None:
    inner = await socket_listener()
    failing = FailingListener(inner, 1, OSError(errno.EIO, "Input/output error"))
    raises = pytest.RaisesGroup(
        pytest.RaisesExc(OSError, match="Input/output"), flatten_subgroups=True
    )
    with anyio.fail_after(TIMEOUT), raises:
        async with failing:
            await accept.serve(failing, echo)


def test_exhaustion_is_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = accept.Exhaustion(interval=10.0, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="proxyproto")
    for step in range(1000):  # 100 s of failures every 0.1 s, an accept working now and then
        now[0] = step * 0.1
        log.failed(emfile(), "127.0.0.1:8000")
        if step % 7 == 0:
            log.succeeded()
    now[0] = 200.0
    log.succeeded()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) <= 2 * (100 / 10.0 + 1)  # a WARNING and an INFO per interval at most
    assert "retrying every" in lines[0]
    assert "works again" in lines[-1]
    assert not log.in_streak


def test_bound_reading_leaves_other_streams_alone() -> None:
    class Stream:
        transport_stream = None

    stream = Stream()
    assert bound_reading(stream) is stream

    class Lookalike:
        """A class named and placed like anyio's, whose receive() does not resume reading."""

        _transport: Any = None

        async def receive(self) -> bytes:
            return b""

    Lookalike.__module__ = "anyio._backends._asyncio"
    lookalike = Lookalike()
    paused: list[bool] = []
    lookalike._transport = type(
        "T",
        (),
        {"is_reading": lambda self: True, "pause_reading": lambda self: paused.append(True)},
    )()
    bound_reading(lookalike)
    assert not paused  # its receive() would never resume: not paused, as before
    assert first_read_nowait(lookalike) is None  # its receive() does not pop a read queue


@pytest.mark.anyio
async def test_bound_reading_pauses_an_accepted_asyncio_stream(anyio_backend: str) -> None:
    """After the handshake, the read queue is bounded on asyncio (nothing to do on trio), and a
    receive() still gets every byte."""
    with anyio.fail_after(TIMEOUT):
        async with await socket_listener() as inner:
            port = inner.extra(SocketAttribute.local_port)
            async with await anyio.connect_tcp(HOST, port) as client:
                await client.send(HEADER + b"first")
                transport = await inner.accept()
                proxied = await pp.ProxiedStream.wrap(transport)
                async with proxied:
                    protocol: Any = getattr(transport, "_protocol", None)
                    if anyio_backend == "asyncio":
                        assert isinstance(protocol.read_queue, _BoundedQueue)
                    got = b""
                    while len(got) < len(b"firstsecond"):
                        if got == b"first":
                            await client.send(b"second")
                        got += await proxied.receive()
                    assert got == b"firstsecond"


@pytest.mark.anyio
async def test_the_first_read_takes_what_is_queued_then_the_socket_in_order(
    anyio_backend: str,
) -> None:
    """The handshake's first read on asyncio, without waiting: the chunks anyio's protocol has
    queued, then the socket's bytes, then nothing; receive() goes on in order after it. trio's
    streams read the socket themselves: nothing to do there."""
    with anyio.fail_after(TIMEOUT):
        async with await socket_listener() as inner:
            port = inner.extra(SocketAttribute.local_port)
            async with await anyio.connect_tcp(HOST, port) as client:
                transport = await inner.accept()
                async with transport:
                    read = first_read_nowait(transport)
                    if anyio_backend == "trio":
                        assert read is None
                        return
                    assert read is not None
                    assert read() is None  # nothing sent yet
                    protocol: Any = getattr(transport, "_protocol", None)
                    await client.send(b"queued")
                    while not protocol.read_queue:  # the transport reads it
                        await anyio.sleep(0.01)
                    await client.send(b"in the socket")
                    fd = transport.extra(SocketAttribute.raw_socket).fileno()
                    select.select([fd], [], [], TIMEOUT)  # arrived (select takes nothing)
                    assert read() == b"queued"
                    assert read() == b"in the socket"
                    assert read() is None
                    await client.send(b"later")
                    assert await transport.receive() == b"later"


def test_the_bounded_queue_pauses_above_high_water_and_resumes_at_low_water() -> None:
    calls: list[str] = []
    reading = [True]

    def pause() -> None:
        calls.append("pause")
        reading[0] = False

    def resume() -> None:
        calls.append("resume")
        reading[0] = True

    class Transport:
        def is_reading(self) -> bool:
            return reading[0]

        def pause_reading(self) -> None:
            pause()

        def resume_reading(self) -> None:
            resume()

    protocol = type("Protocol", (), {"is_at_eof": False})()
    queue = _BoundedQueue(deque([b"x" * 10]), protocol, Transport())
    chunk = b"y" * (HIGH_WATER // 4)
    while reading[0]:
        queue.append(chunk)  # what data_received() does
    assert calls == ["pause"]
    assert HIGH_WATER < queue.size <= HIGH_WATER + len(chunk)
    while queue.size > LOW_WATER:
        assert calls == ["pause"]
        queue.popleft()  # what receive() does
    assert calls == ["pause", "resume"]
    taken = queue.popleft()
    queue.appendleft(taken[:5])  # receive() giving back what max_bytes left over
    assert queue.size == sum(map(len, queue))
    protocol.is_at_eof = True
    reading[0] = False
    while queue:
        queue.popleft()
    assert calls == ["pause", "resume"]  # never resumed at EOF


def test_hypercorn_workers_survive_running_out_of_descriptors(
    certificates: tuple[ssl.SSLContext, str, str],
) -> None:
    """``proxyproto hypercorn --workers 2`` on asyncio with TLS: a worker that ran out of
    descriptors used to die, and the supervisor then stopped the whole server."""
    pytest.importorskip("hypercorn")
    context, certfile, keyfile = certificates
    command = [*PROXYPROTO, "hypercorn", "asgi_client_app:app", "--bind", f"{HOST}:0"]
    command += ["--workers", "2", "--worker-class", "asyncio"]
    # The idle connections must outlive the time it takes to run the workers out of descriptors
    # on a loaded machine (as the echo test's): a 5 s header timeout refused them first.
    command += ["--header-timeout", "60"]
    command += ["--certfile", certfile, "--keyfile", keyfile]

    with launch(command, nofile=NOFILE, group=True) as server:
        survives_exhaustion(server, ask_https(context, until=b"}"), b"200", OUR_WARNING)
