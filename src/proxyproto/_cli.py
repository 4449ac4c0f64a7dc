"""The ``proxyproto`` command: inspect and build PROXY protocol headers, serve and send them.

Each subcommand is a pair of small functions: ``_add_<name>(subparsers)`` declares its options and
``_<name>(args)`` runs it and returns the exit status. :func:`main` dispatches. Exit statuses:

- 0: ok (``echo``, ``relay``, ``hypercorn``: stopped by SIGINT or SIGTERM);
- 1: ``parse``: an invalid or incomplete header; ``echo``, ``relay``, ``hypercorn``: it cannot
  listen (``hypercorn``: or the application cannot be loaded, or a worker failed); ``send``: the
  connection was refused or failed, or the header cannot be encoded; any command: an optional
  package it needs is not installed (the line names the extra to install); one line on stderr;
- 2: a usage error (argparse's);
- 130: ``send`` interrupted by Ctrl-C.

Addresses on the command line are ``HOST:PORT`` for IPv4, ``[HOST]:PORT`` for IPv6 and
``unix:/path`` for UNIX sockets: :func:`split_address` reads them and :func:`format_address`
writes them, so what ``parse`` prints can be given back to ``build``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import ipaddress
import json
import logging
import math
import os
import signal
import socket
import stat
import string
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import attrs
from anyio.abc import SocketAttribute

import proxyproto as pp

from . import _text
from ._extras import missing
from ._text import json_text, printable

if TYPE_CHECKING:
    from typing import TypeAlias

    _Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
    _Command: TypeAlias = Callable[[argparse.Namespace], int]

__all__ = ["format_address", "main", "split_address"]

_PROG = "proxyproto"
_UNIX_PREFIX = "unix:"
_HEX_DIGITS = frozenset(string.hexdigits)


# --- addresses ---------------------------------------------------------------------------------


def split_address(text: str) -> tuple[str, int] | str:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``unix:/path`` as ``(host, port)`` or a path.

    The host is not checked (later subcommands connect to names); raises :class:`ValueError`
    with a message for the user.
    """
    if text.startswith(_UNIX_PREFIX):
        path = text[len(_UNIX_PREFIX) :]
        if not path:
            raise ValueError(f"{text!r} has an empty UNIX path")
        return path
    if text.startswith("["):
        host, bracket, port = text[1:].partition("]")
        colon = port[:1]
        port = port[1:]
        if not bracket or colon != ":":
            raise ValueError(f"{text!r} is not [IPV6]:PORT")
    else:
        host, colon, port = text.rpartition(":")
        if ":" in host:
            raise ValueError(f"{text!r}: put an IPv6 address in brackets, e.g. [::1]:443")
    if not colon or not host:
        raise ValueError(f"{text!r} is not HOST:PORT, [IPV6]:PORT or unix:/path")
    if not (port.isascii() and port.isdigit()) or int(port) > 0xFFFF:
        raise ValueError(f"{text!r}: port {port!r} is not a number from 0 to 65535")
    return host, int(port)


def format_address(address: pp.Address) -> str:
    """The inverse of :func:`split_address`; ``-`` for no address.

    Printable whatever the address holds (a UNIX path from a header can hold any byte): what is
    not is escaped as :func:`proxyproto._text.printable` says, and then only the escaped form
    reads back.
    """
    return _text.format_address(address, unix_prefix=_UNIX_PREFIX)


def _header_address(text: str) -> tuple[str, int] | str:
    """argparse ``type=``: an address a header can carry, i.e. an IP literal or a UNIX path."""
    try:
        address = split_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if isinstance(address, tuple):
        host = address[0]
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: {host!r} is not an IP address (a header carries addresses, not names)"
            ) from None
        if text.startswith("[") != (ip.version == 6):
            raise argparse.ArgumentTypeError(f"{text!r}: only IPv6 addresses go in brackets")
    return address


