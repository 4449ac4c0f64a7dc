"""Run a real nginx on loopback, for the interop tests.

``Nginx(stream=..., http=...)`` is a plain synchronous context manager, like
:class:`haproxy_peer.HAProxy`: it writes a whole configuration into a fresh temporary directory —
a fixed main section (the stream module, the pid file, ``error_log stderr``, one worker), then
``stream { ... }`` around ``stream`` and, when given, ``http { ... }`` around ``http`` — checks it
with ``nginx -t``, starts ``nginx -p <dir>/ -c <dir>/nginx.conf -e stderr -g 'daemon off;'`` in
the foreground and in a session of its own, waits until a worker answers, and stops it on exit
(SIGTERM, then SIGKILL to its whole process group after a timeout). The pid file, the error log
(collected from stderr: :meth:`Nginx.output`) and the ``http`` temporary paths all live in that
directory, which is removed afterwards. That running part is :class:`peer_process.PeerProcess`,
shared with ``haproxy_peer``; this module adds what is nginx's.

nginx runs as the current user: when that is root, the helper writes ``user root <group>;``
so that the workers do not switch to ``nobody`` (nginx ignores ``user`` for anyone else).

Readiness is probed on an extra ``stream`` server that the helper adds itself and that answers
``ready`` and closes; it reaches no upstream, so probing never shows up at one of the caller's
backends (a ``proxy_pass`` server connects upstream as soon as a client connects). The master binds
every ``listen`` before it starts a worker, so once the probe server answers, all the caller's
servers are live.

Only loopback: every ``listen`` address, every ``*_pass`` target and every ``server`` in an
``upstream`` block must be a literal loopback IP (127.0.0.0/8, ``[::1]``) with its port, a
``unix:`` path, or (for ``*_pass``) the name of an ``upstream`` defined in the configuration;
otherwise ``ValueError`` is raised before anything runs. A bare port (``listen 8080``) listens on
every address and is refused too, as are targets built from variables, ``resolver``, ``include``,
``load_module``, ``user``, ``daemon``, ``master_process``, ``pid``, ``error_log``,
``working_directory``, ``env`` and ``lock_file``, and an ``access_log`` that is not ``off`` or a
relative path (relative paths land in the temporary directory).

A test uses it like this::

    port = free_port()
    stream = f'''
        server {{
            listen {hostport("127.0.0.1", port)} proxy_protocol;
            return "$proxy_protocol_addr $proxy_protocol_port\\n";
        }}
    '''
    with Nginx(stream=stream):
        ...  # connect to 127.0.0.1:port, send a PROXY header, read the answer
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import re
import signal
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

from peer_process import (
    DEFAULT_STARTUP_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    PeerError,
    PeerProcess,
    find_binary,
    hostport,
    require_loopback_ip,
)

__all__ = [
    "MIN_VERSION_V2",
    "Nginx",
    "NginxError",
    "check_loopback_only",
    "find_nginx",
    "nginx_version",
    "stream_module_path",
    "stream_problem",
]

#: The first nginx that reads PROXY protocol v2 headers (``listen ... proxy_protocol``).
MIN_VERSION_V2 = (1, 13, 11)
#: The first nginx with ``-e`` (the startup error log, before the configuration is read).
_MIN_VERSION_E = (1, 19, 5)

_FALLBACK_PATHS = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
_FALLBACK_MODULES_PATH = "/usr/lib/nginx/modules"
_STREAM_MODULE = "ngx_stream_module.so"
_READY_ANSWER = b"ready\n"

_FORBIDDEN_DIRECTIVES = frozenset(
    {
        "user",
        "daemon",
        "master_process",
        "pid",
        "error_log",
        "include",
        "load_module",
        "env",
        "working_directory",
        "lock_file",
        "resolver",
    }
)
_PASS_DIRECTIVES = frozenset(
    {"proxy_pass", "fastcgi_pass", "uwsgi_pass", "scgi_pass", "grpc_pass", "memcached_pass"}
)
_HTTP_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


class NginxError(PeerError):
    """nginx is missing, rejected its configuration, died, or did not become ready."""


def find_nginx() -> str | None:
    """Return the path of the nginx binary, or None when it is not installed."""
    return find_binary("nginx", _FALLBACK_PATHS)


@functools.cache
def _run_version(binary: str, flag: str) -> str:
    result = subprocess.run([binary, flag], capture_output=True, text=True, check=True, timeout=10)
    return result.stderr + result.stdout  # nginx writes -v / -V to stderr


def nginx_version(binary: str | None = None) -> str:
    """Return the version of the nginx binary, e.g. ``"1.22.1"``."""
    binary = binary or find_nginx()
    if binary is None:
        raise NginxError("nginx is not installed")
    out = _run_version(binary, "-v")
    # "nginx version: nginx/1.22.1"
    match = re.search(r"nginx/(\d+(?:\.\d+)+)", out)
    if match is None:
        raise NginxError(f"cannot read the version from {out!r}")
    return match.group(1)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def stream_module_path(binary: str | None = None) -> Path | None:
    """The stream module to ``load_module``, or None when nginx has it built in.

    :raises NginxError: nginx has no stream module, built in or as a file (Debian: install
        ``libnginx-mod-stream``).
    """
    binary = binary or find_nginx()
    if binary is None:
        raise NginxError("nginx is not installed")
    configure = _run_version(binary, "-V")
    if re.search(r"--with-stream(\s|$)", configure):
        return None
    match = re.search(r"--modules-path=(\S+)", configure)
    modules = Path(match.group(1) if match else _FALLBACK_MODULES_PATH)
    module = modules / _STREAM_MODULE
    if module.is_file():
        return module
    raise NginxError(f"nginx has no stream module: {module} is missing")


def stream_problem(binary: str, *, min_version: tuple[int, ...] = MIN_VERSION_V2) -> str | None:
    """Why this nginx cannot run the stream tests, or None when it can.

    Checks the version, finds the stream module and makes nginx load it (``nginx -t``).
    """
    try:
        version = nginx_version(binary)
        if _version_tuple(version) < min_version:
            wanted = ".".join(map(str, min_version))
            return f"nginx {version} is too old (the tests need {wanted} or later)"
        Nginx(binary=binary).check()
    except (NginxError, OSError, subprocess.SubprocessError) as exc:
        return str(exc).splitlines()[0]
    return None


# --------------------------------------------------------------------------- configuration check


def _tokens(config: str) -> Iterator[tuple[int, str]]:
    """nginx's tokens with their line numbers: words (quotes removed), ``;``, ``{`` and ``}``."""
    i, line, n = 0, 1, len(config)
    while i < n:
        char = config[i]
        if char == "\n":
            line += 1
            i += 1
        elif char.isspace():
            i += 1
        elif char == "#":
            while i < n and config[i] != "\n":
                i += 1
        elif char in ";{}":
            yield line, char
            i += 1
        elif char in "\"'":
            start_line, word = line, []
            i += 1
            while i < n and config[i] != char:
                if config[i] == "\\" and i + 1 < n:
                    i += 1
                if config[i] == "\n":
                    line += 1
                word.append(config[i])
                i += 1
            if i >= n:
                raise ValueError(f"line {start_line}: unterminated quoted string")
            i += 1
            yield start_line, "".join(word)
        else:
            start = i
            while i < n and not config[i].isspace() and config[i] not in ";{}\"'":
                if config[i] == "$" and config[i + 1 : i + 2] == "{":
                    closing = config.find("}", i)
                    i = n if closing < 0 else closing
                i += 1
            yield line, config[start:i]


