"""Benchmark Hypercorn and Uvicorn with proxyproto against the same servers without it.

Run ``python bench/bench_asgi.py`` (``nox -s bench`` does; needs ``hypercorn``, ``uvicorn``,
``httptools`` and ``trio``). See ``bench/README.md`` for the method. For each server kind
(Hypercorn asyncio worker, Hypercorn trio worker, Uvicorn h11, Uvicorn httptools) one server
process runs, in one event loop, the server with proxyproto (``proxyproto.hypercorn.serve`` or
Uvicorn with ``ProxyProtocol*Protocol``), the plain server, and a second plain one (the A/A
check). A client process (raw blocking sockets, HTTP/1.1) measures requests per second:

* keep-alive: N connections at once, each sending requests one after the other (the PROXY
  header once per connection, for the proxyproto server);
* short: one request per connection (header + request in one segment, ``Connection: close``),
  where the handshake's cost shows.

Interleaved rounds in a random order, median of the per-round ratios; goal >= 0.9x. Everything
runs on 127.0.0.1; no timing assertions: exits 0, or 1 when a check failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import socket
import sys
import threading
import time
from collections.abc import Sequence
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
    use_src,
    v2_header,
    write_json,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # shared with the tests
from asgi_helpers import send_ok, serve_lifespan

GOAL = 0.9
AA_BAND = 0.1
COMMAND_TIMEOUT = 60.0
SOCKET_TIMEOUT = 10.0
#: What the client claims to be in its header: same length as 127.0.0.1, so bodies match.
CLAIMED = ("127.0.0.9", 51234)
KINDS = (
    "hypercorn-asyncio",
    "hypercorn-trio",
    "uvicorn-h11",
    "uvicorn-httptools",
    "uvicorn-zttp",
)
SIDES = ("pp", "plain", "plain2")
#: With ``--uvicorn-alt MODULE``: a fourth Uvicorn server, with that module's protocol classes
#: (another design of ``proxyproto.uvicorn``, compared in the same run).
ALT = "alt"
MODES = ("keepalive", "short")


def import_proxyproto() -> None:
    use_src()


def proc_sched(pid: int) -> float:
    """CPU seconds of a process's main thread (/proc/PID/schedstat; 0 where there is none)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


# ============================================================================================
# the server process


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """200 with the client's host as the body (9 bytes here); lifespan answered."""
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    body = (scope.get("client") or ("-", 0))[0].encode()
    await send_ok(send, body, b"text/plain")


def watch_stdin() -> None:
    """Exit the whole process when the orchestrator closes our stdin (nothing outlives it)."""

    def run() -> None:
        while sys.stdin.buffer.read(65536):
            pass
        os._exit(0)

    threading.Thread(target=run, daemon=True).start()


def sides_of(kind: str, alt: str | None) -> tuple[str, ...]:
    return (*SIDES, ALT) if alt and kind.startswith("uvicorn") else SIDES


