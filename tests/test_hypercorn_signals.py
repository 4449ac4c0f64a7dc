"""SIGTERM and Ctrl-C: ``proxyproto hypercorn`` and ``proxyproto.hypercorn.serve`` end as plain
Hypercorn does, each checked against plain Hypercorn in the same test.

Each test runs the plain server and ours one after the other, on both workers (asyncio and
trio): the command lines ``hypercorn`` and ``proxyproto hypercorn`` with ``--workers 1`` and
``--workers 2``, and a script calling ``hypercorn.{asyncio,trio}.serve`` or
``proxyproto.hypercorn.serve`` with no shutdown trigger. A slow request (``/slow``, a second)
is under way when the signal comes: SIGTERM to the main process, as a service manager sends it,
or SIGINT to the whole process group, as Ctrl-C in a terminal does. What is compared: the exit
status, whether the slow request got its answer (a graceful shutdown), and that nothing printed
a traceback.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

import pytest

from cli_process import PROXYPROTO, TIMEOUT, reader
from haproxy_peer import free_port

pytest.importorskip("hypercorn")

TESTS = Path(__file__).parent
SLOW = b"GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
HEADER = b"PROXY TCP4 203.0.113.9 198.51.100.10 51234 443\r\n"
WORKER_CLASSES = [
    "asyncio",
    pytest.param(
        "trio",
        marks=pytest.mark.skipif(find_spec("trio") is None, reason="trio is not installed"),
    ),
]

#: ``python -c SERVE plain|ours asyncio|trio PORT``: serve() with no shutdown trigger.
SERVE = """
import sys
from hypercorn.config import Config
from signals_app import app

server, library, port = sys.argv[1:]
config = Config()
config.bind = [f"127.0.0.1:{port}"]
config.graceful_timeout = 10
if server == "plain":
    import importlib
    serve = importlib.import_module(f"hypercorn.{library}").serve
else:
    from proxyproto.hypercorn import serve
if library == "trio":
    import trio
    trio.run(serve, app, config)
else:
    import asyncio
    asyncio.run(serve(app, config))
"""


@dataclass(frozen=True)
class Outcome:
    status: int
    answered: bool
    traceback: bool
    #: The last lines of stderr, for the failure message only.
    stderr: str = field(default="", compare=False)


def command(surface: str, server: str, worker_class: str, port: int) -> list[str]:
    if surface == "serve":
        return [sys.executable, "-c", SERVE, server, worker_class, str(port)]
    workers = surface.removeprefix("workers-")
    program = (
        [*PROXYPROTO, "hypercorn"] if server == "ours" else [sys.executable, "-m", "hypercorn"]
    )
    return [
        *program,
        "signals_app:app",
        *("--bind", f"127.0.0.1:{port}", "--worker-class", worker_class),
        *("--workers", workers, "--graceful-timeout", "10"),
    ]


def connect(port: int) -> socket.socket:
    """A connection to the server on ``port``, once it listens (within :data:`TIMEOUT`)."""
    for _ in range(int(TIMEOUT * 10)):
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        except ConnectionRefusedError:
            with contextlib.suppress(subprocess.TimeoutExpired):
                PROCESS.wait(0.1)  # the caller's process; set by run()
            assert PROCESS.poll() is None, "the server exited at startup"
    raise AssertionError("the server did not listen")


PROCESS: subprocess.Popen[str]


def run(surface: str, server: str, worker_class: str, signum: int, tmp_path: Path) -> Outcome:
    """Start the server, send a slow request, signal it once the request runs: the outcome."""
    global PROCESS
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    stderr_path = tmp_path / f"{server}-stderr.txt"
    with stderr_path.open("w") as stderr:
        PROCESS = process = subprocess.Popen(
            command(surface, server, worker_class, port),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            cwd=TESTS,
            start_new_session=True,  # its own process group: Ctrl-C is SIGINT to the group
        )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    thread = reader(process.stdout, lines)
    try:
        with connect(port) as sock:
            sock.sendall((HEADER if server == "ours" else b"") + SLOW)
            while lines.get(timeout=TIMEOUT) != "slow request started":
                pass
            if signum == signal.SIGINT:
                os.killpg(process.pid, signal.SIGINT)
            else:
                process.send_signal(signum)
            data = b""
            with contextlib.suppress(ConnectionError):
                while chunk := sock.recv(65536):
                    data += chunk
        status = process.wait(TIMEOUT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(TIMEOUT)
        thread.join(TIMEOUT)
        process.stdout.close()
    text = stderr_path.read_text()
    answered = data.startswith(b"HTTP/1.1 200")
    return Outcome(status, answered, "Traceback" in text, text[-1500:])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "ctrl-c"])
@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
@pytest.mark.parametrize("surface", ["workers-1", "workers-2", "serve"])
def test_signals_end_ours_as_they_end_plain_hypercorn(
    surface: str, worker_class: str, signum: int, tmp_path: Path
) -> None:
    plain = run(surface, "plain", worker_class, signum, tmp_path)
    ours = run(surface, "ours", worker_class, signum, tmp_path)
    compared = f"plain: {plain}\nours: {ours}"
    assert (ours.status, ours.traceback) == (plain.status, plain.traceback), compared
    if surface == "serve" and worker_class == "trio" and signum == signal.SIGTERM:
        # hypercorn.trio.serve installs no SIGTERM handler: Python's default ends the process.
        assert ours == plain == Outcome(-signal.SIGTERM, answered=False, traceback=False), compared
    else:
        assert ours == Outcome(0, answered=True, traceback=False), compared
        if surface != "workers-2":
            # Plain Hypercorn's parent terminates every worker as soon as one has exited, so
            # with two its in-flight request is lost; ours waits for each worker's graceful end.
            assert plain == ours, compared
