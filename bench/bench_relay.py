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
from collections.abc import Iterator, Sequence
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

    async def main() -> None:
        loop = asyncio.get_running_loop()
        bulk = await loop.create_server(Bulk, HOST, 0, backlog=512)
        cps = await loop.create_server(Cps, HOST, 0, backlog=512)
        emit(
            {
                "bulk": bulk.sockets[0].getsockname()[1],
                "cps": cps.sockets[0].getsockname()[1],
                "pid": os.getpid(),
            }
        )
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

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 3 * SOCKET_TIMEOUT)
    elapsed = time.perf_counter() - start_at
    return {"cps": sum(counts) / elapsed, "connections": sum(counts), "errors": errors[:3]}


def run_client() -> int:
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "bulk":
            emit(client_bulk(cmd["port"], cmd["mib"]))
        else:
            emit(client_cps(cmd["port"], cmd["seconds"], cmd["concurrency"]))
    return 0


# ============================================================================================
# the orchestrator


class Relay:
    """``python -m proxyproto relay`` in a subprocess (optionally under cProfile)."""

    def __init__(self, backend: str, target: int, logdir: Path, profile: Path | None = None):
        self.port = free_port()
        self.log = (logdir / f"relay-{backend}-{self.port}.log").open("wb")
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
            ],
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=python_env(),
        )
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        if not select.select([fd], [], [], 30)[0] or b"listening" not in os.read(fd, 4096):
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
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
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
def haproxy(sink: dict[str, int]) -> Iterator[tuple[dict[str, int], int, str]]:
    """HAProxy in TCP mode via tests/haproxy_peer.py (loopback only, one thread)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from haproxy_peer import HAProxy, find_haproxy, haproxy_version

    if find_haproxy() is None:
        raise RuntimeError("haproxy is not installed")
    ports = {name: free_port() for name in ("bulk", "bulk2", "cps", "cps2")}
    config = HAPROXY_CONFIG.format(**ports, sink_bulk=sink["bulk"], sink_cps=sink["cps"])
    with HAProxy(config) as peer:
        proc = getattr(peer, "_proc", None)
        yield ports, (proc.pid if proc is not None else 0), haproxy_version()


def measure(args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    sink = Child(__file__, ["_sink"], timeout=COMMAND_TIMEOUT)
    client = Child(__file__, ["_client"], timeout=COMMAND_TIMEOUT)
    relays: list[Relay] = []
    failures: list[str] = []
    try:
        sink_ports = sink.read(30)
        with haproxy(sink_ports) as (hports, hpid, hversion):
            backends = [b for b in BACKENDS if b != "trio" or importlib.util.find_spec("trio")]
            sides: dict[str, dict[str, tuple[int, int]]] = {"bulk": {}, "cps": {}}
            for kind in ("bulk", "cps"):
                for backend in backends:
                    relay = Relay(backend, sink_ports[kind], logdir)
                    relays.append(relay)
                    sides[kind][backend] = (relay.port, relay.proc.pid)
                sides[kind]["haproxy"] = (hports[kind], hpid)
                sides[kind]["haproxy2"] = (hports[kind + "2"], hpid)

            def trial(kind: str, side: str) -> dict[str, Any]:
                port, pid = sides[kind][side]
                cpu0 = proc_cpu(pid)
                if kind == "bulk":
                    res: dict[str, Any] = client.call({"op": "bulk", "port": port, "mib": args.mib})
                    work = args.mib * CHUNK / 1e6
                else:
                    cmd = {"op": "cps", "port": port, "seconds": args.trial_seconds}
                    res = client.call({**cmd, "concurrency": args.concurrency})
                    work = res["connections"]
                res["relay_cpu_us"] = (proc_cpu(pid) - cpu0) * 1e6 / work if work else float("nan")
                if res["errors"]:
                    failures.append(f"{kind} {side}: {res['errors']}")
                return res

            out: dict[str, Any] = {"haproxy_version": hversion, "backends": backends}
            for kind, rounds in (("bulk", args.bulk_rounds), ("cps", args.cps_rounds)):
                names = list(sides[kind])
                rows: dict[str, list[dict[str, Any]]] = {s: [] for s in names}
                # One warm-up round; each round's order a shuffle of the one before.
                for measured, side in interleaved(rng, names, 1, rounds, carry=True):
                    res = trial(kind, side)
                    if measured:
                        rows[side].append(res)
                key = "mbps" if kind == "bulk" else "cps"
                fig = {s: [x[key] for x in rows[s]] for s in rows}
                entry: dict[str, Any] = {
                    "rounds": rounds,
                    "figure": {s: median(v) for s, v in fig.items()},
                    "relay_cpu_us": {s: median([x["relay_cpu_us"] for x in rows[s]]) for s in rows},
                }
                for side in [*backends, "haproxy2"]:
                    ratios = [a / b for a, b in zip(fig[side], fig["haproxy"], strict=True) if b]
                    entry.setdefault("ratio", {})[side] = median(ratios)
                    entry.setdefault("ratio_iqr", {})[side] = quartiles(ratios)
                out[kind] = entry
            for relay in relays:
                relay.stop()
            relays.clear()
            if args.profile_seconds > 0:
                out["profile"] = {
                    b: profile_backend(b, sink_ports, client, args, logdir) for b in backends
                }
        out["failures"] = failures
        return out
    finally:
        for relay in relays:
            relay.stop()
        client.close()
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
    print(f"HAProxy: {res['haproxy_version']} (mode tcp, nbthread 1, no splice)")
    for kind, unit, cpu_unit in (("bulk", "MB/s", "us/MB"), ("cps", "conn/s", "us/conn")):
        e = res[kind]
        title = (
            f"bulk throughput, one connection x {args.mib} MiB"
            if kind == "bulk"
            else f"connections/s: connect, {MSG_SIZE} B each way, close; {args.concurrency} at once"
        )
        print(f"\n{title} ({e['rounds']} rounds)")
        print(f"  {'relay':<18} {unit:>10}   ours/HAProxy [IQR]    relay CPU {cpu_unit}")
        for side, fig in e["figure"].items():
            cpu = e["relay_cpu_us"][side]
            if side == "haproxy":
                ratio = "(reference)"
            else:
                lo, hi = e["ratio_iqr"][side]
                ratio = f"{e['ratio'][side]:.3f} [{lo:.2f}-{hi:.2f}]"
                if side == "haproxy2":
                    ratio += " A/A" + ("" if abs(e["ratio"][side] - 1) <= AA_BAND else " (noisy)")
            label = side if side.startswith("haproxy") else f"proxyproto {side}"
            print(f"  {label:<18} {fig:>10,.0f}   {ratio:<21} {cpu:>8.1f}")
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
        "\nratio = median over rounds of (ours / HAProxy); A/A = a second HAProxy listen section /"
        f" the first (the method's noise; within +-{AA_BAND} of 1 on a quiet machine). Relay CPU:"
        " all threads of the relay process, from /proc."
    )
    if args.json:
        doc = {"config": {k: v for k, v in vars(args).items() if k != "json"}, "results": res}
        write_json(Path(args.json), doc, merge=args.json_merge, key="relay")
    return 1 if res["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