def run_server(kind: str, alt: str | None = None) -> int:
    import_proxyproto()
    ports = {side: free_port() for side in sides_of(kind, alt)}
    watch_stdin()
    if kind.startswith("hypercorn"):
        from hypercorn.config import Config

        import proxyproto.hypercorn

        def config(port: int) -> Config:
            c = Config()
            c.bind = [f"{HOST}:{port}"]
            c.accesslog = None
            c.errorlog = None
            return c

        async def never() -> None:
            if kind == "hypercorn-trio":
                import trio

                await trio.sleep_forever()
            else:
                import asyncio

                await asyncio.Event().wait()

        if kind == "hypercorn-trio":
            import trio
            from hypercorn.trio import serve as plain_serve
        else:
            from hypercorn.asyncio import serve as plain_serve

        async def main() -> None:
            emit({"ports": ports, "pid": os.getpid()})
            if kind == "hypercorn-trio":
                async with trio.open_nursery() as nursery:
                    for side, port in ports.items():
                        serve = proxyproto.hypercorn.serve if side == "pp" else plain_serve
                        nursery.start_soon(
                            lambda s=serve, p=port: s(app, config(p), shutdown_trigger=never)
                        )
            else:
                import asyncio

                await asyncio.gather(
                    *(
                        (proxyproto.hypercorn.serve if side == "pp" else plain_serve)(
                            app, config(port), shutdown_trigger=never
                        )
                        for side, port in ports.items()
                    )
                )

        if kind == "hypercorn-trio":
            trio.run(main)
        else:
            import asyncio

            asyncio.run(main())
        return 0

    import asyncio

    import uvicorn

    import proxyproto.uvicorn as ppu

    http = kind.split("-", 1)[1]
    name = {"h11": "H11", "httptools": "HttpTools", "zttp": "Zttp"}[http]
    pp_class = getattr(ppu, f"ProxyProtocol{name}Protocol")
    classes = {"pp": pp_class, "plain": http, "plain2": http}
    if alt:
        # A design without this parser: the A/B side runs the one under test again.
        classes[ALT] = getattr(
            importlib.import_module(alt), f"ProxyProtocol{name}Protocol", pp_class
        )

    async def uv_main() -> None:
        servers = []
        for side, port in ports.items():
            cfg = uvicorn.Config(
                app,
                host=HOST,
                port=port,
                http=classes[side],
                lifespan="off",
                access_log=False,
                log_level="warning",
                loop="none",
            )
            servers.append(uvicorn.Server(cfg))
        emit({"ports": ports, "pid": os.getpid()})
        await asyncio.gather(*(s.serve() for s in servers))

    asyncio.run(uv_main())
    return 0


# ============================================================================================
# the client process: raw blocking sockets, one thread per connection


class BadResponse(Exception):
    pass


