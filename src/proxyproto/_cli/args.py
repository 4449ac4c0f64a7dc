"""The argument types and options the subcommands share, and what they turn into.

Addresses on the command line are ``HOST:PORT`` for IPv4, ``[HOST]:PORT`` for IPv6 and
``unix:/path`` for UNIX sockets: :func:`split_address` reads them and
:func:`proxyproto._cli.output.format_address` writes them, so what ``parse`` prints can be given
back to ``build``.

The ``type=`` functions raise :class:`argparse.ArgumentTypeError` with a message for the user;
the relay's configuration file (:mod:`proxyproto._cli.relay_config`) checks its values with the same
ones. :func:`proxy_config` is the one place where ``--trusted``, ``--policy`` and
``--header-timeout`` become a :class:`~proxyproto.ProxyProtocolConfig` (``echo``, ``relay``,
``hypercorn``).

This module imports no I/O library (and not the relay), so that anything may import it.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import string
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import attrs

from proxyproto._core.model import Header, TLVs, Transport
from proxyproto._handshake.config import ProxyProtocolConfig
from proxyproto._handshake.engine import Refusal
from proxyproto._handshake.policy import PeerAddress, Policy, PolicyCallable, trusted_proxies

if TYPE_CHECKING:
    from typing import TypeAlias

    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
    Command: TypeAlias = Callable[[argparse.Namespace], int]

__all__ = [
    "add_backend_option",
    "add_command",
    "add_tlv_options",
    "add_version_options",
    "connect_address",
    "decode_hex",
    "header_address",
    "header_from_args",
    "hex_bytes",
    "hex_digits",
    "listen_address",
    "network",
    "positive_int",
    "proxy_config",
    "relay_listen",
    "relay_target",
    "relay_trusted",
    "run",
    "seconds",
    "split_address",
]

PROG = "proxyproto"
UNIX_PREFIX = "unix:"
_HEX_DIGITS = frozenset(string.hexdigits)


# --- addresses ---------------------------------------------------------------------------------


def split_address(text: str) -> tuple[str, int] | str:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``unix:/path`` as ``(host, port)`` or a path.

    The host is not checked (later subcommands connect to names); raises :class:`ValueError`
    with a message for the user.
    """
    if text.startswith(UNIX_PREFIX):
        path = text[len(UNIX_PREFIX) :]
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


def header_address(text: str) -> tuple[str, int] | str:
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


def listen_address(text: str) -> tuple[str, int]:
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


def connect_address(text: str) -> tuple[str, int]:
    """argparse ``type=``: ``HOST:PORT`` to connect to."""
    address = listen_address(text)
    if address[1] == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: port 0 cannot be connected to")
    return address