def _directives(config: str) -> Iterator[tuple[tuple[str, ...], int, list[str]]]:
    """Every simple directive: the enclosing blocks' names, its line and its words."""
    blocks: list[str] = []
    words: list[str] = []
    line = 1
    for token_line, token in _tokens(config):
        if not words:
            line = token_line
        if token == ";":
            if words:
                yield tuple(blocks), line, words
            words = []
        elif token == "{":
            if not words:
                raise ValueError(f"line {token_line}: a block without a name")
            blocks.append(words[0])
            words = []
        elif token == "}":
            if words or not blocks:
                raise ValueError(f"line {token_line}: unexpected '}}'")
            blocks.pop()
        else:
            words.append(token)
    if words or blocks:
        raise ValueError("the configuration ends inside a directive or block")


def _upstream_names(config: str) -> set[str]:
    names: set[str] = set()
    previous: list[str] = []
    for _, token in _tokens(config):
        if token == "{" and len(previous) == 2 and previous[0] == "upstream":
            names.add(previous[1])
        previous = [] if token in ";{}" else [*previous, token]
    return names


def _require_loopback_address(address: str, *, port_required: bool) -> None:
    """``[v6]:port``, ``v4:port`` (or without port when allowed) on loopback, or ``unix:``."""
    if address.startswith("unix:"):
        return
    if "$" in address:
        raise ValueError(f"{address!r} is built from variables: it cannot be checked")
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest.removeprefix(":") if rest.startswith(":") else None
    elif address.count(":") == 1:
        host, _, port = address.partition(":")
    elif ":" in address:
        raise ValueError(f"{address!r}: an IPv6 address must be in brackets")
    elif address.isdigit() or address == "*":
        raise ValueError(f"{address!r} listens on every address (loopback only)")
    else:
        host, port = address, None
    if port is None and port_required:
        raise ValueError(f"{address!r} has no port")
    if port is not None and not port.isdigit():
        raise ValueError(f"{address!r} has no valid port")
    require_loopback_ip(host)


