"""Under attack: a peer that never reads, running out of descriptors, a slowloris flood.

Run ``python bench/bench_attacks.py`` (``nox -s bench`` does). The servers are child processes:
``tests/attack_server.py`` (the attack tests' server: the anyio listener on either backend,
native trio, plain anyio beside them, Hypercorn and Uvicorn) and ``python -m proxyproto echo`` /
``relay``. Everything runs on 127.0.0.1. No timing assertions: it prints, and exits 0.

* **non-reading peer**: an echo server whose client sends (header and bytes in one segment) as
  fast as it can and never reads; the client stops when a ``send()`` stalls for a second or
  after ``--cap`` MiB. Figures: MiB the client pushed, and the server's peak RSS (VmHWM), the
  worst of ``--tries`` runs (3), ours beside plain anyio on the same backend, as a ratio; the
  relay (``--accept-proxy``, a target that never reads) beside the same plain figure. Plain
  anyio on asyncio is a race: unbounded when its first ``receive()`` finds bytes queued (as a
  handshake's does behind a proxy), bounded when it has to wait; hence the worst of a few.
* **descriptors**: each server under ``RLIMIT_NOFILE`` ``--nofile`` (256): idle connections until
  it logs that ``accept()`` failed, one more client waiting in the backlog, the idle ones closed;
  "yes" when the waiting client and then a new one are served by the same living process.
* **flood**: ``--slow`` slow senders (each sends ``PROXY`` and then a byte every second, and
  reconnects when closed) against ``max_pending_handshakes=--slots``, while ``--prompt`` real
  clients connect one after another and send their header in two segments (20 ms apart).
  Figures: prompt clients served (their reply within ``header_timeout``, 5 s), p50/p90 latency
  from connect to reply, bytes the server logged during the run, server CPU seconds / wall
  seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import queue
import resource
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from _harness import HOST, add_output_options, machine, wait_or_kill, write_json

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the attack clients, shared with tests/test_attacks.py
import attack_clients as clients  # noqa: E402
from attack_clients import HEADER, TIMEOUT, MiB  # noqa: E402

SERVER = str(ROOT / "tests" / "attack_server.py")


def env() -> dict[str, str]:
    """The children's environment: ./src on the path when proxyproto is not installed."""
    result = dict(os.environ, PYTHONUNBUFFERED="1")
    import importlib.util

    if importlib.util.find_spec("proxyproto") is None:
        result["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT / "src"), result.get("PYTHONPATH")])
        )
    return result


class Server:
    """A child server: its listening address, its stderr counted (and kept as lines)."""

    def __init__(
        self, command: list[str], *, nofile: int = 0, extra_env: dict[str, str] | None = None
    ) -> None:
        def limit() -> None:
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=limit if nofile else None,
            env={**env(), **(extra_env or {})},
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log_bytes = 0
        self._stdout: queue.Queue[str | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self._stdout, False)),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.lines, True)),
        ]
        for thread in self._threads:
            thread.daemon = True
            thread.start()
        line = self._stdout.get(timeout=TIMEOUT)
        if line is None or not line.startswith("listening on "):
            self.close()
            raise RuntimeError(f"{command}: did not start: {line!r}")
        host, _, port = line.removeprefix("listening on ").split(", ")[0].rpartition(":")
        self.address = (host, int(port))

    def _read(self, pipe: Any, lines: queue.Queue[str | None], count: bool) -> None:
        for raw in pipe:
            if count:
                self.log_bytes += len(raw)
            lines.put(raw.decode(errors="replace").rstrip("\n"))
        lines.put(None)

    def saw(self, text: str, wait: float) -> bool:
        while True:
            try:
                line = self.lines.get(timeout=wait)
            except queue.Empty:
                return False
            if line is None:
                return False
            if text in line:
                return True
            wait = 0.0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def peak_rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return -1

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            wait_or_kill(self.proc, 5)
        for thread in self._threads:
            thread.join(5)


@contextlib.contextmanager
def running(command: list[str], **kwargs: Any) -> Iterator[Server]:
    server = Server(command, **kwargs)
    try:
        yield server
    finally:
        server.close()


# ============================================================================================
# non-reading peer


