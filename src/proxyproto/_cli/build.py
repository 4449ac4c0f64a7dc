"""``proxyproto build``: encode a header, as hex or raw bytes."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import proxyproto as pp

from .args import (
    add_command,
    add_tlv_options,
    add_version_options,
    header_address,
    header_from_args,
    positive_int,
)

if TYPE_CHECKING:
    from .args import Subparsers

__all__ = ["add"]


def add(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "build",
        _build,
        "encode a header",
        "Encode one PROXY protocol header; print it as hex, or write the raw bytes.\n\n"
        "Addresses: 192.0.2.1:56324, [2001:db8::1]:443, or unix:/run/app.sock (v2 only).\n"
        "The default is v2; --unknown alone gives v1's 'PROXY UNKNOWN'.",
        "examples:\n"
        "  proxyproto build --source 192.0.2.1:56324 --destination 198.51.100.7:443 --v1\n"
        "  proxyproto build --source [2001:db8::1]:56324 --destination [2001:db8::2]:443 \\\n"
        "      --alpn h2 --authority example.com --crc32c --raw | proxyproto parse\n"
        "  proxyproto build --local --pad-to 64",
    )
    parser.add_argument(
        "--source", type=header_address, metavar="ADDRESS", help="the client's address"
    )
    parser.add_argument(
        "--destination", type=header_address, metavar="ADDRESS", help="the address it connected to"
    )
    add_version_options(parser)
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument(
        "--local", action="store_true", help="LOCAL: a connection of the proxy's own (v2)"
    )
    kind.add_argument(
        "--unknown", action="store_true", help="no addresses: v1 UNKNOWN, or v2 PROXY UNSPEC"
    )
    parser.add_argument("--dgram", action="store_true", help="UDP (v2), not TCP")
    tlvs = add_tlv_options(parser)
    tlvs.add_argument("--pad-to", type=positive_int, metavar="N", help="pad to N bytes (NOOP)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--hex", dest="output", action="store_const", const="hex", help="print hex (default)"
    )
    output.add_argument(
        "--raw", dest="output", action="store_const", const="raw", help="write the raw bytes"
    )
    parser.set_defaults(output="hex")


def _build(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    addressed = args.source is not None or args.destination is not None
    if args.local or args.unknown:
        if addressed or args.dgram:
            parser.error("--local and --unknown take no --source, --destination or --dgram")
    elif args.source is None or args.destination is None:
        parser.error("--source and --destination are required, unless --local or --unknown")
    try:
        data = header_from_args(args).to_bytes(crc32c=args.crc32c, pad_to=args.pad_to)
    except pp.HeaderEncodingError as error:
        parser.error(str(error))
    if args.output == "raw":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        print(data.hex())
    return 0
