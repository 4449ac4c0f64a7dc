"""The configuration file of ``proxyproto relay`` (``--config FILE.toml``): TOML to routes.

A file is read whole (:meth:`RelayConfig.load`) into one :class:`RelaySettings` per route
(:func:`routes_from`); a bad key or value is a :class:`ConfigError` naming the file and the key.
The relay server (:mod:`proxyproto._cli.relay_server`) watches the file and applies what it
reads; this module only reads and checks. The ``type=`` functions of the command line's TLV and
idle-timeout options live here too, as the file's keys check their values with them.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Mapping
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomli as tomllib

import attrs

from proxyproto._core.errors import HeaderEncodingError
from proxyproto._core.model import Header, TLVs, TLVType

from .args import relay_listen, relay_target, relay_trusted, seconds
from .output import format_address
from .output import os_error_text as _os_error_text
from .probe import DATAGRAM_PROTOCOLS, ProbeUnavailable, require
from .relay_rpxy import RpxyError, from_rpxy, is_rpxy
from .relay_server import _NEVER_KEPT, BALANCE_MODES, ProtocolRoute, RelaySettings

__all__ = [
    "CONFIG_KEYS",
    "ConfigError",
    "RelayConfig",
    "idle_seconds",
    "routes_from",
    "tlv_item",
    "tlv_types",
]

#: The keys of a configuration file (top level and ``[[route]]`` tables) and the
#: :class:`RelaySettings` field each one sets.
CONFIG_KEYS = {
    "name": "name",
    "listen": "listen",
    "to": "targets",
    "send_proxy": "send_proxy",
    "accept_proxy": "accept_proxy",
    "trusted": "trusted",
    "balance": "balance",
    "header_timeout": "header_timeout",
    "connect_timeout": "connect_timeout",
    "grace": "grace",
    "keep_tlvs": "keep_tlvs",
    "add_tlv": "add_tlvs",
    "unique_id": "unique_id",
    "send_proxy_crc32c": "crc32c",
    "idle_timeout": "idle_timeout",
    "probe_timeout": "probe_timeout",
    "protocols": "protocols",
    "udp": "udp",
    "udp_idle_lifetime": "udp_idle_lifetime",
    "udp_max_connections": "udp_max_connections",
    "workers": "workers",
}
#: The keys of a ``[protocols.NAME]`` table.
PROTOCOL_KEYS = (
    "protocol",
    "to",
    "server_names",
    "alpns",
    "balance",
    "send_proxy",
    "idle_timeout",
    "udp_idle_lifetime",
)
_SEND_PROXY = {"none": 0, "v1": 1, "v2": 2}


class ConfigError(ValueError):
    """A configuration that cannot be used; the message is one line naming the file and key."""


class _BadValue(ValueError):
    pass


@attrs.frozen
class RelayConfig:
    """A ``--config`` file, and the command line's settings that replace its top-level ones.

    ``overrides`` maps :class:`RelaySettings` field names to values already checked.
    """

    path: str
    overrides: Mapping[str, Any] = attrs.field(factory=dict)

    def stamp(self) -> tuple[int, int, int] | None:
        """What changes when the file does (``None`` while it cannot be looked at)."""
        try:
            status = os.stat(self.path)
        except OSError:
            return None
        return (status.st_mtime_ns, status.st_size, status.st_ino)

    def load(self) -> tuple[RelaySettings, ...]:
        """Read the file: the routes it describes, command-line values applied.

        :raises ConfigError: the file cannot be read, is not TOML, or holds a bad value.
        """
        try:
            with open(self.path, "rb") as file:
                document = tomllib.load(file)
        except OSError as error:
            raise ConfigError(f"{self.path}: cannot read: {_os_error_text(error)}") from None
        except UnicodeDecodeError as error:
            # TOML is UTF-8 (Latin-1 and UTF-16 files end here too); before ValueError, its base.
            raise ConfigError(
                f"{self.path}: not UTF-8 text: {error.reason} at byte {error.start}"
            ) from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{self.path}: not valid TOML: {error}") from None
        except ValueError as error:
            # An integer of more digits than int() converts (sys.get_int_max_str_digits()).
            raise ConfigError(f"{self.path}: not usable TOML: {error}") from None
        except RecursionError:
            raise ConfigError(f"{self.path}: not usable TOML: nested too deeply") from None
        return routes_from(document, self.overrides, source=self.path)


def routes_from(
    document: Mapping[str, Any], overrides: Mapping[str, Any], *, source: str
) -> tuple[RelaySettings, ...]:
    """The routes of a parsed configuration file.

    The top level holds defaults for every route, replaced by ``overrides`` (the command line);
    it is a route itself when it has a ``listen``. Each ``[[route]]`` table is one more route,
    starting from the top level's settings.
    """
    rpxy = is_rpxy(document)
    if rpxy:
        # rpxy-l4's format: mapped onto ours (relay_rpxy), then checked as ours is.
        try:
            document = from_rpxy(document, frozenset(CONFIG_KEYS))
        except RpxyError as error:
            raise ConfigError(f"{source}: {error}") from None
    tables = document.get("route", [])
    if not isinstance(tables, list) or not all(isinstance(table, dict) for table in tables):
        raise ConfigError(f"{source}: route: expected [[route]] tables")
    top = {**_settings_of(document, source, "", skip="route"), **overrides}
    routes: list[tuple[str, dict[str, Any]]] = []
    if "listen" in top:
        routes.append(("top level", top))
    for number, table in enumerate(tables, 1):
        where = f"{table['name']} (rpxy-l4 format)" if rpxy else f"route {number}"
        if "workers" in table:
            raise ConfigError(f"{source}: [{where}] workers: a top-level setting only")
        values = {**top, **_settings_of(table, source, f"[{where}] ")}
        if rpxy:
            # rpxy-l4's settings are all top-level ones: the command line replaces them too.
            values.update(overrides)
        routes.append((where, values))
    if not routes:
        raise ConfigError(f"{source}: no route: set listen at the top level or in [[route]] tables")
    result: list[RelaySettings] = []
    seen: dict[str, str] = {}
    for where, values in _one_per_address(routes, source):
        if "listen" not in values:
            raise ConfigError(f"{source}: [{where}] listen: missing")
        if not values.get("targets") and not values.get("protocols"):
            raise ConfigError(
                f"{source}: [{where}] to: missing (one target or more, or [protocols] tables)"
            )
        settings = RelaySettings(**values)
        if settings.trusted and not settings.accept_proxy:
            raise ConfigError(f"{source}: [{where}] trusted: needs accept_proxy = true")
        problem = settings.problem()
        if problem is not None:
            raise ConfigError(f"{source}: [{where}] {problem[0]}: {problem[1]}")
        if settings.key in seen:
            raise ConfigError(
                f"{source}: [{where}] listen: {settings.key} is also {seen[settings.key]}'s"
                " (give each route a distinct name)"
            )
        seen[settings.key] = where
        result.append(settings)
    return tuple(result)


def _one_per_address(
    routes: list[tuple[str, dict[str, Any]]], source: str
) -> list[tuple[str, dict[str, Any]]]:
    """A route whose ``listen`` is a list of addresses as one route per address, each with the
    same settings; named ``NAME@ADDRESS`` when the route has a name (else its address is its
    key, as for any route)."""
    result: list[tuple[str, dict[str, Any]]] = []
    for where, values in routes:
        addresses = values.get("listen")
        if not isinstance(addresses, list):
            result.append((where, values))
            continue
        if values.get("udp"):
            # A UDP [::] (or empty host) socket is dual stack: it holds the port for IPv4 too.
            ports = [a[1] for a in addresses if isinstance(a, tuple) and a[1]]  # 0: any
            for address in addresses:
                if address[0] in ("", "::") and ports.count(address[1]) > 1:
                    raise ConfigError(
                        f"{source}: [{where}] listen: {format_address(address)} is dual stack"
                        " with udp = true (it takes IPv4 clients too): drop the other"
                        f" addresses of port {address[1]}"
                    )
        name = values.get("name", "")
        for address in addresses:
            text = format_address(address)
            one = {**values, "listen": address}
            if name:
                one["name"] = f"{name}@{text}"
            result.append((f"{where} {text}", one))
    return result


def _settings_of(
    table: Mapping[str, Any], source: str, where: str, *, skip: str = ""
) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for key, value in table.items():
        if key == skip:
            continue
        field = CONFIG_KEYS.get(key)
        if field is None:
            close = difflib.get_close_matches(key.replace("-", "_"), CONFIG_KEYS, 1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{source}: {where}{key}: unknown key{hint}")
        try:
            settings[field] = _check(key, value)
        except _BadValue as error:
            raise ConfigError(f"{source}: {where}{key}: {error}") from None
    return settings


def _check(key: str, value: Any) -> Any:
    """``value`` for ``key`` as :class:`RelaySettings` takes it; :class:`_BadValue` if wrong."""
    if key == "name":
        return _string(value)
    if key == "listen":
        if isinstance(value, list):
            # Several addresses: one route each (_one_per_address).
            addresses = [_argument(relay_listen, item) for item in _strings(value)]
            if not addresses:
                raise _BadValue("expected one address or more, not an empty list")
            duplicates = sorted({format_address(a) for a in addresses if addresses.count(a) > 1})
            if duplicates:
                raise _BadValue(f"{', '.join(duplicates)} given twice")
            return addresses if len(addresses) > 1 else addresses[0]
        return _argument(relay_listen, _string(value))
    if key == "to":
        return tuple(_argument(relay_target, item) for item in _strings(value))
    if key == "trusted":
        return tuple(_argument(relay_trusted, item) for item in _strings(value))
    if key == "send_proxy":
        if value not in _SEND_PROXY:
            raise _BadValue(f"{value!r} is not one of 'none', 'v1', 'v2'")
        return _SEND_PROXY[value]
    if key == "keep_tlvs":
        if isinstance(value, list):
            return _argument(tlv_types, ",".join(str(item) for item in value))
        return _argument(tlv_types, _string(value))
    if key == "add_tlv":
        return tuple(_argument(tlv_item, item) for item in _strings(value))
    if key == "idle_timeout":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _BadValue(f"expected a number of seconds (0: none), not {value!r}")
        return _argument(idle_seconds, str(value))
    if key == "protocols":
        return _protocol_routes(value)
    if key == "workers":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _BadValue(f"expected a positive number of processes, not {value!r}")
        return value
    if key == "udp_max_connections":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _BadValue(f"expected a positive number of pseudo connections, not {value!r}")
        return value
    if key in ("accept_proxy", "unique_id", "send_proxy_crc32c", "udp"):
        if not isinstance(value, bool):
            raise _BadValue(f"expected true or false, not {value!r}")
        return value
    if key == "balance":
        if value not in BALANCE_MODES:
            raise _BadValue(f"{value!r} is not one of {', '.join(map(repr, BALANCE_MODES))}")
        return value
    # the timeouts and the grace period
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _BadValue(f"expected a number of seconds, not {value!r}")
    return _argument(seconds, str(value))


def _protocol_routes(value: Any) -> tuple[ProtocolRoute, ...]:
    """``[protocols.NAME]`` tables, in the file's order."""
    if not isinstance(value, dict) or not all(isinstance(table, dict) for table in value.values()):
        raise _BadValue("expected [protocols.NAME] tables")
    return tuple(_protocol_route(name, table) for name, table in value.items())


