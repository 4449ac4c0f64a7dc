"""``python -m proxyproto ...`` as a child process, for the tests that drive the command line.

:class:`CliProcess` reads the child's stdout and stderr line by line in threads (so that every read
has a timeout), parses its ``listening on 127.0.0.1:PORT`` lines, and kills it, joins the readers
and closes the pipes in :meth:`CliProcess.kill`. :func:`launch` starts one and always kills it in
a ``finally``. :class:`SessionProcess` is for commands with worker processes: a session of its
own, so that :meth:`SessionProcess.kill` ends the workers too, stderr in a file; :func:`in_session`
starts one. Every wait is bounded by :data:`TIMEOUT`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TypeVar

TESTS = Path(__file__).parent
TIMEOUT = 20.0
Address = tuple[str, int]
PROXYPROTO = (sys.executable, "-m", "proxyproto")
LISTENING = "listening on 127.0.0.1:"


#: ``python -c BLOCKED MODULES NAME ARGS...``: runs module NAME (as ``python -m NAME ARGS...``)
#: in an interpreter where importing any of the comma-separated top-level MODULES fails with
#: ModuleNotFoundError, as if they were not installed.
BLOCKED = """
import runpy, sys

blocked = set(sys.argv[1].split(","))


class NotInstalled:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled)
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def without(modules: str, *command: str) -> list[str]:
    """``python -m COMMAND...`` with the comma-separated ``modules`` not importable."""
    return [sys.executable, "-c", BLOCKED, modules, *command]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m proxyproto ARGS`` run to its end (within :data:`TIMEOUT`): its status and
    output, as text."""
    return subprocess.run(
        [*PROXYPROTO, *args], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def read_to_end(sock: socket.socket) -> bytes:
    """Everything ``sock`` receives until the server closes it (with a FIN or a reset)."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def listening_address(line: str) -> Address:
    """The address in a ``listening on 127.0.0.1:PORT`` line."""
    assert line.startswith(LISTENING), line
    [address] = listening_addresses(line)
    return address


def listening_addresses(line: str) -> list[Address]:
    """The addresses in a ``listening on HOST:PORT, [IPV6]:PORT, ...`` line, in order."""
    assert line.startswith("listening on "), line
    addresses = []
    for bound in line.removeprefix("listening on ").split(", "):
        host, _, port = bound.rpartition(":")
        addresses.append((host.removeprefix("[").removesuffix("]"), int(port)))
    return addresses


Lines = queue.Queue[str | None] | queue.Queue[str]


def read_lines(pipe: IO[bytes] | IO[str], put: Lines) -> None:
    """Put every line of ``pipe`` (without its newline) into ``put``, until EOF."""
    for line in pipe:
        put.put((line.decode() if isinstance(line, bytes) else line).rstrip("\n"))


def reader(
    pipe: IO[bytes] | IO[str], put: queue.Queue[str | None] | queue.Queue[str]
) -> threading.Thread:
    """A started daemon thread running :func:`read_lines`."""
    thread = threading.Thread(target=read_lines, args=(pipe, put), daemon=True)
    thread.start()
    return thread


class CliProcess:
    """A running ``proxyproto`` command: its stdout and stderr, line by line (``None`` at EOF)."""

    name = "proxyproto"
    #: Started in a session of its own (:func:`launch`'s ``session``).
    session = False

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.readers: list[threading.Thread] = []
        self.stdout = self._lines(process.stdout)
        self.stderr = self._lines(process.stderr)

    def _lines(self, pipe: IO[bytes] | None) -> queue.Queue[str | None]:
        """Read ``pipe`` in a thread, so that every read can have a timeout."""
        lines: queue.Queue[str | None] = queue.Queue()
        assert pipe is not None

        def read() -> None:
            read_lines(pipe, lines)
            lines.put(None)

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        self.readers.append(thread)
        return lines

    def start(self) -> None:
        """Wait for the first ``listening on`` line: ``address`` and ``port`` are the server's."""
        self.address = self.next_listening()
        self.port = self.address[1]

    def next_listening(self) -> Address:
        line = self.stdout.get(timeout=TIMEOUT)
        assert line is not None, f"{self.name} exited: {self.drain()}"
        return listening_address(line)

    def drain(self, lines: queue.Queue[str | None] | None = None) -> str:
        """What is left of ``lines`` (stderr by default), up to EOF or one quiet second."""
        lines = self.stderr if lines is None else lines
        got = []
        while True:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                break
            if line is None:
                break
            got.append(line)
        return "\n".join(got)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=TIMEOUT)

    def kill(self) -> None:
        if self.session:
            # Its own children too (worker processes): the session's process group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=TIMEOUT)
        for thread in self.readers:
            thread.join(TIMEOUT)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


P = TypeVar("P", bound=CliProcess)


@contextmanager
def launch(kind: type[P], *args: str, start: bool = True, session: bool = False) -> Iterator[P]:
    """Run ``python -m proxyproto *args`` as a ``kind``; with ``start``, wait for it to listen.

    With ``session``, in a session of its own, whose processes are all killed at the end.
    """
    process = subprocess.Popen(
        [*PROXYPROTO, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=session,
    )
    running = kind(process)
    running.session = session
    try:
        if start:
            running.start()
        yield running
    finally:
        running.kill()


class SessionProcess:
    """A running ``proxyproto`` command in a session of its own, with this folder on its
    ``PYTHONPATH`` (for ``asgi_client_app:app``): its stdout line by line, its stderr in a file.

    :meth:`start` waits for what the command prints when it is ready; a subclass adds to it.
    """

    def __init__(self, args: list[str], stderr: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
        self.stderr_path = stderr
        self._stderr = stderr.open("w")
        self.process = subprocess.Popen(
            [*PROXYPROTO, *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.process.stdout is not None
        self._reader = reader(self.process.stdout, self.lines)

    def start(self) -> None:
        """Wait for the ``listening on`` line: ``addresses``, and ``port`` the first one's."""
        self.addresses = listening_addresses(self.next_line())
        self.port = self.addresses[0][1]

    def next_line(self, timeout: float = TIMEOUT) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output; stderr: {self.stderr()}") from None

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def stop(self, signum: int = signal.SIGTERM, timeout: float = TIMEOUT) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._reader.join(10)  # EOF: every process holding the pipe is gone
        assert self.process.stdout is not None
        self.process.stdout.close()
        self._stderr.close()


S = TypeVar("S", bound=SessionProcess)


@contextmanager
def in_session(kind: type[S], tmp_path: Path, *args: str) -> Iterator[S]:
    """Run ``python -m proxyproto *args`` as a ``kind``, its stderr in ``tmp_path``; wait for it
    to start, and kill it and its session in a ``finally``."""
    running = kind(list(args), tmp_path / "stderr.txt")
    try:
        running.start()
        yield running
    finally:
        running.kill()
