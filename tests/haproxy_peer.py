"""Run a real HAProxy on loopback, for tests and for the capture script in ``tests/vectors``.

``HAProxy(config)`` is a plain synchronous context manager: it writes ``config`` (the proxy
sections: ``listen`` / ``frontend`` / ``backend``) after a fixed ``global`` and ``defaults``
preamble into a fresh temporary directory, checks it with ``haproxy -c``, starts ``haproxy -f cfg
-db`` in the foreground as the current user, waits until HAProxy accepts connections and stops it
on exit (SIGTERM, then SIGKILL after a timeout). That running part is
:class:`peer_process.PeerProcess`, shared with ``nginx_peer``; this module adds what is HAProxy's.

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

import subprocess

from peer_process import (
    DEFAULT_STARTUP_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    PeerError,
    PeerProcess,
    find_binary,
    free_port,
    hostport,
    require_loopback_ip,
    wait_for_port,
)

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


class HAProxyError(PeerError):
    """HAProxy is missing, rejected its configuration, died, or did not become ready."""


def find_haproxy() -> str | None:
    """Return the path of the haproxy binary, or None when it is not installed."""
    return find_binary("haproxy", _FALLBACK_PATHS)


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
    require_loopback_ip(host)


class HAProxy(PeerProcess):
    """A foreground HAProxy running ``config`` on loopback, as a context manager.

    ``config`` holds the proxy sections only; the ``global`` and ``defaults`` sections come from
    the helper (TCP mode, short timeouts, ``maxconn 64``, one thread). ``wait_for`` optionally
    names extra ``(host, port)`` pairs that must accept connections before ``__enter__`` returns;
    beware that connecting to a TCP-mode frontend makes HAProxy connect to its server.
    """

    command = "haproxy"
    display_name = "HAProxy"
    config_name = "haproxy.cfg"
    error = HAProxyError

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
        super().__init__(
            wait_for=wait_for,
            startup_timeout=startup_timeout,
            stop_timeout=stop_timeout,
            binary=binary or find_haproxy(),
        )
        self.config = config

    def full_config(self) -> str:
        return _PREAMBLE.format(ready=hostport("127.0.0.1", self.ready_port)) + "\n" + self.config

    def _check_command(self) -> list[str]:
        assert self.binary is not None
        return [self.binary, "-c", "-f", str(self.config_path)]

    def _run_command(self) -> list[str]:
        assert self.binary is not None
        return [self.binary, "-f", str(self.config_path), "-db"]
