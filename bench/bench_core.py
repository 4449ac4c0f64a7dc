"""Benchmark proxyproto's core against other Python PROXY protocol parsers.

Run ``python bench/bench_core.py`` (``nox -s bench`` does) with the peers installed:
``pip install proxy-protocol gunicorn twisted``. See ``bench/README.md`` for the method.

The script only prints (and with ``--json PATH`` writes) figures; it makes no timing assertions.
It exits 0, unless an implementation returned a wrong result while being checked (exit 1; that
implementation is left out of the timing) or something crashed.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import random
import struct
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import peers
from _harness import machine, use_src
from peers import BUILD, NA, TLV_FIELDS, V1_TCP4, V2_IPV4, V2_TLVS, BuildSpec, Impl

T = TypeVar("T")

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
PROXY_STREAM_INET = b"\x21\x11"  # version 2 / PROXY, INET / STREAM

TLV_ALPN = 0x01
TLV_AUTHORITY = 0x02
TLV_CRC32C = 0x03
TLV_NOOP = 0x04
TLV_UNIQUE_ID = 0x05
TLV_SSL = 0x20
SSL_VERSION = 0x21
SSL_CN = 0x22
SSL_CIPHER = 0x23

CIPHERS = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")

#: Byte-at-a-time sizes (whole header, bytes) and how many headers of that size make one pass,
#: so that every pass feeds the same 64 KiB.
FEED_SIZES = ((1024, 64), (8 * 1024, 8), (64 * 1024, 1))
FEED_MAX_HEADER = 70_000
LINEAR_LIMIT = 1.5  # per-byte cost 64 KiB / 1 KiB at or under this reads as linear

WORKLOAD_TITLES = {
    V2_IPV4: "v2 IPv4 parse",
    V1_TCP4: "v1 TCP4 parse",
    V2_TLVS: "v2 five TLVs parse",
    BUILD: "build TLVs+CRC32C",
}

#: workload -> (ours at most this many us, ours at least this many times faster than the fastest
#: comparable peer, or None)
GOALS: dict[str, tuple[float, float | None]] = {
    V2_IPV4: (2.0, 3.0),
    V1_TCP4: (2.5, 1.5),
    V2_TLVS: (6.0, 3.0),
    BUILD: (6.0, None),
}


# --------------------------------------------------------------------------------------------
# inputs (built by hand, independent of proxyproto's builder)


def _ipv4(rng: random.Random) -> str:
    return ".".join(str(rng.randrange(256)) for _ in range(4))


def _octets(host: str) -> bytes:
    return struct.pack("!4B", *(int(part) for part in host.split(".")))


def _tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


def _v2_header(src: str, sport: int, dst: str, dport: int, tlvs: bytes = b"") -> bytes:
    body = _octets(src) + _octets(dst) + struct.pack("!HH", sport, dport) + tlvs
    return SIGNATURE + PROXY_STREAM_INET + struct.pack("!H", len(body)) + body


def _v1_header(src: str, sport: int, dst: str, dport: int) -> bytes:
    return f"PROXY TCP4 {src} {dst} {sport} {dport}\r\n".encode("ascii")


def _five_tlvs(spec: BuildSpec) -> bytes:
    _sh, _sp, _dh, _dp, alpn, authority, unique_id, cn, version, cipher, vpce = spec
    ssl = struct.pack("!BI", peers.SSL_CLIENT, 0) + b"".join(
        (
            _tlv(SSL_VERSION, version.encode("ascii")),
            _tlv(SSL_CN, cn.encode("utf-8")),
            _tlv(SSL_CIPHER, cipher.encode("ascii")),
        )
    )
    return b"".join(
        (
            _tlv(TLV_ALPN, alpn),
            _tlv(TLV_AUTHORITY, authority.encode("ascii")),
            _tlv(TLV_UNIQUE_ID, unique_id),
            _tlv(TLV_SSL, ssl),
            _tlv(peers.AWS_TLV, bytes((peers.AWS_VPCE_SUBTYPE,)) + vpce.encode("ascii")),
        )
    )


def _addresses(rng: random.Random, count: int) -> list[tuple[str, int, str, int]]:
    seen: set[tuple[str, int, str, int]] = set()
    out: list[tuple[str, int, str, int]] = []
    while len(out) < count:
        item = (_ipv4(rng), rng.randint(1, 65535), _ipv4(rng), rng.randint(1, 65535))
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _specs(rng: random.Random, count: int) -> list[BuildSpec]:
    out: list[BuildSpec] = []
    for sh, sp, dh, dp in _addresses(rng, count):
        out.append(
            (
                sh,
                sp,
                dh,
                dp,
                b"h2",
                f"api-{rng.randrange(10**6)}.svc{rng.randrange(100)}.example.com",
                rng.randbytes(rng.randint(16, 32)),
                f"client-{rng.randrange(10**6)}.example.org",
                "TLSv1.3",
                rng.choice(CIPHERS),
                f"vpce-{rng.getrandbits(68):017x}",
            )
        )
    return out


def _big_header(total: int, spec: BuildSpec) -> bytes:
    """A v2 header of exactly ``total`` bytes: the five TLVs, then NOOP TLVs as filler."""
    tlvs = [_five_tlvs(spec)]
    remaining = total - 16 - 12 - len(tlvs[0])
    while remaining > 0:
        size = min(252, remaining - 3)
        if remaining - (size + 3) in (1, 2):  # never leave a gap too small for a TLV
            size -= 3
        tlvs.append(_tlv(TLV_NOOP, bytes(size)))
        remaining -= size + 3
    header = _v2_header(spec[0], spec[1], spec[2], spec[3], b"".join(tlvs))
    assert len(header) == total, (len(header), total)
    return header


class Inputs:
    def __init__(self, seed: int, count: int) -> None:
        rng = random.Random(seed)
        addrs = _addresses(rng, count)
        self.v2_ipv4 = [_v2_header(*a) for a in addrs]
        self.v2_ipv4_expected: list[tuple[Any, ...]] = list(addrs)
        addrs = _addresses(rng, count)
        self.v1_tcp4 = [_v1_header(*a) for a in addrs]
        self.v1_tcp4_expected: list[tuple[Any, ...]] = list(addrs)
        specs = _specs(rng, count)
        self.v2_tlvs = [_v2_header(*s[:4], _five_tlvs(s)) for s in specs]
        self.v2_tlvs_expected: list[tuple[Any, ...]] = list(specs)
        self.build_specs = _specs(rng, count)
        self.feed: list[tuple[int, list[list[bytes]], BuildSpec]] = []
        for size, per_pass in FEED_SIZES:
            specs = _specs(rng, per_pass)
            headers = [_big_header(size, s) for s in specs]
            chunks = [[h[i : i + 1] for i in range(len(h))] for h in headers]
            self.feed.append((size, chunks, specs[0]))

    def parse_inputs(self, key: str) -> tuple[list[bytes], list[tuple[Any, ...]]]:
        if key == V2_IPV4:
            return self.v2_ipv4, self.v2_ipv4_expected
        if key == V1_TCP4:
            return self.v1_tcp4, self.v1_tcp4_expected
        return self.v2_tlvs, self.v2_tlvs_expected


# --------------------------------------------------------------------------------------------
# checking results once, outside the timing


def reference_decode(data: bytes) -> tuple[tuple[Any, ...], bool | None]:
    """Decode a v2 PROXY/STREAM/INET header with the five TLVs (and CRC32C), for checking
    built headers. Returns the values in adapter-result order and whether the CRC32C matched
    (``None`` when the crc32c package is missing). Raises ``ValueError`` on anything else.
    """
    if data[:12] != SIGNATURE or data[12:14] != PROXY_STREAM_INET:
        raise ValueError("not a v2 PROXY STREAM INET header")
    (length,) = struct.unpack_from("!H", data, 14)
    if len(data) != 16 + length or length < 12:
        raise ValueError(f"length field {length} does not match {len(data)} bytes")
    a = struct.unpack_from("!8BHH", data, 16)
    values: dict[str, Any] = dict.fromkeys(TLV_FIELDS)
    crc_at = -1
    pos = 28
    while pos < len(data):
        kind, size = struct.unpack_from("!BH", data, pos)
        value = data[pos + 3 : pos + 3 + size]
        if len(value) != size:
            raise ValueError("TLV runs past the header end")
        if kind == TLV_ALPN:
            values["alpn"] = value
        elif kind == TLV_AUTHORITY:
            values["authority"] = value.decode("utf-8")
        elif kind == TLV_UNIQUE_ID:
            values["unique_id"] = value
        elif kind == TLV_CRC32C:
            if size != 4:
                raise ValueError("CRC32C TLV is not 4 bytes")
            crc_at = pos + 3
        elif kind == TLV_SSL:
            client, verify = struct.unpack_from("!BI", value)
            if (client, verify) != (peers.SSL_CLIENT, 0):
                raise ValueError(f"SSL client/verify {client:#x}/{verify}, want 0x07/0")
            sub = 5
            while sub < len(value):
                skind, ssize = struct.unpack_from("!BH", value, sub)
                svalue = value[sub + 3 : sub + 3 + ssize].decode("utf-8")
                name = {SSL_VERSION: "ssl_version", SSL_CN: "ssl_cn", SSL_CIPHER: "ssl_cipher"}
                if skind in name:
                    values[name[skind]] = svalue
                sub += 3 + ssize
        elif kind == peers.AWS_TLV and value[:1] == bytes((peers.AWS_VPCE_SUBTYPE,)):
            values["aws_vpce_id"] = value[1:].decode("ascii")
        pos += 3 + size
    crc_ok: bool | None = None
    if crc_at < 0:
        crc_ok = False
    elif importlib.util.find_spec("crc32c") is not None:
        from crc32c import crc32c

        zeroed = data[:crc_at] + bytes(4) + data[crc_at + 4 :]
        crc_ok = struct.pack("!I", crc32c(zeroed)) == data[crc_at : crc_at + 4]
    src = ".".join(map(str, a[0:4]))
    dst = ".".join(map(str, a[4:8]))
    return (src, a[8], dst, a[9], *(values[f] for f in TLV_FIELDS)), crc_ok


def check_parse(impl: Impl, key: str, inputs: Inputs) -> str | None:
    """Run the adapter over every input once; return what went wrong, or None."""
    fn = impl.parse[key]
    datas, expected = inputs.parse_inputs(key)
    compare = [True] * 4
    if key == V2_TLVS:
        compare += [impl.tlv_fields.get(f, NA) != NA for f in TLV_FIELDS]
    for i, (data, want) in enumerate(zip(datas, expected, strict=True)):
        try:
            got = fn(data)
        except Exception as exc:
            return f"header #{i} raised {type(exc).__name__}: {exc}"
        if len(got) != len(compare):
            return f"header #{i}: adapter returned {len(got)} values, want {len(compare)}"
        for j, (g, w, c) in enumerate(zip(got, want, compare, strict=True)):
            if c and (g != w or type(g) is not type(w)):
                return f"header #{i} field {j}: got {g!r}, want {w!r}"
    return None


def check_build(impl: Impl, inputs: Inputs) -> str | None:
    fn = impl.build
    assert fn is not None
    for i, spec in enumerate(inputs.build_specs):
        try:
            data = fn(spec)
            got, crc_ok = reference_decode(data)
        except Exception as exc:
            return f"spec #{i} raised {type(exc).__name__}: {exc}"
        if got != spec:
            return f"spec #{i}: built header decodes to {got!r}, want {spec!r}"
        if crc_ok is False:
            return f"spec #{i}: CRC32C TLV missing or wrong"
    return None


# --------------------------------------------------------------------------------------------
# timing


def _time_pass(fn: Callable[[T], object], items: Sequence[T]) -> int:
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for item in items:
            fn(item)
        return time.perf_counter_ns() - start
    finally:
        if enabled:
            gc.enable()


def measure(
    fns: dict[str, Callable[[T], object]], items: Sequence[T], repeats: int, rng: random.Random
) -> dict[str, float]:
    """Minimum per-item time in us for each function, the functions interleaved in a new random
    order in every repeat so that machine noise hits them all alike."""
    names = list(fns)
    for name in names:  # warm-up pass, not counted
        _time_pass(fns[name], items)
    best = dict.fromkeys(names, float("inf"))
    for _ in range(repeats):
        rng.shuffle(names)
        for name in names:
            best[name] = min(best[name], _time_pass(fns[name], items) / len(items) / 1000)
    return best


def _null(item: object) -> object:
    return item


def measure_feed(
    pp: Any, inputs: Inputs, repeats: int, rng: random.Random
) -> tuple[dict[int, float], str | None]:
    """Per-byte cost (ns) of feeding headers one byte at a time into ``pp.HeaderParser``."""
    parser_cls = pp.HeaderParser
    need_data = pp.NEED_DATA

    # check once: NEED_DATA until the last byte, then the header with the right source
    for size, chunks, spec in inputs.feed:
        try:
            parser = parser_cls(max_header_size=FEED_MAX_HEADER)
            for i, chunk in enumerate(chunks[0]):
                parser.receive_data(chunk)
                event = parser.next_event()
                if i < size - 1 and event is not need_data:
                    return {}, f"{size}-byte header: event {event!r} after {i + 1} bytes"
            if event is need_data or tuple(event.source) != (spec[0], spec[1]):
                return {}, f"{size}-byte header: last event {event!r}, want source {spec[:2]}"
        except Exception as exc:
            return {}, f"{size}-byte header raised {type(exc).__name__}: {exc}"

    def feed_pass(headers: list[list[bytes]]) -> None:
        for chunks in headers:
            parser = parser_cls(max_header_size=FEED_MAX_HEADER)
            receive = parser.receive_data
            next_event = parser.next_event
            for chunk in chunks:
                receive(chunk)
                next_event()

    sizes = [size for size, _chunks, _spec in inputs.feed]
    passes = {size: chunks for size, chunks, _spec in inputs.feed}
    total = {size: sum(len(c) for c in chunks) for size, chunks in passes.items()}
    best = dict.fromkeys(sizes, float("inf"))
    for size in sizes:
        _time_pass(feed_pass, [passes[size]])
    for _ in range(repeats):
        rng.shuffle(sizes)
        for size in sizes:
            ns = _time_pass(feed_pass, [passes[size]])
            best[size] = min(best[size], ns / total[size])
    return best, None


# --------------------------------------------------------------------------------------------
# loading


def load_ours() -> tuple[Impl | None, Any, str]:
    """Import proxyproto lazily. Returns (impl or None, the module or None, a one-line note)."""
    note = use_src()
    try:
        import proxyproto as pp
    except Exception as exc:
        return None, None, f"skipped: cannot import proxyproto ({type(exc).__name__}: {exc})"
    try:
        impl = peers.load_ours()
    except Exception as exc:
        return None, pp, f"skipped: proxyproto is not usable yet ({type(exc).__name__}: {exc})"
    where = getattr(pp, "__file__", None) or ", ".join(getattr(pp, "__path__", []))
    return impl, pp, f"proxyproto {impl.version} from {where}{note}"


def load_peers() -> tuple[list[Impl], list[str]]:
    impls: list[Impl] = []
    missing: list[str] = []
    for dist, loader in peers.PEERS:
        try:
            impls.append(loader())
        except ImportError as exc:
            missing.append(f"{dist}: not installed ({exc})")
    return impls, missing


# --------------------------------------------------------------------------------------------
# report


def _us(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _goal_text(key: str) -> str:
    limit, factor = GOALS[key]
    text = f"<= {limit:g} us"
    if factor is not None:
        text += f", >= {factor:g}x fastest peer"
    return text


def _status(key: str, ours: float | None, comparable: dict[str, float]) -> str:
    if ours is None:
        return "n/a (ours not measured)"
    limit, factor = GOALS[key]
    misses = []
    if ours > limit:
        misses.append(f"{ours:.2f} us > {limit:g}")
    if factor is not None and comparable:
        name, fastest = min(comparable.items(), key=lambda kv: kv[1])
        if fastest / ours < factor:
            misses.append(f"{fastest / ours:.1f}x < {factor:g}x vs {name}")
    return "met" if not misses else "MISSED: " + "; ".join(misses)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="few repeats (a smoke test)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--repeats", type=int, help="repeats per workload (default 40; quick 5)")
    parser.add_argument("--count", type=int, default=1000, help="distinct headers per workload")
    parser.add_argument("--seed", type=int, default=20260427, help="seed of the input generator")
    args = parser.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 40)
    feed_repeats = max(2, repeats // 4) if not args.quick else 2
    started = time.perf_counter()

    ours, pp, ours_note = load_ours()
    peer_impls, missing_peers = load_peers()
    impls: list[Impl] = ([ours] if ours else []) + peer_impls
    inputs = Inputs(args.seed, args.count)
    rng = random.Random(args.seed ^ 0x5EED)

    print(
        f"proxyproto core benchmark -- Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"ours:  {ours_note}")
    print("peers: " + (", ".join(f"{p.name} {p.version}" for p in peer_impls) or "none"))
    for line in missing_peers:
        print(f"       {line}")
    print(
        f"method: {args.count} distinct headers per workload (seed {args.seed}); {repeats} "
        "repeats; implementations interleaved in a new random order in each repeat; gc off "
        "while timing;\n        figure = minimum over repeats of (pass time / headers), in us "
        "per header; ratio = peer / ours (speedup)."
    )

    failures: list[str] = []
    footnotes: list[str] = []
    results: dict[str, dict[str, Any]] = {}
    peer_names = [p.name for p in peer_impls]

    for key in (V2_IPV4, V1_TCP4, V2_TLVS, BUILD):
        fns: dict[str, Callable[[Any], object]] = {}
        skipped: dict[str, str] = {}
        for impl in impls:
            if key in impl.unsupported:
                skipped[impl.name] = impl.unsupported[key]
                continue
            if key == BUILD:
                problem = check_build(impl, inputs) if impl.build else "has no builder"
                fn: Callable[[Any], object] | None = impl.build
            else:
                problem = check_parse(impl, key, inputs)
                fn = impl.parse[key]
            if problem is not None or fn is None:
                msg = f"{impl.name} failed its check on {WORKLOAD_TITLES[key]}: {problem}"
                failures.append(msg)
                skipped[impl.name] = f"FAILED CHECK: {problem}"
                continue
            fns[impl.name] = fn
        items: Sequence[Any] = inputs.build_specs if key == BUILD else inputs.parse_inputs(key)[0]
        figures = measure(fns, items, repeats, rng) if fns else {}
        results[key] = {"figures": figures, "skipped": skipped}
        for name, why in skipped.items():
            if not (ours is not None and name == ours.name and key in ours.unsupported):
                footnotes.append(f"n/a  {name}, {WORKLOAD_TITLES[key]}: {why}")
    overhead = measure({"null": _null}, inputs.v2_ipv4, max(3, repeats // 4), rng)["null"]

    # ---- main table
    ours_name = ours.name if ours else "proxyproto"
    col = 22
    head = f"{'workload':<20} {'ours us':>8} |" + "".join(
        f" {name + ' us (x)':<{col}}|" for name in peer_names
    )
    print()
    print(head + f" {'goal':<32}| status")
    print("-" * (len(head) + 45))
    json_workloads: dict[str, Any] = {}
    for key in (V2_IPV4, V1_TCP4, V2_TLVS, BUILD):
        figures = results[key]["figures"]
        skipped = results[key]["skipped"]
        mine = figures.get(ours_name)
        cells = []
        comparable: dict[str, float] = {}
        json_peers: dict[str, Any] = {}
        for impl in peer_impls:
            value = figures.get(impl.name)
            if value is None:
                cells.append(f" {'n/a':<{col}}|")
                json_peers[impl.name] = {"us": None, "why": skipped.get(impl.name)}
                continue
            ratio = value / mine if mine else None
            mark = "*" if key in impl.caveats else ""
            text = _us(value) + mark + (f" ({ratio:.1f}x)" if ratio else "")
            cells.append(f" {text:<{col}}|")
            if key in impl.caveats:
                footnotes.append(
                    f"*    {impl.name}, {WORKLOAD_TITLES[key]}: {impl.caveats[key]}"
                    " -- not counted for the goal"
                )
            else:
                comparable[impl.name] = value
            json_peers[impl.name] = {"us": value, "ratio": ratio, "caveat": impl.caveats.get(key)}
        status = _status(key, mine, comparable)
        print(
            f"{WORKLOAD_TITLES[key]:<20} {_us(mine):>8} |"
            + "".join(cells)
            + f" {_goal_text(key):<32}| {status}"
        )
        json_workloads[key] = {
            "title": WORKLOAD_TITLES[key],
            "ours_us": mine,
            "ours_skipped": skipped.get(ours_name),
            "peers": json_peers,
            "goal": _goal_text(key),
            "status": status,
        }
    print(f"(harness loop + call overhead, included in every figure: {overhead:.3f} us per header)")
    if ours is None:
        print(f"ours: {ours_note}")
    elif ours.unsupported:
        print("ours: not measured where " + "; ".join(sorted(set(ours.unsupported.values()))))
    for line in footnotes:
        print(line)

    # ---- TLV field coverage
    print()
    print(
        "TLV fields read in 'v2 five TLVs' (yes: the implementation decodes it; adapter: raw "
        "bytes decoded in our adapter, cost included; n/a: not exposed):"
    )
    cov_impls = ([ours] if ours and V2_TLVS not in ours.unsupported else []) + peer_impls
    print(f"  {'field':<12}" + "".join(f"{i.name:>16}" for i in cov_impls))
    for f in TLV_FIELDS:
        print(f"  {f:<12}" + "".join(f"{i.tlv_fields.get(f, NA):>16}" for i in cov_impls))

    # ---- byte at a time
    print()
    print(
        "byte-at-a-time: one v2 header fed 1 byte per receive_data() + next_event() into "
        "HeaderParser (ours only); each pass feeds 64 KiB"
    )
    feed_json: dict[str, Any] = {}
    if pp is None or not hasattr(pp, "HeaderParser") or not hasattr(pp, "NEED_DATA"):
        print("  skipped: proxyproto.HeaderParser / NEED_DATA not available yet")
        feed_json = {"skipped": "HeaderParser not available"}
    else:
        per_byte, problem = measure_feed(pp, inputs, feed_repeats, rng)
        if problem is not None:
            failures.append(f"{ours_name} failed its byte-at-a-time check: {problem}")
            print(f"  FAILED CHECK: {problem}")
            feed_json = {"failed": problem}
        else:
            base = per_byte[FEED_SIZES[0][0]]
            for size, _n in FEED_SIZES:
                print(
                    f"  {size // 1024:>3} KiB header: {per_byte[size]:8.1f} ns/byte"
                    f"   x{per_byte[size] / base:.2f} of 1 KiB"
                )
            ratio = per_byte[FEED_SIZES[-1][0]] / base
            verdict = "met" if ratio <= LINEAR_LIMIT else "MISSED"
            print(
                f"  goal: linear (64 KiB / 1 KiB per-byte cost <= {LINEAR_LIMIT:g}): "
                f"{ratio:.2f} -> {verdict}"
            )
            feed_json = {
                "ns_per_byte": {str(k): v for k, v in per_byte.items()},
                "ratio_64k_1k": ratio,
                "status": verdict,
            }

    # ---- notes
    print()
    print("what a fair reading must know:")
    for impl in peer_impls:
        for note in impl.notes:
            print(f"  {impl.name}: {note}")
    for msg in failures:
        print(f"CHECK FAILED: {msg}")
    print(f"(total {time.perf_counter() - started:.1f} s)")

    if args.json:
        doc = {
            **machine(),
            "count": args.count,
            "repeats": repeats,
            "seed": args.seed,
            "ours": ours_note,
            "peers": {p.name: p.version for p in peer_impls},
            "missing_peers": missing_peers,
            "overhead_us": overhead,
            "workloads": json_workloads,
            "byte_at_a_time": feed_json,
            "tlv_fields": {i.name: i.tlv_fields for i in cov_impls},
            "check_failures": failures,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
