"""Fuzz target for proxyproto's sans-IO parser (atheris, i.e. libFuzzer for Python).

Run it through nox, which installs atheris and the package::

    nox -s fuzz -- 600            # 600 seconds; new inputs go to fuzz/corpus/

or by hand, in an environment that has both: ``python fuzz/fuzz_parser.py -max_total_time=600
fuzz/corpus``. A corpus directory named on the command line is first seeded with the valid headers
in :data:`SEEDS` below.

For every input the target checks:

1. ``parse(data)`` returns ``(header, consumed)`` with ``0 < consumed <= len(data)``, or raises
   ``IncompleteHeader`` or ``InvalidHeader`` -- nothing else.
2. ``HeaderParser`` fed the same bytes one at a time, and in chunks of sizes drawn from the input,
   agrees with ``parse``: the same header and the same trailing bytes; ``NEED_DATA`` and then
   ``InvalidHeader`` at EOF (``receive_data(b"")``) where ``parse`` said ``IncompleteHeader``;
   ``InvalidHeader`` once all bytes are in where ``parse`` said ``InvalidHeader``. Fed one byte at
   a time it rejects exactly at the first byte that rules a header out (reject early).
3. ``parse_datagram(data)`` gives the header that ``parse`` gives and the rest as payload, or
   raises ``InvalidHeader`` (an incomplete datagram is invalid).
4. A parsed header can be encoded again, and encoding is a fixed point after one round (see
   :func:`check_round_trip` for what the first round may legitimately change).

Anything else -- another exception type, or a disagreement -- is a finding: the target raises, and
libFuzzer stops and writes the input to ``fuzz/crash-<sha1>``. Replay one with
``python fuzz/fuzz_parser.py fuzz/crash-<sha1>``.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import atheris
import attrs

# Coverage feedback from proxyproto's own code only: attrs, crc32c and the stdlib would drown it.
with atheris.instrument_imports(include=["proxyproto"]):
    import proxyproto as pp

_UNIX_PAD = "00" * 95  # a 13-byte path NUL-padded to the spec's 108 bytes

#: Valid headers, one per shape the parser knows, built by hand from the spec text (not by
#: proxyproto, so a builder bug cannot hide a parser bug). libFuzzer mutates from these.
SEEDS: dict[str, bytes] = {
    # PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n
    "v1_tcp4": bytes.fromhex(
        "50524f58592054435034203139322e302e322e31203139382e35312e3130302e37203536333234203434330d0a"
    ),
    # PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\r\n
    "v1_tcp6": bytes.fromhex(
        "50524f5859205443503620323030313a6462383a3a3120323030313a6462383a3a32203536333234203434330d0a"
    ),
    # PROXY UNKNOWN\r\n
    "v1_unknown": bytes.fromhex("50524f585920554e4b4e4f574e0d0a"),
    # v2 LOCAL, UNSPEC, no address, no TLV (a health check)
    "v2_local": bytes.fromhex("0d0a0d0a000d0a515549540a20000000"),
    # v2 LOCAL, family byte 0x41 (undefined: ignored, spec 2.2), UNIQUE_ID "id" read from byte 16
    "v2_local_undefined_family": bytes.fromhex("0d0a0d0a000d0a515549540a204100050500026964"),
    # v2 LOCAL, family INET with no address block (length 0)
    "v2_local_inet_empty": bytes.fromhex("0d0a0d0a000d0a515549540a20110000"),
    # v2 PROXY TCP4 192.0.2.1:56324 -> 198.51.100.7:443, AUTHORITY "a" then "b" (the first wins)
    "v2_tcp4_authority_twice": bytes.fromhex(
        "0d0a0d0a000d0a515549540a21110014c0000201c6336407dc0401bb0200016102000162"
    ),
    # v2 PROXY TCP4 192.0.2.1:56324 -> 198.51.100.7:443, ALPN "h2", AUTHORITY "example.com"
    "v2_tcp4_alpn_authority": bytes.fromhex(
        "0d0a0d0a000d0a515549540a2111001f"
        "c0000201c6336407dc0401bb"
        "010002683202000b6578616d706c652e636f6d"
    ),
    # v2 PROXY UDP6 [2001:db8::1]:5353 -> [2001:db8::2]:53
    "v2_udp6": bytes.fromhex(
        "0d0a0d0a000d0a515549540a21220024"
        "20010db8000000000000000000000001"
        "20010db8000000000000000000000002"
        "14e90035"
    ),
    # v2 PROXY UNIX stream /run/src.sock -> /run/dst.sock
    "v2_unix_stream": bytes.fromhex(
        "0d0a0d0a000d0a515549540a213100d8"
        "2f72756e2f7372632e736f636b" + _UNIX_PAD + "2f72756e2f6473742e736f636b" + _UNIX_PAD
    ),
    # v2 PROXY TCP4, UNIQUE_ID "id-42", SSL (client=SSL|CERT_CONN|CERT_SESS, verify=0) with every
    # sub-TLV 0x21-0x28 (VERSION, CN, CIPHER, SIG_ALG, KEY_ALG, GROUP, SIG_SCHEME, CLIENT_CERT),
    # then a correct CRC32C
    "v2_tcp4_ssl_crc32c": bytes.fromhex(
        "0d0a0d0a000d0a515549540a21110088"
        "c0000201c6336407dc0401bb"
        "05000569642d3432"
        "20006a0700000000"
        "210007544c5376312e33"
        "220005616c696365"
        "230016544c535f4145535f3132385f47434d5f534841323536"
        "240006534841323536"
        "25000752534132303438"
        "260006583235353139"
        "2700137273615f7073735f727361655f736861323536"
        "2800053003020101"
        "030004c5b9b579"
    ),
    # v2 PROXY TCP4, NETNS "blue", AWS VPC endpoint id, Azure link id 0x12345678 (u32 LE),
    # GCP PSC id 987654321 (u64 BE), 3 bytes of NOOP padding
    "v2_tcp4_vendor_noop": bytes.fromhex(
        "0d0a0d0a000d0a515549540a21110046"
        "c0000201c6336407dc0401bb"
        "300004626c7565"
        "ea001701767063652d3031323334353637383961626364656630"
        "ee00050178563412"
        "e00008000000003ade68b1"
        "040003000000"
    ),
}


_NOOP = 0x04  # TLV type of padding (spec 2.2.4)


class Finding(AssertionError):
    """The parser broke a promise; the message says which."""


def _check(condition: bool, message: str, data: bytes) -> None:
    if not condition:
        raise Finding(f"{message}\n  input: {data.hex()}")


Outcome = tuple[pp.Header, int] | type[pp.IncompleteHeader] | type[pp.InvalidHeader]


def parse_whole(data: bytes) -> Outcome:
    """``parse(data)``, with the error reduced to its kind; any other exception escapes."""
    try:
        header, consumed = pp.parse(data)
    except pp.IncompleteHeader as exc:
        _check(bool(str(exc)), "IncompleteHeader without a message", data)
        return pp.IncompleteHeader
    except pp.InvalidHeader as exc:
        _check(bool(str(exc)), "InvalidHeader without a message", data)
        return pp.InvalidHeader
    _check(isinstance(header, pp.Header), f"parse returned {header!r}", data)
    _check(0 < consumed <= len(data), f"parse consumed {consumed} of {len(data)} bytes", data)
    return header, consumed


def feed(data: bytes, sizes: list[int]) -> tuple[Outcome, int]:
    """Feed ``data`` to a fresh ``HeaderParser`` in chunks of ``sizes`` (cycled), then EOF.

    Returns the outcome in ``parse_whole``'s terms and how many bytes had been fed when it was
    decided (``len(data) + 1`` when only EOF decided it).
    """
    parser = pp.HeaderParser()
    fed = 0
    index = 0
    while True:
        if fed < len(data):
            size = sizes[index % len(sizes)]
            index += 1
            chunk = data[fed : fed + size]
        else:
            chunk = b""  # EOF
        try:
            parser.receive_data(chunk)
            event = parser.next_event()
        except pp.InvalidHeader as exc:
            _check(bool(str(exc)), "InvalidHeader without a message", data)
            return pp.InvalidHeader, (fed + len(chunk) if chunk else len(data) + 1)
        fed += len(chunk)
        if event is not pp.NEED_DATA:
            _check(isinstance(event, pp.Header), f"next_event returned {event!r}", data)
            _check(bool(chunk), "a header appeared only at EOF", data)
            assert isinstance(event, pp.Header)
            trailing = bytes(parser.trailing_data)
            consumed = fed - len(trailing)
            _check(
                data[consumed:fed] == trailing,
                f"trailing_data {trailing!r} is not what followed the header",
                data,
            )
            return (event, consumed), fed
        if not chunk:
            # After EOF nothing more can come: a header cut short is invalid, not pending.
            raise Finding(f"NEED_DATA after EOF\n  input: {data.hex()}")


def check_incremental(data: bytes, whole: Outcome) -> None:
    rng = random.Random(data)
    chunkings = [
        [1],
        [rng.randint(1, 8) for _ in range(16)],
        [rng.randint(1, max(1, len(data))) for _ in range(4)],
    ]
    for sizes in chunkings:
        outcome, decided_at = feed(data, sizes)
        if whole is pp.IncompleteHeader:
            _check(
                outcome is pp.InvalidHeader and decided_at == len(data) + 1,
                f"parse says incomplete, HeaderParser{sizes[:4]} says {outcome!r}"
                f" after {decided_at} bytes (expected InvalidHeader at EOF)",
                data,
            )
        elif whole is pp.InvalidHeader:
            _check(
                outcome is pp.InvalidHeader and decided_at <= len(data),
                f"parse says invalid, HeaderParser{sizes[:4]} says {outcome!r}"
                f" after {decided_at} of {len(data)} bytes",
                data,
            )
            if sizes == [1]:
                # Reject early: the byte that ruled the header out is the last one fed.
                _check(
                    parse_whole(data[:decided_at]) is pp.InvalidHeader
                    and parse_whole(data[: decided_at - 1]) is pp.IncompleteHeader,
                    f"byte-by-byte rejection at byte {decided_at} is not the first invalid prefix",
                    data,
                )
        else:
            _check(
                outcome == whole,
                f"parse gives {whole!r}, HeaderParser{sizes[:4]} gives {outcome!r}",
                data,
            )


def check_datagram(data: bytes, whole: Outcome) -> None:
    try:
        header, payload = pp.parse_datagram(data)
    except pp.InvalidHeader:
        # parse_datagram may refuse what a stream accepts, never accept what a stream refuses.
        return
    _check(
        isinstance(whole, tuple) and whole[0] == header and data[whole[1] :] == payload,
        f"parse_datagram gives {header!r} + {payload!r}, parse gives {whole!r}",
        data,
    )


def _typed_ssl(ssl: pp.SSLInfo | None) -> pp.SSLInfo | None:
    return None if ssl is None else attrs.evolve(ssl, raw=())


def check_round_trip(data: bytes, header: pp.Header) -> None:
    """Encode the parsed header, parse it again, and encode once more.

    The first round may legitimately change the bytes, so it compares only what the encoding is
    bound to keep:

    - v1 ``UNKNOWN`` may carry anything up to the CRLF (spec 2.1); it re-encodes bare.
    - TLVs (and SSL sub-TLVs) are re-emitted typed fields first, then the ``raw`` entries no typed
      field covers, so ``raw`` may change order; NOOP padding is dropped; a CRC32C TLV is
      recomputed and appended last, not copied.
    - A repeated TLV type keeps its typed field (the first occurrence) and copies the others
      raw, so ``raw`` may change order; a repeated vendor TLV (two AWS TLVs, say) may keep one
      value only. The typed fields are compared only when no type repeats.
    - LOCAL has no address block on re-encoding (spec 2.2); its TLVs are read from byte 16, so
      a zero-filled address block it came with stays as empty type-0 TLVs.

    The second round must then be exact: once encoded by proxyproto, ``parse`` and ``to_bytes``
    are inverse.
    """
    try:
        first = header.to_bytes(crc32c=header.tlvs.crc32c is not None)
    except ValueError as exc:  # HeaderEncodingError
        # A header we accepted but cannot send on: a relay would fail on it.
        raise Finding(f"cannot re-encode {header!r}: {exc}\n  input: {data.hex()}") from exc
    again, consumed = pp.parse(first)
    _check(consumed == len(first), "re-encoded header not consumed whole", data)
    for name in ("version", "command", "family", "transport", "source", "destination"):
        _check(
            getattr(again, name) == getattr(header, name),
            f"{name} changed on re-encoding: {getattr(header, name)!r} -> {getattr(again, name)!r}",
            data,
        )
    typed_types = [t for t, _ in header.tlvs.raw if t != _NOOP]
    if len(typed_types) == len(set(typed_types)):
        # ``raw`` (of the TLVs and of SSL) may change order: compare the typed fields only.
        before = attrs.evolve(header.tlvs, crc32c=None, raw=(), ssl=_typed_ssl(header.tlvs.ssl))
        after = attrs.evolve(again.tlvs, crc32c=None, raw=(), ssl=_typed_ssl(again.tlvs.ssl))
        _check(before == after, f"TLVs changed on re-encoding: {before!r} -> {after!r}", data)
    second = again.to_bytes(crc32c=again.tlvs.crc32c is not None)
    _check(second == first, f"encoding is not a fixed point: {first.hex()} -> {second.hex()}", data)
    _check(pp.parse(second) == (again, len(second)), "parse(to_bytes(h)) != h", data)


def test_one_input(data: bytes) -> None:
    whole = parse_whole(data)
    check_incremental(data, whole)
    check_datagram(data, whole)
    if isinstance(whole, tuple):
        check_round_trip(data, whole[0])


def _seed_corpora(argv: list[str]) -> None:
    """Write :data:`SEEDS` into each corpus directory named on the command line."""
    for arg in argv[1:]:
        path = Path(arg)
        if not arg.startswith("-") and path.is_dir():
            for name, seed in SEEDS.items():
                (path / f"seed-{name}").write_bytes(seed)


def main() -> None:
    for seed in SEEDS.values():  # the seeds must pass before anything is mutated from them
        test_one_input(seed)
    _seed_corpora(sys.argv)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