def _protocol_route(name: str, table: Mapping[str, Any]) -> ProtocolRoute:
    where = f"{name}: "
    for key in table:
        if key not in PROTOCOL_KEYS:
            close = difflib.get_close_matches(key.replace("-", "_"), PROTOCOL_KEYS, 1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise _BadValue(f"{where}{key}: unknown key{hint}")
    try:
        if "protocol" not in table:
            raise _BadValue(
                "protocol: missing (TCP: http, tls, ssh or socks5; UDP: quic or wireguard)"
            )
        protocol = _string(table["protocol"])
        try:
            # Known and probeable here; whether it suits the listener's transport is
            # RelaySettings.problem()'s to say, once ``udp`` is known.
            require([protocol], datagram=protocol in DATAGRAM_PROTOCOLS)
        except ProbeUnavailable as error:
            raise _BadValue(f"protocol: {error}") from None
        if not table.get("to"):
            raise _BadValue("to: missing (one target or more)")
        targets = tuple(_argument(relay_target, item) for item in _strings(table["to"]))
        names = tuple(
            item.lower().removesuffix(".") for item in _strings(table.get("server_names", []))
        )
        alpns = tuple(item.encode("utf-8") for item in _strings(table.get("alpns", [])))
        if (names or alpns) and protocol not in ("tls", "quic"):
            raise _BadValue("server_names and alpns filter tls and quic routes only")
        if any(not 0 < len(alpn) < 256 for alpn in alpns):
            raise _BadValue("alpns: each is 1 to 255 bytes")
        balance = table.get("balance")
        if balance is not None and balance not in BALANCE_MODES:
            raise _BadValue(f"balance: {balance!r} is not one of {', '.join(BALANCE_MODES)}")
        send_proxy = table.get("send_proxy")
        if send_proxy is not None:
            if protocol in DATAGRAM_PROTOCOLS:
                raise _BadValue("send_proxy: per route on TCP protocols only")
            if send_proxy not in _SEND_PROXY:
                raise _BadValue(f"send_proxy: {send_proxy!r} is not one of 'none', 'v1', 'v2'")
            send_proxy = _SEND_PROXY[send_proxy]
        idle: dict[str, float] = {}
        for key in ("idle_timeout", "udp_idle_lifetime"):
            if key not in table:
                continue
            if (key == "udp_idle_lifetime") != (protocol in DATAGRAM_PROTOCOLS):
                routes = "quic and wireguard" if key == "udp_idle_lifetime" else "TCP protocol"
                raise _BadValue(f"{key}: for {routes} routes only")
            try:
                idle[key] = _check(key, table[key])
            except _BadValue as error:
                raise _BadValue(f"{key}: {error}") from None
    except _BadValue as error:
        raise _BadValue(f"{where}{error}") from None
    return ProtocolRoute(name, protocol, targets, names, alpns, balance, send_proxy, **idle)


#: The TLV names ``keep_tlvs`` and ``add_tlv`` take, besides numbers (``0xE1``, ``225``).
TLV_NAMES = {kind.name.lower(): int(kind) for kind in TLVType}
#: The TLVs whose ``add_tlv`` value is text (UTF-8); the others take hexadecimal bytes.
_TEXT_TLVS = (TLVType.ALPN, TLVType.AUTHORITY, TLVType.NETNS)


def _tlv_type(text: str) -> int:
    import argparse

    name = text.strip().lower()
    if name in TLV_NAMES:
        return TLV_NAMES[name]
    try:
        kind = int(name, 0)
    except ValueError:
        kind = -1
    if not 0 <= kind <= 0xFF:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a TLV type: a number from 0 to 255 (0xE1) or one of"
            f" {', '.join(TLV_NAMES)}"
        )
    return kind