def relay_target(text: str) -> tuple[str, int] | str:
    """argparse ``type=`` of the relay's ``--to``: ``HOST:PORT`` or ``unix:/path`` (TCP only)."""
    if text.startswith(UNIX_PREFIX):
        try:
            return split_address(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return connect_address(text)


def relay_listen(text: str) -> tuple[str, int] | str:
    """argparse ``type=`` of the relay's ``--listen``: ``HOST:PORT``, or ``unix:/path`` (TCP)."""
    if text.startswith(UNIX_PREFIX):
        try:
            return split_address(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return listen_address(text)


#: The relay's ``--trusted`` entry that trusts every peer of a UNIX-socket listener.
TRUSTED_UNIX = "unix"


def relay_trusted(text: str) -> str:
    """argparse ``type=`` of the relay's ``--trusted``: a network, or ``unix`` (UNIX peers)."""
    return TRUSTED_UNIX if text == TRUSTED_UNIX else network(text)


def network(text: str) -> str:
    """argparse ``type=``: an IP address or network, as :func:`proxyproto.trusted_proxies` takes."""
    try:
        ipaddress.ip_network(text)
    except ValueError as error:
        message = f"{text!r} is not an IP address or network: {error}"
        raise argparse.ArgumentTypeError(message) from None
    return text


# --- numbers and bytes -------------------------------------------------------------------------


def seconds(text: str) -> float:
    """argparse ``type=``: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def positive_int(text: str) -> int:
    """argparse ``type=``: a positive whole number, in decimal digits."""
    if not (text.isascii() and text.isdigit()) or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def hex_bytes(text: str) -> bytes:
    """argparse ``type=``: hex digits, whitespace allowed, with an optional ``0x``."""
    try:
        return decode_hex(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def decode_hex(text: str) -> bytes:
    """What :func:`hex_bytes` reads; raises :class:`ValueError` with a message for the user."""
    digits = hex_digits(text)
    if digits is None:
        raise ValueError("not hex: only 0-9, a-f, whitespace and a leading 0x are allowed")
    if len(digits) % 2:
        raise ValueError(f"odd number of hex digits ({len(digits)})")
    return bytes.fromhex(digits)


def hex_digits(text: str) -> str | None:
    """The hex digits of ``text`` without whitespace and ``0x``; ``None`` if it is not hex."""
    digits = "".join(text.split())
    if digits[:2] in ("0x", "0X"):
        digits = digits[2:]
    return digits if _HEX_DIGITS.issuperset(digits) else None


# --- the PROXY options -------------------------------------------------------------------------


def proxy_config(
    *,
    trusted: Sequence[str] = (),
    policy: Policy | None = None,
    header_timeout: float | None = None,
    refuse_strangers: bool = False,
) -> ProxyProtocolConfig:
    """The config ``--trusted``, ``--policy`` and ``--header-timeout`` describe.

    Without ``trusted``, ``policy`` (default ``REQUIRE``) applies to every peer. With it, peers
    in those networks get ``policy`` and every other peer ``REJECT`` (served as itself, a header
    refused: :func:`proxyproto.trusted_proxies`) -- or, with ``refuse_strangers`` (the relay's
    ``--trusted``, as rpxy-l4 does), is refused before a byte is read. ``header_timeout``
    ``None`` keeps the default.

    >>> config = proxy_config(trusted=["10.0.0.0/8"], policy=Policy.USE)
    >>> config.policy(("10.1.2.3", 4000)), config.policy(("192.0.2.1", 4000))
    (<Policy.USE: 'use'>, <Policy.REJECT: 'reject'>)
    """
    chosen = policy or Policy.REQUIRE
    rule: Policy | PolicyCallable = chosen
    if trusted and refuse_strangers:
        rule = _trusted_only(trusted, chosen)
    elif trusted:
        rule = trusted_proxies(trusted, trusted=chosen, otherwise=Policy.REJECT)
    if header_timeout is None:
        return ProxyProtocolConfig(policy=rule)
    return ProxyProtocolConfig(policy=rule, header_timeout=header_timeout)


def _trusted_only(trusted: Sequence[str], policy: Policy) -> PolicyCallable:
    """``policy`` for the peers in ``trusted``; anyone else is refused before a byte is read.

    As rpxy-l4 does: with ``REJECT`` for strangers (what :func:`trusted_proxies` gives them), a
    stranger that sends no header would be relayed as itself. The listener resolves the policy
    inside its handshake, so the :class:`Refusal` raised here is handled like any other: the
    connection is closed, counted (``rejected["policy"]``) and logged once, naming the peer.

    The entry ``unix`` (:data:`TRUSTED_UNIX`) trusts every peer that is not an IP address: a
    client of a UNIX-socket listener, whose peer has no address to match (who may connect is
    the socket file's permissions' to say).
    """
    networks = [entry for entry in trusted if entry != TRUSTED_UNIX]
    unix = len(networks) < len(trusted)
    is_trusted = trusted_proxies(networks, trusted=Policy.REQUIRE, otherwise=Policy.REJECT)
    reason = f"not a trusted peer (trusted: {', '.join(trusted)})"

    def relay_policy(peer: PeerAddress) -> Policy:
        if unix and not isinstance(peer, tuple):
            return policy
        if is_trusted(peer) is not Policy.REQUIRE:
            raise Refusal("policy", reason)
        return policy

    return relay_policy


# --- the header options (build, send) ----------------------------------------------------------


def add_version_options(parser: argparse.ArgumentParser) -> None:
    version = parser.add_mutually_exclusive_group()
    version.add_argument("--v1", dest="version", action="store_const", const=1, help="v1, text")
    version.add_argument(
        "--v2", dest="version", action="store_const", const=2, help="v2, binary (the default)"
    )


def add_tlv_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The TLV options ``build`` and ``send`` share; :func:`header_from_args` reads them."""
    tlvs = parser.add_argument_group("TLVs (v2 only)")
    tlvs.add_argument("--alpn", metavar="PROTOCOL", help="e.g. h2")
    tlvs.add_argument("--authority", metavar="HOST", help="e.g. the TLS SNI")
    tlvs.add_argument("--unique-id", type=hex_bytes, metavar="HEX", help="up to 128 bytes")
    tlvs.add_argument("--crc32c", action="store_true", help="add a CRC32C checksum")
    return tlvs


def header_from_args(args: argparse.Namespace) -> Header:
    """The header the options of ``build`` or ``send`` describe.

    :raises proxyproto.HeaderEncodingError: what the options ask for cannot be said (v1 LOCAL, ...).
    """
    tlvs = TLVs(
        alpn=None if args.alpn is None else args.alpn.encode(),
        authority=args.authority,
        unique_id=args.unique_id,
    )
    if args.local:
        header = Header.local(tlvs=tlvs)
    elif args.unknown:
        header = attrs.evolve(Header.unknown(), tlvs=tlvs)
    else:
        header = Header.proxy(
            args.source,
            args.destination,
            version=args.version or 2,
            transport=Transport.DGRAM if args.dgram else Transport.STREAM,
            tlvs=tlvs,
        )
    if args.version is not None:
        # The encoder refuses what the other version cannot say (v1 LOCAL, v1 TLVs, ...).
        header = attrs.evolve(header, version=args.version)
    return header


# --- the backend -------------------------------------------------------------------------------


def add_backend_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="the event loop anyio runs on (default: asyncio)",
    )


def run(backend: str, func: Callable[..., Awaitable[int]], *args: object) -> int:
    """``func(*args)`` on ``--backend``'s event loop, through anyio."""
    import anyio

    # A backend whose package is missing (anyio's LookupError) is reported by main().
    return anyio.run(func, *args, backend=backend)


# --- plumbing ----------------------------------------------------------------------------------


def add_command(
    subparsers: Subparsers,
    name: str,
    run: Command,
    summary: str,
    description: str,
    epilog: str,
) -> argparse.ArgumentParser:
    """A subcommand's parser; ``args.run(args)`` runs it, ``args.parser`` reports usage errors."""
    parser = subparsers.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(run=run, parser=parser, command=name)
    return parser
