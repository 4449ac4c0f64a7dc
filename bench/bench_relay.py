"""Benchmark ``proxyproto relay`` against HAProxy in TCP mode, relaying the same traffic.

Run ``python bench/bench_relay.py`` (``nox -s bench`` does; needs ``haproxy`` on ``PATH`` or in
/usr/sbin, and ``trio`` for the trio backend). See ``bench/README.md`` for the method. One sink
process (asyncio protocols) serves both measurements; in front of it, all up at once:
``proxyproto relay --backend asyncio``, ``proxyproto relay --backend trio`` (one process per
measurement each, subprocesses as an operator runs them) and one HAProxy (``mode tcp``,
``nbthread 1``) with two ``listen`` sections per measurement (the second one is the A/A check).

* bulk throughput: one connection sends N MiB (512 by default), the sink counts it and answers
  the count through the relay; MB/s.
* connections/s: connect, 100 B up, 100 B down, close; 8 client connections at once.

Interleaved rounds in a random order; ratio ours / HAProxy is the median of per-round ratios.
Then each backend's relay runs briefly under cProfile and the functions it spends its time in
are printed: that is where the gap comes from. Everything runs on 127.0.0.1; no timing
assertions: exits 0, or 1 when a check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import pstats
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from _harness import (
    HOST,
    Child,
    add_output_options,
    emit,
    free_port,
    interleaved,
    median,
    quartiles,
    wait_or_kill,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
MSG_SIZE = 100
COMMAND_TIMEOUT = 120.0
SOCKET_TIMEOUT = 10.0
AA_BAND = 0.1
BACKENDS = ("asyncio", "trio")
CHUNK = 1 << 20


def proc_cpu(pid: int) -> float:
    """CPU seconds of every thread of a process (sum of /proc/PID/task/*/schedstat)."""
    total = 0
    for path in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(path.read_text().split()[0])
    return total / 1e9


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its descendants (``--workers``: the parent and its workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        # schedstat: precise, but for live threads only; stat's ticks count the exited ones
        # too (the client's threads of a finished trial).
        total += max(proc_cpu(current), stat_cpu(current))
        todo.extend(children.get(current, ()))
    return total


def stat_cpu(pid: int) -> float:
    """CPU seconds of a process, exited threads included (utime + stime of /proc/PID/stat)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def python_env() -> dict[str, str]:
    """The environment for ``python -m proxyproto``: ./src on the path if not installed."""
    env = dict(os.environ)
    if importlib.util.find_spec("proxyproto") is None:
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")])
        )
    return env


# ============================================================================================
# the sink process: asyncio protocols, one listener per measurement


def run_sink() -> int:
    import asyncio

    class Bulk(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.total = 0

        def data_received(self, data: bytes) -> None:
            self.total += len(data)

        def eof_received(self) -> bool:
            self.transport.write(struct.pack("!Q", self.total))
            self.transport.close()
            return True

    class Cps(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.got = 0

        def data_received(self, data: bytes) -> None:
            self.got += len(data)
            if self.got >= MSG_SIZE:
                self.transport.write(b"r" * MSG_SIZE)
                self.transport.close()

        def eof_received(self) -> bool:
            self.transport.close()
            return True

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.transport.sendto(data, addr)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        bulk = await loop.create_server(Bulk, HOST, 0, backlog=512)
        cps = await loop.create_server(Cps, HOST, 0, backlog=512)
        udp, _ = await loop.create_datagram_endpoint(Echo, local_addr=(HOST, 0))
        emit(
            {
                "bulk": bulk.sockets[0].getsockname()[1],
                "cps": cps.sockets[0].getsockname()[1],
                "udp": udp.get_extra_info("sockname")[1],
                "pid": os.getpid(),
            }
        )
        await loop.run_in_executor(None, lambda: [None for _ in sys.stdin.buffer])

    asyncio.run(main())
    return 0


def run_udp_forwarder(port: int, target: int) -> int:
    """A plain asyncio UDP forwarder, one process, the UDP reference: per client address one
    connected upstream socket, replies sent back from the listening socket; no header, no log,
    no idle expiry, no bound. What any Python UDP relay costs at least."""
    import asyncio

    async def main() -> None:
        loop = asyncio.get_running_loop()
        flows: dict[Any, Any] = {}
        opening: set[asyncio.Task[None]] = set()

        class Upstream(asyncio.DatagramProtocol):
            def __init__(self, front: Any, client: Any) -> None:
                self.front, self.client = front, client

            def datagram_received(self, data: bytes, addr: Any) -> None:
                self.front.sendto(data, self.client)

        class Front(asyncio.DatagramProtocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: Any) -> None:
                flow = flows.get(addr)
                if flow is None:
                    flows[addr] = pending = [data]
                    task = loop.create_task(self.open(addr, pending))
                    opening.add(task)
                    task.add_done_callback(opening.discard)
                elif isinstance(flow, list):
                    flow.append(data)
                else:
                    flow.sendto(data)

            async def open(self, addr: Any, pending: list[bytes]) -> None:
                upstream, _ = await loop.create_datagram_endpoint(
                    lambda: Upstream(self.transport, addr), remote_addr=(HOST, target)
                )
                flows[addr] = upstream
                for data in pending:
                    upstream.sendto(data)

        await loop.create_datagram_endpoint(Front, local_addr=(HOST, port))
        emit({"port": port, "pid": os.getpid()})
        await loop.run_in_executor(None, lambda: [None for _ in sys.stdin.buffer])

    asyncio.run(main())
    return 0


def run_profiled(path: str, relay_args: list[str]) -> int:
    """``python -m proxyproto relay ...`` with cProfile on from SIGUSR1 to SIGUSR2 (dumped)."""
    import cProfile
    import runpy

    prof = cProfile.Profile()

    def dump(*_: Any) -> None:
        prof.disable()
        prof.dump_stats(path)

    signal.signal(signal.SIGUSR1, lambda *_: prof.enable())
    signal.signal(signal.SIGUSR2, dump)
    sys.argv = ["proxyproto", *relay_args]
    try:
        runpy.run_module("proxyproto", run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


# ============================================================================================
# the client process: blocking sockets


def client_bulk(port: int, mib: int) -> dict[str, Any]:
    payload = memoryview(b"x" * CHUNK)
    t0 = time.perf_counter()
    with socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT) as sock:
        for _ in range(mib):
            sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        got = b""
        while len(got) < 8:
            chunk = sock.recv(8 - len(got))
            if not chunk:
                break
            got += chunk
    elapsed = time.perf_counter() - t0
    count = struct.unpack("!Q", got)[0] if len(got) == 8 else -1
    errors = [] if count == mib * CHUNK else [f"sink counted {count}, sent {mib * CHUNK}"]
    return {"mbps": mib * CHUNK / 1e6 / elapsed, "seconds": elapsed, "errors": errors}


def run_threads(
    worker: Callable[[int], None], count: int, seconds: float, start_at: float
) -> float:
    """Run ``worker(0) ... worker(count - 1)`` in threads for a trial; its length in seconds."""
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 3 * SOCKET_TIMEOUT)
    return time.perf_counter() - start_at


def client_cps(port: int, seconds: float, concurrency: int) -> dict[str, Any]:
    counts = [0] * concurrency
    errors: list[str] = []
    request = b"q" * MSG_SIZE
    start_at = time.perf_counter() + 0.02
    stop_at = start_at + seconds

    def worker(i: int) -> None:
        n = 0
        while time.perf_counter() < start_at:
            pass
        try:
            while time.perf_counter() < stop_at:
                with socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT) as sock:
                    sock.sendall(request)
                    got = 0
                    while got < MSG_SIZE:
                        chunk = sock.recv(4096)
                        if not chunk:
                            raise OSError(f"EOF after {got} bytes of the reply")
                        got += len(chunk)
                n += 1
        except OSError as error:
            errors.append(repr(error))
        counts[i] = n

    elapsed = run_threads(worker, concurrency, seconds, start_at)
    return {"cps": sum(counts) / elapsed, "connections": sum(counts), "errors": errors[:3]}


def client_udp(port: int, seconds: float, concurrency: int) -> dict[str, Any]:
    """``concurrency`` clients (a socket each), each sending a datagram and awaiting its echo;
    round trips/s. A datagram lost (no echo in 1 s) is counted and the client goes on."""
    counts = [0] * concurrency
    lost = [0] * concurrency
    request = b"u" * MSG_SIZE
    start_at = time.perf_counter() + 0.02
    stop_at = start_at + seconds
    errors: list[str] = []

    def worker(i: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1.0)
            sock.connect((HOST, port))
            while time.perf_counter() < start_at:
                pass
            try:
                while time.perf_counter() < stop_at:
                    sock.send(request)
                    try:
                        sock.recv(65536)
                    except TimeoutError:
                        lost[i] += 1
                        continue
                    counts[i] += 1
            except OSError as error:
                errors.append(repr(error))

    elapsed = run_threads(worker, concurrency, seconds, start_at)
    if sum(lost) > sum(counts) // 100:
        errors.append(f"{sum(lost)} of {sum(counts) + sum(lost)} datagrams lost")
    return {"dps": sum(counts) / elapsed, "connections": sum(counts), "errors": errors[:3]}


def run_client() -> int:
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "bulk":
            emit(client_bulk(cmd["port"], cmd["mib"]))
        elif cmd["op"] == "udp":
            emit(client_udp(cmd["port"], cmd["seconds"], cmd["concurrency"]))
        else:
            emit(client_cps(cmd["port"], cmd["seconds"], cmd["concurrency"]))
    return 0


# ============================================================================================
# the orchestrator


class Relay:
    """``python -m proxyproto relay`` in a subprocess (optionally under cProfile)."""

    def __init__(
        self,
        backend: str,
        target: int,
        logdir: Path,
        profile: Path | None = None,
        *,
        workers: int = 1,
        udp: bool = False,
    ):
        self.port = free_port()
        self.log = (logdir / f"relay-{backend}-{self.port}.log").open("wb")
        extra = [*(["--workers", str(workers)] if workers > 1 else []), *(["--udp"] if udp else [])]
        self.profile = profile
        prefix = [str(Path(__file__).resolve()), "_profiled", str(profile)] if profile else []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                *(prefix or ["-m", "proxyproto"]),
                "relay",
                "--listen",
                f"{HOST}:{self.port}",
                "--to",
                f"{HOST}:{target}",
                "--backend",
                backend,
                "--grace",
                "2",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=python_env(),
        )
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        if not select.select([fd], [], [], 60)[0] or b"listening" not in os.read(fd, 4096):
            self.stop()
            raise RuntimeError(f"relay {backend} did not start; see {self.log.name}")
        if profile:
            self.proc.send_signal(signal.SIGUSR1)  # start profiling: startup is left out
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            if self.profile:
                self.proc.send_signal(signal.SIGUSR2)
                deadline = time.monotonic() + 10
                while not self.profile.exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(0.2)
            self.proc.send_signal(signal.SIGINT)
            wait_or_kill(self.proc, 15)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


HAPROXY_CONFIG = """
listen bulk
    bind 127.0.0.1:{bulk}
    server sink 127.0.0.1:{sink_bulk}
listen bulk2
    bind 127.0.0.1:{bulk2}
    server sink 127.0.0.1:{sink_bulk}
listen cps
    bind 127.0.0.1:{cps}
    server sink 127.0.0.1:{sink_cps}
listen cps2
    bind 127.0.0.1:{cps2}
    server sink 127.0.0.1:{sink_cps}
"""


@contextlib.contextmanager
def haproxy(sink: dict[str, int], threads: int = 1) -> Iterator[tuple[dict[str, int], int, str]]:
    """HAProxy in TCP mode via tests/haproxy_peer.py (loopback only), ``nbthread threads``
    (2: the peer of ``relay --workers 2``)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from haproxy_peer import HAProxy, find_haproxy, haproxy_version

    if find_haproxy() is None:
        raise RuntimeError("haproxy is not installed")

    class Threaded(HAProxy):  # type: ignore[misc]  # haproxy_peer is found at run time
        def full_config(self) -> str:
            config: str = super().full_config()
            return config.replace("nbthread 1", f"nbthread {threads}", 1).replace(
                "maxconn 64", f"maxconn {64 * threads}", 1
            )

    ports = {name: free_port() for name in ("bulk", "bulk2", "cps", "cps2")}
    config = HAPROXY_CONFIG.format(**ports, sink_bulk=sink["bulk"], sink_cps=sink["cps"])
    with Threaded(config) as peer:
        proc = getattr(peer, "_proc", None)
        yield ports, (proc.pid if proc is not None else 0), haproxy_version()


#: Per measurement: the reference side (the ratios' denominator) and its A/A twin.
REFERENCE = {
    "bulk": ("haproxy", "haproxy2"),
    "cps": ("haproxy", "haproxy2"),
    "cpsw": ("haproxy-nbthread2", "haproxy-nbthread2b"),
    "udp": ("python-forwarder", "python-forwarder2"),
}


def measure(args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    sink = Child(__file__, ["_sink"], timeout=COMMAND_TIMEOUT)
    # Two client processes: the multi-core measurements (cpsw, udp) load with both at once, so
    # that one client's GIL is not the bound; the others use the first.
    clients = [Child(__file__, ["_client"], timeout=COMMAND_TIMEOUT) for _ in range(2)]
    relays: list[Relay] = []
    forwarders: list[Child] = []
    failures: list[str] = []
    try:
        sink_ports = sink.read(30)
        with (
            haproxy(sink_ports) as (hports, hpid, hversion),
            haproxy(sink_ports, 2) as (tports, tpid, _),
        ):
            backends = [b for b in BACKENDS if b != "trio" or importlib.util.find_spec("trio")]
            sides: dict[str, dict[str, tuple[int, int]]] = {k: {} for k in REFERENCE}
            for kind in ("bulk", "cps"):
                for backend in backends:
                    relay = Relay(backend, sink_ports[kind], logdir)
                    relays.append(relay)
                    sides[kind][backend] = (relay.port, relay.proc.pid)
                sides[kind]["haproxy"] = (hports[kind], hpid)
                sides[kind]["haproxy2"] = (hports[kind + "2"], hpid)
            relay = Relay("asyncio", sink_ports["cps"], logdir, workers=2)
            relays.append(relay)
            sides["cpsw"]["asyncio --workers 2"] = (relay.port, relay.proc.pid)
            sides["cpsw"]["haproxy-nbthread2"] = (tports["cps"], tpid)
            sides["cpsw"]["haproxy-nbthread2b"] = (tports["cps2"], tpid)
            for workers in (1, 2):
                relay = Relay("asyncio", sink_ports["udp"], logdir, workers=workers, udp=True)
                relays.append(relay)
                name = "asyncio --udp" + (f" --workers {workers}" if workers > 1 else "")
                sides["udp"][name] = (relay.port, relay.proc.pid)
            for name in REFERENCE["udp"]:
                port = free_port()
                forwarder = Child(
                    __file__, ["_udp_forwarder", str(port), str(sink_ports["udp"])], timeout=30
                )
                forwarders.append(forwarder)
                sides["udp"][name] = (port, forwarder.read()["pid"])

            def trial(kind: str, side: str) -> dict[str, Any]:
                port, pid = sides[kind][side]
                loaders = clients if kind in ("cpsw", "udp") else clients[:1]
                watched = {"relay": [pid], "client": [c.pid for c in loaders], "sink": [sink.pid]}
                cpu0 = {who: sum(map(tree_cpu, pids)) for who, pids in watched.items()}
                t0 = time.perf_counter()
                if kind == "bulk":
                    cmd: dict[str, Any] = {"op": "bulk", "port": port, "mib": args.mib}
                else:
                    op = "udp" if kind == "udp" else "cps"
                    cmd = {"op": op, "port": port, "seconds": args.trial_seconds}
                    cmd["concurrency"] = args.concurrency
                for loader in loaders:
                    loader.send(cmd)
                parts = [loader.read() for loader in loaders]
                elapsed = time.perf_counter() - t0
                res: dict[str, Any] = {"errors": [e for part in parts for e in part["errors"]]}
                if kind == "bulk":
                    res["mbps"] = parts[0]["mbps"]
                    work = args.mib * CHUNK / 1e6
                else:
                    key = "dps" if kind == "udp" else "cps"
                    res[key] = sum(part[key] for part in parts)
                    work = sum(part["connections"] for part in parts)
                # Per process: CPU per unit of work, and the share of one core it kept busy
                # (near 1.00 per process, or the machine's cores all busy: that is the bound).
                for who, pids in watched.items():
                    used = sum(map(tree_cpu, pids)) - cpu0[who]
                    res[f"{who}_cpu_us"] = used * 1e6 / work if work else float("nan")
                    res[f"{who}_busy"] = used / elapsed if elapsed else float("nan")
                if res["errors"]:
                    failures.append(f"{kind} {side}: {res['errors'][:3]}")
                return res

            out: dict[str, Any] = {"haproxy_version": hversion, "backends": backends}
            for kind, rounds in (
                ("bulk", args.bulk_rounds),
                ("cps", args.cps_rounds),
                ("cpsw", args.cps_rounds),
                ("udp", args.cps_rounds),
            ):
                names = list(sides[kind])
                rows: dict[str, list[dict[str, Any]]] = {s: [] for s in names}
                # One warm-up round; each round's order a shuffle of the one before.
                for measured, side in interleaved(rng, names, 1, rounds, carry=True):
                    res = trial(kind, side)
                    if measured:
                        rows[side].append(res)
                key = {"bulk": "mbps", "udp": "dps"}.get(kind, "cps")
                fig = {s: [x[key] for x in rows[s]] for s in rows}
                reference, twin = REFERENCE[kind]
                entry: dict[str, Any] = {
                    "rounds": rounds,
                    "reference": reference,
                    "twin": twin,
                    "figure": {s: median(v) for s, v in fig.items()},
                }
                for who in ("relay", "client", "sink"):
                    for unit in ("cpu_us", "busy"):
                        entry[f"{who}_{unit}"] = {
                            s: median([x[f"{who}_{unit}"] for x in rows[s]]) for s in rows
                        }
                for side in names:
                    if side == reference:
                        continue
                    ratios = [a / b for a, b in zip(fig[side], fig[reference], strict=True) if b]
                    entry.setdefault("ratio", {})[side] = median(ratios)
                    entry.setdefault("ratio_iqr", {})[side] = quartiles(ratios)
                out[kind] = entry
            for relay in relays:
                relay.stop()
            relays.clear()
            if args.profile_seconds > 0:
                out["profile"] = {
                    b: profile_backend(b, sink_ports, clients[0], args, logdir) for b in backends
                }
        out["failures"] = failures
        return out
    finally:
        for relay in relays:
            relay.stop()
        for child in (*forwarders, *clients):
            child.close()
        sink.close()


def profile_backend(
    backend: str, sink: dict[str, int], client: Child, args: argparse.Namespace, logdir: Path
) -> dict[str, Any]:
    """Run bulk and cps traffic through a relay under cProfile; the top functions of each."""
    result: dict[str, Any] = {}
    for kind in ("bulk", "cps"):
        prof = logdir / f"relay-{backend}-{kind}.prof"
        relay = Relay(backend, sink[kind], logdir, profile=prof)
        try:
            if kind == "bulk":
                client.call({"op": "bulk", "port": relay.port, "mib": args.mib})
            else:
                cmd = {"op": "cps", "port": relay.port, "seconds": args.profile_seconds}
                client.call({**cmd, "concurrency": args.concurrency})
        finally:
            relay.stop()
        if not prof.exists():
            result[kind] = {"error": "no profile written"}
            continue
        stats = pstats.Stats(str(prof))
        total = stats.total_tt  # type: ignore[attr-defined]
        rows = []
        for (file, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            where = func if file == "~" else f"{short_path(file)}:{line}({func})"
            rows.append({"function": where, "calls": nc, "tottime": tt, "cumtime": ct})
        rows.sort(key=lambda r: -r["tottime"])
        layers: dict[str, float] = {}
        for (file, _line, func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            layer = layer_of(file, func)
            layers[layer] = layers.get(layer, 0.0) + tt
        result[kind] = {"total_seconds": total, "top": rows[: args.profile_top], "layers": layers}
    return result


def layer_of(file: str, func: str) -> str:
    """Which layer a profiled function belongs to (for the 'by layer' line)."""
    if file == "~":
        if "epoll" in func or "select" in func:
            return "waiting in epoll"
        if "socket" in func:
            return "socket syscalls"
        return "other builtins"
    for name in ("proxyproto", "anyio", "trio", "asyncio", "logging"):
        if f"{os.sep}{name}{os.sep}" in file:
            return name
    return "other Python"


def short_path(file: str) -> str:
    m = re.search(r"(proxyproto|anyio|trio|asyncio|selectors|socket|logging)[/\\].*|[^/\\]+$", file)
    return m.group(0) if m else file


def print_results(res: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"HAProxy: {res['haproxy_version']} (mode tcp, no splice)")
    cps_title = f"connect, {MSG_SIZE} B each way, close; {args.concurrency} at once"
    titles = {
        "bulk": (f"bulk throughput, one connection x {args.mib} MiB; HAProxy nbthread 1", "MB/s"),
        "cps": (f"connections/s: {cps_title}; one process vs HAProxy nbthread 1", "conn/s"),
        "cpsw": (
            f"connections/s: {cps_title}, from each of 2 client processes;"
            " relay --workers 2 vs HAProxy nbthread 2",
            "conn/s",
        ),
        "udp": (
            f"UDP round trips/s: {MSG_SIZE} B datagram, its echo; {args.concurrency} clients in"
            " each of 2 client processes; vs a plain asyncio UDP forwarder (HAProxy's community"
            " edition relays no UDP)",
            "dgram/s",
        ),
    }
    whos = ("relay", "client", "sink")
    for kind, (title, unit) in titles.items():
        e = res[kind]
        print(f"\n{title} ({e['rounds']} rounds)")
        print(
            f"  {'side':<30} {unit:>9}   {'ratio [IQR]':<22} CPU us/unit: relay client sink"
            "   busy (cores): relay client sink"
        )
        for side, fig in e["figure"].items():
            if side == e["reference"]:
                ratio = "(reference)"
            else:
                lo, hi = e["ratio_iqr"][side]
                ratio = f"{e['ratio'][side]:.3f} [{lo:.2f}-{hi:.2f}]"
                if side == e["twin"]:
                    ratio += " A/A" + ("" if abs(e["ratio"][side] - 1) <= AA_BAND else " (noisy)")
            label = side if side.startswith(("haproxy", "python")) else f"proxyproto {side}"
            cpu = " ".join(f"{e[f'{who}_cpu_us'][side]:7.1f}" for who in whos)
            busy = " ".join(f"{e[f'{who}_busy'][side]:5.2f}" for who in whos)
            print(f"  {label:<30} {fig:>9,.0f}   {ratio:<22} {cpu}   {busy}")
    for backend, prof in res.get("profile", {}).items():
        for kind, p in prof.items():
            print(
                f"\nwhere proxyproto relay ({backend}) spends its time, {kind} (cProfile tottime):"
            )
            if "error" in p:
                print(f"  {p['error']}")
                continue
            layers = sorted(p["layers"].items(), key=lambda kv: -kv[1])
            total = p["total_seconds"] or 1.0
            print("  by layer: " + ", ".join(f"{k} {v / total * 100:.0f}%" for k, v in layers))
            for row in p["top"]:
                share = row["tottime"] / p["total_seconds"] * 100 if p["total_seconds"] else 0
                print(f"  {share:5.1f}%  {row['calls']:>9}  {row['function']}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_sink"]:
        return run_sink()
    if argv[:1] == ["_client"]:
        return run_client()
    if argv[:1] == ["_udp_forwarder"]:
        return run_udp_forwarder(int(argv[1]), int(argv[2]))
    if argv[:1] == ["_profiled"]:
        return run_profiled(argv[1], argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_output_options(parser, "relay")
    parser.add_argument("--mib", type=int, help="MiB per bulk trial (default 512, quick 64)")
    parser.add_argument("--bulk-rounds", type=int, help="measured bulk rounds (default 7)")
    parser.add_argument("--cps-rounds", type=int, help="measured connections/s rounds (15)")
    parser.add_argument("--trial-seconds", type=float, help="length of a cps trial (0.3)")
    parser.add_argument("--concurrency", type=int, default=8, help="client connections at once")
    parser.add_argument(
        "--profile-seconds", type=float, help="cps traffic under cProfile (1; 0: off)"
    )
    parser.add_argument("--profile-top", type=int, default=12, help="functions shown per profile")
    parser.add_argument("--seed", type=int, default=20260427, help="of the trial order")
    parser.add_argument("--repeats", type=int, help=argparse.SUPPRESS)  # nox passes these on
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    q = args.quick
    args.mib = args.mib or (64 if q else 512)
    args.bulk_rounds = args.bulk_rounds or (2 if q else 7)
    args.cps_rounds = args.cps_rounds or (3 if q else 15)
    args.trial_seconds = args.trial_seconds or (0.2 if q else 0.3)
    if args.profile_seconds is None:
        args.profile_seconds = 0.5 if q else 1.0
    print(
        f"bench_relay: Python {platform.python_version()}, {os.cpu_count()} CPUs; "
        "proxyproto relay (subprocess per backend and measurement) vs HAProxy, same sink, "
        "interleaved rounds, loopback"
    )
    with tempfile.TemporaryDirectory(prefix="bench_relay.") as tmp:
        try:
            res = measure(args, Path(tmp))
        except RuntimeError as error:
            print(f"skipped: {error}")
            if args.json:
                write_json(
                    Path(args.json), {"skipped": str(error)}, merge=args.json_merge, key="relay"
                )
            return 0 if "not installed" in str(error) else 1
        print_results(res, args)
    for f in res["failures"]:
        print(f"CHECK FAILED: {f}")
    print(
        "\nratio = median over rounds of (side / reference); A/A = the reference's twin (a second"
        " HAProxy listen section, a second forwarder process) / the reference: the method's"
        f" noise, within +-{AA_BAND} of 1 on a quiet machine. CPU: every thread of the process"
        " and its children (the workers), from /proc; busy = CPU seconds per second of the"
        " trial (1.00 = one core): a process near 1.00 (one event loop, or a GIL), or all"
        " together near the machine's cores, is what bounds the figure."
    )
    if args.json:
        doc = {"config": {k: v for k, v in vars(args).items() if k != "json"}, "results": res}
        write_json(Path(args.json), doc, merge=args.json_merge, key="relay")
    return 1 if res["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