def tlv_types(text: str) -> str | tuple[int, ...]:
    """argparse ``type=`` of ``--keep-tlvs``: ``all``, ``none`` or a comma-separated list of types.

    >>> tlv_types("alpn,authority,0xE1")
    (1, 2, 225)
    """
    import argparse

    if text in ("all", "none"):
        return text
    kinds = tuple(_tlv_type(item) for item in text.split(","))
    for kind in kinds:
        if kind in _NEVER_KEPT:
            raise argparse.ArgumentTypeError(
                f"{TLVType(kind).name.lower()} is never kept (--send-proxy-crc32c adds a checksum)"
            )
    return kinds


def tlv_item(text: str) -> tuple[int, bytes]:
    """argparse ``type=`` of ``--add-tlv``: ``TYPE=VALUE``, text for alpn, authority and netns,
    hexadecimal bytes for the others.

    >>> tlv_item("authority=example.com"), tlv_item("0xE1=c0ffee")
    ((2, b'example.com'), (225, b'\\xc0\\xff\\xee'))
    """
    import argparse

    name, equals, value = text.partition("=")
    if not equals:
        raise argparse.ArgumentTypeError(f"{text!r} is not TYPE=VALUE (authority=example.com)")
    kind = _tlv_type(name)
    if kind in _NEVER_KEPT:
        raise argparse.ArgumentTypeError(
            f"{name} cannot be added: --send-proxy-crc32c adds a checksum"
        )
    if kind in _TEXT_TLVS:
        data = value.encode("utf-8", "surrogateescape")
    else:
        try:
            data = bytes.fromhex(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: the value of TLV {name} is hexadecimal bytes (c0ffee)"
            ) from None
    try:
        Header.local(tlvs=TLVs(raw=((kind, data),))).to_bytes()
    except HeaderEncodingError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
    return kind, data


def idle_seconds(text: str) -> float:
    """argparse ``type=`` of ``--idle-timeout``: seconds, or 0 for none."""
    try:
        if float(text) == 0:
            return 0.0
    except ValueError:
        pass
    return seconds(text)


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _BadValue(f"expected a string, not {value!r}")
    return value


def _strings(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise _BadValue(f"expected a string or a list of strings, not {value!r}")
    return items


def _argument(parse: Any, text: str) -> Any:
    import argparse

    try:
        return parse(text)
    except argparse.ArgumentTypeError as error:
        raise _BadValue(str(error)) from None