def _pass_target(value: str) -> str:
    """The address part of a ``*_pass`` value: no scheme, no URI path."""
    if "://" in value:
        value = value.split("://", 1)[1]
    if value.startswith("unix:"):
        return value
    return value.split("/", 1)[0]


def check_loopback_only(config: str) -> None:
    """Raise ValueError unless every address in ``config`` is loopback (see the module docs).

    Also refuses the directives that would make nginx leave the current user, daemonize, write
    outside its temporary directory, read other files or resolve names.
    """
    upstreams = _upstream_names(config)
    for blocks, line, words in _directives(config):
        keyword, args = words[0], words[1:]
        where = f"line {line}: {' '.join(words)!r}"
        try:
            if keyword in _FORBIDDEN_DIRECTIVES:
                raise ValueError(f"{keyword!r} is not allowed in a test configuration")
            if keyword == "access_log" and args and args[0] != "off":
                target = args[0]
                if target.startswith(("/", "syslog:")) or ".." in Path(target).parts:
                    raise ValueError("access_log must be 'off' or a relative path")
            if keyword == "listen":
                if not args:
                    raise ValueError("listen without an address")
                _require_loopback_address(args[0], port_required=False)
            if keyword in _PASS_DIRECTIVES:
                if not args:
                    raise ValueError(f"{keyword} without a target")
                target = _pass_target(args[0])
                if target not in upstreams:
                    _require_loopback_address(target, port_required="stream" in blocks)
            if keyword == "server" and blocks and blocks[-1] == "upstream":
                if not args:
                    raise ValueError("server without an address")
                _require_loopback_address(args[0], port_required="stream" in blocks)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None


# --------------------------------------------------------------------------------- the runner


def _indent(block: str) -> str:
    return textwrap.indent(textwrap.dedent(block).strip("\n"), "    ")


def _quote(path: Path) -> str:
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


