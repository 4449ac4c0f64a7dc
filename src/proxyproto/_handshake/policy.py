"""Trust decisions: which peers may send a header, and what to do with what they sent.

Pure functions of values: no I/O, no clock. The handshake engine
(:mod:`proxyproto._handshake.engine`) asks :func:`decide` what to make of a handshake, for every
adapter, so the decision lives in one place.

Semantics follow go-proxyproto's policies:

========  ====================  =========================  ============================
policy    a valid header        no header (other bytes,    a broken header
                                EOF, silence)
========  ====================  =========================  ============================
REQUIRE   use it                close                      close
USE       use it                direct connection          close
IGNORE    strip it, keep the    direct connection          close
          real address
REJECT    close                 direct connection          close
SKIP      nothing is read: the bytes, header or not, go to the application
========  ====================  =========================  ============================
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import TypeAlias

from proxyproto._core.model import Command, Header

__all__ = [
    "Action",
    "PeerAddress",
    "Policy",
    "PolicyCallable",
    "carries_address",
    "decide",
    "resolve",
    "trusted_proxies",
]

#: What anyio's ``SocketAttribute.remote_address`` gives: ``(host, port)`` for IP, a path for
#: UNIX sockets; ``None`` when the transport has no address.
PeerAddress: TypeAlias = tuple[str, int] | str | None


class Policy(enum.Enum):
    """What to do with a PROXY header, per peer. The default everywhere is :attr:`REQUIRE`."""

    #: A header must come; a connection without one is closed.
    REQUIRE = "require"
    #: Use a header if one comes; a connection without one is a direct connection.
    USE = "use"
    #: Read and drop a header if one comes, keeping the real address; no header is fine too.
    IGNORE = "ignore"
    #: A header must not come: a connection that sends one is closed.
    REJECT = "reject"
    #: Read nothing: every byte goes to the application, a header included.
    SKIP = "skip"


#: A policy chosen per connection from the real peer's address (the proxy's, or the client's).
PolicyCallable: TypeAlias = Callable[[PeerAddress], Policy]


class Action(enum.Enum):
    """What an adapter does once the handshake is over."""

    #: Hand the connection over with the header's addresses (when it carries some).
    PROXIED = "proxied"
    #: Hand the connection over with its real addresses, the bytes read so far served first.
    DIRECT = "direct"
    #: Close the connection; the application never sees it.
    CLOSE = "close"


def resolve(policy: Policy | PolicyCallable, peer: PeerAddress) -> Policy:
    """The policy for ``peer``."""
    if isinstance(policy, Policy):
        return policy
    chosen = policy(peer)
    if not isinstance(chosen, Policy):
        raise TypeError(f"a policy callable must return a Policy, not {chosen!r}")
    return chosen


def decide(policy: Policy, header: Header | None, *, signature_seen: bool) -> tuple[Action, str]:
    """What to do after reading: the action, and the reason to log when it is CLOSE.

    :param header: the header, when a valid one arrived.
    :param signature_seen: a whole signature arrived. Without a header, that is a broken one:
        invalid bytes, or the peer closed or went silent in the middle of it. Bytes that stop
        inside a signature are not a header at all (``PRO`` may start a direct ``PROPFIND``).
    """
    if policy is Policy.SKIP:
        return Action.DIRECT, ""
    if header is not None:
        if policy is Policy.REJECT:
            return Action.CLOSE, "sent a PROXY header, which its policy (REJECT) forbids"
        if policy is Policy.IGNORE:
            return Action.DIRECT, ""
        return Action.PROXIED, ""
    if signature_seen:
        return Action.CLOSE, "broken PROXY header"
    if policy is Policy.REQUIRE:
        return Action.CLOSE, "no PROXY header, and its policy (REQUIRE) needs one"
    return Action.DIRECT, ""


def carries_address(header: Header | None) -> bool:
    """Whether ``header`` replaces the connection's addresses (LOCAL/UNKNOWN/UNSPEC don't)."""
    return (
        header is not None
        and header.command is Command.PROXY
        and header.source is not None
        and header.destination is not None
    )


_Network: TypeAlias = "IPv4Network | IPv6Network"
_Address: TypeAlias = "IPv4Address | IPv6Address"


def trusted_proxies(
    cidrs: Iterable[str | _Network | _Address],
    *,
    trusted: Policy = Policy.REQUIRE,
    otherwise: Policy = Policy.REJECT,
) -> PolicyCallable:
    """A policy: ``trusted`` for peers in ``cidrs``, ``otherwise`` for everyone else.

    ``cidrs`` holds addresses and networks, IPv4 and IPv6 (``"10.0.0.0/8"``, ``"2001:db8::/32"``,
    ``"192.0.2.7"``). An IPv4-mapped IPv6 peer (``::ffff:10.1.2.3``, as a dual-stack socket
    reports IPv4 clients) matches the IPv4 networks. A peer that is not an IP address (a UNIX
    socket) gets ``otherwise``.

    >>> policy = trusted_proxies(["10.0.0.0/8"])
    >>> policy(("10.1.2.3", 40000)), policy(("::ffff:10.1.2.3", 40000)), policy(("192.0.2.1", 1))
    (<Policy.REQUIRE: 'require'>, <Policy.REQUIRE: 'require'>, <Policy.REJECT: 'reject'>)

    :raises ValueError: an entry is not an address or network (or has host bits set, e.g.
        ``10.0.0.1/8``: write ``10.0.0.0/8``).
    """
    if isinstance(cidrs, str):
        raise TypeError("cidrs must be a list of addresses or networks, not one string")
    networks = tuple(ip_network(cidr) for cidr in cidrs)
    v4 = tuple(n for n in networks if n.version == 4)
    v6 = tuple(n for n in networks if n.version == 6)
    if not isinstance(trusted, Policy) or not isinstance(otherwise, Policy):
        raise TypeError("trusted and otherwise must be Policy members")

    def policy(peer: PeerAddress) -> Policy:
        if not isinstance(peer, tuple):
            return otherwise
        try:
            # A scoped IPv6 address (fe80::1%eth0) is in its networks whatever the scope.
            address = ip_address(peer[0].partition("%")[0])
        except (ValueError, AttributeError):
            return otherwise
        if isinstance(address, IPv6Address):
            if any(address in network for network in v6):
                return trusted
            if address.ipv4_mapped is None:
                return otherwise
            address = address.ipv4_mapped
        return trusted if any(address in network for network in v4) else otherwise

    policy.__doc__ = f"{trusted.name} for {', '.join(map(str, networks))}; else {otherwise.name}"
    return policy
