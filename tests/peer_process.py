"""What the real-peer helpers (``haproxy_peer``, ``nginx_peer``) share: a loopback peer process.

:class:`PeerProcess` is a plain synchronous context manager around one foreground peer process:
``start`` writes the subclass's whole configuration (:meth:`PeerProcess.full_config`) into a fresh
temporary directory, has the binary check it, starts the binary in a session of its own with
stdout and stderr going to a file in that directory (:meth:`PeerProcess.output`), and waits until
it is ready; ``stop`` (and any failure in ``start``) ends it with SIGTERM, then SIGKILL after a
timeout, and removes the directory. A subclass says only what is its own: the names, the error
class, the configuration text, the check and run commands, and (when a port that accepts is not
enough) how it proves that it is ready.

The functions here (``free_port``, ``hostport``, ``wait_for_port``, ``require_loopback_ip``,
``find_binary``) are the peers' common loopback and lookup helpers.
"""

from __future__ import annotations

import abc
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import ClassVar, TypeVar

__all__ = [
    "DEFAULT_STARTUP_TIMEOUT",
    "DEFAULT_STOP_TIMEOUT",
    "PeerError",
    "PeerProcess",
    "find_binary",
    "free_port",
    "hostport",
    "require_loopback_ip",
    "wait_for_port",
]

DEFAULT_STARTUP_TIMEOUT = 10.0
DEFAULT_STOP_TIMEOUT = 5.0


class PeerError(RuntimeError):
    """A peer is missing, rejected its configuration, died, or did not become ready."""


def find_binary(name: str, fallbacks: tuple[str, ...]) -> str | None:
    """Return the path of ``name`` in PATH, else the first executable of ``fallbacks``, or None."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in fallbacks:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def require_loopback_ip(host: str) -> None:
    """Raise ValueError unless ``host`` is a literal loopback IP (127.0.0.0/8 or ::1)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not a literal IP address (loopback only)") from None
    if not ip.is_loopback:
        raise ValueError(f"{host!r} is not a loopback address")


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on the loopback address ``host`` right now.

    The port is found by binding port 0 and closing the socket again, so another process could in
    theory take it before the peer binds it; on a test machine that race is negligible.
    """
    require_loopback_ip(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def hostport(host: str, port: int) -> str:
    """Format an address the way HAProxy's ``bind`` / ``server`` and nginx's ``listen`` take it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def wait_for_port(host: str, port: int, timeout: float = DEFAULT_STARTUP_TIMEOUT) -> None:
    """Block until ``host:port`` accepts TCP connections; raise TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{hostport(host, port)} did not accept in {timeout}s") from exc
            time.sleep(0.05)


_Peer = TypeVar("_Peer", bound="PeerProcess")


class PeerProcess(abc.ABC):
    """A foreground peer process on loopback, as a context manager (see the module docs).

    ``wait_for`` names extra ``(host, port)`` pairs that must accept connections before
    ``__enter__`` returns; ``binary`` is the executable (None: not installed, ``start`` raises).
    Subclasses set the class attributes and implement :meth:`full_config`, :meth:`_check_command`
    and :meth:`_run_command`.
    """

    #: The executable's name, in messages and file names (``haproxy``).
    command: ClassVar[str]
    #: How messages about the helper's state name the peer (``HAProxy``).
    display_name: ClassVar[str]
    #: The configuration file's name in the temporary directory.
    config_name: ClassVar[str]
    #: What every failure raises.
    error: ClassVar[type[PeerError]] = PeerError

    def __init__(
        self,
        *,
        wait_for: tuple[tuple[str, int], ...],
        startup_timeout: float,
        stop_timeout: float,
        binary: str | None,
    ) -> None:
        self.wait_for = wait_for
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.binary = binary
        self.ready_port = 0
        self.workdir: Path | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._last_output = ""

    # ------------------------------------------------------------------------- what subclasses say

    @abc.abstractmethod
    def full_config(self) -> str:
        """The whole configuration file, written into the temporary directory by ``start``."""

    @abc.abstractmethod
    def _check_command(self) -> list[str]:
        """The command that only checks the configuration file."""

    @abc.abstractmethod
    def _run_command(self) -> list[str]:
        """The command that runs the peer in the foreground."""

    def _wait_ready_probe(self, deadline: float) -> None:
        """Wait until the helper's own probe listener on ``ready_port`` shows the peer is up."""
        self._wait_listening("127.0.0.1", self.ready_port, deadline)

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the peer once SIGTERM was not enough."""
        proc.kill()

    # ----------------------------------------------------------------------------- the common part

    @property
    def config_path(self) -> Path:
        if self.workdir is None:
            raise self.error(f"{self.display_name} is not running")
        return self.workdir / self.config_name

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _output_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / f"{self.command}.out"

    def output(self) -> str:
        """Everything the peer wrote to stdout/stderr so far (or before it was last stopped)."""
        if self.workdir is None:
            return self._last_output
        try:
            return self._output_path().read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _not_running(self) -> None:
        if self._proc is not None:
            raise self.error(f"{self.display_name} is already running")

    def _prepare(self) -> None:
        """Create the temporary directory, write the configuration there and check it."""
        if self.binary is None:
            raise self.error(f"{self.command} is not installed (looked in PATH and /usr/sbin)")
        self._tmp = tempfile.TemporaryDirectory(prefix=f"proxyproto-{self.command}-")
        self.workdir = Path(self._tmp.name)
        self.ready_port = free_port("127.0.0.1")
        self.config_path.write_text(self.full_config())
        result = subprocess.run(
            self._check_command(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=self.startup_timeout,
            check=False,
        )
        if result.returncode != 0:
            raise self.error(
                f"{self.command} rejected the configuration:\n{result.stdout}{result.stderr}\n"
                f"--- configuration ---\n{self.config_path.read_text()}"
            )

    def check(self) -> None:
        """Only check the configuration (nothing keeps running); raise the peer's error."""
        self._not_running()
        try:
            self._prepare()
        finally:
            self.stop()

    def start(self) -> None:
        self._not_running()
        try:
            self._prepare()
            with self._output_path().open("wb") as out:
                self._proc = subprocess.Popen(
                    self._run_command(),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                    start_new_session=True,
                )
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        self._wait_ready_probe(deadline)
        for host, port in self.wait_for:
            self._wait_listening(host, port, deadline)

    def _wait_listening(self, host: str, port: int, deadline: float) -> None:
        while True:
            self._check_alive()
            try:
                wait_for_port(host, port, timeout=0.2)
                return
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise self.error(
                        f"{self.command} did not listen on {hostport(host, port)} within "
                        f"{self.startup_timeout}s:\n{self.output()}"
                    ) from None

    def _check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise self.error(
                f"{self.command} exited with {self._proc.returncode} while starting:\n"
                f"{self.output()}"
            )

    def stop(self) -> None:
        """Stop the peer (SIGTERM, then SIGKILL) and remove the temporary directory."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    self._kill(proc)
                    proc.wait(timeout=self.stop_timeout)
        finally:
            self._last_output = self.output()
            if self._tmp is not None:
                self._tmp.cleanup()
            self._tmp = None
            self.workdir = None

    def __enter__(self: _Peer) -> _Peer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
