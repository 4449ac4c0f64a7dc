"""rpxy-l4's configuration format, read as is: its keys mapped onto ours (one table).

rpxy-l4 (an L4 TCP and UDP reverse proxy) listens on one port for both transports; here that is
two routes at the same address, named ``tcp`` and ``udp``, each present when it has a target or
a protocol route. :data:`RPXY_KEYS` maps each supported key to the key of our own format it
sets; the translated document is then checked by :func:`proxyproto._cli.relay_config.routes_from`
as any of ours is, so the values are judged in one place. Keys rpxy-l4 has and we do not (its
DNS cache, ECH, TCP caps) are one start-up error that lists them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["PROTOCOL_RPXY_KEYS", "RPXY_KEYS", "from_rpxy", "is_rpxy"]

#: rpxy-l4's top-level keys (and ours in its style) -> (route, key of our format). The route is
#: ``tcp``, ``udp``, or ``""`` for both.
RPXY_KEYS: dict[str, tuple[str, str]] = {
    "listen_port": ("", "listen"),
    "listen_address": ("", "listen"),
    "listen_address_v4": ("", "listen"),
    "listen_address_v6": ("", "listen"),
    "listen_ipv6": ("", "listen"),
    "tcp_target": ("tcp", "to"),
    "tcp_load_balance": ("tcp", "balance"),
    "tcp_send_proxy_protocol": ("tcp", "send_proxy"),
    "tcp_recv_proxy_protocol": ("tcp", "accept_proxy"),
    "tcp_trusted_proxies": ("tcp", "trusted"),
    "udp_target": ("udp", "to"),
    "udp_load_balance": ("udp", "balance"),
    "udp_send_proxy_protocol": ("udp", "send_proxy"),
    "udp_recv_proxy_protocol": ("udp", "accept_proxy"),
    "udp_trusted_proxies": ("udp", "trusted"),
    "udp_idle_lifetime": ("udp", "udp_idle_lifetime"),
    "udp_max_connections": ("udp", "udp_max_connections"),
    "protocols": ("", "protocols"),
}
#: The keys of rpxy-l4's ``[protocols."NAME"]`` tables -> ours (``None``: mapped by transport,
#: :func:`_idle_lifetime`). rpxy-l4 ignores ``send_proxy_protocol`` on UDP routes, and so do we.
PROTOCOL_RPXY_KEYS: dict[str, str | None] = {
    "protocol": "protocol",
    "target": "to",
    "load_balance": "balance",
    "server_names": "server_names",
    "alpns": "alpns",
    "send_proxy_protocol": "send_proxy",
    "idle_lifetime": None,
}
#: rpxy-l4's idle lifetime of a UDP protocol route without ``idle_lifetime`` (its own default,
#: not ``udp_idle_lifetime``, which is the default route's).
RPXY_ROUTE_IDLE_LIFETIME = 30
#: Keys only rpxy-l4's format has: one of them at the top level makes a file rpxy-l4's.
_RPXY_ONLY = frozenset(RPXY_KEYS) - {"protocols", "udp_idle_lifetime", "udp_max_connections"}
#: rpxy-l4's load-balancing names -> ours.
BALANCE_NAMES = {
    "source_ip": "source-ip",
    "source_socket": "source-socket",
    "random": "random",
    "none": "none",
}
#: The protocols routed over UDP.
_DATAGRAM = frozenset({"quic", "wireguard"})


class RpxyError(ValueError):
    """A file in rpxy-l4's format that cannot be mapped (the message names the keys)."""


def is_rpxy(document: Mapping[str, Any]) -> bool:
    """Whether a parsed file is in rpxy-l4's format (it has one of its own top-level keys)."""
    return any(key in _RPXY_ONLY for key in document)