def read_response(sock: socket.socket, buf: bytes) -> tuple[bytes, bytes]:
    """One HTTP/1.1 response: (body, bytes left over after it)."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            break
        chunk = sock.recv(65536)
        if not chunk:
            raise BadResponse("EOF before the response head")
        buf += chunk
    head = buf[:end].lower()
    if not head.startswith(b"http/1.1 200"):
        raise BadResponse(head[:40].decode(errors="replace"))
    at = head.find(b"content-length:")
    if at < 0:
        raise BadResponse("no content-length")
    length = int(head[at + 15 : head.find(b"\r\n", at) if b"\r\n" in head[at:] else None])
    start = end + 4
    while len(buf) < start + length:
        chunk = sock.recv(65536)
        if not chunk:
            raise BadResponse("EOF in the body")
        buf += chunk
    return buf[start : start + length], buf[start + length :]


REQUEST_KA = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
REQUEST_CLOSE = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


def client_trial(
    port: int, header: bytes, mode: str, seconds: float, concurrency: int, expect: str
) -> dict[str, Any]:
    counts = [0] * concurrency
    errors: list[str] = []
    start_at = time.perf_counter() + 0.02
    stop_at = start_at + seconds

    def keepalive(i: int) -> None:
        try:
            with socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                first = header + REQUEST_KA
                while time.perf_counter() < start_at:
                    pass
                buf = b""
                n = 0
                while time.perf_counter() < stop_at:
                    sock.sendall(first if n == 0 else REQUEST_KA)
                    body, buf = read_response(sock, buf)
                    if n == 0 and body.decode() != expect:
                        errors.append(f"client {body!r}, expected {expect!r}")
                        return
                    n += 1
                counts[i] = n
        except (OSError, BadResponse) as error:
            errors.append(repr(error))

    def short(i: int) -> None:
        payload = header + REQUEST_CLOSE
        n = 0
        while time.perf_counter() < start_at:
            pass
        try:
            while time.perf_counter() < stop_at:
                with socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT) as sock:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sock.sendall(payload)
                    body, _ = read_response(sock, b"")
                    if n == 0 and body.decode() != expect:
                        errors.append(f"client {body!r}, expected {expect!r}")
                        return
                n += 1
        except (OSError, BadResponse) as error:
            errors.append(repr(error))
        counts[i] = n

    target = keepalive if mode == "keepalive" else short
    threads = [threading.Thread(target=target, args=(i,)) for i in range(concurrency)]
    cpu0 = time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 3 * SOCKET_TIMEOUT)
    elapsed = max(time.perf_counter() - start_at, 1e-9)
    return {
        "requests": sum(counts),
        "rps": sum(counts) / elapsed,
        "errors": errors[:3],
        "client_cpu": (time.process_time() - cpu0) / elapsed,
    }


def run_client() -> int:
    for line in sys.stdin:
        cmd = json.loads(line)
        emit(
            client_trial(
                cmd["port"],
                bytes.fromhex(cmd["header"]),
                cmd["mode"],
                cmd["seconds"],
                cmd["concurrency"],
                cmd["expect"],
            )
        )
    return 0


# ============================================================================================
# the orchestrator


def available(kind: str) -> str | None:
    """Why ``kind`` cannot run here, or None."""
    need = {
        "hypercorn-asyncio": ["hypercorn"],
        "hypercorn-trio": ["hypercorn", "trio"],
        "uvicorn-h11": ["uvicorn", "h11"],
        "uvicorn-httptools": ["uvicorn", "httptools"],
        "uvicorn-zttp": ["uvicorn", "zttp", "uvicorn.protocols.http.zttp_impl"],
    }[kind]
    missing = [m for m in need if importlib.util.find_spec(m) is None]
    return f"not installed: {', '.join(missing)}" if missing else None


def measure_kind(kind: str, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    alt = ["--alt", args.uvicorn_alt] if args.uvicorn_alt else []
    server = Child(__file__, ["_server", "--kind", kind, *alt], timeout=COMMAND_TIMEOUT)
    sides = sides_of(kind, args.uvicorn_alt)
    client = Child(__file__, ["_client"], timeout=COMMAND_TIMEOUT)
    failures: list[str] = []
    try:
        hello = server.read(30)
        ports: dict[str, int] = hello["ports"]
        pid = int(hello["pid"])

        def trial(side: str, mode: str, seconds: float) -> dict[str, Any]:
            proxied = side in ("pp", ALT)
            header = v2_header(CLAIMED, (HOST, ports[side])) if proxied else b""
            expect = CLAIMED[0] if proxied else HOST
            cpu0 = proc_sched(pid)
            res: dict[str, Any] = client.call(
                {
                    "port": ports[side],
                    "header": header.hex(),
                    "mode": mode,
                    "seconds": seconds,
                    "concurrency": args.concurrency,
                    "expect": expect,
                }
            )
            cpu = proc_sched(pid) - cpu0
            res["server_cpu_us"] = cpu * 1e6 / res["requests"] if res["requests"] else float("nan")
            return res

        # Ready: a request to each server succeeds (retried for up to 20 s).
        deadline = time.monotonic() + 20
        for side in sides:
            while True:
                res = trial(side, "short", 0.05)
                if res["requests"] and not res["errors"]:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{kind} {side} not ready: {res['errors']}")
                time.sleep(0.2)
        out: dict[str, Any] = {}
        for mode in MODES:
            rows: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
            for measured, side in interleaved(rng, sides, args.warmup, args.rounds):
                res = trial(side, mode, args.trial_seconds)
                if res["errors"]:
                    failures.append(f"{kind} {mode} {side}: {res['errors']}")
                if measured:
                    rows[side].append(res)
            rps = {s: [x["rps"] for x in rows[s]] for s in sides}
            ratio = [a / b for a, b in zip(rps["pp"], rps["plain"], strict=True) if b]
            aa = [a / b for a, b in zip(rps["plain2"], rps["plain"], strict=True) if b]
            if ALT in sides:
                alt_ratio = [a / b for a, b in zip(rps[ALT], rps["plain"], strict=True) if b]
                pp_alt = [a / b for a, b in zip(rps["pp"], rps[ALT], strict=True) if b]
                out[f"{mode}_alt"] = {
                    "ratio": median(alt_ratio),
                    "ratio_iqr": quartiles(alt_ratio),
                    "pp_over_alt": median(pp_alt),
                    "pp_over_alt_iqr": quartiles(pp_alt),
                }
            out[mode] = {
                "rounds": args.rounds,
                "rps": {s: median(rps[s]) for s in sides},
                "ratio": median(ratio),
                "ratio_iqr": quartiles(ratio),
                "aa": median(aa),
                "aa_iqr": quartiles(aa),
                "server_cpu_us": {s: median([x["server_cpu_us"] for x in rows[s]]) for s in sides},
                "client_cpu": median([x["client_cpu"] for x in rows["plain"]]),
            }
        out["failures"] = failures
        return out
    finally:
        client.close()
        server.close()


def print_kind(kind: str, res: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\n{kind}")
    if "skipped" in res:
        print(f"  skipped: {res['skipped']}")
        return
    print(
        "  mode        proxyproto req/s   plain req/s   ratio [IQR]          A/A [IQR]"
        "          server us/req pp/plain  goal"
    )
    for mode in MODES:
        m = res[mode]
        lo, hi = m["ratio_iqr"]
        alo, ahi = m["aa_iqr"]
        verdict = "met" if m["ratio"] >= GOAL else "NOT met"
        noisy = "" if abs(m["aa"] - 1) <= AA_BAND else " (A/A off: noisy run)"
        print(
            f"  {mode:<10} {m['rps']['pp']:>16,.0f} {m['rps']['plain']:>13,.0f}   "
            f"{m['ratio']:.3f} [{lo:.2f}-{hi:.2f}]   {m['aa']:.3f} [{alo:.2f}-{ahi:.2f}]   "
            f"{m['server_cpu_us']['pp']:>8.0f} / {m['server_cpu_us']['plain']:<8.0f}"
            f"  >= {GOAL}x {verdict}{noisy}"
        )
        if f"{mode}_alt" in res:
            a = res[f"{mode}_alt"]
            lo, hi = a["ratio_iqr"]
            plo, phi = a["pp_over_alt_iqr"]
            print(
                f"  {mode:<10} alt/plain {a['ratio']:.3f} [{lo:.2f}-{hi:.2f}]   "
                f"pp/alt {a['pp_over_alt']:.3f} [{plo:.2f}-{phi:.2f}]"
            )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_server"]:
        return run_server(argv[2], argv[4] if argv[3:4] == ["--alt"] else None)
    if argv[:1] == ["_client"]:
        return run_client()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_output_options(parser, "asgi")
    parser.add_argument("--kind", action="append", choices=KINDS, help="repeat; default all")
    parser.add_argument("--rounds", type=int, help="measured rounds per mode (default 15)")
    parser.add_argument("--trial-seconds", type=float, help="length of one trial (0.3)")
    parser.add_argument("--concurrency", type=int, default=8, help="client connections at once")
    parser.add_argument(
        "--uvicorn-alt",
        metavar="MODULE",
        help="Uvicorn kinds: also measure this module's ProxyProtocol*Protocol classes (another "
        "design, e.g. a copy of an older proxyproto/uvicorn.py), in the same rounds",
    )
    parser.add_argument("--seed", type=int, default=20260427, help="of the trial order")
    parser.add_argument("--repeats", type=int, help=argparse.SUPPRESS)  # nox passes these on
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (3 if args.quick else 15)
    args.trial_seconds = args.trial_seconds or (0.2 if args.quick else 0.3)
    args.warmup = 1 if args.quick else 2
    import_proxyproto()
    import proxyproto

    print(
        f"bench_asgi: proxyproto {getattr(proxyproto, '__version__', '?')}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs; "
        f"{args.rounds} rounds x {args.trial_seconds:g} s per server and mode, "
        f"{args.concurrency} client connections; trivial ASGI app (200, 9-byte body)"
    )
    rng = random.Random(args.seed)
    results: dict[str, Any] = {}
    failed = False
    for kind in args.kind or KINDS:
        reason = available(kind)
        if reason:
            results[kind] = {"skipped": reason}
        else:
            try:
                results[kind] = measure_kind(kind, args, rng)
            except RuntimeError as error:
                results[kind] = {"skipped": f"failed: {error}"}
                failed = True
            failed = failed or bool(results[kind].get("failures"))
        print_kind(kind, results[kind], args)
        for f in results[kind].get("failures", []):
            print(f"  CHECK FAILED: {f}")
    print(
        "\nratio = median over rounds of (proxyproto req/s / plain req/s); A/A = plain2 / plain "
        f"(the method's noise; within +-{AA_BAND} of 1 on a quiet machine). Goal >= {GOAL}x."
    )
    if args.json:
        doc = {"config": {k: v for k, v in vars(args).items() if k != "json"}, "results": results}
        write_json(Path(args.json), doc, merge=args.json_merge, key="asgi")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
