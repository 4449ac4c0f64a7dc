"""Benchmark proxyproto's anyio adapter against plain anyio, on asyncio and trio.

Run ``python bench/bench_anyio.py`` (``nox -s bench`` does; ``trio`` must be installed for the
trio backend). See ``bench/README.md`` for the method. Three measurements per backend, each
against a baseline measured in the same run:

1. connections per second through ``ProxyProtocolListener`` vs the plain anyio listener
   (and plain vs plain, the A/A check that shows the method's noise); on trio, also
   ``proxyproto.trio.ProxyProtocolListener`` vs trio's own listener under
   ``trio.serve_listeners``;
2. bulk throughput through ``ProxiedStream`` vs the raw socket stream;
3. legit-client latency while ``5 x max_pending_handshakes`` idle connections are open, vs no
   flood, and the server's memory before, during and after the flood.

The servers run in a subprocess (one anyio event loop), the clients in other subprocesses
(plain blocking sockets), all on 127.0.0.1. The script only prints (and with ``--json PATH``
writes) figures; it makes no timing assertions. It exits 0, or 1 when a check failed (bytes lost,
requests that failed, a subprocess that misbehaved).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import random
import resource
import selectors
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import sniffio
from _harness import (
    Child,
    emit,
    interleaved,
    machine,
    median,
    quartiles,
    use_src,
    v2_header,
    write_json,
)
from anyio.abc import SocketAttribute

HOST = "127.0.0.1"
REQUEST_SIZE = 100
REPLY_SIZE = 100
REQUEST = b"q" * REQUEST_SIZE
REPLY = b"r" * REPLY_SIZE
#: What the client claims to be in its PROXY header (v2, PROXY, TCP over IPv4, no TLVs).
CLAIMED_SOURCE = ("203.0.113.7", 51234)

#: Bulk trial sizes (MiB): the warm-up's, and the bounds of the size chosen from it.
BULK_WARMUP_MIB = 64
BULK_MIN_MIB = 64
BULK_MAX_MIB = 4096

CPS_GOAL = 0.85
BULK_GOAL = 0.97
#: The connections-per-second measurements: anyio listeners, and on trio native trio ones.
CPS_KINDS = ("cps", "trio_cps")
AA_BAND = 0.1  # the issue: an A/A run of this method is within +-0.1

#: Seconds a subprocess may take to answer one command before it counts as hung.
COMMAND_TIMEOUT = 60.0
#: Bounds on a whole flood phase and on any connection the clients open.
FLOOD_MAX_SECONDS = 180.0
SOCKET_TIMEOUT = 10.0


def import_proxyproto() -> tuple[Any, str]:
    """Import proxyproto, from ``./src`` when it is not installed (as bench_core.py does)."""
    note = use_src()
    import proxyproto as pp

    where = getattr(pp, "__file__", None) or ", ".join(getattr(pp, "__path__", []))
    return pp, f"proxyproto {getattr(pp, '__version__', '?')} from {where}{note}"


def raise_nofile(wanted: int) -> int:
    """Raise the soft open-file limit towards ``wanted`` (at most the hard limit); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return soft


