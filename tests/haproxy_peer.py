"""Run a real HAProxy on loopback, for tests and for the capture script in ``tests/vectors``.

``HAProxy(config)`` is a plain synchronous context manager: it writes ``config`` (the proxy
sections: ``listen`` / ``frontend`` / ``backend``) after a fixed ``global`` and ``defaults``
preamble into a fresh temporary directory, checks it with ``haproxy -c``, starts ``haproxy -f cfg
-db`` in the foreground as the current user, waits until HAProxy accepts connections and stops it
on exit (SIGTERM, then SIGKILL after a timeout).

Readiness is probed on an extra frontend that the helper adds itself and that rejects every
connection at once, so probing never opens a connection to one of the caller's backends (in TCP
mode HAProxy connects to the server as soon as a client connects, which would otherwise show up as
a spurious PROXY header at the backend). HAProxy binds every listener before it accepts on any, so
once the probe frontend answers, all the caller's ``bind`` lines are live.

Only loopback: every ``bind``, ``server`` and ``addr`` address in the configuration must be a
literal loopback IP (127.0.0.0/8 or ::1) or a UNIX socket path, otherwise ``ValueError`` is raised
before anything runs. ``user``, ``group``, ``chroot``, ``daemon`` and ``log`` directives are refused
too (``log stderr ...`` / ``log stdout ...`` excepted): HAProxy runs as the current user, in the
foreground, and writes its messages to stderr, which the helper collects (``HAProxy.output()``)
and puts into every error it raises.

A pytest fixture can use it like this::

    @pytest.fixture
    def haproxy_v2(backend_port: int) -> Iterator[tuple[str, int]]:
        port = free_port()
        config = f'''
    listen fe
        bind {hostport("127.0.0.1", port)}
        server be {hostport("127.0.0.1", backend_port)} send-proxy-v2
    '''
        with HAProxy(config):
            yield ("127.0.0.1", port)
"""

from __future__ import annotations

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

__all__ = [
    "HAProxy",
    "HAProxyError",
    "check_loopback_only",
    "find_haproxy",
    "free_port",
    "haproxy_version",
    "hostport",
    "wait_for_port",
]

DEFAULT_STARTUP_TIMEOUT = 10.0
DEFAULT_STOP_TIMEOUT = 5.0

_PREAMBLE = """\
global
    maxconn 64
    nbthread 1

defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    timeout check 2s

frontend _proxyproto_ready
    bind {ready}
    tcp-request connection reject
"""

_FORBIDDEN_DIRECTIVES = frozenset({"user", "group", "uid", "gid", "chroot", "daemon", "log"})
_FALLBACK_PATHS = ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")


class HAProxyError(RuntimeError):
    """HAProxy is missing, rejected its configuration, died, or did not become ready."""