def non_reading(cap: int, tries: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for backend in ("asyncio", "trio"):
        figures: dict[str, list[tuple[int, int]]] = {}
        for _ in range(tries):
            for kind in (f"plain-{backend}", f"anyio-{backend}"):
                with running([sys.executable, SERVER, kind, "0"]) as server:
                    prefix = HEADER if kind.startswith("anyio") else b""
                    with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
                        pushed = clients.push_until_blocked(sock, prefix, cap)
                        figures.setdefault(kind, []).append((pushed, server.peak_rss()))
            with clients.sink_target() as (target, _):
                relay = [sys.executable, "-m", "proxyproto", "relay", "--listen", f"{HOST}:0"]
                relay += ["--to", f"{HOST}:{target[1]}", "--accept-proxy", "--backend", backend]
                with (
                    running(relay) as server,
                    socket.create_connection(server.address, timeout=TIMEOUT) as sock,
                ):
                    pushed = clients.push_until_blocked(sock, HEADER, cap)
                    figures.setdefault(f"relay-{backend}", []).append((pushed, server.peak_rss()))
        plain_rss = max(rss for _, rss in figures[f"plain-{backend}"])
        for name, runs in figures.items():
            rss = max(rss for _, rss in runs)
            rows.append(
                {
                    "server": name,
                    "pushed_mib": max(pushed for pushed, _ in runs) / MiB,
                    "peak_rss_mb": rss / 1e6,
                    "ratio_to_plain": rss / plain_rss if plain_rss > 0 else float("nan"),
                    "runs": [[pushed / MiB, rss / 1e6] for pushed, rss in runs],
                }
            )
    return rows


# ============================================================================================
# descriptors


def survives(
    server: Server, ask: Callable[[socket.socket], bytes], expect: bytes, limit: int, warning: str
) -> str:
    held: list[socket.socket] = []
    try:
        for _ in range(limit * 4):
            held.append(socket.create_connection(server.address, timeout=TIMEOUT))
            if server.saw(warning, 0.005 if len(held) < limit else 0.5):
                break
        else:
            return "never ran out"
        if not server.alive():
            return "no (died)"
        answer = clients.ask_when_freed(server.address, ask, held)
        if answer is None or expect not in answer:
            return "no (the waiting client was not served)" if server.alive() else "no (died)"
        with socket.create_connection(server.address, timeout=TIMEOUT) as fresh:
            if expect not in ask(fresh):
                return "no (a new client was not served)"
        return "yes" if server.alive() else "no (died)"
    except OSError as error:
        return f"no ({error})"
    finally:
        for sock in held:
            sock.close()


def descriptors(limit: int) -> list[dict[str, Any]]:
    hello, ping, http = clients.ask_hello, clients.ask_echo, clients.ask_http
    certs = certificates()
    ours, asyncio_warning = "EMFILE", "out of system resource"
    py = sys.executable
    cli = [py, "-m", "proxyproto"]
    cases: list[tuple[str, list[str], Callable[[socket.socket], bytes], bytes, str, bool]] = []
    for kind in ("anyio-asyncio", "anyio-trio", "trio"):
        cases.append(
            (f"listener {kind}", [py, SERVER, kind, str(limit)], hello, b"hello", ours, False)
        )
    for backend in ("asyncio", "trio"):
        echo = [
            *cli,
            "echo",
            "--listen",
            f"{HOST}:0",
            "--header-timeout",
            "60",
            "--backend",
            backend,
        ]
        cases.append((f"echo {backend}", echo, hello, b"client", ours, True))
    if certs is not None:
        command = [py, SERVER, "hypercorn-tls", str(limit), certs[1], certs[2]]
        https = clients.ask_https(certs[0])
        cases.append(("hypercorn asyncio tls", command, https, b"200", ours, False))
    cases.append(
        (
            "hypercorn asyncio",
            [py, SERVER, "hypercorn", str(limit)],
            http,
            b"200",
            asyncio_warning,
            False,
        )
    )
    cases.append(
        ("uvicorn", [py, SERVER, "uvicorn", str(limit)], http, b"200", asyncio_warning, False)
    )
    rows = []
    for name, command, ask, expect, warning, use_rlimit in cases:
        try:
            with running(command, nofile=limit if use_rlimit else 0) as server:
                verdict = survives(server, ask, expect, limit, warning)
        except (RuntimeError, OSError) as error:
            verdict = f"n/a ({error})"
        rows.append({"server": name, "survives": verdict})
    for backend in ("asyncio", "trio"):
        with clients.echo_target() as (target, _):
            relay = [*cli, "relay", "--listen", f"{HOST}:0", "--to", f"{HOST}:{target[1]}"]
            with running([*relay, "--backend", backend], nofile=limit) as server:
                verdict = survives(server, ping, b"ping", limit, ours)
        rows.append({"server": f"relay {backend}", "survives": verdict})
    return rows


def certificates() -> tuple[ssl.SSLContext, str, str] | None:
    import importlib.util
    import tempfile

    if importlib.util.find_spec("trustme") is None:
        return None

    return clients.certificates(Path(tempfile.mkdtemp(prefix="bench-attacks-")))


# ============================================================================================
# flood


async def flood_run(
    address: tuple[str, int], slow: int, prompt: int, warmup: float
) -> dict[str, Any]:
    stop = asyncio.Event()
    connected = [0]

    async def slow_sender() -> None:
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(*address)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            connected[0] += 1
            try:
                writer.write(b"PROXY")
                while not stop.is_set():
                    await asyncio.sleep(1.0)
                    if reader.at_eof():
                        break
                    writer.write(b" ")
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.close()

    latencies: list[float] = []

    async def prompt_client() -> None:
        start = time.perf_counter()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 5.0)
            try:
                writer.write(HEADER[:10])
                await asyncio.sleep(0.02)
                writer.write(HEADER[10:])
                line = await asyncio.wait_for(reader.readline(), 5.0)
                if line.startswith(b"hello"):
                    latencies.append(time.perf_counter() - start)
            finally:
                writer.close()
        except (OSError, asyncio.TimeoutError):
            pass

    senders = [asyncio.ensure_future(slow_sender()) for _ in range(slow)]
    await asyncio.sleep(warmup)
    prompts = []
    for _ in range(prompt):
        prompts.append(asyncio.ensure_future(prompt_client()))
        await asyncio.sleep(0.05)
    await asyncio.gather(*prompts)
    stop.set()
    for task in senders:
        task.cancel()
    await asyncio.gather(*senders, return_exceptions=True)
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "served": len(latencies),
        "prompt": prompt,
        "p50_ms": statistics.median(ordered) * 1000 if ordered else float("nan"),
        "p90_ms": pct(0.9),
        "slow_connections": connected[0],
    }


