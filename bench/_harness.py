"""What the benchmark scripts share: child processes spoken to in JSON lines, the interleaved
rounds, median and IQR, the machine description and ``--json`` / ``--json-merge``.

Imported as a sibling module (``import _harness``): the scripts run as ``python bench/x.py``, so
``bench/`` is on ``sys.path``, as for ``peers``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import random
import select
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
SRC = Path(__file__).resolve().parents[1] / "src"
SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


# ============================================================================================
# inside the children


def emit(obj: Any) -> None:
    """One JSON line on stdout: a child's answer."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def v2_header(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """A v2 PROXY header for TCP over IPv4, built by hand (independent of proxyproto)."""
    body = (
        socket.inet_aton(source[0])
        + socket.inet_aton(destination[0])
        + struct.pack("!HH", source[1], destination[1])
    )
    return SIGNATURE + b"\x21\x11" + struct.pack("!H", len(body)) + body


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def use_src() -> str:
    """Put ``./src`` on ``sys.path`` when proxyproto is not installed; say so (or ``""``)."""
    if importlib.util.find_spec("proxyproto") is None and (SRC / "proxyproto").is_dir():
        sys.path.insert(0, str(SRC))
        return " (not installed: imported from ./src)"
    return ""


# ============================================================================================
# the orchestrator


class Child:
    """A subprocess of ``script`` spoken to with JSON lines; it exits on EOF of its stdin.

    ``timeout`` bounds every answer unless a call says otherwise; :meth:`close` waits
    ``close_wait`` seconds for it to exit before killing it.
    """

    def __init__(
        self, script: str, argv: list[str], *, timeout: float, close_wait: float = 10
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(script).resolve()), *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.argv = list(argv)
        self.timeout = timeout
        self.close_wait = close_wait
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, obj: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def read(self, timeout: float | None = None) -> Any:
        timeout = self.timeout if timeout is None else timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise RuntimeError(f"subprocess {self.argv} did not answer in {timeout}s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"subprocess {self.argv} exited ({self.proc.poll()})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def call(self, obj: Any, timeout: float | None = None) -> Any:
        self.send(obj)
        return self.read(timeout)

    def close(self, message: Any = None) -> None:
        """Ask it to stop (``message``, then EOF on stdin); kill it if it does not."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                if message is not None:
                    self.send(message)
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            wait_or_kill(self.proc, self.close_wait)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def wait_or_kill(proc: subprocess.Popen[Any], timeout: float) -> None:
    """Wait ``timeout`` seconds for ``proc`` to end, then kill it (and wait as long again)."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def callgrind_total(
    command: list[str], out: Path, drive: Any, stop: bool = True, timeout: float = 300
) -> int:
    """Instructions of ``command`` (a Python process) run under ``valgrind --tool=callgrind``
    while ``drive()`` loads it; then SIGTERM (with ``stop``) and the total callgrind collected."""
    import re
    import signal

    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        drive(server)
        if stop:
            server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=timeout)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    match = re.search(rb"Collected : (\d+)", err)
    if match is None:
        raise RuntimeError(f"no total from callgrind:\n{err.decode()[-2000:]}")
    return int(match.group(1))


def per_connection_counts(
    name: str, sides: Sequence[str], small: int, large: int, total: Any
) -> dict[str, float]:
    """Instructions per unit for each side, ``(total(side, large) - total(side, small)) /
    (large - small)``, printed as they come, then the ratio pp / plain when both were counted."""
    per: dict[str, float] = {}
    for side in sides:
        per[side] = (total(side, large) - total(side, small)) / (large - small)
        print(f"  {name:<14} {side:<6} {per[side]:>12,.0f}", flush=True)
    if "pp" in per and "plain" in per:
        print(
            f"  {name:<14} pp/plain {per['pp'] / per['plain']:.3f}"
            f"  (+{per['pp'] - per['plain']:,.0f})",
            flush=True,
        )
    return per


def connect_when_up(
    port: int, server: subprocess.Popen[Any], what: str, timeout: float = 300
) -> socket.socket:
    """A connection to ``port`` once the server under valgrind listens (it starts slowly)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection((HOST, port), timeout=30)
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"{what}: server did not start") from None
            time.sleep(0.5)


def interleaved(
    rng: random.Random, sides: Sequence[str], warmup: int, rounds: int, *, carry: bool = False
) -> Iterator[tuple[bool, str]]:
    """``(measured, side)``: ``warmup`` then ``rounds`` rounds, each side once per round in a
    random order. The order is a shuffle of ``sides``, or with ``carry`` of the round before."""
    order = list(sides)
    for number in range(warmup + rounds):
        if not carry:
            order = list(sides)
        rng.shuffle(order)
        for side in order:
            yield number >= warmup, side


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        v = values[0] if values else float("nan")
        return v, v
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def add_output_options(parser: argparse.ArgumentParser, key: str) -> None:
    """``--quick``, ``--json PATH`` and ``--json-merge`` (under ``key``)."""
    parser.add_argument("--quick", action="store_true", help="few short rounds (a smoke test)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument(
        "--json-merge",
        action="store_true",
        help=f"with --json: add the figures under the key {key!r} of the JSON already there",
    )


def machine() -> dict[str, Any]:
    """The head of every ``--json`` document: which Python on what."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
    }


def write_json(path: Path, doc: dict[str, Any], *, merge: bool, key: str) -> None:
    """Write ``doc`` to ``path``; with ``merge``, under ``key`` of the JSON object already there
    (what bench_core.py wrote a moment before, under nox)."""
    if merge and path.exists():
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            existing = None
        if isinstance(existing, dict):
            existing[key] = doc
            doc = existing
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