def find_haproxy() -> str | None:
    """Return the path of the haproxy binary, or None when it is not installed."""
    found = shutil.which("haproxy")
    if found:
        return found
    for candidate in _FALLBACK_PATHS:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def haproxy_version(binary: str | None = None) -> str:
    """Return the version string of the haproxy binary, e.g. ``"2.6.12-1+deb12u4"``."""
    binary = binary or find_haproxy()
    if binary is None:
        raise HAProxyError("haproxy is not installed")
    out = subprocess.run(
        [binary, "-v"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    # "HAProxy version 2.6.12-1+deb12u4 2023/... - https://haproxy.org/"
    words = out.split()
    for i, word in enumerate(words[:-1]):
        if word == "version":
            return words[i + 1]
    raise HAProxyError(f"cannot read the version from {out!r}")


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on the loopback address ``host`` right now.

    The port is found by binding port 0 and closing the socket again, so another process could in
    theory take it before HAProxy binds it; on a test machine that race is negligible.
    """
    _require_loopback_ip(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def hostport(host: str, port: int) -> str:
    """Format an address the way HAProxy's ``bind`` and ``server`` lines accept it."""
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


def check_loopback_only(config: str) -> None:
    """Raise ValueError unless every address in ``config`` is loopback or a UNIX socket path.

    Also refuses the directives that would make HAProxy leave the current user, daemonize or log
    elsewhere than stderr.
    """
    for lineno, raw in enumerate(config.splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        keyword = words[0]
        where = f"line {lineno}: {raw.strip()!r}"
        if keyword == "log" and words[1:2] in (["stderr"], ["stdout"]):
            continue
        if keyword in _FORBIDDEN_DIRECTIVES:
            raise ValueError(f"{where}: {keyword!r} is not allowed in a test configuration")
        addresses: list[str] = []
        if keyword == "bind":
            addresses += words[1:2]
        if keyword == "server":
            addresses += words[2:3]
        if keyword in ("server", "default-server"):
            addresses += [words[i + 1] for i, w in enumerate(words[:-1]) if w == "addr"]
        for address in addresses:
            for part in address.split(","):
                try:
                    _require_loopback_address(part)
                except ValueError as exc:
                    raise ValueError(f"{where}: {exc}") from None


def _require_loopback_address(address: str) -> None:
    if address.startswith(("unix@", "/")):
        return
    for prefix in ("ipv4@", "ipv6@"):
        address = address.removeprefix(prefix)
    if address.startswith("["):
        host = address[1:].partition("]")[0]
    elif address.count(":") == 1:
        host = address.partition(":")[0]
    else:
        host = address.rpartition(":")[0] if ":" in address else address
    _require_loopback_ip(host)


def _require_loopback_ip(host: str) -> None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not a literal IP address (loopback only)") from None
    if not ip.is_loopback:
        raise ValueError(f"{host!r} is not a loopback address")


class HAProxy:
    """A foreground HAProxy running ``config`` on loopback, as a context manager.

    ``config`` holds the proxy sections only; the ``global`` and ``defaults`` sections come from
    the helper (TCP mode, short timeouts, ``maxconn 64``, one thread). ``wait_for`` optionally
    names extra ``(host, port)`` pairs that must accept connections before ``__enter__`` returns;
    beware that connecting to a TCP-mode frontend makes HAProxy connect to its server.
    """

    def __init__(
        self,
        config: str,
        *,
        wait_for: tuple[tuple[str, int], ...] = (),
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        binary: str | None = None,
    ) -> None:
        check_loopback_only(config)
        self.config = config
        self.wait_for = wait_for
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.binary = binary or find_haproxy()
        self.ready_port = 0
        self.workdir: Path | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._last_output = ""

    @property
    def config_path(self) -> Path:
        if self.workdir is None:
            raise HAProxyError("HAProxy is not running")
        return self.workdir / "haproxy.cfg"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def output(self) -> str:
        """Everything HAProxy wrote to stdout/stderr so far (or before it was last stopped)."""
        if self.workdir is None:
            return self._last_output
        try:
            return (self.workdir / "haproxy.out").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def full_config(self) -> str:
        return _PREAMBLE.format(ready=hostport("127.0.0.1", self.ready_port)) + "\n" + self.config

    def start(self) -> None:
        if self.binary is None:
            raise HAProxyError("haproxy is not installed (looked in PATH and /usr/sbin)")
        if self._proc is not None:
            raise HAProxyError("HAProxy is already running")
        self._tmp = tempfile.TemporaryDirectory(prefix="proxyproto-haproxy-")
        self.workdir = Path(self._tmp.name)
        self.ready_port = free_port("127.0.0.1")
        self.config_path.write_text(self.full_config())
        try:
            self._check_config()
            with (self.workdir / "haproxy.out").open("wb") as out:
                self._proc = subprocess.Popen(
                    [self.binary, "-f", str(self.config_path), "-db"],
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

    def _check_config(self) -> None:
        assert self.binary is not None
        result = subprocess.run(
            [self.binary, "-c", "-f", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=self.startup_timeout,
            check=False,
        )
        if result.returncode != 0:
            raise HAProxyError(
                f"haproxy rejected the configuration:\n{result.stdout}{result.stderr}\n"
                f"--- configuration ---\n{self.full_config()}"
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        for host, port in (("127.0.0.1", self.ready_port), *self.wait_for):
            while True:
                if self._proc is not None and self._proc.poll() is not None:
                    raise HAProxyError(
                        f"haproxy exited with {self._proc.returncode} while starting:\n"
                        f"{self.output()}"
                    )
                try:
                    wait_for_port(host, port, timeout=0.2)
                    break
                except TimeoutError:
                    if time.monotonic() >= deadline:
                        raise HAProxyError(
                            f"haproxy did not listen on {hostport(host, port)} within "
                            f"{self.startup_timeout}s:\n{self.output()}"
                        ) from None

    def stop(self) -> None:
        """Stop HAProxy (SIGTERM, then SIGKILL) and remove the temporary directory."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=self.stop_timeout)
        finally:
            self._last_output = self.output()
            if self._tmp is not None:
                self._tmp.cleanup()
            self._tmp = None
            self.workdir = None

    def __enter__(self) -> HAProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