def flood(slow: int, slots: int, prompt: int, warmup: float) -> list[dict[str, Any]]:
    rows = []
    extra = {"ATTACK_MAX_PENDING": str(slots), "ATTACK_HEADER_TIMEOUT": "5"}
    for kind in ("anyio-asyncio", "anyio-trio", "trio"):
        with running([sys.executable, SERVER, kind, "0"], extra_env=extra) as server:
            log_start, cpu_start, wall_start = server.log_bytes, server.cpu(), time.monotonic()
            figures = asyncio.run(flood_run(server.address, slow, prompt, warmup))
            cpu = server.cpu() - cpu_start
            wall = time.monotonic() - wall_start
            figures.update(
                server=kind,
                log_bytes=server.log_bytes - log_start,
                cpu_share=cpu / wall,
                seconds=wall,
            )
            rows.append(figures)
    return rows


# ============================================================================================


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> None:
    """``rows`` under a header line: the server, then ``columns`` (key, title, format)."""
    columns = [("server", "server", ""), *columns]

    def cell(row: dict[str, Any], key: str, fmt: str) -> str:
        value = row.get(key, "")
        return format(value, fmt) if fmt and isinstance(value, (int, float)) else str(value)

    grid = [[title for _, title, _ in columns]]
    grid += [[cell(row, key, fmt) for key, _, fmt in columns] for row in rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(columns))]
    for line in grid:
        print("  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)))
    print()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_output_options(parser, "attacks")
    parser.add_argument("--cap", type=int, help="MiB a non-reading peer pushes at most (1024)")
    parser.add_argument("--tries", type=int, help="runs per non-reading server (3, quick 1)")
    parser.add_argument("--nofile", type=int, default=256, help="descriptor limit (256)")
    parser.add_argument("--slow", type=int, default=640, help="slow senders (640)")
    parser.add_argument("--slots", type=int, default=64, help="max_pending_handshakes (64)")
    parser.add_argument("--prompt", type=int, default=50, help="prompt clients (50)")
    parser.add_argument("--warmup", type=float, default=3.0, help="flood seconds before (3)")
    parser.add_argument("--repeats", type=int, help=argparse.SUPPRESS)  # nox passes these on
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cap = (args.cap or (128 if args.quick else 1024)) * MiB
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))

    print(
        f"== a peer that never reads (echo; the client stops at a 1 s stall or {cap // MiB} MiB;"
        " the worst run)"
    )
    reading = non_reading(cap, args.tries or (1 if args.quick else 3))
    table(
        reading,
        [
            ("pushed_mib", "pushed MiB", ".1f"),
            ("peak_rss_mb", "peak RSS MB", ".1f"),
            ("ratio_to_plain", "/ plain same backend", ".2f"),
        ],
    )
    print(f"== out of descriptors (RLIMIT_NOFILE {args.nofile}): survives, serves the next client")
    fds = descriptors(args.nofile)
    table(fds, [("survives", "survives", "")])
    slow = 64 if args.quick else args.slow
    prompt = 10 if args.quick else args.prompt
    print(
        f"== flood: {slow} slow senders, max_pending_handshakes={args.slots}, {prompt} prompt"
        " clients (header in two segments)"
    )
    floods = flood(slow, args.slots, prompt, 1.0 if args.quick else args.warmup)
    table(
        floods,
        [
            ("served", "served", "d"),
            ("p50_ms", "p50 ms", ".1f"),
            ("p90_ms", "p90 ms", ".1f"),
            ("log_bytes", "log bytes", "d"),
            ("cpu_share", "server CPU", ".0%"),
            ("slow_connections", "slow conns", "d"),
        ],
    )
    if args.json:
        doc = {
            "machine": machine(),
            "non_reading": reading,
            "descriptors": fds,
            "flood": floods,
        }
        write_json(Path(args.json), doc, merge=args.json_merge, key="attacks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
