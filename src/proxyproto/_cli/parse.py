"""``proxyproto parse``: decode a header and print what it says."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

import proxyproto as pp
from proxyproto._core.extras import missing

from .args import add_command, decode_hex, hex_bytes, hex_digits
from .output import fail, header_json, header_rows, os_error_text, print_rows

if TYPE_CHECKING:
    from .args import Subparsers

__all__ = ["add"]


def add(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "parse",
        _parse,
        "decode a header and print what it says",
        "Decode one PROXY protocol header (v1 or v2), given as hex or on stdin.\n\n"
        "On stdin, text that is all hex digits and whitespace is decoded as hex; anything else\n"
        "is taken as the raw bytes of the header. Bytes after the header are counted, not shown.\n"
        "Exit status 1 when the header is invalid or incomplete.\n\n"
        "With --pcap FILE, read a capture (pcap or pcapng) instead and print one line per TCP\n"
        "connection: its client and server, and the PROXY header its first bytes hold, or why\n"
        "there is none (with --json, one JSON object per line). Exit status 1 when the file\n"
        "cannot be read, 2 when scapy (the pcap extra) is not installed.",
        "examples:\n"
        "  proxyproto parse 50524f585920554e4b4e4f574e0d0a\n"
        "  proxyproto build --source 192.0.2.1:56324 --destination 198.51.100.7:443 \\\n"
        "      --alpn h2 --raw | proxyproto parse --json\n"
        "  printf 'PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\\r\\n' | proxyproto parse\n"
        "  proxyproto parse --pcap balancer.pcapng",
    )
    parser.add_argument(
        "hex", nargs="?", type=hex_bytes, metavar="HEX", help="the header as hex (default: stdin)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (--pcap: one per line)"
    )
    parser.add_argument(
        "--pcap",
        metavar="FILE",
        help="read the headers of every TCP connection in a pcap/pcapng capture (scapy)",
    )


def _parse(args: argparse.Namespace) -> int:
    if args.pcap is not None:
        if args.hex is not None:
            args.parser.error("give a HEX header or --pcap FILE, not both")
        return _parse_pcap(args.pcap, as_json=args.json)
    data: bytes | None = args.hex
    if data is None:
        isatty = getattr(sys.stdin, "isatty", None)
        if isatty is not None and isatty():
            args.parser.error("give the header as a HEX argument, or pipe it on stdin")
        try:
            data = _stdin_header(sys.stdin.buffer.read())
        except ValueError as error:
            return fail(f"invalid header: stdin looks like hex, but: {error}")
    try:
        header, size = pp.parse(data)
    except pp.IncompleteHeader as error:
        return fail(f"incomplete header: {error}")
    except pp.InvalidHeader as error:
        return fail(f"invalid header: {error}")
    trailing = len(data) - size
    if args.json:
        print(json.dumps(header_json(header, size, trailing), indent=2))
    else:
        print_rows(header_rows(header, size, trailing))
    return 0


def _parse_pcap(path: str, *, as_json: bool) -> int:
    try:
        from .pcap import print_streams, read_streams

        streams = read_streams(path)
    except ModuleNotFoundError as error:
        message = missing(error, "proxyproto parse --pcap")
        if message is None:
            raise
        return fail(message)
    except OSError as error:
        return fail(f"cannot read {path}: {os_error_text(error)}")
    except ValueError as error:
        return fail(str(error))
    print_streams(streams, as_json=as_json)
    return 0


def _stdin_header(data: bytes) -> bytes:
    """Hex text is decoded; anything else is the header's raw bytes."""
    if hex_digits(data.decode("ascii", "replace")) is None:  # U+FFFD is not a hex digit
        return data
    return decode_hex(data.decode("ascii"))
