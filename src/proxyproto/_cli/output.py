"""What the subcommands print: addresses, a header as rows or JSON, errors, the log on stderr."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import sys
from collections import Counter
from typing import Any

import proxyproto as pp
from proxyproto._core import text
from proxyproto._core.text import json_text, printable

from .args import PROG, UNIX_PREFIX

__all__ = [
    "Row",
    "address_json",
    "fail",
    "format_address",
    "header_json",
    "header_rows",
    "log_to_stderr",
    "logger",
    "os_error_text",
    "pair",
    "print_rows",
]

logger = logging.getLogger("proxyproto")


def format_address(address: pp.Address) -> str:
    """The inverse of :func:`proxyproto._cli.args.split_address`; ``-`` for no address.

    Printable whatever the address holds (a UNIX path from a header can hold any byte): what is
    not is escaped as :func:`proxyproto._core.text.printable` says, and then only the escaped form
    reads back.
    """
    return text.format_address(address, unix_prefix=UNIX_PREFIX)


_FAMILY_NAMES = {
    pp.Family.UNSPEC: "UNSPEC (no address)",
    pp.Family.INET: "INET (IPv4)",
    pp.Family.INET6: "INET6 (IPv6)",
    pp.Family.UNIX: "UNIX",
}

#: A row of the human-readable output: indentation level, label, value.
Row = tuple[int, str, str]


def header_rows(header: pp.Header, size: int | None, trailing: int) -> list[Row]:
    """The header as rows; ``size`` is left out when unknown (a server's stream does not say)."""
    rows: list[Row] = [
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


def _tlv_rows(tlvs: pp.TLVs) -> list[Row]:
    """One row per TLV in wire order; SSL adds its fields. Unknown TLVs as type and hex."""
    rows: list[Row] = []
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


def _ssl_rows(ssl: pp.SSLInfo) -> list[Row]:
    presented = ssl.client & (pp.SSLClient.CERT_CONN | pp.SSLClient.CERT_SESS)
    if ssl.verified_cert:
        verdict = "client certificate verified"
    elif presented:
        verdict = "client certificate NOT verified"
    else:
        verdict = "no client certificate"
    flags = ", ".join(_client_flags(ssl.client)) or "none"
    rows: list[Row] = [
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


def print_rows(rows: list[Row]) -> None:
    width = max(2 * indent + len(label) for indent, label, _ in rows)
    for indent, label, value in rows:
        print(f"{'  ' * indent + label:<{width}}  {value}")


def header_json(header: pp.Header, size: int | None, trailing: int) -> dict[str, object]:
    tlvs = header.tlvs
    ssl = tlvs.ssl
    return {
        "version": header.version,
        "command": header.command.name,
        "family": header.family.name,
        "transport": header.transport.name,
        "source": address_json(header.source),
        "destination": address_json(header.destination),
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


def address_json(address: pp.Address) -> dict[str, object] | str | None:
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


def pair(address: Any) -> pp.Address:
    """A socket address as the header model writes it: IPv6's flow info and scope id dropped."""
    if isinstance(address, tuple):
        return (str(address[0]), int(address[1]))
    return address  # type: ignore[no-any-return]


def os_error_text(error: BaseException) -> str:
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


def log_to_stderr() -> None:
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


def fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 1