def _hex_bytes(text: str) -> bytes:
    """argparse ``type=``: hex digits, whitespace allowed, with an optional ``0x``."""
    try:
        return _decode_hex(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _decode_hex(text: str) -> bytes:
    digits = _hex_digits(text)
    if digits is None:
        raise ValueError("not hex: only 0-9, a-f, whitespace and a leading 0x are allowed")
    if len(digits) % 2:
        raise ValueError(f"odd number of hex digits ({len(digits)})")
    return bytes.fromhex(digits)


def _hex_digits(text: str) -> str | None:
    """The hex digits of ``text`` without whitespace and ``0x``; ``None`` if it is not hex."""
    digits = "".join(text.split())
    if digits[:2] in ("0x", "0X"):
        digits = digits[2:]
    return digits if _HEX_DIGITS.issuperset(digits) else None


def _positive_int(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


# --- parse -------------------------------------------------------------------------------------


def _add_parse(subparsers: _Subparsers) -> None:
    parser = _add_command(
        subparsers,
        "parse",
        _parse,
        "decode a header and print what it says",
        "Decode one PROXY protocol header (v1 or v2), given as hex or on stdin.\n\n"
        "On stdin, text that is all hex digits and whitespace is decoded as hex; anything else\n"
        "is taken as the raw bytes of the header. Bytes after the header are counted, not shown.\n"
        "Exit status 1 when the header is invalid or incomplete.",
        "examples:\n"
        "  proxyproto parse 50524f585920554e4b4e4f574e0d0a\n"
        "  proxyproto build --source 192.0.2.1:56324 --destination 198.51.100.7:443 \\\n"
        "      --alpn h2 --raw | proxyproto parse --json\n"
        "  printf 'PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\\r\\n' | proxyproto parse",
    )
    parser.add_argument(
        "hex", nargs="?", type=_hex_bytes, metavar="HEX", help="the header as hex (default: stdin)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _parse(args: argparse.Namespace) -> int:
    data: bytes | None = args.hex
    if data is None:
        isatty = getattr(sys.stdin, "isatty", None)
        if isatty is not None and isatty():
            args.parser.error("give the header as a HEX argument, or pipe it on stdin")
        try:
            data = _stdin_header(sys.stdin.buffer.read())
        except ValueError as error:
            return _fail(f"invalid header: stdin looks like hex, but: {error}")
    try:
        header, size = pp.parse(data)
    except pp.IncompleteHeader as error:
        return _fail(f"incomplete header: {error}")
    except pp.InvalidHeader as error:
        return _fail(f"invalid header: {error}")
    trailing = len(data) - size
    if args.json:
        print(json.dumps(_header_json(header, size, trailing), indent=2))
    else:
        _print_rows(_header_rows(header, size, trailing))
    return 0


def _stdin_header(data: bytes) -> bytes:
    """Hex text is decoded; anything else is the header's raw bytes."""
    if _hex_digits(data.decode("ascii", "replace")) is None:  # U+FFFD is not a hex digit
        return data
    return _decode_hex(data.decode("ascii"))


_FAMILY_NAMES = {
    pp.Family.UNSPEC: "UNSPEC (no address)",
    pp.Family.INET: "INET (IPv4)",
    pp.Family.INET6: "INET6 (IPv6)",
    pp.Family.UNIX: "UNIX",
}

#: A row of the human-readable output: indentation level, label, value.
_Row = tuple[int, str, str]


def _header_rows(header: pp.Header, size: int | None, trailing: int) -> list[_Row]:
    """The header as rows; ``size`` is left out when unknown (a server's stream does not say)."""
    rows: list[_Row] = [
        (0, "version", f"{header.version} ({'text' if header.version == 1 else 'binary'})"),
        (0, "command", header.command.name),
        (0, "family", _FAMILY_NAMES[header.family]),
        (0, "transport", header.transport.name),
        (0, "source", format_address(header.source)),
        (0, "destination", format_address(header.destination)),
    ]
    if size is not None:
        rows.append((0, "header size", f"{size} bytes"))
    if trailing:
        rows.append((0, "trailing data", f"{trailing} bytes after the header"))
    tlv_rows = _tlv_rows(header.tlvs)
    rows.append((0, "TLVs", f"{len(header.tlvs.raw)}" if tlv_rows else "none"))
    rows.extend(tlv_rows)
    return rows


def _tlv_rows(tlvs: pp.TLVs) -> list[_Row]:
    """One row per TLV in wire order; SSL adds its fields. Unknown TLVs as type and hex."""
    rows: list[_Row] = []
    # A type may repeat. A registered type's typed field is its first occurrence: show the later
    # ones raw, marked unused. A vendor type's field is its first well-formed one: when it repeats,
    # show each of them raw.
    counts = Counter(kind for kind, _ in tlvs.raw)
    seen: set[int] = set()
    vendor: dict[int, tuple[str, object]] = {
        pp.TLVType.AWS: ("AWS VPC endpoint id", tlvs.aws_vpce_id),
        pp.TLVType.AZURE: ("Azure link id", tlvs.azure_link_id),
        pp.TLVType.GCP: ("GCP PSC id", tlvs.gcp_psc_id),
    }
    for kind, value in tlvs.raw:
        repeated = kind in seen and kind in _REGISTERED
        seen.add(kind)
        if repeated:
            rows.append((1, f"{_tlv_name(kind)} (repeated, unused)", value.hex() or "(empty)"))
        elif kind == pp.TLVType.ALPN and tlvs.alpn is not None:
            rows.append((1, "ALPN", _text_or_hex(tlvs.alpn)))
        elif kind == pp.TLVType.AUTHORITY and tlvs.authority is not None:
            rows.append((1, "AUTHORITY", printable(tlvs.authority)))
        elif kind == pp.TLVType.CRC32C and tlvs.crc32c is not None:
            rows.append((1, "CRC32C", f"0x{tlvs.crc32c:08x} (verified)"))
        elif kind == pp.TLVType.NOOP:
            rows.append((1, "NOOP", f"{len(value)} bytes of padding"))
        elif kind == pp.TLVType.UNIQUE_ID and tlvs.unique_id is not None:
            rows.append((1, "UNIQUE_ID", tlvs.unique_id.hex() or "(empty)"))
        elif kind == pp.TLVType.NETNS and tlvs.netns is not None:
            rows.append((1, "NETNS", printable(tlvs.netns)))
        elif kind == pp.TLVType.SSL and tlvs.ssl is not None:
            rows.append((1, "SSL", "TLS" if tlvs.ssl.ssl else "no TLS"))
            rows.extend(_ssl_rows(tlvs.ssl))
        elif kind in vendor and vendor[kind][1] is not None and counts[kind] == 1:
            label, typed = vendor[kind]
            rows.append((1, label, printable(str(typed))))
        else:
            rows.append((1, _tlv_name(kind), value.hex() or "(empty)"))
    return rows


#: The types the spec registers with a typed field: the field is the first occurrence.
_REGISTERED = frozenset(
    (
        pp.TLVType.ALPN,
        pp.TLVType.AUTHORITY,
        pp.TLVType.CRC32C,
        pp.TLVType.UNIQUE_ID,
        pp.TLVType.SSL,
        pp.TLVType.NETNS,
    )
)


def _ssl_rows(ssl: pp.SSLInfo) -> list[_Row]:
    presented = ssl.client & (pp.SSLClient.CERT_CONN | pp.SSLClient.CERT_SESS)
    if ssl.verified_cert:
        verdict = "client certificate verified"
    elif presented:
        verdict = "client certificate NOT verified"
    else:
        verdict = "no client certificate"
    flags = ", ".join(_client_flags(ssl.client)) or "none"
    rows: list[_Row] = [
        (2, "client", f"0x{ssl.client:02x} ({flags})"),
        (2, "verify", f"{ssl.verify} ({verdict})"),
    ]
    for name in ("version", "cn", "cipher", "sig_alg", "key_alg", "group", "sig_scheme"):
        text = getattr(ssl, name)
        if text is not None:
            rows.append((2, name, printable(text)))
    if ssl.client_cert is not None:
        fingerprint = hashlib.sha256(ssl.client_cert).hexdigest().upper()
        pairs = ":".join(fingerprint[i : i + 2] for i in range(0, len(fingerprint), 2))
        rows.append((2, "client cert", f"{len(ssl.client_cert)} bytes, SHA-256 {pairs}"))
    known = {sub.value for sub in pp.SSLSubType}
    for kind, value in ssl.raw:
        if kind not in known:
            rows.append((2, f"sub-TLV 0x{kind:02X}", value.hex() or "(empty)"))
    return rows


def _client_flags(client: int) -> list[str]:
    names = [str(flag.name) for flag in pp.SSLClient if client & flag]
    unknown = client & ~sum(pp.SSLClient)
    if unknown:
        names.append(f"0x{unknown:02x}")
    return names


def _tlv_name(kind: int) -> str:
    try:
        return f"0x{kind:02X} {pp.TLVType(kind).name}"
    except ValueError:
        return f"0x{kind:02X} (unknown)"


def _text_or_hex(value: bytes) -> str:
    if value.isascii() and value.decode("ascii").isprintable():
        return value.decode("ascii")
    return f"hex {value.hex()}"


def _print_rows(rows: list[_Row]) -> None:
    width = max(2 * indent + len(label) for indent, label, _ in rows)
    for indent, label, value in rows:
        print(f"{'  ' * indent + label:<{width}}  {value}")


def _header_json(header: pp.Header, size: int | None, trailing: int) -> dict[str, object]:
    tlvs = header.tlvs
    ssl = tlvs.ssl
    return {
        "version": header.version,
        "command": header.command.name,
        "family": header.family.name,
        "transport": header.transport.name,
        "source": _address_json(header.source),
        "destination": _address_json(header.destination),
        "header_size": size,
        "trailing_bytes": trailing,
        "tlvs": {
            "alpn": _hex_or_none(tlvs.alpn),
            "authority": _json_text_or_none(tlvs.authority),
            "crc32c": tlvs.crc32c,
            "unique_id": _hex_or_none(tlvs.unique_id),
            "netns": _json_text_or_none(tlvs.netns),
            "ssl": None if ssl is None else _ssl_json(ssl),
            "aws_vpce_id": _json_text_or_none(tlvs.aws_vpce_id),
            "azure_link_id": tlvs.azure_link_id,
            "gcp_psc_id": tlvs.gcp_psc_id,
            "raw": _raw_json(tlvs.raw),
        },
    }


def _ssl_json(ssl: pp.SSLInfo) -> dict[str, object]:
    cert = ssl.client_cert
    return {
        "client": ssl.client,
        "client_flags": _client_flags(ssl.client),
        "verify": ssl.verify,
        "verified_cert": ssl.verified_cert,
        "version": _json_text_or_none(ssl.version),
        "cn": _json_text_or_none(ssl.cn),
        "cipher": _json_text_or_none(ssl.cipher),
        "sig_alg": _json_text_or_none(ssl.sig_alg),
        "key_alg": _json_text_or_none(ssl.key_alg),
        "group": _json_text_or_none(ssl.group),
        "sig_scheme": _json_text_or_none(ssl.sig_scheme),
        "client_cert": _hex_or_none(cert),
        "client_cert_sha256": None if cert is None else hashlib.sha256(cert).hexdigest(),
        "raw": _raw_json(ssl.raw),
    }


def _address_json(address: pp.Address) -> dict[str, object] | str | None:
    if isinstance(address, tuple):
        host, port = address
        return {"host": json_text(host), "port": port}
    return None if address is None else json_text(address)


def _json_text_or_none(text: str | None) -> str | None:
    return None if text is None else json_text(text)


def _hex_or_none(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _raw_json(raw: tuple[tuple[int, bytes], ...]) -> list[dict[str, object]]:
    return [{"type": kind, "value_hex": value.hex()} for kind, value in raw]


# --- build -------------------------------------------------------------------------------------


def _add_build(subparsers: _Subparsers) -> None:
    parser = _add_command(
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
        "--source", type=_header_address, metavar="ADDRESS", help="the client's address"
    )
    parser.add_argument(
        "--destination", type=_header_address, metavar="ADDRESS", help="the address it connected to"
    )
    _add_version_options(parser)
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument(
        "--local", action="store_true", help="LOCAL: a connection of the proxy's own (v2)"
    )
    kind.add_argument(
        "--unknown", action="store_true", help="no addresses: v1 UNKNOWN, or v2 PROXY UNSPEC"
    )
    parser.add_argument("--dgram", action="store_true", help="UDP (v2), not TCP")
    tlvs = _add_tlv_options(parser)
    tlvs.add_argument("--pad-to", type=_positive_int, metavar="N", help="pad to N bytes (NOOP)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--hex", dest="output", action="store_const", const="hex", help="print hex (default)"
    )
    output.add_argument(
        "--raw", dest="output", action="store_const", const="raw", help="write the raw bytes"
    )
    parser.set_defaults(output="hex")


def _add_version_options(parser: argparse.ArgumentParser) -> None:
    version = parser.add_mutually_exclusive_group()
    version.add_argument("--v1", dest="version", action="store_const", const=1, help="v1, text")
    version.add_argument(
        "--v2", dest="version", action="store_const", const=2, help="v2, binary (the default)"
    )


def _add_tlv_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The TLV options ``build`` and ``send`` share; :func:`_header_from_args` reads them."""
    tlvs = parser.add_argument_group("TLVs (v2 only)")
    tlvs.add_argument("--alpn", metavar="PROTOCOL", help="e.g. h2")
    tlvs.add_argument("--authority", metavar="HOST", help="e.g. the TLS SNI")
    tlvs.add_argument("--unique-id", type=_hex_bytes, metavar="HEX", help="up to 128 bytes")
    tlvs.add_argument("--crc32c", action="store_true", help="add a CRC32C checksum")
    return tlvs


def _header_from_args(args: argparse.Namespace) -> pp.Header:
    """The header the options of ``build`` or ``send`` describe.

    :raises pp.HeaderEncodingError: what the options ask for cannot be said (v1 LOCAL, ...).
    """
    tlvs = pp.TLVs(
        alpn=None if args.alpn is None else args.alpn.encode(),
        authority=args.authority,
        unique_id=args.unique_id,
    )
    if args.local:
        header = pp.Header.local(tlvs=tlvs)
    elif args.unknown:
        header = attrs.evolve(pp.Header.unknown(), tlvs=tlvs)
    else:
        header = pp.Header.proxy(
            args.source,
            args.destination,
            version=args.version or 2,
            transport=pp.Transport.DGRAM if args.dgram else pp.Transport.STREAM,
            tlvs=tlvs,
        )
    if args.version is not None:
        # The encoder refuses what the other version cannot say (v1 LOCAL, v1 TLVs, ...).
        header = attrs.evolve(header, version=args.version)
    return header


def _build(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    addressed = args.source is not None or args.destination is not None
    if args.local or args.unknown:
        if addressed or args.dgram:
            parser.error("--local and --unknown take no --source, --destination or --dgram")
    elif args.source is None or args.destination is None:
        parser.error("--source and --destination are required, unless --local or --unknown")
    try:
        data = _header_from_args(args).to_bytes(crc32c=args.crc32c, pad_to=args.pad_to)
    except pp.HeaderEncodingError as error:
        parser.error(str(error))
    if args.output == "raw":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        print(data.hex())
    return 0


# --- echo --------------------------------------------------------------------------------------

#: How long ``echo`` waits, after its reply, for the client to finish sending. Closing a socket
#: with unread bytes makes the kernel send a reset, which can destroy the reply in flight.
_ECHO_DRAIN_SECONDS = 5.0

logger = logging.getLogger("proxyproto")


def _add_echo(subparsers: _Subparsers) -> None:
    parser = _add_command(
        subparsers,
        "echo",
        _echo,
        "a server that shows the PROXY header of every connection",
        "Listen for TCP connections, read each one's PROXY header (v1 or v2) and print it:\n"
        "the real peer (the proxy), the addresses, every TLV, the SSL details and the CRC32C\n"
        "status -- or 'no header (direct)'. Then answer the client with a one-line summary and\n"
        "close. Refused connections are logged on stderr. Runs until SIGINT or SIGTERM.\n\n"
        "Without --trusted, --policy applies to every peer (default: require). With --trusted,\n"
        "peers in those networks get --policy (default: require) and every other peer 'reject'.\n"
        "Exit status 0 when stopped by a signal, 1 when it cannot listen.",
        "examples:\n"
        "  proxyproto echo --listen 127.0.0.1:8000\n"
        "  proxyproto echo --listen [::]:8000 --trusted 10.0.0.0/8 --trusted fd00::/8 --json\n"
        "  proxyproto echo --listen 0.0.0.0:8000 --policy use --header-timeout 2\n"
        "  # then, from another terminal:\n"
        "  proxyproto send 127.0.0.1:8000 --source 192.0.2.1:56324 </dev/null",
    )
    parser.add_argument(
        "--listen",
        required=True,
        type=_listen_address,
        metavar="HOST:PORT",
        help="where to listen; port 0 picks a free one (printed at startup)",
    )
    parser.add_argument(
        "--trusted",
        action="append",
        type=_network,
        metavar="CIDR",
        help="a proxy's address or network (repeat for more)",
    )
    parser.add_argument(
        "--policy",
        type=pp.Policy,
        choices=list(pp.Policy),
        metavar="{" + ",".join(policy.value for policy in pp.Policy) + "}",
        help="what to do with a header (default: require)",
    )
    parser.add_argument(
        "--header-timeout",
        type=_seconds,
        default=pp.ProxyProtocolConfig().header_timeout,
        metavar="S",
        help="seconds a connection gets to send its header (default: %(default)g)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_backend_option(parser)


def _echo(args: argparse.Namespace) -> int:
    if args.trusted:
        policy: pp.Policy | Callable[[Any], pp.Policy] = pp.trusted_proxies(
            args.trusted, trusted=args.policy or pp.Policy.REQUIRE, otherwise=pp.Policy.REJECT
        )
    else:
        policy = args.policy or pp.Policy.REQUIRE
    config = pp.ProxyProtocolConfig(policy=policy, header_timeout=args.header_timeout)
    _log_to_stderr()
    return _run(args.backend, _serve_echo, args, config)


async def _serve_echo(args: argparse.Namespace, config: pp.ProxyProtocolConfig) -> int:
    host, port = args.listen
    try:
        inner = await anyio.create_tcp_listener(local_host=host, local_port=port)
    except OSError as error:
        return _fail(f"cannot listen on {format_address(args.listen)}: {_os_error_text(error)}")
    listener = pp.ProxyProtocolListener(inner, config)
    addresses = [
        format_address(_pair(sub.extra(SocketAttribute.local_address))) for sub in inner.listeners
    ]
    async with listener, anyio.create_task_group() as task_group:
        await task_group.start(_stop_on_signal, task_group.cancel_scope)
        print(f"listening on {', '.join(addresses)}", flush=True)
        await listener.serve(_echo_handler(args.json), task_group)
    return 0


def _echo_handler(as_json: bool) -> Callable[[pp.ProxiedStream], Awaitable[None]]:
    """The connection handler of ``echo``."""

    async def handle(stream: pp.ProxiedStream) -> None:
        peer = format_address(_pair(stream.extra(pp.ProxyAttribute.peer_address)))
        try:
            async with stream:
                summary = _echo_report(stream, as_json)
                await stream.send(summary.encode() + b"\n")
                await stream.send_eof()
                with anyio.move_on_after(_ECHO_DRAIN_SECONDS):
                    while await stream.receive():
                        pass
        except anyio.EndOfStream:
            pass
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as error:
            logger.info("connection from %s: %s", peer, _os_error_text(error))

    return handle


def _echo_report(stream: pp.ProxiedStream, as_json: bool) -> str:
    """Print what ``stream``'s handshake brought; return the summary line for the client."""
    peer = _pair(stream.extra(pp.ProxyAttribute.peer_address))
    policy = stream.extra(pp.ProxyAttribute.policy)
    header = stream.extra(pp.ProxyAttribute.header, None)
    source = stream.extra(pp.ProxyAttribute.source, None)
    if header is None:
        summary = f"client {format_address(peer)} no header (direct)"
    else:
        said = f"header v{header.version} {header.command.name} {header.family.name}"
        said += f" {header.transport.name}"
        if source is not None:
            destination = format_address(stream.extra(pp.ProxyAttribute.destination))
            summary = f"client {format_address(source)} via {format_address(peer)} {said}"
            summary += f" to {destination}"
        else:
            # LOCAL, UNKNOWN, UNSPEC, or a header the policy (IGNORE) reads and drops.
            summary = f"client {format_address(peer)} {said} (addresses not used)"
    if as_json:
        report = {
            "peer": _address_json(peer),
            "policy": policy.value,
            "client": _address_json(source if source is not None else peer),
            "header": None if header is None else _header_json(header, None, 0),
            "summary": summary,
        }
        print(json.dumps(report), flush=True)
        return summary
    print(f"connection from {format_address(peer)} (policy {policy.value})")
    if header is None:
        rows: list[_Row] = [(1, "header", "no header (direct)")]
    else:
        rows = [
            (indent + 1, label, value) for indent, label, value in _header_rows(header, None, 0)
        ]
    rows.append((1, "reply", summary))
    _print_rows(rows)
    print(flush=True)
    return summary


async def _stop_on_signal(
    scope: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for number in signals:
            logger.info("stopping on %s", signal.Signals(number).name)
            scope.cancel()
            return


def _log_to_stderr() -> None:
    """One line per record on stderr for the ``proxyproto`` logger (refused connections)."""
    if any(getattr(handler, "_proxyproto_cli", False) for handler in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    handler._proxyproto_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


# --- send --------------------------------------------------------------------------------------


def _add_send(subparsers: _Subparsers) -> None:
    parser = _add_command(
        subparsers,
        "send",
        _send,
        "connect, send a header, then pipe stdin and stdout like nc",
        "Connect to a server, send one PROXY protocol header, then copy stdin to the connection\n"
        "and the connection to stdout, bytes unchanged, until both are done: stdin's end\n"
        "half-closes the connection, the server's end stops the reading.\n\n"
        "--destination defaults to the address connected to. The header is v2 unless --v1.\n"
        "Exit status 1 when the connection is refused or fails, or the header cannot be encoded.",
        "examples:\n"
        "  proxyproto send 127.0.0.1:8000 --source 192.0.2.1:56324 </dev/null\n"
        "  printf 'GET / HTTP/1.0\\r\\n\\r\\n' | proxyproto send localhost:8080 \\\n"
        "      --source 203.0.113.7:51234 --destination 198.51.100.10:443 --alpn http/1.1\n"
        "  proxyproto send [::1]:8000 --source [2001:db8::1]:4000 --v1\n"
        "  proxyproto send 10.0.0.5:8000 --local --crc32c </dev/null",
    )
    parser.add_argument(
        "target", type=_connect_address, metavar="HOST:PORT", help="the server to connect to"
    )
    parser.add_argument(
        "--source", type=_header_address, metavar="ADDRESS", help="the client the header claims"
    )
    parser.add_argument(
        "--destination",
        type=_header_address,
        metavar="ADDRESS",
        help="the address the header says it connected to (default: HOST:PORT's address)",
    )
    _add_version_options(parser)
    parser.add_argument(
        "--local", action="store_true", help="LOCAL: a connection of the proxy's own (v2)"
    )
    _add_tlv_options(parser)
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="seconds to wait for the connection (default: %(default)g)",
    )
    _add_backend_option(parser)
    parser.set_defaults(unknown=False, dgram=False)


def _send(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    if args.local:
        if args.source is not None or args.destination is not None:
            parser.error("--local takes no --source or --destination")
    elif args.source is None:
        parser.error("--source is required, unless --local")
    try:
        return _run(args.backend, _run_send, args)
    except KeyboardInterrupt:
        return 130


async def _run_send(args: argparse.Namespace) -> int:
    host, port = args.target
    target = format_address(args.target)
    if not args.local and args.destination is None:
        # The header says where the client connected to: the address actually connected to.
        try:
            host = await _resolve(host, port, args.source)
        except OSError as error:
            return _fail(f"cannot connect to {target}: {_os_error_text(error)}")
        args.destination = (host, port)
    try:
        header = _header_from_args(args)
        header.to_bytes(crc32c=args.crc32c)  # refuse before connecting
    except pp.HeaderEncodingError as error:
        return _fail(f"invalid header: {error}")
    try:
        with anyio.fail_after(args.timeout):
            stream = await pp.connect_tcp(host, port, header=header, crc32c=args.crc32c)
    except TimeoutError:
        return _fail(f"cannot connect to {target}: no answer within {args.timeout:g}s")
    except OSError as error:
        return _fail(f"cannot connect to {target}: {_os_error_text(error)}")
    failures: list[str] = []
    async with stream, anyio.create_task_group() as task_group:

        async def pump(copy: Callable[[anyio.abc.ByteStream], Awaitable[None]]) -> None:
            try:
                await copy(stream)
            except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as error:
                failures.append(_os_error_text(error))
                task_group.cancel_scope.cancel()

        task_group.start_soon(pump, _stdin_to_stream)
        task_group.start_soon(pump, _stream_to_stdout)
    if failures:
        return _fail(f"connection to {target} failed: {failures[0]}")
    return 0


async def _resolve(host: str, port: int, source: pp.Address) -> str:
    """``host`` as an IP address, of the source's family when it has one."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return host
    family = socket.AF_UNSPEC
    if isinstance(source, tuple):
        family = socket.AF_INET6 if ":" in source[0] else socket.AF_INET
    found = await anyio.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
    return str(found[0][4][0])


async def _stdin_to_stream(stream: anyio.abc.ByteStream) -> None:
    fd = _stdin_fd()
    if fd is not None:
        # A pipe, socket or terminal is waited on; a file (or /dev/null) never blocks, and
        # epoll refuses it.
        mode = os.fstat(fd).st_mode
        waitable = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)
        while True:
            if waitable:
                await anyio.wait_readable(fd)
            data = os.read(fd, 65536)
            if not data:
                break
            await stream.send(data)
    await stream.send_eof()


def _stdin_fd() -> int | None:
    try:
        return sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # closed, or not a real file
        return None


async def _stream_to_stdout(stream: anyio.abc.ByteStream) -> None:
    out = sys.stdout.buffer
    while True:
        try:
            data = await stream.receive()
        except anyio.EndOfStream:
            return
        out.write(data)
        out.flush()


# --- shared by echo and send -------------------------------------------------------------------


def _listen_address(text: str) -> tuple[str, int]:
    """argparse ``type=``: ``HOST:PORT`` to listen on (port 0 for any free one)."""
    try:
        address = split_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if isinstance(address, str):
        raise argparse.ArgumentTypeError(f"{text!r}: only TCP (HOST:PORT) is supported here")
    _check_host_name(text, address[0])
    return address


def _check_host_name(text: str, host: str) -> None:
    """Refuse a host name that getaddrinfo could not even encode (an empty label as in ``a..b``,
    a label over 63 characters): it raises ``UnicodeError`` there, not ``OSError``, which would
    escape every caller that handles a failed lookup."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            host.encode("idna")
        except UnicodeError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: {host!r} is not a valid host name"
            ) from None


def _connect_address(text: str) -> tuple[str, int]:
    """argparse ``type=``: ``HOST:PORT`` to connect to."""
    address = _listen_address(text)
    if address[1] == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: port 0 cannot be connected to")
    return address


def _network(text: str) -> str:
    """argparse ``type=``: an IP address or network, as :func:`pp.trusted_proxies` takes."""
    try:
        ipaddress.ip_network(text)
    except ValueError as error:
        message = f"{text!r} is not an IP address or network: {error}"
        raise argparse.ArgumentTypeError(message) from None
    return text


def _seconds(text: str) -> float:
    """argparse ``type=``: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _add_backend_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="the event loop anyio runs on (default: asyncio)",
    )


def _run(backend: str, func: Callable[..., Awaitable[int]], *args: object) -> int:
    # A backend whose package is missing (anyio's LookupError) is reported by main().
    return anyio.run(func, *args, backend=backend)


def _pair(address: Any) -> pp.Address:
    """A socket address as the header model writes it: IPv6's flow info and scope id dropped."""
    if isinstance(address, tuple):
        return (str(address[0]), int(address[1]))
    return address  # type: ignore[no-any-return]


def _os_error_text(error: BaseException) -> str:
    """What went wrong, briefly: anyio wraps the refusal of each address it tried."""
    cause: BaseException | None = error
    while cause is not None and not (isinstance(cause, OSError) and cause.errno):
        grouped = getattr(cause, "exceptions", None)  # an exception group (3.10: a backport)
        cause = grouped[0] if grouped else cause.__cause__
    if isinstance(cause, socket.gaierror):
        # getaddrinfo's codes are not errno values: os.strerror(-2) is "Unknown error -2".
        return f"the name did not resolve ({cause.strerror})"
    if isinstance(cause, OSError) and cause.errno:
        return os.strerror(cause.errno)
    return str(error) or type(error).__name__


# --- relay -------------------------------------------------------------------------------------


def _add_relay(subparsers: _Subparsers) -> None:
    from ._relay import BALANCE_MODES, RelaySettings

    parser = _add_command(
        subparsers,
        "relay",
        _relay,
        "an L4 TCP relay that receives and sends PROXY headers",
        "Accept TCP connections and relay each one, bytes unchanged both ways, to a target.\n\n"
        "--accept-proxy reads a PROXY header first: from peers in --trusted (which must send\n"
        "one; anyone else is refused), or from every peer without --trusted. --send-proxy v1|v2\n"
        "prepends a header with the client's address (the header's client when one was\n"
        "accepted, so a chain of relays keeps the original client) to each target connection.\n\n"
        "--balance picks the order targets are tried in: none (as given), random, source-ip or\n"
        "source-socket (a hash of the client's IP, or IP and port). A target that refuses or does\n"
        "not answer within --connect-timeout is skipped for the next; with none left the client\n"
        "is closed and a warning logged.\n\n"
        "One access-log line per connection on stderr (the proxyproto.relay logger, INFO):\n"
        "  peer=REAL_PEER client=CLIENT target=TARGET up=BYTES down=BYTES duration=S end=WHY\n"
        "SIGINT or SIGTERM stops accepting and gives open connections --grace seconds to finish;\n"
        "a second signal closes them at once.\n\n"
        "--config FILE.toml holds the same settings (listen, to, send_proxy, accept_proxy,\n"
        "trusted, balance, header_timeout, connect_timeout, grace) and [[route]] tables, one\n"
        "more listener each, inheriting the top-level settings. Options given on the command\n"
        "line replace the file's top-level values. The file is re-read when it changes: new\n"
        "connections get the new settings, open ones keep theirs; an invalid file is logged\n"
        "and ignored.\n"
        "Exit status 0 when stopped by a signal, 1 when it cannot listen, 2 for a bad option\n"
        "or configuration file.",
        "examples:\n"
        "  proxyproto relay --listen 0.0.0.0:8080 --to 10.0.0.5:80 --send-proxy v2\n"
        "  proxyproto relay --listen [::]:443 --to 10.0.0.5:443 --to 10.0.0.6:443 \\\n"
        "      --balance source-ip --accept-proxy --trusted 10.0.0.0/8 --send-proxy v2\n"
        "  proxyproto relay --listen 127.0.0.1:0 --to 127.0.0.1:8000 --grace 2\n"
        "  proxyproto relay --config /etc/proxyproto/relay.toml --grace 30",
    )
    parser.add_argument(
        "--config",
        metavar="FILE.toml",
        help="a TOML file with the settings and [[route]] tables; re-read when it changes",
    )
    parser.add_argument(
        "--listen",
        type=_listen_address,
        metavar="HOST:PORT",
        help="where to listen; port 0 picks a free one (printed at startup)",
    )
    parser.add_argument(
        "--to",
        action="append",
        dest="targets",
        type=_connect_address,
        metavar="HOST:PORT",
        help="a target (repeat for more)",
    )
    parser.add_argument(
        "--send-proxy",
        choices=("none", "v1", "v2"),
        help="the header to send to targets (default: none)",
    )
    parser.add_argument(
        "--accept-proxy",
        action="store_true",
        default=None,
        help="read a PROXY header from each client",
    )
    parser.add_argument(
        "--trusted",
        action="append",
        type=_network,
        metavar="CIDR",
        help="with --accept-proxy: a proxy's address or network (repeat for more)",
    )
    # No defaults here: with --config, only the options given replace the file's values.
    defaults = RelaySettings(listen=("", 0), targets=())
    parser.add_argument(
        "--balance",
        choices=BALANCE_MODES,
        help="the order targets are tried in (default: none)",
    )
    parser.add_argument(
        "--header-timeout",
        type=_seconds,
        metavar="S",
        help=f"seconds a client gets to send its header (default: {defaults.header_timeout:g})",
    )
    parser.add_argument(
        "--connect-timeout",
        type=_seconds,
        metavar="S",
        help="seconds a target gets to accept a connection"
        f" (default: {defaults.connect_timeout:g})",
    )
    parser.add_argument(
        "--grace",
        type=_seconds,
        metavar="S",
        help="seconds open connections get to finish after SIGINT/SIGTERM"
        f" (default: {defaults.grace:g})",
    )
    _add_backend_option(parser)


def _relay(args: argparse.Namespace) -> int:
    from ._relay import ConfigError, RelayConfig, RelaySettings, serve_relay

    # The options given, as RelaySettings fields: with --config they replace the file's
    # top-level values (which the [[route]] tables inherit unless they set their own).
    given = {
        "listen": args.listen,
        "targets": tuple(args.targets) if args.targets else None,
        "send_proxy": {"none": 0, "v1": 1, "v2": 2}.get(args.send_proxy),
        "accept_proxy": args.accept_proxy,
        "trusted": tuple(args.trusted) if args.trusted else None,
        "balance": args.balance,
        "header_timeout": args.header_timeout,
        "connect_timeout": args.connect_timeout,
        "grace": args.grace,
    }
    overrides = {name: value for name, value in given.items() if value is not None}
    config = None
    if args.config is not None:
        config = RelayConfig(args.config, overrides)
        try:
            routes = config.load()
        except ConfigError as error:
            # One line: the usage text says nothing about a file.
            print(f"{_PROG} relay: error: {error}", file=sys.stderr)
            return 2
    else:
        missing = [
            flag
            for flag, name in (("--listen", "listen"), ("--to", "targets"))
            if name not in overrides
        ]
        if missing:
            args.parser.error(f"the following arguments are required: {', '.join(missing)}")
        if args.trusted and not args.accept_proxy:
            args.parser.error("--trusted needs --accept-proxy")
        routes = (RelaySettings(**overrides),)
    _log_to_stderr()
    return _run(args.backend, serve_relay, routes, config)


# --- hypercorn ---------------------------------------------------------------------------------


def _add_hypercorn(subparsers: _Subparsers) -> None:
    # Every argument, options included, goes to proxyproto.hypercorn.main, which has its own
    # parser: no prefix character here, so nothing after the command is taken for an option.
    parser = subparsers.add_parser(
        "hypercorn",
        help="run an ASGI app with Hypercorn, N workers, PROXY headers on every connection",
        add_help=False,
        prefix_chars="\0",
    )
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    parser.set_defaults(run=_hypercorn, command="hypercorn")


def _hypercorn(args: argparse.Namespace) -> int:
    from .hypercorn import main as hypercorn_main

    return hypercorn_main(args.argv)


# --- demo --------------------------------------------------------------------------------------


def _add_demo(subparsers: _Subparsers) -> None:
    parser = _add_command(
        subparsers,
        "demo",
        _demo,
        "run a PROXY-protocol server and a balancer's connection to it",
        "Start a server with a ProxyProtocolListener on a free loopback port, connect to it\n"
        "as a load balancer would (a v2 header with TLVs and a CRC32C, then a request), and\n"
        "show what the server recovered beside what the balancer claimed.\n"
        "Exit status 0 when everything matches.",
        "examples:\n  proxyproto demo\n  proxyproto demo --backend trio",
    )
    parser.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="the event loop anyio runs on (default: asyncio)",
    )


def _demo(args: argparse.Namespace) -> int:
    import anyio

    from ._demo import run_demo

    ok = anyio.run(run_demo, backend=args.backend)
    if not ok:
        return _fail("demo: the server did not recover what the client claimed")
    print("\nNext: `proxyproto parse --help`, `proxyproto build --help`.")
    return 0


def _show(value: object) -> str:
    if isinstance(value, bytes):
        return repr(value)[2:-1]
    if isinstance(value, list):
        return " | ".join(map(str, value)) or "none"
    return str(value)


# --- plumbing ----------------------------------------------------------------------------------


def _add_command(
    subparsers: _Subparsers,
    name: str,
    run: _Command,
    summary: str,
    description: str,
    epilog: str,
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(run=run, parser=parser, command=name)
    return parser


def _make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Inspect, build, serve and send HAProxy PROXY protocol headers (v1 and v2).",
        epilog="examples:\n  proxyproto demo\n  proxyproto parse --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{_PROG} {pp.__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_parse(subparsers)
    _add_build(subparsers)
    _add_echo(subparsers)
    _add_send(subparsers)
    _add_relay(subparsers)
    _add_hypercorn(subparsers)
    _add_demo(subparsers)
    return parser


def _fail(message: str) -> int:
    print(f"{_PROG}: {message}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``proxyproto`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit status: 0 ok, 1 invalid or incomplete header, 2 usage error (argparse's
    exits, for ``--help`` and ``--version`` too, become return values).
    """
    # Header fields are printed escaped (proxyproto._text), but a printable non-ASCII character
    # still cannot be written to an ASCII-only stdout: escape it there rather than die.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    parser = _make_parser()
    try:
        args = parser.parse_args(argv)
        status: int = args.run(args)
    except SystemExit as exit_:
        # argparse exits for --help, --version and usage errors; return its status instead.
        code = exit_.code
        return code if isinstance(code, int) else 0 if code is None else 1
    except (ModuleNotFoundError, LookupError) as error:
        # An optional package that is not installed (trio for --backend trio, Hypercorn...).
        backend = getattr(args, "backend", None)
        message = missing(error, f"--backend {backend}" if backend == "trio" else args.command)
        if message is None:
            raise
        return _fail(message)
    return status