def from_rpxy(document: Mapping[str, Any], our_keys: frozenset[str]) -> dict[str, Any]:
    """The same configuration in our format: ``[[route]]`` tables named ``tcp`` and ``udp``.

    ``our_keys`` are our format's keys: one of them beside rpxy-l4's is a mixed file, refused.

    :raises RpxyError: keys we do not support (all listed), a mixed file, a missing
        ``*_trusted_proxies`` while receiving headers, or a listening address we cannot map.
    """
    mixed = sorted(key for key in document if key in our_keys and key not in RPXY_KEYS)
    mixed += ["route"] if "route" in document else []
    if mixed:
        raise RpxyError(
            f"mixes rpxy-l4's format with ours ({', '.join(mixed)}): use one format per file"
        )
    unknown = [key for key in document if key not in RPXY_KEYS]
    protocols = document.get("protocols", {})
    if not isinstance(protocols, dict) or not all(isinstance(t, dict) for t in protocols.values()):
        raise RpxyError('protocols: expected [protocols."NAME"] tables')
    for name, table in protocols.items():
        unknown += [f"protocols.{name}.{key}" for key in table if key not in PROTOCOL_RPXY_KEYS]
    if unknown:
        raise RpxyError(f"rpxy-l4 keys not supported here: {', '.join(unknown)}")
    routes: dict[str, dict[str, Any]] = {"tcp": {}, "udp": {"udp": True}}
    for key, value in document.items():
        transport, mapped_key = RPXY_KEYS[key]
        if transport:
            routes[transport][mapped_key] = _balance(value) if mapped_key == "balance" else value
    for transport in ("tcp", "udp"):
        route = routes[transport]
        if route.get("accept_proxy") is True and not route.get("trusted"):
            raise RpxyError(
                f"{transport}_trusted_proxies: required and non-empty with"
                f" {transport}_recv_proxy_protocol = true"
            )
    for name, table in protocols.items():
        protocol = table.get("protocol")
        transport = "udp" if protocol in _DATAGRAM else "tcp"
        ours = {
            mapped: value
            for key, value in table.items()
            if (mapped := PROTOCOL_RPXY_KEYS[key]) is not None
        }
        if transport == "udp":
            ours.pop("send_proxy", None)
        if "balance" in ours:
            ours["balance"] = _balance(ours["balance"])
        ours.update(_idle_lifetime(table, transport))
        routes[transport].setdefault("protocols", {})[name] = ours
    listen = _listen(document)
    result: list[dict[str, Any]] = []
    for transport in ("tcp", "udp"):
        route = routes[transport]
        if route.get("to") or route.get("protocols"):
            result.append({"name": transport, "listen": listen, **route})
    if not result:
        raise RpxyError('no target: set tcp_target, udp_target or [protocols."NAME"] tables')
    return {"route": result}


def _balance(value: Any) -> Any:
    """Ours for rpxy-l4's name; an unknown value is left for our check to report."""
    return BALANCE_NAMES.get(value, value) if isinstance(value, str) else value


def _idle_lifetime(table: Mapping[str, Any], transport: str) -> dict[str, Any]:
    """A protocol route's ``idle_lifetime`` as ours: a UDP route's ``udp_idle_lifetime`` (30 s
    without one, as rpxy-l4), a TCP route's ``idle_timeout`` (rpxy-l4 reads it for UDP routes
    only; here it closes the route's idle TCP connections)."""
    if transport == "udp":
        return {"udp_idle_lifetime": table.get("idle_lifetime", RPXY_ROUTE_IDLE_LIFETIME)}
    return {"idle_timeout": table["idle_lifetime"]} if "idle_lifetime" in table else {}


def _listen(document: Mapping[str, Any]) -> str | list[str]:
    """``listen``: ``HOST:PORT`` from ``listen_port`` and the address keys (default: all), or
    a list of them (one listener each)."""
    port = document.get("listen_port")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise RpxyError(f"listen_port: required, a number from 0 to 65535, not {port!r}")
    ipv6 = document.get("listen_ipv6", False)
    if not isinstance(ipv6, bool):
        raise RpxyError(f"listen_ipv6: expected true or false, not {ipv6!r}")
    hosts: list[str] = []
    for key in ("listen_address", "listen_address_v4", "listen_address_v6"):
        if key not in document:
            continue
        value = document[key]
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(item, str) for item in items):
            raise RpxyError(f"{key}: expected an address or a list of addresses, not {value!r}")
        hosts += [item.strip("[]") for item in items]
    if ipv6 and "listen_address_v6" not in document:
        if hosts:
            # rpxy-l4 listens on [::] beside its IPv4 addresses; here [::] is one dual-stack
            # socket (on UDP), which would hold their port too.
            raise RpxyError(
                "listen_ipv6 beside IPv4 addresses: list the IPv6 ones in listen_address_v6"
                " (or use listen_ipv6 alone: [::] takes IPv4 clients too)"
            )
        hosts = ["::"]
    addresses = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host in hosts]
    if not addresses:
        return f"0.0.0.0:{port}"
    return addresses[0] if len(addresses) == 1 else addresses