class Nginx(PeerProcess):
    """A foreground nginx running ``stream`` (and ``http``) on loopback, as a context manager.

    ``stream`` and ``http`` are the insides of the ``stream {}`` and ``http {}`` blocks (servers,
    upstreams, ``log_format`` ...); the main section comes from the helper. ``wait_for`` names
    extra ``(host, port)`` pairs that must accept connections before ``__enter__`` returns
    (beware: connecting to a ``proxy_pass`` server makes nginx connect upstream). The stream
    module is loaded when it is not built in (:func:`stream_module_path`).
    """

    command = "nginx"
    display_name = "nginx"
    config_name = "nginx.conf"
    error = NginxError

    def __init__(
        self,
        *,
        stream: str = "",
        http: str | None = None,
        wait_for: tuple[tuple[str, int], ...] = (),
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        binary: str | None = None,
        log_level: str = "info",
    ) -> None:
        check_loopback_only(f"stream {{ {stream}\n}}")  # same line numbers
        if http is not None:
            check_loopback_only(f"http {{ {http}\n}}")
        super().__init__(
            wait_for=wait_for,
            startup_timeout=startup_timeout,
            stop_timeout=stop_timeout,
            binary=binary or find_nginx(),
        )
        self.stream = stream
        self.http = http
        self.log_level = log_level

    def full_config(self) -> str:
        if self.workdir is None or self.binary is None:
            raise NginxError("nginx is not set up")
        workdir = self.workdir
        module = stream_module_path(self.binary)
        lines = ["# written by tests/nginx_peer.py"]
        if module is not None:
            lines.append(f"load_module {_quote(module)};")
        if os.geteuid() == 0:
            user = pwd.getpwuid(os.geteuid()).pw_name
            group = grp.getgrgid(os.getegid()).gr_name
            lines.append(f"user {user} {group};")
        lines += [
            "worker_processes 1;",
            f"pid {_quote(workdir / 'nginx.pid')};",
            f"error_log stderr {self.log_level};",
            "events {",
            "    worker_connections 256;",
            "}",
            "stream {",
            "    server {",
            f"        listen {hostport('127.0.0.1', self.ready_port)};",
            '        return "ready\\n";',
            "    }",
            _indent(self.stream),
            "}",
        ]
        if self.http is not None:
            lines += ["http {", "    access_log off;"]
            lines += [
                f"    {name}_temp_path {_quote(workdir / (name + '_temp'))};"
                for name in _HTTP_TEMP_PATHS
            ]
            lines += [_indent(self.http), "}"]
        return "\n".join(lines) + "\n"

    def _command(self, *extra: str) -> list[str]:
        assert self.binary is not None
        assert self.workdir is not None
        command = [self.binary, "-p", f"{self.workdir}/", "-c", str(self.config_path)]
        if _version_tuple(nginx_version(self.binary)) >= _MIN_VERSION_E:
            command += ["-e", "stderr"]
        return [*command, *extra]

    def _check_command(self) -> list[str]:
        return self._command("-t", "-q")

    def _run_command(self) -> list[str]:
        return self._command("-g", "daemon off;")

    def _probe(self) -> bool:
        """True once a worker answered the helper's own ``ready`` server."""
        try:
            with socket.create_connection(("127.0.0.1", self.ready_port), timeout=0.5) as sock:
                answer = b""
                while len(answer) < len(_READY_ANSWER):
                    chunk = sock.recv(64)
                    if not chunk:
                        break
                    answer += chunk
                return answer == _READY_ANSWER
        except OSError:
            return False

    def _wait_ready_probe(self, deadline: float) -> None:
        """Wait until a worker answers ``ready``: the master's listening socket is not enough."""
        while not self._probe():
            self._check_alive()
            if time.monotonic() >= deadline:
                raise NginxError(
                    f"nginx did not answer on {hostport('127.0.0.1', self.ready_port)} within "
                    f"{self.startup_timeout}s:\n{self.output()}"
                )
            time.sleep(0.02)

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the whole process group (SIGTERM, a fast shutdown, went to the master only)."""
        # The master and its workers share the session (and group) it leads.
        os.killpg(proc.pid, signal.SIGKILL)