def proc_memory(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM (peak) in KiB from /proc/PID/status (empty where there is no /proc)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, every thread (from /proc; 0 where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_sched(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for a CPU) of a process's main thread.

    From /proc/PID/schedstat (ns resolution); falls back to the tick-based CPU time of
    /proc/PID/stat with no wait figure.
    """
    try:
        run, wait, _slices = Path(f"/proc/{pid}/schedstat").read_text().split()
    except (OSError, ValueError):
        return proc_cpu(pid), 0.0
    return int(run) / 1e9, int(wait) / 1e9


def pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})


# ============================================================================================
# the server process: every listener in one anyio event loop


#: Connections the server's handlers saw fail (a check: there should be none).
SERVER_ERRORS = [0]


async def cps_handler(stream: Any) -> None:
    """Read the 100-byte request, send the 100-byte reply, close. The same for every listener."""
    async with stream:
        try:
            got = 0
            while got < REQUEST_SIZE:
                got += len(await stream.receive())
            await stream.send(REPLY)
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            SERVER_ERRORS[0] += 1


async def trio_cps_handler(stream: Any) -> None:
    """``cps_handler`` for a native trio stream (``proxyproto.trio`` or trio's own)."""
    import trio

    async with stream:
        try:
            got = 0
            while got < REQUEST_SIZE:
                chunk = await stream.receive_some()
                if not chunk:
                    raise EOFError
                got += len(chunk)
            await stream.send_all(REPLY)
        except (trio.BrokenResourceError, EOFError, OSError):
            SERVER_ERRORS[0] += 1


async def bulk_handler(stream: Any) -> None:
    """Count bytes until EOF, answer the count (8 bytes), close."""
    async with stream:
        total = 0
        try:
            while True:
                total += len(await stream.receive())
        except anyio.EndOfStream:
            pass
        except (anyio.BrokenResourceError, OSError):
            SERVER_ERRORS[0] += 1
            return
        await stream.send(struct.pack("!Q", total))


async def server_main(mode: str, max_pending: int, eviction_age: float | None) -> None:
    pp, _note = import_proxyproto()
    if mode == "main":
        specs = [
            ("cps_pp", cps_handler, None),
            ("cps_plain", cps_handler, False),
            ("cps_plain2", cps_handler, False),
            ("bulk_pp", bulk_handler, None),
            ("bulk_plain", bulk_handler, False),
            ("bulk_plain2", bulk_handler, False),
        ]
    else:
        kwargs: dict[str, Any] = {"max_pending_handshakes": max_pending}
        if eviction_age is not None:
            kwargs["eviction_age"] = eviction_age
        specs = [("flood_pp", cps_handler, pp.ProxyProtocolConfig(**kwargs))]
    listeners: dict[str, Any] = {}
    for name, _handler, config in specs:
        inner = await anyio.create_tcp_listener(local_host=HOST, local_port=0)
        listeners[name] = inner if config is False else pp.ProxyProtocolListener(inner, config)
    ports = {name: lst.extra(SocketAttribute.local_port) for name, lst in listeners.items()}
    # On trio, also proxyproto.trio's native listener against trio's own, under serve_listeners.
    trio_listeners: dict[str, Any] = {}
    if mode == "main" and sniffio.current_async_library() == "trio":
        import trio

        import proxyproto.trio as pp_trio

        for side in ("pp", "plain", "plain2"):
            (inner,) = await trio.open_tcp_listeners(0, host=HOST)
            ports[f"trio_cps_{side}"] = inner.socket.getsockname()[1]
            trio_listeners[f"trio_cps_{side}"] = (
                pp_trio.ProxyProtocolListener(inner) if side == "pp" else inner
            )
    config_used = None
    for lst in listeners.values():
        if isinstance(lst, pp.ProxyProtocolListener):
            c = lst.config
            config_used = {
                "max_pending_handshakes": c.max_pending_handshakes,
                "eviction_age": getattr(c, "eviction_age", None),
                "header_timeout": c.header_timeout,
            }

    async with anyio.create_task_group() as tg:
        for (name, handler, _config), lst in zip(specs, listeners.values(), strict=True):
            tg.start_soon(lst.serve, handler, name=name)
        for name, trio_listener in trio_listeners.items():
            import trio

            tg.start_soon(trio.serve_listeners, trio_cps_handler, [trio_listener], name=name)
        emit({"ports": ports, "pid": os.getpid(), "config": config_used})
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            if not line:
                break
            command = json.loads(line)
            if command["op"] == "quit":
                break
            if command["op"] == "stats":
                stats = {}
                for name, lst in listeners.items():
                    if hasattr(lst, "statistics"):
                        s = lst.statistics()
                        stats[name] = {
                            "accepted": s.accepted,
                            "rejected": dict(s.rejected),
                            "timed_out": s.timed_out,
                            "evicted": s.evicted,
                            "in_flight": s.in_flight,
                        }
                emit({"memory": proc_memory(), "stats": stats, "handler_errors": SERVER_ERRORS[0]})
        tg.cancel_scope.cancel()
    for lst in listeners.values():
        await lst.aclose()


def run_server(args: argparse.Namespace) -> int:
    pin(args.cpu)
    raise_nofile(args.nofile)
    server_args = (server_main, args.mode, args.max_pending, args.eviction_age)
    if args.profile is None:
        anyio.run(*server_args, backend=args.backend)
        return 0
    import cProfile

    profiler = cProfile.Profile()
    try:
        profiler.runcall(anyio.run, *server_args, backend=args.backend)
    finally:
        profiler.dump_stats(args.profile)
    return 0


# ============================================================================================
# the client process: plain blocking sockets, one thread per concurrent connection


def one_request(port: int, payload: bytes) -> None:
    """Connect, send ``payload`` (header + request, or the request), read the reply, close."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(SOCKET_TIMEOUT)
        sock.connect((HOST, port))
        sock.sendall(payload)
        got = 0
        while got < REPLY_SIZE:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"EOF after {got} of {REPLY_SIZE} reply bytes")
            got += len(chunk)
    finally:
        sock.close()


def client_cps(port: int, payload: bytes, seconds: float, concurrency: int) -> dict[str, Any]:
    """As many request/reply connections as fit in ``seconds``, ``concurrency`` at a time."""
    done = [0] * concurrency
    errors = [0] * concurrency
    cap = 200_000  # per thread: a bound on the loop whatever the clock does
    deadline = time.perf_counter() + seconds

    def worker(i: int) -> None:
        while time.perf_counter() < deadline and done[i] + errors[i] < cap:
            try:
                one_request(port, payload)
                done[i] += 1
            except OSError:
                errors[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return {"conns": sum(done), "errors": sum(errors), "seconds": elapsed}


def client_bulk(port: int, prefix: bytes, total: int) -> dict[str, Any]:
    """Send ``prefix`` then ``total`` bytes as fast as possible; the server answers its count."""
    block = memoryview(os.urandom(1 << 20))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(SOCKET_TIMEOUT)
        start = time.perf_counter()
        sock.connect((HOST, port))
        sent = 0
        if prefix:  # in one write with the first block (see trials())
            sent = min(len(block), total)
            sock.sendall(prefix + block[:sent])
        while sent < total:
            n = min(len(block), total - sent)
            sock.sendall(block[:n])
            sent += n
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while len(answer) < 8:
            chunk = sock.recv(8 - len(answer))
            if not chunk:
                break
            answer += chunk
        elapsed = time.perf_counter() - start
    finally:
        sock.close()
    counted = struct.unpack("!Q", answer)[0] if len(answer) == 8 else None
    return {"bytes": total, "counted": counted, "seconds": elapsed}


def client_latency(port: int, payload: bytes, count: int, interval: float) -> dict[str, Any]:
    """Open loop: request ``i`` starts at ``i * interval`` whatever the earlier ones are doing
    (each in its own thread), so a stuck request does not hold back the ones after it."""
    results: list[tuple[bool, float, str]] = []

    def one() -> None:
        start = time.perf_counter()
        try:
            one_request(port, payload)
            results.append((True, time.perf_counter() - start, ""))
        except OSError as exc:
            elapsed = time.perf_counter() - start
            results.append((False, elapsed, f"{type(exc).__name__}: {exc} after {elapsed:.3f}s"))

    threads = []
    origin = time.perf_counter()
    for i in range(count):
        pause = origin + i * interval - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        thread = threading.Thread(target=one, daemon=True)
        thread.start()
        threads.append(thread)
    give_up = time.perf_counter() + SOCKET_TIMEOUT + 5
    for thread in threads:
        thread.join(max(0.0, give_up - time.perf_counter()))
    ok = [elapsed for good, elapsed, _ in results if good]
    failures = [why for good, _, why in results if not good]
    failures += ["no answer from the client thread"] * (count - len(results))
    return {"latencies": ok, "failures": failures, "seconds": time.perf_counter() - origin}


def run_client(args: argparse.Namespace) -> int:
    pin(args.cpu)
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "quit":
            break
        if op == "cps":
            payload = bytes.fromhex(command["payload"])
            emit(client_cps(command["port"], payload, command["seconds"], command["concurrency"]))
        elif op == "bulk":
            prefix = bytes.fromhex(command["prefix"])
            emit(client_bulk(command["port"], prefix, command["bytes"]))
        elif op == "latency":
            payload = bytes.fromhex(command["payload"])
            emit(client_latency(command["port"], payload, command["count"], command["interval"]))
        else:
            emit({"error": f"unknown op {op!r}"})
    return 0


# ============================================================================================
# the flood process: idle connections that never send a byte


def run_flood(args: argparse.Namespace) -> int:
    """Open ``--count`` idle connections; with ``--reopen``, open a new one for each one the
    server closes. Stops on "stop" (or EOF) on stdin, or after ``--max-seconds``."""
    pin(args.cpu)
    raise_nofile(args.nofile)
    address = (HOST, args.port)
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ, None)
    counts = {"opened": 0, "closed_by_server": 0, "connect_failures": 0}

    def open_one() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(2.0)
            sock.connect(address)
            sock.setblocking(False)
        except OSError:
            sock.close()
            counts["connect_failures"] += 1
            return
        sel.register(sock, selectors.EVENT_READ, sock)
        counts["opened"] += 1

    started = time.monotonic()
    end = started + args.max_seconds
    for _ in range(args.count):
        if time.monotonic() > end:
            break
        open_one()
    emit({"ready": len(sel.get_map()) - 1, "seconds": time.monotonic() - started, **counts})
    stop = False
    while not stop and time.monotonic() < end:
        for key, _events in sel.select(timeout=0.1):
            if key.data is None:  # the parent: "stop", or EOF when it went away
                line = os.read(sys.stdin.fileno(), 4096)
                stop = not line or b"stop" in line
                continue
            sock = key.data
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:  # closed by the server (timed out or evicted)
                sel.unregister(sock)
                sock.close()
                counts["closed_by_server"] += 1
                if args.reopen and time.monotonic() < end:
                    open_one()
    still_open = 0
    for key in list(sel.get_map().values()):
        if key.data is not None:
            sel.unregister(key.data)
            key.data.close()
            still_open += 1
    emit({"still_open": still_open, **counts})
    return 0


# ============================================================================================
# the orchestrator


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p * len(ordered) / 100)))
    return ordered[rank - 1]


SIDES = ("pp", "plain", "plain2")


class Run:
    """One backend's measurements; every subprocess it starts is stopped by :meth:`close_all`."""

    def __init__(self, args: argparse.Namespace, backend: str, rng: random.Random) -> None:
        self.args = args
        self.backend = backend
        self.rng = rng
        self.failures: list[str] = []
        self.children: list[Child] = []

    def spawn(self, argv: list[str]) -> Child:
        child = Child(__file__, argv, timeout=COMMAND_TIMEOUT, close_wait=15)
        self.children.append(child)
        return child

    def close_all(self) -> None:
        for child in reversed(self.children):
            child.close()
        self.children.clear()

    def cpu_args(self, role: str) -> list[str]:
        cpus = self.args.cpus
        if not cpus:
            return []
        return ["--cpu", str(cpus[0] if role == "server" else cpus[-1])]

    # ---- 1 and 2: interleaved trials of ours, plain and plain again against one server process

    def trials(self, client: Child, server: Child, kind: str, ports: dict[str, int]) -> dict:
        args = self.args
        header = v2_header(CLAIMED_SOURCE, (HOST, 0))
        cps = kind in CPS_KINDS
        rounds = args.cps_trials if cps else args.bulk_trials
        # Bulk trials: fixed with --bulk-mb, else sized in the warm-up so that one lasts about
        # --bulk-seconds on the plain server (the backends differ by 4x or more).
        mib = args.bulk_mb or BULK_WARMUP_MIB
        total = mib * 2**20
        figure: dict[str, list[float]] = {side: [] for side in SIDES}
        cpu_per_unit: dict[str, list[float]] = {side: [] for side in SIDES}
        busy: dict[str, list[float]] = {side: [] for side in SIDES}
        starved: dict[str, list[float]] = {side: [] for side in SIDES}
        client_busy: dict[str, list[float]] = {side: [] for side in SIDES}
        errors = 0
        for measured, side in interleaved(self.rng, SIDES, args.warmup, rounds):
            port = ports[f"{kind}_{side}"]
            # cps: the header and the request in one write; the plain servers get the request
            # alone. bulk: every server gets the same bytes, the header in one write with the
            # first MiB; the plain ones count it as data. (Written on its own, a short first
            # segment puts about half the connections, ours or plain alike, into a slower mode
            # of the kernel's on loopback -- up to half the throughput on trio: noise that would
            # swamp the figure.)
            prefix = header if side == "pp" or not cps else b""
            expected = total if side == "pp" else total + len(prefix)
            run0, wait0 = proc_sched(server.pid)
            client0 = proc_cpu(client.pid)
            if cps:
                command = {
                    "op": "cps",
                    "port": port,
                    "payload": (prefix + REQUEST).hex(),
                    "seconds": args.trial_seconds,
                    "concurrency": args.concurrency,
                }
            else:
                command = {"op": "bulk", "port": port, "prefix": prefix.hex(), "bytes": total}
            result = client.call(command)
            run1, wait1 = proc_sched(server.pid)
            client1 = proc_cpu(client.pid)
            seconds = result["seconds"]
            if cps:
                errors += result["errors"]
                units = result["conns"]
            else:
                if result["counted"] != expected:
                    self.failures.append(
                        f"{self.backend} bulk {side}: the server counted {result['counted']} "
                        f"bytes, {expected} were sent"
                    )
                units = total / 1e6
            if not measured:
                if kind == "bulk" and side == "plain" and not args.bulk_mb:
                    rate = total / result["seconds"] / 2**20
                    mib = max(BULK_MIN_MIB, min(BULK_MAX_MIB, round(rate * args.bulk_seconds)))
                    total = mib * 2**20
                continue
            figure[side].append(units / seconds)
            cpu_per_unit[side].append((run1 - run0) / units * 1e6 if units else math.nan)
            busy[side].append((run1 - run0) / seconds)
            starved[side].append((wait1 - wait0) / seconds)
            client_busy[side].append((client1 - client0) / seconds)
        if errors:
            self.failures.append(f"{self.backend} {kind}: {errors} client connections failed")
        ratios = [a / b for a, b in zip(figure["pp"], figure["plain"], strict=True)]
        aa = [a / b for a, b in zip(figure["plain2"], figure["plain"], strict=True)]
        cpu_ratios = [a / b for a, b in zip(cpu_per_unit["pp"], cpu_per_unit["plain"], strict=True)]
        return {
            "trials": rounds,
            "mib_per_trial": None if cps else mib,
            "ours": median(figure["pp"]),
            "plain": median(figure["plain"]),
            "plain2": median(figure["plain2"]),
            "ratio": median(ratios),
            "ratio_iqr": quartiles(ratios),
            "aa_ratio": median(aa),
            "aa_iqr": quartiles(aa),
            # us of server CPU per connection (cps) or per MB (bulk), and ours / plain
            "server_cpu_us": {side: median(v) for side, v in cpu_per_unit.items()},
            "server_cpu_ratio": median(cpu_ratios),
            "server_busy": {side: median(v) for side, v in busy.items()},
            "server_waited_for_cpu": {side: median(v) for side, v in starved.items()},
            "client_busy": {side: median(v) for side, v in client_busy.items()},
            "per_trial": figure,
            "client_errors": errors,
        }

    def throughput_and_cps(self) -> dict[str, Any]:
        argv = ["_server", "--backend", self.backend, "--mode", "main", *self.cpu_args("server")]
        if self.args.profile:
            Path(self.args.profile).mkdir(parents=True, exist_ok=True)
            target = Path(self.args.profile).resolve() / f"server-{self.backend}.prof"
            argv += ["--profile", str(target)]
        server = self.spawn(argv)
        hello = server.read()
        client = self.spawn(["_client", *self.cpu_args("client")])
        try:
            out = {
                "cps": self.trials(client, server, "cps", hello["ports"]),
                "bulk": self.trials(client, server, "bulk", hello["ports"]),
            }
            if "trio_cps_pp" in hello["ports"]:
                out["trio_cps"] = self.trials(client, server, "trio_cps", hello["ports"])
            end = server.call({"op": "stats"})
            if end["handler_errors"]:
                self.failures.append(
                    f"{self.backend}: {end['handler_errors']} handler errors in the server"
                )
            return out
        finally:
            client.close({"op": "quit"})
            server.close({"op": "quit"})

    # ---- 3: the flood

    def flood(self) -> dict[str, Any]:
        args = self.args
        argv = ["_server", "--backend", self.backend, "--mode", "flood"]
        argv += ["--max-pending", str(args.max_pending), "--nofile", str(args.nofile)]
        if args.eviction_age is not None:
            argv += ["--eviction-age", str(args.eviction_age)]
        server = self.spawn(argv + self.cpu_args("server"))
        hello = server.read()
        config = hello["config"]
        port = hello["ports"]["flood_pp"]
        client = self.spawn(["_client", *self.cpu_args("client")])
        payload = (v2_header(CLAIMED_SOURCE, (HOST, port)) + REQUEST).hex()
        flood_count = 5 * args.max_pending
        settle = config["eviction_age"] + 0.5
        # The one-shot flood lasts header_timeout: its legit window must fit in it.
        oneshot_interval = min(
            args.legit_interval, max(0.001, (config["header_timeout"] - settle - 1.0) / args.legit)
        )
        timeout = COMMAND_TIMEOUT + args.legit * args.legit_interval

        def legit(interval: float) -> dict[str, Any]:
            command = {
                "op": "latency",
                "port": port,
                "payload": payload,
                "count": args.legit,
                "interval": interval,
            }
            return client.call(command, timeout)

        def stats() -> dict[str, Any]:
            return server.call({"op": "stats"})

        def settle_down() -> dict[str, Any]:
            """Wait (bounded) until the listener has no handshake left in flight."""
            deadline = time.monotonic() + config["header_timeout"] + 10
            now = stats()
            while now["stats"]["flood_pp"]["in_flight"] and time.monotonic() < deadline:
                time.sleep(0.2)
                now = stats()
            return now

        def flood_phase(reopen: bool, interval: float) -> dict[str, Any]:
            argv = ["_flood", "--port", str(port), "--count", str(flood_count)]
            argv += ["--max-seconds", str(FLOOD_MAX_SECONDS), "--nofile", str(args.nofile)]
            argv += [*(["--reopen"] if reopen else []), *self.cpu_args("client")]
            flooder = self.spawn(argv)
            try:
                ready = flooder.read(FLOOD_MAX_SECONDS)
                time.sleep(settle)
                start = stats()
                result = legit(interval)
                end = stats()
                flooded = flooder.call("stop")
            finally:
                flooder.close()
            if ready["ready"] < flood_count:
                self.failures.append(
                    f"{self.backend} flood: only {ready['ready']} of {flood_count} idle "
                    "connections could be opened"
                )
            before, after = start["stats"]["flood_pp"], end["stats"]["flood_pp"]
            return {
                **summary(result, interval),
                "opened_in_s": ready["seconds"],
                "flooder": flooded,
                "memory_kib": end["memory"],
                "evicted": after["evicted"] - before["evicted"],
                "timed_out": after["timed_out"] - before["timed_out"],
                "in_flight_at_end": after["in_flight"],
            }

        try:
            client.call(
                {"op": "latency", "port": port, "payload": payload, "count": 20, "interval": 0.005}
            )  # warm-up
            quiet = summary(legit(args.legit_interval), args.legit_interval)
            before = settle_down()["memory"]
            oneshot = flood_phase(False, oneshot_interval)
            between = settle_down()["memory"]
            reopened = flood_phase(True, args.legit_interval)
            after = settle_down()["memory"]
        finally:
            client.close({"op": "quit"})
            server.close({"op": "quit"})
        if quiet["failed"]:
            self.failures.append(
                f"{self.backend}: {quiet['failed']} of {args.legit} legit requests failed with "
                f"no flood (first: {quiet['first_failure']})"
            )
        return {
            "config": config,
            "idle_connections": flood_count,
            "no_flood": quiet,
            "oneshot": oneshot,
            "reopened": reopened,
            "memory_kib": {
                "before": before,
                "oneshot_flood": oneshot["memory_kib"],
                "between": between,
                "reopened_flood": reopened["memory_kib"],
                "after": after,
            },
        }


def summary(result: dict[str, Any], interval: float) -> dict[str, Any]:
    lat = [x * 1000 for x in result["latencies"]]
    return {
        "interval_ms": interval * 1000,
        "median_ms": median(lat),
        "p99_ms": percentile(lat, 99),
        "max_ms": max(lat) if lat else math.nan,
        "ok": len(lat),
        "failed": len(result["failures"]),
        "first_failure": result["failures"][0] if result["failures"] else None,
        "latencies_ms": lat,
    }


# ---- report


def status(ratio: float, goal: float) -> str:
    return "met" if ratio >= goal else "MISSED"


def ms(value: float) -> str:
    """Milliseconds with about three significant digits."""
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def mib(entry: dict[str, int], key: str = "VmRSS") -> str:
    return f"{entry[key] / 1024:.1f}" if key in entry else "n/a"


def print_trials(res: dict[str, Any], title: str, goal: float, unit: str) -> None:
    lo, hi = res["ratio_iqr"]
    alo, ahi = res["aa_iqr"]
    aa_ok = abs(res["aa_ratio"] - 1) <= AA_BAND
    print(f"    {'':<24}{'ours':>9}{'plain':>9}{'ratio':>8}  {'IQR':<13} {'goal':<9} status")
    print(
        f"    {title:<24}{res['ours']:>9.0f}{res['plain']:>9.0f}{res['ratio']:>8.3f}  "
        f"{lo:.3f}-{hi:.3f}   >= {goal:<5g} {status(res['ratio'], goal)}"
    )
    print(
        f"    {'A/A: plain vs plain':<24}{res['plain2']:>9.0f}{res['plain']:>9.0f}"
        f"{res['aa_ratio']:>8.3f}  {alo:.3f}-{ahi:.3f}   1+-{AA_BAND:<4g} "
        f"{'ok (the noise)' if aa_ok else 'NOISY: this run cannot resolve the goal'}"
    )
    cpu, busy, wait = res["server_cpu_us"], res["server_busy"], res["server_waited_for_cpu"]
    print(
        f"    server CPU {unit}: ours {cpu['pp']:.1f}, plain {cpu['plain']:.1f} "
        f"(ours/plain {res['server_cpu_ratio']:.2f}); server busy {busy['pp']:.0%} / "
        f"{busy['plain']:.0%}, runnable but waiting for a CPU {wait['pp']:.0%} / "
        f"{wait['plain']:.0%}; client busy {res['client_busy']['pp']:.0%} / "
        f"{res['client_busy']['plain']:.0%}"
    )


def print_backend(name: str, res: dict[str, Any], args: argparse.Namespace) -> None:
    cps, bulk, fl = res["cps"], res["bulk"], res["flood"]
    print()
    print(f"== {name}")
    print(
        f"  connections/s: {cps['trials']} rounds x {args.trial_seconds:g} s per server, "
        f"{args.concurrency} client connections at once, {REQUEST_SIZE} B request, "
        f"{REPLY_SIZE} B reply"
    )
    print_trials(cps, "ProxyProtocolListener", CPS_GOAL, "us/connection")
    if "trio_cps" in res:
        print("  connections/s, native trio (trio.serve_listeners), the same trials:")
        print_trials(res["trio_cps"], "proxyproto.trio", CPS_GOAL, "us/connection")
    print(
        f"  bulk throughput, MB/s: {bulk['trials']} rounds x {bulk['mib_per_trial']} MiB per "
        "server, one connection each"
    )
    print_trials(bulk, "ProxiedStream", BULK_GOAL, "us/MB")
    cfg = fl["config"]
    print(
        f"  flood: {fl['idle_connections']} idle connections = 5 x max_pending_handshakes "
        f"{cfg['max_pending_handshakes']}; eviction_age {cfg['eviction_age']:g} s, "
        f"header_timeout {cfg['header_timeout']:g} s"
    )
    print(
        f"    {args.legit} legit requests, open loop     every  median ms   p99 ms   max ms"
        "  failed  evicted  timed out"
    )
    rows = (
        ("no flood", fl["no_flood"]),
        ("flood opened once", fl["oneshot"]),
        ("flood, each closed one reopened", fl["reopened"]),
    )
    for label, s in rows:
        extra = f"{s['evicted']:>9}{s['timed_out']:>11}" if "evicted" in s else ""
        print(
            f"    {label:<34}{s['interval_ms']:>5.0f} ms{s['median_ms']:>9.2f}{s['p99_ms']:>9.2f}"
            f"{s['max_ms']:>9.1f}{s['failed']:>8}{extra}"
        )
    for label, s in rows[1:]:
        if s["failed"]:
            print(f"      {label}: first failure: {s['first_failure']}")
    mem = fl["memory_kib"]
    print(
        f"    server RSS MiB: before {mib(mem['before'])}, flood opened once "
        f"{mib(mem['oneshot_flood'])}, between {mib(mem['between'])}, flood reopened "
        f"{mib(mem['reopened_flood'])}, after {mib(mem['after'])} "
        f"(peak {mib(mem['after'], 'VmHWM')})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="role")
    server = sub.add_parser("_server")
    server.add_argument("--backend", required=True)
    server.add_argument("--mode", choices=["main", "flood"], required=True)
    server.add_argument("--max-pending", type=int, default=1024)
    server.add_argument("--eviction-age", type=float)
    server.add_argument("--nofile", type=int, default=4096)
    server.add_argument("--cpu", type=int)
    server.add_argument("--profile")
    client = sub.add_parser("_client")
    client.add_argument("--cpu", type=int)
    flood = sub.add_parser("_flood")
    flood.add_argument("--port", type=int, required=True)
    flood.add_argument("--count", type=int, required=True)
    flood.add_argument("--max-seconds", type=float, required=True)
    flood.add_argument("--reopen", action="store_true")
    flood.add_argument("--nofile", type=int, default=4096)
    flood.add_argument("--cpu", type=int)

    parser.add_argument("--quick", action="store_true", help="few trials (a smoke test)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument(
        "--backend", action="append", choices=["asyncio", "trio"], help="default: both"
    )
    parser.add_argument("--cps-trials", type=int, help="rounds of cps trials (default 30)")
    parser.add_argument("--bulk-trials", type=int, help="rounds of bulk trials (default 20)")
    parser.add_argument("--trial-seconds", type=float, help="length of a cps trial (0.3)")
    parser.add_argument("--concurrency", type=int, default=8, help="client connections at once")
    parser.add_argument("--bulk-mb", type=int, help="MiB per bulk trial (default: sized)")
    parser.add_argument("--bulk-seconds", type=float, help="bulk trial length when sized (0.3)")
    parser.add_argument("--max-pending", type=int, default=256, help="the flood's listener bound")
    parser.add_argument(
        "--eviction-age", type=float, help="the flood's listener (default: the config default)"
    )
    parser.add_argument("--legit", type=int, help="legit requests per flood phase (200)")
    parser.add_argument("--legit-interval", type=float, default=0.02, help="seconds between them")
    parser.add_argument("--pin", action="store_true", help="pin the server and the clients")
    parser.add_argument("--profile", metavar="DIR", help="cProfile the cps/bulk server into DIR")
    parser.add_argument("--seed", type=int, default=20260427, help="of the trial order")
    parser.add_argument(
        "--json-merge",
        action="store_true",
        help="if the --json file holds a JSON object already, add ours to it under 'anyio'",
    )
    # nox -s bench passes the same arguments to bench_core.py and to this script.
    parser.add_argument("--repeats", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "_server":
        return run_server(args)
    if args.role == "_client":
        return run_client(args)
    if args.role == "_flood":
        return run_flood(args)

    quick = args.quick
    args.cps_trials = args.cps_trials or (4 if quick else 30)
    args.bulk_trials = args.bulk_trials or (3 if quick else 20)
    args.trial_seconds = args.trial_seconds or (0.2 if quick else 0.3)
    args.bulk_seconds = args.bulk_seconds or (0.1 if quick else 0.3)
    args.legit = args.legit or (40 if quick else 200)
    args.warmup = 1 if quick else 2
    backends = args.backend or ["asyncio", "trio"]
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    args.cpus = [cpus[0], cpus[1]] if len(cpus) >= 2 and args.pin else []

    # The flood needs 5 x max_pending_handshakes descriptors in the server and in the flooder.
    soft_before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 5 * args.max_pending + 256
    soft = raise_nofile(needed)
    if soft != resource.RLIM_INFINITY and soft < needed:
        args.max_pending = max(1, (soft - 256) // 5)
        needed = soft
        print(f"note: RLIMIT_NOFILE {soft}: max_pending_handshakes lowered to {args.max_pending}")
    args.nofile = needed

    started = time.perf_counter()
    pp, ours_note = import_proxyproto()
    versions = [f"anyio {importlib.metadata.version('anyio')}"]
    if importlib.util.find_spec("trio") is not None:
        versions.append(f"trio {importlib.metadata.version('trio')}")
    elif "trio" in backends:
        backends.remove("trio")
        print("note: trio is not installed; the trio backend is skipped (pip install trio)")
    eviction_age = args.eviction_age
    if eviction_age is None:
        eviction_age = pp.ProxyProtocolConfig().eviction_age
    pinned = f"server {args.cpus[0]}, clients {args.cpus[1]}" if args.cpus else "not pinned"
    print(
        f"proxyproto anyio benchmark -- Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs; {', '.join(versions)}"
    )
    print(f"ours: {ours_note}")
    print(
        "method: per backend, one server process runs ours and two plain anyio listeners in "
        "one event loop;\n        a client process (blocking sockets) runs short trials "
        "against each in a new random order every round;\n        figure = median over "
        "rounds; ratio = median of the per-round ratios ours / plain (IQR beside it);\n"
        "        A/A = the second plain listener / the first, measured the same way.\n"
        f"        CPUs: {pinned}"
        f"; RLIMIT_NOFILE {soft_before} -> {soft} (hard {hard}); flood eviction_age "
        f"{eviction_age:g} s"
    )
    if args.profile:
        print(f"PROFILING (cProfile) the cps/bulk server into {args.profile}: figures distorted")
    rng = random.Random(args.seed)
    results: dict[str, Any] = {}
    failures: list[str] = []
    for backend in backends:
        run = Run(args, backend, rng)
        try:
            res = run.throughput_and_cps()
            res["flood"] = run.flood()
        except Exception as exc:
            failures.append(f"{backend}: {type(exc).__name__}: {exc}")
            print(f"\n== {backend}\n  FAILED: {type(exc).__name__}: {exc}")
            continue
        finally:
            run.close_all()
            failures.extend(run.failures)
        results[backend] = res
        print_backend(backend, res, args)

    if results:
        print_summary(results)
    for msg in failures:
        print(f"CHECK FAILED: {msg}")
    print(f"(total {time.perf_counter() - started:.1f} s)")

    if args.json:
        doc = {
            **machine(),
            "versions": versions,
            "ours": ours_note,
            "settings": {
                "cps_trials": args.cps_trials,
                "bulk_trials": args.bulk_trials,
                "trial_seconds": args.trial_seconds,
                "concurrency": args.concurrency,
                "bulk_mib": args.bulk_mb or "auto",
                "bulk_seconds": args.bulk_seconds,
                "legit": args.legit,
                "legit_interval": args.legit_interval,
                "max_pending_handshakes": args.max_pending,
                "eviction_age": eviction_age,
                "seed": args.seed,
                "pinned_cpus": args.cpus,
                "rlimit_nofile": [soft_before, soft, hard],
            },
            "goals": {"cps_ratio": CPS_GOAL, "bulk_ratio": BULK_GOAL, "aa_band": AA_BAND},
            "results": results,
            "check_failures": failures,
        }
        write_json(Path(args.json), doc, merge=args.json_merge, key="anyio")
    return 1 if failures else 0


def print_summary(results: dict[str, Any]) -> None:
    def lat(key: str) -> Any:
        def cell(r: dict[str, Any]) -> str:
            s = r["flood"][key]
            failed = f", {s['failed']} failed" if s["failed"] else ""
            return f"{ms(s['median_ms'])} / {ms(s['p99_ms'])}{failed}"

        return cell

    def rss(r: dict[str, Any]) -> str:
        mem = r["flood"]["memory_kib"]
        keys = ("before", "oneshot_flood", "reopened_flood", "after")
        return " / ".join(f"{mem[k].get('VmRSS', 0) / 1024:.0f}" for k in keys)

    rows = [
        ("cps ours / plain", lambda r: f"{r['cps']['ours']:.0f} / {r['cps']['plain']:.0f}", ""),
        ("cps ratio", lambda r: f"{r['cps']['ratio']:.3f}", f">= {CPS_GOAL:g}"),
        ("cps A/A ratio", lambda r: f"{r['cps']['aa_ratio']:.3f}", f"1 +- {AA_BAND:g}"),
        ("server CPU/conn ours/plain", lambda r: f"{r['cps']['server_cpu_ratio']:.2f}", ""),
        (
            "native trio cps ratio",
            lambda r: f"{r['trio_cps']['ratio']:.3f}" if "trio_cps" in r else "-",
            f">= {CPS_GOAL:g}",
        ),
        (
            "bulk MB/s ours / plain",
            lambda r: f"{r['bulk']['ours']:.0f} / {r['bulk']['plain']:.0f}",
            "",
        ),
        ("bulk ratio", lambda r: f"{r['bulk']['ratio']:.3f}", f">= {BULK_GOAL:g}"),
        ("bulk A/A ratio", lambda r: f"{r['bulk']['aa_ratio']:.3f}", f"1 +- {AA_BAND:g}"),
        ("latency ms, no flood", lat("no_flood"), "median / p99"),
        ("latency ms, flood opened once", lat("oneshot"), "median / p99"),
        ("latency ms, flood reopened", lat("reopened"), "median / p99"),
        ("server RSS MiB", rss, "before / once / reopened / after"),
    ]
    width = 28
    print()
    print(f"{'summary':<31}" + "".join(f"{b:>{width}}" for b in results) + "   goal")
    print("-" * (31 + width * len(results) + 36))
    for label, cell, goal in rows:
        cells = "".join(f"{cell(r):>{width}}" for r in results.values())
        print(f"{label:<31}{cells}   {goal}")


if __name__ == "__main__":
    sys.exit(main())
